//! [`Spares`]: emptied boxes kept per thread for the next user, so state
//! that exists only while a connection is busy (bytes to write, a message
//! arriving) costs an idle connection one word and a busy one no
//! allocation.

use std::cell::RefCell;
use std::thread::LocalKey;

/// One thread's stock of boxes of one type.
pub(crate) type Spares<T> = RefCell<Vec<Box<T>>>;

/// A box from `stock`, or a new one.
pub(crate) fn take<T: Default>(stock: &'static LocalKey<Spares<T>>) -> Box<T> {
    stock.with(|s| s.borrow_mut().pop()).unwrap_or_default()
}

/// Keeps `boxed` (emptied by the caller) for the next [`take`], unless the
/// stock already holds `max`.
pub(crate) fn give<T>(stock: &'static LocalKey<Spares<T>>, boxed: Box<T>, max: usize) {
    stock.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < max {
            s.push(boxed);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static STOCK: Spares<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    #[test]
    fn a_given_box_is_taken_again_and_the_stock_is_bounded() {
        let mut b = take(&STOCK);
        b.reserve(100);
        let at = b.as_ptr();
        give(&STOCK, b, 1);
        give(&STOCK, Box::default(), 1);
        let again = take(&STOCK);
        assert_eq!(again.as_ptr(), at, "the same box, its capacity kept");
        assert_eq!(STOCK.with(|s| s.borrow().len()), 0, "the second was let go");
    }
}
