//! wss:// through the real server: certificates made here, at test time;
//! a rustls client trusting them.
#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{served_certificate, wait_until, Client, Ev, Registry};
use sockwave::protocol::MessageKind;
use sockwave::server::{
    BackpressurePolicy, Config, DropReason, Echo, SendStatus, Server, ServerHandle, TlsConfig,
    TlsError,
};

struct Pki {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    client: Arc<rustls::ClientConfig>,
}

/// A self-signed certificate for `localhost`, and a client that trusts it.
fn pki() -> Pki {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pki {
        client: common::trusting(&[cert.der()]),
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key_pem: key_pair.serialize_pem(),
    }
}

fn tls_server(pki: &Pki) -> ServerHandle {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 2,
        shutdown_timeout: Duration::from_millis(500),
        tls: Some(TlsConfig::from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap()),
        ..Config::default()
    };
    Server::start(config, Echo).unwrap()
}

#[test]
fn echoes_over_tls_up_to_16_mib_fragmented_pings_and_close_codes() {
    let pki = pki();
    let server = tls_server(&pki);
    let mut c =
        Client::connect_tls(server.local_addr(), Arc::clone(&pki.client), "localhost").unwrap();
    assert_eq!(
        c.tls.as_ref().unwrap().alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN"
    );
    c.send_text("hello over tls").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("hello over tls".into()));
    c.send_fragments(MessageKind::Binary, &[b"ab", b"cd", b"ef"])
        .unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Binary(b"abcdef".to_vec()));
    c.ping(b"are you there").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Pong(b"are you there".to_vec()));
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    c.send_binary(&big).unwrap();
    assert!(
        c.recv().unwrap() == Ev::Binary(big),
        "16 MiB came back different"
    );
    c.close(4001, "done").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Close(4001, "done".into()));
    // The server ends with close_notify: a clean end of the TLS stream, not a cut.
    let mut rest = [0u8; 16];
    assert_eq!(c.read_some(&mut rest).unwrap(), 0);
    server.shutdown_and_join();
}

/// The server speaks TLS 1.2 as well as 1.3: a client that offers only 1.2
/// gets it, and echoes small and large messages over it.
#[test]
fn a_tls_1_2_client_is_served_too() {
    let pki = pki();
    let server = tls_server(&pki);
    for (versions, expected) in [
        (
            &[&rustls::version::TLS12][..],
            rustls::ProtocolVersion::TLSv1_2,
        ),
        (
            &[&rustls::version::TLS13][..],
            rustls::ProtocolVersion::TLSv1_3,
        ),
    ] {
        let only = common::trusting_versions(&[&pki.cert_der], versions);
        let mut c = Client::connect_tls(server.local_addr(), only, "localhost").unwrap();
        assert_eq!(c.tls.as_ref().unwrap().protocol_version(), Some(expected));
        c.send_text("hello").unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Text("hello".into()));
        let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 241) as u8).collect();
        c.send_binary(&big).unwrap();
        assert!(
            c.recv().unwrap() == Ev::Binary(big),
            "1 MiB came back different"
        );
        c.close(1000, "").unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Close(1000, String::new()));
    }
    server.shutdown_and_join();
}

