//! [`TlsTransport`]: wss://, TLS under the frames, with rustls, on the
//! transport seam.
//!
//! It is the [`Transport`] a loop puts under a connection when the server has
//! a [`super::TlsConfig`]: TLS records in from the socket, plaintext into the
//! loop's read buffer; plaintext from the out queue, records out to the
//! socket. The protocol and the connection's lifecycle do not know it is
//! there.
//!
//! It drives rustls's *unbuffered* connection, so the loop owns every buffer
//! and an idle connection holds none:
//!
//! - **Reading.** The socket is read in large pieces into a buffer the loop
//!   thread's TLS connections share ([`Scratch`]), and rustls processes the
//!   records where they lie. Everything read is processed before the call
//!   returns (the read is sized so its plaintext fits the caller's buffer);
//!   only a record cut in two by the read is kept, in the connection's
//!   `incoming`, until the rest arrives. (rustls's buffered connection reads
//!   4 KiB per `recv` into a 4 KiB buffer each connection keeps for life.)
//! - **Writing.** Plaintext from the out queue is encrypted into the shared
//!   buffer (small pieces gathered first, so sixteen 1 KiB messages make one
//!   record, not thirty-two) and written to the socket. What the socket does
//!   not take stays in the connection's `outgoing`: those bytes are owed to
//!   the peer, [`Transport::wants_write`] reports them, and the reservations
//!   of the messages they came from are given back only once they are on the
//!   wire ([`Transport::settle`]), so `buffered_amount`, the per-connection
//!   cap and the backpressure policy count them as on plain TCP.
//!
//! A client that speaks plain HTTP or garbage to the TLS port gets a TLS
//! alert and its connection ends; the WebSocket handshake timeout covers the
//! TLS handshake too (both run from the accept); renegotiation never happens
//! (rustls does not implement it); a clean close sends close_notify.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::{Registry, Token};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};

use super::proxy_protocol::{self, Proxied};
use super::tls_config::TlsConfig;
use super::transport::{TcpTransport, Transport};

/// A TLS alert record: fatal (2), decode_error (50).
const FATAL_DECODE_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50];

/// The largest TLS record on the wire (rustls's `MAX_WIRE_SIZE`): 16 KiB of
/// plaintext, 2 KiB of expansion allowance, a 5-byte header.
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;

/// The most plaintext one record carries.
const MAX_FRAGMENT: usize = 16 * 1024;

/// How much ciphertext one `recv` asks for, at most.
const READ_LEN: usize = 128 * 1024;

/// How much plaintext one write encrypts, at most.
const WRITE_LEN: usize = 64 * 1024;

/// The most a handshake may keep waiting for the rest of a message: rustls
/// joins handshake messages up to 64 KiB.
const MAX_INCOMING: usize = 64 * 1024 + MAX_RECORD;

/// The buffers the TLS connections of one loop thread share: ciphertext read
/// off the sockets, plaintext gathered for one record, records encrypted for
/// the socket. A connection uses them within one call and leaves nothing in
/// them.
struct Scratch {
    incoming: Box<[u8]>,
    gather: Box<[u8]>,
    outgoing: Box<[u8]>,
}

impl Scratch {
    /// Runs `f` with the thread's scratch buffers (allocated at first use,
    /// on loop threads that serve TLS only).
    fn with<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
        thread_local! {
            static SCRATCH: RefCell<Option<Box<Scratch>>> = const { RefCell::new(None) };
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let scratch = s.get_or_insert_with(|| {
                Box::new(Scratch {
                    incoming: vec![0u8; MAX_INCOMING + READ_LEN].into_boxed_slice(),
                    gather: vec![0u8; MAX_FRAGMENT].into_boxed_slice(),
                    outgoing: vec![0u8; records_len(WRITE_LEN) + 4 * MAX_RECORD].into_boxed_slice(),
                })
            });
            f(scratch)
        })
    }
}

