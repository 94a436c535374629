//! [`WorkerInbox`]: where loops leave batches for one worker thread, how
//! that worker waits while it has none, and where it last ran.
//!
//! The batches travel through a bounded crossbeam channel; the wait is
//! ours. Crossbeam's `recv` on an empty channel yields a few times before it
//! parks, which is right while the worker has its core to itself (no thread
//! sleeps, so no wake-up travels between cores) and wrong once another task
//! competes for the core (each yield hands it a time slice). The worker
//! makes that choice the way its loop does ([`YieldGauge`]): a few yields
//! while they return quickly, a park at once after one did not.
//!
//! A parked worker is woken by the next sender, without a lost wake-up
//! ([`Parking`]): the worker announces itself and looks at the channel once
//! more before it parks; a sender sends, then wakes it.
//!
//! A loop that hands a batch to a worker on its own core must step aside
//! for the worker to run (see `core_sharing`); one whose worker runs on
//! another core need not. The worker notes the CPU it took its last batch
//! on, and the loop compares it with its own.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};

use super::parking::Parking;
use super::yield_gauge::YieldGauge;

/// Yields a worker with nothing to do makes (while they return quickly)
/// before it parks: crossbeam's `recv` makes four.
const IDLE_YIELDS: usize = 4;

/// A loop's side of one worker's inbox; there is one per worker. When it is
/// dropped (every loop has gone), the worker takes what is left and ends.
pub(crate) struct WorkerInbox<T> {
    tx: Sender<T>,
    shared: Arc<Shared>,
}

/// The worker's side.
pub(crate) struct WorkerReceiver<T> {
    rx: Receiver<T>,
    shared: Arc<Shared>,
    yields: YieldGauge,
}

struct Shared {
    /// Where the worker parks when it found nothing.
    parking: Parking,
    /// The inbox has gone: the worker ends once the channel is empty.
    closed: AtomicBool,
    /// The CPU the worker took its last batch on (`usize::MAX`: unknown).
    cpu: AtomicUsize,
}

/// An inbox holding at most `capacity` batches, and its receiver.
pub(crate) fn worker_inbox<T>(capacity: usize) -> (WorkerInbox<T>, WorkerReceiver<T>) {
    let (tx, rx) = bounded(capacity);
    let shared = Arc::new(Shared {
        parking: Parking::default(),
        closed: AtomicBool::new(false),
        cpu: AtomicUsize::new(usize::MAX),
    });
    (
        WorkerInbox {
            tx,
            shared: Arc::clone(&shared),
        },
        WorkerReceiver {
            rx,
            shared,
            yields: YieldGauge::default(),
        },
    )
}

impl<T> WorkerInbox<T> {
    /// Names the worker thread that receives from this inbox; called before
    /// the first [`send`](Self::send).
    pub(crate) fn set_worker(&self, thread: Thread) {
        self.shared.parking.set_thread(thread);
    }

    /// Leaves `item` for the worker, waking it if it sleeps. Blocks while
    /// the inbox is full (the worker is far behind); gives `item` back if
    /// the worker has gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        self.tx.send(item).map_err(|e| e.into_inner())?;
        self.shared.parking.wake();
        Ok(())
    }

    /// Whether the worker took its last batch on `cpu`: it then most likely
    /// shares that core with the caller.
    pub(crate) fn last_ran_on(&self, cpu: usize) -> bool {
        self.shared.cpu.load(Ordering::Relaxed) == cpu
    }
}

impl<T> Drop for WorkerInbox<T> {
    fn drop(&mut self) {
        // The channel stays open until `tx` drops after this; the flag is
        // what tells a parked worker to end once the channel is empty.
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.parking.unpark();
    }
}

impl<T> WorkerReceiver<T> {
    /// The next batch, oldest first, waiting while there is none; `None`
    /// once the inbox has gone and nothing is left.
    pub(crate) fn next(&mut self) -> Option<T> {
        let mut yields = 0;
        loop {
            match self.rx.try_recv() {
                Ok(item) => return Some(self.took(item)),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            if yields < IDLE_YIELDS && self.yields.may_yield() {
                self.yields.yield_now();
                yields += 1;
                continue;
            }
            self.shared.parking.announce();
            match self.rx.try_recv() {
                Ok(item) => {
                    self.shared.parking.withdraw();
                    return Some(self.took(item));
                }
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            if self.shared.closed.load(Ordering::SeqCst) {
                return None;
            }
            std::thread::park();
            // Woken by a sender (or spuriously): look again, and park again
            // at once if there is still nothing.
            yields = IDLE_YIELDS;
        }
    }

    fn took(&self, item: T) -> T {
        if let Some(cpu) = current_cpu() {
            self.shared.cpu.store(cpu, Ordering::Relaxed);
        }
        item
    }
}

/// The CPU this thread runs on now, where the system says.
pub(crate) fn current_cpu() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: no arguments; glibc answers from the thread's rseq area
        // or the vDSO, without a system call.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spawn_worker(mut rx: WorkerReceiver<u32>) -> std::thread::JoinHandle<Vec<u32>> {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(n) = rx.next() {
                got.push(n);
            }
            got
        })
    }

    #[test]
    fn every_item_arrives_in_order_and_the_worker_ends_with_its_inbox() {
        let (inbox, rx) = worker_inbox::<u32>(4);
        let worker = spawn_worker(rx);
        inbox.set_worker(worker.thread().clone());
        // Bursts with pauses between them, so the worker parks and is woken
        // again and again: a lost wake-up would hang here. (The pauses only
        // pace the sender; nothing waits on them.)
        for n in 0..20_000u32 {
            inbox.send(n).unwrap();
            if n % 97 == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        drop(inbox);
        assert_eq!(worker.join().unwrap(), (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_parked_worker_ends_when_its_inbox_goes() {
        let (inbox, rx) = worker_inbox::<u32>(4);
        let worker = spawn_worker(rx);
        inbox.set_worker(worker.thread().clone());
        inbox.send(7).unwrap();
        // Parked (or about to be) with nothing left to take.
        while !inbox.shared.parking.is_announced() {
            std::thread::yield_now();
        }
        drop(inbox);
        assert_eq!(worker.join().unwrap(), vec![7]);
    }

    #[test]
    fn the_worker_notes_where_it_ran() {
        let (inbox, mut rx) = worker_inbox::<u32>(4);
        inbox.send(1).unwrap();
        assert_eq!(rx.next(), Some(1));
        // The thread may have moved since, so what was noted is compared
        // with itself, not with where the thread is now.
        let noted = inbox.shared.cpu.load(Ordering::Relaxed);
        match current_cpu() {
            Some(_) => assert!(noted != usize::MAX && inbox.last_ran_on(noted)),
            None => assert_eq!(noted, usize::MAX),
        }
    }
}
