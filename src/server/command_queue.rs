//! [`CommandQueue`]: the commands waiting for one loop, in the order they
//! were sent, from any number of threads.
//!
//! A vector behind a lock, which the loop swaps out whole once a turn. The
//! queue was a crossbeam channel, whose every send and receive is two
//! atomic read-modify-writes, and whose storage is a list of blocks of 31
//! slots, allocated zeroed by the sender and freed by the receiver. Profiled
//! on one core (100 connections × 20 B × 16 in flight, worker dispatch),
//! that channel was 4.5% of the server's samples and the largest part of what
//! worker dispatch costs over inline. Here a send is one uncontended lock and
//! a push into memory the loop handed back warm, and the loop takes a turn's
//! commands with one lock, not one receive per command. Order is the same as
//! the channel's: one queue, appended under one lock.
//!
//! The loop's sleep is announced under the same lock: a sender either sees
//! it (and wakes the loop) or its command is seen by the loop before it
//! sleeps. No memory fence is needed beyond the lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::command::Command;

/// Capacity above which the loop does not hand an emptied vector back: after
/// a flood of commands the queue's memory goes, not stays.
const KEEP_CAPACITY: usize = 4096;

/// The commands waiting for one loop.
pub(crate) struct CommandQueue {
    inner: Mutex<Inner>,
    /// How many wait: written under the lock, read without it (the gauge,
    /// and whether the loop keeps its own commands on its thread).
    len: AtomicUsize,
}

struct Inner {
    commands: Vec<Command>,
    /// The loop has gone: later commands are dropped, not kept.
    closed: bool,
    /// The loop is (about to be) blocked in poll: the next sender wakes it.
    asleep: bool,
}

/// What became of a command pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued; the loop is awake, or already being woken.
    Queued,
    /// Queued, and the loop sleeps: this sender must wake it.
    QueuedWake,
    /// The loop has gone: dropped.
    Closed,
}

impl CommandQueue {
    pub(crate) fn new() -> CommandQueue {
        CommandQueue {
            inner: Mutex::new(Inner {
                commands: Vec::new(),
                closed: false,
                asleep: false,
            }),
            len: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held but an allocation failure,
        // which aborts; a poisoned queue is still a consistent one.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `cmd`. The first sender after the loop went to sleep is told
    /// to wake it; the others are not (one wake-up per batch).
    pub(crate) fn push(&self, cmd: Command) -> Pushed {
        let mut inner = self.lock();
        if inner.closed {
            return Pushed::Closed;
        }
        inner.commands.push(cmd);
        self.len.store(inner.commands.len(), Ordering::Release);
        if std::mem::take(&mut inner.asleep) {
            Pushed::QueuedWake
        } else {
            Pushed::Queued
        }
    }

    /// The loop is about to sleep: true if it may (nothing waits; the next
    /// sender is told to wake it), false if commands wait.
    pub(crate) fn sleep(&self) -> bool {
        let mut inner = self.lock();
        inner.asleep = inner.commands.is_empty();
        inner.asleep
    }

    /// The loop is awake: senders need not wake it.
    pub(crate) fn woke(&self) {
        self.lock().asleep = false;
    }

    /// Whether no command waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many commands wait.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Moves the oldest `max` waiting commands (all of them, usually) into
    /// `out`, which must be empty, in order. While all of them go, `out`'s
    /// own allocation is left in their place for the senders to fill.
    pub(crate) fn take(&self, out: &mut Vec<Command>, max: usize) {
        debug_assert!(out.is_empty());
        if out.capacity() > KEEP_CAPACITY {
            *out = Vec::new();
        }
        let mut inner = self.lock();
        if inner.commands.len() <= max {
            std::mem::swap(&mut inner.commands, out);
        } else {
            // A flood: the rest wait for the loop's next turn.
            out.extend(inner.commands.drain(..max));
        }
        self.len.store(inner.commands.len(), Ordering::Release);
    }

    /// The loop has gone: what waits is dropped, and so is anything sent
    /// from now on.
    pub(crate) fn close(&self) {
        let commands = {
            let mut inner = self.lock();
            inner.closed = true;
            self.len.store(0, Ordering::Release);
            std::mem::take(&mut inner.commands)
        };
        drop(commands);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ConnId;

    fn ack(n: usize) -> Command {
        Command::CloseAck {
            id: ConnId::new(0, n, 0),
        }
    }

    fn ids(commands: &[Command]) -> Vec<usize> {
        commands
            .iter()
            .map(|c| match c {
                Command::CloseAck { id } => id.slot(),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn commands_come_out_in_order_and_a_flood_over_turns() {
        let q = CommandQueue::new();
        assert!(q.is_empty());
        for n in 0..5 {
            assert_eq!(q.push(ack(n)), Pushed::Queued);
        }
        assert_eq!(q.len(), 5);
        let mut out = Vec::new();
        q.take(&mut out, 3);
        assert_eq!(ids(&out), [0, 1, 2]);
        assert_eq!(q.len(), 2, "the rest wait");
        assert_eq!(q.push(ack(5)), Pushed::Queued);
        out.clear();
        q.take(&mut out, 3);
        assert_eq!(ids(&out), [3, 4, 5]);
        assert!(q.is_empty());
    }

    #[test]
    fn the_loops_vector_is_handed_back_to_the_senders() {
        let q = CommandQueue::new();
        let mut out = Vec::with_capacity(64);
        let ptr = out.as_ptr();
        q.push(ack(1));
        q.take(&mut out, usize::MAX);
        out.clear();
        q.push(ack(2));
        let mut next = std::mem::take(&mut out);
        q.take(&mut next, usize::MAX);
        assert_eq!(next.as_ptr(), ptr, "pushed into the loop's old vector");
        assert_eq!(ids(&next), [2]);
    }

    #[test]
    fn the_first_sender_after_the_loop_sleeps_wakes_it_and_only_that_one() {
        let q = CommandQueue::new();
        assert!(q.sleep(), "nothing waits: the loop may sleep");
        assert_eq!(q.push(ack(1)), Pushed::QueuedWake);
        assert_eq!(q.push(ack(2)), Pushed::Queued, "already being woken");
        q.woke();
        assert!(!q.sleep(), "commands wait: no sleep");
        assert_eq!(q.push(ack(3)), Pushed::Queued);
        let mut out = Vec::new();
        q.take(&mut out, usize::MAX);
        assert!(q.sleep());
        q.woke();
        assert_eq!(q.push(ack(4)), Pushed::Queued, "awake again");
    }

    #[test]
    fn a_closed_queue_drops_what_waits_and_refuses_more() {
        let q = CommandQueue::new();
        q.push(ack(1));
        q.close();
        assert!(q.is_empty());
        assert_eq!(q.push(ack(2)), Pushed::Closed);
        let mut out = Vec::new();
        q.take(&mut out, usize::MAX);
        assert!(out.is_empty());
    }

    #[test]
    fn many_senders_each_keep_their_order() {
        let q = std::sync::Arc::new(CommandQueue::new());
        let senders: Vec<_> = (0..4usize)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for n in 0..1000 {
                        q.push(ack(t * 1000 + n));
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        let mut out = Vec::new();
        while seen.len() < 4000 {
            q.take(&mut out, 100);
            seen.extend(ids(&out));
            out.clear();
            std::thread::yield_now();
        }
        for s in senders {
            s.join().unwrap();
        }
        for t in 0..4 {
            let mine: Vec<usize> = seen.iter().copied().filter(|&n| n / 1000 == t).collect();
            assert_eq!(mine, (t * 1000..t * 1000 + 1000).collect::<Vec<_>>());
        }
    }
}
