//! The subscription connection: one thread owns it (the node's wanted
//! channels, SUBSCRIBE and UNSUBSCRIBE with a grace period, reconnects with
//! backoff, the health it reports), another only reads it.
//!
//! The reading thread never blocks on anything but the socket: what it
//! reads goes to the [`RemoteSink`], which never blocks either (the loops'
//! fan-out queues are bounded and count what they refuse). So a node whose
//! clients read slowly still drains Redis at Redis's pace, and Redis never
//! disconnects it for a full client output buffer.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::counters::Counters;
use super::envelope::{now_us, Envelope};
use super::redis_link::RedisLink;
use super::redis_publisher::Backoff;
use super::{RemoteSink, Target};

/// How long Redis may take to confirm subscriptions or answer a PING
/// before the connection is given up as hung.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A PING on an otherwise quiet subscription connection this often, so a
/// Redis that went away without a reset is noticed.
const PING_EVERY: Duration = Duration::from_secs(10);
/// (origin, channel) pairs whose last sequence number a reader keeps.
const MAX_TRACKED: usize = 1 << 16;

/// What the owning thread is told.
pub(crate) enum Control {
    Subscribe(Vec<u8>),
    Unsubscribe(Vec<u8>),
    /// Redis confirmed a SUBSCRIBE (`true`) or UNSUBSCRIBE of a channel.
    Confirmed {
        epoch: u64,
        channel: Vec<u8>,
        subscribed: bool,
    },
    Pong {
        epoch: u64,
    },
    /// The connection of `epoch` failed.
    Lost {
        epoch: u64,
        why: String,
    },
    Stop,
}

/// One connection to Redis and its reading thread.
struct Link {
    epoch: u64,
    stream: TcpStream,
    reader: JoinHandle<()>,
    /// Since when an answer (a confirmation, a PONG) is awaited.
    awaiting: Option<Instant>,
    last_ping: Instant,
}

/// The owning thread's state.
pub(crate) struct Subscriber {
    pub(crate) link_to: RedisLink,
    pub(crate) rx: Receiver<Control>,
    pub(crate) tx: Sender<Control>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) sink: Arc<dyn RemoteSink>,
    pub(crate) node: u64,
    pub(crate) prefix: Vec<u8>,
    pub(crate) grace: Duration,
    pub(crate) backoff: Backoff,
    /// Channels the node wants (the broadcast channel always).
    pub(crate) wanted: HashSet<Vec<u8>>,
    confirmed: HashSet<Vec<u8>>,
    /// Channels no longer wanted, still subscribed until the grace ends.
    leaving: HashMap<Vec<u8>, Instant>,
    link: Option<Link>,
    epoch: u64,
    next_attempt: Instant,
    sequences: Arc<Mutex<Sequences>>,
}

