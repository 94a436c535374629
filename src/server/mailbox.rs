//! [`Mailbox`]: a loop as other threads see it: its command channel, its
//! waker, and the registry that turns a [`ConnId`] into a live handle.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use super::command::Command;
use super::conn_inner::ConnInner;
use super::ConnId;

/// One event loop's gauges ([`ServerHandle::loop_gauges`](super::ServerHandle::loop_gauges)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoopGauges {
    /// Open WebSocket connections on the loop.
    pub connections: usize,
    /// Bytes its connections owe their sockets (frames queued, not yet
    /// written), as of its last turn.
    pub queued_bytes: usize,
    /// Commands from other threads (sends, closes, broadcasts ...) waiting for it.
    pub commands_queued: usize,
    /// Payload bytes of broadcasts and publishes waiting for it.
    pub fanout_pending_bytes: usize,
}

/// A loop's mailbox.
pub(crate) struct Mailbox {
    tx: Sender<Command>,
    waker: Waker,
    /// The loop is (about to be) blocked in poll: the next sender wakes it.
    asleep: AtomicBool,
    /// Payload bytes of broadcasts and publishes queued here and not yet
    /// taken by the loop (their recipients reserve them only then).
    fanout_pending: AtomicUsize,
    /// Open connections of the loop (a gauge for `/metrics`).
    pub(crate) open: AtomicUsize,
    /// Bytes the loop's connections owe their sockets, as of its last turn.
    pub(crate) queued_bytes: AtomicUsize,
    /// Slot → open connection, for handles that only know an id.
    registry: RwLock<Vec<Option<Arc<ConnInner>>>>,
}

impl Mailbox {
    /// A mailbox whose loop reads `Receiver` and is woken through `waker`.
    pub(crate) fn new(waker: Waker, reserved_slots: usize) -> (Mailbox, Receiver<Command>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Mailbox {
            tx,
            waker,
            asleep: AtomicBool::new(false),
            fanout_pending: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            registry: RwLock::new(Vec::with_capacity(reserved_slots)),
        };
        (mailbox, rx)
    }

    /// Queues `cmd` and wakes the loop if it sleeps.
    pub(crate) fn push(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok()
            && self.asleep.load(Ordering::SeqCst)
            && self.asleep.swap(false, Ordering::SeqCst)
        {
            // One wake-up per batch: the loop clears `asleep` when it wakes, so
            // later senders of the same batch skip the syscall.
            let _ = self.waker.wake();
        }
    }

    /// Reserves `len` bytes of a broadcast or publish for this loop under
    /// `cap`; false (nothing reserved) when that many are already waiting.
    /// An empty mailbox always takes one, whatever its size.
    pub(crate) fn reserve_fanout(&self, len: usize, cap: usize) -> bool {
        let before = self.fanout_pending.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > cap {
            self.fanout_pending.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// What the loop looks like from outside, now.
    pub(crate) fn gauges(&self) -> LoopGauges {
        LoopGauges {
            connections: self.open.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            commands_queued: self.tx.len(),
            fanout_pending_bytes: self.fanout_pending.load(Ordering::Relaxed),
        }
    }

    /// The loop took a broadcast or publish of `len` bytes.
    pub(crate) fn release_fanout(&self, len: usize) {
        self.fanout_pending.fetch_sub(len, Ordering::AcqRel);
    }

    /// The loop is about to sleep (`true`) or is awake (`false`). Announce
    /// the sleep, then look at the channel once more before blocking, so a
    /// command pushed in between is either seen or wakes the poll.
    pub(crate) fn set_asleep(&self, asleep: bool) {
        self.asleep.store(asleep, Ordering::SeqCst);
    }

    /// Makes the open connection in `slot` reachable by id (or, with `None`, no longer).
    pub(crate) fn register(&self, slot: usize, conn: Option<Arc<ConnInner>>) {
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        if reg.len() <= slot {
            if conn.is_none() {
                return;
            }
            reg.resize(slot + 1, None);
        }
        reg[slot] = conn;
    }

    /// The open connection `id`, if it is still that connection.
    pub(crate) fn lookup(&self, id: ConnId) -> Option<Arc<ConnInner>> {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.get(id.slot())?.as_ref().filter(|c| c.id == id).cloned()
    }
}
