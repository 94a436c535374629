//! [`LoopConn`]: one connection as its event loop owns it: the transport,
//! the protocol state, the unconsumed input, the outbound queue, and where
//! it stands in its [`Lifecycle`].

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::aside::Aside;
use super::conn_inner::ConnInner;
use super::lifecycle::Lifecycle;
use super::out_queue::{IoSlices, OutQueue, QueueSink};
use super::prepared::{Encoding, Prepared, PreparedMessage};
use super::rate_limit::ConnLimits;
use super::send_status::Refused;
use super::server_state::ServerState;
use super::stats::LoopStats;
use super::stream::Stream;
use super::timers::Tick;
use super::transport::Transport;
use super::ConnId;
use crate::protocol::close::code;
use crate::protocol::Connection;

/// One connection, owned by its loop.
pub(crate) struct LoopConn {
    pub(crate) transport: Stream,
    pub(crate) proto: Connection,
    pub(crate) out: OutQueue,
    /// The part other threads share, from the upgrade on.
    pub(crate) inner: Option<Arc<ConnInner>>,
    pub(crate) lifecycle: Lifecycle,
    /// The tick this connection is scheduled at in the loop's timers (0: none).
    pub(crate) timer: Tick,
    /// Which connection of its slot this is (see `ConnTable`).
    pub(crate) generation: u32,
    /// The key its deadline was last scheduled under (see
    /// `EventLoop::refresh_timer`).
    pub(crate) timer_key: u8,
    /// Not read while its queue is over the cap (see `EventLoop::read_conn`).
    pub(crate) read_paused: bool,
    /// Its rate limits and address, when the server limits either.
    pub(crate) limits: Option<Box<ConnLimits>>,
    /// What it holds only for a while (see [`Aside`]).
    aside: Option<Box<Aside>>,
}

impl LoopConn {
    pub(crate) fn new(
        transport: Stream,
        proto: Connection,
        over_capacity: bool,
        awaiting_proxy: bool,
    ) -> LoopConn {
        LoopConn {
            transport,
            proto,
            out: OutQueue::default(),
            inner: None,
            lifecycle: Lifecycle::Handshaking {
                over_capacity,
                awaiting_proxy,
            },
            timer: 0,
            generation: 0,
            timer_key: 0,
            read_paused: false,
            limits: None,
            aside: None,
        }
    }

    /// Its short-lived part, made if it has none.
    fn aside(&mut self) -> &mut Aside {
        self.aside.get_or_insert_default()
    }

    /// Drops the short-lived part once nothing is left in it.
    fn settle_aside(&mut self) {
        if self.aside.as_ref().is_some_and(|a| a.is_empty()) {
            self.aside = None;
        }
    }

    /// Takes the input left over from the last read (empty if none).
    pub(crate) fn take_tail(&mut self) -> Vec<u8> {
        let Some(aside) = self.aside.as_mut() else {
            return Vec::new();
        };
        let tail = std::mem::take(&mut aside.tail);
        self.settle_aside();
        tail
    }

    /// Keeps input the protocol could not use yet, for the next read.
    pub(crate) fn keep_tail(&mut self, bytes: &[u8]) {
        self.aside().tail.extend_from_slice(bytes);
    }

    /// Notes the client a trusted proxy's PROXY header named.
    pub(crate) fn set_proxied_client(&mut self, client: std::net::SocketAddr) {
        self.aside().client = Some(client);
    }

    /// Takes the client a PROXY header named, if one did.
    pub(crate) fn take_proxied_client(&mut self) -> Option<std::net::SocketAddr> {
        let client = self.aside.as_mut()?.client.take();
        self.settle_aside();
        client
    }

    /// Takes the messages held while `on_open` ran.
    pub(crate) fn take_deferred(&mut self) -> Vec<Arc<PreparedMessage>> {
        let Some(aside) = self.aside.as_mut() else {
            return Vec::new();
        };
        let deferred = std::mem::take(&mut aside.deferred);
        self.settle_aside();
        deferred
    }

