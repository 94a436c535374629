//! A connection's received bytes, read straight into the buffer they are
//! parsed from (one copy, the kernel's), consumed from the front without
//! moving what follows until room runs short.

/// Reads get at least this much room.
const MIN_READ: usize = 4096;

/// Bytes received and not yet consumed: `buf[start..end]`.
pub(crate) struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    /// A buffer that starts with `capacity` bytes of room (it grows when a
    /// read would get less than [`MIN_READ`]).
    pub(crate) fn new(capacity: usize) -> InBuf {
        InBuf {
            buf: vec![0; capacity.max(MIN_READ)],
            start: 0,
            end: 0,
        }
    }

    /// The bytes received and not consumed.
    pub(crate) fn filled(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Room to read into, at least [`MIN_READ`] bytes: the unconsumed bytes
    /// are moved to the front, or the buffer doubled, only when needed.
    pub(crate) fn room(&mut self) -> &mut [u8] {
        if self.buf.len() - self.end < MIN_READ {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < MIN_READ {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`InBuf::room`] as received.
    pub(crate) fn received(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.buf.len());
    }

    /// Drops the first `n` unconsumed bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        assert!(self.start <= self.end, "consumed more than received");
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_stream_in_order_through_moves_and_growth() {
        let stream: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut b = InBuf::new(5000);
        let (mut fed, mut out) = (0, Vec::new());
        // Feed in pieces of varying size; consume a varying share each time.
        for step in 0.. {
            if fed == stream.len() && b.filled().is_empty() {
                break;
            }
            let room = b.room();
            assert!(room.len() >= MIN_READ);
            let n = room
                .len()
                .min(stream.len() - fed)
                .min(1 + step * 997 % 9000);
            room[..n].copy_from_slice(&stream[fed..fed + n]);
            b.received(n);
            fed += n;
            let take = if fed == stream.len() {
                b.filled().len()
            } else {
                b.filled().len() * (step % 3) / 2
            };
            out.extend_from_slice(&b.filled()[..take]);
            b.consume(take);
        }
        assert_eq!(out, stream);
        assert!(
            b.buf.len() <= 32 * 1024,
            "growth stays bounded: {}",
            b.buf.len()
        );
    }
}