/// TLS over one connection's TCP socket (`S`: the socket's transport;
/// plain TCP in the server, an in-memory pipe in the fuzz harness).
pub(crate) struct TlsTransport<S = TcpTransport> {
    tcp: S,
    tls: UnbufferedServerConnection,
    /// A trusted proxy's PROXY header, read off TCP before TLS begins.
    proxy: Option<Box<ProxyPrefix>>,
    /// Ciphertext of a record not yet whole (and, during the handshake, of
    /// a handshake message not yet whole); empty, with no allocation, when
    /// the last read ended on a record boundary.
    incoming: Vec<u8>,
    /// Records the socket has not taken yet, in order; empty when idle.
    outgoing: Vec<u8>,
    /// Plaintext decrypted that did not fit the caller's buffer (never, with
    /// the reads sized as they are; kept so that nothing can be lost).
    overflow: Vec<u8>,
    /// Reservations (see [`Transport::settle`]) kept while `outgoing` holds bytes.
    unsettled: usize,
    /// The last read ended with the socket drained: under edge-triggered
    /// readiness, the next read would only say `WouldBlock`.
    drained: bool,
    /// The peer sent close_notify, or ended TCP.
    ended: bool,
}

/// The PROXY header in front of a TLS connection.
#[derive(Default)]
struct ProxyPrefix {
    /// The header so far, until it is whole.
    buf: Vec<u8>,
    done: bool,
    client: Option<SocketAddr>,
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// rustls's "the buffer is too small" from an encode or an encrypt.
trait TooSmall: std::error::Error + Send + Sync + 'static {
    fn required(&self) -> Option<usize>;
}

impl TooSmall for EncodeError {
    fn required(&self) -> Option<usize> {
        match self {
            EncodeError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        }
    }
}

impl TooSmall for EncryptError {
    fn required(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        }
    }
}

/// Appends what `write` puts into a buffer to `out`: first `room` bytes of
/// it, then as many as rustls says it needs.
fn append<E: TooSmall>(
    out: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> io::Result<()> {
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match e.required() {
                Some(required) => room = required,
                None => {
                    out.truncate(start);
                    return Err(io::Error::other(e));
                }
            },
        }
    }
}

