//! [`Mailbox`]: a loop as other threads see it: its command queue
//! ([`CommandQueue`], "the channel" below), its waker, and the registry that
//! turns a [`ConnId`] into a live handle.
//!
//! A worker defers its wake-ups to the end of its batch ([`DeferredWakes`]):
//! on a core shared by a loop and its worker, a wake-up at the first reply
//! lets the scheduler switch to the loop at once, which takes that one reply,
//! sleeps, and is woken by the next: a thread switch per message. Deferred,
//! the loop is woken once per batch and takes all of its replies in one turn.
//! Order is unchanged: the commands are in the channel when they are sent;
//! only the wake-up waits, and for no longer than the batch.
//!
//! A loop's commands to itself (what an inline handler sends, on_open's
//! `Opened`, a relay's publish) skip the channel (and an inline handler's
//! reply to the connection it was called for skips the command too: see
//! `lent_queue`): they wait in the loop
//! thread's own list ([`take_own`]) with no atomics, no channel blocks and
//! no wake-up, and the loop carries them out before anything in its channel.
//! That keeps every order the channel kept: a command is kept on the thread
//! only while the channel is empty, so everything in the channel was sent
//! after it; once the channel holds something, the loop's own commands queue
//! behind it there.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mio::Waker;

use super::command::Command;
use super::command_queue::{CommandQueue, Pushed};
use super::conn_inner::ConnInner;
use super::parking::Parking;
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

/// The longest a loop sleeps while workers hold batches of its events.
const WORKER_CHECK: Duration = Duration::from_millis(1);

/// A loop's mailbox.
pub(crate) struct Mailbox {
    /// The loop's index, for a deferred wake-up.
    index: usize,
    commands: CommandQueue,
    waker: Waker,
    /// Payload bytes of broadcasts and publishes queued here and not yet
    /// taken by the loop (their recipients reserve them only then).
    fanout_pending: AtomicUsize,
    /// Batches this loop handed to workers that they have not finished: while
    /// there are some, the loop sleeps at most [`WORKER_CHECK`] at a time, so
    /// a wake-up a worker deferred behind a handler that blocks waits no
    /// longer than that.
    batches_out: AtomicUsize,
    /// Where the loop waits in [`wait_for_batches`](Self::wait_for_batches):
    /// the worker that finishes its last batch out wakes it.
    parking: Parking,
    /// Open connections of the loop (a gauge for `/metrics`).
    pub(crate) open: AtomicUsize,
    /// Bytes the loop's connections owe their sockets, as of its last turn.
    pub(crate) queued_bytes: AtomicUsize,
    /// Slot → open connection, for handles that only know an id.
    registry: RwLock<Vec<Option<Arc<ConnInner>>>>,
}

impl Mailbox {
    /// A mailbox whose loop is woken through `waker`.
    pub(crate) fn new(index: usize, waker: Waker, reserved_slots: usize) -> Mailbox {
        Mailbox {
            index,
            commands: CommandQueue::new(),
            waker,
            fanout_pending: AtomicUsize::new(0),
            batches_out: AtomicUsize::new(0),
            parking: Parking::default(),
            open: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            registry: RwLock::new(Vec::with_capacity(reserved_slots)),
        }
    }

    /// Queues `cmd` and wakes the loop if it sleeps.
    pub(crate) fn push(&self, cmd: Command) {
        // Kept on this thread when it is this mailbox's loop and the channel
        // is empty (see the module's comment).
        if OWN_MAILBOX.with(Cell::get) == self as *const Mailbox as usize
            && self.commands.is_empty()
        {
            OWN_COMMANDS.with(|o| o.borrow_mut().push(cmd));
            return;
        }
        // One wake-up per batch: only the first sender after the loop went
        // to sleep is told to wake it, so later ones skip the syscall.
        if self.commands.push(cmd) == Pushed::QueuedWake && !DeferredWakes::defer(self.index) {
            self.wake();
        }
    }

