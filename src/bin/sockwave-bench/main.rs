//! `sockwave-bench`: a load generator for WebSocket echo servers that is not
//! the bottleneck: mio, no async runtime, one event loop per thread.
//!
//! - `echo`: C connections each keep D messages of P bytes in flight; every
//!   echoed byte is compared with what was sent; reports messages/s, bytes/s,
//!   latency percentiles, and (with --server-pid) the server's CPU seconds,
//!   so results can be given per server CPU-second.
//! - `connect`: handshake + close cycles per second, C attempts in flight,
//!   each one connect → upgrade → close → the server's FIN, then a new one.
//! - `idle`: opens C connections and reports server RSS per connection.
//! - `fanout`: S subscribers over T topics, P publishers per topic, each
//!   keeping W messages in flight until every member of its topic has them;
//!   every delivery verified (exactly once, in order, never to the sender);
//!   deliveries/s, per server CPU-second, latency from a timestamp in the
//!   payload. Subscribers may be spread over several nodes (`--sub-addr`).
//!
//! Any RFC 6455 echo server will do for `echo` (it must echo binary
//! messages); `fanout` needs a server that subscribes each connection to
//! the topic its path names and publishes what it sends there (`sockwave
//! --mode pubsub`). With
//! `--tls-ca CERT.pem` every mode speaks wss:// (rustls, trusting that
//! certificate for `--tls-name`).

mod echo_payload;
mod fanout;
mod in_buf;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use sockwave::protocol::client;
use sockwave::protocol::frame::{DecodeRules, EncodedHeader, FrameHeader};
use sockwave::protocol::mask::apply_mask;
use sockwave::protocol::OpCode;

use echo_payload::EchoPayloads;
use in_buf::InBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Echo,
    Connect,
    Idle,
    Fanout,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "sockwave-bench",
    about = "Load generator for WebSocket echo servers."
)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Connections.
    #[arg(short, long, default_value_t = 100)]
    connections: usize,
    /// Payload bytes per message (at least 8).
    #[arg(short, long, default_value_t = 20)]
    payload: usize,
    /// Messages in flight per connection.
    #[arg(short, long, default_value_t = 1)]
    depth: usize,
    /// Client threads (one mio loop each).
    #[arg(short, long, default_value_t = 1)]
    threads: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The server's pid, to report its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// wss://: TLS to the server, trusting the PEM certificate (or CA) in this file.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// The server name TLS checks the certificate for.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// fanout: subscribers (spread over the topics).
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// fanout: topics (paths /topic-0, /topic-1, ...).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// fanout: publishers per topic (they receive each other's messages too).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// fanout: messages per publisher not yet received by every member of its topic.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// fanout: where subscribers connect, round-robin (repeatable; other
    /// nodes of a cluster). Default: --addr.
    #[arg(long)]
    sub_addr: Vec<SocketAddr>,
    /// fanout: the pid of another node, whose CPU counts as the server's too (repeatable).
    #[arg(long)]
    node_pid: Vec<u32>,
    /// fanout: the pid of redis-server, to report its CPU per published message.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// fanout: seconds between connecting and publishing, for nodes to
    /// subscribe at their broker.
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
}

const REQUEST_NONCE: [u8; 16] = *b"sockwave-bench!!";

/// CPU seconds (user + system) and RSS of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((ticks / hz, rss_kib * 1024))
}

/// The server's CPU seconds while `measure` ran (None without a pid or /proc).
fn server_cpu_during(pid: Option<u32>, measure: impl FnOnce()) -> Option<f64> {
    let before = pid.and_then(proc_usage);
    measure();
    let after = pid.and_then(proc_usage);
    Some(after?.0 - before?.0)
}

/// `count` per second of server CPU time, when that time is known.
fn per_server_cpu_second(count: u64, cpu: Option<f64>) -> Option<f64> {
    cpu.filter(|c| *c > 0.0).map(|c| count as f64 / c)
}

/// One echo connection: what it has received and not parsed, what it has
/// to write, and which message it sends and expects next.
struct Conn {
    link: Link,
    id: u64,
    upgraded: bool,
    inbuf: InBuf,
    outbuf: Vec<u8>,
    /// How much of `outbuf` the socket has taken.
    written: usize,
    next_seq: u64,
    expect_seq: u64,
    sent_at: VecDeque<Instant>,
    /// This connection's payload key (see [`EchoPayloads`]).
    key: u64,
    mask: [u8; 4],
}

