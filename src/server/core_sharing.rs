//! [`CoreSharing`]: how a loop lets a worker that shares its core handle
//! the batch it was just handed, before the loop reads on.
//!
//! Two ways, each best in its own case:
//! - **A yield** (`sched_yield`), while the core is the loop's and the
//!   worker's alone: the worker runs at once, and no thread sleeps, so no
//!   wake-up has to travel between cores (each one an interrupt through the
//!   hypervisor on these virtual machines). Without other load, unpinned,
//!   one connection echoed at 20k msgs/s this way and at 15k with the sleep.
//! - **A sleep** until the worker has finished the loop's batches
//!   ([`Mailbox::wait_for_batches`]), once something else competes for the
//!   core. A yield then hands the core to that other task for a whole time
//!   slice, and a loop yields several times a turn: with one busy process
//!   on its core, sockwave got 10-15% of the core instead of its half
//!   (pinned, 100 connections × 20 B × 16 in flight: 0.37M msgs/s against
//!   uWebSockets' 1.6M). A sleeping thread gets its fair share back when it
//!   wakes.
//!
//! Which case holds is read off the yield itself: a yield that returns
//! after more than [`SLICE_TAKEN`] gave the core to someone else (our own
//! worker's batch takes far less), and the loop sleeps instead for the next
//! [`CONTENDED_FOR`], then tries a yield again. A worker whose handlers are
//! slow enough to hold a yield that long is treated the same way, which
//! costs nothing: the sleep suits it as well.

use std::time::{Duration, Instant};

use super::mailbox::Mailbox;

/// A yield that took longer than this handed the core to another task.
/// A batch handed over (256 KiB or 512 events) takes our own worker about
/// 100 µs; the kernel's time slice is 0.75-3 ms.
const SLICE_TAKEN: Duration = Duration::from_micros(500);
/// How long a loop that found its core contended sleeps instead of
/// yielding before it tries a yield again.
const CONTENDED_FOR: Duration = Duration::from_secs(1);
/// The longest a sleeping loop waits for its batches: a worker that sits in
/// a blocking handler holds the loop's other connections up only that long.
/// (A worker that is busy on the core keeps it until it parks or its slice
/// ends, whatever this says: a loop's wake-up does not preempt it, see
/// `dispatch::yield_to_workers_on_wakeup`.)
const WAIT_BOUND: Duration = Duration::from_micros(100);

/// One loop's choice between yielding and sleeping.
#[derive(Debug, Default)]
pub(crate) struct CoreSharing {
    /// Sleep, not yield, until then.
    contended_until: Option<Instant>,
}

/// What the loop does to let its worker run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Yield,
    Sleep,
}

impl CoreSharing {
    /// The loop just handed batches to a worker that last ran on its core:
    /// lets the worker run now.
    pub(crate) fn let_worker_run(&mut self, mailbox: &Mailbox) {
        let start = Instant::now();
        match self.step(start) {
            Step::Sleep => mailbox.wait_for_batches(WAIT_BOUND),
            Step::Yield => {
                std::thread::yield_now();
                let now = Instant::now();
                self.yielded(now - start, now);
            }
        }
    }

    fn step(&self, now: Instant) -> Step {
        match self.contended_until {
            Some(until) if now < until => Step::Sleep,
            _ => Step::Yield,
        }
    }

    /// A yield returned `took` after it began.
    fn yielded(&mut self, took: Duration, now: Instant) {
        if took > SLICE_TAKEN {
            log::debug!("the loop's core is shared (a yield took {took:?}): sleeping, not yielding, for {CONTENDED_FOR:?}");
            self.contended_until = Some(now + CONTENDED_FOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_yield_turns_the_loop_to_sleeping_for_a_while() {
        let mut sharing = CoreSharing::default();
        let t0 = Instant::now();
        assert_eq!(
            sharing.step(t0),
            Step::Yield,
            "a core is the loop's until shown otherwise"
        );

        sharing.yielded(Duration::from_micros(120), t0);
        assert_eq!(sharing.step(t0), Step::Yield, "a yield our own worker used");

        sharing.yielded(Duration::from_millis(3), t0);
        assert_eq!(sharing.step(t0), Step::Sleep, "someone else took a slice");
        assert_eq!(sharing.step(t0 + CONTENDED_FOR / 2), Step::Sleep);
        assert_eq!(
            sharing.step(t0 + CONTENDED_FOR),
            Step::Yield,
            "a yield is tried again"
        );
    }
}
