//! [`IpLimits`]: open connections and recent handshakes per source address,
//! shared by every loop (the kernel spreads one address's connections over
//! all the loops' listeners).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::rate_limit::{RateLimit, TokenBucket};

/// Addresses past which entries that no longer limit anything are swept.
const SWEEP_ABOVE: usize = 1 << 16;

#[derive(Debug)]
struct Entry {
    open: u32,
    handshakes: Option<TokenBucket>,
}

/// Per-address counts, for [`RateLimit::connections_per_ip`] and
/// [`RateLimit::handshakes_per_ip`].
#[derive(Debug, Default)]
pub(crate) struct IpLimits {
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl IpLimits {
    /// Admits a new connection from `ip` (and counts it open), or refuses it.
    pub(crate) fn admit(&self, ip: IpAddr, limit: &RateLimit, now: Instant) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= SWEEP_ABOVE {
            // Entries with nothing open and a full bucket limit nothing.
            entries.retain(|_, e| {
                e.open > 0
                    || e.handshakes
                        .zip(limit.handshakes_per_ip)
                        .is_some_and(|(b, r)| !b.is_full(r, now))
            });
        }
        let e = entries.entry(ip).or_insert_with(|| Entry {
            open: 0,
            handshakes: limit.handshakes_per_ip.map(|r| TokenBucket::full(r, now)),
        });
        if limit.connections_per_ip.is_some_and(|cap| e.open >= cap) {
            return false;
        }
        if let (Some(b), Some(r)) = (&mut e.handshakes, limit.handshakes_per_ip) {
            if !b.try_take(1.0, r, now) {
                return false;
            }
        }
        e.open += 1;
        true
    }

    /// A connection admitted from `ip` ended.
    pub(crate) fn release(&self, ip: IpAddr, limit: &RateLimit) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && limit.handshakes_per_ip.is_none() {
                entries.remove(&ip);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::rate_limit::Rate;

    #[test]
    fn caps_open_connections_per_address() {
        let limit = RateLimit {
            connections_per_ip: Some(2),
            ..RateLimit::default()
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = IpLimits::default();
        let now = Instant::now();
        assert!(t.admit(a, &limit, now) && t.admit(a, &limit, now));
        assert!(!t.admit(a, &limit, now), "a third from the same address");
        assert!(t.admit(b, &limit, now), "another address is not affected");
        t.release(a, &limit);
        assert!(t.admit(a, &limit, now), "room again");
        for _ in 0..2 {
            t.release(a, &limit);
        }
        t.release(b, &limit);
        assert_eq!(t.len(), 0, "nothing kept for addresses with nothing open");
    }

    #[test]
    fn limits_handshakes_per_second_per_address() {
        let limit = RateLimit {
            handshakes_per_ip: Some(Rate {
                per_sec: 10.0,
                burst: 2.0,
            }),
            ..RateLimit::default()
        };
        let a: IpAddr = "::1".parse().unwrap();
        let t = IpLimits::default();
        let now = Instant::now();
        assert!(t.admit(a, &limit, now) && t.admit(a, &limit, now));
        t.release(a, &limit);
        t.release(a, &limit);
        assert!(
            !t.admit(a, &limit, now),
            "closing them does not give the tokens back"
        );
        assert!(t.admit(a, &limit, now + std::time::Duration::from_millis(100)));
    }
}