    /// Queues a message made ready for this connection's encoding; false
    /// (nothing queued) when the protocol no longer sends.
    pub(crate) fn queue(&mut self, message: Prepared<'_>, accounted: usize) -> bool {
        match message {
            Prepared::Frame(frame) => {
                self.out.push(frame, accounted);
                true
            }
            Prepared::Shared(frame) => {
                self.out.push_shared(frame, accounted);
                true
            }
            Prepared::Deflate(kind, data) => self
                .proto
                .send(
                    kind,
                    &data,
                    &mut QueueSink::accounted(&mut self.out, accounted),
                )
                .is_ok(),
        }
    }

    /// A subscribe or unsubscribe from another thread reached the loop.
    pub(crate) fn took_subscription(&self) {
        if let Some(inner) = &self.inner {
            inner.pending_subscriptions.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Gives back `len` bytes reserved for a message that was not queued.
    pub(crate) fn unreserve(&self, len: usize) {
        if let Some(inner) = &self.inner {
            inner.release(len);
        }
    }

    /// Whether a message from the handler may still be queued: the
    /// connection is open, or its final close frame is held back for
    /// replies to messages that arrived before the peer's close.
    pub(crate) fn takes_messages(&self) -> bool {
        self.proto.is_open() || self.proto.holds_close_reply()
    }

    /// Starts the closing handshake from our side; sends stop being accepted.
    pub(crate) fn start_close(&mut self, code: u16, reason: &str, now: Instant) {
        let _ = self
            .proto
            .close(code, reason, now, &mut QueueSink::new(&mut self.out));
        self.stop_sends();
    }

    /// Clears the shared open flag: handles refuse sends from here on.
    pub(crate) fn stop_sends(&self) {
        if let Some(inner) = &self.inner {
            inner.open.store(false, Ordering::Release);
        }
    }

    /// Queues one message of a broadcast or publish, under the connection's
    /// cap and the backpressure policy; true when there is something to
    /// write (the message, or a close for backpressure).
    pub(crate) fn deliver(
        &mut self,
        message: &Arc<PreparedMessage>,
        exclude: Option<ConnId>,
        state: &ServerState,
        stats: &mut LoopStats,
        now: Instant,
    ) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        if Some(inner.id) == exclude || !self.proto.is_open() {
            return false;
        }
        let len = message.len();
        match inner.reserve(len, &state.config, &state.stats) {
            Ok(_) => {
                let encoding = inner.encoding;
                self.queue_reserved(message, encoding, state, stats)
            }
            Err(Refused::MustClose) => {
                self.start_close(code::POLICY_VIOLATION, "send buffer full", now);
                true
            }
            Err(Refused::Closed | Refused::Dropped) => false,
        }
    }

    /// Queues a run of publishes (each with the connection it leaves out),
    /// as [`LoopConn::deliver`] would one by one, with one reservation for
    /// the whole run when it fits under the cap; true when there is
    /// something to write.
    pub(crate) fn deliver_run(
        &mut self,
        run: &[(Arc<PreparedMessage>, Option<ConnId>)],
        state: &ServerState,
        stats: &mut LoopStats,
        now: Instant,
    ) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        if !self.proto.is_open() {
            return false;
        }
        let (id, encoding) = (inner.id, inner.encoding);
        let total: usize = run
            .iter()
            .filter(|(_, exclude)| *exclude != Some(id))
            .map(|(message, _)| message.len())
            .sum();
        if total == 0 || !inner.reserve_run(total, &state.config) {
            // Near the cap (or nothing to send): the reference path, which
            // applies the policy message by message.
            let mut wrote = false;
            for (message, exclude) in run {
                wrote |= self.deliver(message, *exclude, state, stats, now);
            }
            return wrote;
        }
        if self.lifecycle == Lifecycle::Opening {
            // Held back until `on_open` is done: the reference path.
            let mut wrote = false;
            for (message, exclude) in run {
                if *exclude != Some(id) {
                    wrote |= self.queue_reserved(message, encoding, state, stats);
                }
            }
            return wrote;
        }
        // What `queue_reserved` does per message, with its lifecycle check
        // taken out of the loop: a fan-out runs this once per subscriber per
        // message, and the layers of calls were a sixth of its instructions.
        let opts = &state.config.protocol.deflate;
        let (mut messages, mut bytes) = (0, 0);
        for (message, exclude) in run {
            let len = message.len();
            if *exclude == Some(id) {
                continue;
            }
            if !self.proto.is_open() {
                // A deflated message before it could not be sent.
                self.unreserve(len);
                continue;
            }
            messages += 1;
            bytes += len;
            if let Some(frame) = message.shared_frame(encoding, opts) {
                self.out.push_shared(frame, len);
            } else if !self.queue(message.prepare_for(encoding, opts), len) {
                self.unreserve(len);
            }
        }
        stats.sent_many(messages, bytes);
        messages > 0
    }

