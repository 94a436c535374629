//! [`ConnTable`]: one loop's connections by slot, with a generation per slot
//! so a [`ConnId`] of a closed connection never reaches the slot's next one,
//! a free list, and the list of connections to flush this turn.

use super::loop_conn::LoopConn;
use super::ConnId;

struct Slot {
    generation: u32,
    conn: Option<LoopConn>,
}

/// The connections of one loop.
pub(crate) struct ConnTable {
    loop_index: usize,
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    /// Slots with something to write (or to decide) this turn.
    dirty: Vec<usize>,
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
    pub(crate) fn insert(&mut self, conn: LoopConn) -> Option<usize> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.slots.len() < ConnId::MAX_SLOTS => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                self.slots.len() - 1
            }
            None => return None,
        };
        self.slots[slot].conn = Some(conn);
        self.live += 1;
        Some(slot)
    }

    /// Takes the connection out of `slot`; the slot's next connection gets a new generation.
    pub(crate) fn remove(&mut self, slot: usize) -> Option<LoopConn> {
        let s = self.slots.get_mut(slot)?;
        let conn = s.conn.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
        Some(conn)
    }

    /// The connection in `slot`, whichever it is.
    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut LoopConn> {
        self.slots.get_mut(slot)?.conn.as_mut()
    }

    /// The id of the connection in `slot`.
    pub(crate) fn id(&self, slot: usize) -> ConnId {
        ConnId::new(self.loop_index, slot, self.slots[slot].generation)
    }

    /// The connection `id`, if it is still in the table.
    pub(crate) fn live(&mut self, id: ConnId) -> Option<(usize, &mut LoopConn)> {
        if id.loop_index() != self.loop_index {
            return None;
        }
        self.by_generation(id.slot(), id.generation())
            .map(|c| (id.slot(), c))
    }

    /// The connection in `slot` if it is of `generation`.
    pub(crate) fn by_generation(&mut self, slot: usize, generation: u32) -> Option<&mut LoopConn> {
        let s = self.slots.get_mut(slot)?;
        if s.generation != generation {
            return None;
        }
        s.conn.as_mut()
    }

    /// Lists `slot` for this turn's flush (once).
    pub(crate) fn mark_dirty(&mut self, slot: usize) {
        if let Some(c) = self.get_mut(slot) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Takes the slots to flush; give the vector back with [`ConnTable::restore_dirty`].
    pub(crate) fn take_dirty(&mut self) -> Vec<usize> {
        let dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            if let Some(c) = self.get_mut(slot) {
                c.dirty = false;
            }
        }
        dirty
    }

    /// Returns the (emptied) vector so its allocation serves the next turn.
    pub(crate) fn restore_dirty(&mut self, mut dirty: Vec<usize>) {
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
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
        assert!(
            std::mem::size_of::<Slot>() <= 144,
            "a slot grew to {} bytes",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn a_slot_is_flushed_once_per_turn() {
        let mut t = ConnTable::new(0, 4);
        let a = t.insert(conn()).unwrap();
        t.mark_dirty(a);
        t.mark_dirty(a);
        t.mark_dirty(7);
        let d = t.take_dirty();
        assert_eq!(d, vec![a]);
        t.mark_dirty(a);
        t.restore_dirty(d);
        assert_eq!(t.take_dirty(), vec![a], "marked again after the take");
    }
}
