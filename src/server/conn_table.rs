//! [`ConnTable`]: one loop's connections by slot, with a generation per slot
//! so a [`ConnId`] of a closed connection never reaches the slot's next one,
//! a free list, and the list of connections to flush this turn.

use super::loop_conn::LoopConn;
use super::ConnId;

/// The connections of one loop.
///
/// A slot is just the connection: its generation lives in it while it is
/// open and in the free list while it is not. A generation beside every
/// slot, and a dirty flag in every connection, made each slot 8 bytes
/// larger than the connection itself (idle memory, issue 16).
pub(crate) struct ConnTable {
    loop_index: usize,
    slots: Vec<Option<LoopConn>>,
    /// Free slots, each with the generation its next connection gets.
    free: Vec<(u32, u32)>,
    live: usize,
    /// Slots with something to write (or to decide) this turn.
    dirty: Vec<usize>,
    /// One bit per slot: listed in `dirty`.
    dirty_bits: Vec<u64>,
}

impl ConnTable {
    /// A table for loop `loop_index` with address space for `reserved` slots
    /// (touched only as slots are used; growing by copying would leave the
    /// old pages resident).
    pub(crate) fn new(loop_index: usize, reserved: usize) -> ConnTable {
        ConnTable {
            loop_index,
            slots: Vec::with_capacity(reserved),
            free: Vec::with_capacity(reserved),
            live: 0,
            dirty: Vec::new(),
            dirty_bits: Vec::new(),
        }
    }

    /// Connections in the table.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// One past the highest slot ever used: every slot is below it.
    pub(crate) fn slot_bound(&self) -> usize {
        self.slots.len()
    }

    /// Puts `conn` in a free slot; `None` when the table is full.
    pub(crate) fn insert(&mut self, mut conn: LoopConn) -> Option<usize> {
        let slot = match self.free.pop() {
            Some((slot, generation)) => {
                conn.generation = generation;
                slot as usize
            }
            None if self.slots.len() < ConnId::MAX_SLOTS => {
                conn.generation = 0;
                self.slots.push(None);
                if self.slots.len() > self.dirty_bits.len() * 64 {
                    self.dirty_bits.push(0);
                }
                self.slots.len() - 1
            }
            None => return None,
        };
        self.slots[slot] = Some(conn);
        self.live += 1;
        Some(slot)
    }

    /// Takes the connection out of `slot`; the slot's next connection gets a new generation.
    pub(crate) fn remove(&mut self, slot: usize) -> Option<LoopConn> {
        let conn = self.slots.get_mut(slot)?.take()?;
        // Below `ConnId::MAX_SLOTS`, so it fits.
        self.free
            .push((slot as u32, conn.generation.wrapping_add(1)));
        self.live -= 1;
        Some(conn)
    }

    /// The connection in `slot`, whichever it is.
    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut LoopConn> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// The id of the connection in `slot`.
    pub(crate) fn id(&self, slot: usize) -> ConnId {
        let generation = self.slots[slot].as_ref().map_or(0, |c| c.generation);
        ConnId::new(self.loop_index, slot, generation)
    }

    /// The connection `id`, if it is still in the table.
    pub(crate) fn live(&mut self, id: ConnId) -> Option<(usize, &mut LoopConn)> {
        if id.loop_index() != self.loop_index {
            return None;
        }
        let slot = id.slot();
        self.get_mut(slot)
            .filter(|c| c.generation == id.generation())
            .map(|c| (slot, c))
    }

    /// Lists `slot` for this turn's flush (once).
    pub(crate) fn mark_dirty(&mut self, slot: usize) {
        if self.slots.get(slot).is_some_and(Option::is_some) {
            let (word, bit) = dirty_bit(slot);
            if self.dirty_bits[word] & bit == 0 {
                self.dirty_bits[word] |= bit;
                self.dirty.push(slot);
            }
        }
    }