    /// Queues a message whose bytes are already reserved: counts it, holds
    /// it back while the connection is still opening (`on_open` goes
    /// first), and gives the reservation back if it cannot be queued; true
    /// when there is something to write.
    fn queue_reserved(
        &mut self,
        message: &Arc<PreparedMessage>,
        encoding: Encoding,
        state: &ServerState,
        stats: &mut LoopStats,
    ) -> bool {
        let len = message.len();
        stats.sent(len);
        if self.lifecycle == Lifecycle::Opening {
            self.aside().deferred.push(Arc::clone(message));
            return false;
        }
        let prepared = message.prepare_for(encoding, &state.config.protocol.deflate);
        if !self.queue(prepared, len) {
            self.unreserve(len);
        }
        true
    }

    /// Writes the connection's queue until it is empty or the transport pushes
    /// back; gives back the reservations of what left. An error (or a write of
    /// nothing) means the connection is gone.
    pub(crate) fn write_out(&mut self) -> io::Result<()> {
        // Gathered writes until one is cut short (see `write_gathering`).
        let mut gather = true;
        while !self.out.is_empty() {
            // In a block of their own: the slices borrow the queue, which
            // `advance` below changes.
            let (wrote, offered) = {
                let mut slices = IoSlices::new();
                self.out.slices(&mut slices);
                let offered: usize = slices.iter().map(|s| s.len()).sum();
                (self.transport.write_gathering(&slices, gather), offered)
            };
            match wrote {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    gather &= written == offered;
                    let released = self.out.advance(written);
                    self.give_back(released);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.transport.flush()? {
            // Out of the transport too: what it kept back is given back now.
            self.give_back(0);
        }
        Ok(())
    }

    /// Gives back the reservations of bytes that left the queue, as far as
    /// the transport has them on the wire (see [`Transport::settle`]).
    fn give_back(&mut self, released: usize) {
        let settled = self.transport.settle(released);
        if settled > 0 {
            if let Some(inner) = &self.inner {
                inner.release(settled);
            }
        }
    }

    /// Bytes the connection owes the peer: its queue and what its transport
    /// holds (TLS records not yet taken by the socket).
    pub(crate) fn owed(&self) -> usize {
        self.out.queued() + self.transport.wants_write()
    }

    /// What its deadline depends on beyond activity (which only moves it
    /// later): the protocol's [`Connection::timeout_key`] and whether a
    /// rate limit pauses it.
    pub(crate) fn timer_key(&self) -> u8 {
        let paused = self
            .limits
            .as_ref()
            .is_some_and(|l| l.paused_until.is_some());
        self.proto.timeout_key() | u8::from(paused) << 5
    }

    /// Whether a writable edge gives the connection something to do: bytes
    /// it owes (a write cut short, TLS records held), or a close that its
    /// flush carries on. Edge-triggered epoll reports every ready direction
    /// with an event, so a read's event says "writable" too; flushed again
    /// for that with nothing owed, each read paid a second flush, its
    /// timers rescheduled once more: 325 instructions a read (callgrind,
    /// 100 connections x 20 B, inline).
    pub(crate) fn awaits_writable(&self) -> bool {
        self.owed() > 0 || self.proto.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::AcceptOptions;
    use crate::protocol::{Event, MessageKind, ProtocolConfig};
    use crate::server::stats::Stats;
    use crate::server::transport::TcpTransport;
    use crate::server::{Config, ServerHandle};

    /// An open connection with `id`; its upgrade's 101 went to a buffer of
    /// its own, so its queue starts empty.
    fn open(id: ConnId, now: Instant) -> (LoopConn, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut proto = Connection::server(Arc::new(ProtocolConfig::default()), now);
        let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
        let mut answer = Vec::new();
        let r = proto.read(&mut request, now, &mut answer);
        let Some(Event::Request(req)) = r.event else {
            panic!("a request head");
        };
        proto
            .accept(&req, &AcceptOptions::default(), now, &mut answer)
            .unwrap();
        assert!(proto.is_open());
        let stream = Stream::Tcp(TcpTransport::new(mio::net::TcpStream::from_std(client)));
        let mut c = LoopConn::new(stream, proto, false, false);
        c.inner = Some(Arc::new(ConnInner::new(id, None, None, Encoding::Plain)));
        c.lifecycle = Lifecycle::Open;
        (c, listener)
    }

    fn queued(c: &LoopConn) -> Vec<u8> {
        let mut slices = IoSlices::new();
        c.out.slices(&mut slices);
        slices.iter().flat_map(|s| s.iter().copied()).collect()
    }

    /// The run's fast path against its reference, `deliver` message by
    /// message: the same bytes queued, the same reservations, the same
    /// counts, the connection's own publishes left out.
    #[test]
    fn a_run_queues_what_delivering_its_messages_one_by_one_does() {
        let handle = ServerHandle::detached(Config::default());
        let state = handle.state();
        let now = Instant::now();
        let id = ConnId::new(0, 1, 0);
        let other = ConnId::new(0, 2, 0);
        let run: Vec<(Arc<PreparedMessage>, Option<ConnId>)> = [
            (20, None),
            (300, Some(id)),
            (20, Some(other)),
            (5000, None),
            (125, None),
            (70_000, None),
            (20, None),
        ]
        .into_iter()
        .enumerate()
        .map(|(n, (len, exclude))| {
            let data: Vec<u8> = (0..len).map(|i| (i + n) as u8).collect();
            (PreparedMessage::new(MessageKind::Binary, &data), exclude)
        })
        .collect();
        let (mut fast, _l1) = open(id, now);
        let (mut reference, _l2) = open(id, now);
        let (fast_stats, reference_stats) = (Stats::default(), Stats::default());
        let mut stats = LoopStats::default();
        assert!(fast.deliver_run(&run, state, &mut stats, now));
        stats.fold_into(&fast_stats);
        let mut wrote = false;
        for (message, exclude) in &run {
            wrote |= reference.deliver(message, *exclude, state, &mut stats, now);
        }
        assert!(wrote);
        stats.fold_into(&reference_stats);

        assert_eq!(queued(&fast), queued(&reference));
        let buffered = |c: &LoopConn| c.inner.as_ref().unwrap().buffered.load(Ordering::Acquire);
        assert_eq!(buffered(&fast), buffered(&reference));
        assert_eq!(buffered(&fast), 20 + 20 + 5000 + 125 + 70_000 + 20);
        let (f, r) = (fast_stats.snapshot(), reference_stats.snapshot());
        assert_eq!((f.messages_out, f.bytes_out), (r.messages_out, r.bytes_out));
        assert_eq!(f.messages_out, 6, "its own publish left out");
    }
}
