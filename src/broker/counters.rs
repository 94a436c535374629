//! A broker's counters ([`BrokerStats`]) and its cross-node delivery
//! latency histogram ([`LatencyHistogram`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in microseconds (the last bucket,
/// above 1 s, is implicit).
const BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// A broker's counters, as read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Both Redis connections are up.
    pub connected: bool,
    /// Messages this node handed to the broker and the broker took.
    pub published: u64,
    /// Messages this node published that never reached the broker: refused
    /// while it was unreachable, or over the bound of the publish queue.
    pub lost: u64,
    /// Messages this node wrote to the broker in a batch whose reply never
    /// came (the connection failed): they may or may not have gone on.
    pub unconfirmed: u64,
    /// Messages from other nodes received.
    pub received: u64,
    /// Messages from other nodes that this node knows it missed: gaps in an
    /// origin's sequence on a channel (while this node's subscription was
    /// down, or Redis dropped them).
    pub missed: u64,
    /// Messages from other nodes this node's loops refused (their fan-out
    /// queues were full): received, not delivered.
    pub dropped: u64,
    /// Bytes on a broker channel that were not a message of ours.
    pub malformed: u64,
    /// Connections to the broker made again after one was lost.
    pub reconnects: u64,
    /// How long messages from other nodes took, from their publish on the
    /// origin node to their arrival here (clocks of different machines
    /// must agree for this to mean anything).
    pub latency: LatencyHistogram,
}

/// A cumulative histogram of cross-node delivery latency (Prometheus style).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// `(upper bound in µs, messages at or under it)`; the count of all
    /// messages is [`LatencyHistogram::count`].
    pub buckets: Vec<(u64, u64)>,
    /// Messages measured.
    pub count: u64,
    /// Sum of their latencies, in µs.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// The smallest bucket bound under which at least `q` (0..=1) of the
    /// messages fall, in µs; `None` with no messages or past the last bound.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let want = (q * self.count as f64).ceil() as u64;
        if self.count == 0 {
            return None;
        }
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want)
            .map(|(b, _)| *b)
    }
}

/// The live counters a broker's threads update.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) publisher_up: AtomicBool,
    pub(crate) subscriber_up: AtomicBool,
    pub(crate) published: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) unconfirmed: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) missed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    latency: [AtomicU64; BOUNDS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_latency(&self, us: u64) {
        let bucket = BOUNDS_US.partition_point(|&b| b < us);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BrokerStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut running = 0;
        let buckets = BOUNDS_US
            .iter()
            .zip(&self.latency)
            .map(|(&bound, n)| {
                running += r(n);
                (bound, running)
            })
            .collect();
        BrokerStats {
            connected: self.publisher_up.load(Ordering::Acquire)
                && self.subscriber_up.load(Ordering::Acquire),
            published: r(&self.published),
            lost: r(&self.lost),
            unconfirmed: r(&self.unconfirmed),
            received: r(&self.received),
            missed: r(&self.missed),
            dropped: r(&self.dropped),
            malformed: r(&self.malformed),
            reconnects: r(&self.reconnects),
            latency: LatencyHistogram {
                buckets,
                count: running + r(&self.latency[BOUNDS_US.len()]),
                sum_us: r(&self.latency_sum_us),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative_and_inclusive() {
        let c = Counters::default();
        for us in [50, 100, 101, 900, 7_000_000] {
            c.record_latency(us);
        }
        let h = c.snapshot().latency;
        assert_eq!(h.count, 5);
        assert_eq!(h.sum_us, 50 + 100 + 101 + 900 + 7_000_000);
        assert_eq!(h.buckets[0], (100, 2), "100 µs is in the 100 µs bucket");
        assert_eq!(h.buckets[1], (250, 3));
        assert_eq!(h.buckets[3], (1_000, 4));
        assert_eq!(h.buckets.last().unwrap().1, 4, "7 s is past the last bound");
        assert_eq!(h.quantile_bound_us(0.5), Some(250));
        assert_eq!(h.quantile_bound_us(1.0), None);
    }
}
