//! Latency histograms: [`LatencyHistogram`], what a reader sees, and the
//! counters behind it. Threads on the hot path count into a
//! [`LocalHistogram`] of their own and fold it into the shared
//! [`Histogram`] once per turn or batch, so they never contend per event.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in microseconds (one more bucket, past the
/// last bound, is implicit).
const BOUNDS_US: [u64; 18] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000,
];
const BUCKETS: usize = BOUNDS_US.len() + 1;

fn bucket(us: u64) -> usize {
    BOUNDS_US.partition_point(|&b| b < us)
}

/// A cumulative latency histogram (Prometheus style), read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// `(upper bound in µs, events at or under it)`, cumulative; the count
    /// of all events is [`LatencyHistogram::count`].
    pub buckets: Vec<(u64, u64)>,
    /// Events measured.
    pub count: u64,
    /// Sum of their latencies, in µs.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// The smallest bucket bound under which at least `q` (0..=1) of the
    /// events fall, in µs; `None` with no events or past the last bound.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let want = (q * self.count as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want)
            .map(|(b, _)| *b)
    }
}

/// The shared counters of one histogram.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Histogram {
    pub(crate) fn record(&self, us: u64) {
        self.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        let mut running = 0;
        let buckets = BOUNDS_US
            .iter()
            .zip(&self.counts)
            .map(|(&bound, n)| {
                running += n.load(Ordering::Relaxed);
                (bound, running)
            })
            .collect();
        LatencyHistogram {
            buckets,
            count: running + self.counts[BUCKETS - 1].load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// One thread's counts, folded into a [`Histogram`] now and then.
#[derive(Debug, Default, Clone)]
pub(crate) struct LocalHistogram {
    counts: [u64; BUCKETS],
    sum_us: u64,
    events: u64,
}

impl LocalHistogram {
    /// `n` events of `us` each.
    pub(crate) fn record_n(&mut self, us: u64, n: u64) {
        self.counts[bucket(us)] += n;
        self.sum_us += us * n;
        self.events += n;
    }

    pub(crate) fn record(&mut self, us: u64) {
        self.record_n(us, 1);
    }

    /// Adds the counts to `into` and starts again from zero.
    pub(crate) fn fold_into(&mut self, into: &Histogram) {
        if self.events == 0 {
            return;
        }
        for (i, n) in self.counts.iter().enumerate() {
            if *n > 0 {
                into.counts[i].fetch_add(*n, Ordering::Relaxed);
            }
        }
        into.sum_us.fetch_add(self.sum_us, Ordering::Relaxed);
        *self = LocalHistogram::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive_and_local_counts_fold() {
        let h = Histogram::default();
        for us in [5, 10, 11, 900, 7_000_000] {
            h.record(us);
        }
        let mut local = LocalHistogram::default();
        local.record_n(30, 2);
        local.fold_into(&h);
        local.fold_into(&h); // nothing twice
        let s = h.snapshot();
        assert_eq!(s.count, 7);
        assert_eq!(s.sum_us, 5 + 10 + 11 + 900 + 7_000_000 + 60);
        assert_eq!(s.buckets[0], (10, 2), "10 µs is in the 10 µs bucket");
        assert_eq!(s.buckets[1], (25, 3));
        assert_eq!(s.buckets[2], (50, 5));
        assert_eq!(s.buckets.last().unwrap().1, 6, "7 s is past the last bound");
        assert_eq!(s.quantile_bound_us(0.5), Some(50));
        assert_eq!(s.quantile_bound_us(1.0), None);
    }
}