/// A wss client that stops reading: the cap and the policy act as they do
/// on plain TCP, with the records rustls holds counted as bytes owed.
fn tls_backpressure(policy: BackpressurePolicy) {
    const CAP: usize = 256 * 1024;
    let pki = pki();
    let registry = Arc::new(Registry::default());
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        max_buffered: CAP,
        backpressure: policy,
        shutdown_timeout: Duration::from_millis(500),
        tls: Some(TlsConfig::from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap()),
        ..Config::default()
    };
    config.protocol.close_timeout = Duration::from_millis(300);
    let server = Server::start_arc(config, registry.clone()).unwrap();
    let mut stalled =
        Client::connect_tls_stalling(server.local_addr(), Arc::clone(&pki.client), "localhost")
            .unwrap();
    wait_until("the stalled client opens", || {
        registry.conns.lock().unwrap().len() == 1
    });
    let slow = registry.conns.lock().unwrap()[0].clone();
    let mut healthy =
        Client::connect_tls(server.local_addr(), Arc::clone(&pki.client), "localhost").unwrap();
    let chunk: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut accepted = 0;
    let reason = loop {
        match slow.send_binary(&chunk) {
            SendStatus::Buffered(n) => {
                assert!(n <= CAP + chunk.len(), "buffered {n}");
                accepted += 1;
            }
            SendStatus::Dropped(reason) => break reason,
        }
        assert!(accepted < 10_000, "the cap was never hit");
        if accepted % 20 == 0 {
            // The healthy connection keeps flowing while the slow one fills.
            healthy
                .send_text(&format!("still here {accepted}"))
                .unwrap();
            assert_eq!(
                healthy.recv().unwrap(),
                Ev::Text(format!("still here {accepted}"))
            );
        }
    };
    assert_eq!(reason, DropReason::Backpressure);
    assert!(slow.buffered_amount() <= CAP + chunk.len());
    match policy {
        BackpressurePolicy::Close => {
            wait_until("close for backpressure", || {
                registry.closes.lock().unwrap().len() == 1
            });
            assert_eq!(registry.closes.lock().unwrap()[0].0, 1008);
            assert_eq!(server.stats().closed_backpressure, 1);
            assert!(!slow.is_open());
        }
        BackpressurePolicy::Drop => {
            assert!(slow.is_open());
            // Everything accepted arrives, whole and once, then the drain.
            for i in 0..accepted {
                assert!(
                    stalled.recv().unwrap() == Ev::Binary(chunk.clone()),
                    "message {i}"
                );
            }
            wait_until("drain", || registry.drains.load(Ordering::SeqCst) >= 1);
            assert_eq!(registry.drains.load(Ordering::SeqCst), 1);
            assert_eq!(slow.buffered_amount(), 0);
            assert!(!slow.send_text("after drain").is_dropped());
            assert_eq!(stalled.recv().unwrap(), Ev::Text("after drain".into()));
        }
    }
    healthy.send_text("done").unwrap();
    assert_eq!(healthy.recv().unwrap(), Ev::Text("done".into()));
    assert_eq!(server.stats().dropped_backpressure, 1);
    server.shutdown_and_join();
}

#[test]
fn a_tls_client_that_stops_reading_is_closed_with_1008_at_the_cap() {
    tls_backpressure(BackpressurePolicy::Close);
}

#[test]
fn a_tls_client_that_stops_reading_loses_only_refused_sends_then_drains() {
    tls_backpressure(BackpressurePolicy::Drop);
}

#[test]
fn shutdown_closes_tls_clients_with_1001_and_close_notify() {
    let pki = pki();
    let server = tls_server(&pki);
    let mut c =
        Client::connect_tls(server.local_addr(), Arc::clone(&pki.client), "localhost").unwrap();
    c.send_text("x").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("x".into()));
    server.shutdown();
    assert_eq!(
        c.recv().unwrap(),
        Ev::Close(1001, "server shutting down".into())
    );
    server.join();
    let mut rest = [0u8; 16];
    assert_eq!(c.read_some(&mut rest).unwrap(), 0, "close_notify, then EOF");
}

/// Plain HTTP, or any bytes that are not TLS, get a TLS alert and the end of
/// the connection, never a hang until the handshake timeout.
#[test]
fn plain_http_or_garbage_to_the_tls_port_gets_an_alert() {
    let pki = pki();
    let server = tls_server(&pki);
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
    ] {
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.first(), Some(&0x15), "an alert record: {got:02x?}");
    }
    // The server still serves TLS clients.
    let mut c =
        Client::connect_tls(server.local_addr(), Arc::clone(&pki.client), "localhost").unwrap();
    c.send_text("fine").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("fine".into()));
    let s = server.stats();
    assert_eq!((s.tls_failed_invalid, s.tls_handshakes), (2, 1), "{s:?}");
    server.shutdown_and_join();
}

