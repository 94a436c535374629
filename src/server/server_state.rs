//! [`ServerState`]: what every thread of one server shares.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::sync::atomic::Ordering;

use super::command::Command;
use super::conn_inner::ConnInner;
use super::ip_limits::IpLimits;
use super::lent_queue;
use super::mailbox::Mailbox;
use super::out_queue::Outgoing;
use super::prepared::PreparedMessage;
use super::topic_interest::TopicInterest;
use super::{Config, ConnId, Stats};
use crate::protocol::MessageKind;

/// What every thread of one server shares (the handler is not here: the
/// loops and workers are given it directly).
pub(crate) struct ServerState {
    pub(crate) config: Config,
    /// One per loop, by loop index.
    pub(crate) mailboxes: Vec<Mailbox>,
    pub(crate) stats: Stats,
    /// Sockets accepted and not yet released (handshaking, open or closing).
    pub(crate) sockets: AtomicUsize,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) local_addr: SocketAddr,
    /// Every loop and worker thread, joined by whichever handle joins first.
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    /// Per source address, when `Config::rate_limit` limits addresses.
    pub(crate) ip_limits: IpLimits,
    /// With a broker: the topics this node has subscribers of, node-wide.
    pub(crate) interest: Option<Arc<TopicInterest>>,
}

impl ServerState {
    /// Hands `cmd` to the loop that owns connection `id`.
    pub(crate) fn command(&self, id: ConnId, cmd: Command) {
        if let Some(mailbox) = self.mailboxes.get(id.loop_index()) {
            mailbox.push(cmd);
        }
    }

    /// Queues a reply to `id` straight into its queue when the loop lent it
    /// to this thread for a handler call (see `lent_queue`) and nothing
    /// this thread sent before still waits ([`Mailbox::nothing_waits`]), so
    /// the reply cannot pass any of it; gives the frame back otherwise.
    pub(crate) fn push_reply(
        &self,
        id: ConnId,
        frame: Outgoing,
        accounted: usize,
    ) -> Result<(), Outgoing> {
        // A queue lent for `id` means this thread is `id`'s loop.
        let Some(mailbox) = self.mailboxes.get(id.loop_index()) else {
            return Err(frame);
        };
        lent_queue::push(id, frame, accounted, || mailbox.nothing_waits())
    }

    /// [`push_reply`](Self::push_reply) for a small plain frame, written
    /// straight into the queue (see `lent_queue::append_frame`) when it is
    /// empty or its last buffer has room; false, nothing done, otherwise.
    #[inline]
    pub(crate) fn append_reply(&self, id: ConnId, kind: MessageKind, payload: &[u8]) -> bool {
        let Some(mailbox) = self.mailboxes.get(id.loop_index()) else {
            return false;
        };
        lent_queue::append_frame(id, kind, payload, || mailbox.nothing_waits())
    }

    /// Hands a copy of `cmd` to every loop.
    pub(crate) fn command_all(&self, cmd: impl Fn() -> Command) {
        for mailbox in &self.mailboxes {
            mailbox.push(cmd());
        }
    }

    /// Hands a broadcast or publish to every loop that has room for it;
    /// false if any loop refused it (counted in `dropped_fanout`).
    pub(crate) fn fan_out(&self, message: &PreparedMessage, cmd: impl Fn() -> Command) -> bool {
        let cap = self.config.max_pending_fanout;
        let mut all = true;
        for mailbox in &self.mailboxes {
            if mailbox.reserve_fanout(message.len(), cap) {
                mailbox.push(cmd());
            } else {
                all = false;
                self.stats.dropped_fanout.fetch_add(1, Ordering::Relaxed);
            }
        }
        all
    }

    /// The open connection `id`, if it is still that connection.
    pub(crate) fn lookup(&self, id: ConnId) -> Option<Arc<ConnInner>> {
        self.mailboxes.get(id.loop_index())?.lookup(id)
    }
}

thread_local! {
    /// The server whose loop or worker this thread is (its state's address), or 0.
    static OWNER: Cell<usize> = const { Cell::new(0) };
}

impl ServerState {
    /// Marks the calling thread as one of this server's own threads.
    pub(crate) fn adopt_current_thread(self: &Arc<Self>) {
        OWNER.with(|o| o.set(Arc::as_ptr(self) as usize));
    }

    /// The calling thread is one of this server's loops or workers: waiting
    /// there for the server's threads to end would wait for itself.
    pub(crate) fn owns_current_thread(self: &Arc<Self>) -> bool {
        OWNER.with(|o| o.get() == Arc::as_ptr(self) as usize)
    }
}
