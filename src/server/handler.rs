//! What applications implement ([`Handler`]) and what they hold ([`Conn`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::shared::{Command, Outgoing, Shared};
use super::BackpressurePolicy;
use crate::protocol::close::code;
use crate::protocol::{MessageKind, Request};

/// A connection id: slot, loop and generation in one `u64`. A stale id (its
/// connection closed, the slot reused) never reaches the newer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    pub(crate) fn new(loop_index: usize, slot: usize, generation: u32) -> ConnId {
        debug_assert!(slot < 1 << 24 && loop_index < 256);
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

    pub fn as_u64(self) -> u64 {
        self.0
    }

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

/// A complete message from a client.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    kind: MessageKind,
    data: Vec<u8>,
}

impl Message {
    pub(crate) fn new(kind: MessageKind, data: Vec<u8>) -> Message {
        Message { kind, data }
    }

    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    pub fn is_text(&self) -> bool {
        self.kind == MessageKind::Text
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The text of a text message (validated as UTF-8 by the protocol core).
    pub fn as_text(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Text => std::str::from_utf8(&self.data).ok(),
            MessageKind::Binary => None,
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({:?}, {} bytes)", self.kind, self.data.len())
    }
}

/// How a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Accepted. The loop writes it in order, at once if the socket takes it;
    /// the connection's buffered amount (this message included) was this many bytes.
    Buffered(usize),
    /// Not sent.
    Dropped(DropReason),
}

impl SendStatus {
    pub fn is_dropped(self) -> bool {
        matches!(self, SendStatus::Dropped(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The connection is closing or closed, or the id is stale.
    Closed,
    /// The message would exceed the connection's buffered cap.
    Backpressure,
}

/// The part of a connection that other threads share with its loop.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub id: ConnId,
    /// Payload bytes accepted for sending and not yet written to the kernel.
    pub buffered: AtomicUsize,
    pub open: AtomicBool,
    /// A producer hit backpressure (or the kernel pushed back): tell the handler when the buffer empties.
    pub want_drain: AtomicBool,
    pub protocol: Option<Box<str>>,
    pub peer: Option<std::net::SocketAddr>,
    /// permessage-deflate for what we send, when negotiated.
    pub deflate: Option<SendDeflate>,
}

/// How messages to a connection are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendDeflate {
    /// No context takeover: any thread may compress, with its shared compressor.
    pub shared: bool,
    pub window: u8,
}

impl ConnShared {
    /// Reserves room for `len` bytes under the cap, or says why not.
    pub fn reserve(&self, len: usize, cap: usize) -> Result<usize, DropReason> {
        if !self.open.load(Ordering::Acquire) {
            return Err(DropReason::Closed);
        }
        let before = self.buffered.fetch_add(len, Ordering::AcqRel);
        // An empty buffer always takes one message: the message limit bounds it.
        if before > 0 && before + len > cap {
            self.buffered.fetch_sub(len, Ordering::AcqRel);
            self.want_drain.store(true, Ordering::Release);
            return Err(DropReason::Backpressure);
        }
        Ok(before + len)
    }

    pub fn release(&self, len: usize) -> usize {
        self.buffered.fetch_sub(len, Ordering::AcqRel) - len
    }
}

/// A handle to one connection: cheap to clone, usable from any thread, valid
/// after the connection closes (sends then report `Dropped(Closed)`).
#[derive(Clone)]
pub struct Conn {
    pub(crate) inner: Arc<ConnShared>,
    pub(crate) server: Arc<Shared>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("id", &self.inner.id).finish()
    }
}

impl Conn {
    pub fn id(&self) -> ConnId {
        self.inner.id
    }

