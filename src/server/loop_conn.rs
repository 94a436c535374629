//! [`LoopConn`]: one connection as its event loop owns it: the transport,
//! the protocol state, the unconsumed input, the outbound queue, and where
//! it stands in its [`Lifecycle`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::conn::ConnInner;
use super::lifecycle::Lifecycle;
use super::out_queue::{OutQueue, QueueSink};
use super::prepared::Prepared;
use super::transport::TcpTransport;
use crate::protocol::Connection;

/// One connection, owned by its loop.
pub(crate) struct LoopConn {
    pub(crate) transport: TcpTransport,
    pub(crate) proto: Connection,
    /// Unconsumed input (a partial header or control frame, a partial request head).
    pub(crate) tail: Box<[u8]>,
    pub(crate) out: OutQueue,
    /// The part other threads share, from the upgrade on.
    pub(crate) inner: Option<Arc<ConnInner>>,
    pub(crate) lifecycle: Lifecycle,
    /// The deadline this connection is scheduled at in the loop's timers.
    pub(crate) timer: Option<Instant>,
    /// Listed in the loop's connections to flush this turn.
    pub(crate) dirty: bool,
}

impl LoopConn {
    pub(crate) fn new(transport: TcpTransport, proto: Connection, over_capacity: bool) -> LoopConn {
        LoopConn {
            transport,
            proto,
            tail: Box::default(),
            out: OutQueue::default(),
            inner: None,
            lifecycle: Lifecycle::Handshaking { over_capacity },
            timer: None,
            dirty: false,
        }
    }

    /// Queues a message made ready for this connection's encoding; false
    /// (nothing queued) when the protocol no longer sends.
    pub(crate) fn queue(&mut self, message: Prepared<'_>, accounted: usize) -> bool {
        match message {
            Prepared::Frame(frame) => {
                self.out.push(frame, accounted);
                true
            }
            Prepared::Deflate(kind, data) => self
                .proto
                .send(
                    kind,
                    &data,
                    &mut QueueSink::accounted(&mut self.out, accounted),
                )
                .is_ok(),
        }
    }

    /// Gives back `len` bytes reserved for a message that was not queued.
    pub(crate) fn unreserve(&self, len: usize) {
        if let Some(inner) = &self.inner {
            inner.release(len);
        }
    }

    /// Whether a message from the handler may still be queued: the
    /// connection is open, or its final close frame is held back for
    /// replies to messages that arrived before the peer's close.
    pub(crate) fn takes_messages(&self) -> bool {
        self.proto.is_open() || self.proto.holds_close_reply()
    }

    /// Starts the closing handshake from our side; sends stop being accepted.
    pub(crate) fn start_close(&mut self, code: u16, reason: &str, now: Instant) {
        let _ = self
            .proto
            .close(code, reason, now, &mut QueueSink::new(&mut self.out));
        self.stop_sends();
    }

    /// Clears the shared open flag: handles refuse sends from here on.
    pub(crate) fn stop_sends(&self) {
        if let Some(inner) = &self.inner {
            inner.open.store(false, Ordering::Release);
        }
    }
}
