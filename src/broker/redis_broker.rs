//! [`RedisBroker`]: the node's pub/sub across nodes over Redis.
//!
//! One Redis channel per topic (`{prefix}topic:{name}`) and one for
//! broadcasts (`{prefix}broadcast`), as Centrifugo, socket.io's adapter and
//! ActionCable do. Two connections: one that only PUBLISHes (a thread with
//! a queue bounded in bytes, batches pipelined), one that only SUBSCRIBEs
//! (a thread that owns it, a thread that reads it).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::counters::Counters;
use super::envelope::Envelope;
use super::redis_link::RedisLink;
use super::redis_publisher::{Backoff, Outbound, PublishQueue, Publisher};
use super::redis_subscriber::{Control, Subscriber};
use super::{Broker, BrokerHealth, BrokerStats, RemoteSink, Target};
use crate::protocol::MessageKind;

/// How a node reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`.
    pub url: String,
    /// Prefix of every Redis channel name, so several deployments can share
    /// one Redis. Default `sockwave:`.
    pub prefix: String,
    /// How long a topic stays subscribed after its last local subscriber
    /// left, so clients that leave and come back do not make the node
    /// UNSUBSCRIBE and SUBSCRIBE again each time. Default 2 s.
    pub unsubscribe_grace: Duration,
    /// Bytes of messages that may wait for the publishing connection; past
    /// it, publishes to other nodes are lost (and counted). Default 64 MiB.
    pub max_pending_bytes: usize,
    /// The longest wait between reconnect attempts (they start at 50 ms and
    /// double). Default 2 s.
    pub max_reconnect_delay: Duration,
}

impl RedisConfig {
    /// Redis at `url`, everything else by default.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            prefix: "sockwave:".into(),
            unsubscribe_grace: Duration::from_secs(2),
            max_pending_bytes: 64 << 20,
            max_reconnect_delay: Duration::from_secs(2),
        }
    }
}

/// A [`Broker`] over Redis pub/sub. Make one per server with
/// [`RedisBroker::new`] and put it in `Config::broker`.
pub struct RedisBroker {
    config: RedisConfig,
    link: RedisLink,
    /// This node's id in every envelope it publishes.
    node: u64,
    counters: Arc<Counters>,
    queue: PublishQueue,
    control: Sender<Control>,
    /// Taken by `start`.
    parts: Mutex<Option<Parts>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
}

/// What `start` hands to the threads.
struct Parts {
    publish_rx: Receiver<Outbound>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    control_rx: Receiver<Control>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("address", &self.link.address())
            .field("prefix", &self.config.prefix)
            .field("node", &format_args!("{:016x}", self.node))
            .finish()
    }
}

impl RedisBroker {
    /// A broker for Redis as `config` says; nothing connects until the
    /// server starts. Fails only on a URL it cannot use.
    pub fn new(config: RedisConfig) -> io::Result<Arc<RedisBroker>> {
        let link = RedisLink::parse(&config.url)?;
        let (queue, publish_rx, pending) = PublishQueue::new(config.max_pending_bytes);
        let (control, control_rx) = crossbeam_channel::unbounded();
        Ok(Arc::new(RedisBroker {
            node: RandomState::new().build_hasher().finish(),
            link,
            counters: Arc::default(),
            queue,
            control,
            parts: Mutex::new(Some(Parts {
                publish_rx,
                pending,
                control_rx,
            })),
            threads: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            config,
        }))
    }

    /// This node's id, as its envelopes carry it.
    pub fn node_id(&self) -> u64 {
        self.node
    }

    fn channel(&self, target: Target<'_>) -> Vec<u8> {
        let prefix = self.config.prefix.as_bytes();
        match target {
            Target::Broadcast => [prefix, b"broadcast"].concat(),
            Target::Topic(t) => [prefix, b"topic:", t.as_bytes()].concat(),
        }
    }
}

impl Broker for RedisBroker {
    fn start(&self, sink: Arc<dyn RemoteSink>) -> io::Result<()> {
        let Some(parts) = self.parts.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this RedisBroker already serves a server",
            ));
        };
        let max_delay = self.config.max_reconnect_delay;
        let publisher = Publisher {
            link: self.link.clone(),
            rx: parts.publish_rx,
            pending: parts.pending,
            counters: Arc::clone(&self.counters),
            backoff: Backoff::new(max_delay),
        };
        let subscriber = Subscriber::new(
            self.link.clone(),
            (self.control.clone(), parts.control_rx),
            Arc::clone(&self.counters),
            sink,
            self.node,
            self.config.prefix.clone().into_bytes(),
            self.config.unsubscribe_grace,
            Backoff::new(max_delay),
            self.channel(Target::Broadcast),
        );
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.push(
            std::thread::Builder::new()
                .name("sockwave-redis-pub".into())
                .spawn(move || publisher.run())?,
        );
        threads.push(
            std::thread::Builder::new()
                .name("sockwave-redis-sub".into())
                .spawn(move || subscriber.run())?,
        );
        Ok(())
    }

    fn publish(&self, target: Target<'_>, kind: MessageKind, payload: &[u8], exclude: Option<u64>) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        if !self.counters.publisher_up.load(Ordering::Acquire) {
            Counters::add(&self.counters.lost, 1);
            return;
        }
        let envelope = Envelope::new(kind, self.node, exclude, payload).encode();
        if !self.queue.push(self.channel(target), envelope) {
            Counters::add(&self.counters.lost, 1);
        }
    }

    fn subscribe(&self, topic: &str) {
        let _ = self
            .control
            .send(Control::Subscribe(self.channel(Target::Topic(topic))));
    }

    fn unsubscribe(&self, topic: &str) {
        let _ = self
            .control
            .send(Control::Unsubscribe(self.channel(Target::Topic(topic))));
    }

    fn health(&self) -> BrokerHealth {
        let c = &self.counters;
        match (
            c.publisher_up.load(Ordering::Acquire),
            c.subscriber_up.load(Ordering::Acquire),
        ) {
            (true, true) => BrokerHealth::Healthy,
            (false, _) => BrokerHealth::Degraded(format!(
                "redis at {} unreachable for publishing",
                self.link.address()
            )),
            (true, false) => BrokerHealth::Degraded(format!(
                "subscriptions at redis {} not in place",
                self.link.address()
            )),
        }
    }

    fn stats(&self) -> BrokerStats {
        self.counters.snapshot()
    }

    fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.queue.stop();
        let _ = self.control.send(Control::Stop);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        self.counters.publisher_up.store(false, Ordering::Release);
        self.counters.subscriber_up.store(false, Ordering::Release);
    }
}