/// What a client thread counted inside the measured window.
#[derive(Default)]
struct Tally {
    /// Echoes verified (echo mode) or handshake + close cycles completed (connect mode).
    messages: u64,
    bytes: u64,
    /// Send to echo, or connect to the server's FIN.
    latencies_us: Vec<u32>,
    errors: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
    }
}

/// Runs `thread(index, share)` on `args.threads` client threads, `share`
/// being each one's part of `args.connections`; once the measured window
/// begins, joins them all while reading the server's CPU time. Returns the
/// summed tally (latencies sorted) and the server's CPU seconds, if known.
fn run_client_threads(
    args: &Args,
    measure_from: Instant,
    thread: impl Fn(usize, usize) -> io::Result<Tally> + Clone + Send + 'static,
) -> io::Result<(Tally, Option<f64>)> {
    let threads = args.threads.max(1).min(args.connections.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let share = args.connections / threads + usize::from(t < args.connections % threads);
            let thread = thread.clone();
            std::thread::spawn(move || thread(t, share))
        })
        .collect();
    while Instant::now() < measure_from {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut total = Tally::default();
    let mut failure = None;
    let server_cpu = server_cpu_during(args.server_pid, || {
        for h in handles {
            match h.join().expect("client thread panicked") {
                Ok(t) => total.add(t),
                Err(e) => failure = Some(e),
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    total.latencies_us.sort_unstable();
    Ok((total, server_cpu))
}

/// A client's byte stream: plain TCP, or TLS over it.
enum Link {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(TcpStream, Box<rustls::ClientConnection>),
}

impl Link {
    fn socket(&mut self) -> &mut TcpStream {
        match self {
            Link::Plain(s) => s,
            #[cfg(feature = "tls")]
            Link::Tls(s, _) => s,
        }
    }

    /// Reads plaintext; `WouldBlock` when the socket has no more.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Link::Tls(s, tls) => tls_read(s, tls, buf),
        }
    }

    /// Writes what it can of `buf` (TLS: encrypts it, up to rustls's limit).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Link::Tls(..) => {
                if !self.flush()? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let Link::Tls(_, tls) = self else {
                    unreachable!()
                };
                let n = tls.writer().write(buf)?;
                self.flush()?;
                Ok(n)
            }
        }
    }

    /// Writes all of `buf` (small requests and close frames); TLS records
    /// the socket does not take yet go out with the next [`Link::flush`].
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Link::Plain(s) => s.write_all(buf),
            #[cfg(feature = "tls")]
            Link::Tls(_, tls) => {
                tls.writer().write_all(buf)?;
                self.flush().map(|_| ())
            }
        }
    }

    /// Pushes TLS records to the socket; `Ok(true)` once none are left.
    fn flush(&mut self) -> io::Result<bool> {
        match self {
            Link::Plain(_) => Ok(true),
            #[cfg(feature = "tls")]
            Link::Tls(s, tls) => {
                while tls.wants_write() {
                    match tls.write_tls(s) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            }
        }
    }
}

/// The largest TLS record on the wire (rustls's `MAX_WIRE_SIZE`).
#[cfg(feature = "tls")]
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;

/// Reads plaintext over TLS as the server does: the socket in large reads
/// into a scratch buffer the thread's links share, rustls fed from memory
/// (its own `read_tls` from a socket reads 4 KiB per system call), as much
/// as `buf` can take. Small buffers (the connect and idle modes) let rustls
/// read the socket itself. `WouldBlock` when the socket has no more.
#[cfg(feature = "tls")]
fn tls_read(
    s: &mut TcpStream,
    tls: &mut rustls::ClientConnection,
    buf: &mut [u8],
) -> io::Result<usize> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 128 * 1024]);
    }
    let answer = |s: &mut TcpStream, tls: &mut rustls::ClientConnection| -> io::Result<()> {
        tls.process_new_packets().map_err(io::Error::other)?;
        while tls.wants_write() {
            match tls.write_tls(s) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                r => {
                    r?;
                }
            }
        }
        Ok(())
    };
    let mut filled = 0;
    loop {
        while filled < buf.len() {
            match tls.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
        }
        let room = buf.len() - filled;
        if room < 2 * MAX_RECORD {
            if filled > 0 {
                return Ok(filled);
            }
            // A small buffer: rustls reads the socket (4 KiB at a time).
            if tls.read_tls(s)? == 0 {
                return Ok(0);
            }
            answer(s, tls)?;
            continue;
        }
        let read = SCRATCH.with(|scratch| -> io::Result<Option<(usize, usize)>> {
            let mut scratch = scratch.borrow_mut();
            let asked = (room - MAX_RECORD).min(scratch.len());
            let n = match s.read(&mut scratch[..asked]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut rest = &scratch[..n];
            if n == 0 {
                // EOF: rustls takes a read of nothing for it.
                tls.read_tls(&mut rest)?;
                answer(s, tls)?;
            }
            while !rest.is_empty() {
                tls.read_tls(&mut rest)?;
                answer(s, tls)?;
                while filled < buf.len() {
                    match tls.reader().read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(_) => break,
                    }
                }
            }
            Ok(Some((n, asked)))
        })?;
        let Some((n, asked)) = read else {
            // Nothing more for now, after some plaintext.
            return Ok(filled);
        };
        if n < asked && filled > 0 {
            return Ok(filled);
        }
    }
}

