//! Message buffers, recycled per thread.
//!
//! A message is read into a buffer, handed to the handler, echoed or
//! forwarded from that same buffer, and freed once the socket has taken it.
//! Left to malloc, that cycle costs twice:
//! - **Large buffers** (from [`MIN_POOLED`]): freeing and re-growing the top
//!   of the loop thread's heap. glibc gives free memory at the top back to
//!   the kernel (beyond its trim threshold) and the next message faults the
//!   pages in again, about five minor faults per 64 KiB message, at random
//!   with the heap's layout (the same benchmark ran at 18k or 35k messages/s
//!   from one run to the next).
//! - **Buffers below that**: cold memory and malloc's slow paths. With
//!   16,000 messages of 1 KiB in flight, malloc's per-thread cache (seven
//!   chunks a size) overflows into bins that hand back chunks freed long
//!   ago, and each free walks them: `_int_free` alone was 7% of that
//!   benchmark's profile (3.7% with this pool). Small messages fare the
//!   same once a turn holds more than seven of them, as it does whenever
//!   they wait for a worker: at 100 connections × 20 B × 16 in flight,
//!   callgrind put malloc and free at 340 instructions a message with
//!   workers, 195 inline. Kept here by size class, the buffer taken is the
//!   last one given, still in cache from the socket write that freed it.
//!
//! So the event loop takes its buffers from here ([`take`]) and gives back
//! what it has written out ([`give`]): the protocol core for messages it
//! assembles, the loop for whole messages it copies out of its read buffer,
//! the out queue for frames it has sent. Buffers are kept per thread, with no
//! locks, and within bounds: only sizes up to [`MAX_POOLED`], at most
//! [`MAX_BUFFERS`] large ones, [`CLASS_MAX_BUFFERS`] of each class and
//! [`MAX_BYTES`] in all per thread; beyond that
//! they go back to malloc. The pool holds what is cycling, not what was once
//! needed: each second ([`maintain`], called by the loop every turn) the
//! buffers that stayed unused for the whole second are freed, so after a
//! burst it shrinks back to nothing. A buffer taken on a loop thread and
//! dropped on a worker (a handler that keeps or drops its message) simply
//! goes back to malloc there.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Buffers from this size are kept one by one and taken by best fit.
pub(crate) const MIN_POOLED: usize = 16 * 1024;
/// Buffers below [`MIN_POOLED`] are kept by size class: the small classes
/// in steps of [`SMALL_STEP`] below this size, the mid-sized ones in steps
/// of [`CLASS_STEP`] from it.
const SMALL_FROM: usize = 512;
/// The small classes: capacities of 64, 128, ... 448 bytes (a 20-byte
/// message takes 64, where malloc would give it 32: the price of a class).
const SMALL_STEP: usize = 64;
const SMALL_CLASSES: usize = SMALL_FROM / SMALL_STEP - 1;
/// The mid-sized classes: capacities of 512, 1,024, ... 15,872 bytes.
const CLASS_STEP: usize = 512;
const CLASSES: usize = SMALL_CLASSES + MIN_POOLED / CLASS_STEP - 1;
/// Buffers kept per class.
const CLASS_MAX_BUFFERS: usize = 4096;
/// Larger ones are rare enough to leave to malloc (and to the kernel).
pub(crate) const MAX_POOLED: usize = 4 << 20;
/// Buffers kept per thread.
const MAX_BUFFERS: usize = 2048;
/// Bytes kept per thread.
const MAX_BYTES: usize = 128 << 20;
/// How long a buffer may stay unused in the pool before it is freed.
const TRIM_EVERY: Duration = Duration::from_secs(1);

struct Pool {
    /// Large buffers.
    free: Vec<Vec<u8>>,
    /// Small and mid-sized buffers, by class: the last one given is taken first.
    classes: [Vec<Vec<u8>>; CLASSES],
    /// Bytes held, in all.
    bytes: usize,
    /// The fewest large buffers the pool held since `since`: that many were
    /// not needed during the interval.
    low: usize,
    /// The same, per class.
    class_low: [usize; CLASSES],
    since: Option<Instant>,
}

impl Pool {
    /// An empty pool, made at compile time: the thread's pool is then
    /// initialised with the thread, not checked for on every take and give.
    const fn new() -> Pool {
        Pool {
            free: Vec::new(),
            classes: [const { Vec::new() }; CLASSES],
            bytes: 0,
            low: 0,
            class_low: [0; CLASSES],
            since: None,
        }
    }
}

