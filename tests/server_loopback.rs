//! The real server on loopback (ephemeral ports, bounded time): echo of every
//! kind of message, many connections, broadcast from a foreign thread,
//! backpressure, timers, shutdown and handshake errors.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    raise_fd_limit, raw_exchange, response_head, wait_until, Client, Ev, Registry, UPGRADE,
};
use sockwave::protocol::{MessageKind, ProtocolConfig};
use sockwave::server::{
    BackpressurePolicy, Config, Conn, Decision, Dispatch, DropReason, Echo, Handler, Message,
    SendStatus, Server, ServerHandle, Upgrade,
};

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 2,
        dispatch: Dispatch::Workers(2),
        shutdown_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

fn echo_server() -> ServerHandle {
    Server::start(config(), Echo).unwrap()
}

#[test]
fn echoes_text_binary_fragmented_and_16_mib() {
    let server = echo_server();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_text("hello, ✓").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("hello, ✓".into()));
    c.send_binary(&[0, 1, 2, 254, 255]).unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Binary(vec![0, 1, 2, 254, 255]));
    c.send_fragments(MessageKind::Text, &[b"frag", "mé".as_bytes(), b"nted"])
        .unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("fragménted".into()));
    c.ping(b"are you there").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Pong(b"are you there".to_vec()));
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    c.send_binary(&big).unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Binary(big.clone()));
    // A 16 MiB message in 1 MiB fragments.
    let parts: Vec<&[u8]> = big.chunks(1 << 20).collect();
    c.send_fragments(MessageKind::Binary, &parts).unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Binary(big));
    c.close(1000, "bye").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Close(1000, "bye".into()));
    assert_eq!(c.recv().unwrap(), Ev::Eof);
    server.shutdown_and_join();
}

/// Messages of every size at the edges of the loop's buffer classes echo,
/// whole and byte for byte, in both dispatch modes. A message of 15,873 to
/// 16,383 bytes once indexed past the class table and took its loop down.
#[test]
fn messages_at_every_buffer_class_edge_echo() {
    let mut sizes = vec![0, 1, 20, 125, 126];
    for edge in [64, 448, 512, 1024, 15_872, 16_384, 65_536] {
        sizes.extend([edge - 1, edge, edge + 1]);
    }
    sizes.extend([16_000, 16_383]);
    for dispatch in [Dispatch::Workers(2), Dispatch::Inline] {
        let mut cfg = config();
        cfg.dispatch = dispatch;
        let server = Server::start(cfg, Echo).unwrap();
        let mut c = Client::connect(server.local_addr()).unwrap();
        assert!(!c.compressing());
        for &len in &sizes {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            c.send_binary(&data).unwrap();
            assert_eq!(
                c.recv().unwrap(),
                Ev::Binary(data),
                "{dispatch:?}: {len} bytes"
            );
        }
        // All at once, pipelined.
        for &len in &sizes {
            c.send_binary(&vec![len as u8; len]).unwrap();
        }
        for &len in &sizes {
            assert_eq!(c.recv().unwrap(), Ev::Binary(vec![len as u8; len]));
        }
        server.shutdown_and_join();
    }
}