/// What `--tls-ca` asks for: a rustls client trusting that certificate.
#[derive(Clone)]
struct TlsClient {
    #[cfg(feature = "tls")]
    config: std::sync::Arc<rustls::ClientConfig>,
    #[cfg(feature = "tls")]
    name: rustls::pki_types::ServerName<'static>,
}

fn tls_client(args: &Args) -> io::Result<Option<TlsClient>> {
    let Some(ca) = &args.tls_ca else {
        return Ok(None);
    };
    #[cfg(feature = "tls")]
    {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(io::Error::other)?
        {
            roots
                .add(cert.map_err(io::Error::other)?)
                .map_err(io::Error::other)?;
        }
        // Suites in the order browsers offer them (Chromium and Firefox put
        // AES-128-GCM first; rustls's own default is AES-256-GCM first).
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .cipher_suites
            .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every connection a full handshake: the connect mode measures them.
        config.resumption = rustls::client::Resumption::disabled();
        let name = rustls::pki_types::ServerName::try_from(args.tls_name.clone())
            .map_err(io::Error::other)?;
        Ok(Some(TlsClient {
            config: std::sync::Arc::new(config),
            name,
        }))
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = ca;
        Err(io::Error::other("built without the tls feature"))
    }
}

fn connect(addr: SocketAddr, tls: Option<&TlsClient>) -> io::Result<Link> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Link::Plain(s));
    };
    #[cfg(feature = "tls")]
    {
        let conn = rustls::ClientConnection::new(tls.config.clone(), tls.name.clone())
            .map_err(io::Error::other)?;
        Ok(Link::Tls(s, Box::new(conn)))
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = tls;
        unreachable!("tls_client refuses --tls-ca without the feature")
    }
}

fn upgrade_request(addr: SocketAddr) -> (Vec<u8>, String) {
    client::request(&addr.to_string(), "/", REQUEST_NONCE, &[], &[])
}