impl Subscriber {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        link_to: RedisLink,
        (tx, rx): (Sender<Control>, Receiver<Control>),
        counters: Arc<Counters>,
        sink: Arc<dyn RemoteSink>,
        node: u64,
        prefix: Vec<u8>,
        grace: Duration,
        backoff: Backoff,
        broadcast_channel: Vec<u8>,
    ) -> Subscriber {
        Subscriber {
            link_to,
            rx,
            tx,
            counters,
            sink,
            node,
            prefix,
            grace,
            backoff,
            wanted: HashSet::from([broadcast_channel]),
            confirmed: HashSet::new(),
            leaving: HashMap::new(),
            link: None,
            epoch: 0,
            next_attempt: Instant::now(),
            sequences: Arc::default(),
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            if self.link.is_none() && Instant::now() >= self.next_attempt {
                self.connect();
            }
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(Control::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(control) => self.handle(control),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.on_time(Instant::now());
            self.update_health();
        }
        if let Some(link) = self.link.take() {
            let _ = link.stream.shutdown(Shutdown::Both);
            let _ = link.reader.join();
        }
    }

    fn handle(&mut self, control: Control) {
        match control {
            Control::Subscribe(channel) => {
                let still_subscribed = self.leaving.remove(&channel).is_some();
                if self.wanted.insert(channel.clone()) && !still_subscribed {
                    self.write(&[channel], "SUBSCRIBE");
                }
            }
            Control::Unsubscribe(channel) if self.wanted.remove(&channel) => {
                self.leaving.insert(channel, Instant::now() + self.grace);
            }
            Control::Confirmed {
                epoch,
                channel,
                subscribed,
            } if self.is_current(epoch) => {
                if subscribed {
                    self.confirmed.insert(channel);
                } else {
                    self.confirmed.remove(&channel);
                }
                self.answered();
            }
            Control::Pong { epoch } if self.is_current(epoch) => self.answered(),
            Control::Lost { epoch, why } if self.is_current(epoch) => self.drop_link(&why),
            _ => {}
        }
    }

    fn is_current(&self, epoch: u64) -> bool {
        self.link.as_ref().is_some_and(|l| l.epoch == epoch)
    }

    /// Something awaited came; keep waiting only for what is still missing.
    fn answered(&mut self) {
        let all = self.all_confirmed();
        if let Some(link) = &mut self.link {
            if all {
                link.awaiting = None;
            }
        }
    }

    fn all_confirmed(&self) -> bool {
        self.wanted.iter().all(|c| self.confirmed.contains(c))
    }

    /// The earliest of: the next reconnect, the end of a grace period, a
    /// ping or answer deadline.
    fn next_deadline(&self) -> Instant {
        let mut at = Instant::now() + PING_EVERY;
        match &self.link {
            None => at = at.min(self.next_attempt),
            Some(link) => {
                at = at.min(link.last_ping + PING_EVERY);
                if let Some(since) = link.awaiting {
                    at = at.min(since + ANSWER_TIMEOUT);
                }
            }
        }
        self.leaving.values().fold(at, |a, &t| a.min(t))
    }

    fn on_time(&mut self, now: Instant) {
        let due: Vec<Vec<u8>> = self
            .leaving
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(c, _)| c.clone())
            .collect();
        for c in &due {
            self.leaving.remove(c);
        }
        if !due.is_empty() {
            self.write(&due, "UNSUBSCRIBE");
        }
        let Some(link) = &mut self.link else { return };
        if link
            .awaiting
            .is_some_and(|since| now >= since + ANSWER_TIMEOUT)
        {
            self.drop_link("redis did not answer within 5s");
        } else if now >= link.last_ping + PING_EVERY {
            link.last_ping = now;
            link.awaiting.get_or_insert(now);
            self.write(&[], "PING");
        }
    }

    fn update_health(&self) {
        let healthy = self.link.is_some() && self.all_confirmed();
        self.counters
            .subscriber_up
            .store(healthy, Ordering::Release);
    }

    /// Writes one command for `channels`; a failed write drops the link.
    fn write(&mut self, channels: &[Vec<u8>], command: &str) {
        let Some(link) = &mut self.link else { return };
        let mut cmd = redis::cmd(command);
        for c in channels {
            cmd.arg(&**c);
        }
        link.awaiting.get_or_insert_with(Instant::now);
        if let Err(e) = link.stream.write_all(&cmd.get_packed_command()) {
            self.drop_link(&format!("writing {command}: {e}"));
        }
    }

    fn connect(&mut self) {
        let (stream, reading) = match self
            .link_to
            .connect_raw()
            .and_then(|s| Ok((s.try_clone()?, s)))
        {
            Ok((reading, stream)) => (stream, reading),
            Err(e) => return self.retry_later(&e.to_string()),
        };
        self.epoch += 1;
        let reader = Reader {
            epoch: self.epoch,
            tx: self.tx.clone(),
            counters: Arc::clone(&self.counters),
            sink: Arc::clone(&self.sink),
            node: self.node,
            prefix: self.prefix.clone(),
            expect_auth: self.link_to.sends_auth(),
            sequences: Arc::clone(&self.sequences),
        };
        let spawned = std::thread::Builder::new()
            .name("sockwave-redis-read".into())
            .spawn(move || reader.run(reading));
        let reader = match spawned {
            Ok(r) => r,
            Err(e) => {
                log::error!("broker: cannot start the redis reader thread: {e}");
                self.next_attempt = Instant::now() + self.backoff.delay();
                return;
            }
        };
        if self.epoch > 1 {
            Counters::add(&self.counters.reconnects, 1);
        }
        let now = Instant::now();
        self.link = Some(Link {
            epoch: self.epoch,
            stream,
            reader,
            awaiting: Some(now),
            last_ping: now,
        });
        self.confirmed.clear();
        // Everything wanted, and what is leaving (it is still wanted until
        // its grace ends), in one command.
        let mut all: Vec<Vec<u8>> = self.wanted.iter().cloned().collect();
        all.extend(self.leaving.keys().cloned());
        self.write(&all, "SUBSCRIBE");
        if self.link.is_some() {
            self.backoff.succeeded("subscription", &self.link_to);
        }
    }

    /// Logs why the link is down and schedules the next attempt.
    fn retry_later(&mut self, why: &str) {
        self.backoff.failed("subscription", &self.link_to, why);
        self.next_attempt = Instant::now() + self.backoff.delay();
    }

    fn drop_link(&mut self, why: &str) {
        if let Some(link) = self.link.take() {
            let _ = link.stream.shutdown(Shutdown::Both);
            // The reader ends on the shut socket; not joined here so a slow
            // sink cannot hold up the owner.
            drop(link.reader);
        }
        self.confirmed.clear();
        self.counters.subscriber_up.store(false, Ordering::Release);
        self.backoff.failed("subscription", &self.link_to, why);
        self.next_attempt = Instant::now() + self.backoff.delay();
    }
}

/// The reading thread of one connection.
struct Reader {
    epoch: u64,
    tx: Sender<Control>,
    counters: Arc<Counters>,
    sink: Arc<dyn RemoteSink>,
    node: u64,
    prefix: Vec<u8>,
    expect_auth: bool,
    /// Shared by the readers of successive connections, so messages missed
    /// while the link was down show as a gap on the next one.
    sequences: Arc<Mutex<Sequences>>,
}

