//! [`YieldGauge`]: whether a thread that wants another one on its core to
//! run may still yield to it, or should sleep instead.
//!
//! A yield (`sched_yield`) is the cheaper way while the core is ours and
//! the other thread's alone: that thread runs at once, and no thread
//! sleeps, so no wake-up has to travel between cores (each one an interrupt
//! through the hypervisor on these virtual machines). Without other load,
//! unpinned, one connection echoed at 20k msgs/s this way and at 15k with a
//! sleep. Once something else competes for the core, a yield hands that
//! task a whole time slice, and a loop yields several times a turn; a
//! sleeping thread gets its fair share back when it wakes.
//!
//! Which case holds is read off the yield itself: one that returns after
//! more than [`SLICE_TAKEN`] gave the core to someone else (our own
//! threads' work between two yields takes far less), and the thread sleeps
//! instead for the next [`CONTENDED_FOR`], then tries a yield again. A
//! worker whose handlers are slow enough to hold a yield that long is
//! treated the same way, which costs nothing: the sleep suits it as well.
//!
//! Loops use it to step aside for a worker on their core (`core_sharing`),
//! and workers to wait for their next batch (`worker_inbox`).

use std::time::{Duration, Instant};

/// A yield that took longer than this handed the core to another task.
/// A batch handed over (256 KiB or 512 events) takes our own worker about
/// 100 µs; the kernel's time slice is 0.75-3 ms.
const SLICE_TAKEN: Duration = Duration::from_micros(500);
/// How long a thread that found its core contended sleeps instead of
/// yielding before it tries a yield again.
const CONTENDED_FOR: Duration = Duration::from_secs(1);

/// One thread's choice between yielding and sleeping.
#[derive(Debug, Default)]
pub(crate) struct YieldGauge {
    /// Sleep, not yield, until then.
    contended_until: Option<Instant>,
}

impl YieldGauge {
    /// Whether a yield may be tried now: the core has not looked contended
    /// lately.
    pub(crate) fn may_yield(&self) -> bool {
        self.may_yield_at(Instant::now())
    }

    fn may_yield_at(&self, now: Instant) -> bool {
        self.contended_until.is_none_or(|until| now >= until)
    }

    /// Yields, and notes whether that gave the core to another task.
    pub(crate) fn yield_now(&mut self) {
        let start = Instant::now();
        std::thread::yield_now();
        let now = Instant::now();
        self.waited(now - start, now);
    }

    /// The thread waited `took` for the core (in a yield, or on average to
    /// run, as the kernel counts it).
    pub(crate) fn waited(&mut self, took: Duration, now: Instant) {
        if took > SLICE_TAKEN {
            if self.may_yield_at(now) {
                log::debug!("the core is shared (a wait of {took:?}): sleeping, not yielding, for {CONTENDED_FOR:?}");
            }
            self.contended_until = Some(now + CONTENDED_FOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_yield_turns_the_thread_to_sleeping_for_a_while() {
        let mut gauge = YieldGauge::default();
        let t0 = Instant::now();
        assert!(
            gauge.may_yield_at(t0),
            "a core is the thread's until shown otherwise"
        );

        gauge.waited(Duration::from_micros(120), t0);
        assert!(gauge.may_yield_at(t0), "a yield our own worker used");

        gauge.waited(Duration::from_millis(3), t0);
        assert!(!gauge.may_yield_at(t0), "someone else took a slice");
        assert!(!gauge.may_yield_at(t0 + CONTENDED_FOR / 2));
        assert!(
            gauge.may_yield_at(t0 + CONTENDED_FOR),
            "a yield is tried again"
        );
    }
}
