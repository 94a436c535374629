//! [`Spares`]: emptied boxes kept for the next user, so state that exists
//! only while a connection is busy (bytes to write, a message arriving)
//! costs an idle connection one word and a busy one no allocation. Most
//! stocks are per thread ([`Stock`], with [`take`], [`give`] and [`trim`]);
//! a loop's batch vectors, which its workers give back, share one behind a
//! lock (`server::batch_vectors`).
//!
//! A stock is bounded, and holds what is cycling, not what a burst once
//! needed: [`trim`] (called by the event loop once a second) frees the boxes
//! that stayed unused since the last trim, so after a burst the stock empties
//! within two seconds.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A stock of emptied items (boxes, vectors) of one type.
pub(crate) struct Spares<I> {
    free: Vec<I>,
    /// The fewest items held since the last trim: that many went unused.
    low: usize,
    max: usize,
}

/// A thread-local stock of boxes.
pub(crate) type Stock<T> = RefCell<Spares<Box<T>>>;

impl<I> Spares<I> {
    /// An empty stock that keeps at most `max` items.
    pub(crate) const fn new(max: usize) -> Spares<I> {
        Spares {
            free: Vec::new(),
            low: 0,
            max,
        }
    }

    /// The item given last, if the stock holds one.
    pub(crate) fn pop(&mut self) -> Option<I> {
        let item = self.free.pop();
        self.low = self.low.min(self.free.len());
        item
    }

    /// Keeps `item` (emptied by the caller), unless the stock is full.
    pub(crate) fn push(&mut self, item: I) {
        if self.free.len() < self.max {
            self.free.push(item);
        }
    }

    /// Frees the items that went unused since the last trim; returns how
    /// many are still kept.
    pub(crate) fn trim(&mut self) -> usize {
        let keep = self.free.len() - self.low.min(self.free.len());
        self.free.truncate(keep);
        self.free.shrink_to(keep);
        self.low = keep;
        keep
    }
}

/// A box from `stock`, or a new one.
pub(crate) fn take<T: Default>(stock: &'static LocalKey<Stock<T>>) -> Box<T> {
    stock.with(|s| s.borrow_mut().pop()).unwrap_or_default()
}

/// Keeps `boxed` (emptied by the caller) for the next [`take`], unless the
/// stock is full.
pub(crate) fn give<T>(stock: &'static LocalKey<Stock<T>>, boxed: Box<T>) {
    // `try_with`: a box dropped while the thread's locals are being torn
    // down just goes back to malloc.
    let _ = stock.try_with(|s| s.borrow_mut().push(boxed));
}

/// Frees the boxes that went unused since the last trim; returns how many
/// are still kept.
pub(crate) fn trim<T>(stock: &'static LocalKey<Stock<T>>) -> usize {
    stock.with(|s| s.borrow_mut().trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static STOCK: Stock<Vec<u8>> = const { RefCell::new(Spares::new(2)) };
    }

    fn held() -> usize {
        STOCK.with(|s| s.borrow().free.len())
    }

    #[test]
    fn a_given_box_is_taken_again_the_stock_is_bounded_and_trimmed() {
        let mut b = take(&STOCK);
        b.reserve(100);
        let at = b.as_ptr();
        give(&STOCK, b);
        let again = take(&STOCK);
        assert_eq!(again.as_ptr(), at, "the same box, its capacity kept");
        give(&STOCK, again);
        give(&STOCK, Box::default());
        give(&STOCK, Box::default());
        assert_eq!(held(), 2, "the third was let go");
        assert_eq!(trim(&STOCK), 2, "in use since the last trim: kept");
        let b = take(&STOCK);
        assert_eq!(trim(&STOCK), 0, "the one that stayed in all along: freed");
        give(&STOCK, b);
        assert_eq!(trim(&STOCK), 1, "given back since: kept");
        assert_eq!(trim(&STOCK), 0, "a quiet interval empties it");
    }
}
