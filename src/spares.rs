//! [`Spares`]: emptied boxes kept per thread for the next user, so state
//! that exists only while a connection is busy (bytes to write, a message
//! arriving) costs an idle connection one word and a busy one no
//! allocation.
//!
//! A stock is bounded, and holds what is cycling, not what a burst once
//! needed: [`trim`] (called by the event loop once a second) frees the boxes
//! that stayed unused since the last trim, so after a burst the stock empties
//! within two seconds.

use std::cell::RefCell;
use std::thread::LocalKey;

/// One thread's stock of boxes of one type.
pub(crate) struct Spares<T> {
    free: Vec<Box<T>>,
    /// The fewest boxes held since the last trim: that many went unused.
    low: usize,
    max: usize,
}

/// A thread-local stock.
pub(crate) type Stock<T> = RefCell<Spares<T>>;

impl<T> Spares<T> {
    /// An empty stock that keeps at most `max` boxes.
    pub(crate) const fn new(max: usize) -> Spares<T> {
        Spares {
            free: Vec::new(),
            low: 0,
            max,
        }
    }
}

/// A box from `stock`, or a new one.
pub(crate) fn take<T: Default>(stock: &'static LocalKey<Stock<T>>) -> Box<T> {
    stock
        .with(|s| {
            let mut s = s.borrow_mut();
            let b = s.free.pop();
            s.low = s.low.min(s.free.len());
            b
        })
        .unwrap_or_default()
}

/// Keeps `boxed` (emptied by the caller) for the next [`take`], unless the
/// stock is full.
pub(crate) fn give<T>(stock: &'static LocalKey<Stock<T>>, boxed: Box<T>) {
    // `try_with`: a box dropped while the thread's locals are being torn
    // down just goes back to malloc.
    let _ = stock.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.free.len() < s.max {
            s.free.push(boxed);
        }
    });
}

/// Frees the boxes that went unused since the last trim; returns how many
/// are still kept.
pub(crate) fn trim<T>(stock: &'static LocalKey<Stock<T>>) -> usize {
    stock.with(|s| {
        let mut s = s.borrow_mut();
        let keep = s.free.len() - s.low.min(s.free.len());
        s.free.truncate(keep);
        s.free.shrink_to(keep);
        s.low = keep;
        keep
    })
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
