//! The publishing connection: one thread that owns it, takes messages from
//! a queue bounded in bytes, and writes them as pipelined PUBLISH batches.
//!
//! One connection written in queue order keeps every publisher's order on
//! every node (Redis delivers a connection's PUBLISHes in order). The
//! thread numbers each message per channel as it writes it, so receivers
//! can count gaps; messages that never reach Redis (refused while it is
//! away, or over the queue's bound) are counted as lost here instead and
//! take no number.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::counters::Counters;
use super::envelope::set_sequence;
use super::redis_link::{RedisLink, CONNECT_TIMEOUT};

/// Messages per pipelined batch, and bytes.
const BATCH_MESSAGES: usize = 512;
const BATCH_BYTES: usize = 1 << 20;
/// Channels whose sequence numbers are kept; past it they start again (a
/// receiver reads a number that goes back as a restart, not a gap).
const MAX_SEQUENCED_CHANNELS: usize = 1 << 16;
/// A PING on the publishing connection after this long without a publish.
const IDLE_PING: Duration = Duration::from_secs(1);
/// How long a PUBLISH batch may wait for its replies.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the queue carries to the publishing thread.
pub(crate) enum Outbound {
    Message { channel: Vec<u8>, envelope: Vec<u8> },
    Stop,
}

/// The sending side of the publish queue, bounded in bytes.
#[derive(Debug)]
pub(crate) struct PublishQueue {
    tx: Sender<Outbound>,
    pending: Arc<AtomicUsize>,
    cap: usize,
}

impl PublishQueue {
    pub(crate) fn new(cap: usize) -> (PublishQueue, Receiver<Outbound>, Arc<AtomicUsize>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pending = Arc::new(AtomicUsize::new(0));
        let queue = PublishQueue {
            tx,
            pending: Arc::clone(&pending),
            cap,
        };
        (queue, rx, pending)
    }

    /// Queues a message; false (nothing queued) when `cap` bytes already
    /// wait. An empty queue always takes one.
    pub(crate) fn push(&self, channel: Vec<u8>, envelope: Vec<u8>) -> bool {
        let len = envelope.len();
        let before = self.pending.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.cap {
            self.pending.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if self
            .tx
            .send(Outbound::Message { channel, envelope })
            .is_err()
        {
            self.pending.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Outbound::Stop);
    }
}

/// The publishing thread: connect, write batches, reconnect with backoff.
pub(crate) struct Publisher {
    pub(crate) link: RedisLink,
    pub(crate) rx: Receiver<Outbound>,
    pub(crate) pending: Arc<AtomicUsize>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) backoff: Backoff,
}

impl Publisher {
    pub(crate) fn run(mut self) {
        let mut sequences: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut ever_up = false;
        loop {
            let mut con = match self.connect() {
                Ok(con) => con,
                Err(why) => {
                    if self.wait_out(&why) {
                        return;
                    }
                    continue;
                }
            };
            if ever_up {
                Counters::add(&self.counters.reconnects, 1);
            }
            ever_up = true;
            self.backoff.succeeded("publishing", &self.link);
            self.counters.publisher_up.store(true, Ordering::Release);
            match self.serve(&mut con, &mut sequences) {
                Served::Stopped => return,
                Served::Failed(why) => {
                    self.counters.publisher_up.store(false, Ordering::Release);
                    if self.wait_out(&why) {
                        return;
                    }
                }
            }
        }
    }

    /// A connection that answers PING: a connect alone proves nothing, a
    /// port that speaks something else must not count as Redis.
    fn connect(&self) -> Result<redis::Connection, String> {
        let mut con = self
            .link
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let _ = con.set_read_timeout(Some(REPLY_TIMEOUT));
        redis::cmd("PING")
            .query::<String>(&mut con)
            .map_err(|e| e.to_string())?;
        Ok(con)
    }

    /// The link failed (`why`): logs it, and waits the backoff's delay
    /// while discarding what was queued. True once told to stop.
    fn wait_out(&mut self, why: &str) -> bool {
        self.backoff.failed("publishing", &self.link, why);
        let delay = self.backoff.delay();
        self.discard_for(delay)
    }

