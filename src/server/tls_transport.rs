//! [`TlsTransport`]: wss://, TLS under the frames, with rustls, on the
//! transport seam.
//!
//! It is the [`Transport`] a loop puts under a connection when the server has
//! a [`super::TlsConfig`]: TLS records in from the socket, plaintext into the
//! loop's read buffer; plaintext from the out queue, records out to the
//! socket. The protocol and the connection's lifecycle do not know it is
//! there.
//!
//! **Reading.** rustls's own `read_tls` takes at most 4 KiB from a reader per
//! call, which over a socket is one `recv` per 4 KiB: sixteen system calls
//! for one 64 KiB message. Instead the socket is read in large pieces into a
//! scratch buffer the loop thread's TLS connections share ([`CipherScratch`]),
//! and rustls is fed from that memory. Everything read is decrypted before
//! the call returns (the read is sized so its plaintext fits the caller's
//! buffer), so no connection keeps ciphertext of its own beyond the partial
//! record rustls holds, and an idle connection keeps no read buffer of ours.
//!
//! **Writing.** rustls encrypts what it is given at once and holds the
//! records the socket did not take (up to its 64 KiB limit). Those bytes are
//! still owed to the peer: [`Transport::wants_write`] reports them, and the
//! reservations of the messages they came from are given back only once
//! rustls holds nothing ([`Transport::settle`]), so `buffered_amount`, the
//! per-connection cap and the backpressure policy count them as on plain TCP.
//!
//! A client that speaks plain HTTP or garbage to the TLS port gets a TLS
//! alert and its connection ends; the WebSocket handshake timeout covers the
//! TLS handshake too (both run from the accept); renegotiation never happens
//! (rustls does not implement it); a clean close sends close_notify.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::{Registry, Token};
use rustls::ServerConnection;

use super::proxy_protocol::{self, Proxied};
use super::tls_config::TlsConfig;
use super::transport::{TcpTransport, Transport};

/// A TLS alert record: fatal (2), decode_error (50).
const FATAL_DECODE_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50];

/// The largest TLS record on the wire (rustls's `MAX_WIRE_SIZE`): 16 KiB of
/// plaintext, 2 KiB of expansion allowance, a 5-byte header. rustls may hold
/// up to one of these, partly read, between reads.
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;

/// How much ciphertext one `recv` asks for, at most.
const SCRATCH_LEN: usize = 128 * 1024;

/// The ciphertext buffer the TLS connections of one loop thread share: the
/// socket is read into it, and rustls is fed from it in the same call, so it
/// never holds anything between calls.
struct CipherScratch;

impl CipherScratch {
    /// Runs `f` with the thread's scratch buffer (allocated at first use, on
    /// loop threads that serve TLS only).
    fn with<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
        thread_local! {
            static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(Box::default());
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.is_empty() {
                *s = vec![0u8; SCRATCH_LEN].into_boxed_slice();
            }
            f(&mut s)
        })
    }
}

/// TLS over one connection's TCP socket.
pub(crate) struct TlsTransport {
    tcp: TcpTransport,
    tls: ServerConnection,
    /// A trusted proxy's PROXY header, read off TCP before TLS begins.
    proxy: Option<Box<ProxyPrefix>>,
    /// Plaintext bytes given to rustls whose records may not all be on the
    /// wire yet; 0 once rustls holds no records.
    held: usize,
    /// Reservations (see [`Transport::settle`]) kept until `held` is 0.
    unsettled: usize,
    /// The last read ended with the socket drained and rustls holding no
    /// plaintext: under edge-triggered readiness, the next read would only
    /// say `WouldBlock`.
    drained: bool,
}

/// The PROXY header in front of a TLS connection, and what followed it.
#[derive(Default)]
struct ProxyPrefix {
    /// The header so far; once read, the bytes after it (the start of the
    /// ClientHello), until rustls has taken them.
    buf: Vec<u8>,
    done: bool,
    client: Option<SocketAddr>,
}

/// How one read of the socket ended.
enum Recv {
    /// It filled what was asked: there may be more.
    Full,
    /// It gave less than asked, or nothing for now: the socket is drained.
    Drained,
    /// The peer ended the stream.
    Eof,
}

impl TlsTransport {
    /// `expect_proxy`: the peer is a trusted proxy that sends a PROXY
    /// protocol header before the TLS handshake.
    pub(crate) fn new(
        tcp: TcpTransport,
        config: &TlsConfig,
        expect_proxy: bool,
    ) -> io::Result<TlsTransport> {
        let tls = ServerConnection::new(Arc::clone(&config.server)).map_err(io::Error::other)?;
        Ok(TlsTransport {
            tcp,
            tls,
            proxy: expect_proxy.then(Box::default),
            held: 0,
            unsettled: 0,
            drained: false,
        })
    }

