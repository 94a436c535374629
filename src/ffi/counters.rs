//! `sw_counter`: every counter of a server, one at a time, by number.
//!
//! `sw_stats` is a struct the caller allocates, so it cannot grow without
//! breaking programs built against an older header. A counter added since
//! (the loop panics, the TLS handshakes, each reason a handshake failed) is
//! read here instead: `sw_server_counter` takes its number and writes one
//! `uint64_t`. Numbers are fixed and never reused; a program that asks a
//! library older than its header for a newer counter gets
//! `SW_RESULT_INVALID_ARGUMENT`, not a wrong number.

use super::boundary::{call, sw_result};
use super::server::{started, sw_server};
use crate::server::StatsSnapshot;

/// A server counter, by number (pass as `uint32_t` to `sw_server_counter`).
/// Each counts since the server started, except the open connections.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sw_counter {
    /// Connections upgraded and not yet closed.
    ConnectionsOpen = 0,
    /// Connections upgraded.
    ConnectionsTotal = 1,
    /// Messages received.
    MessagesIn = 2,
    /// Messages accepted for sending, one per recipient.
    MessagesOut = 3,
    /// Payload bytes received.
    BytesIn = 4,
    /// Payload bytes accepted for sending, per recipient.
    BytesOut = 5,
    /// Messages dropped for backpressure.
    DroppedBackpressure = 6,
    /// Connections closed for backpressure.
    ClosedBackpressure = 7,
    /// Callbacks that panicked (counted for parity with the Rust API).
    HandlerPanics = 8,
    /// Times an event loop met a bug of its own while handling one
    /// connection: that connection was closed (1011), every other one went
    /// on. Anything but 0 is worth a bug report.
    LoopPanics = 9,
    /// Times an event loop with workers found its core shared with a busy
    /// task and left `SCHED_BATCH` for a while.
    LoopBatchExits = 10,
    /// Broadcasts and publishes an event loop refused.
    DroppedFanout = 11,
    /// Connections closed (1008) for sending faster than their rate limit.
    RateLimitClosed = 12,
    /// Times a connection was not read for a while for its rate limit.
    RateLimitPaused = 13,
    /// Handshakes refused as malformed or invalid (400, 405, 426, 431).
    HandshakeInvalid = 14,
    /// Handshakes refused for their `Origin` (403).
    HandshakeOrigin = 15,
    /// Handshakes refused at the connection limit (503).
    HandshakeCapacity = 16,
    /// Handshakes the `on_upgrade` callback refused.
    HandshakeRejected = 17,
    /// Connections whose request did not arrive in time.
    HandshakeTimeout = 18,
    /// Connections refused for their address's limits (`sw_config_set_ip_limits`).
    HandshakePerIp = 19,
    /// TLS handshakes completed.
    TlsHandshakes = 20,
    /// TLS handshakes failed: the client sent something that is not TLS,
    /// or TLS the server refuses (it got an alert).
    TlsFailedInvalid = 21,
    /// TLS handshakes the client left mid-way.
    TlsFailedClosed = 22,
    /// TLS handshakes that did not finish in time.
    TlsFailedTimeout = 23,
    /// Subscriptions refused: their connection was already in as many
    /// topics as `sw_config_set_max_subscriptions` allows, or the topic's
    /// name was longer than `sw_config_set_max_topic_length` allows.
    SubscriptionsRefused = 24,
}

impl sw_counter {
    /// Every counter, in number order.
    const ALL: [sw_counter; 25] = [
        sw_counter::ConnectionsOpen,
        sw_counter::ConnectionsTotal,
        sw_counter::MessagesIn,
        sw_counter::MessagesOut,
        sw_counter::BytesIn,
        sw_counter::BytesOut,
        sw_counter::DroppedBackpressure,
        sw_counter::ClosedBackpressure,
        sw_counter::HandlerPanics,
        sw_counter::LoopPanics,
        sw_counter::LoopBatchExits,
        sw_counter::DroppedFanout,
        sw_counter::RateLimitClosed,
        sw_counter::RateLimitPaused,
        sw_counter::HandshakeInvalid,
        sw_counter::HandshakeOrigin,
        sw_counter::HandshakeCapacity,
        sw_counter::HandshakeRejected,
        sw_counter::HandshakeTimeout,
        sw_counter::HandshakePerIp,
        sw_counter::TlsHandshakes,
        sw_counter::TlsFailedInvalid,
        sw_counter::TlsFailedClosed,
        sw_counter::TlsFailedTimeout,
        sw_counter::SubscriptionsRefused,
    ];

