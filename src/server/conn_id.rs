//! [`ConnId`]: which connection, on which loop, in which generation of its slot.

use std::fmt;

/// A connection id: slot, loop and generation in one `u64`. A stale id (its
/// connection closed, the slot reused) never reaches the newer connection.
/// Every value is a valid id, 0 included; an id only ever names the one
/// connection it was given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// Slots per loop that an id can name.
    pub(crate) const MAX_SLOTS: usize = 1 << 24;
    /// Loops per server that an id can name.
    pub(crate) const MAX_LOOPS: usize = 1 << 8;

    pub(crate) const fn new(loop_index: usize, slot: usize, generation: u32) -> ConnId {
        debug_assert!(slot < Self::MAX_SLOTS && loop_index < Self::MAX_LOOPS);
        ConnId((generation as u64) << 32 | (loop_index as u64) << 24 | slot as u64)
    }

    pub(crate) fn loop_index(self) -> usize {
        (self.0 >> 24 & 0xFF) as usize
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xFF_FFFF) as usize
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The id as a number (for C, logs, maps keyed by integers).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The id a number from [`ConnId::as_u64`] stands for.
    pub fn from_u64(v: u64) -> ConnId {
        ConnId(v)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}#{}",
            self.loop_index(),
            self.slot(),
            self.generation()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_come_back_out() {
        let id = ConnId::new(255, ConnId::MAX_SLOTS - 1, u32::MAX);
        assert_eq!(
            (id.loop_index(), id.slot(), id.generation()),
            (255, ConnId::MAX_SLOTS - 1, u32::MAX)
        );
        assert_eq!(ConnId::from_u64(id.as_u64()), id);
        assert_eq!(ConnId::new(3, 7, 2).to_string(), "3:7#2");
    }
}
