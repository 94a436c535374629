//! [`Conn`]: a handle to one connection, usable from any thread.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::command::Command;
use super::conn_inner::ConnInner;
use super::lent_queue;
use super::prepared::{prepare, Prepared};
use super::send_status::Refused;

/// The most payload a control frame (ping, pong, close) may carry.
const MAX_CONTROL_PAYLOAD: usize = 125;
use super::send_status::PayloadTooLong;
use super::server_state::ServerState;
use super::{ConnId, SendStatus};
use crate::protocol::close::code;
use crate::protocol::MessageKind;

/// A handle to one connection: cheap to clone, usable from any thread, valid
/// after the connection closes (sends then report `Dropped(Closed)`).
///
/// Every send is ordered after the earlier sends of the same thread to the
/// same connection, and reports [`SendStatus`] at once: the bytes go out
/// from the connection's event loop.
#[derive(Clone)]
pub struct Conn {
    pub(crate) inner: Arc<ConnInner>,
    pub(crate) server: Arc<ServerState>,
}

/// Why [`Conn::subscribe`] or [`Conn::unsubscribe`] did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubscriptionRefused {
    /// The name is longer than `Config::max_topic_length`.
    NameTooLong,
    /// Too many of the connection's subscribes and unsubscribes wait for
    /// its loop.
    QueueFull,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("id", &self.inner.id).finish()
    }
}

impl Conn {
    /// The connection's id: stable for its life, never reused for another.
    pub fn id(&self) -> ConnId {
        self.inner.id
    }

