//! `fanout`: pub/sub delivery, verified.
//!
//! T topics; each has S/T subscribers and P publishers, all connected to
//! `ws://ADDR/topic-K` of a server that subscribes a connection to the topic
//! its path names and publishes what it sends there, never back to the
//! sender (`sockwave --mode pubsub`). Subscribers connect round-robin to
//! every `--sub-addr` (other nodes of a cluster), publishers to `--addr`.
//!
//! A publisher keeps at most W messages that some member of its topic has
//! not received yet. Every member (subscribers, and the topic's other
//! publishers) checks every delivery: from a publisher of its own topic,
//! never its own, each publisher's numbers in order with none missing or
//! twice. The payload carries the publisher, its number and the send time,
//! so latency is measured per delivery.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use sockwave::protocol::client;
use sockwave::protocol::frame::{DecodeRules, EncodedHeader, FrameHeader};
use sockwave::protocol::mask::apply_mask;
use sockwave::protocol::OpCode;

use crate::{connect, proc_usage, tls_client, Args, Link, REQUEST_NONCE};

/// Publisher id, number, send time (ns since the run's epoch).
const HEADER: usize = 4 + 8 + 8;
const WAKER: Token = Token(usize::MAX);
/// Latency histogram: 1 µs buckets up to this many.
const LATENCY_BUCKETS: usize = 1 << 17;

/// One publisher as every thread sees it.
struct Publisher {
    topic: usize,
    /// Receipts still missing per number in the window (`seq % window`).
    pending: Box<[AtomicU32]>,
    /// Members that must receive each message.
    receivers: u32,
    /// The publisher waits for the window; the receipt that frees it wakes
    /// its thread.
    blocked: AtomicBool,
    thread: usize,
}

struct Shared {
    publishers: Vec<Publisher>,
    /// Per topic, its publishers' ids (their index in `publishers`).
    by_topic: Vec<Vec<u32>>,
    wakers: Vec<OnceLock<Waker>>,
    epoch: Instant,
    window: u64,
}

/// One connection of a client thread.
struct Member {
    link: Link,
    key: String,
    upgraded: bool,
    topic: usize,
    /// Its publisher id, if it publishes.
    publishes: Option<u32>,
    next_seq: u64,
    acked: u64,
    /// Next number expected from each publisher of the topic (by position
    /// in `by_topic[topic]`).
    expect: Vec<u64>,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    mask: [u8; 4],
}

#[derive(Default)]
struct Tally {
    deliveries: u64,
    published: u64,
    errors: Vec<String>,
    latency: Vec<u64>,
    connected: usize,
}

/// Where every connection goes: (topic, publisher id or none, address).
fn plan(args: &Args) -> Vec<(usize, Option<u32>, SocketAddr)> {
    let topics = args.topics.max(1);
    let subs = if args.sub_addr.is_empty() {
        vec![args.addr]
    } else {
        args.sub_addr.clone()
    };
    let mut plan = Vec::new();
    for s in 0..args.subscribers {
        plan.push((s % topics, None, subs[s % subs.len()]));
    }
    for t in 0..topics {
        for p in 0..args.publishers {
            plan.push((t, Some((t * args.publishers + p) as u32), args.addr));
        }
    }
    plan
}

