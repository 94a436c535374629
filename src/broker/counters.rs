//! A broker's counters ([`BrokerStats`]) and its cross-node delivery
//! latency histogram ([`LatencyHistogram`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::latency::{Histogram, LatencyHistogram};

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
    latency: Histogram,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_latency(&self, us: u64) {
        self.latency.record(us);
    }

    pub(crate) fn snapshot(&self) -> BrokerStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
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
            latency: self.latency.snapshot(),
        }
    }
}
