//! [`OutQueue`]: the bytes one connection owes its socket, in order.
//!
//! Small frames are coalesced into one buffer (a broadcast's or publish's up
//! to 256 B too); large payloads stay where the sender put them and a large
//! broadcast frame stays shared, and all of it goes out through one write
//! ([`OutQueue::slices`]; the transport may gather many small slices into
//! one buffer first). Each chunk carries
//! the payload bytes it reserved in the connection's buffered amount, which
//! [`OutQueue::advance`] and [`OutQueue::clear`] hand back as frames leave.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::stats::micros;
use crate::latency::{Histogram, LocalHistogram};
use crate::spares::{self, Spares, Stock};

use crate::protocol::frame::MAX_HEADER_LEN;
use crate::protocol::{EncodedHeader, MessageKind, Sink};

/// Iovecs per vectored write.
pub(crate) const MAX_IOVECS: usize = 64;
/// The iovecs of one write ([`OutQueue::slices`]), on the stack: only those
/// filled are written (an array of `MAX_IOVECS` made empty first cost 190
/// instructions a write, most of a one-message write's own work).
pub(crate) type IoSlices<'a> = smallvec::SmallVec<[IoSlice<'a>; MAX_IOVECS]>;
/// Frames up to this size are copied into the previous buffer instead of queued apart.
const COALESCE_MAX: usize = 4096;
/// A shared frame (a publish or broadcast) up to this size is copied into
/// the buffer it is coalesced with. Larger ones stay shared: copied per
/// subscriber, thousands of subscribers' buffers would not stay in cache
/// between the copy and the write.
const SHARED_COALESCE_MAX: usize = 256;
/// A coalesced buffer grows to at most this size.
const COALESCED_BUFFER_MAX: usize = 64 * 1024;
/// A coalesced buffer is started with room for at least this much, so the
/// frames that follow a small one are appended without regrowing it; it is
/// the thread's buffer pool's smallest size, so the buffers cycle through
/// the pool (a written one comes back for the next) instead of malloc.
const COALESCED_BUFFER_START: usize = crate::buffer_pool::MIN_POOLED;

/// An encoded frame (or raw bytes) on its way out.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Header and payload in one buffer.
    Bytes(Vec<u8>),
    /// A header and a payload the sender gave up (no copy).
    Split(EncodedHeader, Vec<u8>),
    /// One frame shared by every recipient of a broadcast or publish.
    Shared(Arc<[u8]>),
}

impl Outgoing {
    /// A frame with `data` copied after its header.
    pub(crate) fn copy_frame(kind: MessageKind, data: &[u8]) -> Outgoing {
        let head = EncodedHeader::new(kind.opcode(), true, false, data.len() as u64, None);
        let mut v = Vec::with_capacity(head.as_bytes().len() + data.len());
        v.extend_from_slice(head.as_bytes());
        v.extend_from_slice(data);
        Outgoing::Bytes(v)
    }

    /// A frame that keeps `data` where it is: no copy when it is sent alone;
    /// a small one is copied once, into the buffer it is coalesced with
    /// (see [`OutQueue::push`]).
    pub(crate) fn owned_frame(kind: MessageKind, data: Vec<u8>) -> Outgoing {
        let head = EncodedHeader::new(kind.opcode(), true, false, data.len() as u64, None);
        Outgoing::Split(head, data)
    }

    /// The bytes as (up to) two slices.
    pub(crate) fn parts(&self) -> [&[u8]; 2] {
        match self {
            Outgoing::Bytes(v) => [v, &[]],
            Outgoing::Split(h, p) => [h.as_bytes(), p],
            Outgoing::Shared(a) => [a, &[]],
        }
    }

    fn len(&self) -> usize {
        let [a, b] = self.parts();
        a.len() + b.len()
    }

    /// Sent: a large buffer of its own goes back to the thread's pool.
    fn recycle(self) {
        match self {
            Outgoing::Bytes(v) | Outgoing::Split(_, v) => crate::buffer_pool::give(v),
            Outgoing::Shared(_) => {}
        }
    }
}

/// Bytes waiting for the socket, in order.
///
/// One pointer while empty, which is what an idle connection's queue is: the
/// chunks live in a [`Pending`] that exists only while something waits, and
/// goes back to a per-thread stock when the last byte is written, so a
/// connection that drains every turn allocates nothing for it either.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    pending: Option<Box<Pending>>,
}

/// What a connection's queue holds while it is not empty.
#[derive(Debug, Default)]
struct Pending {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Bytes queued and not yet written, the server's own replies included.
    queued: usize,
}