/// One client thread: its share of the connections, on its own mio loop.
fn echo_thread(
    args: Args,
    first_id: u64,
    count: usize,
    start_at: Instant,
    measure_from: Instant,
    end_at: Instant,
) -> io::Result<Tally> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let (req, key) = upgrade_request(args.addr);
    let tls = tls_client(&args)?;
    let mut conns: Vec<Conn> = Vec::with_capacity(count);
    for i in 0..count {
        let mut link = connect(args.addr, tls.as_ref())?;
        poll.registry().register(
            link.socket(),
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let id = first_id + i as u64;
        conns.push(Conn {
            link,
            id,
            upgraded: false,
            inbuf: InBuf::new((args.payload + 14) * args.depth),
            outbuf: req.clone(),
            written: 0,
            next_seq: 0,
            expect_seq: 0,
            sent_at: VecDeque::with_capacity(args.depth),
            key: EchoPayloads::key(id),
            mask: (id as u32 ^ 0x5a5a_a5a5).to_le_bytes(),
        });
    }
    let mut tally = Tally::default();
    let payloads = EchoPayloads::new(args.payload);
    let rules = DecodeRules {
        expect_masked: false,
        allow_rsv1: false,
    };
    // Clock readings were 7% of the generator's core at 100 x 1 KiB x 16
    // (two a message), so one is taken per event, once its reads are done:
    // it times the echoes those reads brought and sends the messages that
    // answer them, written right after.
    let queue_message = |c: &mut Conn, at: Instant| {
        let head = EncodedHeader::new(
            OpCode::Binary,
            true,
            false,
            args.payload as u64,
            Some(c.mask),
        );
        c.outbuf.extend_from_slice(head.as_bytes());
        payloads.append_masked(c.key, c.next_seq, c.mask, &mut c.outbuf);
        c.next_seq += 1;
        c.sent_at.push_back(at);
    };
    while Instant::now() < start_at {
        std::thread::sleep(Duration::from_millis(1));
    }
    loop {
        let now = Instant::now();
        if now >= end_at {
            break;
        }
        poll.poll(&mut events, Some(end_at - now))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            // Read everything available, then parse.
            loop {
                match c.link.read(c.inbuf.room()) {
                    Ok(0) => {
                        tally.errors += 1;
                        break;
                    }
                    Ok(n) => c.inbuf.received(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        tally.errors += 1;
                        break;
                    }
                }
            }
            let read_at = Instant::now();
            if !c.upgraded {
                match client::parse_response(c.inbuf.filled(), &key) {
                    Ok(Some((_, n))) => {
                        c.inbuf.consume(n);
                        c.upgraded = true;
                        for _ in 0..args.depth {
                            queue_message(c, read_at);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::other(format!("handshake refused: {e:?}"))),
                }
            }
            if c.upgraded {
                let mut pos = 0;
                while let Ok(Some((h, hl))) = FrameHeader::decode(&c.inbuf.filled()[pos..], rules) {
                    let len = h.payload_len as usize;
                    let got = c.inbuf.filled();
                    if got.len() - pos < hl + len {
                        break;
                    }
                    let payload = &got[pos + hl..pos + hl + len];
                    match h.opcode {
                        OpCode::Binary => {
                            if !payloads.is_intact(c.key, c.expect_seq, payload) {
                                return Err(io::Error::other(format!(
                                    "connection {}: echo {} differs from what was sent",
                                    c.id, c.expect_seq
                                )));
                            }
                            c.expect_seq += 1;
                            let sent = c.sent_at.pop_front().unwrap_or(now);
                            if read_at >= measure_from {
                                tally.messages += 1;
                                tally.bytes += len as u64;
                                tally
                                    .latencies_us
                                    .push(read_at.duration_since(sent).as_micros() as u32);
                            }
                            queue_message(c, read_at);
                        }
                        OpCode::Ping => {
                            let head = EncodedHeader::new(
                                OpCode::Pong,
                                true,
                                false,
                                len as u64,
                                Some(c.mask),
                            );
                            let mut p = payload.to_vec();
                            apply_mask(&mut p, c.mask, 0);
                            c.outbuf.extend_from_slice(head.as_bytes());
                            c.outbuf.extend_from_slice(&p);
                        }
                        _ => {}
                    }
                    pos += hl + len;
                }
                c.inbuf.consume(pos);
            }
            // Write what is queued (and TLS records still waiting).
            if c.link.flush().is_err() {
                tally.errors += 1;
            }
            while c.written < c.outbuf.len() {
                match c.link.write(&c.outbuf[c.written..]) {
                    Ok(n) => c.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        tally.errors += 1;
                        c.written = c.outbuf.len();
                    }
                }
            }
            // What the socket took is dropped at once when it took all,
            // else once it is most of the buffer: never a move per write.
            if c.written == c.outbuf.len() {
                c.outbuf.clear();
                c.written = 0;
            } else if c.written > c.outbuf.len() / 2 {
                c.outbuf.drain(..c.written);
                c.written = 0;
            }
        }
    }
    Ok(tally)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

