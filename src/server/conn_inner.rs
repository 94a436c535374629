//! [`ConnInner`]: the part of a connection that its loop shares with other
//! threads (handles, workers, the C API): its id, what it owes the socket,
//! whether it still takes messages, and how they are encoded.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::prepared::Encoding;
use super::send_status::Refused;
use super::{BackpressurePolicy, Config, ConnId, Stats};

/// The part of a connection that other threads share with its loop.
#[derive(Debug)]
pub(crate) struct ConnInner {
    pub(crate) id: ConnId,
    /// Payload bytes accepted for sending and not yet written to the kernel.
    pub(crate) buffered: AtomicUsize,
    /// Sends are accepted (cleared when the closing handshake starts).
    pub(crate) open: AtomicBool,
    /// A producer hit backpressure (or the kernel pushed back): tell the
    /// handler when the buffer empties.
    pub(crate) want_drain: AtomicBool,
    pub(crate) protocol: Option<Box<str>>,
    pub(crate) peer: Option<SocketAddr>,
    /// How messages to this connection are encoded, fixed at the upgrade.
    pub(crate) encoding: Encoding,
    /// Subscribes and unsubscribes sent to the loop and not yet taken: the
    /// one kind of command not bounded by a byte count, so bounded by number.
    pub(crate) pending_subscriptions: AtomicU32,
    /// The application's state for this connection (`Conn::set_data`):
    /// made the first time it is set, so a connection without any pays one
    /// pointer (this struct is part of every connection's memory).
    data: AtomicPtr<DataSlot>,
}

/// What an application keeps with a connection.
pub(crate) type ConnData = Arc<dyn Any + Send + Sync>;

type DataSlot = Mutex<Option<ConnData>>;

/// Subscribes and unsubscribes one connection may have waiting for its loop.
pub(crate) const MAX_PENDING_SUBSCRIPTIONS: u32 = 1024;

impl ConnInner {
    pub(crate) fn new(
        id: ConnId,
        protocol: Option<Box<str>>,
        peer: Option<SocketAddr>,
        encoding: Encoding,
    ) -> ConnInner {
        ConnInner {
            id,
            buffered: AtomicUsize::new(0),
            open: AtomicBool::new(true),
            want_drain: AtomicBool::new(false),
            protocol,
            peer,
            encoding,
            pending_subscriptions: AtomicU32::new(0),
            data: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Replaces what is kept with the connection.
    pub(crate) fn set_data(&self, value: Option<ConnData>) {
        let slot = match self.slot() {
            Some(slot) => slot,
            None if value.is_none() => return,
            None => self.make_slot(),
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }

    /// What is kept with the connection.
    pub(crate) fn data(&self) -> Option<ConnData> {
        self.slot()?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn slot(&self) -> Option<&DataSlot> {
        // SAFETY: null, or a slot made by `make_slot` that lives as long as
        // `self` (freed in `drop`).
        unsafe { self.data.load(Ordering::Acquire).as_ref() }
    }

    fn make_slot(&self) -> &DataSlot {
        let fresh = Box::into_raw(Box::new(DataSlot::new(None)));
        match self.data.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: just published; freed only in `drop`.
            Ok(_) => unsafe { &*fresh },
            Err(theirs) => {
                // Another thread made it first: ours was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: as in `slot`.
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
        let slot = *self.data.get_mut();
        if !slot.is_null() {
            // SAFETY: made by `make_slot` with Box::into_raw, freed only here.
            drop(unsafe { Box::from_raw(slot) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::prepared::Encoding;
    use crate::server::send_status::Refused;
    use crate::server::{BackpressurePolicy, Config, ConnId, Stats};

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
        assert_eq!(c.reserve(100, &cfg, &stats), Ok(100));
        c.release(100);
        assert_eq!(c.reserve(6, &cfg, &stats), Ok(6));
        assert_eq!(c.reserve(4, &cfg, &stats), Ok(10), "up to the cap");
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
