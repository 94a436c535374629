//! [`Handler`]: what an application implements, what its hooks are shown
//! ([`Upgrade`]), and the answers they give.

use std::any::Any;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use super::conn_inner::ConnData;
use super::{Conn, Message, ServerHandle};
use crate::protocol::{MessageKind, Request};

/// An upgrade request, as [`Handler::on_upgrade`] sees it.
pub struct Upgrade<'a> {
    request: &'a Request,
    protocol: Option<&'a str>,
    peer: Option<SocketAddr>,
    server: &'a ServerHandle,
    data: RefCell<Option<ConnData>>,
}

impl std::fmt::Debug for RefCellData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.borrow().is_some() {
            "Some(..)"
        } else {
            "None"
        })
    }
}

struct RefCellData<'a>(&'a RefCell<Option<ConnData>>);

impl<'a> Upgrade<'a> {
    pub(crate) fn new(
        request: &'a Request,
        protocol: Option<&'a str>,
        peer: Option<SocketAddr>,
        server: &'a ServerHandle,
    ) -> Upgrade<'a> {
        Upgrade {
            request,
            protocol,
            peer,
            server,
            data: RefCell::new(None),
        }
    }

    /// Keeps `value` with the connection if it opens, as
    /// [`Conn::set_data`] does: what the hook decided (a user, a room) is
    /// there for `on_open` and every later call, without a lookup.
    pub fn set_data<T: Any + Send + Sync>(&self, value: T) {
        *self.data.borrow_mut() = Some(Arc::new(value));
    }

    pub(crate) fn take_data(&self) -> Option<ConnData> {
        self.data.borrow_mut().take()
    }

    /// The request head (path, headers, offered subprotocols and extensions).
    pub fn request(&self) -> &'a Request {
        self.request
    }

    /// The subprotocol the server would pick: the first one in the client's
    /// order of preference that [`Config::subprotocols`](super::Config::subprotocols) lists.
    pub fn protocol(&self) -> Option<&'a str> {
        self.protocol
    }

    /// The peer's address, as the socket reports it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The server (to look at its stats, publish, or keep for later).
    pub fn server(&self) -> &'a ServerHandle {
        self.server
    }
}

impl std::fmt::Debug for Upgrade<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("request", self.request)
            .field("protocol", &self.protocol)
            .field("peer", &self.peer)
            .field("data", &RefCellData(&self.data))
            .finish()
    }
}

/// The answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Upgrade, optionally with a subprotocol (one the client offered), extra
    /// headers, and topics to subscribe to before the 101 goes out (so no
    /// publish after the client sees the connection open can miss it).
    Accept {
        /// The subprotocol to answer with, if any.
        protocol: Option<String>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
        /// Topics the connection is subscribed to from its first moment
        /// (the first [`Config::max_subscriptions`](super::Config::max_subscriptions)
        /// of them whose names fit [`Config::max_topic_length`](super::Config::max_topic_length)).
        subscribe: Vec<String>,
        /// A relay: every message from this connection is published to this
        /// topic (never back to the sender) by its event loop, without a
        /// call to [`Handler::on_message`]. The pub/sub pattern at the cost
        /// of an inline publish, with no hop to a worker and back; the
        /// handler still hears the connection's open, close and drain.
        relay: Option<String>,
    },
    /// Refuse with an HTTP response.
    Reject {
        /// The HTTP status.
        status: u16,
        /// Extra response headers.
        headers: Vec<(String, String)>,
        /// The response body.
        body: Vec<u8>,
    },
}

impl Decision {
    /// Accept, with no subprotocol, headers or topics.
    pub fn accept() -> Decision {
        Decision::Accept {
            protocol: None,
            headers: Vec::new(),
            subscribe: Vec::new(),
            relay: None,
        }
    }

    /// Refuse with `status` and a plain-text `body`.
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
    /// The HTTP status.
    pub status: u16,
    /// Response headers (`Content-Length` is added).
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: Vec<u8>,
}

/// The application. The hooks marked *loop thread* run on the connection's
/// event loop and must not block; the rest run on the connection's worker
/// (or, with [`super::Dispatch::Inline`], on the loop too), one event at a
/// time per connection, in order. A panic in a hook is caught: the event is
/// dropped (an HTTP hook answers 500) and the thread goes on.
pub trait Handler: Send + Sync + 'static {
    /// *Loop thread.* A valid upgrade request (Origin already checked against
    /// the allowed list). [`Upgrade::protocol`] is the subprotocol the server
    /// would pick from its configured list. The default accepts with it.
    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        Decision::Accept {
            protocol: upgrade.protocol().map(str::to_string),
            headers: Vec::new(),
            subscribe: Vec::new(),
            relay: None,
        }
    }

    /// *Loop thread.* A request that is not a WebSocket upgrade. `None` answers
    /// with the standard error (426 Upgrade Required, or what the request broke).
    fn on_http(&self, request: &Request, server: &ServerHandle) -> Option<HttpResponse> {
        let _ = (request, server);
        None
    }

    /// The connection is open. Broadcasts reach it once this returns, so
    /// what this sends arrives before any broadcast.
    fn on_open(&self, conn: &Conn, request: &Request) {
        let _ = (conn, request);
    }

    /// A complete message arrived.
    fn on_message(&self, conn: &Conn, message: Message);

    /// A complete message arrived, lent for the call instead of handed
    /// over. With [`Dispatch::Inline`](super::Dispatch::Inline), a small
    /// message (a whole frame of at most
    /// [`LENT_MESSAGE_MAX`](crate::protocol::LENT_MESSAGE_MAX) bytes) comes
    /// here, read where it lies in the loop's buffer: nothing is allocated
    /// or copied to hand it over. Every other message (with worker
    /// dispatch, a large, fragmented or compressed one) goes to
    /// [`on_message`](Self::on_message) as before.
    ///
    /// A handler that only reads its messages (an echo, a router, a parser)
    /// implements this too, doing what `on_message` does with the same
    /// message; a reply with [`Conn::send`] is then copied once, straight
    /// into the connection's queue. The default copies the bytes into a
    /// [`Message`] and calls `on_message`.
    fn on_message_lent(&self, conn: &Conn, kind: MessageKind, data: &[u8]) {
        self.on_message(conn, Message::copied(kind, data));
    }

    /// The connection closed: `code` is the peer's close code (1005 when its
    /// close frame had none), ours when we failed it (1002, 1007, 1009 ...),
    /// ours when we started the close and the peer never answered (1008 for
    /// backpressure or a rate limit, 1001 for the idle timeout or a shutdown,
    /// the application's own code), or 1006 when it ended without a close
    /// frame. Called exactly once per opened connection.
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

    fn on_message_lent(&self, conn: &Conn, kind: MessageKind, data: &[u8]) {
        conn.send(kind, data);
    }
}