#[test]
fn bad_certificate_inputs_are_named() {
    let pki = pki();
    let dir = std::env::temp_dir().join(format!("sockwave-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, junk) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("junk.pem"),
    );
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    std::fs::write(&junk, "not a pem file\n").unwrap();
    assert!(TlsConfig::from_pem_files(&cert, &key).is_ok());
    match TlsConfig::from_pem_files(dir.join("missing.pem"), &key) {
        Err(e @ TlsError::Certificate { .. }) => {
            assert!(e.to_string().contains("missing.pem"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    match TlsConfig::from_pem_files(&junk, &key) {
        Err(e @ TlsError::Certificate { .. }) => assert!(e.to_string().contains("junk.pem"), "{e}"),
        other => panic!("{other:?}"),
    }
    match TlsConfig::from_pem_files(&cert, &junk) {
        Err(e @ TlsError::Key { .. }) => assert!(e.to_string().contains("junk.pem"), "{e}"),
        other => panic!("{other:?}"),
    }
    // An expired certificate: refused at load, naming the file, not served
    // to clients that would all refuse it.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let old_key = rcgen::KeyPair::generate().unwrap();
    let expired = dir.join("expired.pem");
    std::fs::write(&expired, params.self_signed(&old_key).unwrap().pem()).unwrap();
    let old_key_file = dir.join("expired-key.pem");
    std::fs::write(&old_key_file, old_key.serialize_pem()).unwrap();
    match TlsConfig::from_pem_files(&expired, &old_key_file) {
        Err(e @ TlsError::Certificate { .. }) => {
            let e = e.to_string();
            assert!(e.contains("expired.pem") && e.contains("expired"), "{e}")
        }
        other => panic!("an expired certificate was accepted: {other:?}"),
    }
    // A key that is not the certificate's.
    let other = rcgen::KeyPair::generate().unwrap();
    match TlsConfig::from_pem(pki.cert_pem.as_bytes(), other.serialize_pem().as_bytes()) {
        Err(TlsError::Rejected(_)) => {}
        other => panic!("a mismatched pair was accepted: {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn self_signed(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    (cert, key_pair)
}

/// Several certificates chosen by SNI, and a reload that new handshakes see
/// while open connections keep theirs; a broken reload changes nothing.
#[test]
fn certificates_by_sni_and_hot_reload() {
    let dir = std::env::temp_dir().join(format!("sockwave-sni-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, cert: &rcgen::Certificate, key: &rcgen::KeyPair| {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let (a, a_key) = self_signed("localhost");
    let (b, b_key) = self_signed("chat.example");
    let (c, c_key) = self_signed("localhost");
    let (a_crt, a_pem) = write("a", &a, &a_key);
    let (b_crt, b_pem) = write("b", &b, &b_key);
    let (c_crt, c_pem) = write("c", &c, &c_key);
    let tls = TlsConfig::from_pem_files(&a_crt, &a_pem).unwrap();
    tls.add_sni_pem_files("Chat.Example", &b_crt, &b_pem)
        .unwrap();
    assert_eq!(tls.sni_names(), vec!["chat.example".to_string()]);
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        shutdown_timeout: Duration::from_millis(500),
        tls: Some(tls.clone()),
        ..Config::default()
    };
    let server = Server::start(config, Echo).unwrap();
    let client = common::trusting(&[a.der(), b.der(), c.der()]);
    let connect =
        |name: &str| Client::connect_tls(server.local_addr(), Arc::clone(&client), name).unwrap();
    let mut before = connect("localhost");
    assert_eq!(served_certificate(&before), a.der().to_vec(), "the default");
    assert_eq!(
        served_certificate(&connect("chat.example")),
        b.der().to_vec(),
        "by SNI"
    );

    // A reload whose files are broken is refused before anything changes.
    assert!(TlsConfig::from_pem_files(&c_crt, &b_crt).is_err());
    assert_eq!(served_certificate(&connect("localhost")), a.der().to_vec());

    let fresh = TlsConfig::from_pem_files(&c_crt, &c_pem).unwrap();
    server
        .config()
        .tls
        .as_ref()
        .unwrap()
        .reload_from(&fresh)
        .unwrap();
    assert_eq!(
        served_certificate(&connect("localhost")),
        c.der().to_vec(),
        "new handshakes"
    );
    // The fresh configuration has no SNI entry: chat.example now gets the
    // default certificate, which is not valid for it.
    let err = Client::connect_tls(server.local_addr(), Arc::clone(&client), "chat.example")
        .err()
        .expect("the SNI entry went with the reload");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    before.send_text("still here").unwrap();
    assert_eq!(
        before.recv().unwrap(),
        Ev::Text("still here".into()),
        "open connections untouched"
    );
    drop(before);
    server.shutdown_and_join();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 5,000 TLS handshakes left half-open (a record header and nothing more)
/// cost the open connections nothing: an established wss client keeps
/// echoing among them, and the half-open ones are dropped by the handshake
/// timeout.
#[test]
fn half_open_tls_handshakes_do_not_starve_an_open_connection() {
    common::raise_fd_limit();
    let pki = pki();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        shutdown_timeout: Duration::from_millis(500),
        tls: Some(TlsConfig::from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap()),
        ..Config::default()
    };
    let server = Server::start(config, Echo).unwrap();
    let addr = server.local_addr();
    let mut steady = Client::connect_tls(addr, Arc::clone(&pki.client), "localhost").unwrap();
    let mut half_open = Vec::with_capacity(5000);
    for i in 0..5000 {
        let mut s = TcpStream::connect(addr).unwrap();
        // A handshake record header announcing 512 bytes, then silence.
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        half_open.push(s);
        if i % 500 == 0 {
            steady.send_text(&format!("echo {i}")).unwrap();
            assert_eq!(steady.recv().unwrap(), Ev::Text(format!("echo {i}")));
        }
    }
    for i in 0..100 {
        steady.send_binary(&[i as u8; 1000]).unwrap();
        assert_eq!(steady.recv().unwrap(), Ev::Binary(vec![i as u8; 1000]));
    }
    drop(half_open);
    server.shutdown_and_join();
}

/// A ClientHello trickled a byte at a time never completes: the handshake
/// timeout (which covers the TLS handshake) drops it and counts it.
#[test]
fn a_trickled_client_hello_is_dropped_by_the_handshake_timeout() {
    let pki = pki();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        shutdown_timeout: Duration::from_millis(500),
        tls: Some(TlsConfig::from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap()),
        ..Config::default()
    };
    config.protocol.handshake_timeout = Some(Duration::from_millis(300));
    let server = Server::start(config, Echo).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let started = std::time::Instant::now();
    let mut ended = false;
    // One byte, then up to 50 ms of listening (the read timeout paces the
    // trickle); the server's end shows as EOF, a reset or a failed write.
    for byte in hello.iter().cycle().take(400) {
        if s.write_all(&[*byte]).is_err() {
            ended = true;
            break;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => ended = true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => ended = true,
            Err(_) => {}
        }
        if ended {
            break;
        }
    }
    assert!(ended, "the trickling connection was never dropped");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(server.stats().handshake_timeout, 1);
    assert_eq!(
        server.stats().tls_failed_timeout,
        1,
        "counted as a TLS handshake too"
    );
    server.shutdown_and_join();
}

/// Says, first thing, whom it thinks the connection is from.
struct WhoAmI;

impl sockwave::server::Handler for WhoAmI {
    fn on_open(&self, conn: &sockwave::server::Conn, _: &sockwave::server::Request) {
        conn.send_text(&format!("{:?}", conn.peer_addr()));
    }
    fn on_message(&self, _: &sockwave::server::Conn, _: sockwave::server::Message) {}
}

#[test]
fn a_proxy_protocol_header_before_the_tls_handshake_names_the_client() {
    use sockwave::server::{ProxyHeader, TrustedProxies};
    let pki = pki();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        shutdown_timeout: Duration::from_millis(300),
        tls: Some(TlsConfig::from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap()),
        proxies: TrustedProxies {
            networks: vec!["127.0.0.1".parse().unwrap()],
            header: ProxyHeader::ProxyProtocol,
        },
        ..Config::default()
    };
    let s = Server::start(config, WhoAmI).unwrap();
    let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    let mut c =
        Client::connect_tls_after(s.local_addr(), v1, pki.client.clone(), "localhost").unwrap();
    assert_eq!(
        c.recv_message().unwrap(),
        Ev::Text("Some(192.0.2.1:56324)".into())
    );
    // A trusted peer that starts TLS without the header is refused.
    assert!(Client::connect_tls(s.local_addr(), pki.client.clone(), "localhost").is_err());
    drop(c);
    s.shutdown_and_join();
}
