//! A small blocking WebSocket client for the loopback tests, built on the
//! protocol core's client role.
#![allow(dead_code)]

#[cfg(feature = "redis")]
pub mod redis_server;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockwave::protocol::client;
use sockwave::protocol::deflate;
use sockwave::protocol::mask::apply_mask;
use sockwave::protocol::{Connection, EncodedHeader, Event, MessageKind, OpCode, ProtocolConfig};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
    /// The server ended the TCP connection.
    Eof,
}

pub struct Client {
    pub stream: TcpStream,
    /// TLS over `stream`, for wss://.
    #[cfg(feature = "tls")]
    pub tls: Option<Box<rustls::ClientConnection>>,
    conn: Connection,
    pending: Vec<u8>,
    events: VecDeque<Ev>,
    pub protocol: Option<String>,
    /// The server's permessage-deflate answer, if it accepted our offer.
    pub extensions: Option<String>,
    eof: bool,
}

pub fn client_config() -> Arc<ProtocolConfig> {
    Arc::new(ProtocolConfig {
        max_frame_size: 64 << 20,
        max_message_size: 64 << 20,
        ping_interval: None,
        idle_timeout: None,
        // The client compresses everything it can, to exercise the server's inflate.
        deflate: deflate::DeflateOptions {
            threshold: 1,
            level: 9,
            ..deflate::DeflateOptions::stateless()
        },
        ..ProtocolConfig::default()
    })
}

/// A rustls client that trusts `certificates` (DER) and makes a full
/// handshake every time (a resumed session would show the certificate of
/// the session it resumes, not the one served now).
#[cfg(feature = "tls")]
pub fn trusting(certificates: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    trusting_versions(certificates, rustls::DEFAULT_VERSIONS)
}