/// Emptied [`Pending`]s kept per thread for the next queue to fill: the
/// connections a busy turn writes to mostly drain every turn and take one
/// again the next, and a fan-out to 5,000 subscribers takes 5,000 in one
/// turn (at 256, most of them went back to malloc every turn). Bounded,
/// because a burst of upgrades fills the stock too (each answer is queued
/// once); what goes unused for a second is freed (`trim_spares`).
const SPARE_MAX: usize = 4096;
/// A spare keeps its chunk list's allocation up to this many chunks: a
/// subscriber's share of a turn's publishes, 16 in flight, fits.
const SPARE_CHUNKS_MAX: usize = 16;

#[derive(Debug)]
struct Chunk {
    data: Outgoing,
    /// Payload bytes reserved in the connection's buffered count.
    accounted: usize,
    /// The loop's clock when it was queued (see [`set_turn`]).
    queued_us: u64,
}

impl Chunk {
    /// This chunk's buffer when it is one of our own with room for `len`
    /// more bytes without growing (and within [`COALESCED_BUFFER_MAX`]).
    #[inline(always)]
    fn room_for(&mut self, len: usize) -> Option<&mut Vec<u8>> {
        let Outgoing::Bytes(buf) = &mut self.data else {
            return None;
        };
        (buf.capacity() - buf.len() >= len && buf.len() + len <= COALESCED_BUFFER_MAX)
            .then_some(buf)
    }

    /// The part of [`absorb`](Self::absorb) a fan-out needs nearly always:
    /// `bytes` appended to a buffer of our own that has room for them
    /// (see [`room_for`](Self::room_for)); false, and nothing done,
    /// otherwise.
    #[inline(always)]
    fn append_in_place(&mut self, bytes: &[u8]) -> bool {
        let Some(buf) = self.room_for(bytes.len()) else {
            return false;
        };
        buf.extend_from_slice(bytes);
        true
    }

    /// [`append_in_place`](Self::append_in_place) for a frame given as its
    /// header and payload (see [`extend_with_frame`]).
    #[inline(always)]
    fn append_frame_in_place(&mut self, head: &EncodedHeader, payload: &[u8]) -> bool {
        let Some(buf) = self.room_for(head.as_bytes().len() + payload.len()) else {
            return false;
        };
        extend_with_frame(buf, head, payload);
        true
    }

    /// Appends the small frame `data` to this chunk when it is a buffer of
    /// its own (or a small frame, made into one) with room under
    /// [`COALESCED_BUFFER_MAX`]; false, and nothing done, otherwise. The
    /// bytes stay in order, so a write offset into the chunk stays right.
    #[inline(always)]
    fn absorb(&mut self, data: [&[u8]; 2]) -> bool {
        let (add, have) = (data[0].len() + data[1].len(), self.data.len());
        match &mut self.data {
            Outgoing::Bytes(back) if have + add <= COALESCED_BUFFER_MAX => {
                if back.capacity() < have + add && back.capacity() < crate::buffer_pool::MIN_POOLED
                {
                    // A small buffer grows through the pool, not realloc: a
                    // buffer of the size taken goes back to its own class for
                    // the next (a large one is kept by size, and realloc
                    // often grows it in place).
                    let mut larger = crate::buffer_pool::take((have + add) * 2);
                    larger.extend_from_slice(back);
                    crate::buffer_pool::give(std::mem::replace(back, larger));
                }
                for part in data {
                    back.extend_from_slice(part);
                }
                true
            }
            Outgoing::Split(..) if have <= COALESCE_MAX => {
                self.join(
                    crate::buffer_pool::take((have + add).max(COALESCED_BUFFER_START)),
                    data,
                );
                true
            }
            // A publish's frame joined by the next one: a fan-out delivers a
            // turn's messages to each subscriber, and each subscriber's share
            // leaves in one contiguous write (as a corked write in
            // uWebSockets) instead of one iovec and one shared count per
            // message. Sized to the pair with room to grow, not to a large
            // buffer: thousands of subscribers each hold one per turn.
            Outgoing::Shared(..) if have <= SHARED_COALESCE_MAX => {
                self.join(crate::buffer_pool::take((have + add) * 4), data);
                true
            }
            _ => false,
        }
    }

    /// Replaces this chunk's frame with `joined` holding it and then `data`.
    fn join(&mut self, mut joined: Vec<u8>, data: [&[u8]; 2]) {
        for part in self.data.parts().into_iter().chain(data) {
            joined.extend_from_slice(part);
        }
        std::mem::replace(&mut self.data, Outgoing::Bytes(joined)).recycle();
    }
}