/// Writes `bytes` until the socket pushes back: how many it took, and
/// `Ok(true)` once it took them all (`Ok(false)`: it pushed back).
fn send<S: Transport>(tcp: &mut S, bytes: &[u8]) -> (usize, io::Result<bool>) {
    let mut sent = 0;
    while sent < bytes.len() {
        match tcp.write_vectored(&[IoSlice::new(&bytes[sent..])]) {
            Ok(0) => return (sent, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (sent, Ok(false)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (sent, Err(e)),
        }
    }
    (sent, Ok(true))
}

/// Room for the records of `n` bytes of plaintext (header, content type,
/// tag and padding allowance per record).
fn records_len(n: usize) -> usize {
    n + n.div_ceil(MAX_FRAGMENT).max(1) * (MAX_RECORD - MAX_FRAGMENT)
}

impl<S: Transport> TlsTransport<S> {
    /// `expect_proxy`: the peer is a trusted proxy that sends a PROXY
    /// protocol header before the TLS handshake.
    pub(crate) fn new(tcp: S, config: &TlsConfig, expect_proxy: bool) -> io::Result<Self> {
        let tls = UnbufferedServerConnection::new(Arc::clone(&config.server))
            .map_err(io::Error::other)?;
        Ok(Self {
            tcp,
            tls,
            proxy: expect_proxy.then(Box::default),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            overflow: Vec::new(),
            unsettled: 0,
            drained: false,
            ended: false,
        })
    }

    /// The socket under TLS (the fuzz harness's in-memory pipe).
    pub(crate) fn tcp_mut(&mut self) -> &mut S {
        &mut self.tcp
    }

    /// Reads the PROXY header off TCP. `Ok(true)` once it is read (what came
    /// after it waits in `incoming` for rustls); `WouldBlock` until then.
    fn read_proxy_header(&mut self) -> io::Result<bool> {
        let Some(p) = &mut self.proxy else {
            return Ok(true);
        };
        if p.done {
            return Ok(true);
        }
        let mut chunk = [0u8; 600];
        loop {
            let n = match self.tcp.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            p.buf.extend_from_slice(&chunk[..n]);
            match proxy_protocol::parse(&p.buf) {
                Ok(Some((proxied, used))) => {
                    p.done = true;
                    if let Proxied::Client(addr) = proxied {
                        p.client = Some(addr);
                    }
                    // The start of the ClientHello.
                    self.incoming.extend_from_slice(&p.buf[used..]);
                    p.buf = Vec::new();
                    return Ok(true);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(invalid(format!(
                        "a trusted proxy sent no valid PROXY header: {e:?}"
                    )))
                }
            }
        }
    }

    /// Lets rustls process the whole records at the front of `incoming`:
    /// their plaintext goes to `buf[*filled..]`, handshake answers to
    /// `self.outgoing` (and out). Returns how many bytes of `incoming` are
    /// done with; the rest is an unfinished record.
    fn process(
        &mut self,
        incoming: &mut [u8],
        buf: &mut [u8],
        filled: &mut usize,
    ) -> io::Result<usize> {
        let mut used = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.tls.process_tls_records(&mut incoming[used..]);
            match state {
                Err(e) => {
                    self.fail(&mut incoming[used + discard..]);
                    return Err(invalid(e));
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        let take = record.payload.len().min(buf.len() - *filled);
                        buf[*filled..*filled + take].copy_from_slice(&record.payload[..take]);
                        *filled += take;
                        self.overflow.extend_from_slice(&record.payload[take..]);
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    append(&mut self.outgoing, 1024, |out| data.encode(out))?;
                }
                Ok(ConnectionState::TransmitTlsData(done)) => {
                    // Whatever the socket does not take now goes out, in
                    // order, before any later record.
                    done.done();
                    self.write_outgoing()?;
                }
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                    return Ok(used + discard);
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    self.ended = true;
                    return Ok(used + discard);
                }
                Ok(_) => {
                    // Early data: never enabled in our configuration.
                    self.fail(&mut incoming[used + discard..]);
                    return Err(invalid("unexpected TLS early data"));
                }
            }
            used += discard;
        }
    }

    /// After an error: the alert rustls queued goes out (a fatal
    /// decode_error of our own where it queued none, so the peer hears why
    /// rather than a bare close). `incoming`: what follows the records
    /// processed so far (rustls's offsets point into it). The alert is the
    /// one record rustls holds then (every earlier one went out as it was
    /// made), so rustls is asked once: asked again, it would read the bytes
    /// that failed again and try to send a second fatal alert, which its
    /// debug builds assert against.
    fn fail(&mut self, incoming: &mut [u8]) {
        let before = self.outgoing.len();
        if let Ok(ConnectionState::EncodeTlsData(mut data)) =
            self.tls.process_tls_records(incoming).state
        {
            let _ = append(&mut self.outgoing, 1024, |out| data.encode(out));
        }
        if self.outgoing.len() == before {
            self.outgoing.extend_from_slice(&FATAL_DECODE_ERROR);
        }
        let _ = self.write_outgoing();
    }

    /// Writes the records waiting in `outgoing`; `Ok(true)` once none are left.
    fn write_outgoing(&mut self) -> io::Result<bool> {
        let (sent, result) = send(&mut self.tcp, &self.outgoing);
        if sent == self.outgoing.len() {
            // Idle connections keep no buffer.
            self.outgoing = Vec::new();
        } else {
            self.outgoing.drain(..sent);
        }
        result
    }

    /// Reads ciphertext into `scratch` after what `incoming` kept, and
    /// processes it, until the socket is drained or `buf` has no room left
    /// for another read's plaintext.
    fn read_records(&mut self, scratch: &mut [u8], buf: &mut [u8]) -> io::Result<usize> {
        let mut len = self.incoming.len();
        if len > MAX_INCOMING {
            return Err(invalid("a TLS handshake message over 64 KiB"));
        }
        scratch[..len].copy_from_slice(&self.incoming);
        let mut filled = 0;
        loop {
            let used = self.process(&mut scratch[..len], buf, &mut filled)?;
            scratch.copy_within(used..len, 0);
            len -= used;
            // Read only what can be decrypted into `buf` now.
            let room = buf.len() - filled;
            if self.ended || self.drained || room < len + 2 * MAX_RECORD || len > MAX_INCOMING {
                break;
            }
            let want = (room - len).min(READ_LEN);
            match self.tcp.read(&mut scratch[len..len + want]) {
                Ok(0) => self.ended = true,
                Ok(n) => {
                    len += n;
                    self.drained = n < want;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if len == 0 {
            self.incoming = Vec::new();
        } else {
            self.incoming.clear();
            self.incoming.extend_from_slice(&scratch[..len]);
        }
        Ok(filled)
    }

    /// Runs `f` once rustls may send application data, with the records
    /// it wants sent first (a key update, session tickets) already in
    /// `self.outgoing`; `None` when it may not (the handshake is not done,
    /// or both sides have closed).
    fn with_traffic<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<R>,
    ) -> io::Result<Option<R>> {
        // The unfinished record stays where rustls expects it: at the front.
        let mut incoming = std::mem::take(&mut self.incoming);
        let result = loop {
            let UnbufferedStatus { state, .. } = self.tls.process_tls_records(&mut incoming);
            match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    break f(&mut traffic, &mut self.outgoing).map(Some)
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    if let Err(e) = append(&mut self.outgoing, 1024, |o| data.encode(o)) {
                        break Err(e);
                    }
                }
                // Sent from `self.outgoing`, before anything encrypted after.
                Ok(ConnectionState::TransmitTlsData(done)) => done.done(),
                Ok(_) => break Ok(None),
                Err(e) => break Err(invalid(e)),
            }
        };
        self.incoming = incoming;
        result
    }
}

