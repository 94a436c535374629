//! [`ServerHandle`]: a running server, controlled from any thread.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::command::Command;
use super::mailbox::LoopGauges;
use super::prepared::PreparedMessage;
use super::server_state::ServerState;
use super::{Config, Conn, ConnId, DropReason, Latencies, SendStatus, StatsSnapshot};
use crate::broker::{BrokerHealth, BrokerStats, Target};
use crate::protocol::MessageKind;

/// Controls a running server from any thread. Cloning is cheap; every clone
/// controls the same server.
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<ServerState>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.state.local_addr)
            .finish()
    }
}

impl ServerHandle {
    pub(crate) fn new(state: Arc<ServerState>) -> ServerHandle {
        ServerHandle { state }
    }

    pub(crate) fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// A handle to no running server (no loops, no threads), for unit tests
    /// and fuzz harnesses of the parts that take a handle.
    pub(crate) fn detached(config: Config) -> ServerHandle {
        ServerHandle::detached_with(config, Vec::new())
    }

    /// [`ServerHandle::detached`], with loop mailboxes that no loop reads
    /// (for tests of what the loops' parts send each other).
    pub(crate) fn detached_with(
        config: Config,
        mailboxes: Vec<super::mailbox::Mailbox>,
    ) -> ServerHandle {
        ServerHandle::new(Arc::new(ServerState {
            local_addr: config.listen,
            config,
            mailboxes,
            stats: Default::default(),
            sockets: Default::default(),
            shutting_down: Default::default(),
            threads: Default::default(),
            interest: None,
            ip_limits: Default::default(),
        }))
    }

    /// The address the listeners are bound to (with the port the kernel
    /// picked when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.state.local_addr
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// The server's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot()
    }

    /// The server's latency histograms: handshakes, the wait for a worker,
    /// the wait for the socket.
    pub fn latencies(&self) -> Latencies {
        self.state.stats.latencies()
    }

    /// Each event loop's gauges, by loop index.
    pub fn loop_gauges(&self) -> Vec<LoopGauges> {
        self.state.mailboxes.iter().map(|m| m.gauges()).collect()
    }

    /// A handle to the open connection `id`, if it still is that connection.
    pub fn conn(&self, id: ConnId) -> Option<Conn> {
        self.state.lookup(id).map(|inner| Conn {
            inner,
            server: Arc::clone(&self.state),
        })
    }

    /// Sends a message to connection `id` (see [`Conn::send`]); a stale id
    /// reports `Dropped(Closed)`.
    pub fn send(&self, id: ConnId, kind: MessageKind, data: &[u8]) -> SendStatus {
        match self.conn(id) {
            Some(c) => c.send(kind, data),
            None => SendStatus::Dropped(DropReason::Closed),
        }
    }

    /// Starts the closing handshake of connection `id` (see [`Conn::close`]).
    /// Returns whether `id` named an open connection: `false` for a stale id
    /// or one already closing, so a caller can tell "closed now" from "nothing
    /// to close".
    pub fn close(&self, id: ConnId, code: u16, reason: &str) -> bool {
        match self.conn(id) {
            Some(c) if c.is_open() => {
                c.close(code, reason);
                true
            }
            _ => false,
        }
    }

    /// Sends one message to every open connection. The frame is encoded once
    /// and shared by every loop and recipient; each recipient's cap and
    /// backpressure policy apply. Returns false when a loop refused it
    /// because [`Config::max_pending_fanout`] bytes of broadcasts and
    /// publishes were already waiting for it (counted in
    /// `Stats::dropped_fanout`): a producer faster than the loops can write
    /// is told so instead of growing their queues without bound.
    pub fn broadcast(&self, kind: MessageKind, data: &[u8]) -> bool {
        self.broadcast_except(kind, data, None)
    }

    /// [`ServerHandle::broadcast`] to everyone but `exclude` (say, the sender).
    pub fn broadcast_except(
        &self,
        kind: MessageKind,
        data: &[u8],
        exclude: Option<ConnId>,
    ) -> bool {
        let message = PreparedMessage::new(kind, data);
        let local = self.state.fan_out(&message, || Command::Broadcast {
            message: Arc::clone(&message),
            exclude,
        });
        if let Some(broker) = &self.state.config.broker {
            broker.publish(Target::Broadcast, kind, data, exclude.map(ConnId::as_u64));
        }
        local
    }

    /// Sends one message to every subscriber of `topic` (on every loop) but
    /// `exclude`. The frame is encoded once and shared by all recipients.
    /// Returns false as [`ServerHandle::broadcast`] does.
    pub fn publish(
        &self,
        topic: &str,
        kind: MessageKind,
        data: &[u8],
        exclude: Option<ConnId>,
    ) -> bool {
        let message = PreparedMessage::new(kind, data);
        let shared: Arc<str> = topic.into();
        let local = self.state.fan_out(&message, || Command::Publish {
            topic: Arc::clone(&shared),
            message: Arc::clone(&message),
            exclude,
        });
        if let Some(broker) = &self.state.config.broker {
            broker.publish(
                Target::Topic(topic),
                kind,
                data,
                exclude.map(ConnId::as_u64),
            );
        }
        local
    }

    /// With a broker (`Config::broker`): whether messages cross nodes now.
    /// `None` without one.
    pub fn broker_health(&self) -> Option<BrokerHealth> {
        self.state.config.broker.as_ref().map(|b| b.health())
    }

    /// With a broker: its counters. `None` without one.
    pub fn broker_stats(&self) -> Option<BrokerStats> {
        self.state.config.broker.as_ref().map(|b| b.stats())
    }

    /// Starts a graceful shutdown: stop accepting, close every connection with
    /// 1001, wait up to the shutdown timeout. Returns at once; see [`ServerHandle::join`].
    pub fn shutdown(&self) {
        if !self.state.shutting_down.swap(true, Ordering::AcqRel) {
            self.state.command_all(|| Command::Shutdown);
        }
    }

    /// False once a shutdown has started (from any handle, or a signal in
    /// the binary): the server no longer takes broadcasts and publishes.
    pub fn is_running(&self) -> bool {
        !self.state.shutting_down.load(Ordering::Acquire)
    }

    /// True on one of this server's own loop or worker threads, where
    /// [`ServerHandle::join`] would wait for itself.
    pub fn is_server_thread(&self) -> bool {
        self.state.owns_current_thread()
    }

    /// Waits until every loop and worker thread has exited (after a shutdown).
    /// Any handle may join; the others then return at once. On one of the
    /// server's own threads (a handler) it returns at once without waiting,
    /// since it would wait for itself: shut down there, join elsewhere.
    pub fn join(&self) {
        if self.is_server_thread() {
            log::warn!("ServerHandle::join called on the server's own thread; not waiting");
            return;
        }
        let threads =
            std::mem::take(&mut *self.state.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        if let Some(broker) = &self.state.config.broker {
            broker.stop();
        }
    }

    /// [`ServerHandle::shutdown`], then [`ServerHandle::join`].
    pub fn shutdown_and_join(&self) {
        self.shutdown();
        self.join();
    }
}

// Here rather than in conn.rs, so that the handle and the connection do not
// import each other.
impl Conn {
    /// The server this connection belongs to (a full handle: it can broadcast,
    /// publish, shut down; `join` it only from outside the server's threads).
    pub fn server(&self) -> ServerHandle {
        ServerHandle::new(Arc::clone(&self.server))
    }
}
