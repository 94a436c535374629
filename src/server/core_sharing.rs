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
//! A worker waiting for its next batch has the same choice (a few yields,
//! then a park, as crossbeam's `recv` does, or a park at once) and makes it
//! the same way (`worker_inbox`). With a busy process on the core, parking
//! at once was worth +7% at 100 connections × 20 B × 16 in flight, +15-20%
//! at 1,000 × 1 KiB and +21% at one in flight (2 rounds each).
//!
//! A loop with workers runs under `SCHED_BATCH` while its core is its own,
//! and leaves it while a busy task shares the core (see
//! [`CoreSharing::adopt_loop_thread`]); that is read off the time the loop
//! waits to run, from the kernel's scheduler statistics.
//!
//! Which case holds is read off the yield itself: a yield that returns
//! after more than [`SLICE_TAKEN`] gave the core to someone else (our own
//! worker's batch takes far less), and the loop sleeps instead for the next
//! [`CONTENDED_FOR`], then tries a yield again. A worker whose handlers are
//! slow enough to hold a yield that long is treated the same way, which
//! costs nothing: the sleep suits it as well.

use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use super::mailbox::Mailbox;
use super::stats::Stats;

/// A yield that took longer than this handed the core to another task.
/// A batch handed over (256 KiB or 512 events) takes our own worker about
/// 100 µs; the kernel's time slice is 0.75-3 ms.
const SLICE_TAKEN: Duration = Duration::from_micros(500);
/// How long a loop that found its core contended sleeps instead of
/// yielding before it tries a yield again.
const CONTENDED_FOR: Duration = Duration::from_secs(1);
/// The longest a sleeping loop waits for its batches: a worker that sits in
/// a blocking handler holds the loop's other connections up only that long.
/// (Under `SCHED_BATCH`, a worker that is busy on the core keeps it until
/// it parks or its slice ends, whatever this says: the loop's wake-up does
/// not preempt it, see [`CoreSharing::adopt_loop_thread`].)
const WAIT_BOUND: Duration = Duration::from_micros(100);

/// How often a loop under `SCHED_BATCH` reads how long it waited to run.
const RUN_DELAY_EVERY: Duration = Duration::from_millis(100);

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

/// One thread's choice between yielding and sleeping, and a loop's between
/// `SCHED_BATCH` and the usual policy.
#[derive(Debug, Default)]
pub(crate) struct CoreSharing {
    /// Sleep, not yield, until then.
    contended_until: Option<Instant>,
    /// A loop thread with workers: under `SCHED_BATCH` while its core is
    /// uncontended (see [`CoreSharing::adopt_loop_thread`]).
    batch_while_alone: bool,
    /// Out of `SCHED_BATCH` until then.
    preempting_until: Option<Instant>,
    /// The loop thread's scheduler statistics, where the system has them.
    run_delay: Option<RunDelay>,
}

/// The second way contention shows: a `SCHED_BATCH` loop woken while
/// another task runs waits for that task's time slice to end, and never
/// yields to it (the other task runs while the loop sleeps), so its yields
/// all look short. Linux counts, per thread, the time it spent runnable but
/// waiting and the number of times it got the CPU
/// (`/proc/thread-self/schedstat`); waits that average more than
/// [`BATCH_WAIT_LIMIT`] were not for our own worker.
#[derive(Debug)]
struct RunDelay {
    file: std::fs::File,
    /// Nanoseconds waited and times run, at the last reading.
    last: (u64, u64),
    last_at: Instant,
}

impl RunDelay {
    fn open() -> Option<RunDelay> {
        let file = std::fs::File::open("/proc/thread-self/schedstat").ok()?;
        let mut run_delay = RunDelay {
            file,
            last: (0, 0),
            last_at: Instant::now(),
        };
        run_delay.last = run_delay.read()?;
        Some(run_delay)
    }

    fn read(&self) -> Option<(u64, u64)> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 96];
            let n = self.file.read_at(&mut buf, 0).ok()?;
            parse_schedstat(&buf[..n])
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// The average wait per run since the last reading, if `now` is time
    /// for a reading and the thread ran since.
    fn average_wait(&mut self, now: Instant) -> Option<Duration> {
        if now.duration_since(self.last_at) < RUN_DELAY_EVERY {
            return None;
        }
        let (delay, runs) = self.read()?;
        let (last_delay, last_runs) = std::mem::replace(&mut self.last, (delay, runs));
        self.last_at = now;
        let runs = runs.checked_sub(last_runs).filter(|&r| r > 0)?;
        Some(Duration::from_nanos(
            delay.saturating_sub(last_delay) / runs,
        ))
    }
}