/// Records encrypted into a buffer of fixed size (no zeroing per write).
struct Sealed<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Sealed<'_> {
    /// Whether the records of `n` more bytes of plaintext surely fit.
    fn fits(&self, n: usize) -> bool {
        records_len(n) <= self.buf.len() - self.len
    }

    fn seal(
        &mut self,
        traffic: &mut WriteTraffic<'_, ServerConnectionData>,
        plaintext: &[u8],
    ) -> io::Result<()> {
        let n = traffic
            .encrypt(plaintext, &mut self.buf[self.len..])
            .map_err(io::Error::other)?;
        self.len += n;
        Ok(())
    }
}

/// Encrypts plaintext from `bufs` (up to [`WRITE_LEN`]) into `out`; returns
/// how much it took. Small pieces are gathered into one record; large ones
/// are encrypted from where they lie.
fn encrypt(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    bufs: &[IoSlice<'_>],
    gather: &mut [u8],
    out: &mut Sealed<'_>,
) -> io::Result<usize> {
    let mut taken = 0;
    let mut gathered = 0;
    'slices: for slice in bufs {
        let mut slice: &[u8] = slice;
        while !slice.is_empty() && taken < WRITE_LEN {
            if gathered == 0 && slice.len() >= MAX_FRAGMENT {
                let n = slice.len().min(WRITE_LEN - taken);
                if !out.fits(n) {
                    break 'slices;
                }
                out.seal(traffic, &slice[..n])?;
                taken += n;
                slice = &slice[n..];
                continue;
            }
            let n = slice
                .len()
                .min(gather.len() - gathered)
                .min(WRITE_LEN - taken);
            if !out.fits(gathered + n) {
                break 'slices;
            }
            gather[gathered..gathered + n].copy_from_slice(&slice[..n]);
            gathered += n;
            taken += n;
            slice = &slice[n..];
            if gathered == gather.len() {
                out.seal(traffic, &gather[..gathered])?;
                gathered = 0;
            }
        }
    }
    if gathered > 0 {
        out.seal(traffic, &gather[..gathered])?;
    }
    Ok(taken)
}

