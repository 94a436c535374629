//! [`Timers`]: one loop's deadlines, in a min-heap keyed by (deadline,
//! slot), so a turn does work only for the connections whose deadline
//! has come, whatever the number of connections.
//!
//! A connection's deadline only moves later as it is active (the idle and
//! ping timers restart on input), so input never touches the heap: an entry
//! that comes due early is looked at once, and the connection rescheduled at
//! its real deadline. A deadline that moves earlier (a close started, a
//! ping sent) is pushed as a new entry; [`Timers::schedule`] keeps only the
//! earliest entry per connection live, and a popped entry that is not the
//! connection's live one is ignored.
//!
//! Deadlines are kept as [`Tick`]s, nanoseconds from the loop's start
//! (8 bytes rather than an `Instant`'s 16): the heap holds one entry per
//! connection, and each connection records the tick it is scheduled at. An
//! entry is 12 bytes: the tick in two halves and the slot. It carries no
//! generation: a popped entry counts only when the slot's connection is
//! scheduled at exactly that nanosecond, and if a later connection in the
//! slot ever were, its deadline has come all the same.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A deadline: nanoseconds after the loop's start, plus one; 0 is "none".
pub(crate) type Tick = u64;

/// One heap entry: (tick's high half, tick's low half, slot), ordered as
/// (tick, slot); 12 bytes with 4-byte alignment where (u64, u32) takes 16.
type Entry = (u32, u32, u32);

fn entry(at: Tick, slot: u32) -> Entry {
    ((at >> 32) as u32, at as u32, slot)
}

/// The tick an entry is for.
fn tick_of((hi, lo, _): Entry) -> Tick {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The deadlines of one loop's connections.
#[derive(Debug)]
pub(crate) struct Timers {
    epoch: Instant,
    heap: BinaryHeap<Reverse<Entry>>,
    /// Entries popped since the count was last taken (work done, for tests
    /// and for anyone checking that a tick costs what is due, not the table).
    #[cfg(test)]
    popped: usize,
}

impl Timers {
    /// Timers counting from `epoch` (the loop's start).
    pub(crate) fn new(epoch: Instant) -> Timers {
        Timers {
            epoch,
            heap: BinaryHeap::new(),
            #[cfg(test)]
            popped: 0,
        }
    }

    fn tick(&self, at: Instant) -> Tick {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    /// Schedules `slot` at `at`. `live` is the connection's own record of its
    /// earliest scheduled deadline (0: none): nothing is pushed when that is
    /// already no later than `at`.
    pub(crate) fn schedule(&mut self, slot: usize, at: Instant, live: &mut Tick) {
        let at = self.tick(at);
        if *live != 0 && *live <= at {
            return;
        }
        *live = at;
        self.heap.push(Reverse(entry(at, slot as u32)));
    }

    /// The slot of the next entry due at `now`, with the tick it was
    /// scheduled for. The caller checks it against the slot's live tick.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(usize, Tick)> {
        let &Reverse(top) = self.heap.peek()?;
        let (at, slot) = (tick_of(top), top.2);
        if at > self.tick(now) {
            return None;
        }
        self.heap.pop();
        #[cfg(test)]
        {
            self.popped += 1;
        }
        Some((slot as usize, at))
    }

    /// The earliest deadline, for the poll timeout.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap
            .peek()
            .map(|&Reverse(top)| self.epoch + std::time::Duration::from_nanos(tick_of(top) - 1))
    }

    /// Entries in the heap, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Entries popped since the last call.
    #[cfg(test)]
    pub(crate) fn take_popped(&mut self) -> usize {
        std::mem::take(&mut self.popped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_entry_is_twelve_bytes_and_ticks_past_32_bits_keep_their_order() {
        assert_eq!(std::mem::size_of::<Reverse<Entry>>(), 12);
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let (mut a, mut b) = (0, 0);
        // 5 s is past 2^32 ns: the high half orders it after 4 s.
        timers.schedule(1, t0 + Duration::from_secs(5), &mut a);
        timers.schedule(2, t0 + Duration::from_secs(4), &mut b);
        let now = t0 + Duration::from_secs(6);
        assert_eq!(timers.pop_due(now), Some((2, b)));
        assert_eq!(timers.pop_due(now), Some((1, a)));
    }

    #[test]
    fn a_tick_pops_only_what_is_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let mut live = vec![0; 100_000];
        for (slot, l) in live.iter_mut().enumerate() {
            // Every connection due in a minute but three.
            let at = if slot % 40_000 == 7 {
                t0 + Duration::from_secs(1)
            } else {
                t0 + Duration::from_secs(60)
            };
            timers.schedule(slot, at, l);
        }
        let now = t0 + Duration::from_secs(2);
        let mut due = Vec::new();
        while let Some((k, at)) = timers.pop_due(now) {
            assert_eq!(live[k], at);
            due.push(k);
        }
        due.sort_unstable();
        assert_eq!(due, vec![7, 40_007, 80_007]);
        assert_eq!(
            timers.take_popped(),
            3,
            "a tick looks at the due entries only"
        );
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn only_an_earlier_deadline_pushes_and_order_holds() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut timers = Timers::new(t0);
        let tick = |d: Duration| d.as_nanos() as u64 + 1;
        let mut live = 0;
        timers.schedule(1, t0 + s(30), &mut live);
        timers.schedule(1, t0 + s(40), &mut live);
        assert_eq!(
            timers.len(),
            1,
            "a later deadline waits for the earlier entry"
        );
        timers.schedule(1, t0 + s(5), &mut live);
        assert_eq!(timers.len(), 2);
        assert_eq!(live, tick(s(5)));
        let mut other = 0;
        timers.schedule(2, t0 + s(10), &mut other);
        assert_eq!(timers.pop_due(t0 + s(4)), None);
        assert_eq!(timers.next_deadline(), Some(t0 + s(5)));
        assert_eq!(timers.pop_due(t0 + s(60)), Some((1, tick(s(5)))));
        assert_eq!(timers.pop_due(t0 + s(60)), Some((2, tick(s(10)))));
        let (k, stale) = timers.pop_due(t0 + s(60)).unwrap();
        assert_eq!((k, stale), (1, tick(s(30))));
        assert_ne!(live, stale, "not the live entry: the caller ignores it");
        assert_eq!(timers.pop_due(t0 + s(60)), None);
    }
}
