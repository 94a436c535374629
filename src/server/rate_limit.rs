//! [`RateLimit`]: how much a client may send, per connection and per
//! address, and the token buckets that measure it.
//!
//! Per connection, every complete message takes one token from the message
//! bucket and its length from the byte bucket. Over the limit, the policy
//! closes the connection (1008) or stops reading it until the buckets have
//! refilled (TCP then pushes back on the client). Per source address, a cap
//! on concurrent connections and a bucket of handshakes: a connection past
//! either is closed at once, before its request is read (cheaper than a
//! 503 under a flood, and a flood is what these limits are for).

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// The most tokens held (what may be spent at once after a quiet spell).
    pub burst: f64,
}

impl Rate {
    /// `per_sec` a second, with bursts of twice that.
    pub fn per_sec(per_sec: f64) -> Rate {
        Rate {
            per_sec,
            burst: per_sec * 2.0,
        }
    }
}

/// What happens to a connection that sends faster than its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitPolicy {
    /// Close it with 1008 (policy violation), at once: the message over the
    /// limit is not handed to the handler, and replies to earlier ones that
    /// the handler has not sent yet are dropped with the connection.
    Close,
    /// Stop reading it until its buckets have refilled: the client is slowed
    /// down by TCP, not disconnected.
    Pause,
}

/// Limits on what clients send. All off by default in the library.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second per connection.
    pub messages: Option<Rate>,
    /// Payload bytes per second per connection.
    pub bytes: Option<Rate>,
    /// What happens past `messages` or `bytes`.
    pub policy: RateLimitPolicy,
    /// Open connections (and handshakes under way) per source address. Off
    /// by default: behind a proxy or load balancer every client has its
    /// address (see the README).
    pub connections_per_ip: Option<u32>,
    /// New connections per second per source address.
    pub handshakes_per_ip: Option<Rate>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            messages: None,
            bytes: None,
            policy: RateLimitPolicy::Close,
            connections_per_ip: None,
            handshakes_per_ip: None,
        }
    }
}

impl RateLimit {
    /// Whether any per-connection limit is set.
    pub(crate) fn per_connection(&self) -> bool {
        self.messages.is_some() || self.bytes.is_some()
    }

    /// Whether any per-address limit is set.
    pub(crate) fn per_ip(&self) -> bool {
        self.connections_per_ip.is_some() || self.handshakes_per_ip.is_some()
    }
}

/// Rounding the refill may leave: a token short by this much is a token.
const EPSILON: f64 = 1e-6;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        // Messages read in one loop turn share its `now`: only the first
        // pays for the arithmetic.
        if now <= self.last {
            return;
        }
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.last = now;
    }

    /// Takes `n` tokens if the bucket has them.
    pub(crate) fn try_take(&mut self, n: f64, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens + EPSILON >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Full again (nothing owed, nothing spent that has not come back).
    pub(crate) fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_sec + EPSILON >= rate.burst
    }
}

/// A connection's part in the limits, kept (boxed) only when some limit is
/// set, and then only from its first message on (or from the accept, when
/// addresses are limited): an idle connection pays one pointer. Both
/// buckets share one clock, refilled once per loop turn at most: every
/// message of a turn shares its `now`, and after the first one a charge is
/// two subtractions.
#[derive(Debug)]
pub(crate) struct ConnLimits {
    /// The address it was admitted from, given back when it ends.
    pub(crate) ip: Option<IpAddr>,
    last: Instant,
    messages: f64,
    bytes: f64,
    /// Not read before this (the `Pause` policy).
    pub(crate) paused_until: Option<Instant>,
}

impl ConnLimits {
    pub(crate) fn new(limit: &RateLimit, ip: Option<IpAddr>, now: Instant) -> ConnLimits {
        ConnLimits {
            ip,
            last: now,
            messages: limit.messages.map_or(0.0, |r| r.burst),
            bytes: limit.bytes.map_or(0.0, |r| r.burst),
            paused_until: None,
        }
    }

    /// Charges one message of `len` bytes; returns how long the connection
    /// must wait before it is within its limits again (`None`: it is).
    /// Inlined into the loop's read, where every message pays for it.
    #[inline]
    pub(crate) fn charge(
        &mut self,
        limit: &RateLimit,
        len: usize,
        now: Instant,
    ) -> Option<Duration> {
        if now > self.last {
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.last = now;
            if let Some(r) = limit.messages {
                self.messages = (self.messages + elapsed * r.per_sec).min(r.burst);
            }
            if let Some(r) = limit.bytes {
                self.bytes = (self.bytes + elapsed * r.per_sec).min(r.burst);
            }
        }
        let mut wait: f64 = 0.0;
        if let Some(r) = limit.messages {
            self.messages -= 1.0;
            if self.messages < -EPSILON {
                wait = wait.max(-self.messages / r.per_sec);
            }
        }
        if let Some(r) = limit.bytes {
            // Through i64: one conversion instruction (a usize takes six).
            self.bytes -= len as i64 as f64;
            if self.bytes < -EPSILON {
                wait = wait.max(-self.bytes / r.per_sec);
            }
        }
        (wait > 0.0).then(|| Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let rate = Rate {
            per_sec: 10.0,
            burst: 3.0,
        };
        let mut b = TokenBucket::full(rate, t0);
        assert!((0..3).all(|_| b.try_take(1.0, rate, t0)), "the burst");
        assert!(!b.try_take(1.0, rate, t0), "then nothing");
        assert!(!b.try_take(1.0, rate, t0 + ms(90)));
        assert!(b.try_take(1.0, rate, t0 + ms(100)), "one per 100 ms");
        assert!(!b.is_full(rate, t0 + ms(100)));
        assert!(b.is_full(rate, t0 + ms(400)));
        assert!(
            (0..3).all(|_| b.try_take(1.0, rate, t0 + ms(10_000))),
            "capped at the burst"
        );
        assert!(!b.try_take(1.0, rate, t0 + ms(10_000)));
    }

    #[test]
    fn a_debt_says_how_long_it_takes_to_pay() {
        let t0 = Instant::now();
        let limit = RateLimit {
            bytes: Some(Rate {
                per_sec: 1000.0,
                burst: 1000.0,
            }),
            ..RateLimit::default()
        };
        let mut c = ConnLimits::new(&limit, None, t0);
        assert_eq!(c.charge(&limit, 600, t0), None);
        let wait = c.charge(&limit, 900, t0).unwrap();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert_eq!(c.charge(&limit, 0, t0 + ms(500)), None, "paid");
        assert!(
            c.charge(&limit, 1, t0 + ms(500)).is_some(),
            "and nothing more"
        );
    }

    #[test]
    fn a_connection_waits_for_whichever_bucket_owes_longer() {
        let t0 = Instant::now();
        let limit = RateLimit {
            messages: Some(Rate {
                per_sec: 10.0,
                burst: 1.0,
            }),
            bytes: Some(Rate {
                per_sec: 100.0,
                burst: 100.0,
            }),
            ..RateLimit::default()
        };
        let mut c = ConnLimits::new(&limit, None, t0);
        assert_eq!(c.charge(&limit, 50, t0), None);
        // One message over (100 ms) and 50 bytes over (500 ms).
        let wait = c.charge(&limit, 100, t0).unwrap();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
    }
}
