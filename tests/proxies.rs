//! `Config::proxies`: the client's address from a trusted proxy, by
//! `X-Forwarded-For` / `Forwarded` headers or a PROXY protocol header
//! (versions 1 and 2); an untrusted peer is its own client.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Client, Ev, UPGRADE};
use sockwave::server::{
    Config, Conn, Dispatch, Handler, Message, ProxyHeader, Request, Server, ServerHandle,
    TrustedProxies,
};

/// Says, first thing, whom it thinks the connection is from.
struct WhoAmI;

impl Handler for WhoAmI {
    fn on_open(&self, conn: &Conn, _: &Request) {
        conn.send_text(&format!("{:?}", conn.peer_addr()));
    }
    fn on_message(&self, _: &Conn, _: Message) {}
}

fn server(networks: &[&str], header: ProxyHeader) -> ServerHandle {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        dispatch: Dispatch::Workers(1),
        shutdown_timeout: Duration::from_millis(300),
        proxies: TrustedProxies {
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            header,
        },
        ..Config::default()
    };
    Server::start(config, WhoAmI).unwrap()
}

fn who(s: &ServerHandle, headers: &[(&str, &str)]) -> String {
    let mut c = Client::connect_with(s.local_addr(), "/", &[], headers).unwrap();
    let Ev::Text(t) = c.recv_message().unwrap() else {
        panic!("no greeting")
    };
    t
}

#[test]
fn forwarding_headers_count_only_from_a_trusted_proxy() {
    let trusted = server(&["127.0.0.1"], ProxyHeader::Forwarded);
    assert_eq!(
        who(&trusted, &[("X-Forwarded-For", "6.6.6.6, 198.51.100.7")]),
        "Some(198.51.100.7:0)"
    );
    assert_eq!(
        who(&trusted, &[("Forwarded", "for=\"[2001:db8::17]:4711\"")]),
        "Some([2001:db8::17]:4711)"
    );
    assert!(
        who(&trusted, &[]).starts_with("Some(127.0.0.1:"),
        "no header"
    );
    let untrusted = server(&["10.0.0.0/8"], ProxyHeader::Forwarded);
    assert!(
        who(&untrusted, &[("X-Forwarded-For", "198.51.100.7")]).starts_with("Some(127.0.0.1:"),
        "anyone can write the header"
    );
    for s in [trusted, untrusted] {
        s.shutdown_and_join();
    }
}

/// Sends `first` and then the upgrade request (two writes), and returns
/// the first text message, or `None` if the server closed instead.
fn through_proxy(addr: SocketAddr, first: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(first).unwrap();
    s.flush().unwrap();
    s.write_all(format!("{UPGRADE}\r\n").as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        assert!(
            got.starts_with(b"HTTP/1.1 101"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        let frame = &got[end + 4..];
        if frame.len() >= 2 && frame.len() >= 2 + usize::from(frame[1]) {
            assert_eq!(frame[0], 0x81);
            return Some(String::from_utf8(frame[2..2 + usize::from(frame[1])].to_vec()).unwrap());
        }
    }
}

#[test]
fn a_proxy_protocol_header_names_the_client() {
    let s = server(&["127.0.0.0/8"], ProxyHeader::ProxyProtocol);
    assert_eq!(
        through_proxy(
            s.local_addr(),
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
        ),
        Some("Some(192.0.2.1:56324)".into())
    );
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend([0; 16]);
    v2.extend(4000u16.to_be_bytes());
    v2.extend(443u16.to_be_bytes());
    assert_eq!(
        through_proxy(s.local_addr(), &v2),
        Some("Some([2001:db8::1]:4000)".into())
    );
    assert_eq!(
        through_proxy(s.local_addr(), &v2[..7]),
        None,
        "half a header, then the request: refused"
    );
    // LOCAL (a health check): the proxy itself is the peer.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert!(through_proxy(s.local_addr(), local)
        .unwrap()
        .starts_with("Some(127.0.0.1:"));
    // A trusted peer that sends no header is refused, and counted.
    let before = s.stats().handshake_invalid;
    assert_eq!(through_proxy(s.local_addr(), b""), None);
    assert!(s.stats().handshake_invalid > before);
    s.shutdown_and_join();
}