/// The class whose buffers are the smallest to hold `len` bytes (1 or more),
/// if one does: none past the last mid-sized class (15,873 to 16,383 bytes).
fn class_of(len: usize) -> Option<usize> {
    let class = if len <= SMALL_CLASSES * SMALL_STEP {
        len.div_ceil(SMALL_STEP).max(1) - 1
    } else {
        SMALL_CLASSES + len.div_ceil(CLASS_STEP) - 1
    };
    (class < CLASSES).then_some(class)
}

/// The capacity of a class's buffers.
fn capacity_of(class: usize) -> usize {
    if class < SMALL_CLASSES {
        (class + 1) * SMALL_STEP
    } else {
        (class - SMALL_CLASSES + 1) * CLASS_STEP
    }
}

/// The class of a buffer of capacity `cap`, if it is exactly a class's.
fn class_of_capacity(cap: usize) -> Option<usize> {
    class_of(cap).filter(|&c| cap > 0 && capacity_of(c) == cap)
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool::new()) };
}

/// An empty buffer with room for at least `len` bytes: a recycled one when
/// the thread has one that fits (and is not more than four times too large),
/// else a new one.
pub(crate) fn take(len: usize) -> Vec<u8> {
    take_for(len, len)
}

/// A copy of `bytes` in a buffer from [`take`].
pub(crate) fn copy_of(bytes: &[u8]) -> Vec<u8> {
    let mut v = take(bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// [`take`] for a message expected to grow to `expected` bytes (a frame's
/// declared length) of which `len` are to be reserved now: a recycled
/// buffer that holds all of `expected` is preferred, so the message never
/// grows (a new buffer is still only `len`: a length a peer declares is not
/// allocated on its word).
///
/// The large case is a call of its own: in one function, its registers
/// were saved and restored on every small take and give too (callgrind: a
/// small take 77 instructions before, 70 after; a give 64 and 39). Not
/// inlined: in the callers' frames the small case cost more than the call.
#[inline(never)]
pub(crate) fn take_for(len: usize, expected: usize) -> Vec<u8> {
    // The clamp in `take_large` leaves a length below `MIN_POOLED` exactly
    // when both are (`MIN_POOLED` is below `MAX_POOLED`).
    if expected.max(len) < MIN_POOLED {
        return take_small(len);
    }
    take_large(len, expected)
}

/// [`take_for`] from [`MIN_POOLED`] on.
#[inline(never)]
fn take_large(len: usize, expected: usize) -> Vec<u8> {
    let expected = expected.clamp(len, MAX_POOLED.max(len));
    let recycled = POOL.with(|p| {
        let mut p = p.borrow_mut();
        // The most recently given first (likely still in cache): one
        // within twice the size wanted is taken at once, so a pool full of
        // buffers of one size costs a look or two, not a pass over all of
        // them; failing that, the smallest that fits.
        let fits = |want: usize| {
            let mut best: Option<(usize, usize)> = None;
            for (i, b) in p.free.iter().enumerate().rev() {
                let cap = b.capacity();
                if cap < want || cap / 4 > want {
                    continue;
                }
                if cap / 2 <= want {
                    return Some(i);
                }
                if best.is_none_or(|(_, c)| cap < c) {
                    best = Some((i, cap));
                }
            }
            best.map(|(i, _)| i)
        };
        let best = fits(expected).or_else(|| fits(len))?;
        let buf = p.free.swap_remove(best);
        p.bytes -= buf.capacity();
        p.low = p.low.min(p.free.len());
        Some(buf)
    });
    recycled.unwrap_or_else(|| Vec::with_capacity(len))
}

/// A buffer below [`MIN_POOLED`]: the class's last one given, else a new
/// one of the class's capacity (or of `len`, when no class holds it).
#[inline(always)]
fn take_small(len: usize) -> Vec<u8> {
    let Some(class) = class_of(len).filter(|_| len > 0) else {
        return Vec::with_capacity(len);
    };
    let recycled = POOL.with(|p| {
        let mut p = p.borrow_mut();
        let buf = p.classes[class].pop()?;
        p.bytes -= buf.capacity();
        p.class_low[class] = p.class_low[class].min(p.classes[class].len());
        Some(buf)
    });
    recycled.unwrap_or_else(|| Vec::with_capacity(capacity_of(class)))
}

/// Keeps `buf` for a later [`take`] on this thread, if it is of a size worth
/// keeping and the pool has room; drops it otherwise.
///
/// A buffer of no class is a call of its own (as in [`take_for`]).
#[inline(never)]
pub(crate) fn give(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    let Some(class) = class_of_capacity(cap) else {
        return give_large(buf);
    };
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.classes[class].len() < CLASS_MAX_BUFFERS && p.bytes + cap <= MAX_BYTES {
            buf.clear();
            p.bytes += cap;
            p.classes[class].push(buf);
        }
    });
}