    /// Whether nothing this thread sent to this loop still waits: neither
    /// its own list nor the channel holds a command. Then a reply that
    /// goes straight into a lent queue (see `lent_queue`) passes nothing.
    pub(crate) fn nothing_waits(&self) -> bool {
        self.commands.is_empty() && !own_pending()
    }

    fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// For the loop: moves up to `max` of the waiting commands into `out`
    /// (empty), oldest first.
    pub(crate) fn take_commands(&self, out: &mut Vec<Command>, max: usize) {
        self.commands.take(out, max);
    }

    /// The loop has gone: what waits is dropped, and so is anything sent
    /// after.
    pub(crate) fn close(&self) {
        self.commands.close();
    }

    /// Called on the loop's thread: its commands to itself are kept there
    /// (see the module's comment).
    pub(crate) fn adopt_own_thread(&self) {
        OWN_MAILBOX.with(|m| m.set(self as *const Mailbox as usize));
        self.parking.set_thread(std::thread::current());
    }

    /// The loop handed a batch to a worker.
    pub(crate) fn batch_sent(&self) {
        self.batches_out.fetch_add(1, Ordering::AcqRel);
    }

    /// A worker finished one of the loop's batches (and woke it if asked).
    pub(crate) fn batch_done(&self) {
        if self.batches_out.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.parking.wake();
        }
    }

    /// On the loop's thread: sleeps until the workers have finished every
    /// batch it handed them, or for at most `bound`. How a loop lets a
    /// worker on its core run once other tasks compete for the core (see
    /// `core_sharing`). `bound` keeps a handler that blocks from holding the
    /// loop up.
    pub(crate) fn wait_for_batches(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        // Announced before the count is read (see `parking`): either the
        // loop sees the last batch done, or that batch's worker wakes it.
        self.parking.announce();
        while self.batches_out.load(Ordering::SeqCst) > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
        self.parking.withdraw();
    }

    /// How long the loop may sleep with nothing else due.
    pub(crate) fn sleep_bound(&self) -> Option<Duration> {
        (self.batches_out.load(Ordering::Acquire) > 0).then_some(WORKER_CHECK)
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
            commands_queued: self.commands.len(),
            fanout_pending_bytes: self.fanout_pending.load(Ordering::Relaxed),
        }
    }

    /// The loop took a broadcast or publish of `len` bytes.
    pub(crate) fn release_fanout(&self, len: usize) {
        self.fanout_pending.fetch_sub(len, Ordering::AcqRel);
    }

    /// The loop is about to sleep: true if it may (no command waits; the
    /// next sender wakes it), false if commands wait.
    pub(crate) fn sleep(&self) -> bool {
        self.commands.sleep()
    }

    /// The loop is awake.
    pub(crate) fn woke(&self) {
        self.commands.woke();
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

/// The commands this loop thread sent itself, oldest first: carry them out
/// before anything in the channel. Give the vector back ([`restore_own`]).
pub(crate) fn take_own() -> Vec<Command> {
    OWN_COMMANDS.with(|o| std::mem::take(&mut *o.borrow_mut()))
}

/// Gives the (emptied) vector from [`take_own`] back for its allocation.
pub(crate) fn restore_own(mut commands: Vec<Command>) {
    commands.clear();
    OWN_COMMANDS.with(|o| {
        let mut own = o.borrow_mut();
        if own.is_empty() {
            *own = commands;
        }
    })
}

/// Whether this loop thread has commands of its own waiting.
pub(crate) fn own_pending() -> bool {
    OWN_COMMANDS.with(|o| !o.borrow().is_empty())
}

thread_local! {
    /// On a loop thread, the address of its mailbox (0 elsewhere): a plain
    /// word, so the check costs other threads' sends next to nothing.
    static OWN_MAILBOX: Cell<usize> = const { Cell::new(0) };
    /// A loop thread's commands to itself, oldest first.
    static OWN_COMMANDS: RefCell<Vec<Command>> = const { RefCell::new(Vec::new()) };
    /// On a worker inside a batch: the loops (by index, as bits) it owes a
    /// wake-up. `None` elsewhere: wake at once.
    static DEFERRED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// While alive, this thread's wake-ups of sleeping loops wait for its drop
/// (see the module's comment): a worker holds one per batch.
pub(crate) struct DeferredWakes<'a> {
    mailboxes: &'a [Mailbox],
}

impl<'a> DeferredWakes<'a> {
    pub(crate) fn begin(mailboxes: &'a [Mailbox]) -> DeferredWakes<'a> {
        DEFERRED.with(|d| d.set(Some(0)));
        DeferredWakes { mailboxes }
    }

    /// Notes that loop `index` must be woken; false when this thread is not
    /// deferring (or the index does not fit the mask): wake now.
    fn defer(index: usize) -> bool {
        DEFERRED.with(|d| match d.get() {
            Some(mask) if index < 64 => {
                d.set(Some(mask | 1 << index));
                true
            }
            _ => false,
        })
    }
}

impl Drop for DeferredWakes<'_> {
    fn drop(&mut self) {
        let mut mask = DEFERRED.with(|d| d.take()).unwrap_or(0);
        while mask != 0 {
            let index = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(mailbox) = self.mailboxes.get(index) {
                mailbox.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    const WAKER: Token = Token(7);

    fn woken(poll: &mut Poll) -> bool {
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        events.iter().any(|e| e.token() == WAKER)
    }

    #[test]
    fn a_loop_waiting_for_its_batches_wakes_when_the_last_is_done() {
        let poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), WAKER).unwrap();
        let mailbox = Arc::new(Mailbox::new(0, waker, 0));
        mailbox.adopt_own_thread();
        mailbox.batch_sent();
        mailbox.batch_sent();
        let worker = {
            let mailbox = Arc::clone(&mailbox);
            std::thread::spawn(move || {
                mailbox.batch_done();
                mailbox.batch_done();
            })
        };
        // Woken by the second `batch_done`: a lost wake-up would sleep the
        // whole bound, and fail.
        let start = std::time::Instant::now();
        mailbox.wait_for_batches(Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(30));
        worker.join().unwrap();
        assert_eq!(mailbox.sleep_bound(), None, "nothing out");

        // A batch that is not done (a handler that blocks) holds the loop
        // only for the bound.
        mailbox.batch_sent();
        let start = std::time::Instant::now();
        mailbox.wait_for_batches(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
        mailbox.batch_done();
    }

    #[test]
    fn a_worker_wakes_a_sleeping_loop_once_at_the_end_of_its_batch() {
        let mut poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), WAKER).unwrap();
        let mailbox = Mailbox::new(0, waker, 0);
        let mailboxes = [mailbox];
        let close = |n| Command::CloseAck {
            id: super::super::ConnId::new(0, n, 0),
        };

        // Outside a batch: the first command wakes the sleeping loop at once.
        assert!(mailboxes[0].sleep());
        mailboxes[0].push(close(1));
        assert!(woken(&mut poll));
        mailboxes[0].woke();
        assert!(!mailboxes[0].sleep(), "a command waits: no sleep");
        mailboxes[0].take_commands(&mut Vec::new(), usize::MAX);

        // Inside one: commands are queued at once, the wake-up waits.
        mailboxes[0].batch_sent();
        assert_eq!(mailboxes[0].sleep_bound(), Some(WORKER_CHECK));
        assert!(mailboxes[0].sleep());
        let wakes = DeferredWakes::begin(&mailboxes);
        mailboxes[0].push(close(2));
        mailboxes[0].push(close(3));
        assert_eq!(
            mailboxes[0].gauges().commands_queued,
            2,
            "queued at once, not held back"
        );
        assert!(!woken(&mut poll), "no wake-up inside the batch");
        drop(wakes);
        assert!(woken(&mut poll), "one at its end");
        mailboxes[0].batch_done();
        assert_eq!(mailboxes[0].sleep_bound(), None);
    }
}