    /// The subprotocol chosen during the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.inner.protocol.as_deref()
    }

    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.peer
    }

    /// True until the closing handshake starts.
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Bytes accepted for sending that the kernel has not taken yet (the
    /// browser API's `bufferedAmount`, seen from the server).
    pub fn buffered_amount(&self) -> usize {
        self.inner.buffered.load(Ordering::Acquire)
    }

    pub fn send_text(&self, text: &str) -> SendStatus {
        self.send(MessageKind::Text, text.as_bytes())
    }

    pub fn send_binary(&self, data: &[u8]) -> SendStatus {
        self.send(MessageKind::Binary, data)
    }

    /// Sends a message, copying `data` once into the frame (or compressing it).
    pub fn send(&self, kind: MessageKind, data: &[u8]) -> SendStatus {
        self.send_with(data.len(), |cmd_id| match self.compression(data.len()) {
            Some(d) if d.shared => Command::Send {
                id: cmd_id,
                frame: Outgoing::Bytes(Outgoing::compressed_frame(
                    kind,
                    data,
                    &self.server.config.protocol.deflate,
                    d.window,
                )),
                accounted: data.len(),
            },
            Some(_) => Command::SendCompressed {
                id: cmd_id,
                kind,
                data: data.to_vec(),
                accounted: data.len(),
            },
            None => Command::Send {
                id: cmd_id,
                frame: Outgoing::copy_frame(kind, data),
                accounted: data.len(),
            },
        })
    }

    /// Sends a message whose bytes the caller gives up: no copy when it goes
    /// out uncompressed.
    pub fn send_owned(&self, kind: MessageKind, data: Vec<u8>) -> SendStatus {
        if self.compression(data.len()).is_some() {
            return self.send(kind, &data);
        }
        let len = data.len();
        self.send_with(len, |id| Command::Send {
            id,
            frame: Outgoing::owned_frame(kind, data),
            accounted: len,
        })
    }

    /// permessage-deflate for a message of `len` bytes, if it is to be compressed.
    fn compression(&self, len: usize) -> Option<SendDeflate> {
        self.inner
            .deflate
            .filter(|_| len >= self.server.config.protocol.deflate.threshold)
    }

    fn send_with(&self, len: usize, command: impl FnOnce(ConnId) -> Command) -> SendStatus {
        let cfg = &self.server.config;
        match self.inner.reserve(len, cfg.max_buffered) {
            Ok(buffered) => {
                self.server.command(self.inner.id, command(self.inner.id));
                SendStatus::Buffered(buffered)
            }
            Err(DropReason::Backpressure) => {
                self.server
                    .stats
                    .dropped_backpressure
                    .fetch_add(1, Ordering::Relaxed);
                if cfg.backpressure == BackpressurePolicy::Close {
                    self.close_for_backpressure();
                }
                SendStatus::Dropped(DropReason::Backpressure)
            }
            Err(reason) => SendStatus::Dropped(reason),
        }
    }

    pub(crate) fn close_for_backpressure(&self) {
        if self.inner.open.swap(false, Ordering::AcqRel) {
            self.server
                .stats
                .closed_backpressure
                .fetch_add(1, Ordering::Relaxed);
            self.server.command(
                self.inner.id,
                Command::Close {
                    id: self.inner.id,
                    code: code::POLICY_VIOLATION,
                    reason: "send buffer full".into(),
                },
            );
        }
    }

    /// Sends a ping (at most 125 bytes of payload; longer is cut).
    pub fn ping(&self, payload: &[u8]) -> SendStatus {
        if !self.is_open() {
            return SendStatus::Dropped(DropReason::Closed);
        }
        let payload = payload[..payload.len().min(125)].to_vec();
        self.server.command(
            self.inner.id,
            Command::Ping {
                id: self.inner.id,
                payload,
            },
        );
        SendStatus::Buffered(self.buffered_amount())
    }

    /// Subscribes the connection to `topic` (see [`super::ServerHandle::publish`]).
    /// Ordered with this connection's sends: a publish after this call reaches it.
    pub fn subscribe(&self, topic: &str) {
        self.server.command(
            self.inner.id,
            Command::Subscribe {
                id: self.inner.id,
                topic: topic.into(),
            },
        );
    }

    pub fn unsubscribe(&self, topic: &str) {
        self.server.command(
            self.inner.id,
            Command::Unsubscribe {
                id: self.inner.id,
                topic: topic.into(),
            },
        );
    }

    /// Starts the closing handshake with `code` and `reason` (cut to 123 bytes).
    pub fn close(&self, code: u16, reason: &str) {
        if self.inner.open.swap(false, Ordering::AcqRel) {
            self.server.command(
                self.inner.id,
                Command::Close {
                    id: self.inner.id,
                    code,
                    reason: reason.into(),
                },
            );
        }
    }
}

/// The answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Upgrade, optionally with a subprotocol (one the client offered), extra
    /// headers, and topics to subscribe to before the 101 goes out (so no
    /// publish after the client sees the connection open can miss it).
    Accept {
        protocol: Option<String>,
        headers: Vec<(String, String)>,
        subscribe: Vec<String>,
    },
    /// Refuse with an HTTP response.
    Reject {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

impl Decision {
    pub fn accept() -> Decision {
        Decision::Accept {
            protocol: None,
            headers: Vec::new(),
            subscribe: Vec::new(),
        }
    }

    pub fn reject(status: u16, body: &str) -> Decision {
        Decision::Reject {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// A plain HTTP response, for requests that are not upgrades.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The application. The hooks marked *loop thread* run on the connection's
/// event loop and must not block; the rest run on the connection's worker,
/// one event at a time per connection, in order.
pub trait Handler: Send + Sync + 'static {
    /// *Loop thread.* A valid upgrade request (Origin already checked against
    /// the allowed list). `protocol` is the subprotocol the server would pick
    /// from its configured list. The default accepts with it.
    fn on_upgrade(&self, request: &Request, protocol: Option<&str>) -> Decision {
        let _ = request;
        Decision::Accept {
            protocol: protocol.map(str::to_string),
            headers: Vec::new(),
            subscribe: Vec::new(),
        }
    }

    /// *Loop thread.* A request that is not a WebSocket upgrade. `None` answers
    /// with the standard error (426 Upgrade Required, or what the request broke).
    fn on_http(&self, request: &Request) -> Option<HttpResponse> {
        let _ = request;
        None
    }

    /// The connection is open. Broadcasts reach it once this returns, so
    /// what this sends arrives before any broadcast.
    fn on_open(&self, conn: &Conn, request: &Request) {
        let _ = (conn, request);
    }

    fn on_message(&self, conn: &Conn, message: Message);

    /// The connection closed: `code` is the peer's close code (1005 when its
    /// close frame had none), ours when we failed it (1002, 1007, 1009 ...), or
    /// 1006 when it ended without a close frame. Called exactly once per opened connection.
    fn on_close(&self, conn: &Conn, code: u16, reason: &str) {
        let _ = (conn, code, reason);
    }

    /// The connection's send buffer emptied after backpressure.
    fn on_drain(&self, conn: &Conn) {
        let _ = conn;
    }
}

/// The echo handler: every message goes back to its sender.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&self, conn: &Conn, message: Message) {
        let kind = message.kind();
        conn.send_owned(kind, message.into_bytes());
    }
}