#[test]
fn first_frames_in_the_same_packet_as_the_handshake() {
    let server = echo_server();
    let mut packet = format!("{UPGRADE}\r\n").into_bytes();
    // A masked text frame "Hello" (RFC 6455 section 5.7) and a close 1000, in the same write.
    packet.extend_from_slice(&[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ]);
    packet.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
    let got = raw_exchange(server.local_addr(), &packet, Duration::from_secs(5));
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(String::from_utf8_lossy(&got[..head_end])
        .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_eq!(
        &got[head_end..],
        &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o', 0x88, 0x02, 0x03, 0xe8]
    );
    server.shutdown_and_join();
}

#[test]
fn malformed_handshakes_get_the_right_status() {
    let mut cfg = config();
    cfg.allowed_origins = vec!["https://good.example".into()];
    let server = Server::start(cfg, Echo).unwrap();
    let addr = server.local_addr();
    let status = |req: String| {
        let got = raw_exchange(addr, req.as_bytes(), Duration::from_secs(5));
        String::from_utf8_lossy(&got)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let upgrade = UPGRADE.replace("Sec-WebSocket-Version: 13\r\n", "");
    assert_eq!(
        status(format!(
            "{upgrade}Sec-WebSocket-Version: 8\r\nOrigin: https://good.example\r\n\r\n"
        )),
        "HTTP/1.1 426 Upgrade Required"
    );
    assert_eq!(
        status("GET / HTTP/1.1\r\nHost: h\r\n\r\n".into()),
        "HTTP/1.1 426 Upgrade Required"
    );
    assert_eq!(
        status(UPGRADE.replacen("GET", "POST", 1) + "\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        status(UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short") + "\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        status("\x16\x03\x01 not http\r\n\r\n".into()),
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        status(format!("{UPGRADE}X-Big: {}\r\n\r\n", "a".repeat(9000))),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(
        status(format!("{UPGRADE}Origin: https://evil.example\r\n\r\n")),
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        status(format!("{UPGRADE}Origin: https://good.example\r\n\r\n")),
        "HTTP/1.1 101 Switching Protocols"
    );
    let s = server.stats();
    assert_eq!(s.handshake_origin, 1);
    // 426, the plain GET's 426, 405, both 400s and the 431.
    assert_eq!(s.handshake_invalid, 6, "{s:?}");
    server.shutdown_and_join();
}

#[test]
fn connections_beyond_the_limit_get_503() {
    let mut cfg = config();
    cfg.max_connections = 2;
    let server = Server::start(cfg, Echo).unwrap();
    let a = Client::connect(server.local_addr()).unwrap();
    let b = Client::connect(server.local_addr()).unwrap();
    let got = raw_exchange(
        server.local_addr(),
        format!("{UPGRADE}\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(
        got.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    drop((a, b));
    server.shutdown_and_join();
}

#[test]
fn a_thousand_concurrent_connections_each_get_their_own_echoes() {
    raise_fd_limit();
    let server = echo_server();
    let addr = server.local_addr();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut clients: Vec<Client> =
                    (0..250).map(|_| Client::connect(addr).unwrap()).collect();
                for round in 0..5 {
                    for (i, c) in clients.iter_mut().enumerate() {
                        c.send_text(&format!("t{t} c{i} r{round}")).unwrap();
                    }
                    for (i, c) in clients.iter_mut().enumerate() {
                        assert_eq!(c.recv().unwrap(), Ev::Text(format!("t{t} c{i} r{round}")));
                    }
                }
                clients.len()
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 1000);
    let s = server.stats();
    assert_eq!(s.connections_total, 1000);
    assert_eq!(s.messages_in, 5000);
    server.shutdown_and_join();
}

#[test]
fn broadcast_from_a_foreign_thread_reaches_everyone_once_in_order() {
    let registry = Arc::new(Registry::default());
    let server = Server::start_arc(config(), registry.clone()).unwrap();
    let mut clients: Vec<Client> = (0..20)
        .map(|_| Client::connect(server.local_addr()).unwrap())
        .collect();
    wait_until("all opens", || registry.conns.lock().unwrap().len() == 20);
    let handle = server.clone();
    std::thread::spawn(move || {
        for i in 0..200 {
            handle.broadcast(MessageKind::Text, format!("news {i}").as_bytes());
        }
    })
    .join()
    .unwrap();
    for c in &mut clients {
        for i in 0..200 {
            assert_eq!(c.recv().unwrap(), Ev::Text(format!("news {i}")));
        }
    }
    // Nothing more: exactly once.
    for c in &mut clients {
        c.send_text("end").unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Text("end".into()));
    }
    server.shutdown_and_join();
}

/// A client socket with a tiny receive buffer that never reads.
/// What a peer that upgrades and then never answers receives: the
/// server's keep-alive ping, then its close for the ping timeout (1001).
fn assert_pinged_then_closed_for_silence(got: &[u8]) {
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut expect = vec![0x89, 0x00, 0x88, 14, 0x03, 0xe9];
    expect.extend_from_slice(b"ping timeout");
    assert_eq!(&got[head_end..], &expect[..]);
}

/// Lets a handler say it has started, then wait until the test lets it go:
/// the handler holds the [`Gate`], the test its [`GateControl`].
struct Gate {
    entered: Mutex<std::sync::mpsc::Sender<()>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

struct GateControl {
    entered: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

fn gate() -> (Gate, GateControl) {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let gate = Gate {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    };
    (gate, GateControl { entered, release })
}

impl Gate {
    /// In the handler: announce, then block until released.
    fn pass(&self) {
        self.entered.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
    }
}

impl GateControl {
    /// Waits until a handler is blocked at the gate.
    fn wait_entered(&self) {
        self.entered.recv().unwrap();
    }

    /// Lets it go on.
    fn open(&self) {
        self.release.send(()).unwrap();
    }
}

fn stalled_client(addr: std::net::SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    // A read that waits for what never comes fails the test, not CI's clock.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("{UPGRADE}\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
    s
}

fn backpressure(policy: BackpressurePolicy) {
    let registry = Arc::new(Registry::default());
    let mut cfg = config();
    cfg.max_buffered = 256 * 1024;
    cfg.backpressure = policy;
    cfg.protocol.close_timeout = Duration::from_millis(300);
    let server = Server::start_arc(cfg, registry.clone()).unwrap();
    let stalled = stalled_client(server.local_addr());
    let mut healthy = Client::connect(server.local_addr()).unwrap();
    wait_until("opens", || registry.conns.lock().unwrap().len() == 2);
    let slow = registry.conn_from(stalled.local_addr().unwrap());
    let chunk = vec![7u8; 64 * 1024];
    let mut dropped = None;
    for i in 0..10_000 {
        match slow.send_binary(&chunk) {
            SendStatus::Buffered(n) => assert!(n <= 256 * 1024 + chunk.len(), "buffered {n}"),
            SendStatus::Dropped(r) => {
                dropped = Some((i, r));
                break;
            }
        }
        // The healthy connection keeps flowing while the slow one fills.
        if i % 50 == 0 {
            healthy.send_text(&format!("still here {i}")).unwrap();
            assert_eq!(healthy.recv().unwrap(), Ev::Text(format!("still here {i}")));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let (_, reason) = dropped.expect("the cap was never hit");
    assert_eq!(reason, DropReason::Backpressure);
    assert!(slow.buffered_amount() <= 256 * 1024 + chunk.len());
    match policy {
        BackpressurePolicy::Close => {
            wait_until("close for backpressure", || {
                registry.closes.lock().unwrap().len() == 1
            });
            assert_eq!(server.stats().closed_backpressure, 1);
            assert!(!slow.is_open());
            // The stalled client never answers the close: the handler is
            // told it was the server's 1008, not a network drop (1006).
            let (code, reason) = registry.closes.lock().unwrap()[0].clone();
            assert_eq!(code, 1008, "{reason}");
        }
        BackpressurePolicy::Drop => {
            assert!(slow.is_open());
            // Read everything; the buffer empties and the handler hears of it.
            let mut s = stalled;
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 20];
            while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
            wait_until("drain", || registry.drains.load(Ordering::SeqCst) >= 1);
            assert_eq!(registry.drains.load(Ordering::SeqCst), 1);
            assert_eq!(slow.buffered_amount(), 0);
            assert!(!slow.send_text("after drain").is_dropped());
        }
    }
    healthy.send_text("done").unwrap();
    assert_eq!(healthy.recv().unwrap(), Ev::Text("done".into()));
    // The one refused send: the loop above stops at it.
    assert_eq!(server.stats().dropped_backpressure, 1);
    server.shutdown_and_join();
}

#[test]
fn slow_reader_hits_the_cap_and_is_closed_with_1008() {
    backpressure(BackpressurePolicy::Close);
}

#[test]
fn slow_reader_hits_the_cap_and_messages_are_dropped_then_drain() {
    backpressure(BackpressurePolicy::Drop);
}

/// Publishes reach a subscriber in runs, reserved at once while they fit
/// under its cap and one by one near it: a subscriber that stops reading
/// loses whole messages under `Drop` (each one counted, the rest in order,
/// its buffered amount back to 0 once it reads) or is closed with 1008
/// under `Close`, and the one beside it gets everything.
fn publish_runs_at_the_cap(policy: BackpressurePolicy) {
    const BURST: usize = 64;
    let registry = Arc::new(Registry::default());
    let mut cfg = config();
    cfg.threads = 1;
    cfg.max_buffered = 64 * 1024;
    cfg.backpressure = policy;
    cfg.protocol.close_timeout = Duration::from_millis(300);
    // Neither client sends, and the stalled one would not answer a ping:
    // no keep-alive pings or idle closes in the middle of the data.
    cfg.protocol.ping_interval = None;
    cfg.protocol.idle_timeout = None;
    let server = Server::start_arc(cfg, registry.clone()).unwrap();
    let mut stalled = stalled_client(server.local_addr());
    let mut healthy = Client::connect(server.local_addr()).unwrap();
    wait_until("opens", || registry.conns.lock().unwrap().len() == 2);
    let slow = registry.conn_from(stalled.local_addr().unwrap());
    for c in registry.conns.lock().unwrap().iter() {
        assert!(c.subscribe("t"));
    }
    let refused = || {
        let s = server.stats();
        s.dropped_backpressure + s.closed_backpressure
    };
    // Bursts until the cap is met, then 8 more against it.
    let (mut published, mut bursts_at_cap) = (0u32, 0);
    while bursts_at_cap < 8 {
        if refused() > 0 {
            bursts_at_cap += 1;
        }
        assert!(published < 40_000, "the cap was never hit");
        for _ in 0..BURST {
            let mut payload = vec![published as u8; 1024];
            payload[..4].copy_from_slice(&published.to_be_bytes());
            assert!(server.publish("t", MessageKind::Binary, &payload, None));
            published += 1;
        }
        for i in published - BURST as u32..published {
            match healthy.recv().unwrap() {
                Ev::Binary(b) => assert_eq!(b[..4], i.to_be_bytes()),
                other => panic!("{other:?}"),
            }
        }
    }
    match policy {
        BackpressurePolicy::Close => {
            wait_until("close for backpressure", || {
                registry.closes.lock().unwrap().len() == 1
            });
            assert_eq!(registry.closes.lock().unwrap()[0].0, 1008);
            assert_eq!(server.stats().closed_backpressure, 1);
        }
        BackpressurePolicy::Drop => {
            // Another thread reads everything while this one waits for the
            // server to have nothing left to write; then a marker (which
            // fits) follows the last message the server took. Checking the
            // buffered amount between reads would race: the client can read
            // the last bytes before the server has counted them written.
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let (opcode, payload) = read_frame(&mut stalled);
                    assert_eq!(
                        opcode,
                        2,
                        "after {:?}: {:?}",
                        got.last(),
                        &payload[..payload.len().min(16)]
                    );
                    if payload == b"!" {
                        return got;
                    }
                    got.push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
            });
            wait_until("the stalled subscriber drained", || {
                slow.buffered_amount() == 0
            });
            assert!(server.publish("t", MessageKind::Binary, b"!", None));
            assert_eq!(healthy.recv().unwrap(), Ev::Binary(b"!".to_vec()));
            let got = reader.join().unwrap();
            assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, once each");
            let dropped = server.stats().dropped_backpressure;
            assert!(dropped > 0);
            assert_eq!(got.len() as u64 + dropped, u64::from(published));
            assert_eq!(slow.buffered_amount(), 0);
        }
    }
    server.shutdown_and_join();
}

/// One unmasked frame from the server: opcode and payload.
fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).unwrap();
    (head[0] & 0x0f, payload)
}

#[test]
fn publish_runs_at_a_full_subscriber_drop_whole_messages_in_order() {
    publish_runs_at_the_cap(BackpressurePolicy::Drop);
}

#[test]
fn publish_runs_at_a_full_subscriber_close_it_with_1008() {
    publish_runs_at_the_cap(BackpressurePolicy::Close);
}

#[test]
fn handshake_timeout_drops_a_silent_connection() {
    let mut cfg = config();
    cfg.protocol.handshake_timeout = Some(Duration::from_millis(200));
    let server = Server::start(cfg, Echo).unwrap();
    let started = Instant::now();
    // Half a request, then nothing.
    let got = raw_exchange(
        server.local_addr(),
        b"GET / HTTP/1.1\r\nHost:",
        Duration::from_secs(5),
    );
    assert!(got.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(server.stats().handshake_timeout, 1);
    server.shutdown_and_join();
}

#[test]
fn idle_timeout_closes_with_1001() {
    let mut cfg = config();
    cfg.protocol = ProtocolConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ping_interval: None,
        ..cfg.protocol
    };
    let server = Server::start(cfg, Echo).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    let started = Instant::now();
    assert_eq!(c.recv().unwrap(), Ev::Close(1001, "idle timeout".into()));
    assert!(started.elapsed() >= Duration::from_millis(250));
    server.shutdown_and_join();
}

#[test]
fn pings_are_sent_and_a_silent_peer_is_dropped() {
    let mut cfg = config();
    cfg.protocol = ProtocolConfig {
        ping_interval: Some(Duration::from_millis(100)),
        pong_timeout: Duration::from_millis(200),
        idle_timeout: None,
        ..cfg.protocol
    };
    let registry = Arc::new(Registry::default());
    let server = Server::start_arc(cfg, registry.clone()).unwrap();
    // A client that answers pings stays open.
    let mut alive = Client::connect(server.local_addr()).unwrap();
    for _ in 0..3 {
        assert_eq!(alive.recv().unwrap(), Ev::Ping(Vec::new()));
    }
    // A peer that reads but never answers is closed after the pong timeout,
    // while the live client keeps answering.
    let addr = server.local_addr();
    let silent = std::thread::spawn(move || {
        raw_exchange(
            addr,
            format!("{UPGRADE}\r\n").as_bytes(),
            Duration::from_secs(5),
        )
    });
    while !silent.is_finished() {
        assert_eq!(alive.recv().unwrap(), Ev::Ping(Vec::new()));
    }
    assert_pinged_then_closed_for_silence(&silent.join().unwrap());
    wait_until("close report", || {
        registry
            .closes
            .lock()
            .unwrap()
            .contains(&(1006, "ping timeout".into()))
    });
    alive.send_text("still fine").unwrap();
    assert_eq!(alive.recv_message().unwrap(), Ev::Text("still fine".into()));
    server.shutdown_and_join();
}

#[test]
fn shutdown_closes_every_client_with_1001_and_joins() {
    let registry = Arc::new(Registry::default());
    let server = Server::start_arc(config(), registry.clone()).unwrap();
    let mut clients: Vec<Client> = (0..10)
        .map(|_| Client::connect(server.local_addr()).unwrap())
        .collect();
    wait_until("opens", || registry.conns.lock().unwrap().len() == 10);
    let stopper = {
        let s = server.clone();
        std::thread::spawn(move || s.shutdown_and_join())
    };
    for c in &mut clients {
        // The client's protocol answers the close by itself; then the server hangs up.
        assert_eq!(
            c.recv().unwrap(),
            Ev::Close(1001, "server shutting down".into())
        );
        assert_eq!(c.recv().unwrap(), Ev::Eof);
    }
    stopper.join().unwrap();
    assert_eq!(registry.closes.lock().unwrap().len(), 10);
    assert_eq!(server.stats().connections_open, 0);
    assert!(
        TcpStream::connect(server.local_addr()).is_err(),
        "still accepting"
    );
}

#[test]
fn stale_ids_never_reach_a_newer_connection() {
    let registry = Arc::new(Registry::default());
    let mut cfg = config();
    cfg.threads = 1;
    let server = Server::start_arc(cfg, registry.clone()).unwrap();
    let mut first = Client::connect(server.local_addr()).unwrap();
    wait_until("open", || registry.conns.lock().unwrap().len() == 1);
    let old = registry.conns.lock().unwrap()[0].id();
    first.close(1000, "").unwrap();
    assert_eq!(first.recv().unwrap(), Ev::Close(1000, String::new()));
    wait_until("close", || registry.closes.lock().unwrap().len() == 1);
    let mut second = Client::connect(server.local_addr()).unwrap();
    wait_until("open", || registry.conns.lock().unwrap().len() == 2);
    let new = registry.conns.lock().unwrap()[1].id();
    assert_ne!(old, new);
    assert_eq!(
        server.send(old, MessageKind::Text, b"for the old one"),
        SendStatus::Dropped(DropReason::Closed)
    );
    assert!(!server
        .send(new, MessageKind::Text, b"for the new one")
        .is_dropped());
    assert_eq!(second.recv().unwrap(), Ev::Text("for the new one".into()));
    server.shutdown_and_join();
}

#[test]
fn upgrade_hook_picks_subprotocol_adds_headers_or_rejects() {
    struct Gate;
    impl Handler for Gate {
        fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
            let (req, protocol) = (upgrade.request(), upgrade.protocol());
            if req.query() == Some("token=bad") {
                return Decision::Reject {
                    status: 401,
                    headers: vec![("WWW-Authenticate".into(), "Bearer".into())],
                    body: b"no".to_vec(),
                };
            }
            Decision::Accept {
                protocol: protocol.map(String::from),
                headers: vec![("X-Served-By".into(), "sockwave".into())],
                subscribe: Vec::new(),
                relay: None,
            }
        }
        fn on_message(&self, conn: &Conn, m: Message) {
            conn.send_owned(m.kind(), m.into_bytes());
        }
    }
    let mut cfg = config();
    cfg.subprotocols = vec!["v2.chat".into(), "v1.chat".into()];
    let server = Server::start(cfg, Gate).unwrap();
    // The client's order of preference wins among the protocols the server speaks.
    let c = Client::connect_with(server.local_addr(), "/", &["v1.chat", "v2.chat"], &[]).unwrap();
    assert_eq!(c.protocol.as_deref(), Some("v1.chat"));
    let c = Client::connect_with(server.local_addr(), "/", &["mqtt"], &[]).unwrap();
    assert_eq!(c.protocol, None);
    // A head that arrives in two parts is answered once, when it is whole.
    let bad = UPGRADE.replace("/x", "/x?token=bad");
    let head = response_head(server.local_addr(), &[bad.as_bytes(), b"\r\n"]);
    assert!(
        head.starts_with("HTTP/1.1 401 Unauthorized\r\n")
            && head.contains("WWW-Authenticate: Bearer\r\n"),
        "{head}"
    );
    let head = response_head(server.local_addr(), &[format!("{UPGRADE}\r\n").as_bytes()]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("X-Served-By: sockwave\r\n"), "{head}");
    server.shutdown_and_join();
}

#[test]
fn nothing_broadcast_overtakes_what_on_open_sends() {
    // on_open tells the test it runs, then waits for the test's broadcast
    // before it sends: the broadcast reaches the loop while on_open has not
    // returned, every time, and must still arrive after "welcome".
    struct Welcome(Gate);
    impl Handler for Welcome {
        fn on_open(&self, conn: &Conn, _req: &sockwave::protocol::Request) {
            self.0.pass();
            conn.send_text("welcome");
        }
        fn on_message(&self, _conn: &Conn, _m: Message) {}
    }
    let (g, control) = gate();
    let handler = Welcome(g);
    let server = Server::start(config(), handler).unwrap();
    for _ in 0..20 {
        let mut c = Client::connect(server.local_addr()).unwrap();
        control.wait_entered();
        server.broadcast(MessageKind::Text, b"news");
        control.open();
        assert_eq!(c.recv().unwrap(), Ev::Text("welcome".into()));
        assert_eq!(c.recv().unwrap(), Ev::Text("news".into()));
    }
    server.shutdown_and_join();
}

mod deflate {
    use super::*;
    use common::BROWSER_DEFLATE;
    use sockwave::protocol::deflate::DeflateOptions;

    fn server_with(opts: DeflateOptions) -> ServerHandle {
        let mut cfg = config();
        cfg.protocol.deflate = opts;
        cfg.protocol.max_message_size = 1 << 20;
        cfg.protocol.max_frame_size = 1 << 20;
        Server::start(cfg, Echo).unwrap()
    }

    fn json(i: usize) -> String {
        format!(
            r#"{{"id":{i},"type":"price","symbol":"ACME","bid":101.25,"ask":101.5,"levels":[[101.2,300],[101.1,900],[101.0,1200]],"note":"{}"}}"#,
            "x".repeat(i % 700)
        )
    }

    /// Bytes deflate cannot shrink (xorshift): the compressed frame is a
    /// little larger than the message.
    fn incompressible(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_limit_is_on_the_message_not_on_its_compressed_frame() {
        let limit = 256 * 1024;
        for opts in [
            DeflateOptions::stateless(),
            DeflateOptions::dedicated(15, 8),
        ] {
            let mut cfg = config();
            cfg.protocol.deflate = opts;
            cfg.protocol.max_message_size = limit as u64;
            cfg.protocol.max_frame_size = limit as u64;
            let server = Server::start(cfg, Echo).unwrap();
            let at_limit = incompressible(limit);
            let mut over = at_limit.clone();
            over.push(1);
            for fragments in [1, 5] {
                let mut c = Client::connect_with(server.local_addr(), "/", &[], &[BROWSER_DEFLATE])
                    .unwrap();
                c.send_compressed(MessageKind::Binary, &at_limit, fragments)
                    .unwrap();
                let echo = c.recv().unwrap();
                assert!(
                    echo == Ev::Binary(at_limit.clone()),
                    "{opts:?}, {fragments} fragments: the message at the limit came back as {}",
                    match &echo {
                        Ev::Binary(b) => format!("{} bytes", b.len()),
                        other => format!("{other:?}"),
                    }
                );
                c.send_compressed(MessageKind::Binary, &over, fragments)
                    .unwrap();
                assert_eq!(
                    c.recv().unwrap(),
                    Ev::Close(1009, "message too big".into()),
                    "{opts:?}, {fragments} fragments"
                );
            }
            server.shutdown_and_join();
        }
    }

    #[test]
    fn negotiated_in_each_mode_and_every_message_round_trips() {
        for (opts, expect) in [
            (
                DeflateOptions::stateless(),
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            ),
            (DeflateOptions::dedicated(15, 8), "permessage-deflate"),
            (
                DeflateOptions::dedicated(10, 3),
                "permessage-deflate; client_max_window_bits=10",
            ),
        ] {
            let server = server_with(opts);
            let mut c =
                Client::connect_with(server.local_addr(), "/", &[], &[BROWSER_DEFLATE]).unwrap();
            assert_eq!(c.extensions.as_deref(), Some(expect));
            assert!(c.compressing());
            for i in 0..200 {
                let m = json(i);
                c.send_text(&m).unwrap();
                assert_eq!(c.recv().unwrap(), Ev::Text(m));
            }
            let big: Vec<u8> = (0..300_000u32).map(|i| (i % 13) as u8).collect();
            c.send_binary(&big).unwrap();
            assert_eq!(c.recv().unwrap(), Ev::Binary(big));
            server.shutdown_and_join();
        }
    }

    #[test]
    fn off_when_disabled_or_not_offered() {
        let server = server_with(DeflateOptions::disabled());
        let c = Client::connect_with(server.local_addr(), "/", &[], &[BROWSER_DEFLATE]).unwrap();
        assert_eq!(c.extensions, None);
        server.shutdown_and_join();
        let server = server_with(DeflateOptions::stateless());
        let mut c = Client::connect(server.local_addr()).unwrap();
        assert_eq!(c.extensions, None);
        c.send_text("plain").unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Text("plain".into()));
        server.shutdown_and_join();
    }

    #[test]
    fn broadcast_compresses_once_for_all_shared_mode_recipients() {
        let server = server_with(DeflateOptions::stateless());
        let mut compressed: Vec<Client> = (0..6)
            .map(|_| {
                Client::connect_with(server.local_addr(), "/", &[], &[BROWSER_DEFLATE]).unwrap()
            })
            .collect();
        let mut plain = Client::connect(server.local_addr()).unwrap();
        // Let every on_open finish so the broadcast includes everyone.
        for c in compressed.iter_mut().chain(std::iter::once(&mut plain)) {
            c.send_text("sync").unwrap();
            assert_eq!(c.recv().unwrap(), Ev::Text("sync".into()));
        }
        let m = json(500);
        server.broadcast(MessageKind::Text, m.as_bytes());
        for c in compressed.iter_mut().chain(std::iter::once(&mut plain)) {
            assert_eq!(c.recv().unwrap(), Ev::Text(m.clone()));
        }
        server.shutdown_and_join();
    }
}

#[test]
fn inline_dispatch_keeps_every_guarantee() {
    let mut cfg = config();
    cfg.dispatch = Dispatch::Inline;
    let registry = Arc::new(Registry::default());
    let server = Server::start_arc(cfg, registry.clone()).unwrap();
    let mut a = Client::connect(server.local_addr()).unwrap();
    let mut b = Client::connect(server.local_addr()).unwrap();
    a.send_text("inline ✓").unwrap();
    assert_eq!(a.recv().unwrap(), Ev::Text("inline ✓".into()));
    a.send_fragments(MessageKind::Binary, &[b"ab", b"cd"])
        .unwrap();
    assert_eq!(a.recv().unwrap(), Ev::Binary(b"abcd".to_vec()));
    wait_until("opens", || registry.conns.lock().unwrap().len() == 2);
    server.broadcast(MessageKind::Text, b"to both");
    assert_eq!(a.recv().unwrap(), Ev::Text("to both".into()));
    assert_eq!(b.recv().unwrap(), Ev::Text("to both".into()));
    // A reply to a message sent just before a protocol violation still goes out first.
    let mut packet = Vec::new();
    let key = [9, 9, 9, 9];
    let mut text = b"last words".to_vec();
    sockwave::protocol::mask::apply_mask(&mut text, key, 0);
    packet.extend_from_slice(&[0x81, 0x80 | 10]);
    packet.extend_from_slice(&key);
    packet.extend_from_slice(&text);
    packet.extend_from_slice(&[0xC1, 0x80, 0, 0, 0, 0]); // RSV1 without an extension
    b.stream.write_all(&packet).unwrap();
    assert_eq!(b.recv().unwrap(), Ev::Text("last words".into()));
    assert_eq!(
        b.recv().unwrap(),
        Ev::Close(1002, "reserved bits set".into())
    );
    server.shutdown_and_join();
}

/// An inline handler's sends skip the loop's channel while it is empty, yet
/// keep the order the channel gave them: a send another thread makes after
/// one of the handler's (and before the next) goes out between the two.
#[test]
fn an_inline_handlers_sends_and_another_threads_keep_their_order() {
    struct Interleaved;
    impl Handler for Interleaved {
        fn on_message(&self, conn: &Conn, _: Message) {
            conn.send_text("first, from the handler");
            let other = conn.clone();
            std::thread::spawn(move || other.send_text("second, from another thread"))
                .join()
                .unwrap();
            conn.send_text("third, from the handler");
        }
    }
    let mut cfg = config();
    cfg.threads = 1;
    cfg.dispatch = Dispatch::Inline;
    let server = Server::start(cfg, Interleaved).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    for _ in 0..3 {
        c.send_text("go").unwrap();
        for expected in [
            "first, from the handler",
            "second, from another thread",
            "third, from the handler",
        ] {
            assert_eq!(c.recv().unwrap(), Ev::Text(expected.into()));
        }
    }
    server.shutdown_and_join();
}

#[test]
fn a_handle_taken_from_a_connection_can_stop_and_join_the_server() {
    let registry = Arc::new(Registry::default());
    let server = Server::start_arc(config(), registry.clone()).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    wait_until("open", || registry.conns.lock().unwrap().len() == 1);
    let from_conn = registry.conns.lock().unwrap()[0].server();
    assert_eq!(from_conn.local_addr(), server.local_addr());
    let joiner = std::thread::spawn(move || from_conn.shutdown_and_join());
    assert_eq!(
        c.recv().unwrap(),
        Ev::Close(1001, "server shutting down".into())
    );
    joiner.join().unwrap();
    // Every thread is gone: the original handle's join returns at once.
    server.join();
    assert!(TcpStream::connect(server.local_addr()).is_err());
}

/// After a clean close handshake the server closes its socket at once; when
/// bytes follow the peer's close frame it half-closes and drains instead, so
/// its close frame is not lost to a reset.
#[test]
fn a_clean_close_ends_the_socket_and_bytes_after_a_close_do_not_reset_it() {
    let server = Server::start(
        Config {
            protocol: sockwave::protocol::ProtocolConfig {
                // Long enough that only an immediate close can pass below.
                close_timeout: Duration::from_secs(60),
                ..Default::default()
            },
            ..config()
        },
        Echo,
    )
    .unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_text("before").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("before".into()));
    c.close(1000, "done").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Close(1000, "done".into()));
    assert_eq!(c.recv().unwrap(), Ev::Eof);
    // The server's descriptor is gone: writing to it soon meets a reset (a
    // lingering server would read and discard these bytes for a minute).
    wait_until("the server to close its socket", || {
        c.stream.write_all(b"x").is_err()
    });

    // A close frame with garbage behind it in the same packet.
    let mut c = Client::connect(server.local_addr()).unwrap();
    let mut close = Vec::new();
    let mut frames =
        sockwave::protocol::Connection::client(common::client_config(), Instant::now(), 7);
    frames
        .send(MessageKind::Text, b"last words", &mut close)
        .unwrap();
    let sent = close.len();
    frames.close(1000, "", Instant::now(), &mut close).unwrap();
    assert!(close.len() > sent);
    close.extend(std::iter::repeat_n(0x81u8, 64 * 1024));
    c.stream.write_all(&close).unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("last words".into()));
    assert_eq!(c.recv().unwrap(), Ev::Close(1000, String::new()));
    assert_eq!(c.recv().unwrap(), Ev::Eof);
    server.shutdown_and_join();
}