impl<S: Transport> Transport for TlsTransport<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.read_proxy_header() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        if !self.overflow.is_empty() {
            let n = self.overflow.len().min(buf.len());
            buf[..n].copy_from_slice(&self.overflow[..n]);
            self.overflow.drain(..n);
            return Ok(n);
        }
        if self.ended {
            return Ok(0);
        }
        self.drained = false;
        let filled = Scratch::with(|s| self.read_records(&mut s.incoming, buf))?;
        if !self.overflow.is_empty() {
            self.drained = false;
        }
        match filled {
            0 if self.ended => Ok(0),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            // Plaintext first; after an end, the next read says it (0).
            n => Ok(n),
        }
    }

    fn drained_by(&self, _n: usize, _asked: usize) -> bool {
        self.drained
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records still waiting go first. Nothing taken is a push-back only
        // when the socket itself refused (then its writable edge will come).
        if !self.write_outgoing()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Scratch::with(|s| {
            let Scratch {
                gather, outgoing, ..
            } = s;
            let mut sealed = Sealed {
                buf: outgoing,
                len: 0,
            };
            let taken = self
                .with_traffic(|traffic, _| encrypt(traffic, bufs, gather, &mut sealed))?
                .ok_or(io::ErrorKind::BrokenPipe)?;
            let outgoing = &sealed.buf[..sealed.len];
            let mut sent = 0;
            let first = !self.outgoing.is_empty();
            if !first {
                let (n, result) = send(&mut self.tcp, outgoing);
                result?;
                sent = n;
            }
            // Encrypted is owed: what the socket did not take waits here,
            // after any handshake records rustls wanted sent first.
            self.outgoing.extend_from_slice(&outgoing[sent..]);
            if first {
                self.write_outgoing()?;
            }
            Ok(taken)
        })
    }

    fn flush(&mut self) -> io::Result<bool> {
        self.write_outgoing()
    }

    fn wants_write(&self) -> usize {
        self.outgoing.len()
    }

    fn settle(&mut self, released: usize) -> usize {
        self.unsettled += released;
        if self.outgoing.is_empty() {
            std::mem::take(&mut self.unsettled)
        } else {
            0
        }
    }

    fn abandon(&mut self) -> usize {
        std::mem::take(&mut self.unsettled)
    }

    fn handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    fn goodbye(&mut self) {
        let _ = self.with_traffic(|traffic, outgoing| {
            append(outgoing, 64, |o| traffic.queue_close_notify(o))
        });
        let _ = self.write_outgoing();
    }

    fn shutdown_write(&mut self) {
        self.goodbye();
        self.tcp.shutdown_write();
    }

    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.tcp.register(registry, token)
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.tcp.peer_addr()
    }

    fn proxied_client(&self) -> Option<SocketAddr> {
        self.proxy.as_ref().and_then(|p| p.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Records rustls encrypted but the socket did not take are owed: the
    /// transport reports them and keeps their reservations until they are
    /// on the wire, then gives every one back.
    #[test]
    fn records_rustls_holds_are_owed_until_the_socket_takes_them() {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let config =
            TlsConfig::from_pem(cert.pem().as_bytes(), key_pair.serialize_pem().as_bytes())
                .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client_config = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (read_tx, read_rx) = mpsc::channel::<usize>();
        let client = std::thread::spawn(move || {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            sock.connect(&addr.into()).unwrap();
            let mut sock: std::net::TcpStream = sock.into();
            let name = "localhost".try_into().unwrap();
            let mut conn = rustls::ClientConnection::new(client_config, name).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).unwrap();
            }
            // Reads nothing until told how much.
            let want = read_rx.recv().unwrap();
            let mut got = vec![0u8; want];
            rustls::Stream::new(&mut conn, &mut sock)
                .read_exact(&mut got)
                .unwrap();
            got
        });
        let (sock, _) = listener.accept().unwrap();
        let nonblocking = sock.try_clone().unwrap();
        let tcp = TcpTransport::new(mio::net::TcpStream::from_std(sock));
        let mut t = TlsTransport::new(tcp, &config, false).unwrap();
        // The socket still blocks: the handshake reads wait for the client.
        let mut buf = vec![0u8; 256 * 1024];
        while t.handshaking() {
            match t.read(&mut buf) {
                Ok(n) => assert!(n > 0, "the client left"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
        }
        nonblocking.set_nonblocking(true).unwrap();

        let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut sent = Vec::new();
        loop {
            match t.write_vectored(&[IoSlice::new(&data)]) {
                Ok(n) => sent.extend_from_slice(&data[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(sent.len() < 64 << 20, "the socket never pushed back");
        }
        assert!(t.wants_write() > 0, "rustls holds records: they are owed");
        assert_eq!(t.settle(1000), 0, "kept while rustls holds records");

        read_tx.send(sent.len()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.flush().unwrap() {
            assert!(Instant::now() < deadline, "the records never left");
            std::thread::yield_now();
        }
        assert_eq!(t.wants_write(), 0);
        assert_eq!(t.settle(0), 1000, "given back once on the wire");
        assert!(
            client.join().unwrap() == sent,
            "the client read other bytes"
        );
    }
}
