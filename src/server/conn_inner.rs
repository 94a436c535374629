//! [`ConnInner`]: the part of a connection that its loop shares with other
//! threads (handles, workers, the C API): its id, what it owes the socket,
//! whether it still takes messages, and how they are encoded.

use std::any::Any;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::prepared::Encoding;
use super::send_status::Refused;
use super::{BackpressurePolicy, Config, ConnId, Stats};

/// The part of a connection that other threads share with its loop.
///
/// Every open connection has one, so it is kept to 40 bytes (an allocation
/// of 64 with `Arc`'s counts): what only some connections have (a
/// subprotocol, an IPv6 peer, the application's data) lives in [`Extras`],
/// made only for them.
#[derive(Debug)]
pub(crate) struct ConnInner {
    pub(crate) id: ConnId,
    /// Payload bytes accepted for sending and not yet written to the kernel.
    pub(crate) buffered: AtomicUsize,
    /// Null, or extras that live as long as `self` (freed in `drop`).
    extras: AtomicPtr<Extras>,
    /// Subscribes and unsubscribes sent to the loop and not yet taken: the
    /// one kind of command not bounded by a byte count, so bounded by number.
    pub(crate) pending_subscriptions: AtomicU32,
    /// The peer, when it is an IPv4 address (others are in the extras).
    peer_v4: Option<SocketAddrV4>,
    /// Sends are accepted (cleared when the closing handshake starts).
    pub(crate) open: AtomicBool,
    /// A producer hit backpressure (or the kernel pushed back): tell the
    /// handler when the buffer empties.
    pub(crate) want_drain: AtomicBool,
    /// How messages to this connection are encoded, fixed at the upgrade.
    pub(crate) encoding: Encoding,
}

/// What some connections have: made at the upgrade for a subprotocol or a
/// peer that is not IPv4, or the first time the application keeps data.
#[derive(Debug, Default)]
struct Extras {
    protocol: Option<Box<str>>,
    /// The peer, when it is not an IPv4 address.
    peer: Option<SocketAddr>,
    /// The application's state for this connection (`Conn::set_data`).
    data: Mutex<Option<ConnData>>,
}

/// What an application keeps with a connection.
pub(crate) type ConnData = Arc<dyn Any + Send + Sync>;

/// Subscribes and unsubscribes one connection may have waiting for its loop.
pub(crate) const MAX_PENDING_SUBSCRIPTIONS: u32 = 1024;

impl ConnInner {
    pub(crate) fn new(
        id: ConnId,
        protocol: Option<Box<str>>,
        peer: Option<SocketAddr>,
        encoding: Encoding,
    ) -> ConnInner {
        let (peer_v4, other_peer) = match peer {
            Some(SocketAddr::V4(v4)) => (Some(v4), None),
            other => (None, other),
        };
        let extras = if protocol.is_some() || other_peer.is_some() {
            Box::into_raw(Box::new(Extras {
                protocol,
                peer: other_peer,
                data: Mutex::new(None),
            }))
        } else {
            std::ptr::null_mut()
        };
        ConnInner {
            id,
            buffered: AtomicUsize::new(0),
            extras: AtomicPtr::new(extras),
            pending_subscriptions: AtomicU32::new(0),
            peer_v4,
            open: AtomicBool::new(true),
            want_drain: AtomicBool::new(false),
            encoding,
        }
    }

    /// The subprotocol chosen at the upgrade.
    pub(crate) fn protocol(&self) -> Option<&str> {
        self.extras()?.protocol.as_deref()
    }