#[test]
fn a_handler_pings_within_the_limit_and_cannot_join_its_own_server() {
    struct Probe;
    impl Handler for Probe {
        fn on_message(&self, conn: &Conn, _m: Message) {
            let too_long = conn.ping(&[0; 126]);
            let longest = conn.ping(&[7; 125]);
            let server = conn.server();
            // Would wait for this very thread: returns at once instead.
            server.join();
            conn.send_text(&format!(
                "{too_long:?} {} {} {}",
                longest.is_ok(),
                server.is_server_thread(),
                server.is_running()
            ));
        }
    }
    let server = Server::start(config(), Probe).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_text("go").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Ping(vec![7; 125]));
    assert_eq!(
        c.recv().unwrap(),
        Ev::Text("Err(PayloadTooLong) true true true".into())
    );
    assert!(!server.is_server_thread());
    server.shutdown();
    assert!(!server.is_running());
    server.join();
}

#[test]
fn a_panicking_handler_closes_its_connection_with_1011_and_nothing_else() {
    struct Fragile;
    impl Handler for Fragile {
        fn on_message(&self, conn: &Conn, m: Message) {
            if m.as_text() == Some("boom") {
                panic!("the handler's own bug");
            }
            conn.send_owned(m.kind(), m.into_bytes());
        }
    }
    for dispatch in [Dispatch::Workers(1), Dispatch::Inline] {
        let mut cfg = config();
        cfg.dispatch = dispatch;
        let server = Server::start(cfg, Fragile).unwrap();
        let mut bystander = Client::connect(server.local_addr()).unwrap();
        let mut victim = Client::connect(server.local_addr()).unwrap();
        victim.send_text("boom").unwrap();
        assert_eq!(
            victim.recv().unwrap(),
            Ev::Close(1011, "handler panicked".into()),
            "{dispatch:?}"
        );
        // The same worker (there is one) and loop go on serving.
        bystander.send_text("fine").unwrap();
        assert_eq!(bystander.recv().unwrap(), Ev::Text("fine".into()));
        let mut next = Client::connect(server.local_addr()).unwrap();
        next.send_text("also fine").unwrap();
        assert_eq!(next.recv().unwrap(), Ev::Text("also fine".into()));
        assert_eq!(server.stats().handler_panics, 1);
        server.shutdown_and_join();
    }
}

