//! The `sockwave` binary: plain HTTP on the WebSocket port, metrics that move
//! with traffic, Origin checks, configuration from the environment, and a
//! graceful SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{raw_exchange, response_head, Client, Ev, UPGRADE};

struct Running {
    child: Child,
    addr: SocketAddr,
}

fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
    spawn(command(args, env))
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockwave"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--workers",
        "2",
    ])
    .args(args)
    .envs(env.iter().copied())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

fn spawn(mut cmd: Command) -> Running {
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line
            .split("listening on ws://")
            .nth(1)
            .or(line.split("listening on wss://").nth(1))
        {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Running { child, addr }
}

impl Running {
    fn get(&self, path: &str) -> (String, String) {
        let got = raw_exchange(
            self.addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        let text = String::from_utf8(got).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_string(), body.to_string())
    }

    fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} not in:\n{body}"))
            .parse()
            .unwrap()
    }

    fn sigterm(mut self) -> i32 {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn plain_http_pages_and_statuses() {
    let s = start(&[], &[]);
    let (status, body) = s.get("/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("new WebSocket(") && body.contains("bufferedAmount"));
    assert_eq!(s.get("/healthz"), ("HTTP/1.1 200 OK".into(), "ok\n".into()));
    assert_eq!(s.get("/favicon.ico").0, "HTTP/1.1 404 Not Found");
    assert_eq!(s.get("/chat/lobby").0, "HTTP/1.1 426 Upgrade Required");
    let post = raw_exchange(
        s.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(post.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
    // The handshake's headers without `Upgrade: websocket` (or with another
    // protocol's) make a failed upgrade, answered as one: never the page.
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    for upgrade in ["", "Upgrade: h2c\r\nConnection: Upgrade\r\n"] {
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\n{upgrade}{key}\r\n");
        let head = response_head(s.addr, &[req.as_bytes()]);
        assert!(
            head.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{head}"
        );
        assert!(head.contains("Upgrade: websocket\r\n"), "{head}");
    }
    // /chat/lobby's 426 and the two failed upgrades.
    assert_eq!(
        s.metric("sockwave_handshake_failures_total{reason=\"invalid\"}"),
        3
    );
    assert_eq!(s.sigterm(), 0);
}

#[test]
fn metrics_move_as_traffic_flows() {
    let s = start(&["--max-message-size", "1K"], &[]);
    assert_eq!(s.metric("sockwave_connections_open"), 0);
    let mut c = Client::connect(s.addr).unwrap();
    for i in 0..10 {
        c.send_text(&format!("message {i}")).unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Text(format!("message {i}")));
    }
    assert_eq!(s.metric("sockwave_connections_open"), 1);
    assert_eq!(
        s.metric("sockwave_loop_connections{loop=\"0\"}")
            + s.metric("sockwave_loop_connections{loop=\"1\"}"),
        1,
        "the per-loop gauges add up"
    );
    assert!(s.metric("process_open_fds") > 0);
    assert!(s.metric("process_resident_memory_bytes") > 1 << 20);
    let build = format!(
        "sockwave_build_info{{version=\"{}\",tls=\"true\",redis=\"true\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(s.metric(&build), 1);
    // The latency histograms count what happened: one handshake, ten
    // messages through a worker, and at least the ten replies written.
    assert_eq!(s.metric("sockwave_handshake_duration_seconds_count"), 1);
    assert_eq!(s.metric("sockwave_dispatch_wait_seconds_count"), 10);
    assert!(s.metric("sockwave_send_wait_seconds_count") >= 10);
    assert_eq!(
        s.metric("sockwave_handshake_duration_seconds_bucket{le=\"+Inf\"}"),
        1
    );
    assert_eq!(s.metric("sockwave_connections_total"), 1);
    assert_eq!(s.metric("sockwave_messages_received_total"), 10);
    assert_eq!(s.metric("sockwave_messages_sent_total"), 10);
    assert_eq!(s.metric("sockwave_bytes_received_total"), 10 * 9);
    // A refused handshake and a too-big message show up too.
    // Sent in two parts: answered once, when the head is whole.
    let old_version = UPGRADE.replace(": 13", ": 8");
    let head = response_head(s.addr, &[old_version.as_bytes(), b"\r\n"]);
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
    assert_eq!(
        s.metric("sockwave_handshake_failures_total{reason=\"invalid\"}"),
        1
    );
    c.send_binary(&[0u8; 2000]).unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Close(1009, "frame too big".into()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.metric("sockwave_connections_open") != 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.sigterm(), 0);
}

#[test]
fn disallowed_origin_gets_403_and_allowed_ones_connect() {
    // From the environment this time, comma-separated.
    let s = start(
        &[],
        &[(
            "SOCKWAVE_ALLOWED_ORIGINS",
            "https://app.example,https://admin.example",
        )],
    );
    let good = Client::connect_with(s.addr, "/", &[], &[("Origin", "https://admin.example")]);
    assert!(good.is_ok());
    let got = raw_exchange(
        s.addr,
        format!("{UPGRADE}Origin: https://evil.example\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(
        got.starts_with(b"HTTP/1.1 403 Forbidden\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        s.metric("sockwave_handshake_failures_total{reason=\"origin\"}"),
        1
    );
    drop(good);
    assert_eq!(s.sigterm(), 0);
}

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let s = start(&["--mode", "broadcast"], &[]);
    let mut clients: Vec<Client> = (0..5).map(|_| Client::connect(s.addr).unwrap()).collect();
    clients[0].send_text("before the end").unwrap();
    for c in &mut clients[1..] {
        assert_eq!(c.recv().unwrap(), Ev::Text("before the end".into()));
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| std::thread::spawn(move || (c.recv_message().unwrap(), c.recv().unwrap())))
        .collect();
    let started = Instant::now();
    assert_eq!(s.sigterm(), 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    for r in readers {
        assert_eq!(
            r.join().unwrap(),
            (Ev::Close(1001, "server shutting down".into()), Ev::Eof)
        );
    }
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_sockwave"))
        .arg("--help")
        .output()
        .unwrap();
    let mut help = String::new();
    out.stdout.as_slice().read_to_string(&mut help).unwrap();
    for flag in [
        "--listen",
        "--threads",
        "--workers",
        "--max-connections",
        "--max-message-size",
        "--idle-timeout",
        "--ping-interval",
        "--allowed-origin",
        "--subprotocol",
        "--mode",
        "--log-level",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("SOCKWAVE_LISTEN"));
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_small_compressed_bomb_gets_1009_and_no_memory() {
    let s = start(&["--max-message-size", "64K"], &[]);
    let mut warm = Client::connect_with(s.addr, "/", &[], &[common::BROWSER_DEFLATE]).unwrap();
    warm.send_text(&"warm up ".repeat(100)).unwrap();
    assert!(matches!(warm.recv().unwrap(), Ev::Text(_)));
    let before = peak_rss_kib(s.child.id());
    // About 1 KB on the wire that inflates to 1 MiB, then 16 KB that inflate to 16 MiB.
    for size in [1usize << 20, 16 << 20] {
        let mut c = Client::connect_with(s.addr, "/", &[], &[common::BROWSER_DEFLATE]).unwrap();
        assert!(c.compressing());
        c.send_binary(&vec![0u8; size]).unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Close(1009, "message too big".into()));
    }
    let after = peak_rss_kib(s.child.id());
    assert!(
        after.saturating_sub(before) < 4 * 1024,
        "peak RSS grew by {} KiB (from {before} to {after})",
        after - before
    );
    // The other connection is unaffected.
    warm.send_text("still here").unwrap();
    assert_eq!(warm.recv().unwrap(), Ev::Text("still here".into()));
    assert_eq!(s.sigterm(), 0);
}

/// The server's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// A million pings in one burst from a client that never reads: the pongs
/// owed are bounded by the send cap (the connection stops being read while
/// its queue is over it), not by what the client manages to send.
#[test]
fn a_ping_flood_from_a_client_that_does_not_read_is_bounded() {
    use std::io::Write;
    let s = start(&["--max-buffered", "1M"], &[]);
    let before = rss_bytes(s.child.id());
    let mut flood = Client::connect(s.addr).unwrap();
    let mut ping = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
    ping.extend((0..125u8).map(|i| i ^ [1, 2, 3, 4][usize::from(i % 4)]));
    let burst = ping.repeat(8192); // ~1 MiB a write
    flood
        .stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sent = 0usize;
    while sent < 1_000_000 * ping.len() {
        // The write times out once the server stops reading and the
        // socket buffers are full: that is the push-back this checks.
        match flood.stream.write(&burst) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let grown = rss_bytes(s.child.id()).saturating_sub(before);
    assert!(
        sent < 1_000_000 * ping.len(),
        "the server read all {sent} bytes of pings: nothing pushed back"
    );
    assert!(
        grown < 24 << 20,
        "server RSS grew by {} KiB after {} KiB of pings",
        grown >> 10,
        sent >> 10
    );
    // The other connections never noticed.
    let mut other = Client::connect(s.addr).unwrap();
    other.send_text("still here").unwrap();
    assert_eq!(other.recv().unwrap(), Ev::Text("still here".into()));
    // Leaving with everything unread resets the socket: the server notices
    // although it no longer reads that connection.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.metric("sockwave_connections_open") != 1 {
        assert!(
            Instant::now() < deadline,
            "the flooding connection was never released"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "flood: {} KiB sent, server RSS +{} KiB",
        sent >> 10,
        grown >> 10
    );
    other.close(1000, "").unwrap();
    assert_eq!(other.recv().unwrap(), Ev::Close(1000, String::new()));
    assert_eq!(s.sigterm(), 0);
}

/// Server CPU time (user + system), from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Out of descriptors: the loop neither spins on accept's EMFILE nor stops
/// serving, and the connections waiting in the backlog are accepted once
/// descriptors are free again (an edge-triggered listener raises no new event
/// for them by itself).
#[test]
fn out_of_descriptors_the_server_waits_serves_and_recovers() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    const LIMIT: u64 = 64;
    let mut cmd = command(&[], &[]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child yet.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let s = spawn(cmd);
    let pid = s.child.id();
    let mut steady = Client::connect(s.addr).unwrap();
    // More connections than descriptors left, each with its upgrade request.
    let mut waiting: Vec<std::net::TcpStream> = (0..LIMIT)
        .map(|_| {
            let mut t = std::net::TcpStream::connect(s.addr).unwrap();
            t.write_all(format!("{UPGRADE}\r\n").as_bytes()).unwrap();
            t
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) < LIMIT as usize {
        assert!(
            Instant::now() < deadline,
            "the server never ran out of descriptors"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Out of descriptors: no busy loop on the failing accept...
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_millis(500));
    let ticks_per_sec = 100.0; // USER_HZ
    let busy = (cpu_ticks(pid) - cpu0) as f64 / ticks_per_sec / t0.elapsed().as_secs_f64();
    assert!(
        busy < 0.25,
        "the server used {:.0}% CPU while out of descriptors",
        busy * 100.0
    );
    // ...and the open connection is served.
    steady.send_text("served").unwrap();
    assert_eq!(steady.recv().unwrap(), Ev::Text("served".into()));
    // Free descriptors: the last connection, still in the backlog, is upgraded.
    let mut last = waiting.pop().unwrap();
    // The first ones were accepted (the backlog is first in, first out).
    drop(waiting.drain(..LIMIT as usize / 2));
    last.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut last, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    drop(waiting);
    drop(last);
    steady.close(1000, "").unwrap();
    assert_eq!(steady.recv().unwrap(), Ev::Close(1000, String::new()));
    assert_eq!(s.sigterm(), 0);
}

#[test]
fn a_second_server_on_the_same_address_exits_with_an_error() {
    let s = start(&[], &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_sockwave"))
        .args(["--listen", &s.addr.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains("another server listens there"),
        "{stderr}"
    );
    let mut c = Client::connect(s.addr).unwrap();
    c.send_text("still mine").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("still mine".into()));
    drop(c);
    assert_eq!(s.sigterm(), 0);
}

/// The binary over TLS: --tls-cert and --tls-key (files made here), wss
/// echo, and the demo page over https on the same port.
#[cfg(feature = "tls")]
#[test]
fn tls_flags_serve_wss_and_the_page_over_https() {
    use std::io::{Read as _, Write as _};
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("sockwave-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let s = start(
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        &[],
    );
    let fresh = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let client = common::trusting(&[cert.der(), fresh.cert.der()]);
    let mut c = Client::connect_tls(s.addr, client.clone(), "localhost").unwrap();
    c.send_text("secure").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("secure".into()));
    // The demo page, over https on the same port.
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut https = rustls::Stream::new(&mut tls, &mut tcp);
    https
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut page = Vec::new();
    let _ = https.read_to_end(&mut page);
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("new WebSocket("));
    // SIGHUP re-reads the files: new handshakes get the new certificate, the
    // open connection keeps going; broken files keep the old one.
    let served = common::served_certificate;
    assert_eq!(served(&c), cert.der().to_vec());
    let hup = |pid: u32| unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    std::fs::write(&cert_path, fresh.cert.pem()).unwrap();
    std::fs::write(&key_path, fresh.key_pair.serialize_pem()).unwrap();
    hup(s.child.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let probe = Client::connect_tls(s.addr, client.clone(), "localhost").unwrap();
        if served(&probe) == fresh.cert.der().to_vec() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&cert_path, "not a certificate\n").unwrap();
    hup(s.child.id());
    c.send_text("after reloads").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("after reloads".into()));
    let probe = Client::connect_tls(s.addr, client.clone(), "localhost").unwrap();
    assert_eq!(
        served(&probe),
        fresh.cert.der().to_vec(),
        "a broken reload kept the certificate"
    );
    drop(probe);
    std::fs::write(&cert_path, fresh.cert.pem()).unwrap();
    // A key file that is not a key: a clear error naming it, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_sockwave"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("private key") && stderr.contains("cert.pem"),
        "{stderr}"
    );
    drop(c);
    assert_eq!(s.sigterm(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "redis")]
#[test]
fn redis_flag_makes_pubsub_span_nodes_and_healthz_tells_the_broker_state() {
    use common::redis_server::Redis;
    use common::wait_until;

    let mut redis = Redis::start(&[]);
    let url = redis.url();
    // One node from the flag, one from the environment.
    let one = start(&["--mode", "pubsub", "--redis", &url], &[]);
    let two = start(
        &["--mode", "pubsub"],
        &[
            ("SOCKWAVE_REDIS", &url),
            ("SOCKWAVE_REDIS_PREFIX", "sockwave:"),
        ],
    );
    let mut a = Client::connect_with(one.addr, "/room", &[], &[]).unwrap();
    let mut b = Client::connect_with(two.addr, "/room", &[], &[]).unwrap();
    wait_until("both nodes subscribed", || {
        redis.numsub("sockwave:topic:/room") == 2
    });
    wait_until("both nodes healthy", || {
        [&one, &two].iter().all(|n| {
            n.get("/healthz") == ("HTTP/1.1 200 OK".into(), "ok\nbroker: healthy\n".into())
        })
    });
    a.send_text("across").unwrap();
    assert_eq!(b.recv_message().unwrap(), Ev::Text("across".into()));
    // Counted when Redis answers the PUBLISH, which may come after `b` has it.
    wait_until("the publish counted", || {
        one.metric("sockwave_broker_published_total") >= 1
    });
    assert_eq!(one.metric("sockwave_broker_published_total"), 1);
    assert_eq!(two.metric("sockwave_broker_received_total"), 1);
    assert_eq!(
        two.metric("sockwave_broker_delivery_latency_seconds_count"),
        1
    );

    redis.kill();
    wait_until("degraded, still 200", || {
        let (status, body) = one.get("/healthz");
        status == "HTTP/1.1 200 OK" && body.starts_with("degraded\nbroker: ")
    });
    assert_eq!(one.metric("sockwave_broker_connected"), 0);
    drop((a, b));
    assert_eq!(one.sigterm(), 0);
    assert_eq!(two.sigterm(), 0);
}

#[test]
fn rate_limit_flags_close_a_fast_client_and_count_it() {
    let server = start(&["--rate-messages", "1", "--on-rate-limit", "close"], &[]);
    let mut c = Client::connect(server.addr).unwrap();
    // A burst of two, then one a second: the third, sent at once, is over.
    for i in 0..3 {
        c.send_text(&format!("m{i}")).unwrap();
    }
    let close = loop {
        match c.recv_message().unwrap() {
            Ev::Text(_) => {}
            other => break other,
        }
    };
    assert_eq!(close, Ev::Close(1008, "rate limit exceeded".into()));
    assert_eq!(server.metric("sockwave_rate_limit_closed_total"), 1);
    assert_eq!(server.sigterm(), 0);
}

#[test]
fn systemd_hears_ready_once_listening_and_stopping_at_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let path = std::env::temp_dir().join(format!("sockwave-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let server = start(&[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(
        ready,
        format!("READY=1\nSTATUS=listening on ws://{}", server.addr)
    );
    assert_eq!(server.sigterm(), 0);
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_man_page_and_completions_come_from_the_cli_itself() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sockwave"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let man = run(&["--print-man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH sockwave 1"),
        "{man}"
    );
    for flag in [
        "listen",
        "redis",
        "trusted\\-proxy",
        "rate\\-messages",
        "log\\-format",
    ] {
        assert!(man.contains(flag), "{flag} is not in the man page");
    }
    let bash = run(&["--print-completions", "bash"]);
    assert!(bash.contains("_sockwave()") && bash.contains("--trusted-proxy"));
}