impl Reader {
    fn run(mut self, stream: TcpStream) {
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut parser = redis::Parser::new();
        let why = loop {
            let value = match parser.parse_value(&mut reader) {
                Ok(v) => v,
                Err(e) if e.is_io_error() => break format!("connection lost: {e}"),
                Err(e) => break format!("redis answered something that is not RESP: {e}"),
            };
            if let Err(why) = self.on_value(value) {
                break why;
            }
        };
        let _ = self.tx.send(Control::Lost {
            epoch: self.epoch,
            why,
        });
    }

    fn on_value(&mut self, value: redis::Value) -> Result<(), String> {
        use redis::Value;
        let items = match value {
            Value::Array(items) | Value::Push { data: items, .. } => items,
            Value::Okay if self.expect_auth => {
                self.expect_auth = false;
                return Ok(());
            }
            Value::ServerError(e) => return Err(format!("redis refused: {e:?}")),
            other => return Err(format!("unexpected reply from redis: {other:?}")),
        };
        let bytes = |v: &Value| match v {
            Value::BulkString(b) => Some(b.clone()),
            Value::SimpleString(s) => Some(s.clone().into_bytes()),
            _ => None,
        };
        let kind = items.first().and_then(bytes).unwrap_or_default();
        match (&kind[..], items.get(1), items.get(2)) {
            (b"message", Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) => {
                self.on_message(channel, payload);
            }
            (b"subscribe" | b"unsubscribe", Some(channel), _) => {
                let channel = bytes(channel).unwrap_or_default();
                let subscribed = kind == b"subscribe";
                if !subscribed {
                    self.sequences().forget(&channel);
                }
                let _ = self.tx.send(Control::Confirmed {
                    epoch: self.epoch,
                    channel,
                    subscribed,
                });
            }
            (b"pong", _, _) => {
                let _ = self.tx.send(Control::Pong { epoch: self.epoch });
            }
            _ => return Err(format!("unexpected reply from redis: {items:?}")),
        }
        Ok(())
    }

    fn on_message(&mut self, channel: &[u8], payload: &[u8]) {
        let counters = &*self.counters;
        let Ok(env) = Envelope::decode(payload) else {
            Counters::add(&counters.malformed, 1);
            return;
        };
        if env.origin == self.node {
            return; // served locally when it was published
        }
        let Some(name) = channel.strip_prefix(&self.prefix[..]) else {
            Counters::add(&counters.malformed, 1);
            return;
        };
        let target = match name {
            b"broadcast" => Target::Broadcast,
            _ => match name.strip_prefix(b"topic:").map(std::str::from_utf8) {
                Some(Ok(topic)) => Target::Topic(topic),
                _ => {
                    Counters::add(&counters.malformed, 1);
                    return;
                }
            },
        };
        Counters::add(&counters.received, 1);
        let missed = self.sequences().seen(channel, env.origin, env.sequence);
        Counters::add(&counters.missed, missed);
        counters.record_latency(now_us().saturating_sub(env.sent_at_us));
        if !self.sink.deliver(target, env.kind, env.payload) {
            Counters::add(&counters.dropped, 1);
        }
    }

    fn sequences(&self) -> std::sync::MutexGuard<'_, Sequences> {
        self.sequences.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The last sequence number seen per channel and origin.
#[derive(Debug, Default)]
struct Sequences {
    by_channel: HashMap<Vec<u8>, HashMap<u64, u64>>,
    tracked: usize,
}

impl Sequences {
    /// Records `sequence` from `origin` on `channel`; returns how many of
    /// that origin's messages on the channel came between the last one seen
    /// and this one. A number that goes back is a restart of the origin's
    /// numbering, not a gap; the first one seen sets where counting starts.
    fn seen(&mut self, channel: &[u8], origin: u64, sequence: u64) -> u64 {
        if self.tracked >= MAX_TRACKED {
            self.by_channel.clear();
            self.tracked = 0;
        }
        let by_origin = match self.by_channel.get_mut(channel) {
            Some(m) => m,
            None => self.by_channel.entry(channel.to_vec()).or_default(),
        };
        match by_origin.insert(origin, sequence) {
            Some(last) if sequence > last => sequence - last - 1,
            Some(_) => 0,
            None => {
                self.tracked += 1;
                0
            }
        }
    }

    /// The node left `channel`: a later subscription starts counting afresh.
    fn forget(&mut self, channel: &[u8]) {
        if let Some(m) = self.by_channel.remove(channel) {
            self.tracked -= m.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_counted_per_channel_and_origin() {
        let mut s = Sequences::default();
        assert_eq!(s.seen(b"a", 1, 5), 0, "the first sets the start");
        assert_eq!(s.seen(b"a", 1, 6), 0);
        assert_eq!(s.seen(b"a", 1, 9), 2);
        assert_eq!(s.seen(b"a", 2, 1), 0, "another origin");
        assert_eq!(s.seen(b"b", 1, 1), 0, "another channel");
        assert_eq!(s.seen(b"a", 1, 1), 0, "a restart is no gap");
        s.forget(b"a");
        assert_eq!(s.tracked, 1);
        assert_eq!(s.seen(b"a", 1, 50), 0, "forgotten: counting starts again");
    }
}
