//! [`LentQueue`]: the outbound queue of the connection an inline handler is
//! called for, lent to the loop thread for that one call, so that what the
//! handler sends to that connection goes straight into the queue.
//!
//! Without it, an inline handler's reply was a [`Command`](super::command::Command)
//! in the loop thread's own list (see `mailbox`), carried out after the
//! handler returned: built, matched, its connection looked up again and its
//! state checked again, for the one send that nearly every echo or
//! request-reply handler makes.
//!
//! Order is the own list's: a send goes into the lent queue only while
//! nothing this thread sent before is still waiting (its own list and its
//! loop's channel are empty; see [`ServerState::push_reply`](super::server_state::ServerState::push_reply)),
//! so everything it sent earlier is in a queue already. Once anything waits,
//! sends take the command path behind it.

use std::cell::Cell;
use std::marker::PhantomData;

use super::out_queue::{OutQueue, Outgoing};
use super::ConnId;
use crate::protocol::MessageKind;

/// The queue lent for one handler call, and what went into it. Plain words,
/// so the thread-local needs no destructor and costs a load to reach.
#[derive(Clone, Copy)]
struct Lent {
    /// Null when nothing is lent.
    out: *mut OutQueue,
    id: ConnId,
    /// Messages and payload bytes queued (for the loop's statistics).
    messages: usize,
    bytes: usize,
}

const NONE: Lent = Lent {
    out: std::ptr::null_mut(),
    id: ConnId::new(0, 0, 0),
    messages: 0,
    bytes: 0,
};

thread_local! {
    /// On a loop thread inside an inline handler call: the connection's queue.
    static LENT: Cell<Lent> = const { Cell::new(NONE) };
}

/// A connection's queue, lent to this thread for as long as this value
/// lives (it holds the queue's exclusive borrow that long).
pub(crate) struct LentQueue<'a>(PhantomData<&'a mut OutQueue>);

/// What a handler call sent through a [`LentQueue`]: messages, payload bytes.
pub(crate) type Sent = (usize, usize);

impl<'a> LentQueue<'a> {
    /// Lends `out`, the queue of connection `id`, to this thread.
    pub(crate) fn lend(id: ConnId, out: &'a mut OutQueue) -> LentQueue<'a> {
        LENT.with(|l| {
            l.set(Lent {
                out,
                id,
                messages: 0,
                bytes: 0,
            })
        });
        LentQueue(PhantomData)
    }

    /// Ends the loan: what was sent into the queue.
    pub(crate) fn give_back(self) -> Sent {
        let lent = LENT.with(|l| l.replace(NONE));
        std::mem::forget(self);
        (lent.messages, lent.bytes)
    }
}

impl Drop for LentQueue<'_> {
    fn drop(&mut self) {
        LENT.with(|l| l.set(NONE));
    }
}

/// Whether connection `id`'s queue is lent to this thread: one load, so
/// a send from any other thread checks this before it hands a frame over.
#[inline]
pub(crate) fn is_lent(id: ConnId) -> bool {
    LENT.with(|l| {
        let lent = l.get();
        !lent.out.is_null() && lent.id == id
    })
}

/// Queues `frame` (with `accounted` payload bytes reserved) for connection
/// `id` when its queue is lent to this thread and `nothing_waits`; gives
/// the frame back otherwise.
pub(crate) fn push(
    id: ConnId,
    frame: Outgoing,
    accounted: usize,
    nothing_waits: impl FnOnce() -> bool,
) -> Result<(), Outgoing> {
    let mut frame = Some(frame);
    queue_lent(id, accounted, nothing_waits, |out| {
        out.push(frame.take().expect("queued once"), accounted);
        true
    });
    // Still here: the queue was not lent for `id`.
    frame.map_or(Ok(()), Err)
}

/// Appends the plain frame of `kind` carrying `payload` (see
/// [`OutQueue::append_frame`]) to connection `id`'s queue when it is lent
/// to this thread, `nothing_waits` and the queue is empty or its last
/// buffer has room; false, nothing done, otherwise (the caller then builds
/// the frame and tries [`push`]).
pub(crate) fn append_frame(
    id: ConnId,
    kind: MessageKind,
    payload: &[u8],
    nothing_waits: impl FnOnce() -> bool,
) -> bool {
    let accounted = payload.len();
    queue_lent(id, accounted, nothing_waits, |out| {
        out.append_frame(kind, payload, accounted)
    })
}

/// Runs `queue` on connection `id`'s queue when it is lent to this thread
/// and `nothing_waits`, and counts a message of `accounted` payload bytes
/// when `queue` says it took one. False when it did not run or took
/// nothing.
fn queue_lent(
    id: ConnId,
    accounted: usize,
    nothing_waits: impl FnOnce() -> bool,
    queue: impl FnOnce(&mut OutQueue) -> bool,
) -> bool {
    LENT.with(|l| {
        let mut lent = l.get();
        if lent.out.is_null() || lent.id != id || !nothing_waits() {
            return false;
        }
        // SAFETY: a non-null pointer was set by `LentQueue::lend` from an
        // exclusive borrow that the `LentQueue` keeps until it clears the
        // pointer (in `give_back` or `drop`), and only this thread sees it.
        // Nothing else reaches the queue meanwhile: the loop is inside the
        // handler call it lent it for.
        if !queue(unsafe { &mut *lent.out }) {
            return false;
        }
        lent.messages += 1;
        lent.bytes += accounted;
        l.set(lent);
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lent_connection_takes_frames_and_only_while_lent() {
        let (a, b) = (ConnId::new(0, 1, 0), ConnId::new(0, 2, 0));
        let frame = || Outgoing::copy_frame(MessageKind::Text, b"hi");
        let yes = || true;
        assert!(push(a, frame(), 2, yes).is_err(), "nothing lent");
        assert!(!is_lent(a));
        let mut out = OutQueue::default();
        let lent = LentQueue::lend(a, &mut out);
        assert!(is_lent(a) && !is_lent(b));
        assert!(push(b, frame(), 2, yes).is_err(), "another connection");
        assert!(push(a, frame(), 2, || false).is_err(), "something waits");
        let text = MessageKind::Text;
        assert!(!append_frame(b, text, b"hi", yes), "another connection");
        assert!(!append_frame(a, text, b"hi", || false), "something waits");
        assert!(append_frame(a, text, b"hi", yes), "starts the queue");
        assert!(push(a, frame(), 2, yes).is_ok());
        assert!(append_frame(a, text, b"hi", yes), "joins it");
        assert_eq!(lent.give_back(), (3, 6));
        assert_eq!(out.queued(), 12, "three 4-byte frames");
        assert!(push(a, frame(), 2, yes).is_err(), "given back");
        assert!(!append_frame(a, text, b"hi", yes), "given back");
        assert!(!is_lent(a));

        // Dropped (the loop unwound past the call): forgotten.
        drop(LentQueue::lend(a, &mut out));
        assert!(push(a, frame(), 2, yes).is_err(), "dropped");
        assert!(!append_frame(a, text, b"hi", yes), "dropped");
        assert_eq!(out.queued(), 12);
    }
}