/// Appends the frame of `head` and `payload` to `buf`, which has room for
/// it. Where the room allows, the header goes in as a copy of fixed size
/// (the padded header, then cut back to its length), so only the payload
/// is a call to `memcpy`, not both.
#[inline(always)]
fn extend_with_frame(buf: &mut Vec<u8>, head: &EncodedHeader, payload: &[u8]) {
    let header_end = buf.len() + head.as_bytes().len();
    if buf.capacity() - buf.len() >= MAX_HEADER_LEN + payload.len() {
        buf.extend_from_slice(head.padded());
        buf.truncate(header_end);
    } else {
        buf.extend_from_slice(head.as_bytes());
    }
    buf.extend_from_slice(payload);
}

thread_local! {
    /// This thread's loop turn, in µs since the process's epoch: what a
    /// queued buffer is stamped with, and what its wait is measured against
    /// when it leaves. A clock read per turn, not per message.
    static TURN_US: Cell<u64> = const { Cell::new(0) };
    /// How long buffers waited for the socket on this thread, folded into
    /// the server's histogram once per turn ([`fold_send_waits`]).
    static SEND_WAITS: RefCell<LocalHistogram> = RefCell::new(LocalHistogram::default());
    /// Emptied queues' storage, for the next queue this thread fills.
    static SPARE: Stock<Pending> = const { RefCell::new(Spares::new(SPARE_MAX)) };
    /// Bytes queued less bytes written or dropped on this thread since the
    /// loop last took the count ([`take_queued_delta`]): the loop's gauge of
    /// what its connections owe, kept without a pass over them.
    static QUEUED_DELTA: Cell<isize> = const { Cell::new(0) };
}

fn queued_delta(by: isize) {
    QUEUED_DELTA.with(|d| d.set(d.get() + by));
}

/// Frees the queue storage this thread kept and did not reuse since the last
/// call; returns how many it still keeps.
pub(crate) fn trim_spares() -> usize {
    spares::trim(&SPARE)
}

/// The change in bytes queued on this thread since the last call.
pub(crate) fn take_queued_delta() -> isize {
    QUEUED_DELTA.with(|d| d.replace(0))
}

/// The loop's clock for this turn.
pub(crate) fn set_turn(now: Instant) {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    TURN_US.with(|t| t.set(micros(now.saturating_duration_since(epoch))));
}

/// Notes that `n` buffers left after waiting `us` for the socket.
fn record_waits(us: u64, n: u64) {
    SEND_WAITS.with(|w| w.borrow_mut().record_n(us, n));
}

/// Adds this thread's send waits to `into` and starts again.
pub(crate) fn fold_send_waits(into: &Histogram) {
    SEND_WAITS.with(|w| w.borrow_mut().fold_into(into));
}

impl Pending {
    /// Back to the stock, empty (a list grown past a burst is let go).
    fn give(mut self: Box<Pending>) {
        debug_assert!(self.chunks.is_empty());
        if self.chunks.capacity() > SPARE_CHUNKS_MAX {
            self.chunks = VecDeque::new();
        }
        self.offset = 0;
        self.queued = 0;
        spares::give(&SPARE, self);
    }
}