/// With inline dispatch a small whole message is lent to the handler where
/// it lies (`on_message_lent`); a larger or fragmented one, and every
/// message with workers, is handed over (`on_message`). A panic in either
/// closes only its connection. The default `on_message_lent` (see
/// `Fragile` above) hands over a copy.
#[test]
fn inline_handlers_read_small_whole_messages_where_they_lie() {
    struct Paths;
    impl Handler for Paths {
        fn on_message(&self, conn: &Conn, m: Message) {
            conn.send_text(&format!("owned {} {}", m.as_bytes().len(), m.as_bytes()[0]));
        }
        fn on_message_lent(&self, conn: &Conn, kind: MessageKind, data: &[u8]) {
            if data == b"boom" {
                panic!("the handler's own bug");
            }
            assert_eq!(kind, MessageKind::Binary);
            conn.send_text(&format!("lent {} {}", data.len(), data[0]));
        }
    }
    let max = sockwave::protocol::LENT_MESSAGE_MAX;
    for (dispatch, lends) in [(Dispatch::Workers(1), false), (Dispatch::Inline, true)] {
        let mut cfg = config();
        cfg.dispatch = dispatch;
        let server = Server::start(cfg, Paths).unwrap();
        let mut c = Client::connect(server.local_addr()).unwrap();
        let expect = |len: usize, first: u8, lent: bool| {
            Ev::Text(format!(
                "{} {len} {first}",
                if lent { "lent" } else { "owned" }
            ))
        };
        for (i, len) in [1, 20, max, max + 1, 70_000].into_iter().enumerate() {
            c.send_binary(&vec![i as u8; len]).unwrap();
            let lent = lends && len <= max;
            assert_eq!(
                c.recv().unwrap(),
                expect(len, i as u8, lent),
                "{dispatch:?}"
            );
        }
        c.send_fragments(MessageKind::Binary, &[b"\x09a", b"b"])
            .unwrap();
        assert_eq!(c.recv().unwrap(), expect(3, 9, false), "{dispatch:?}");
        // Pipelined: every one answered, in order, each from its own bytes.
        let burst: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; 20]).collect();
        c.send_pipelined(MessageKind::Binary, &burst).unwrap();
        for i in 0..200u8 {
            assert_eq!(c.recv().unwrap(), expect(20, i, lends), "{dispatch:?}");
        }
        if lends {
            let mut bystander = Client::connect(server.local_addr()).unwrap();
            c.send_binary(b"boom").unwrap();
            assert_eq!(
                c.recv().unwrap(),
                Ev::Close(1011, "handler panicked".into())
            );
            bystander.send_binary(b"\x05fine").unwrap();
            assert_eq!(bystander.recv().unwrap(), expect(5, 5, true));
            assert_eq!(server.stats().handler_panics, 1);
        }
        server.shutdown_and_join();
    }
}