    /// Whether `slot` is listed for this turn's flush.
    pub(crate) fn is_dirty(&self, slot: usize) -> bool {
        let (word, bit) = dirty_bit(slot);
        self.dirty_bits.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Takes the slots to flush, each once; give the vector back with
    /// [`ConnTable::restore_dirty`]. A slot taken alone earlier in the turn
    /// ([`ConnTable::take_dirty_slot`]) and not marked again is left out;
    /// one marked again is listed twice and taken once.
    pub(crate) fn take_dirty(&mut self) -> Vec<usize> {
        let mut dirty = std::mem::take(&mut self.dirty);
        let bits = &mut self.dirty_bits;
        dirty.retain(|&slot| {
            let (word, bit) = dirty_bit(slot);
            let marked = bits[word] & bit != 0;
            bits[word] &= !bit;
            marked
        });
        dirty
    }

    /// Takes `slot` alone out of this turn's flush, to be flushed now: true
    /// when it was marked.
    pub(crate) fn take_dirty_slot(&mut self, slot: usize) -> bool {
        let (word, bit) = dirty_bit(slot);
        match self.dirty_bits.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                true
            }
            _ => false,
        }
    }

    /// Returns the (emptied) vector so its allocation serves the next turn.
    pub(crate) fn restore_dirty(&mut self, mut dirty: Vec<usize>) {
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
}

/// The word of `dirty_bits` that holds `slot`'s mark, and its bit there.
fn dirty_bit(slot: usize) -> (usize, u64) {
    (slot / 64, 1u64 << (slot % 64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Connection, ProtocolConfig};
    use crate::server::stream::Stream;
    use crate::server::transport::TcpTransport;
    use std::sync::Arc;
    use std::time::Instant;

    fn conn() -> LoopConn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let stream = mio::net::TcpStream::from_std(client);
        let proto = Connection::server(Arc::new(ProtocolConfig::default()), Instant::now());
        LoopConn::new(Stream::Tcp(TcpTransport::new(stream)), proto, false, false)
    }

    #[test]
    fn slots_are_reused_with_a_new_generation() {
        let mut t = ConnTable::new(3, 16);
        let a = t.insert(conn()).unwrap();
        let b = t.insert(conn()).unwrap();
        assert_eq!((a, b, t.len()), (0, 1, 2));
        let old = t.id(a);
        assert_eq!(old.loop_index(), 3);
        assert!(t.live(old).is_some());
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none(), "removed once");
        assert!(t.live(old).is_none(), "a stale id finds nothing");
        let c = t.insert(conn()).unwrap();
        assert_eq!(c, a, "the free slot is reused");
        assert_ne!(t.id(c), old);
        assert!(t.live(old).is_none(), "nor the slot's next connection");
        assert!(t.live(ConnId::new(2, b, 0)).is_none(), "another loop's id");
        assert_eq!((t.len(), t.slot_bound()), (2, 2));
    }

    /// Every connection costs a slot, open or idle: the idle-memory budget
    /// (issue 16: under 256 bytes of RSS per idle connection, with its
    /// shared part and its timer besides) is mostly this.
    #[test]
    fn a_slot_stays_within_its_budget() {
        let slot = std::mem::size_of::<Option<LoopConn>>();
        assert!(slot <= 128, "a slot grew to {slot} bytes");
    }

    #[test]
    fn a_slot_is_flushed_once_per_turn() {
        let mut t = ConnTable::new(0, 4);
        let a = t.insert(conn()).unwrap();
        t.mark_dirty(a);
        t.mark_dirty(a);
        t.mark_dirty(7);
        assert!(t.is_dirty(a) && !t.is_dirty(7) && !t.is_dirty(1000));
        let d = t.take_dirty();
        assert_eq!(d, vec![a]);
        assert!(!t.is_dirty(a), "the take clears the mark");
        t.mark_dirty(a);
        t.restore_dirty(d);
        assert_eq!(t.take_dirty(), vec![a], "marked again after the take");
    }

    #[test]
    fn a_slot_flushed_early_is_flushed_again_only_if_marked_again() {
        let mut t = ConnTable::new(0, 4);
        let (a, b) = (t.insert(conn()).unwrap(), t.insert(conn()).unwrap());
        t.mark_dirty(a);
        t.mark_dirty(b);
        assert!(t.take_dirty_slot(a), "a was marked");
        assert!(!t.take_dirty_slot(a), "and is taken once");
        assert!(!t.is_dirty(a));
        let d = t.take_dirty();
        assert_eq!(d, vec![b], "the early flush took a out of the turn's");
        t.restore_dirty(d);
        t.mark_dirty(a);
        assert!(t.take_dirty_slot(a));
        t.mark_dirty(a);
        assert_eq!(
            t.take_dirty(),
            vec![a],
            "marked again: listed twice, taken once"
        );
        assert!(!t.take_dirty_slot(9), "a slot never used");
    }
}