/// [`give`] for a buffer of no class.
#[inline(never)]
fn give_large(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    if !(MIN_POOLED..=MAX_POOLED).contains(&cap) {
        return;
    }
    // `try_with`: a buffer dropped while the thread's locals are being torn
    // down just goes back to malloc.
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.free.len() < MAX_BUFFERS && p.bytes + cap <= MAX_BYTES {
            buf.clear();
            p.bytes += cap;
            p.free.push(buf);
        }
    });
}

/// Frees the buffers that stayed unused since the last trim, once per
/// [`TRIM_EVERY`]; cheap to call every loop turn.
pub(crate) fn maintain(now: Instant) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        match p.since {
            Some(since) if now.saturating_duration_since(since) < TRIM_EVERY => {}
            _ => {
                let Pool {
                    free,
                    classes,
                    bytes,
                    low,
                    class_low,
                    since,
                } = &mut *p;
                for (list, low) in
                    std::iter::once((free, low)).chain(classes.iter_mut().zip(class_low))
                {
                    // The first pushed are the coldest: those go.
                    let unused = (*low).min(list.len());
                    *bytes -= list.drain(..unused).map(|b| b.capacity()).sum::<usize>();
                    *low = list.len();
                }
                *since = Some(now);
            }
        }
    })
}

/// Bytes this thread keeps (the loop wakes to trim while there are some).
pub(crate) fn kept() -> usize {
    POOL.with(|p| p.borrow().bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_of_no_class_are_never_kept() {
        give(Vec::with_capacity(SMALL_STEP - 1));
        give(Vec::with_capacity(100));
        give(Vec::with_capacity(1000));
        give(Vec::with_capacity(MIN_POOLED - 1));
        give(Vec::new());
        assert_eq!(kept(), 0);
        assert!(take(100).capacity() >= 100);
    }

    #[test]
    fn every_length_gets_a_buffer_that_holds_it() {
        // 15,873 to 16,383 bytes lie past the last class: they once indexed
        // past the class table and took the loop thread down.
        for len in 0..MIN_POOLED + 2 * CLASS_STEP {
            let buf = take(len);
            assert!(buf.capacity() >= len, "{len}");
            give(buf);
        }
        assert_eq!(take(0).capacity(), 0, "nothing allocated for nothing");
    }

    #[test]
    fn a_small_buffer_comes_back_by_its_class_last_given_first() {
        let a = take(20);
        assert_eq!(a.capacity(), SMALL_STEP, "a class's capacity");
        let b = take(64);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        give(a);
        give(b);
        assert_eq!(kept(), 2 * SMALL_STEP);
        let (c, d) = (take(1), take(33));
        assert_eq!(c.as_ptr(), pb, "the last one given");
        assert_eq!(d.as_ptr(), pa);
        assert_eq!(take(65).capacity(), 128, "the next class: a new one");
        assert_eq!(take(449).capacity(), 512, "the first mid-sized class");
        assert_eq!(kept(), 0);
    }

    #[test]
    fn a_mid_sized_buffer_comes_back_by_its_class_last_given_first() {
        let a = take(1000);
        assert_eq!(a.capacity(), 1024, "a class's capacity");
        let mut b = take(1024);
        b.extend_from_slice(&[1; 1024]);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        give(a);
        give(b);
        assert_eq!(kept(), 2048);
        let c = take(513);
        assert_eq!(c.as_ptr(), pb, "the last one given");
        assert!(c.is_empty(), "recycled buffers hold nothing");
        let d = take(1024);
        assert_eq!(d.as_ptr(), pa);
        assert_eq!(take(1025).capacity(), 1536, "the next class: a new one");
        assert_eq!(kept(), 0);
    }

    #[test]
    fn mid_sized_classes_are_bounded_and_trimmed_like_large_buffers() {
        let t0 = Instant::now();
        maintain(t0);
        for _ in 0..CLASS_MAX_BUFFERS + 10 {
            give(Vec::with_capacity(2048));
        }
        assert_eq!(kept(), CLASS_MAX_BUFFERS * 2048, "bounded per class");
        maintain(t0 + TRIM_EVERY);
        let a = take(2048);
        give(a);
        maintain(t0 + 2 * TRIM_EVERY);
        assert_eq!(kept(), 2048, "all but the one drawn were unused");
        maintain(t0 + 3 * TRIM_EVERY);
        assert_eq!(kept(), 0);
    }

    #[test]
    fn a_large_buffer_comes_back_empty_and_is_reused() {
        let mut a = take(64 * 1024);
        a.extend_from_slice(&[7u8; 64 * 1024]);
        let ptr = a.as_ptr();
        give(a);
        assert_eq!(kept(), 64 * 1024);
        let b = take(60 * 1024);
        assert_eq!(b.as_ptr(), ptr, "the same allocation");
        assert!(b.is_empty(), "recycled buffers hold nothing");
        assert_eq!(kept(), 0);
    }

    #[test]
    fn the_best_fit_is_taken_and_far_larger_buffers_are_not() {
        give(Vec::with_capacity(1 << 20));
        give(Vec::with_capacity(32 * 1024));
        give(Vec::with_capacity(128 * 1024));
        assert_eq!(take(100 * 1024).capacity(), 128 * 1024);
        // 1 MiB is more than four times 20 KiB: a new buffer instead.
        assert_eq!(take(20 * 1024).capacity(), 32 * 1024);
        let fresh = take(20 * 1024);
        assert!(fresh.capacity() < 1 << 20);
        assert_eq!(kept(), 1 << 20);
    }

    #[test]
    fn buffers_unused_for_a_whole_interval_are_freed() {
        let t0 = Instant::now();
        maintain(t0);
        for _ in 0..4 {
            give(Vec::with_capacity(64 * 1024));
        }
        // Within the interval: two are drawn, and given back.
        let (a, b) = (take(64 * 1024), take(64 * 1024));
        give(a);
        give(b);
        maintain(t0 + TRIM_EVERY / 2);
        assert_eq!(
            kept(),
            4 * 64 * 1024,
            "nothing trimmed before the interval ends"
        );
        // The first interval started empty: nothing was unused all along.
        maintain(t0 + TRIM_EVERY);
        assert_eq!(kept(), 4 * 64 * 1024);
        // The next: two drawn at most, so two stayed unused all along.
        let (a, b) = (take(64 * 1024), take(64 * 1024));
        give(a);
        give(b);
        maintain(t0 + 2 * TRIM_EVERY);
        assert_eq!(kept(), 2 * 64 * 1024);
        // Idle: the rest go.
        maintain(t0 + 3 * TRIM_EVERY);
        assert_eq!(kept(), 0);
    }

    #[test]
    fn a_message_gets_a_buffer_for_its_whole_declared_length_when_one_is_kept() {
        // A 256 KiB frame grown in pieces leaves an odd capacity behind.
        give(Vec::with_capacity(321_508));
        give(Vec::with_capacity(70_000));
        // Its next one reserves 64 KiB ahead but declares 256 KiB: the
        // buffer that holds it all, not the one that fits the first piece.
        assert_eq!(take_for(64 * 1024, 256 * 1024).capacity(), 321_508);
        // Declared beyond anything kept: the best fit for what is reserved.
        assert_eq!(take_for(64 * 1024, 16 << 20).capacity(), 70_000);
        // Nothing kept: only what is reserved is allocated.
        assert_eq!(take_for(64 * 1024, 16 << 20).capacity(), 64 * 1024);
    }

    #[test]
    fn the_pool_is_bounded_in_bytes_and_count() {
        for _ in 0..1000 {
            give(Vec::with_capacity(MAX_POOLED));
        }
        assert!(kept() <= MAX_BYTES);
        for _ in 0..1000 {
            give(Vec::with_capacity(MIN_POOLED));
        }
        assert!(kept() <= MAX_BYTES);
        POOL.with(|p| assert!(p.borrow().free.len() <= MAX_BUFFERS));
        give(Vec::with_capacity(MAX_POOLED + 1));
    }
}
