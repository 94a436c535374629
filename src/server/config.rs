//! Server configuration with the defaults a production deployment would pick.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::rate_limit::RateLimit;
use super::trusted_proxies::TrustedProxies;
use crate::broker::Broker;
use crate::protocol::ProtocolConfig;

/// What to do when a connection's unsent bytes would exceed
/// [`Config::max_buffered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackpressurePolicy {
    /// Drop the message that does not fit; the connection stays open.
    Drop,
    /// Close the connection with 1008 (policy violation). A slow client then
    /// reconnects and resynchronises instead of silently missing messages.
    Close,
}

/// Where the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// On this many worker threads (0: one per core), the default: handlers
    /// may block without stalling other connections' I/O. A connection's
    /// events always go to the same worker, in order.
    Workers(usize),
    /// On the event loop thread itself: no hand-off between threads, for
    /// handlers that never block.
    Inline,
}

/// Everything the server can be told. `Config::default()` listens on
/// 127.0.0.1:9001 with one event loop and one worker per core.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on (port 0: the kernel picks one; see
    /// `ServerHandle::local_addr`).
    pub listen: SocketAddr,
    /// Event loops (each a thread with its own SO_REUSEPORT listener); 0 = one per core.
    pub threads: usize,
    /// Where the handler runs.
    pub dispatch: Dispatch,
    /// Open sockets beyond this get `503 Service Unavailable` before the upgrade.
    pub max_connections: usize,
    /// Frame and message limits, handshake limits, timeouts.
    pub protocol: ProtocolConfig,
    /// Per-connection cap on bytes accepted for sending but not yet taken by the kernel.
    /// One message is always accepted into an empty buffer, so the bound is this plus one message.
    pub max_buffered: usize,
    /// What happens to a message that would pass `max_buffered`.
    pub backpressure: BackpressurePolicy,
    /// Payload bytes of broadcasts and publishes that may wait in one loop's
    /// channel for the loop to take them; past it, a broadcast is refused for
    /// that loop (`ServerHandle::broadcast` returns false). One always fits.
    pub max_pending_fanout: usize,
    /// Topics one connection may be subscribed to at once
    /// ([`Conn::subscribe`](super::Conn::subscribe)): each costs the loop
    /// memory, and a handler that subscribes a connection to whatever its
    /// client names would otherwise let one client grow it without bound.
    /// A subscription past it is dropped by the loop and counted in
    /// [`Stats::subscriptions_refused`](super::Stats::subscriptions_refused).
    pub max_subscriptions: usize,
    /// Longest topic name a connection may subscribe to, in bytes: the
    /// loop keeps each topic's name, so without it the limit above would
    /// bound a connection's topics but not their size. A longer one is
    /// refused like a subscription past `max_subscriptions`.
    pub max_topic_length: usize,
    /// Proxies in front of the server whose word about the client's address
    /// it takes (`Conn::peer_addr`, `Upgrade::peer_addr`). None by default.
    pub proxies: TrustedProxies,
    /// How fast clients may send, per connection and per source address.
    /// Off by default.
    pub rate_limit: RateLimit,
    /// Subprotocols the server speaks; the first one in the client's order of preference wins.
    pub subprotocols: Vec<String>,
    /// Allowed `Origin` values (exact, case-insensitive); empty allows any. Others get 403.
    /// The check protects browser users (a page on another site cannot open
    /// a connection in their name); it cannot keep out other clients, which
    /// may send any `Origin` they like.
    pub allowed_origins: Vec<String>,
    /// With `allowed_origins` set: accept requests that carry no `Origin`
    /// at all (browsers always send one; other clients often do not).
    /// `false` (the default) answers them 403 like a foreign origin.
    pub allow_missing_origin: bool,
    /// How long shutdown waits for close handshakes before dropping connections.
    pub shutdown_timeout: Duration,
    /// Bytes of the one read buffer each loop owns.
    pub read_buffer_size: usize,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    pub backlog: i32,
    /// wss://: TLS on every connection (the demo page, /healthz and
    /// /metrics too). `None` (the default) serves plain ws://.
    #[cfg(feature = "tls")]
    pub tls: Option<super::TlsConfig>,
    /// Pub/sub across nodes: publishes and broadcasts also go to the other
    /// nodes of this broker, and theirs come here (for example a
    /// [`RedisBroker`](crate::broker::RedisBroker)). `None` (the default):
    /// this node alone. A broker serves one server.
    pub broker: Option<Arc<dyn Broker>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            threads: 0,
            dispatch: Dispatch::Workers(0),
            max_connections: 100_000,
            protocol: ProtocolConfig::default(),
            max_buffered: 4 << 20,
            backpressure: BackpressurePolicy::Close,
            max_pending_fanout: 64 << 20,
            max_subscriptions: 1024,
            max_topic_length: 256,
            rate_limit: RateLimit::default(),
            proxies: TrustedProxies::default(),
            subprotocols: Vec::new(),
            allowed_origins: Vec::new(),
            allow_missing_origin: false,
            shutdown_timeout: Duration::from_secs(5),
            read_buffer_size: 256 * 1024,
            backlog: 65_535,
            #[cfg(feature = "tls")]
            tls: None,
            broker: None,
        }
    }
}

impl Config {
    pub(crate) fn loop_count(&self) -> usize {
        if self.threads == 0 {
            cores()
        } else {
            self.threads
        }
    }

    /// Whether a connection may subscribe to a topic of this name
    /// ([`Config::max_topic_length`]): the one rule for a subscribe from any
    /// thread and for the topics an upgrade decision lists.
    pub(crate) fn topic_fits(&self, topic: &str) -> bool {
        topic.len() <= self.max_topic_length
    }

    /// Sockets the server may hold at most: max_connections, plus the ones
    /// accepted past it only to be answered 503 (see `EventLoop::add_conn`).
    pub(crate) fn max_sockets(&self) -> usize {
        self.max_connections
            .saturating_add(self.max_connections / 8)
            .saturating_add(64)
    }

    /// Connection slots each loop reserves address space for up front, so
    /// its tables never grow by copying: a copy leaves the old table's pages
    /// resident, which showed as up to ~100 bytes per idle connection. The
    /// pages are only touched (and resident) as slots are used. Capped at
    /// 262,144 slots (~60 MB of address space per loop); past that, tables grow.
    pub(crate) fn reserved_slots(&self) -> usize {
        self.max_sockets().min(1 << 18)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