pub(crate) fn run(args: &Args) -> io::Result<String> {
    if args.payload < HEADER {
        return Err(io::Error::other(format!(
            "--payload must be at least {HEADER}"
        )));
    }
    let topics = args.topics.max(1);
    let threads = args.threads.max(1);
    let plan = plan(args);
    let mut members_of = vec![0u32; topics];
    for (t, _, _) in &plan {
        members_of[*t] += 1;
    }
    if args.publishers == 0 || members_of.iter().any(|&n| n < 2) {
        return Err(io::Error::other(
            "every topic needs a publisher and someone to receive (--subscribers >= --topics, --publishers >= 1)",
        ));
    }
    let publishers: Vec<Publisher> = (0..topics * args.publishers)
        .map(|id| Publisher {
            topic: id / args.publishers,
            pending: (0..args.window).map(|_| AtomicU32::new(0)).collect(),
            receivers: members_of[id / args.publishers] - 1,
            blocked: AtomicBool::new(false),
            thread: 0,
        })
        .collect();
    let mut shared = Shared {
        by_topic: (0..topics)
            .map(|t| {
                (0..args.publishers)
                    .map(|p| (t * args.publishers + p) as u32)
                    .collect()
            })
            .collect(),
        publishers,
        wakers: (0..threads).map(|_| OnceLock::new()).collect(),
        epoch: Instant::now(),
        window: args.window.max(1) as u64,
    };
    // Connections round-robin over the threads; a publisher's thread is
    // the one its connection is on.
    let mut shares: Vec<Vec<(usize, Option<u32>, SocketAddr)>> = vec![Vec::new(); threads];
    for (i, m) in plan.into_iter().enumerate() {
        if let Some(id) = m.1 {
            shared.publishers[id as usize].thread = i % threads;
        }
        shares[i % threads].push(m);
    }
    let shared = Arc::new(shared);
    let connect_for = Duration::from_millis(500 + (args.subscribers as u64) / 5);
    let start_at = Instant::now() + connect_for + Duration::from_secs_f64(args.settle);
    let measure_from = start_at + Duration::from_secs_f64(args.warmup);
    let end_at = measure_from + Duration::from_secs_f64(args.duration);
    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(t, share)| {
            let (args, shared) = (args.clone(), Arc::clone(&shared));
            std::thread::spawn(move || {
                thread(&args, &shared, t, share, start_at, measure_from, end_at)
            })
        })
        .collect();
    while Instant::now() < measure_from {
        std::thread::sleep(Duration::from_millis(1));
    }
    let pids: Vec<u32> = args
        .server_pid
        .iter()
        .chain(&args.node_pid)
        .copied()
        .collect();
    let cpu =
        |pids: &[u32]| -> Option<f64> { pids.iter().map(|&p| proc_usage(p).map(|u| u.0)).sum() };
    let (server_before, redis_before) = (cpu(&pids), args.redis_pid.and_then(|p| cpu(&[p])));
    let mut total = Tally::default();
    let mut failure = None;
    for h in handles {
        match h.join().expect("client thread panicked") {
            Ok(t) => {
                total.deliveries += t.deliveries;
                total.published += t.published;
                total.errors.extend(t.errors);
                total.connected += t.connected;
                if total.latency.is_empty() {
                    total.latency = t.latency;
                } else {
                    for (a, b) in total.latency.iter_mut().zip(t.latency) {
                        *a += b;
                    }
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let server_cpu = server_before.zip(cpu(&pids)).map(|(a, b)| b - a);
    let redis_cpu = redis_before
        .zip(args.redis_pid.and_then(|p| cpu(&[p])))
        .map(|(a, b)| b - a);
    Ok(report(args, &total, server_cpu, redis_cpu))
}

fn report(args: &Args, t: &Tally, server_cpu: Option<f64>, redis_cpu: Option<f64>) -> String {
    let secs = args.duration;
    let q = |p: f64| quantile(&t.latency, p);
    let per_cpu = server_cpu
        .filter(|c| *c > 0.0)
        .map(|c| t.deliveries as f64 / c);
    let redis_us = redis_cpu
        .filter(|_| t.published > 0)
        .map(|c| c * 1e6 / t.published as f64);
    let errors = t.errors.len();
    let first_error = t.errors.first().cloned().unwrap_or_default();
    let opt = |v: Option<f64>, digits: usize| v.map_or("null".into(), |v| format!("{v:.digits$}"));
    if args.json {
        format!(
            "{{\"mode\":\"fanout\",\"subscribers\":{},\"topics\":{},\"publishers\":{},\"window\":{},\"payload\":{},\"nodes\":{},\"deliveries_per_sec\":{:.0},\"published_per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"server_cpu_sec\":{},\"deliveries_per_server_cpu_sec\":{},\"redis_cpu_sec\":{},\"redis_cpu_us_per_publish\":{},\"errors\":{},\"first_error\":{:?}}}",
            args.subscribers,
            args.topics,
            args.publishers,
            args.window,
            args.payload,
            args.sub_addr.len().max(1),
            t.deliveries as f64 / secs,
            t.published as f64 / secs,
            q(0.5),
            q(0.99),
            q(0.999),
            opt(server_cpu, 3),
            opt(per_cpu, 0),
            opt(redis_cpu, 3),
            opt(redis_us, 2),
            errors,
            first_error
        )
    } else {
        format!(
            "fanout: {} subscribers over {} topics ({} node(s)), {} publisher(s) per topic, window {}, {} B: {:.0} deliveries/s ({:.0} published/s), latency p50 {} us p99 {} us p99.9 {} us{}{}{}, errors {}{}",
            args.subscribers,
            args.topics,
            args.sub_addr.len().max(1),
            args.publishers,
            args.window,
            args.payload,
            t.deliveries as f64 / secs,
            t.published as f64 / secs,
            q(0.5),
            q(0.99),
            q(0.999),
            server_cpu.map_or(String::new(), |c| format!(", server CPU {c:.2} s")),
            per_cpu.map_or(String::new(), |m| format!(" ({m:.0} deliveries per server CPU-second)")),
            redis_us.map_or(String::new(), |u| format!(", redis {u:.2} us CPU per publish")),
            errors,
            if errors > 0 { format!(" (first: {first_error})") } else { String::new() }
        )
    }
}

/// The smallest latency (µs) at or under which `p` of the deliveries fall.
fn quantile(histogram: &[u64], p: f64) -> u64 {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return 0;
    }
    let want = ((total as f64) * p).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (us, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= want {
            return us as u64;
        }
    }
    histogram.len() as u64
}

fn thread(
    args: &Args,
    shared: &Shared,
    index: usize,
    share: Vec<(usize, Option<u32>, SocketAddr)>,
    start_at: Instant,
    measure_from: Instant,
    end_at: Instant,
) -> io::Result<Tally> {
    let mut poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let _ = shared.wakers[index].set(waker);
    let tls = tls_client(args)?;
    let mut members = Vec::with_capacity(share.len());
    for (i, (topic, publishes, addr)) in share.into_iter().enumerate() {
        let mut link = connect(addr, tls.as_ref())?;
        poll.registry().register(
            link.socket(),
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let (req, key) = client::request(
            &addr.to_string(),
            &format!("/topic-{topic}"),
            REQUEST_NONCE,
            &[],
            &[],
        );
        members.push(Member {
            link,
            key,
            upgraded: false,
            topic,
            publishes,
            next_seq: 0,
            acked: 0,
            expect: vec![0; shared.by_topic[topic].len()],
            inbuf: Vec::with_capacity(16 * 1024),
            outbuf: req,
            mask: ((index * 65_599 + i) as u32 ^ 0x5a5a_a5a5).to_le_bytes(),
        });
    }
    let mut tally = Tally {
        latency: vec![0; LATENCY_BUCKETS],
        ..Tally::default()
    };
    let mut events = Events::with_capacity(1024);
    let mut read_buf = vec![0u8; 256 * 1024];
    let filler = vec![0x5au8; args.payload - HEADER];
    let mut started = false;
    loop {
        let now = Instant::now();
        if now >= end_at {
            break;
        }
        let wait = if started {
            end_at
        } else {
            start_at.min(end_at)
        };
        poll.poll(&mut events, Some(wait.saturating_duration_since(now)))?;
        let now = Instant::now();
        let mut ready: Vec<usize> = events
            .iter()
            .map(|e| e.token())
            .filter(|t| *t != WAKER)
            .map(|t| t.0)
            .collect();
        if !started && now >= start_at {
            started = true;
            let not_up = members.iter().filter(|m| !m.upgraded).count();
            if not_up > 0 {
                return Err(io::Error::other(format!(
                    "{not_up} connections not upgraded after the connect phase"
                )));
            }
            ready.extend(0..members.len());
        }
        if started && events.iter().any(|e| e.token() == WAKER) {
            // A window opened for one of this thread's publishers.
            ready.extend(
                members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.publishes.is_some())
                    .map(|(i, _)| i),
            );
        }
        for i in ready {
            let m = &mut members[i];
            read_all(m, &mut read_buf, &mut tally);
            if !m.upgraded {
                match client::parse_response(&m.inbuf, &m.key) {
                    Ok(Some((_, n))) => {
                        m.inbuf.drain(..n);
                        m.upgraded = true;
                        tally.connected += 1;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::other(format!("handshake refused: {e:?}"))),
                }
            }
            if m.upgraded {
                receive(m, shared, now >= measure_from, &mut tally);
                if started {
                    publish(m, shared, &filler, now >= measure_from, &mut tally);
                }
            }
            write_out(m, &mut tally);
        }
    }
    Ok(tally)
}

fn read_all(m: &mut Member, buf: &mut [u8], tally: &mut Tally) {
    loop {
        match m.link.read(buf) {
            Ok(0) => {
                tally.errors.push("the server closed a connection".into());
                return;
            }
            Ok(n) => m.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tally.errors.push(format!("read: {e}"));
                return;
            }
        }
    }
}

/// Checks and counts every complete message in `m.inbuf`.
fn receive(m: &mut Member, shared: &Shared, measured: bool, tally: &mut Tally) {
    let rules = DecodeRules {
        expect_masked: false,
        allow_rsv1: false,
    };
    let mut pos = 0;
    // Every message here arrived by the reads just made: they share one
    // clock reading (a reading per delivery was 6% of the generator's core
    // at 100 subscribers).
    let mut received_at = None;
    while let Ok(Some((h, hl))) = FrameHeader::decode(&m.inbuf[pos..], rules) {
        let len = h.payload_len as usize;
        if m.inbuf.len() - pos < hl + len {
            break;
        }
        let payload = &m.inbuf[pos + hl..pos + hl + len];
        match h.opcode {
            OpCode::Binary if len >= HEADER => {
                let word = |at: usize, n: usize| {
                    let mut b = [0u8; 8];
                    b[..n].copy_from_slice(&payload[at..at + n]);
                    u64::from_le_bytes(b)
                };
                let (from, seq, sent) = (word(0, 4) as u32, word(4, 8), word(12, 8));
                if let Err(e) = check(m, shared, from, seq) {
                    tally.errors.push(e);
                } else {
                    let p = &shared.publishers[from as usize];
                    let slot = &p.pending[(seq % shared.window) as usize];
                    if slot.fetch_sub(1, Ordering::AcqRel) == 1
                        && p.blocked.swap(false, Ordering::SeqCst)
                    {
                        if let Some(w) = shared.wakers[p.thread].get() {
                            let _ = w.wake();
                        }
                    }
                    if measured {
                        tally.deliveries += 1;
                        let now = *received_at
                            .get_or_insert_with(|| shared.epoch.elapsed().as_nanos() as u64);
                        let us = (now.saturating_sub(sent) / 1000) as usize;
                        tally.latency[us.min(LATENCY_BUCKETS - 1)] += 1;
                    }
                }
            }
            OpCode::Ping => {
                let head = EncodedHeader::new(OpCode::Pong, true, false, len as u64, Some(m.mask));
                let mut p = payload.to_vec();
                apply_mask(&mut p, m.mask, 0);
                m.outbuf.extend_from_slice(head.as_bytes());
                m.outbuf.extend_from_slice(&p);
            }
            OpCode::Close => tally.errors.push("the server sent a close".into()),
            other => tally.errors.push(format!("unexpected {other:?} frame")),
        }
        pos += hl + len;
    }
    m.inbuf.drain(..pos);
}

/// A delivery is from a publisher of the member's topic, not its own, and
/// the next number of that publisher.
fn check(m: &mut Member, shared: &Shared, from: u32, seq: u64) -> Result<(), String> {
    let Some(p) = shared.publishers.get(from as usize) else {
        return Err(format!("a message from unknown publisher {from}"));
    };
    if p.topic != m.topic {
        return Err(format!(
            "a message of topic {} delivered to topic {}",
            p.topic, m.topic
        ));
    }
    if m.publishes == Some(from) {
        return Err(format!("publisher {from} got its own message back"));
    }
    let at = shared.by_topic[m.topic]
        .iter()
        .position(|&id| id == from)
        .expect("a publisher of the topic");
    let want = m.expect[at];
    if seq != want {
        return Err(format!(
            "from publisher {from}: got number {seq}, expected {want} (lost, repeated or reordered)"
        ));
    }
    m.expect[at] += 1;
    Ok(())
}

/// Sends what the window allows.
fn publish(m: &mut Member, shared: &Shared, filler: &[u8], measured: bool, tally: &mut Tally) {
    let Some(id) = m.publishes else { return };
    let p = &shared.publishers[id as usize];
    loop {
        while m.acked < m.next_seq
            && p.pending[(m.acked % shared.window) as usize].load(Ordering::Acquire) == 0
        {
            m.acked += 1;
        }
        if m.next_seq - m.acked >= shared.window {
            // Announce the wait, then look once more, so the receipt that
            // frees the window either is seen here or wakes the thread.
            p.blocked.store(true, Ordering::SeqCst);
            if p.pending[(m.acked % shared.window) as usize].load(Ordering::Acquire) == 0 {
                p.blocked.store(false, Ordering::SeqCst);
                continue;
            }
            return;
        }
        let seq = m.next_seq;
        p.pending[(seq % shared.window) as usize].store(p.receivers, Ordering::Release);
        let len = HEADER + filler.len();
        let head = EncodedHeader::new(OpCode::Binary, true, false, len as u64, Some(m.mask));
        m.outbuf.extend_from_slice(head.as_bytes());
        let at = m.outbuf.len();
        m.outbuf.extend_from_slice(&id.to_le_bytes());
        m.outbuf.extend_from_slice(&seq.to_le_bytes());
        let sent = shared.epoch.elapsed().as_nanos() as u64;
        m.outbuf.extend_from_slice(&sent.to_le_bytes());
        m.outbuf.extend_from_slice(filler);
        apply_mask(&mut m.outbuf[at..], m.mask, 0);
        m.next_seq += 1;
        if measured {
            tally.published += 1;
        }
    }
}

fn write_out(m: &mut Member, tally: &mut Tally) {
    if let Err(e) = m.link.flush() {
        tally.errors.push(format!("write: {e}"));
    }
    while !m.outbuf.is_empty() {
        match m.link.write(&m.outbuf) {
            Ok(n) => {
                m.outbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tally.errors.push(format!("write: {e}"));
                m.outbuf.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_histogram() {
        let mut h = vec![0u64; 100];
        h[10] = 50;
        h[20] = 49;
        h[90] = 1;
        assert_eq!(quantile(&h, 0.5), 10);
        assert_eq!(quantile(&h, 0.99), 20);
        assert_eq!(quantile(&h, 1.0), 90);
        assert_eq!(quantile(&[0; 4], 0.5), 0);
    }
}
