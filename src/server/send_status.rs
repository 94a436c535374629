//! What a send reports ([`SendStatus`]), and the one reservation every send
//! path goes through, which applies the backpressure policy and counts it.

use std::sync::atomic::Ordering;

use super::conn::ConnInner;
use super::{BackpressurePolicy, Config, Stats};

/// How a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Accepted. The loop writes it in order, at once if the socket takes it;
    /// the connection's buffered amount (this message included) was this many bytes.
    Buffered(usize),
    /// Not sent.
    Dropped(DropReason),
}

impl SendStatus {
    /// True when the message was not accepted.
    pub fn is_dropped(self) -> bool {
        matches!(self, SendStatus::Dropped(_))
    }
}

/// Why a message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The connection is closing or closed, or the id is stale.
    Closed,
    /// The message would exceed the connection's buffered cap
    /// ([`Config::max_buffered`]); under [`BackpressurePolicy::Close`] the
    /// connection is being closed with 1008 as well.
    Backpressure,
}

/// A ping payload over the 125 bytes a control frame may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTooLong;

impl std::fmt::Display for PayloadTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a control frame's payload is at most 125 bytes")
    }
}

impl std::error::Error for PayloadTooLong {}

/// A reservation refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection no longer takes messages.
    Closed,
    /// Over the cap; the policy is to drop the message.
    Dropped,
    /// Over the cap; the policy is to close, and this reservation is the one
    /// that turned the connection's open flag off: the caller must now send
    /// the 1008 close (directly on the loop, as a command elsewhere).
    MustClose,
}

impl Refused {
    pub(crate) fn status(self) -> SendStatus {
        SendStatus::Dropped(match self {
            Refused::Closed => DropReason::Closed,
            Refused::Dropped | Refused::MustClose => DropReason::Backpressure,
        })
    }
}

/// Reserves room for `len` payload bytes in `conn`'s buffered amount under
/// the configured cap, or refuses and applies the backpressure policy. Every
/// send, broadcast and publish path (on the loop or not) goes through here.
pub(crate) fn reserve(
    conn: &ConnInner,
    len: usize,
    config: &Config,
    stats: &Stats,
) -> Result<usize, Refused> {
    if !conn.open.load(Ordering::Acquire) {
        return Err(Refused::Closed);
    }
    let before = conn.buffered.fetch_add(len, Ordering::AcqRel);
    // An empty buffer always takes one message: the message limit bounds it.
    if before == 0 || before + len <= config.max_buffered {
        return Ok(before + len);
    }
    conn.buffered.fetch_sub(len, Ordering::AcqRel);
    conn.want_drain.store(true, Ordering::Release);
    stats.dropped_backpressure.fetch_add(1, Ordering::Relaxed);
    if config.backpressure == BackpressurePolicy::Close && conn.open.swap(false, Ordering::AcqRel) {
        stats.closed_backpressure.fetch_add(1, Ordering::Relaxed);
        return Err(Refused::MustClose);
    }
    Err(Refused::Dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::prepared::Encoding;
    use crate::server::ConnId;

    fn conn() -> ConnInner {
        ConnInner::new(ConnId::new(0, 0, 0), None, None, Encoding::Plain)
    }

    #[test]
    fn an_empty_buffer_takes_one_message_whatever_its_size() {
        let (c, stats) = (conn(), Stats::default());
        let cfg = Config {
            max_buffered: 10,
            ..Config::default()
        };
        assert_eq!(reserve(&c, 100, &cfg, &stats), Ok(100));
        c.release(100);
        assert_eq!(reserve(&c, 6, &cfg, &stats), Ok(6));
        assert_eq!(reserve(&c, 4, &cfg, &stats), Ok(10), "up to the cap");
        assert_eq!(stats.snapshot().dropped_backpressure, 0);
    }

    #[test]
    fn over_the_cap_drops_or_closes_once_and_counts() {
        for (policy, first, second) in [
            (BackpressurePolicy::Drop, Refused::Dropped, Refused::Dropped),
            (
                BackpressurePolicy::Close,
                Refused::MustClose,
                Refused::Closed,
            ),
        ] {
            let (c, stats) = (conn(), Stats::default());
            let cfg = Config {
                max_buffered: 10,
                backpressure: policy,
                ..Config::default()
            };
            reserve(&c, 8, &cfg, &stats).unwrap();
            assert_eq!(reserve(&c, 3, &cfg, &stats), Err(first));
            assert_eq!(reserve(&c, 3, &cfg, &stats), Err(second));
            assert_eq!(
                c.buffered.load(Ordering::Relaxed),
                8,
                "refusals reserve nothing"
            );
            let s = stats.snapshot();
            let closing = policy == BackpressurePolicy::Close;
            assert_eq!(s.dropped_backpressure, if closing { 1 } else { 2 });
            assert_eq!(s.closed_backpressure, u64::from(closing));
            assert!(c.want_drain.load(Ordering::Relaxed));
        }
    }
}