/// `/proc/<pid>/task/<tid>/schedstat`: "time on the CPU, time waiting,
/// times run", in nanoseconds and counts; the last two.
fn parse_schedstat(text: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut fields = text.split_ascii_whitespace().skip(1);
    let delay = fields.next()?.parse().ok()?;
    let runs = fields.next()?.parse().ok()?;
    Some((delay, runs))
}

/// What the loop does to let its worker run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Yield,
    Sleep,
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
    pub(crate) fn adopt_loop_thread(&mut self) {
        self.batch_while_alone = true;
        self.run_delay = RunDelay::open();
        set_batch_policy(true);
    }

    /// Called by a loop once a turn: every [`RUN_DELAY_EVERY`], while it
    /// runs under `SCHED_BATCH`, looks at how long it waited to run.
    pub(crate) fn note_turn(&mut self, now: Instant, stats: &Stats) {
        if !self.batch_while_alone {
            return;
        }
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

    /// A loop under `SCHED_BATCH` waited `wait` on average each time it
    /// became runnable, over the last [`RUN_DELAY_EVERY`]; true when that
    /// took it out of `SCHED_BATCH`.
    fn waited_to_run(&mut self, wait: Duration, now: Instant) -> bool {
        if wait <= BATCH_WAIT_LIMIT {
            return false;
        }
        log::debug!("the loop waits {wait:?} to run: leaving SCHED_BATCH for {PREEMPTING_FOR:?}");
        self.preempting_until = Some(now + PREEMPTING_FOR);
        set_batch_policy(false);
        self.waited(wait, now);
        true
    }

    /// The loop just handed batches to a worker that last ran on its core:
    /// lets the worker run now.
    pub(crate) fn let_worker_run(&mut self, mailbox: &Mailbox) {
        if self.may_yield() {
            self.yield_now();
        } else {
            mailbox.wait_for_batches(WAIT_BOUND);
        }
    }

    /// Whether a yield may be tried now: the core has not looked contended
    /// lately.
    pub(crate) fn may_yield(&self) -> bool {
        self.step(Instant::now()) == Step::Yield
    }

    /// Yields, and notes whether that gave the core to another task.
    pub(crate) fn yield_now(&mut self) {
        let start = Instant::now();
        std::thread::yield_now();
        let now = Instant::now();
        self.yielded(now - start, now);
    }

    fn step(&self, now: Instant) -> Step {
        match self.contended_until {
            Some(until) if now < until => Step::Sleep,
            _ => Step::Yield,
        }
    }

    /// A yield returned `took` after it began.
    fn yielded(&mut self, took: Duration, now: Instant) {
        self.waited(took, now);
    }

    /// The thread waited `took` for the core (a yield, or runs on average).
    fn waited(&mut self, took: Duration, now: Instant) {
        if took > SLICE_TAKEN {
            if self.contended_until.is_none_or(|until| now >= until) {
                log::debug!("the core is shared (a wait of {took:?}): sleeping, not yielding, for {CONTENDED_FOR:?}");
            }
            self.contended_until = Some(now + CONTENDED_FOR);
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
    fn schedstat_gives_its_wait_and_runs() {
        assert_eq!(
            parse_schedstat(b"30194370 139939 48\n"),
            Some((139_939, 48))
        );
        assert_eq!(parse_schedstat(b"30194370\n"), None);
        assert_eq!(parse_schedstat(b""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_threads_schedstat_is_read() {
        let run_delay = RunDelay::open().expect("Linux has /proc/thread-self/schedstat");
        let (_, runs) = run_delay.read().unwrap();
        assert!(runs >= 1, "the thread has run");
    }

    #[test]
    fn a_loop_that_waits_long_to_run_leaves_sched_batch_for_a_while() {
        let mut sharing = CoreSharing::default();
        let t0 = Instant::now();
        assert!(!sharing.waited_to_run(Duration::from_micros(900), t0));
        assert_eq!(sharing.preempting_until, None, "a client's bursts");
        assert_eq!(sharing.step(t0), Step::Yield);
        assert!(sharing.waited_to_run(Duration::from_micros(3500), t0));
        assert_eq!(sharing.preempting_until, Some(t0 + PREEMPTING_FOR));
        assert_eq!(sharing.step(t0), Step::Sleep, "and no yields either");
    }

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