    /// Reads the PROXY header off TCP. `Ok(true)` once it is read (what came
    /// after it waits in the prefix for rustls); `WouldBlock` until then.
    fn read_proxy_header(&mut self) -> io::Result<bool> {
        let Some(p) = &mut self.proxy else {
            return Ok(true);
        };
        if p.done {
            return Ok(true);
        }
        let mut chunk = [0u8; 600];
        loop {
            let n = match self.tcp.socket().read(&mut chunk) {
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
                    p.buf.drain(..used);
                    return Ok(true);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a trusted proxy sent no valid PROXY header: {e:?}"),
                    ))
                }
            }
        }
    }

    /// Moves the plaintext rustls holds into `buf`; returns how much, and
    /// whether the stream has ended (close_notify, or EOF without it) with
    /// nothing more to give.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.tls.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok((filled, true)),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The peer closed TCP without close_notify: the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok((filled, true)),
                Err(e) => return Err(e),
            }
        }
        Ok((filled, false))
    }

    /// Gives rustls all of `cipher`, decrypting as it goes into
    /// `buf[*filled..]` (which the caller made large enough), and answers
    /// what the handshake asks for at once.
    fn feed(&mut self, mut cipher: &[u8], buf: &mut [u8], filled: &mut usize) -> io::Result<()> {
        // Never an empty slice: rustls takes a read of 0 for the peer's EOF.
        while !cipher.is_empty() {
            self.tls.read_tls(&mut cipher)?;
            self.process()?;
            *filled += self.take_plaintext(&mut buf[*filled..])?.0;
        }
        Ok(())
    }

    /// Lets rustls process what it was given. Plain HTTP or garbage to the
    /// TLS port: the alert rustls queued goes out, then the connection ends.
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.tls.process_new_packets() {
            if self.tls.wants_write() {
                let _ = self.write_records();
            } else {
                // Some errors (a handshake message larger than any real one,
                // say) queue no alert: send a fatal decode_error of our own,
                // so the peer hears why rather than a bare close.
                let _ = self.tcp.socket().write(&FATAL_DECODE_ERROR);
            }
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        // Handshake messages, key updates: answered at once.
        self.write_records().map(|_| ())
    }

    /// Reads up to `want` bytes of ciphertext off the socket and feeds them
    /// to rustls, plaintext into `buf[*filled..]`.
    fn recv(&mut self, want: usize, buf: &mut [u8], filled: &mut usize) -> io::Result<Recv> {
        CipherScratch::with(|scratch| {
            let scratch = &mut scratch[..want.min(SCRATCH_LEN)];
            let n = loop {
                match self.tcp.socket().read(scratch) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Recv::Drained),
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                // The peer's EOF, told to rustls as a read of nothing, so it
                // can say whether the stream ended cleanly.
                self.tls.read_tls(&mut &[][..])?;
                self.process()?;
                return Ok(Recv::Eof);
            }
            self.feed(&scratch[..n], buf, filled)?;
            Ok(if n < scratch.len() {
                Recv::Drained
            } else {
                Recv::Full
            })
        })
    }

    /// Writes the records rustls holds; `Ok(true)` once it holds none.
    fn write_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(self.tcp.socket()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.held = 0;
        Ok(true)
    }
}

impl Transport for TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.drained = false;
        match self.read_proxy_header() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        let mut filled = 0;
        if let Some(p) = self.proxy.as_mut().filter(|p| !p.buf.is_empty()) {
            // What followed the PROXY header: the start of the ClientHello.
            let rest = std::mem::take(&mut p.buf);
            self.feed(&rest, buf, &mut filled)?;
        }
        let (n, ended) = self.take_plaintext(buf)?;
        filled += n;
        if ended {
            return Ok(filled);
        }
        loop {
            // Read only what can be decrypted into `buf` now: the new bytes'
            // plaintext plus that of a record begun earlier.
            let room = buf.len() - filled;
            if room < 2 * MAX_RECORD {
                return Ok(filled);
            }
            match self.recv(room - MAX_RECORD, buf, &mut filled)? {
                Recv::Full => {}
                Recv::Drained if filled == 0 => return Err(io::ErrorKind::WouldBlock.into()),
                Recv::Drained => {
                    self.drained = true;
                    return Ok(filled);
                }
                Recv::Eof => {
                    let (n, _) = self.take_plaintext(&mut buf[filled..])?;
                    // Plaintext first; the next read says the end (0).
                    return Ok(filled + n);
                }
            }
        }
    }

    fn drained_by(&self, _n: usize, _asked: usize) -> bool {
        self.drained
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records still waiting go first: rustls takes plaintext only up to
        // its buffer limit (64 KiB of records), the rest stays in the out
        // queue. Nothing taken is a push-back only when the socket itself
        // refused (then its writable edge will come); never otherwise.
        if !self.write_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = self.tls.writer().write_vectored(bufs)?;
        self.held += taken;
        self.write_records()?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<bool> {
        self.write_records()
    }

    fn wants_write(&self) -> usize {
        // Alerts and handshake records hold no plaintext, but are owed all the same.
        self.held.max(usize::from(self.tls.wants_write()))
    }

    fn settle(&mut self, released: usize) -> usize {
        self.unsettled += released;
        if self.held == 0 {
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
        self.tls.send_close_notify();
        let _ = self.write_records();
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
