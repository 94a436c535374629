//! The types that cross threads: commands to a loop, events to a worker, the
//! state every thread shares, and the counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crossbeam_channel::Sender;
use mio::Waker;

use super::handler::{Conn, ConnId, ConnShared, Handler, Message};
use super::Config;
use crate::protocol::deflate::{self, DeflateOptions};
use crate::protocol::{EncodedHeader, MessageKind, Request};

/// An encoded frame on its way out.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Header and payload in one buffer.
    Bytes(Vec<u8>),
    /// A header and a payload the sender gave up (no copy).
    Split(EncodedHeader, Vec<u8>),
    /// One frame shared by every recipient of a broadcast.
    Shared(Arc<[u8]>),
}

impl Outgoing {
    pub fn copy_frame(kind: MessageKind, data: &[u8]) -> Outgoing {
        let head = EncodedHeader::new(kind.opcode(), true, false, data.len() as u64, None);
        let mut v = Vec::with_capacity(head.as_bytes().len() + data.len());
        v.extend_from_slice(head.as_bytes());
        v.extend_from_slice(data);
        Outgoing::Bytes(v)
    }

    pub fn owned_frame(kind: MessageKind, data: Vec<u8>) -> Outgoing {
        // Small payloads are cheaper copied next to their header (one iovec).
        if data.len() <= 1024 {
            return Outgoing::copy_frame(kind, &data);
        }
        let head = EncodedHeader::new(kind.opcode(), true, false, data.len() as u64, None);
        Outgoing::Split(head, data)
    }

    /// A frame whose payload is `data` compressed (RSV1 set), with this
    /// thread's shared compressor: no context carried between messages.
    pub fn compressed_frame(
        kind: MessageKind,
        data: &[u8],
        opts: &DeflateOptions,
        window: u8,
    ) -> Vec<u8> {
        let mut z = Vec::new();
        deflate::compress_shared(data, opts.level, window, opts.mem_level, &mut z);
        let head = EncodedHeader::new(kind.opcode(), true, true, z.len() as u64, None);
        let mut v = Vec::with_capacity(head.as_bytes().len() + z.len());
        v.extend_from_slice(head.as_bytes());
        v.extend_from_slice(&z);
        v
    }

    /// The frame as (up to) two slices.
    pub fn parts(&self) -> [&[u8]; 2] {
        match self {
            Outgoing::Bytes(v) => [v, &[]],
            Outgoing::Split(h, p) => [h.as_bytes(), p],
            Outgoing::Shared(a) => [a, &[]],
        }
    }

    pub fn len(&self) -> usize {
        let [a, b] = self.parts();
        a.len() + b.len()
    }
}

/// One message for many recipients (broadcast, publish): the plain frame,
/// and per window size the compressed frame, each built at most once, for
/// every recipient without context takeover that agreed to that window.
pub(crate) struct SharedMessage {
    pub kind: MessageKind,
    pub data: Vec<u8>,
    pub plain: Arc<[u8]>,
    compressed: [OnceLock<Arc<[u8]>>; 7],
}

impl std::fmt::Debug for SharedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharedMessage({:?}, {} bytes)",
            self.kind,
            self.data.len()
        )
    }
}