    /// Writes batches until the connection fails or the broker stops.
    fn serve(
        &mut self,
        con: &mut redis::Connection,
        sequences: &mut HashMap<Vec<u8>, u64>,
    ) -> Served {
        loop {
            let first = match self.rx.recv_timeout(IDLE_PING) {
                Ok(first) => first,
                Err(RecvTimeoutError::Disconnected) => return Served::Stopped,
                // Quiet: make sure the connection still works, so health
                // tells the truth and the next publish is not the one lost.
                Err(RecvTimeoutError::Timeout) => match redis::cmd("PING").query::<String>(con) {
                    Ok(_) => continue,
                    Err(e) => return Served::Failed(e.to_string()),
                },
            };
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut stop = false;
            let mut next = Some(first);
            while let Some(out) = next.take() {
                match out {
                    Outbound::Stop => stop = true,
                    Outbound::Message { channel, envelope } => {
                        bytes += envelope.len();
                        batch.push((channel, envelope));
                        if batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
                            next = self.rx.try_recv().ok();
                        }
                    }
                }
            }
            let result = if batch.is_empty() {
                Ok(())
            } else {
                if sequences.len() > MAX_SEQUENCED_CHANNELS {
                    sequences.clear();
                }
                let mut pipe = redis::pipe();
                for (channel, envelope) in &mut batch {
                    let seq = sequences.entry(channel.clone()).or_insert(0);
                    *seq += 1;
                    set_sequence(envelope, *seq);
                    pipe.cmd("PUBLISH").arg(&*channel).arg(&*envelope).ignore();
                }
                self.pending.fetch_sub(bytes, Ordering::AcqRel);
                pipe.query::<()>(con)
            };
            let n = batch.len() as u64;
            match result {
                Ok(()) => Counters::add(&self.counters.published, n),
                Err(e) => {
                    Counters::add(&self.counters.unconfirmed, n);
                    return Served::Failed(e.to_string());
                }
            }
            if stop {
                return Served::Stopped;
            }
        }
    }

    /// While Redis is away: whatever was queued before the link went down
    /// never reaches Redis, and is counted as lost. True once told to stop.
    fn discard_for(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            match self
                .rx
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(Outbound::Message { envelope, .. }) => {
                    self.pending.fetch_sub(envelope.len(), Ordering::AcqRel);
                    Counters::add(&self.counters.lost, 1);
                }
                Ok(Outbound::Stop) | Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}

enum Served {
    Stopped,
    Failed(String),
}

/// Reconnect delays (doubling from 50 ms up to a cap), and the log lines
/// of a link going away and coming back: one warning per outage and reason,
/// a reminder every 30 s, not one line per attempt.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
    down_since: Option<Instant>,
    logged: Option<(String, Instant)>,
}

const FIRST_DELAY: Duration = Duration::from_millis(50);
const REMIND_EVERY: Duration = Duration::from_secs(30);

impl Backoff {
    pub(crate) fn new(max: Duration) -> Backoff {
        Backoff {
            next: FIRST_DELAY,
            max,
            down_since: None,
            logged: None,
        }
    }

    /// The delay before the next attempt; each call doubles the next one.
    pub(crate) fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub(crate) fn failed(&mut self, which: &str, link: &RedisLink, why: &str) {
        let now = Instant::now();
        let since = *self.down_since.get_or_insert(now);
        let remind = match &self.logged {
            Some((last, at)) => last != why || now.duration_since(*at) >= REMIND_EVERY,
            None => true,
        };
        if remind {
            log::warn!(
                "broker: {which} connection to redis at {} failed: {why} (down {:.1}s; local delivery goes on, messages to and from other nodes are lost and counted)",
                link.address(),
                now.duration_since(since).as_secs_f64()
            );
            self.logged = Some((why.to_string(), now));
        }
    }

    pub(crate) fn succeeded(&mut self, which: &str, link: &RedisLink) {
        self.next = FIRST_DELAY;
        self.logged = None;
        match self.down_since.take() {
            Some(since) => log::info!(
                "broker: {which} connection to redis at {} is back after {:.1}s",
                link.address(),
                since.elapsed().as_secs_f64()
            ),
            None => log::info!(
                "broker: {which} connection to redis at {} is up",
                link.address()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_bounded_in_bytes_but_always_takes_one() {
        let (q, rx, pending) = PublishQueue::new(10);
        assert!(
            q.push(b"c".to_vec(), vec![0; 50]),
            "an empty queue takes one"
        );
        assert!(!q.push(b"c".to_vec(), vec![0; 1]), "over the bound");
        assert_eq!(pending.load(Ordering::Acquire), 50);
        assert_eq!(rx.len(), 1);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(300));
        let delays: Vec<_> = (0..5).map(|_| b.delay().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 300, 300]);
        let link = RedisLink::parse("redis://127.0.0.1:1/").unwrap();
        b.failed("test", &link, "refused");
        b.succeeded("test", &link);
        assert_eq!(b.delay().as_millis(), 50);
    }
}
