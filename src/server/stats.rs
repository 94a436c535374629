//! Server-wide counters ([`Stats`]) and the per-loop tallies folded into them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::latency::{Histogram, LatencyHistogram, LocalHistogram};

/// Server-wide counters, readable at any time from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections upgraded and not yet closed.
    pub connections_open: AtomicU64,
    /// Connections upgraded since the start.
    pub connections_total: AtomicU64,
    /// Messages received (after reassembly and decompression).
    pub messages_in: AtomicU64,
    /// Messages accepted for sending, one per recipient.
    pub messages_out: AtomicU64,
    /// Payload bytes received.
    pub bytes_in: AtomicU64,
    /// Payload bytes accepted for sending, per recipient.
    pub bytes_out: AtomicU64,
    /// Messages dropped because the recipient's buffer was over its cap.
    pub dropped_backpressure: AtomicU64,
    /// Connections closed (1008) because their buffer was over its cap.
    pub closed_backpressure: AtomicU64,
    /// Handler calls that panicked (each closed its connection with 1011).
    pub handler_panics: AtomicU64,
    /// Panics of the loop itself while it read one connection's input (a
    /// bug of ours): each dropped that connection, and the loop went on.
    pub loop_panics: AtomicU64,
    /// Times a loop with workers found a busy task sharing its core and
    /// left `SCHED_BATCH` for a while (its wake-ups preempt again).
    pub loop_batch_exits: AtomicU64,
    /// Broadcasts and publishes a loop refused, because
    /// `Config::max_pending_fanout` bytes of them were already waiting for it.
    pub dropped_fanout: AtomicU64,
    /// Connections closed (1008) for sending faster than `Config::rate_limit`.
    pub rate_limit_closed: AtomicU64,
    /// Times a connection was not read for a while for sending faster than
    /// `Config::rate_limit` (the `Pause` policy).
    pub rate_limit_paused: AtomicU64,
    /// Subscriptions refused: their connection was already in
    /// `Config::max_subscriptions` topics, or the topic's name was longer
    /// than `Config::max_topic_length`.
    pub subscriptions_refused: AtomicU64,
    /// Handshakes that did not end in an open connection, by reason.
    pub handshake_failures: HandshakeFailures,
    /// TLS handshakes, done and failed (wss:// only).
    pub tls: TlsHandshakes,
    /// From accept to the 101 written into the connection's queue.
    pub(crate) handshake_latency: Histogram,
    /// From a message's arrival (the loop turn that read it) to the start of
    /// its worker's batch (worker dispatch only).
    pub(crate) dispatch_latency: Histogram,
    /// From bytes queued for a connection to the write that took the last of
    /// them (per queued buffer: coalesced frames count once, as the oldest).
    pub(crate) send_latency: Histogram,
}

/// The server's latency histograms ([`ServerHandle::latencies`](super::ServerHandle::latencies)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latencies {
    /// From accept to the upgrade's 101 (TLS handshake and request included).
    pub handshake: LatencyHistogram,
    /// From a message's arrival to its handler, with worker dispatch (the
    /// time it waited for a worker).
    pub dispatch: LatencyHistogram,
    /// From bytes queued for a connection to the write that took them (the
    /// time they waited for the socket).
    pub send: LatencyHistogram,
}

impl Stats {
    /// Reads the latency histograms.
    pub fn latencies(&self) -> Latencies {
        Latencies {
            handshake: self.handshake_latency.snapshot(),
            dispatch: self.dispatch_latency.snapshot(),
            send: self.send_latency.snapshot(),
        }
    }
}

/// Handshake failures by reason.
#[derive(Debug, Default)]
pub struct HandshakeFailures {
    /// Malformed or invalid upgrade requests (400, 405, 426, 431).
    pub invalid: AtomicU64,
    /// Origin not allowed (403).
    pub origin: AtomicU64,
    /// Over the connection limit (503).
    pub capacity: AtomicU64,
    /// Refused by the application's hook.
    pub rejected: AtomicU64,
    /// No complete request within the handshake timeout.
    pub timeout: AtomicU64,
    /// Closed at once: its address had too many connections open or made
    /// too many of them lately (`RateLimit::connections_per_ip`,
    /// `RateLimit::handshakes_per_ip`).
    pub per_ip: AtomicU64,
}

/// TLS handshakes: completed, and failed by reason.
#[derive(Debug, Default)]
pub struct TlsHandshakes {
    /// Completed.
    pub done: AtomicU64,
    /// The client sent something that is not TLS, or TLS we refuse (it got an alert).
    pub invalid: AtomicU64,
    /// The client went away mid-handshake.
    pub closed: AtomicU64,
    /// Not completed within the handshake timeout.
    pub timeout: AtomicU64,
}

/// Why a TLS handshake failed, for [`TlsHandshakes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsFailure {
    Invalid,
    Closed,
    Timeout,
}