#[test]
fn a_second_server_on_the_same_port_fails_instead_of_sharing_it() {
    let first = echo_server();
    let mut cfg = config();
    cfg.listen = first.local_addr();
    let second = Server::start(cfg.clone(), Echo);
    let err = second.expect_err("the second server must not share the port");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    // Every connection still reaches the first.
    for i in 0..20 {
        let mut c = Client::connect(first.local_addr()).unwrap();
        c.send_text(&format!("{i}")).unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Text(format!("{i}")));
    }
    first.shutdown_and_join();
    // Once it is gone the port is free again, at once (no TIME_WAIT wait).
    Server::start(cfg, Echo).unwrap().shutdown_and_join();
}

#[test]
fn broadcasts_waiting_for_a_busy_loop_are_bounded_in_bytes() {
    // An inline handler that blocks holds its loop: broadcasts queue for it.
    struct Stuck(Gate);
    impl Handler for Stuck {
        fn on_message(&self, _conn: &Conn, _m: Message) {
            self.0.pass();
        }
    }
    let (g, control) = gate();
    let mut cfg = config();
    cfg.threads = 1;
    cfg.dispatch = Dispatch::Inline;
    cfg.max_pending_fanout = 1000;
    let handler = Stuck(g);
    let server = Server::start(cfg, handler).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_text("hold the loop").unwrap();
    control.wait_entered();
    assert!(
        server.broadcast(MessageKind::Binary, &[1; 500]),
        "an empty queue takes one"
    );
    assert!(
        !server.broadcast(MessageKind::Binary, &[2; 600]),
        "500 + 600 > 1000"
    );
    assert!(
        server.broadcast(MessageKind::Binary, &[3; 400]),
        "500 + 400 fits"
    );
    assert!(!server.publish("t", MessageKind::Binary, &[4; 200], None));
    assert_eq!(server.stats().dropped_fanout, 2);
    control.open();
    assert_eq!(c.recv().unwrap(), Ev::Binary(vec![1; 500]));
    assert_eq!(c.recv().unwrap(), Ev::Binary(vec![3; 400]));
    // Taken by the loop: the budget is free again.
    c.send_text("hold it again").unwrap();
    control.wait_entered();
    assert!(server.broadcast(MessageKind::Binary, &[5; 900]));
    control.open();
    assert_eq!(c.recv().unwrap(), Ev::Binary(vec![5; 900]));
    server.shutdown_and_join();
}