    /// The subprotocol chosen during the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.inner.protocol()
    }

    /// The peer's address as the socket reported it at the upgrade.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer()
    }

    /// Keeps `value` with the connection (replacing what was kept): the
    /// application's own state for it, so a handler need not look it up in a
    /// table of its own. Any thread. Dropped with the connection's last
    /// handle (after `on_close`). See also [`Upgrade::set_data`](super::Upgrade::set_data).
    pub fn set_data<T: Any + Send + Sync>(&self, value: T) {
        self.inner.set_data(Some(Arc::new(value)));
    }

    /// Drops what [`Conn::set_data`] kept.
    pub fn clear_data(&self) {
        self.inner.set_data(None);
    }

    /// What [`Conn::set_data`] (or [`Upgrade::set_data`](super::Upgrade::set_data))
    /// kept, if it is a `T`.
    pub fn data<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.inner.data()?.downcast::<T>().ok()
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

    /// Sends a text message.
    pub fn send_text(&self, text: &str) -> SendStatus {
        self.send(MessageKind::Text, text.as_bytes())
    }

    /// Sends a binary message.
    pub fn send_binary(&self, data: &[u8]) -> SendStatus {
        self.send(MessageKind::Binary, data)
    }

    /// Sends a message, copying `data` once into the frame (or compressing it).
    pub fn send(&self, kind: MessageKind, data: &[u8]) -> SendStatus {
        self.send_prepared(kind, Cow::Borrowed(data))
    }

    /// Sends a message whose bytes the caller gives up: no copy when it goes
    /// out uncompressed.
    pub fn send_owned(&self, kind: MessageKind, data: Vec<u8>) -> SendStatus {
        self.send_prepared(kind, Cow::Owned(data))
    }

    fn send_prepared(&self, kind: MessageKind, data: Cow<'_, [u8]>) -> SendStatus {
        if lent_queue::is_lent(self.inner.id) {
            return self.send_lent(kind, data);
        }
        self.reserve_then(data.len(), |accounted| {
            let opts = &self.server.config.protocol.deflate;
            Command::Send {
                id: self.inner.id,
                message: prepare(kind, data, self.inner.encoding, opts).into_owned(),
                accounted,
            }
        })
    }

    /// An inline handler's send to the connection it was called for, whose
    /// queue the loop lent this thread (see `lent_queue`): straight into
    /// the queue when nothing sent before still waits, else as any send.
    #[inline(always)]
    fn send_lent(&self, kind: MessageKind, data: Cow<'_, [u8]>) -> SendStatus {
        let accounted = data.len();
        let buffered = match self.reserve(accounted) {
            Ok(buffered) => buffered,
            Err(status) => return status,
        };
        let id = self.inner.id;
        let opts = &self.server.config.protocol.deflate;
        if self.inner.encoding.is_plain_for(accounted, opts)
            && self.server.append_reply(id, kind, &data)
        {
            if let Cow::Owned(v) = data {
                crate::buffer_pool::give(v);
            }
            return SendStatus::Buffered(buffered);
        }
        let message = match prepare(kind, data, self.inner.encoding, opts) {
            Prepared::Frame(frame) => match self.server.push_reply(id, frame, accounted) {
                Ok(()) => return SendStatus::Buffered(buffered),
                Err(frame) => Prepared::Frame(frame),
            },
            other => other.into_owned(),
        };
        self.command(Command::Send {
            id,
            message,
            accounted,
        });
        SendStatus::Buffered(buffered)
    }

    /// Reserves `len` bytes under the cap and hands the loop the command
    /// made for them, or applies the backpressure policy.
    fn reserve_then(&self, len: usize, command: impl FnOnce(usize) -> Command) -> SendStatus {
        match self.reserve(len) {
            Ok(buffered) => {
                self.command(command(len));
                SendStatus::Buffered(buffered)
            }
            Err(status) => status,
        }
    }

    /// Reserves `len` bytes under the cap (what is buffered then), or
    /// applies the backpressure policy and says what became of the send.
    #[inline(always)]
    fn reserve(&self, len: usize) -> Result<usize, SendStatus> {
        let server = &*self.server;
        self.inner
            .reserve(len, &server.config, &server.stats)
            .map_err(|refused| {
                if refused == Refused::MustClose {
                    self.command(Command::Close {
                        id: self.inner.id,
                        code: code::POLICY_VIOLATION,
                        reason: "send buffer full".into(),
                    });
                }
                refused.status()
            })
    }

    /// Sends a ping. Its payload may carry at most 125 bytes (RFC 6455
    /// 5.5); a longer one is refused, not cut, as the C API does. The ping's
    /// frame counts in the buffered amount until it is written, under the
    /// same cap and policy as a message, so pings sent faster than the peer
    /// reads cannot grow the server's memory either.
    pub fn ping(&self, payload: &[u8]) -> Result<SendStatus, PayloadTooLong> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(PayloadTooLong);
        }
        Ok(
            self.reserve_then(2 + payload.len(), |accounted| Command::Ping {
                id: self.inner.id,
                payload: payload.to_vec(),
                accounted,
            }),
        )
    }

    /// Subscribes the connection to `topic` (see [`ServerHandle::publish`](super::ServerHandle::publish)).
    /// Ordered with this connection's sends: a publish after this call
    /// reaches it. False (nothing done) when 1,024 subscribes and
    /// unsubscribes of this connection are already waiting for its loop: a
    /// thread that subscribes in a tight loop cannot grow the loop's queue
    /// without bound. Also false (nothing done, counted in
    /// [`Stats::subscriptions_refused`](super::Stats::subscriptions_refused))
    /// for a name longer than
    /// [`Config::max_topic_length`](super::Config::max_topic_length). A
    /// connection already in
    /// [`Config::max_subscriptions`](super::Config::max_subscriptions)
    /// topics is not subscribed: its loop drops the subscription and counts
    /// it.
    pub fn subscribe(&self, topic: &str) -> bool {
        self.subscription(topic, true).is_ok()
    }

    /// Undoes [`Conn::subscribe`]; a publish after this call does not reach
    /// it. False as [`Conn::subscribe`] is (a name too long to subscribe to
    /// is not counted: there is nothing to undo).
    pub fn unsubscribe(&self, topic: &str) -> bool {
        self.subscription(topic, false).is_ok()
    }

    /// Hands the loop a subscribe (or an unsubscribe) of `topic`, within
    /// the bounds, or says which one it is past.
    pub(crate) fn subscription(
        &self,
        topic: &str,
        subscribe: bool,
    ) -> Result<(), SubscriptionRefused> {
        if !self.server.config.topic_fits(topic) {
            if subscribe {
                let stats = &self.server.stats;
                stats.subscriptions_refused.fetch_add(1, Ordering::Relaxed);
            }
            return Err(SubscriptionRefused::NameTooLong);
        }
        if !self.inner.reserve_subscription() {
            return Err(SubscriptionRefused::QueueFull);
        }
        let (id, topic) = (self.inner.id, topic.into());
        self.command(if subscribe {
            Command::Subscribe { id, topic }
        } else {
            Command::Unsubscribe { id, topic }
        });
        Ok(())
    }

    /// Starts the closing handshake with `code` and `reason` (cut to 123
    /// bytes). A code that may not be sent on the wire goes out as 1000.
    /// Only the first close of a connection counts; later ones do nothing.
    pub fn close(&self, code: u16, reason: &str) {
        if self.inner.open.swap(false, Ordering::AcqRel) {
            self.command(Command::Close {
                id: self.inner.id,
                code,
                reason: reason.into(),
            });
        }
    }

    fn command(&self, command: Command) {
        self.server.command(self.inner.id, command);
    }
}