impl TlsHandshakes {
    pub(crate) fn done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, why: TlsFailure) {
        let counter = match why {
            TlsFailure::Invalid => &self.invalid,
            TlsFailure::Closed => &self.closed,
            TlsFailure::Timeout => &self.timeout,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a handshake failed, for [`HandshakeFailures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    Invalid,
    Origin,
    Capacity,
    Rejected,
    Timeout,
    PerIp,
}

impl HandshakeFailures {
    pub(crate) fn count(&self, why: HandshakeFailure) {
        let counter = match why {
            HandshakeFailure::Invalid => &self.invalid,
            HandshakeFailure::Origin => &self.origin,
            HandshakeFailure::Capacity => &self.capacity,
            HandshakeFailure::Rejected => &self.rejected,
            HandshakeFailure::Timeout => &self.timeout,
            HandshakeFailure::PerIp => &self.per_ip,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A plain copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // each field is the counter of the same name in `Stats`
pub struct StatsSnapshot {
    pub connections_open: u64,
    pub connections_total: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped_backpressure: u64,
    pub closed_backpressure: u64,
    pub handler_panics: u64,
    pub loop_panics: u64,
    pub loop_batch_exits: u64,
    pub dropped_fanout: u64,
    pub rate_limit_closed: u64,
    pub rate_limit_paused: u64,
    pub handshake_invalid: u64,
    pub handshake_origin: u64,
    pub handshake_capacity: u64,
    pub handshake_rejected: u64,
    pub handshake_timeout: u64,
    pub handshake_per_ip: u64,
    pub tls_handshakes: u64,
    pub tls_failed_invalid: u64,
    pub tls_failed_closed: u64,
    pub tls_failed_timeout: u64,
    pub subscriptions_refused: u64,
}

impl Stats {
    /// Reads every counter (each one atomically; the set is not one instant).
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let h = &self.handshake_failures;
        StatsSnapshot {
            connections_open: r(&self.connections_open),
            connections_total: r(&self.connections_total),
            messages_in: r(&self.messages_in),
            messages_out: r(&self.messages_out),
            bytes_in: r(&self.bytes_in),
            bytes_out: r(&self.bytes_out),
            dropped_backpressure: r(&self.dropped_backpressure),
            closed_backpressure: r(&self.closed_backpressure),
            handler_panics: r(&self.handler_panics),
            loop_panics: r(&self.loop_panics),
            loop_batch_exits: r(&self.loop_batch_exits),
            dropped_fanout: r(&self.dropped_fanout),
            rate_limit_closed: r(&self.rate_limit_closed),
            rate_limit_paused: r(&self.rate_limit_paused),
            handshake_invalid: r(&h.invalid),
            handshake_origin: r(&h.origin),
            handshake_capacity: r(&h.capacity),
            handshake_rejected: r(&h.rejected),
            handshake_timeout: r(&h.timeout),
            handshake_per_ip: r(&h.per_ip),
            tls_handshakes: r(&self.tls.done),
            tls_failed_invalid: r(&self.tls.invalid),
            tls_failed_closed: r(&self.tls.closed),
            tls_failed_timeout: r(&self.tls.timeout),
            subscriptions_refused: r(&self.subscriptions_refused),
        }
    }
}

/// Message counters a loop keeps to itself and folds into [`Stats`] once per
/// turn, so loops do not contend on shared cache lines per message.
#[derive(Debug, Default)]
pub(crate) struct LoopStats {
    messages_in: u64,
    bytes_in: u64,
    messages_out: u64,
    bytes_out: u64,
    handshakes: LocalHistogram,
}

impl LoopStats {
    pub(crate) fn received(&mut self, len: usize) {
        self.messages_in += 1;
        self.bytes_in += len as u64;
    }

    /// A handshake that took `took`, from accept to the 101.
    pub(crate) fn upgraded(&mut self, took: Duration) {
        self.handshakes.record(micros(took));
    }

    pub(crate) fn sent(&mut self, len: usize) {
        self.sent_many(1, len);
    }

    /// `messages` sent, `bytes` of payload in all.
    pub(crate) fn sent_many(&mut self, messages: usize, bytes: usize) {
        self.messages_out += messages as u64;
        self.bytes_out += bytes as u64;
    }

    /// Adds the tallies to `stats` and starts again from zero.
    pub(crate) fn fold_into(&mut self, stats: &Stats) {
        let mut l = std::mem::take(self);
        l.handshakes.fold_into(&stats.handshake_latency);
        if l.messages_in > 0 {
            stats
                .messages_in
                .fetch_add(l.messages_in, Ordering::Relaxed);
            stats.bytes_in.fetch_add(l.bytes_in, Ordering::Relaxed);
        }
        if l.messages_out > 0 {
            stats
                .messages_out
                .fetch_add(l.messages_out, Ordering::Relaxed);
            stats.bytes_out.fetch_add(l.bytes_out, Ordering::Relaxed);
        }
    }
}

/// Whole microseconds (saturating).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
