//! [`BatchVectors`]: the event vectors of a loop's batches, emptied by the
//! workers and given back to the loop for its next turns.
//!
//! A loop hands each worker its turn's events in a vector that the worker
//! consumes. Made anew every turn, that vector grew from nothing to the
//! turn's size by doubling: callgrind put the growth (eleven reallocations a
//! turn, each copying what was there) at 32 instructions a message at
//! 100 connections × 20 B × 16 in flight, and each turn wrote its events into
//! memory not touched since the last one. Given back, the vector keeps its
//! capacity and is still warm in cache when the loop fills it again.
//!
//! The stock is a [`Spares`] behind a lock: bounded in count, and holding
//! what is cycling ([`BatchVectors::trim`], called by the loop once a
//! second, frees what went unused since the last); a vector past a bound of
//! its own capacity is not kept.

use std::sync::{Mutex, MutexGuard};

use crate::spares::Spares;

/// Vectors kept: a turn hands each worker a batch at every hand-off (every
/// 512 events or 256 KiB) and at its end, and the workers give them back as
/// they finish: a few are cycling at a time.
const MAX_KEPT: usize = 8;
/// A vector larger than this (a flood's batch) goes back to malloc.
const MAX_CAPACITY: usize = 4096;

/// One loop's stock of emptied batch vectors, shared with the workers.
pub(crate) struct BatchVectors<T> {
    stock: Mutex<Spares<Vec<T>>>,
}

impl<T> BatchVectors<T> {
    pub(crate) fn new() -> BatchVectors<T> {
        BatchVectors {
            stock: Mutex::new(Spares::new(MAX_KEPT)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Spares<Vec<T>>> {
        // Nothing panics under the lock; a poisoned stock is a sound one.
        self.stock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty vector for the next batch: a given-back one, or a new one.
    pub(crate) fn take(&self) -> Vec<T> {
        self.lock().pop().unwrap_or_default()
    }

    /// Keeps `events` (emptied here) for a later [`BatchVectors::take`],
    /// unless it is too large or the stock is full.
    pub(crate) fn give(&self, mut events: Vec<T>) {
        events.clear();
        if events.capacity() == 0 || events.capacity() > MAX_CAPACITY {
            return;
        }
        self.lock().push(events);
    }

    /// Frees the vectors that went unused since the last trim; returns how
    /// many are still kept.
    pub(crate) fn trim(&self) -> usize {
        self.lock().trim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_given_back_comes_back_empty_with_its_capacity() {
        let stock = BatchVectors::new();
        let mut v = stock.take();
        assert_eq!(v.capacity(), 0, "nothing given yet: a new one");
        v.extend(0..100u32);
        let (ptr, cap) = (v.as_ptr(), v.capacity());
        stock.give(v);
        let again = stock.take();
        assert!(again.is_empty());
        assert_eq!((again.as_ptr(), again.capacity()), (ptr, cap));
    }

    #[test]
    fn the_stock_is_bounded_in_count_and_in_capacity() {
        let stock = BatchVectors::<u8>::new();
        stock.give(Vec::with_capacity(MAX_CAPACITY + 1));
        assert_eq!(stock.take().capacity(), 0, "a flood's vector is not kept");
        for _ in 0..MAX_KEPT + 3 {
            stock.give(Vec::with_capacity(16));
        }
        let kept = std::iter::from_fn(|| Some(stock.take()))
            .take_while(|v| v.capacity() > 0)
            .count();
        assert_eq!(kept, MAX_KEPT);
    }

    #[test]
    fn a_trim_frees_what_no_turn_took_since_the_last() {
        let stock = BatchVectors::<u8>::new();
        let v = stock.take();
        stock.give(Vec::with_capacity(16));
        assert_eq!(stock.trim(), 1, "taken from since the last trim: kept");
        assert_eq!(stock.trim(), 0, "unused for a whole interval: freed");
        assert_eq!(stock.take().capacity(), 0);
        drop(v);
    }
}
