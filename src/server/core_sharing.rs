//! [`CoreSharing`]: how a loop with workers shares its core with the
//! worker that most likely runs there, and with whatever else does.
//!
//! Two parts:
//! - **Stepping aside.** A loop that hands a batch to a worker on its own
//!   core must let the worker run before it reads on. It yields while the
//!   core is the loop's and the worker's alone, and sleeps until the worker
//!   has finished its batches ([`Mailbox::wait_for_batches`], at most
//!   [`WAIT_BOUND`]) once something else competes for the core: a yield
//!   then handed that task a whole time slice, several times a turn. With
//!   one busy process on its core, sockwave got 10-15% of the core instead
//!   of its half (pinned, 100 connections × 20 B × 16 in flight: 0.37M
//!   msgs/s against uWebSockets' 1.6M). Which case holds is read off the
//!   yields ([`YieldGauge`]).
//! - **`SCHED_BATCH`.** The loop runs under it while its core is its own,
//!   so that its wake-ups do not preempt the worker, and leaves it while a
//!   busy task shares the core (see [`CoreSharing::adopt_loop_thread`]).
//!   That is read off the time the loop waits to run ([`RunDelay`]).
//!
//! A worker waiting for its next batch makes the first choice too (a few
//! yields, then a park, as crossbeam's `recv` does, or a park at once; see
//! `worker_inbox`). With a busy process on the core, parking at once was
//! worth +7% at 100 connections × 20 B × 16 in flight, +15-20% at 1,000 ×
//! 1 KiB and +21% at one in flight (2 rounds each).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::mailbox::Mailbox;
use super::run_delay::RunDelay;
#[cfg(doc)]
use super::run_delay::RUN_DELAY_EVERY;
use super::stats::Stats;
use super::yield_gauge::YieldGauge;

/// The longest a sleeping loop waits for its batches: a worker that sits in
/// a blocking handler holds the loop's other connections up only that long.
/// (Under `SCHED_BATCH`, a worker that is busy on the core keeps it until
/// it parks or its slice ends, whatever this says: the loop's wake-up does
/// not preempt it, see [`CoreSharing::adopt_loop_thread`].)
const WAIT_BOUND: Duration = Duration::from_micros(100);

/// An average wait to run, over [`RUN_DELAY_EVERY`], above which a loop
/// leaves `SCHED_BATCH`. A busy process on the core made it 3.5 ms (a
/// woken loop waits out the rest of its time slice, every time); a load
/// generator sharing both cores with the server (unpinned, 100 connections
/// × 20 B × 16 in flight) made single 10 ms readings 120 µs at the median
/// and 1.5-1.8 ms at the 90th percentile, and a loop out of `SCHED_BATCH`
/// there lost a quarter of its messages/s.
const BATCH_WAIT_LIMIT: Duration = Duration::from_millis(2);
/// How long a loop that left `SCHED_BATCH` stays out before it tries again.
const PREEMPTING_FOR: Duration = Duration::from_secs(5);

/// A loop thread's (one with workers) way of sharing its core.
#[derive(Debug)]
pub(crate) struct CoreSharing {
    /// Whether the loop may yield to its worker, or should sleep.
    yields: YieldGauge,
    /// Out of `SCHED_BATCH` until then.
    preempting_until: Option<Instant>,
    /// The loop thread's scheduler statistics, where the system has them.
    /// A `SCHED_BATCH` loop woken while another task runs waits for that
    /// task's time slice to end, and never yields to it (the other task
    /// runs while the loop sleeps), so its yields all look short; its
    /// waits to run do not.
    run_delay: Option<RunDelay>,
}