fn run_echo(args: &Args) -> io::Result<String> {
    if args.payload < 8 {
        return Err(io::Error::other("--payload must be at least 8"));
    }
    let start_at = Instant::now() + Duration::from_millis(300 + args.connections as u64 / 10);
    let measure_from = start_at + Duration::from_secs_f64(args.warmup);
    let end_at = measure_from + Duration::from_secs_f64(args.duration);
    let a = args.clone();
    let (total, server_cpu) = run_client_threads(args, measure_from, move |t, share| {
        // Each thread's connection ids (and so payload patterns) are its own.
        let threads = a.threads.max(1).min(a.connections.max(1));
        let first = (t * (a.connections / threads + 1)) as u64;
        echo_thread(a.clone(), first, share, start_at, measure_from, end_at)
    })?;
    let l = &total.latencies_us;
    let msgs = total.messages as f64 / args.duration;
    let per_cpu = per_server_cpu_second(total.messages, server_cpu);
    Ok(if args.json {
        format!(
            "{{\"mode\":\"echo\",\"connections\":{},\"payload\":{},\"depth\":{},\"messages_per_sec\":{:.0},\"bytes_per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"server_cpu_sec\":{},\"messages_per_server_cpu_sec\":{},\"errors\":{}}}",
            args.connections,
            args.payload,
            args.depth,
            msgs,
            total.bytes as f64 / args.duration,
            percentile(l, 0.5),
            percentile(l, 0.99),
            percentile(l, 0.999),
            server_cpu.map_or("null".into(), |c| format!("{c:.3}")),
            per_cpu.map_or("null".into(), |m| format!("{m:.0}")),
            total.errors
        )
    } else {
        format!(
            "echo: {} connections x {} B x depth {}: {:.0} msgs/s, {:.1} MB/s, latency p50 {} us p99 {} us p99.9 {} us{}{}, errors {}",
            args.connections,
            args.payload,
            args.depth,
            msgs,
            total.bytes as f64 / args.duration / 1e6,
            percentile(l, 0.5),
            percentile(l, 0.99),
            percentile(l, 0.999),
            server_cpu.map_or(String::new(), |c| format!(", server CPU {c:.2} s")),
            per_cpu.map_or(String::new(), |m| format!(" ({m:.0} msgs per server CPU-second)")),
            total.errors
        )
    })
}

/// Where one connect-mode attempt is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Non-blocking connect in progress; the request goes out once writable.
    Connecting,
    /// Request sent, reading the 101.
    Upgrading,
    /// Close frame sent, reading the server's close frame until its FIN.
    Closing,
}

struct Attempt {
    link: Link,
    stage: Stage,
    got: Vec<u8>,
    started: Instant,
}

/// A masked close frame (1000) from the client.
fn client_close_frame() -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut f = EncodedHeader::new(OpCode::Close, true, false, 2, Some(mask))
        .as_bytes()
        .to_vec();
    let mut p = 1000u16.to_be_bytes().to_vec();
    apply_mask(&mut p, mask, 0);
    f.extend(p);
    f
}

/// One connect-mode thread: `inflight` attempts on its own mio loop, each
/// cycling connect → upgrade → close → the server's FIN, and a new one at once.
fn connect_thread(
    args: Args,
    inflight: usize,
    measure_from: Instant,
    end_at: Instant,
) -> io::Result<Tally> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let (req, key) = upgrade_request(args.addr);
    let close = client_close_frame();
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 4096];
    let tls = tls_client(&args)?;
    let start = |poll: &Poll, i: usize| -> io::Result<Attempt> {
        let mut link = connect(args.addr, tls.as_ref())?;
        poll.registry().register(
            link.socket(),
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(Attempt {
            link,
            stage: Stage::Connecting,
            got: Vec::new(),
            started: Instant::now(),
        })
    };
    let mut attempts = (0..inflight)
        .map(|i| start(&poll, i))
        .collect::<io::Result<Vec<_>>>()?;
    loop {
        let now = Instant::now();
        if now >= end_at {
            break;
        }
        poll.poll(&mut events, Some(end_at - now))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let a = &mut attempts[i];
            // Ok(true): the cycle completed; Err: it failed and is counted.
            let outcome = (|| -> io::Result<bool> {
                if a.stage == Stage::Connecting {
                    if let Some(e) = a.link.socket().take_error()? {
                        return Err(e);
                    }
                    if !ev.is_writable() {
                        return Ok(false);
                    }
                    a.link.write_all(&req)?;
                    a.stage = Stage::Upgrading;
                }
                a.link.flush()?;
                loop {
                    match a.link.read(&mut buf) {
                        Ok(0) if a.stage == Stage::Closing => return Ok(true),
                        Ok(0) => return Err(io::Error::other("closed during the handshake")),
                        Ok(n) => a.got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                    if a.stage == Stage::Upgrading {
                        match client::parse_response(&a.got, &key) {
                            Ok(Some((_, used))) => {
                                a.got.drain(..used);
                                a.link.write_all(&close)?;
                                a.stage = Stage::Closing;
                            }
                            Ok(None) => {}
                            Err(e) => return Err(io::Error::other(format!("{e:?}"))),
                        }
                    }
                }
            })();
            match outcome {
                Ok(false) => continue,
                Ok(true) => {
                    let t = Instant::now();
                    if t >= measure_from {
                        tally.messages += 1;
                        tally
                            .latencies_us
                            .push(t.duration_since(a.started).as_micros() as u32);
                    }
                }
                Err(_) => tally.errors += 1,
            }
            let _ = poll.registry().deregister(a.link.socket());
            attempts[i] = start(&poll, i)?;
        }
    }
    Ok(tally)
}