/// [`trusting`], offering only the TLS `versions` given.
#[cfg(feature = "tls")]
pub fn trusting_versions(
    certificates: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in certificates {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The leaf certificate a TLS client was served.
#[cfg(feature = "tls")]
pub fn served_certificate(c: &Client) -> Vec<u8> {
    c.tls.as_ref().unwrap().peer_certificates().unwrap()[0].to_vec()
}

#[cfg(feature = "tls")]
type TlsClient = rustls::ClientConnection;

/// A rustls client connection to `name` with `config`.
#[cfg(feature = "tls")]
fn tls_client(config: Arc<rustls::ClientConfig>, name: &str) -> io::Result<Box<TlsClient>> {
    let name =
        rustls::pki_types::ServerName::try_from(name.to_string()).map_err(io::Error::other)?;
    let tls = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    Ok(Box::new(tls))
}
#[cfg(not(feature = "tls"))]
type TlsClient = ();

/// The offer browsers send.
pub const BROWSER_DEFLATE: (&str, &str) = (
    "Sec-WebSocket-Extensions",
    "permessage-deflate; client_max_window_bits",
);

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        Self::connect_with(addr, "/", &[], &[])
    }

    pub fn connect_with(
        addr: SocketAddr,
        path: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
    ) -> io::Result<Client> {
        Self::handshake(Self::socket(addr)?, None, addr, path, protocols, headers)
    }

    /// wss://: TLS with `config` (trusting the test's certificate), for `name`.
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<Client> {
        let tls = tls_client(config, name)?;
        Self::handshake(Self::socket(addr)?, Some(tls), addr, "/", &[], &[])
    }

    /// wss:// behind a proxy: `prefix` (a PROXY header) on the TCP stream
    /// first, then TLS.
    #[cfg(feature = "tls")]
    pub fn connect_tls_after(
        addr: SocketAddr,
        prefix: &[u8],
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<Client> {
        let tls = tls_client(config, name)?;
        let mut stream = Self::socket(addr)?;
        stream.write_all(prefix)?;
        Self::handshake(stream, Some(tls), addr, "/", &[], &[])
    }

    /// wss:// over a socket whose receive buffer is 4 KiB, for a client
    /// that is going to stop reading (the server's writes back up fast).
    #[cfg(feature = "tls")]
    pub fn connect_tls_stalling(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<Client> {
        let tls = tls_client(config, name)?;
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.set_recv_buffer_size(4096)?;
        sock.connect(&addr.into())?;
        let stream = Self::prepared(sock.into())?;
        Self::handshake(stream, Some(tls), addr, "/", &[], &[])
    }

    fn socket(addr: SocketAddr) -> io::Result<TcpStream> {
        Self::prepared(TcpStream::connect(addr)?)
    }

    /// The options every test client's socket has.
    fn prepared(stream: TcpStream) -> io::Result<TcpStream> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(stream)
    }

    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn handshake(
        stream: TcpStream,
        tls: Option<Box<TlsClient>>,
        addr: SocketAddr,
        path: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
    ) -> io::Result<Client> {
        let nonce: [u8; 16] =
            std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(path.len() as u8));
        let (req, key) = client::request(&addr.to_string(), path, nonce, protocols, headers);
        let mut c = Client {
            stream,
            #[cfg(feature = "tls")]
            tls,
            conn: Connection::client(client_config(), Instant::now(), 0x9e3779b97f4a7c15),
            pending: Vec::new(),
            events: VecDeque::new(),
            protocol: None,
            extensions: None,
            eof: false,
        };
        c.write_all(&req)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = c.read_some(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during handshake",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            match client::parse_response(&buf, &key) {
                Ok(None) => continue,
                Ok(Some((resp, used))) => {
                    let extensions = resp
                        .headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
                        .map(|(_, v)| v.clone());
                    if let Some(agreed) = extensions.as_deref().and_then(deflate::parse_response) {
                        c.conn.enable_deflate(agreed);
                    }
                    c.protocol = resp.protocol;
                    c.extensions = extensions;
                    let rest = buf[used..].to_vec();
                    c.feed(&rest)?;
                    return Ok(c);
                }
                Err(e) => return Err(io::Error::other(format!("handshake refused: {e:?}"))),
            }
        }
    }

    /// Reads what the server sent (decrypted under TLS). `Ok(0)`: it ended
    /// the stream (with close_notify, under TLS).
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return rustls::Stream::new(&mut **tls, &mut self.stream).read(buf);
        }
        self.stream.read(buf)
    }

    /// Writes bytes to the server (encrypted under TLS).
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            let mut s = rustls::Stream::new(&mut **tls, &mut self.stream);
            s.write_all(bytes)?;
            return s.flush();
        }
        self.stream.write_all(bytes)
    }

    fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < self.pending.len() {
            let r = self
                .conn
                .read(&mut self.pending[pos..], Instant::now(), &mut out);
            if r.needs_input() {
                break;
            }
            pos += r.consumed;
            let ev = match r.event {
                None => continue,
                Some(Event::Message(MessageKind::Text, p)) => {
                    Ev::Text(String::from_utf8(p.into_vec()).unwrap())
                }
                Some(Event::Message(MessageKind::Binary, p)) => Ev::Binary(p.into_vec()),
                Some(Event::Ping(p)) => Ev::Ping(p.to_vec()),
                Some(Event::Pong(p)) => Ev::Pong(p.to_vec()),
                Some(Event::Close(f)) => Ev::Close(f.code, f.reason.to_string()),
                Some(Event::Failed(e)) => panic!("server broke the protocol: {e}"),
                Some(other) => panic!("unexpected {other:?}"),
            };
            self.events.push_back(ev);
        }
        self.pending.drain(..pos);
        if !out.is_empty() {
            self.write_all(&out)?;
        }
        Ok(())
    }

    /// The next event, waiting for it (read timeout 20 s).
    pub fn recv(&mut self) -> io::Result<Ev> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Ok(ev);
            }
            if self.eof {
                return Ok(Ev::Eof);
            }
            let n = match self.read_some(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.eof = true;
                continue;
            }
            self.feed(&chunk[..n])?;
        }
    }

    /// The next data message or close, skipping pings and pongs.
    pub fn recv_message(&mut self) -> io::Result<Ev> {
        loop {
            match self.recv()? {
                Ev::Ping(_) | Ev::Pong(_) => continue,
                other => return Ok(other),
            }
        }
    }

    fn write_out(&mut self, f: impl FnOnce(&mut Connection, &mut Vec<u8>)) -> io::Result<()> {
        let mut out = Vec::new();
        f(&mut self.conn, &mut out);
        self.write_all(&out)
    }

    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.write_out(|c, o| c.send(MessageKind::Text, text.as_bytes(), o).unwrap())
    }

    /// Whether the last frames we sent went out compressed (a negotiated extension).
    pub fn compressing(&self) -> bool {
        self.conn.deflate().is_some()
    }

    pub fn send_binary(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_out(|c, o| c.send(MessageKind::Binary, data, o).unwrap())
    }

    /// Sends each of `messages` as a message of its own, all in one write.
    pub fn send_pipelined(&mut self, kind: MessageKind, messages: &[Vec<u8>]) -> io::Result<()> {
        self.write_out(|c, o| {
            for m in messages {
                c.send(kind, m, o).unwrap();
            }
        })
    }

    pub fn send_fragments(&mut self, kind: MessageKind, parts: &[&[u8]]) -> io::Result<()> {
        let n = parts.len();
        self.write_out(|c, o| {
            for (i, p) in parts.iter().enumerate() {
                c.send_fragment(kind, i == 0, i + 1 == n, p, o).unwrap();
            }
        })
    }

    /// Sends `data` as one compressed message (RSV1 on its first frame) in
    /// `fragments` frames, the way a client with its own deflate settings
    /// would: the compressed stream is cut wherever the fragments fall.
    pub fn send_compressed(
        &mut self,
        kind: MessageKind,
        data: &[u8],
        fragments: usize,
    ) -> io::Result<()> {
        let mut z = Vec::new();
        deflate::compress_stateless(data, 1, 15, 8, &mut z);
        let step = z.len().div_ceil(fragments.max(1)).max(1);
        let pieces: Vec<&[u8]> = z.chunks(step).collect();
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = if i == 0 {
                kind.opcode()
            } else {
                OpCode::Continuation
            };
            let mask = [0x5a, 0x17, 0xc3, 0x81];
            let last = i + 1 == pieces.len();
            let head = EncodedHeader::new(opcode, last, i == 0, piece.len() as u64, Some(mask));
            out.extend_from_slice(head.as_bytes());
            let at = out.len();
            out.extend_from_slice(piece);
            apply_mask(&mut out[at..], mask, 0);
        }
        self.write_all(&out)
    }

    pub fn ping(&mut self, payload: &[u8]) -> io::Result<()> {
        self.write_out(|c, o| c.ping(payload, o).unwrap())
    }

    pub fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.write_out(|c, o| c.close(code, reason, Instant::now(), o).unwrap())
    }
}