/// A handler that blocks stalls only the connections of its own worker: the
/// other worker's connections are served, and the loop goes on writing
/// pings and closing the peers that stop answering them.
#[test]
fn a_blocked_handler_stalls_only_its_worker() {
    struct Blocking(Gate);
    impl Handler for Blocking {
        fn on_message(&self, conn: &Conn, m: Message) {
            if m.as_text() == Some("block") {
                self.0.pass();
            }
            conn.send_owned(m.kind(), m.into_bytes());
        }
    }
    let (g, control) = gate();
    let mut cfg = config();
    // One loop and two workers: connections alternate between the workers
    // in the order they are accepted (slots 0, 1, 2, 3).
    cfg.threads = 1;
    cfg.dispatch = Dispatch::Workers(2);
    cfg.protocol.ping_interval = Some(Duration::from_millis(100));
    cfg.protocol.pong_timeout = Duration::from_millis(200);
    cfg.protocol.idle_timeout = None;
    let handler = Blocking(g);
    let server = Server::start(cfg, handler).unwrap();
    let addr = server.local_addr();
    let mut blocker = Client::connect(addr).unwrap(); // worker 0
    let mut other_worker = Client::connect(addr).unwrap(); // worker 1
    let mut same_worker = Client::connect(addr).unwrap(); // worker 0 again
    blocker.send_text("block").unwrap();
    control.wait_entered();
    same_worker.send_text("queued behind it").unwrap();
    // Both wait for their answer, answering the loop's pings meanwhile.
    let blocked_reply = std::thread::spawn(move || blocker.recv_message().unwrap());
    let queued_reply = std::thread::spawn(move || same_worker.recv_message().unwrap());
    // Worker 1 serves its connection while worker 0 is blocked.
    for i in 0..20 {
        other_worker.send_text(&format!("served {i}")).unwrap();
        assert_eq!(
            other_worker.recv_message().unwrap(),
            Ev::Text(format!("served {i}"))
        );
    }
    // The loop still pings, and closes a peer that never answers.
    let silent = std::thread::spawn(move || {
        raw_exchange(
            addr,
            format!("{UPGRADE}\r\n").as_bytes(),
            Duration::from_secs(5),
        )
    });
    assert_pinged_then_closed_for_silence(&silent.join().unwrap());
    // Released, the blocked worker answers what waited for it, in order.
    assert!(
        !queued_reply.is_finished(),
        "nothing for the blocked worker's connections yet"
    );
    control.open();
    assert_eq!(blocked_reply.join().unwrap(), Ev::Text("block".into()));
    assert_eq!(
        queued_reply.join().unwrap(),
        Ev::Text("queued behind it".into())
    );
    server.shutdown_and_join();
}

/// Subscribes its connection to 2,000 topics from inside `on_message`, on
/// the loop's own thread (inline dispatch), so the loop takes none of them
/// until the handler returns; reports how many were accepted.
struct SubscribeStorm;

impl Handler for SubscribeStorm {
    fn on_message(&self, conn: &Conn, _: Message) {
        let accepted = (0..2000)
            .filter(|i| conn.subscribe(&format!("t{i}")))
            .count();
        conn.send_text(&accepted.to_string());
    }
}

#[test]
fn subscribes_waiting_for_a_loop_are_bounded_per_connection() {
    let s = Server::start(
        Config {
            dispatch: Dispatch::Inline,
            ..config()
        },
        SubscribeStorm,
    )
    .unwrap();
    let mut c = Client::connect(s.local_addr()).unwrap();
    c.send_text("go").unwrap();
    assert_eq!(c.recv_message().unwrap(), Ev::Text("1024".into()));
    // Those accepted took effect; the loop has them all by the time the
    // echo above was written, so a publish now reaches the connection.
    assert!(s.publish("t1023", MessageKind::Text, b"kept", None));
    assert_eq!(c.recv_message().unwrap(), Ev::Text("kept".into()));
    // And the count came back down: another storm gets the full share.
    c.send_text("again").unwrap();
    assert_eq!(c.recv_message().unwrap(), Ev::Text("1024".into()));
    s.shutdown_and_join();
}

/// Subscribes its connection as told: `join NAME`, `leave NAME`; answers
/// "ok" once the call was made, "refused" when it returned false.
struct Joiner;

impl Handler for Joiner {
    fn on_message(&self, conn: &Conn, m: Message) {
        let text = m.as_text().unwrap_or_default();
        let done = match text.split_once(' ') {
            Some(("join", topic)) => conn.subscribe(topic),
            Some(("leave", topic)) => conn.unsubscribe(topic),
            _ => false,
        };
        conn.send_text(if done { "ok" } else { "refused" });
    }
}

#[test]
fn a_connection_is_in_at_most_max_subscriptions_topics() {
    let s = Server::start(
        Config {
            max_subscriptions: 2,
            max_topic_length: 8,
            ..config()
        },
        Joiner,
    )
    .unwrap();
    let mut c = Client::connect(s.local_addr()).unwrap();
    let say = |c: &mut Client, what: &str| {
        c.send_text(what).unwrap();
        assert_eq!(c.recv_message().unwrap(), Ev::Text("ok".into()), "{what}");
    };
    for what in ["join a", "join b", "join a", "join c"] {
        say(&mut c, what);
    }
    // "join a" again was no new topic; "join c" was one too many. Each
    // publish's loop took the joins before it (they are ordered with the
    // "ok" that came back), so what arrives shows what was kept.
    assert_eq!(s.stats().subscriptions_refused, 1);
    for topic in ["c", "a", "b"] {
        assert!(s.publish(topic, MessageKind::Text, topic.as_bytes(), None));
    }
    assert_eq!(
        c.recv_message().unwrap(),
        Ev::Text("a".into()),
        "c was refused"
    );
    assert_eq!(c.recv_message().unwrap(), Ev::Text("b".into()));
    // Leaving one makes room for another.
    say(&mut c, "leave a");
    say(&mut c, "join c");
    assert!(s.publish("a", MessageKind::Text, b"a", None));
    assert!(s.publish("c", MessageKind::Text, b"c", None));
    assert_eq!(
        c.recv_message().unwrap(),
        Ev::Text("c".into()),
        "a was left"
    );
    assert_eq!(s.stats().subscriptions_refused, 1);
    // A name past `max_topic_length` is refused on the spot, with room or not.
    say(&mut c, "leave b");
    c.send_text("join 123456789").unwrap();
    assert_eq!(c.recv_message().unwrap(), Ev::Text("refused".into()));
    say(&mut c, "join 12345678");
    assert_eq!(s.stats().subscriptions_refused, 2);
    assert!(s.publish("12345678", MessageKind::Text, b"8", None));
    assert_eq!(c.recv_message().unwrap(), Ev::Text("8".into()));
    s.shutdown_and_join();
}

/// Keeps the user named by the path with the connection at the upgrade,
/// and counts messages in the connection's data afterwards.
struct Users;

#[derive(Debug)]
struct User {
    name: String,
    seen: usize,
}

impl Handler for Users {
    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        upgrade.set_data(User {
            name: upgrade.request().path().trim_start_matches('/').into(),
            seen: 0,
        });
        Decision::accept()
    }

    fn on_message(&self, conn: &Conn, message: Message) {
        let user = conn.data::<User>().expect("kept since the upgrade");
        let seen = user.seen + 1;
        conn.send_text(&format!(
            "{} #{seen}: {}",
            user.name,
            message.as_text().unwrap()
        ));
        conn.set_data(User {
            name: user.name.clone(),
            seen,
        });
        assert!(
            conn.data::<String>().is_none(),
            "a different type is not there"
        );
    }
}

#[test]
fn data_kept_with_a_connection_from_the_upgrade_on() {
    let s = Server::start(config(), Users).unwrap();
    let mut ann = Client::connect_with(s.local_addr(), "/ann", &[], &[]).unwrap();
    let mut bob = Client::connect_with(s.local_addr(), "/bob", &[], &[]).unwrap();
    ann.send_text("hi").unwrap();
    assert_eq!(ann.recv_message().unwrap(), Ev::Text("ann #1: hi".into()));
    bob.send_text("hi").unwrap();
    assert_eq!(bob.recv_message().unwrap(), Ev::Text("bob #1: hi".into()));
    ann.send_text("hi").unwrap();
    assert_eq!(ann.recv_message().unwrap(), Ev::Text("ann #2: hi".into()));
    ann.send_text("again").unwrap();
    assert_eq!(
        ann.recv_message().unwrap(),
        Ev::Text("ann #3: again".into())
    );
    s.shutdown_and_join();
}