impl SharedMessage {
    pub fn new(kind: MessageKind, data: &[u8]) -> Arc<SharedMessage> {
        let plain = match Outgoing::copy_frame(kind, data) {
            Outgoing::Bytes(v) => v.into(),
            _ => unreachable!("copy_frame makes one buffer"),
        };
        Arc::new(SharedMessage {
            kind,
            data: data.to_vec(),
            plain,
            compressed: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    /// The frame compressed with window `window` (9..=15), built on first use.
    pub fn compressed(&self, opts: &DeflateOptions, window: u8) -> Arc<[u8]> {
        let slot = &self.compressed[usize::from(window.clamp(9, 15) - 9)];
        Arc::clone(
            slot.get_or_init(|| {
                Outgoing::compressed_frame(self.kind, &self.data, opts, window).into()
            }),
        )
    }
}

/// What other threads ask of a loop.
#[derive(Debug)]
pub(crate) enum Command {
    Send {
        id: ConnId,
        frame: Outgoing,
        /// Bytes reserved in the connection's buffered count.
        accounted: usize,
    },
    /// A message the loop compresses with the connection's own compressor
    /// (context takeover), so that messages keep their order.
    SendCompressed {
        id: ConnId,
        kind: MessageKind,
        data: Vec<u8>,
        accounted: usize,
    },
    Ping {
        id: ConnId,
        payload: Vec<u8>,
    },
    Close {
        id: ConnId,
        code: u16,
        reason: String,
    },
    /// One message for every open connection of the loop but `exclude`.
    Broadcast {
        message: Arc<SharedMessage>,
        exclude: Option<ConnId>,
    },
    Subscribe {
        id: ConnId,
        topic: Arc<str>,
    },
    Unsubscribe {
        id: ConnId,
        topic: Arc<str>,
    },
    /// One message for every subscriber of `topic` on the loop but `exclude`.
    Publish {
        topic: Arc<str>,
        message: Arc<SharedMessage>,
        exclude: Option<ConnId>,
    },
    /// `on_open` has returned. Sent through the loop's channel after whatever
    /// `on_open` sent, so broadcasts that include the connection from here on
    /// can never overtake those messages.
    Opened {
        id: ConnId,
    },
    /// The worker has handled everything up to the connection's close.
    CloseAck {
        id: ConnId,
    },
    Shutdown,
}

/// What a loop hands a worker.
pub(crate) enum WorkerEvent {
    Open(Conn, Box<Request>),
    Message(Conn, Message),
    /// The last event of a connection. With `ack`, the loop holds the
    /// connection's final close frame until the worker has handled every
    /// earlier event and answers with [`Command::CloseAck`], so replies to
    /// messages that arrived before the close still go out before it.
    Close(Conn, u16, String, bool),
    Drain(Conn),
}

/// A loop's mailbox, as other threads see it.
pub(crate) struct LoopRemote {
    pub tx: Sender<Command>,
    pub waker: Waker,
    /// The loop is (about to be) blocked in poll: the next sender wakes it.
    pub asleep: AtomicBool,
    /// Slot → open connection, for handles that only know an id.
    pub registry: RwLock<Vec<Option<Arc<ConnShared>>>>,
}

impl LoopRemote {
    pub fn push(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok()
            && self.asleep.load(Ordering::SeqCst)
            && self.asleep.swap(false, Ordering::SeqCst)
        {
            // One wake-up per batch: the loop clears `asleep` when it wakes, so
            // later senders of the same batch skip the syscall.
            let _ = self.waker.wake();
        }
    }
}

/// Server-wide counters, readable at any time.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped_backpressure: AtomicU64,
    pub closed_backpressure: AtomicU64,
    pub handshake_failures: HandshakeFailures,
}

/// Handshake failures by reason.
#[derive(Debug, Default)]
pub struct HandshakeFailures {
    /// Malformed or invalid upgrade requests (400, 405, 426, 431).
    pub invalid: AtomicU64,
    /// Origin not allowed (403).
    pub origin: AtomicU64,
    /// Over the connection limit (503).
    pub capacity: AtomicU64,
    /// Refused by the application's hook.
    pub rejected: AtomicU64,
    /// No complete request within the handshake timeout.
    pub timeout: AtomicU64,
}

/// A plain copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections_open: u64,
    pub connections_total: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped_backpressure: u64,
    pub closed_backpressure: u64,
    pub handshake_invalid: u64,
    pub handshake_origin: u64,
    pub handshake_capacity: u64,
    pub handshake_rejected: u64,
    pub handshake_timeout: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let h = &self.handshake_failures;
        StatsSnapshot {
            connections_open: r(&self.connections_open),
            connections_total: r(&self.connections_total),
            messages_in: r(&self.messages_in),
            messages_out: r(&self.messages_out),
            bytes_in: r(&self.bytes_in),
            bytes_out: r(&self.bytes_out),
            dropped_backpressure: r(&self.dropped_backpressure),
            closed_backpressure: r(&self.closed_backpressure),
            handshake_invalid: r(&h.invalid),
            handshake_origin: r(&h.origin),
            handshake_capacity: r(&h.capacity),
            handshake_rejected: r(&h.rejected),
            handshake_timeout: r(&h.timeout),
        }
    }
}

/// What every thread of one server shares.
pub(crate) struct Shared {
    pub config: Config,
    pub handler: Arc<dyn Handler>,
    pub loops: Vec<LoopRemote>,
    pub stats: Stats,
    /// Sockets accepted and not yet released (handshaking, open or closing).
    pub sockets: AtomicUsize,
    pub shutting_down: AtomicBool,
    pub local_addr: SocketAddr,
    /// Every loop and worker thread, joined by whichever handle joins first.
    pub threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Shared {
    pub fn command(&self, id: ConnId, cmd: Command) {
        if let Some(l) = self.loops.get(id.loop_index()) {
            l.push(cmd);
        }
    }

    /// The shared part of the open connection `id`, if it is still that connection.
    pub fn lookup(&self, id: ConnId) -> Option<Arc<ConnShared>> {
        let remote = self.loops.get(id.loop_index())?;
        let registry = remote.registry.read().unwrap_or_else(|e| e.into_inner());
        registry
            .get(id.slot())?
            .as_ref()
            .filter(|c| c.id == id)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_message_is_compressed_once_per_window() {
        let opts = DeflateOptions::shared();
        let m = SharedMessage::new(
            MessageKind::Text,
            "hello hello hello hello".repeat(40).as_bytes(),
        );
        let a = m.compressed(&opts, 15);
        let b = m.compressed(&opts, 15);
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second recipient reuses the first one's frame"
        );
        let c = m.compressed(&opts, 10);
        assert!(!Arc::ptr_eq(&a, &c), "another window gets its own");
        assert_eq!(a[0] & 0x40, 0x40, "RSV1 set");
        assert!(a.len() < m.plain.len() / 4);
    }
}
