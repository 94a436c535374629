//! Pub/sub across nodes: the [`Broker`] interface the server talks to, and
//! [`RedisBroker`], its implementation over Redis pub/sub.
//!
//! N sockwave nodes behind a TCP load balancer behave as one server when
//! each is given a broker: a publish or broadcast on one node is served to
//! its own subscribers at once and handed to the broker, which brings it to
//! every other node; each node then encodes it once and shares that frame
//! with all its local recipients, as a local publish does.
//!
//! | file | concept |
//! | --- | --- |
//! | `mod.rs` | [`Broker`], [`Target`], [`RemoteSink`], [`BrokerHealth`], [`BrokerStats`] |
//! | `envelope.rs` | what travels between nodes: origin, sequence, send time, kind, excluded connection |
//! | `counters.rs` | a broker's counters and its cross-node latency histogram ([`crate::LatencyHistogram`]) |
//! | `redis_broker.rs` | [`RedisBroker`], [`RedisConfig`]: the node's subscriptions and publishes over Redis |
//! | `redis_link.rs` | the Redis address, connect and AUTH |
//! | `redis_publisher.rs` | the publishing connection's thread: batches, pipelined PUBLISH |
//! | `redis_subscriber.rs` | the subscription connection: the thread that owns it, the thread that reads it |
//!
//! Nothing in [`crate::protocol`] knows about any of this; the server only
//! knows the [`Broker`] trait.

// What every broker implementation shares; with none built (no `redis`
// feature) only the public stats types are used.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod counters;
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod envelope;
#[cfg(feature = "redis")]
mod redis_broker;
#[cfg(feature = "redis")]
mod redis_link;
#[cfg(feature = "redis")]
mod redis_publisher;
#[cfg(feature = "redis")]
mod redis_subscriber;

use std::io;
use std::sync::Arc;

pub use crate::latency::LatencyHistogram;
pub use counters::BrokerStats;
#[cfg(feature = "redis")]
pub use redis_broker::{RedisBroker, RedisConfig};

use crate::protocol::MessageKind;

/// Where a message published through a broker goes on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Every open connection (a broadcast).
    Broadcast,
    /// The subscribers of one topic.
    Topic(&'a str),
}

/// What a broker delivers messages from other nodes into: the server. It
/// never blocks; it returns false when the node refused the message (its
/// loops already hold `Config::max_pending_fanout` bytes of fan-out), which
/// the broker counts as dropped.
pub trait RemoteSink: Send + Sync {
    /// One message from another node, for this node's local recipients.
    fn deliver(&self, target: Target<'_>, kind: MessageKind, payload: &[u8]) -> bool;
}

/// The state of a node's link to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerHealth {
    /// Connected, and every topic with a local subscriber is subscribed.
    Healthy,
    /// Local delivery goes on; messages to or from other nodes may be lost
    /// (and are counted). The string says why.
    Degraded(String),
}

/// A message broker that spans nodes. The server calls it from any thread;
/// no call may block on the network.
///
/// The server calls [`Broker::subscribe`] when the node gets its first local
/// subscriber of a topic (on any loop) and [`Broker::unsubscribe`] when the
/// last one leaves; the broker keeps the node's subscriptions (through
/// reconnects) and brings other nodes' messages to the [`RemoteSink`].
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Starts the broker's threads for one server. A broker serves one
    /// server: a second call fails.
    fn start(&self, sink: Arc<dyn RemoteSink>) -> io::Result<()>;
    /// Hands a message to the other nodes (this node has already served its
    /// own recipients). `exclude` is the sender's id on this node. Never
    /// blocks: a message that cannot go now is counted as lost.
    fn publish(&self, target: Target<'_>, kind: MessageKind, payload: &[u8], exclude: Option<u64>);
    /// The node has its first local subscriber of `topic`.
    fn subscribe(&self, topic: &str);
    /// The node's last local subscriber of `topic` left.
    fn unsubscribe(&self, topic: &str);
    /// Whether messages cross nodes now.
    fn health(&self) -> BrokerHealth;
    /// The broker's counters.
    fn stats(&self) -> BrokerStats;
    /// Stops the broker's threads and waits for them. The server calls it
    /// from `ServerHandle::join`.
    fn stop(&self);
}