/// Handshake + close cycles per second: `connections` attempts in flight,
/// spread over `threads` mio loops.
fn run_connect(args: &Args) -> io::Result<String> {
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end_at = measure_from + Duration::from_secs_f64(args.duration);
    let a = args.clone();
    let (total, cpu) = run_client_threads(args, measure_from, move |_, share| {
        connect_thread(a.clone(), share, measure_from, end_at)
    })?;
    let l = &total.latencies_us;
    let rate = total.messages as f64 / args.duration;
    let per_cpu = per_server_cpu_second(total.messages, cpu);
    Ok(if args.json {
        format!(
            "{{\"mode\":\"connect\",\"in_flight\":{},\"connections_per_sec\":{rate:.0},\"p50_us\":{},\"p99_us\":{},\"server_cpu_sec\":{},\"connections_per_server_cpu_sec\":{},\"errors\":{}}}",
            args.connections,
            percentile(l, 0.5),
            percentile(l, 0.99),
            cpu.map_or("null".into(), |c| format!("{c:.3}")),
            per_cpu.map_or("null".into(), |m| format!("{m:.0}")),
            total.errors
        )
    } else {
        format!(
            "connect: {} in flight: {rate:.0} handshake+close per second, cycle p50 {} us p99 {} us{}{}, errors {}",
            args.connections,
            percentile(l, 0.5),
            percentile(l, 0.99),
            cpu.map_or(String::new(), |c| format!(", server CPU {c:.2} s")),
            per_cpu.map_or(String::new(), |m| format!(" ({m:.0} per server CPU-second)")),
            total.errors
        )
    })
}

/// Opens `connections` upgraded connections and reports the server's RSS per connection.
fn run_idle(args: &Args) -> io::Result<String> {
    let pid = args
        .server_pid
        .ok_or_else(|| io::Error::other("--mode idle needs --server-pid"))?;
    let (_, before) = proc_usage(pid).ok_or_else(|| io::Error::other("cannot read /proc"))?;
    let (req, key) = upgrade_request(args.addr);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let tls = tls_client(args)?;
    let mut streams = Vec::with_capacity(args.connections);
    let mut answers: Vec<Vec<u8>> = vec![Vec::new(); args.connections];
    let mut sent = vec![false; args.connections];
    for i in 0..args.connections {
        let mut s = connect(args.addr, tls.as_ref())?;
        poll.registry().register(
            s.socket(),
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        streams.push(s);
    }
    let mut upgraded = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while upgraded < args.connections && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            if !sent[i] && ev.is_writable() {
                streams[i].write_all(&req)?;
                sent[i] = true;
            }
            streams[i].flush()?;
            loop {
                match streams[i].read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => answers[i].extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            if !answers[i].is_empty() {
                if let Ok(Some(_)) = client::parse_response(&answers[i], &key) {
                    answers[i] = Vec::new();
                    upgraded += 1;
                    let _ = poll.registry().deregister(streams[i].socket());
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (_, after) = proc_usage(pid).ok_or_else(|| io::Error::other("cannot read /proc"))?;
    let per = after.saturating_sub(before) as f64 / upgraded.max(1) as f64;
    Ok(if args.json {
        format!("{{\"mode\":\"idle\",\"connections\":{upgraded},\"rss_bytes_per_connection\":{per:.0}}}")
    } else {
        format!(
            "idle: {upgraded} connections, server RSS +{} KiB, {per:.0} bytes per connection",
            (after.saturating_sub(before)) / 1024
        )
    })
}

fn main() {
    let args = Args::parse();
    // SAFETY: plain struct in and out.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let result = match args.mode {
        Mode::Echo => run_echo(&args),
        Mode::Connect => run_connect(&args),
        Mode::Idle => run_idle(&args),
        Mode::Fanout => fanout::run(&args),
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("sockwave-bench: {e}");
            std::process::exit(1);
        }
    }
}