    /// The counter numbered `n`, if this library has it. (A `u32` from C,
    /// not the enum itself: a number outside the enum would be undefined
    /// behaviour in Rust.)
    fn from_number(n: u32) -> Option<sw_counter> {
        let counter = *Self::ALL.get(usize::try_from(n).ok()?)?;
        (counter as u32 == n).then_some(counter)
    }

    /// This counter's value in `s`.
    fn value_in(self, s: &StatsSnapshot) -> u64 {
        match self {
            sw_counter::ConnectionsOpen => s.connections_open,
            sw_counter::ConnectionsTotal => s.connections_total,
            sw_counter::MessagesIn => s.messages_in,
            sw_counter::MessagesOut => s.messages_out,
            sw_counter::BytesIn => s.bytes_in,
            sw_counter::BytesOut => s.bytes_out,
            sw_counter::DroppedBackpressure => s.dropped_backpressure,
            sw_counter::ClosedBackpressure => s.closed_backpressure,
            sw_counter::HandlerPanics => s.handler_panics,
            sw_counter::LoopPanics => s.loop_panics,
            sw_counter::LoopBatchExits => s.loop_batch_exits,
            sw_counter::DroppedFanout => s.dropped_fanout,
            sw_counter::RateLimitClosed => s.rate_limit_closed,
            sw_counter::RateLimitPaused => s.rate_limit_paused,
            sw_counter::HandshakeInvalid => s.handshake_invalid,
            sw_counter::HandshakeOrigin => s.handshake_origin,
            sw_counter::HandshakeCapacity => s.handshake_capacity,
            sw_counter::HandshakeRejected => s.handshake_rejected,
            sw_counter::HandshakeTimeout => s.handshake_timeout,
            sw_counter::HandshakePerIp => s.handshake_per_ip,
            sw_counter::TlsHandshakes => s.tls_handshakes,
            sw_counter::TlsFailedInvalid => s.tls_failed_invalid,
            sw_counter::TlsFailedClosed => s.tls_failed_closed,
            sw_counter::TlsFailedTimeout => s.tls_failed_timeout,
            sw_counter::SubscriptionsRefused => s.subscriptions_refused,
        }
    }
}

/// Writes the server's counter numbered `counter` (an `sw_counter` value)
/// into `*value_out`; also after a shutdown. `SW_RESULT_INVALID_ARGUMENT`
/// for a number this library does not have (a header newer than it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_counter(
    server: *const sw_server,
    counter: u32,
    value_out: *mut u64,
) -> sw_result {
    call(|| {
        let h = started(server)?;
        if value_out.is_null() {
            return Err(sw_result::NullParameter);
        }
        let counter = sw_counter::from_number(counter).ok_or(sw_result::InvalidArgument)?;
        let value = counter.value_in(&h.stats());
        // SAFETY: checked for NULL; the caller passes a writable uint64_t.
        unsafe { *value_out = value };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_names_its_own_counter_and_no_other() {
        for (i, counter) in sw_counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, i, "{counter:?} out of order");
            assert_eq!(sw_counter::from_number(i as u32), Some(*counter));
        }
        let past = sw_counter::ALL.len() as u32;
        for n in [past, past + 1, u32::MAX] {
            assert_eq!(sw_counter::from_number(n), None);
        }
    }

    #[test]
    fn each_counter_reads_its_own_field() {
        // Every field a different value: a counter wired to another's field
        // reads the wrong one.
        let mut s = StatsSnapshot::default();
        let fields: [&mut u64; 25] = [
            &mut s.connections_open,
            &mut s.connections_total,
            &mut s.messages_in,
            &mut s.messages_out,
            &mut s.bytes_in,
            &mut s.bytes_out,
            &mut s.dropped_backpressure,
            &mut s.closed_backpressure,
            &mut s.handler_panics,
            &mut s.loop_panics,
            &mut s.loop_batch_exits,
            &mut s.dropped_fanout,
            &mut s.rate_limit_closed,
            &mut s.rate_limit_paused,
            &mut s.handshake_invalid,
            &mut s.handshake_origin,
            &mut s.handshake_capacity,
            &mut s.handshake_rejected,
            &mut s.handshake_timeout,
            &mut s.handshake_per_ip,
            &mut s.tls_handshakes,
            &mut s.tls_failed_invalid,
            &mut s.tls_failed_closed,
            &mut s.tls_failed_timeout,
            &mut s.subscriptions_refused,
        ];
        for (i, field) in fields.into_iter().enumerate() {
            *field = 1000 + i as u64;
        }
        for counter in sw_counter::ALL {
            assert_eq!(counter.value_in(&s), 1000 + counter as u64, "{counter:?}");
        }
    }
}