impl OutQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// Bytes queued and not yet written: every frame, accounted or not (the
    /// server's own pongs and close frames too), so a connection whose peer
    /// does not read can be stopped from making the server queue more.
    pub(crate) fn queued(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.queued)
    }

    /// Appends `data`, which reserved `accounted` bytes of the buffered amount.
    ///
    /// The common case, a small frame of a payload of its own (a worker's
    /// reply) written into a last chunk of our own with room for it, is
    /// taken first, through the copy [`append_frame`](Self::append_frame)
    /// makes; otherwise what [`push_reference`](Self::push_reference) does.
    #[inline]
    pub(crate) fn push(&mut self, data: Outgoing, accounted: usize) {
        if let Outgoing::Split(head, payload) = &data {
            let len = head.as_bytes().len() + payload.len();
            if len <= COALESCE_MAX
                && self.join_back_with(len, accounted, |back| {
                    back.append_frame_in_place(head, payload)
                })
            {
                data.recycle();
                return;
            }
        }
        self.push_reference(data, accounted);
    }

    /// [`push`](Self::push) without its fast path: what it does in every
    /// case, and what the fast path is tested against.
    #[inline(never)]
    fn push_reference(&mut self, data: Outgoing, accounted: usize) {
        let len = data.len();
        let joins = match data {
            Outgoing::Shared(_) => len <= SHARED_COALESCE_MAX,
            _ => len <= COALESCE_MAX,
        };
        if joins && self.join_back(data.parts(), accounted) {
            data.recycle();
            return;
        }
        self.push_chunk(data, accounted);
    }

    /// Appends the plain frame of `kind` carrying `payload` to the last
    /// chunk when that is a buffer of our own with room for it, or, when
    /// nothing is queued, as a recycled buffer that the next frames join:
    /// header and payload are written straight in, with no frame built
    /// first. That is what a reply on the loop thread nearly always finds.
    /// False, nothing done, otherwise; the caller then builds the frame and
    /// [`push`](Self::push)es it, which is also what this is tested against.
    #[inline]
    pub(crate) fn append_frame(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        accounted: usize,
    ) -> bool {
        let head = EncodedHeader::new(kind.opcode(), true, false, payload.len() as u64, None);
        let len = head.as_bytes().len() + payload.len();
        if len > COALESCE_MAX {
            // Queued on its own by `push`, so not joined here either.
            return false;
        }
        if self.join_back_with(len, accounted, |back| {
            back.append_frame_in_place(&head, payload)
        }) {
            return true;
        }
        if self.pending.as_ref().is_some_and(|p| !p.chunks.is_empty()) {
            return false;
        }
        // Sized as `absorb` sizes the buffer a second small frame starts.
        let mut buf = crate::buffer_pool::take(len.max(COALESCED_BUFFER_START));
        extend_with_frame(&mut buf, &head, payload);
        self.push_chunk(Outgoing::Bytes(buf), accounted);
        true
    }

    /// Appends a frame shared with other recipients (a broadcast's or a
    /// publish's): a small one is copied into the buffer before it, without
    /// touching the frame's shared count; otherwise it is queued shared.
    ///
    /// The common case, a last chunk of our own with room for the frame, is
    /// taken first and kept small: a fan-out makes this call once per
    /// subscriber per message, and with the rest inlined its entry and exit
    /// alone (registers saved and restored) were 17 instructions a delivery
    /// (callgrind).
    #[inline]
    pub(crate) fn push_shared(&mut self, frame: &Arc<[u8]>, accounted: usize) {
        if frame.len() <= SHARED_COALESCE_MAX && self.append_in_place(frame, accounted) {
            return;
        }
        self.push_shared_reference(frame, accounted);
    }

    /// [`push_shared`](Self::push_shared) without its fast path: what it
    /// does in every case, and what the fast path is tested against.
    #[inline(never)]
    fn push_shared_reference(&mut self, frame: &Arc<[u8]>, accounted: usize) {
        if frame.len() <= SHARED_COALESCE_MAX && self.join_back([frame, &[]], accounted) {
            return;
        }
        self.push_chunk(Outgoing::Shared(Arc::clone(frame)), accounted);
    }

    /// Appends `bytes` to the last chunk when it is a buffer of our own
    /// with room for them (see [`Chunk::append_in_place`]): what
    /// [`join_back`](Self::join_back) does then, and nothing in any other
    /// case (false).
    #[inline(always)]
    fn append_in_place(&mut self, bytes: &[u8], accounted: usize) -> bool {
        self.join_back_with(bytes.len(), accounted, |back| back.append_in_place(bytes))
    }

    /// Copies `data` (a small frame) into the last chunk when that chunk
    /// takes it (see [`Chunk::absorb`]); false, nothing done, when it does not.
    #[inline(always)]
    fn join_back(&mut self, data: [&[u8]; 2], accounted: usize) -> bool {
        let len = data[0].len() + data[1].len();
        self.join_back_with(len, accounted, |back| back.absorb(data))
    }

    /// Has `take` add `len` bytes to the last chunk and counts them there;
    /// false, nothing done, when there is no last chunk or `take` refuses.
    #[inline(always)]
    fn join_back_with(
        &mut self,
        len: usize,
        accounted: usize,
        take: impl FnOnce(&mut Chunk) -> bool,
    ) -> bool {
        let Some(p) = self.pending.as_mut() else {
            return false;
        };
        let Some(back) = p.chunks.back_mut() else {
            return false;
        };
        if !take(back) {
            return false;
        }
        back.accounted += accounted;
        p.queued += len;
        queued_delta(len as isize);
        true
    }

    /// Appends `data` as a chunk of its own.
    fn push_chunk(&mut self, data: Outgoing, accounted: usize) {
        let p = self.pending.get_or_insert_with(|| spares::take(&SPARE));
        let len = data.len();
        p.queued += len;
        queued_delta(len as isize);
        let queued_us = TURN_US.with(Cell::get);
        p.chunks.push_back(Chunk {
            data,
            accounted,
            queued_us,
        });
    }

    /// Fills `out` (empty) with the unwritten bytes, front first, in at
    /// most [`MAX_IOVECS`] slices.
    pub(crate) fn slices<'a>(&'a self, out: &mut IoSlices<'a>) {
        debug_assert!(out.is_empty());
        let Some(p) = &self.pending else {
            return;
        };
        let mut skip = p.offset;
        'chunks: for chunk in &p.chunks {
            for part in chunk.data.parts() {
                if part.len() <= skip {
                    skip -= part.len();
                    continue;
                }
                out.push(IoSlice::new(&part[skip..]));
                skip = 0;
                if out.len() == MAX_IOVECS {
                    break 'chunks;
                }
            }
        }
    }

    /// Marks `written` bytes as sent; returns the accounted bytes of the
    /// chunks that left whole.
    pub(crate) fn advance(&mut self, mut written: usize) -> usize {
        let Some(p) = self.pending.as_mut() else {
            debug_assert_eq!(written, 0, "written more than was queued");
            return 0;
        };
        p.queued -= written;
        queued_delta(-(written as isize));
        let mut released = 0;
        let now_us = TURN_US.with(Cell::get);
        // Chunks queued in one turn waited as long as each other: recorded
        // as a run, with one touch of the histogram per run, not per chunk.
        let (mut run_us, mut run) = (0, 0);
        while let Some(front) = p.chunks.front() {
            let left = front.data.len() - p.offset;
            if written < left {
                p.offset += written;
                break;
            }
            written -= left;
            p.offset = 0;
            released += front.accounted;
            let waited = now_us.saturating_sub(front.queued_us);
            if waited != run_us && run > 0 {
                record_waits(run_us, run);
                run = 0;
            }
            (run_us, run) = (waited, run + 1);
            if let Some(chunk) = p.chunks.pop_front() {
                chunk.data.recycle();
            }
        }
        if run > 0 {
            record_waits(run_us, run);
        }
        if p.chunks.is_empty() {
            // Idle connections keep no queue storage.
            if let Some(p) = self.pending.take() {
                p.give();
            }
        }
        released
    }

    /// Drops everything; returns the accounted bytes of all that was queued.
    pub(crate) fn clear(&mut self) -> usize {
        let Some(mut p) = self.pending.take() else {
            return 0;
        };
        let mut released = 0;
        for chunk in p.chunks.drain(..) {
            released += chunk.accounted;
            chunk.data.recycle();
        }
        queued_delta(-(p.queued as isize));
        p.give();
        released
    }

    /// Chunks queued (for tests of coalescing).
    #[cfg(test)]
    fn chunk_count(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.chunks.len())
    }
}

