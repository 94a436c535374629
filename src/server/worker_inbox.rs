//! [`WorkerInbox`]: where loops leave batches for one worker thread (a
//! bounded crossbeam channel), and where that worker last ran.
//!
//! A loop that hands a batch to a worker on its own core must step aside for
//! the worker to run (see `core_sharing`); one whose worker runs on another
//! core must not, or it waits for nothing. The worker notes the CPU it took
//! its last batch on, and the loop compares it with its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

/// A loop's side of one worker's inbox. When every loop has dropped its
/// inboxes, the worker takes what is left and ends.
pub(crate) struct WorkerInbox<T> {
    tx: Sender<T>,
    cpu: Arc<AtomicUsize>,
}

/// The worker's side.
pub(crate) struct WorkerReceiver<T> {
    rx: Receiver<T>,
    cpu: Arc<AtomicUsize>,
}

/// An inbox holding at most `capacity` batches, and its receiver.
pub(crate) fn worker_inbox<T>(capacity: usize) -> (WorkerInbox<T>, WorkerReceiver<T>) {
    let (tx, rx) = bounded(capacity);
    let cpu = Arc::new(AtomicUsize::new(usize::MAX));
    (
        WorkerInbox {
            tx,
            cpu: Arc::clone(&cpu),
        },
        WorkerReceiver { rx, cpu },
    )
}

impl<T> WorkerInbox<T> {
    /// Leaves `item` for the worker. Blocks while the inbox is full (the
    /// worker is far behind); gives `item` back if the worker has gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        self.tx.send(item).map_err(|e| e.into_inner())
    }

    /// Whether the worker took its last batch on `cpu`: it then most likely
    /// shares that core with the caller.
    pub(crate) fn last_ran_on(&self, cpu: usize) -> bool {
        self.cpu.load(Ordering::Relaxed) == cpu
    }
}

impl<T> WorkerReceiver<T> {
    /// The next batch, oldest first, waiting while there is none; `None`
    /// once every loop has gone and nothing is left.
    pub(crate) fn next(&self) -> Option<T> {
        let item = self.rx.recv().ok()?;
        if let Some(cpu) = current_cpu() {
            self.cpu.store(cpu, Ordering::Relaxed);
        }
        Some(item)
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

    #[test]
    fn items_arrive_in_order_and_the_receiver_ends_with_the_inbox() {
        let (inbox, rx) = worker_inbox::<u32>(4);
        let worker = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(n) = rx.next() {
                got.push(n);
            }
            got
        });
        for n in 0..1000 {
            inbox.send(n).unwrap();
        }
        drop(inbox);
        assert_eq!(worker.join().unwrap(), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn the_receiver_notes_where_it_ran() {
        let (inbox, rx) = worker_inbox::<u32>(4);
        inbox.send(1).unwrap();
        assert_eq!(rx.next(), Some(1));
        // The thread may have moved since, so only a known CPU is compared
        // with what the receiver noted there and then.
        let noted = inbox.cpu.load(Ordering::Relaxed);
        match current_cpu() {
            Some(_) => assert!(inbox.last_ran_on(noted) && noted != usize::MAX),
            None => assert_eq!(noted, usize::MAX),
        }
    }
}