    /// The peer's address as the upgrade saw it.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        match self.peer_v4 {
            Some(v4) => Some(SocketAddr::V4(v4)),
            None => self.extras()?.peer,
        }
    }

    /// Replaces what is kept with the connection.
    pub(crate) fn set_data(&self, value: Option<ConnData>) {
        let extras = match self.extras() {
            Some(extras) => extras,
            None if value.is_none() => return,
            None => self.make_extras(),
        };
        *extras.data.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }

    /// What is kept with the connection.
    pub(crate) fn data(&self) -> Option<ConnData> {
        self.extras()?
            .data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn extras(&self) -> Option<&Extras> {
        // SAFETY: null, or extras made by `new` or `make_extras` that live as
        // long as `self` (freed in `drop`).
        unsafe { self.extras.load(Ordering::Acquire).as_ref() }
    }

    /// Extras for a connection made without (so no protocol or other peer).
    fn make_extras(&self) -> &Extras {
        let fresh = Box::into_raw(Box::default());
        match self.extras.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: just published; freed only in `drop`.
            Ok(_) => unsafe { &*fresh },
            Err(theirs) => {
                // Another thread made them first: ours were never shared.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: as in `extras`.
                unsafe { &*theirs }
            }
        }
    }

    /// Counts a subscribe or unsubscribe on its way to the loop; false (not
    /// counted) when [`MAX_PENDING_SUBSCRIPTIONS`] are already waiting.
    pub(crate) fn reserve_subscription(&self) -> bool {
        let before = self.pending_subscriptions.fetch_add(1, Ordering::AcqRel);
        if before >= MAX_PENDING_SUBSCRIPTIONS {
            self.pending_subscriptions.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back `len` reserved bytes; returns what is still buffered.
    pub(crate) fn release(&self, len: usize) -> usize {
        self.buffered.fetch_sub(len, Ordering::AcqRel) - len
    }

    /// Reserves `total` bytes for a run of messages at once when the whole
    /// run fits under the cap; false, with nothing reserved or counted,
    /// otherwise (the caller then reserves them one by one with
    /// [`ConnInner::reserve`]). When it takes the run, reserving each
    /// message in turn would have taken every one and left the same count:
    /// every prefix of the run fits too. One compare-and-swap for a
    /// subscriber's share of a turn's publishes, not one add per message.
    pub(crate) fn reserve_run(&self, total: usize, config: &Config) -> bool {
        if !self.open.load(Ordering::Acquire) {
            return false;
        }
        let mut before = self.buffered.load(Ordering::Acquire);
        loop {
            if before
                .checked_add(total)
                .is_none_or(|after| after > config.max_buffered)
            {
                return false;
            }
            match self.buffered.compare_exchange_weak(
                before,
                before + total,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => before = now,
            }
        }
    }

    /// Reserves room for `len` payload bytes in `conn`'s buffered amount under
    /// the configured cap, or refuses and applies the backpressure policy. Every
    /// send, broadcast and publish path (on the loop or not) goes through here.
    pub(crate) fn reserve(
        &self,
        len: usize,
        config: &Config,
        stats: &Stats,
    ) -> Result<usize, Refused> {
        if !self.open.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let before = self.buffered.fetch_add(len, Ordering::AcqRel);
        // An empty buffer always takes one message: the message limit bounds it.
        if before == 0 || before + len <= config.max_buffered {
            return Ok(before + len);
        }
        self.buffered.fetch_sub(len, Ordering::AcqRel);
        self.want_drain.store(true, Ordering::Release);
        stats.dropped_backpressure.fetch_add(1, Ordering::Relaxed);
        if config.backpressure == BackpressurePolicy::Close
            && self.open.swap(false, Ordering::AcqRel)
        {
            stats.closed_backpressure.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::MustClose);
        }
        Err(Refused::Dropped)
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        let extras = *self.extras.get_mut();
        if !extras.is_null() {
            // SAFETY: made by `new` or `make_extras` with Box::into_raw,
            // freed only here.
            drop(unsafe { Box::from_raw(extras) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::prepared::Encoding;
    use crate::server::send_status::Refused;
    use crate::server::{BackpressurePolicy, Config, ConnId, Stats};
    use std::sync::Arc;

    fn conn() -> ConnInner {
        ConnInner::new(ConnId::new(0, 0, 0), None, None, Encoding::Plain)
    }

    #[test]
    fn only_connections_with_extras_make_them() {
        assert_eq!(std::mem::size_of::<ConnInner>(), 40);
        let v4: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let plain = ConnInner::new(ConnId::new(0, 0, 0), None, Some(v4), Encoding::Plain);
        assert!(plain.extras().is_none(), "an IPv4 peer without a protocol");
        assert_eq!((plain.peer(), plain.protocol()), (Some(v4), None));
        assert!(plain.data().is_none());
        plain.set_data(None);
        assert!(plain.extras().is_none(), "clearing makes nothing");
        plain.set_data(Some(Arc::new(5u32)));
        assert_eq!(
            plain.data().unwrap().downcast::<u32>().ok().as_deref(),
            Some(&5)
        );
        assert_eq!(plain.peer(), Some(v4), "the peer stays inline");
        let other = ConnInner::new(
            ConnId::new(0, 0, 0),
            Some("chat".into()),
            Some(v6),
            Encoding::Plain,
        );
        assert_eq!((other.peer(), other.protocol()), (Some(v6), Some("chat")));
        other.set_data(Some(Arc::new("x")));
        assert_eq!(
            other.protocol(),
            Some("chat"),
            "data joins the extras made at the start"
        );
    }

    #[test]
    fn an_empty_buffer_takes_one_message_whatever_its_size() {
        let (c, stats) = (conn(), Stats::default());
        let cfg = Config {
            max_buffered: 10,
            ..Config::default()
        };
        assert_eq!(c.reserve(100, &cfg, &stats), Ok(100));
        c.release(100);
        assert_eq!(c.reserve(6, &cfg, &stats), Ok(6));
        assert_eq!(c.reserve(4, &cfg, &stats), Ok(10), "up to the cap");
        assert_eq!(stats.snapshot().dropped_backpressure, 0);
    }

    /// The reference for [`ConnInner::reserve_run`]: reserving each
    /// message in turn. Whenever the run is taken at once, one by one takes
    /// every message and leaves the same count; when it is not, nothing
    /// changed.
    #[test]
    fn a_run_reserved_at_once_matches_one_by_one() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n) as usize
        };
        let mut taken = 0;
        for _ in 0..20_000 {
            let cfg = Config {
                max_buffered: 1 + next(4096),
                ..Config::default()
            };
            let before = if next(4) == 0 { 0 } else { next(5000) };
            let lens: Vec<usize> = (0..1 + next(20)).map(|_| next(600)).collect();
            let total: usize = lens.iter().sum();
            let (run, stats) = (conn(), Stats::default());
            run.buffered.store(before, Ordering::Relaxed);
            let at_once = run.reserve_run(total, &cfg);
            let one_by_one = conn();
            one_by_one.buffered.store(before, Ordering::Relaxed);
            let all = lens
                .iter()
                .all(|&len| one_by_one.reserve(len, &cfg, &stats).is_ok());
            if at_once {
                taken += 1;
                assert!(all, "{before} + {lens:?} under {}", cfg.max_buffered);
                assert_eq!(
                    run.buffered.load(Ordering::Relaxed),
                    one_by_one.buffered.load(Ordering::Relaxed)
                );
            } else {
                assert_eq!(run.buffered.load(Ordering::Relaxed), before);
                assert!(!run.want_drain.load(Ordering::Relaxed));
            }
        }
        assert!(taken > 1000, "the fast path was taken {taken} times");
        let closed = conn();
        closed.open.store(false, Ordering::Relaxed);
        assert!(!closed.reserve_run(1, &Config::default()));
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
            c.reserve(8, &cfg, &stats).unwrap();
            assert_eq!(c.reserve(3, &cfg, &stats), Err(first));
            assert_eq!(c.reserve(3, &cfg, &stats), Err(second));
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