#[test]
fn latency_histograms_count_handshakes_dispatch_waits_and_send_waits() {
    let s = echo_server();
    let mut clients: Vec<Client> = (0..3)
        .map(|_| Client::connect(s.local_addr()).unwrap())
        .collect();
    for c in &mut clients {
        for i in 0..5 {
            c.send_text(&format!("m{i}")).unwrap();
            assert_eq!(c.recv_message().unwrap(), Ev::Text(format!("m{i}")));
        }
    }
    // Counted at the end of the turn that did the work: the last echo can
    // reach us first.
    wait_until("the counts", || {
        let l = s.latencies();
        l.handshake.count == 3 && l.dispatch.count == 15 && l.send.count >= 15
    });
    let l = s.latencies();
    assert!(l.handshake.quantile_bound_us(0.5).is_some());
    wait_until("nothing owed once everything is echoed", || {
        s.loop_gauges()
            .iter()
            .all(|g| g.queued_bytes == 0 && g.connections == 1)
            || s.loop_gauges().iter().map(|g| g.connections).sum::<usize>() == 3
                && s.loop_gauges().iter().all(|g| g.queued_bytes == 0)
    });
    assert_eq!(
        l.handshake.buckets.last().unwrap().1,
        l.handshake.count,
        "none past 5 s"
    );
    s.shutdown_and_join();
}

/// A relay: the loop publishes what the connection sends to its topic (never
/// back to it) and the handler's `on_message` is not called; `on_open` and
/// `on_close` still are.
#[derive(Default)]
struct RelayRooms {
    messages: AtomicUsize,
    opens: AtomicUsize,
    closes: AtomicUsize,
}

impl Handler for RelayRooms {
    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        let room = upgrade.request().path().to_string();
        Decision::Accept {
            protocol: None,
            headers: Vec::new(),
            subscribe: vec![room.clone()],
            relay: Some(room),
        }
    }
    fn on_open(&self, _: &Conn, _: &sockwave::protocol::Request) {
        self.opens.fetch_add(1, Ordering::SeqCst);
    }
    fn on_message(&self, _: &Conn, _: Message) {
        self.messages.fetch_add(1, Ordering::SeqCst);
    }
    fn on_close(&self, _: &Conn, _: u16, _: &str) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_relay_publishes_from_the_loop_and_the_handler_sees_no_messages() {
    let rooms = Arc::new(RelayRooms::default());
    let server = Server::start_arc(config(), rooms.clone()).unwrap();
    let addr = server.local_addr();
    let mut a = Client::connect_with(addr, "/r1", &[], &[]).unwrap();
    let mut b = Client::connect_with(addr, "/r1", &[], &[]).unwrap();
    let mut c = Client::connect_with(addr, "/r2", &[], &[]).unwrap();
    wait_until("opens", || rooms.opens.load(Ordering::SeqCst) == 3);
    for i in 0..100 {
        a.send_binary(&[i; 300]).unwrap();
    }
    for i in 0..100 {
        assert_eq!(
            b.recv().unwrap(),
            Ev::Binary(vec![i; 300]),
            "in order, once"
        );
    }
    c.send_text("r2 only").unwrap();
    b.send_text("to a").unwrap();
    // a's next message is b's: nothing of its own came back, nothing of r2's.
    assert_eq!(a.recv().unwrap(), Ev::Text("to a".into()));
    // A publish from the server reaches relay connections like any subscriber.
    assert!(server.publish("/r2", MessageKind::Text, b"hello r2", None));
    assert_eq!(c.recv().unwrap(), Ev::Text("hello r2".into()));
    assert_eq!(rooms.messages.load(Ordering::SeqCst), 0);
    a.close(1000, "").unwrap();
    wait_until("a's close", || rooms.closes.load(Ordering::SeqCst) == 1);
    server.shutdown_and_join();
}

/// Sends "before", then blocks at the gate until the test lets it go.
struct SendThenBlock(Gate);

impl Handler for SendThenBlock {
    fn on_message(&self, conn: &Conn, _: Message) {
        conn.send_text("before");
        self.0.pass();
        conn.send_text("after");
    }
}

/// A worker wakes its loop once per batch, at the batch's end; a handler
/// that sends and then blocks must not hold its send back until it returns.
#[test]
fn a_send_goes_out_while_its_handler_is_still_blocked() {
    let (gate, control) = gate();
    let server = Server::start(config(), SendThenBlock(gate)).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_text("go").unwrap();
    control.wait_entered();
    // The handler is blocked at the gate: "before" arrives all the same.
    assert_eq!(c.recv().unwrap(), Ev::Text("before".into()));
    control.open();
    assert_eq!(c.recv().unwrap(), Ev::Text("after".into()));
    server.shutdown_and_join();
}

/// A connect storm with a slow `on_open` leaves at most 16 requests waiting
/// at a worker (the loop's `OPENS_WAITING_PER_WORKER`): the loop reads no
/// more request heads for that worker until `on_open` calls return, and then
/// every connection still opens.
#[test]
fn a_connect_storm_waits_for_on_open_instead_of_piling_requests_up() {
    struct SlowOpen {
        tokens: Mutex<std::sync::mpsc::Receiver<()>>,
        upgrades: AtomicUsize,
        returned: AtomicUsize,
        most_waiting: AtomicUsize,
    }
    impl Handler for SlowOpen {
        fn on_upgrade(&self, _: &Upgrade<'_>) -> Decision {
            // Decided on the loop, before the connection's `on_open` is queued.
            let upgrades = self.upgrades.fetch_add(1, Ordering::SeqCst) + 1;
            let waiting = upgrades - self.returned.load(Ordering::SeqCst);
            self.most_waiting.fetch_max(waiting, Ordering::SeqCst);
            Decision::accept()
        }
        fn on_open(&self, _: &Conn, _: &sockwave::protocol::Request) {
            self.tokens.lock().unwrap().recv().unwrap();
            self.returned.fetch_add(1, Ordering::SeqCst);
        }
        fn on_message(&self, _: &Conn, _: Message) {}
    }
    const CLIENTS: usize = 100;
    let (give, tokens) = std::sync::mpsc::channel();
    let handler = Arc::new(SlowOpen {
        tokens: Mutex::new(tokens),
        upgrades: AtomicUsize::new(0),
        returned: AtomicUsize::new(0),
        most_waiting: AtomicUsize::new(0),
    });
    let mut cfg = config();
    cfg.threads = 1;
    cfg.dispatch = Dispatch::Workers(1);
    let server = Server::start_arc(cfg, Arc::clone(&handler) as Arc<dyn Handler>).unwrap();
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(format!("{UPGRADE}\r\n").as_bytes()).unwrap();
            s
        })
        .collect();
    wait_until("16 requests decided", || {
        handler.upgrades.load(Ordering::SeqCst) >= 16
    });
    for _ in 0..CLIENTS {
        give.send(()).unwrap();
    }
    for s in &mut clients {
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
    }
    assert_eq!(handler.upgrades.load(Ordering::SeqCst), CLIENTS);
    assert_eq!(handler.most_waiting.load(Ordering::SeqCst), 16);
    server.shutdown_and_join();
}

/// A connect storm whose `on_open` returns at once still opens every
/// connection: the loop holds request heads while 16 `on_open` calls wait at
/// the worker, and must read them once the calls come back, in whichever part
/// of its turn it takes their answers (a turn that took them after releasing
/// held heads left some connections waiting for an event that never came).
#[test]
fn a_connect_storm_with_a_quick_on_open_opens_every_connection() {
    struct Quick;
    impl Handler for Quick {
        fn on_message(&self, _: &Conn, _: Message) {}
    }
    const CLIENTS: usize = 400;
    let mut cfg = config();
    cfg.threads = 1;
    cfg.dispatch = Dispatch::Workers(1);
    let server = Server::start(cfg, Quick).unwrap();
    let addr = server.local_addr();
    for round in 0..3 {
        let mut clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(format!("{UPGRADE}\r\n").as_bytes()).unwrap();
                s
            })
            .collect();
        for (i, s) in clients.iter_mut().enumerate() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head)
                .unwrap_or_else(|e| panic!("round {round}, client {i}: no answer ({e})"));
            assert_eq!(&head, b"HTTP/1.1 101");
        }
    }
    server.shutdown_and_join();
}