/// Sends raw bytes on a fresh connection and returns everything the server
/// answers until it closes (or `wait` passes).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

/// Sends `parts`, one write each, and reads the response head up to its
/// blank line. An incomplete request head in the first parts must consume
/// nothing: a server that answered it early would show here as another
/// status or a socket closed before the head. The read timeout only guards
/// against a hang; nothing waits on it.
pub fn response_head(addr: SocketAddr, parts: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for part in parts {
        s.write_all(part).unwrap();
    }
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            other => panic!(
                "the response head ended early ({other:?}) after {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8(got).unwrap()
}

/// Waits (up to 20 s) for `cond`, checking every few milliseconds: the one
/// way the tests wait for something another thread does.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Lets this test process hold thousands of sockets.
pub fn raise_fd_limit() {
    // SAFETY: plain struct in, plain struct out.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub const UPGRADE: &str = "GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// A handler that echoes, keeps every connection's handle, and records
/// closes (code, reason) and drains: what the backpressure tests watch.
#[derive(Default)]
pub struct Registry {
    pub conns: std::sync::Mutex<Vec<sockwave::server::Conn>>,
    pub closes: std::sync::Mutex<Vec<(u16, String)>>,
    pub drains: std::sync::atomic::AtomicUsize,
}

impl Registry {
    /// The opened connection whose peer is `peer`: found by address, as
    /// connections from several clients open in either order.
    pub fn conn_from(&self, peer: SocketAddr) -> sockwave::server::Conn {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.peer_addr() == Some(peer))
            .expect("no connection from that address")
            .clone()
    }
}

impl sockwave::server::Handler for Registry {
    fn on_open(&self, conn: &sockwave::server::Conn, _req: &sockwave::protocol::Request) {
        self.conns.lock().unwrap().push(conn.clone());
    }
    fn on_message(&self, conn: &sockwave::server::Conn, message: sockwave::server::Message) {
        conn.send_owned(message.kind(), message.into_bytes());
    }
    fn on_close(&self, _conn: &sockwave::server::Conn, code: u16, reason: &str) {
        self.closes.lock().unwrap().push((code, reason.to_string()));
    }
    fn on_drain(&self, _conn: &sockwave::server::Conn) {
        self.drains
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