/// The protocol core writes its own frames (handshake responses, pongs, close
/// frames, messages it compressed) into the queue through this.
pub(crate) struct QueueSink<'a> {
    out: &'a mut OutQueue,
    /// Accounted bytes the next frame carries.
    accounted: usize,
}

impl<'a> QueueSink<'a> {
    /// Frames that reserved nothing (the server's own replies).
    pub(crate) fn new(out: &'a mut OutQueue) -> QueueSink<'a> {
        QueueSink { out, accounted: 0 }
    }

    /// The next frame carries a message that reserved `accounted` bytes.
    pub(crate) fn accounted(out: &'a mut OutQueue, accounted: usize) -> QueueSink<'a> {
        QueueSink { out, accounted }
    }
}

impl Sink for QueueSink<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.out.push(
            Outgoing::Bytes(bytes.to_vec()),
            std::mem::take(&mut self.accounted),
        );
    }

    fn frame(&mut self, head: &[u8], payload: &[u8], mask: Option<[u8; 4]>) {
        debug_assert!(mask.is_none(), "servers do not mask");
        let mut v = Vec::with_capacity(head.len() + payload.len());
        v.extend_from_slice(head);
        v.extend_from_slice(payload);
        self.out
            .push(Outgoing::Bytes(v), std::mem::take(&mut self.accounted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loops_gauge_hears_every_byte_queued_written_or_dropped() {
        take_queued_delta();
        let mut q = OutQueue::default();
        q.push(Outgoing::Bytes(vec![1; 100]), 0);
        q.push(Outgoing::Shared(Arc::from(vec![2u8; 50])), 0);
        assert_eq!(take_queued_delta(), 150);
        q.advance(120);
        assert_eq!(take_queued_delta(), -120);
        q.push(Outgoing::Bytes(vec![3; 10]), 0);
        assert_eq!(q.clear(), 0);
        assert_eq!(
            take_queued_delta(),
            10 - 40,
            "the push, then the 40 dropped"
        );
        assert_eq!(take_queued_delta(), 0);
    }

    #[test]
    fn shared_frames_queue_as_the_reference_path_queues_them() {
        // The same pushes through `push_shared` and through its reference:
        // frames small and large (the limit and one past it), after owned
        // bytes and after each other, with writes in between; the first
        // 3,000 all small enough to join, so a coalesced buffer reaches its
        // cap and a new one starts.
        let sizes = [1, 22, 100, SHARED_COALESCE_MAX, 7, SHARED_COALESCE_MAX + 1];
        let (mut fast, mut reference) = (OutQueue::default(), OutQueue::default());
        let mut released = (0, 0);
        let mut past_the_cap = false;
        for step in 0..5_000usize {
            let len = if step < 3_000 {
                sizes[step % (sizes.len() - 1)]
            } else {
                sizes[step % sizes.len()]
            };
            let frame: Arc<[u8]> = vec![step as u8; len].into();
            if step % 97 == 0 {
                fast.push(bytes(300, 9), 300);
                reference.push(bytes(300, 9), 300);
            }
            fast.push_shared(&frame, len);
            reference.push_shared_reference(&frame, len);
            assert_eq!(fast.queued(), reference.queued(), "step {step}");
            assert_eq!(fast.chunk_count(), reference.chunk_count(), "step {step}");
            past_the_cap |= step < 3_000 && fast.chunk_count() > 1;
            if step % 211 == 0 {
                let (a, b) = (pending(&fast), pending(&reference));
                assert_eq!(a, b, "step {step}");
                let written = a.1.len() / 2;
                released.0 += fast.advance(written);
                released.1 += reference.advance(written);
                assert_eq!(released.0, released.1, "step {step}");
            }
        }
        assert!(past_the_cap, "a coalesced buffer filled up");
        assert_eq!(pending(&fast), pending(&reference));
        assert_eq!(fast.clear(), reference.clear(), "the same reservations");
    }

    /// The frames the equivalence tests below queue, with their step:
    /// payloads around every header size and the join limit, text and
    /// binary; enough small ones that a coalesced buffer fills and grows.
    fn frame_steps() -> impl Iterator<Item = (usize, MessageKind, Vec<u8>)> {
        const SIZES: [usize; 10] = [
            0,
            1,
            20,
            125,
            126,
            1000,
            COALESCE_MAX - 4,
            COALESCE_MAX - 3,
            COALESCE_MAX,
            70_000,
        ];
        (0..6_000usize).map(|step| {
            let len = if step % 7 == 0 {
                SIZES[step / 7 % SIZES.len()]
            } else {
                SIZES[step % 3]
            };
            let kind = if step % 2 == 0 {
                MessageKind::Text
            } else {
                MessageKind::Binary
            };
            (step, kind, vec![step as u8; len])
        })
    }

    /// After each step of an equivalence test: both queues hold as much in
    /// as many chunks, and now and then the same bytes, of which the same
    /// part is written (now and then all, so the next frame starts the
    /// queue again); `released` sums what each write released.
    fn compare_and_write(
        step: usize,
        fast: &mut OutQueue,
        reference: &mut OutQueue,
        released: &mut (usize, usize),
    ) {
        assert_eq!(fast.queued(), reference.queued(), "step {step}");
        assert_eq!(fast.chunk_count(), reference.chunk_count(), "step {step}");
        if !step.is_multiple_of(199) {
            return;
        }
        let (a, b) = (pending(fast), pending(reference));
        assert_eq!(a, b, "step {step}");
        let written = if step.is_multiple_of(995) {
            a.1.len()
        } else {
            a.1.len() * 2 / 3
        };
        released.0 += fast.advance(written);
        released.1 += reference.advance(written);
        assert_eq!(released.0, released.1, "step {step}");
    }

    #[test]
    fn frames_appended_in_place_queue_as_pushed_frames_do() {
        // `append_frame`, falling back to pushing the built frame as its
        // callers do, against pushing the built frame every time, between
        // owned frames.
        let (mut fast, mut reference) = (OutQueue::default(), OutQueue::default());
        let mut released = (0, 0);
        let mut appended = 0;
        for (step, kind, payload) in frame_steps() {
            let len = payload.len();
            if step % 89 == 0 {
                let owned = vec![9; 300];
                fast.push(Outgoing::owned_frame(kind, owned.clone()), 300);
                reference.push(Outgoing::owned_frame(kind, owned), 300);
            }
            if fast.append_frame(kind, &payload, len) {
                appended += 1;
            } else {
                fast.push(Outgoing::copy_frame(kind, &payload), len);
            }
            reference.push(Outgoing::copy_frame(kind, &payload), len);
            compare_and_write(step, &mut fast, &mut reference, &mut released);
        }
        assert!(
            appended > 4_000,
            "the fast path took most frames: {appended}"
        );
        assert_eq!(pending(&fast), pending(&reference));
        assert_eq!(fast.clear(), reference.clear(), "the same reservations");
    }

    #[test]
    fn owned_frames_pushed_in_place_queue_as_the_reference_pushes_them() {
        // `push`'s fast path for a frame of a payload of its own against
        // `push_reference`, with shared and copied frames between them.
        let (mut fast, mut reference) = (OutQueue::default(), OutQueue::default());
        let mut released = (0, 0);
        for (step, kind, payload) in frame_steps() {
            let len = payload.len();
            match step % 97 {
                0 => {
                    let shared: Arc<[u8]> = vec![7; 40].into();
                    fast.push_shared(&shared, 40);
                    reference.push_shared(&shared, 40);
                }
                1 => {
                    fast.push(Outgoing::copy_frame(kind, &payload), len);
                    reference.push_reference(Outgoing::copy_frame(kind, &payload), len);
                    continue;
                }
                _ => {}
            }
            fast.push(Outgoing::owned_frame(kind, payload.clone()), len);
            reference.push_reference(Outgoing::owned_frame(kind, payload), len);
            compare_and_write(step, &mut fast, &mut reference, &mut released);
        }
        assert_eq!(pending(&fast), pending(&reference));
        assert_eq!(fast.clear(), reference.clear(), "the same reservations");
    }

    #[test]
    fn a_frame_goes_in_whole_whatever_room_its_padded_header_finds() {
        // Room for the frame but not for the header's full 14 bytes before
        // the payload: the plain copy, and the buffer does not grow.
        for (room, payload_len) in [(2 + 20, 20), (14 + 20, 20), (13 + 20, 20), (4 + 200, 200)] {
            let head = EncodedHeader::new(
                MessageKind::Binary.opcode(),
                true,
                false,
                payload_len as u64,
                None,
            );
            let payload = vec![5u8; payload_len];
            let mut buf = Vec::with_capacity(room + 3);
            buf.extend_from_slice(&[1, 2, 3]);
            let cap = buf.capacity();
            if cap - buf.len() < head.as_bytes().len() + payload_len {
                continue;
            }
            extend_with_frame(&mut buf, &head, &payload);
            let mut want = vec![1, 2, 3];
            want.extend_from_slice(head.as_bytes());
            want.extend_from_slice(&payload);
            assert_eq!(buf, want, "room {room}");
            assert_eq!(buf.capacity(), cap, "room {room}: not grown");
        }
    }

    fn bytes(n: usize, fill: u8) -> Outgoing {
        Outgoing::Bytes(vec![fill; n])
    }

    /// Everything `slices` offers, joined.
    fn pending(q: &OutQueue) -> (usize, Vec<u8>) {
        let mut s = IoSlices::new();
        q.slices(&mut s);
        (s.len(), s.iter().flat_map(|s| s.iter().copied()).collect())
    }

    #[test]
    fn small_frames_coalesce_up_to_the_limits() {
        let mut q = OutQueue::default();
        q.push(bytes(10, 1), 3);
        q.push(bytes(COALESCE_MAX, 2), 4);
        assert_eq!(q.chunk_count(), 1, "small bytes join the previous buffer");
        q.push(bytes(COALESCE_MAX + 1, 3), 5);
        assert_eq!(q.chunk_count(), 2, "a frame over COALESCE_MAX stays apart");
        q.push(Outgoing::Shared(vec![4; SHARED_COALESCE_MAX + 1].into()), 6);
        assert_eq!(
            q.chunk_count(),
            3,
            "a shared frame over its limit stays apart"
        );
        q.push(bytes(8, 5), 7);
        assert_eq!(q.chunk_count(), 4, "nothing joins a large shared frame");
        let mut full = OutQueue::default();
        for _ in 0..COALESCED_BUFFER_MAX / COALESCE_MAX {
            full.push(bytes(COALESCE_MAX, 0), 1);
        }
        assert_eq!(full.chunk_count(), 1);
        full.push(bytes(1, 0), 1);
        assert_eq!(full.chunk_count(), 2, "a coalesced buffer stops at its cap");
        assert_eq!(
            q.clear(),
            3 + 4 + 5 + 6 + 7,
            "clear returns every reservation"
        );
        assert!(q.is_empty());
        assert_eq!(q.clear(), 0);
    }

    #[test]
    fn slices_start_at_the_offset_and_advance_crosses_chunks() {
        let mut q = OutQueue::default();
        q.push(
            Outgoing::owned_frame(MessageKind::Binary, vec![7; 2000]),
            2000,
        );
        const SHARED: usize = SHARED_COALESCE_MAX + 1;
        q.push(Outgoing::Shared(vec![8; SHARED].into()), SHARED);
        let (n, all) = pending(&q);
        assert_eq!(n, 3, "header, payload, shared frame");
        assert_eq!(all.len(), 4 + 2000 + SHARED);
        assert_eq!(q.queued(), all.len());

        assert_eq!(q.advance(3), 0, "inside the header");
        let (_, rest) = pending(&q);
        assert_eq!(rest, all[3..]);
        assert_eq!(q.advance(1 + 1999), 0, "one payload byte still owed");
        assert_eq!(pending(&q).1, all[2003..]);
        assert_eq!(q.advance(1 + 2), 2000, "the first frame left whole");
        assert_eq!(pending(&q).1, all[2006..]);
        assert_eq!(q.queued(), SHARED - 2);
        assert_eq!(q.advance(SHARED - 2), SHARED);
        assert!(q.is_empty());
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn slices_stop_at_max_iovecs() {
        // Frames too large to coalesce: a header and a payload each.
        const LEN: usize = COALESCE_MAX + 1;
        let mut q = OutQueue::default();
        for _ in 0..MAX_IOVECS {
            q.push(
                Outgoing::owned_frame(MessageKind::Binary, vec![1; LEN]),
                LEN,
            );
        }
        let (n, all) = pending(&q);
        assert_eq!(n, MAX_IOVECS);
        assert_eq!(all.len(), (MAX_IOVECS / 2) * (4 + LEN));
        assert_eq!(q.advance(all.len()), (MAX_IOVECS / 2) * LEN);
        assert_eq!(pending(&q).0, MAX_IOVECS);
    }

    #[test]
    fn a_small_frame_alone_is_not_copied_and_the_next_joins_it() {
        let mut q = OutQueue::default();
        let payload = vec![5u8; 100];
        let at = payload.as_ptr();
        q.push(Outgoing::owned_frame(MessageKind::Binary, payload), 100);
        let (n, first) = pending(&q);
        assert_eq!(n, 2, "header and the sender's own buffer");
        let mut s = IoSlices::new();
        q.slices(&mut s);
        assert_eq!(s[1].as_ptr(), at, "sent from where it was");
        drop(s);
        q.advance(1);
        q.push(Outgoing::owned_frame(MessageKind::Text, vec![6u8; 50]), 50);
        q.push(Outgoing::copy_frame(MessageKind::Text, b"xyz"), 3);
        assert_eq!(q.chunk_count(), 1, "both joined the first, made a buffer");
        let (n, rest) = pending(&q);
        assert_eq!(n, 1);
        assert_eq!(
            rest[..first.len() - 1],
            first[1..],
            "the write offset still holds"
        );
        assert_eq!(rest[first.len() - 1..][..2], [0x81, 50]);
        assert_eq!(q.advance(rest.len()), 100 + 50 + 3);
        assert!(q.is_empty());
    }

    #[test]
    fn small_shared_frames_are_copied_together_without_touching_their_count() {
        let first: Arc<[u8]> = vec![1u8; 20].into();
        let second: Arc<[u8]> = vec![2u8; SHARED_COALESCE_MAX].into();
        let large: Arc<[u8]> = vec![3u8; SHARED_COALESCE_MAX + 1].into();
        let mut q = OutQueue::default();
        q.push_shared(&first, 20);
        assert_eq!(Arc::strong_count(&first), 2, "alone, it is queued shared");
        q.push_shared(&second, SHARED_COALESCE_MAX);
        assert_eq!(q.chunk_count(), 1, "the second joined the first");
        assert_eq!(Arc::strong_count(&first), 1, "the first was copied out");
        assert_eq!(Arc::strong_count(&second), 1, "the second was never shared");
        q.push_shared(&large, SHARED_COALESCE_MAX + 1);
        assert_eq!(q.chunk_count(), 2, "a large one stays shared");
        assert_eq!(Arc::strong_count(&large), 2);
        let (n, all) = pending(&q);
        assert_eq!(n, 2);
        let expected: Vec<u8> = [&first[..], &second[..], &large[..]].concat();
        assert_eq!(all, expected);
        assert_eq!(q.queued(), expected.len());
        assert_eq!(q.advance(expected.len()), expected.len());
        assert!(q.is_empty());
        assert_eq!(Arc::strong_count(&large), 1);
    }

    #[test]
    fn a_small_coalesced_buffer_grows_through_the_pool_and_keeps_every_byte() {
        let mut q = OutQueue::default();
        let frame: Arc<[u8]> = (0..=99u8).collect::<Vec<u8>>().into();
        let mut expected = Vec::new();
        // From a shared frame joined by the next, past several buffer sizes.
        for _ in 0..40 {
            q.push_shared(&frame, frame.len());
            expected.extend_from_slice(&frame);
        }
        assert_eq!(q.chunk_count(), 1);
        assert_eq!(pending(&q).1, expected);
        assert_eq!(q.clear(), 40 * frame.len());
    }

    #[test]
    fn the_sink_accounts_only_the_first_frame() {
        let mut q = OutQueue::default();
        let mut sink = QueueSink::accounted(&mut q, 9);
        sink.frame(&[0x82, 1], &[5], None);
        sink.write(b"xy");
        assert_eq!(pending(&q).1, vec![0x82, 1, 5, b'x', b'y']);
        assert_eq!(q.clear(), 9);
    }
}