impl CoreSharing {
    /// Puts the calling loop thread (one with workers) under `SCHED_BATCH`,
    /// so that its wake-ups no longer preempt the thread running on its
    /// core, for as long as that core does not look contended.
    ///
    /// With workers, a loop and a worker share a core whenever there are as
    /// many of each as cores (the default). A worker handling a batch was
    /// preempted by its loop each time a socket woke the loop: the loop read a
    /// little, queued another batch behind the one unfinished, and slept again,
    /// a pair of thread switches each time. Under `SCHED_BATCH` the woken loop
    /// waits for the worker to finish its batch (or its time slice), then finds
    /// the batch's replies and the new input together. The wake-up still moves
    /// it to an idle core at once if there is one, and its share of the CPU is
    /// unchanged. Pinned to one core, 100 connections × 20 B: context switches
    /// 9,300 → 6,000 in 2.5 s; messages/s +14% at one in flight, +6% at 16 in
    /// flight (5 rounds, medians). Inline, a loop has no worker to wait for,
    /// and it keeps its wake-ups.
    ///
    /// Once a busy task shares the core, the loop goes back to the usual
    /// policy for a while ([`CoreSharing::note_turn`]): a woken
    /// `SCHED_BATCH` thread waits for the running one's time slice to end
    /// (up to a scheduler tick, 4 ms here), and its yields never show it
    /// (the other task runs while the loop sleeps). With a busy process on
    /// the core that held every publish-and-deliver turn of a fan-out to
    /// one a tick (100 subscribers: 0.40M deliveries/s against
    /// uWebSockets' 1.9M).
    ///
    /// A refusal (a sandbox that forbids it) is only logged: the loop runs
    /// as it did.
    pub(crate) fn adopt_loop_thread() -> CoreSharing {
        set_batch_policy(true);
        CoreSharing {
            yields: YieldGauge::default(),
            preempting_until: None,
            run_delay: RunDelay::open(),
        }
    }

    /// Called by the loop once a turn: every [`RUN_DELAY_EVERY`], while it
    /// runs under `SCHED_BATCH`, looks at how long it waited to run.
    pub(crate) fn note_turn(&mut self, now: Instant, stats: &Stats) {
        if let Some(until) = self.preempting_until {
            if now >= until {
                self.preempting_until = None;
                set_batch_policy(true);
            }
            return;
        }
        if let Some(wait) = self.run_delay.as_mut().and_then(|r| r.average_wait(now)) {
            if self.waited_to_run(wait, now) {
                stats.loop_batch_exits.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The loop, under `SCHED_BATCH`, waited `wait` on average each time it
    /// became runnable, over the last [`RUN_DELAY_EVERY`]; true when that
    /// took it out of `SCHED_BATCH`.
    fn waited_to_run(&mut self, wait: Duration, now: Instant) -> bool {
        if wait <= BATCH_WAIT_LIMIT {
            return false;
        }
        log::debug!("the loop waits {wait:?} to run: leaving SCHED_BATCH for {PREEMPTING_FOR:?}");
        self.preempting_until = Some(now + PREEMPTING_FOR);
        set_batch_policy(false);
        self.yields.waited(wait, now);
        true
    }

    /// The loop just handed batches to a worker that last ran on its core:
    /// lets the worker run now.
    pub(crate) fn let_worker_run(&mut self, mailbox: &Mailbox) {
        if self.yields.may_yield() {
            self.yields.yield_now();
        } else {
            mailbox.wait_for_batches(WAIT_BOUND);
        }
    }
}

/// Puts the calling thread under `SCHED_BATCH` (`batch`) or back under the
/// usual `SCHED_OTHER`.
fn set_batch_policy(batch: bool) {
    #[cfg(target_os = "linux")]
    {
        let policy = if batch {
            libc::SCHED_BATCH
        } else {
            libc::SCHED_OTHER
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain struct read by the kernel; 0 names this thread.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            log::debug!(
                "scheduling policy {policy} refused ({}); the loop keeps its own",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = batch;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_waits_long_to_run_leaves_sched_batch_for_a_while() {
        let mut sharing = CoreSharing {
            yields: YieldGauge::default(),
            preempting_until: None,
            run_delay: None,
        };
        let t0 = Instant::now();
        assert!(!sharing.waited_to_run(Duration::from_micros(900), t0));
        assert_eq!(sharing.preempting_until, None, "a client's bursts");
        assert!(sharing.yields.may_yield());
        assert!(sharing.waited_to_run(Duration::from_micros(3500), t0));
        assert_eq!(sharing.preempting_until, Some(t0 + PREEMPTING_FOR));
        assert!(!sharing.yields.may_yield(), "and no yields either");
    }
}