/// Records the scheduling policy of the thread each hook runs on.
#[derive(Default)]
struct Policies {
    upgrade: Mutex<Vec<i32>>,
    message: Mutex<Vec<i32>>,
}

impl Handler for Policies {
    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        // SAFETY: no arguments but this thread's id (0).
        let policy = unsafe { libc::sched_getscheduler(0) };
        self.upgrade.lock().unwrap().push(policy);
        Decision::Accept {
            protocol: upgrade.protocol().map(str::to_string),
            headers: Vec::new(),
            subscribe: Vec::new(),
            relay: None,
        }
    }

    fn on_message(&self, conn: &Conn, msg: Message) {
        // SAFETY: as above.
        let policy = unsafe { libc::sched_getscheduler(0) };
        self.message.lock().unwrap().push(policy);
        conn.send_binary(msg.as_bytes());
    }
}

/// With workers, loops run under SCHED_BATCH (their wake-ups wait for the
/// worker on their core instead of preempting it) and workers as usual;
/// inline, the loop keeps the usual policy, having no worker to wait for.
/// (A loop that found a busy task on its core leaves SCHED_BATCH for a
/// while, and counts it: on a loaded machine that may come first.)
#[test]
fn loops_yield_to_workers_and_only_with_workers() {
    for (dispatch, loop_policy) in [
        (Dispatch::Workers(1), libc::SCHED_BATCH),
        (Dispatch::Inline, libc::SCHED_OTHER),
    ] {
        let mut cfg = config();
        cfg.dispatch = dispatch;
        let handler = Arc::new(Policies::default());
        let server = Server::start_arc(cfg, handler.clone()).unwrap();
        let mut c = Client::connect(server.local_addr()).unwrap();
        c.send_binary(b"which thread?").unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Binary(b"which thread?".to_vec()));
        let seen = handler.upgrade.lock().unwrap().clone();
        let left_batch = server.stats().loop_batch_exits > 0;
        assert!(
            seen == [loop_policy] || (left_batch && seen == [libc::SCHED_OTHER]),
            "{dispatch:?}: {seen:?}"
        );
        let handler_policy = match dispatch {
            Dispatch::Inline => loop_policy,
            _ => libc::SCHED_OTHER,
        };
        assert_eq!(*handler.message.lock().unwrap(), [handler_policy]);
        server.shutdown_and_join();
    }
}

/// On "go" from `/pub`: per round, publishes to "t" (one with subscriber A
/// excluded), sends to A directly, publishes again. Subscribers join "t"
/// at the upgrade; A is the one on `/a`.
#[derive(Default)]
struct Interleaved {
    server: std::sync::OnceLock<ServerHandle>,
    a: Mutex<Option<Conn>>,
    opens: AtomicUsize,
}

const INTERLEAVED_ROUNDS: usize = 200;

impl Handler for Interleaved {
    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        let subscribe = match upgrade.request().path() {
            "/pub" => Vec::new(),
            _ => vec!["t".to_string()],
        };
        Decision::Accept {
            protocol: None,
            headers: Vec::new(),
            subscribe,
            relay: None,
        }
    }
    fn on_open(&self, conn: &Conn, request: &sockwave::protocol::Request) {
        if request.path() == "/a" {
            *self.a.lock().unwrap() = Some(conn.clone());
        }
        self.opens.fetch_add(1, Ordering::SeqCst);
    }
    fn on_message(&self, _: &Conn, _: Message) {
        let server = self.server.get().unwrap();
        let a = self.a.lock().unwrap().clone().unwrap();
        for i in 0..INTERLEAVED_ROUNDS {
            server.publish("t", MessageKind::Text, format!("p{i}").as_bytes(), None);
            server.publish(
                "t",
                MessageKind::Text,
                format!("x{i}").as_bytes(),
                Some(a.id()),
            );
            a.send_text(&format!("s{i}"));
            server.publish("t", MessageKind::Text, format!("q{i}").as_bytes(), None);
        }
    }
}

/// Publishes that follow each other are delivered to a loop's subscribers
/// as a run; a send or an exclusion between them keeps every subscriber's
/// order and what each one gets exactly as if each were delivered alone.
#[test]
fn publishes_delivered_as_a_run_keep_each_subscribers_order_and_exclusions() {
    for dispatch in [Dispatch::Workers(1), Dispatch::Inline] {
        let mut cfg = config();
        cfg.threads = 1;
        cfg.dispatch = dispatch;
        let handler = Arc::new(Interleaved::default());
        let server = Server::start_arc(cfg, handler.clone()).unwrap();
        handler.server.set(server.clone()).ok().unwrap();
        let addr = server.local_addr();
        let mut a = Client::connect_with(addr, "/a", &[], &[]).unwrap();
        let mut b = Client::connect_with(addr, "/b", &[], &[]).unwrap();
        let mut publisher = Client::connect_with(addr, "/pub", &[], &[]).unwrap();
        wait_until("opens", || handler.opens.load(Ordering::SeqCst) == 3);
        publisher.send_text("go").unwrap();
        for i in 0..INTERLEAVED_ROUNDS {
            for expected in [format!("p{i}"), format!("s{i}"), format!("q{i}")] {
                assert_eq!(a.recv().unwrap(), Ev::Text(expected), "{dispatch:?}: a");
            }
            for expected in [format!("p{i}"), format!("x{i}"), format!("q{i}")] {
                assert_eq!(b.recv().unwrap(), Ev::Text(expected), "{dispatch:?}: b");
            }
        }
        server.shutdown_and_join();
    }
}

/// An inline handler's replies to its own connection go straight into that
/// connection's queue, but never past what the handler sent before them:
/// a publish (waiting in the loop's own list) or a close.
#[derive(Default)]
struct RepliesAroundPublishes {
    server: std::sync::OnceLock<ServerHandle>,
}

impl Handler for RepliesAroundPublishes {
    fn on_upgrade(&self, _: &Upgrade<'_>) -> Decision {
        Decision::Accept {
            protocol: None,
            headers: Vec::new(),
            subscribe: vec!["t".to_string()],
            relay: None,
        }
    }
    fn on_message(&self, conn: &Conn, message: Message) {
        let server = self.server.get().unwrap();
        let text = String::from_utf8(message.into_bytes()).unwrap();
        match text.as_str() {
            "mixed" => {
                conn.send_text("1");
                server.publish("t", MessageKind::Text, b"2", None);
                conn.send_text("3");
                conn.send_owned(MessageKind::Text, b"4".to_vec());
            }
            "bye" => {
                conn.send_text("last");
                conn.close(4000, "done");
                assert!(conn.send_text("after close").is_dropped());
            }
            _ => {
                conn.send_owned(MessageKind::Text, text.into_bytes());
            }
        }
    }
}

#[test]
fn inline_replies_keep_their_order_behind_publishes_and_closes() {
    let mut cfg = config();
    cfg.threads = 1;
    cfg.dispatch = Dispatch::Inline;
    let handler = Arc::new(RepliesAroundPublishes::default());
    let server = Server::start_arc(cfg, handler.clone()).unwrap();
    handler.server.set(server.clone()).ok().unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    // Pipelined: many replies in one read, each straight into the queue.
    let sent: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    for m in &sent {
        c.send_text(m).unwrap();
    }
    for m in &sent {
        assert_eq!(c.recv().unwrap(), Ev::Text(m.clone()));
    }
    for round in 0..50 {
        c.send_text("mixed").unwrap();
        c.send_text(&format!("after {round}")).unwrap();
        for expected in ["1", "2", "3", "4", &format!("after {round}")] {
            assert_eq!(c.recv().unwrap(), Ev::Text(expected.into()), "{round}");
        }
    }
    c.send_text("bye").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("last".into()));
    assert_eq!(c.recv().unwrap(), Ev::Close(4000, "done".into()));
    // Every reply counted once, the publish's delivery too.
    wait_until("the statistics", || {
        server.stats().messages_out == 500 + 50 * 5 + 1
    });
    server.shutdown_and_join();
}
