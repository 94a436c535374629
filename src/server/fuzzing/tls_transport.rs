//! The TLS transport against a real rustls client, over an in-memory socket
//! whose reads and writes the fuzzer cuts wherever it likes.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::{Registry, Token};

use crate::server::tls_transport::TlsTransport;
use crate::server::transport::Transport;
use crate::server::TlsConfig;

/// A server configuration and a client configuration that trusts it (made
/// once by the caller: certificates are generated, never committed).
#[derive(Debug)]
pub struct TlsPair {
    /// What the server under test uses.
    pub server: TlsConfig,
    /// A client that trusts the server's certificate for `localhost`.
    pub client: Arc<rustls::ClientConfig>,
}

/// An in-memory socket: reads take at most `chunk` bytes of what the client
/// sent; writes take at most `room` bytes, then push back.
#[derive(Default)]
struct Pipe {
    inbound: VecDeque<u8>,
    chunk: usize,
    eof: bool,
    outbound: Vec<u8>,
    room: usize,
}

impl Transport for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbound.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.chunk.max(1)).min(self.inbound.len());
        for (b, byte) in buf[..n].iter_mut().zip(self.inbound.drain(..n)) {
            *b = byte;
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        for b in bufs {
            let n = b.len().min(self.room);
            self.outbound.extend_from_slice(&b[..n]);
            self.room -= n;
            taken += n;
        }
        Ok(taken)
    }

    fn shutdown_write(&mut self) {}

    fn register(&mut self, _: &Registry, _: Token) -> io::Result<()> {
        Ok(())
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }
}

/// Both ends of one TLS connection and what each side has seen.
struct Run {
    server: TlsTransport<Pipe>,
    client: rustls::ClientConnection,
    /// Plaintext the client wrote, and what the server has read of it.
    client_sent: Vec<u8>,
    server_got: Vec<u8>,
    /// Plaintext the server took, and what the client has read of it.
    server_sent: Vec<u8>,
    client_got: Vec<u8>,
    /// Reservations handed to `settle` and given back.
    reserved: usize,
    given_back: usize,
    read_buf: Box<[u8]>,
    corrupted: bool,
    next: u8,
}

impl Run {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.next = self.next.wrapping_add(7);
                self.next
            })
            .collect()
    }

    /// The client's records, onto the wire to the server.
    fn client_flush(&mut self) {
        let mut out = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut out).expect("into memory");
        }
        self.server.tcp_mut().inbound.extend(out);
    }

    /// The server reads everything the wire has for it, in `chunk`-byte
    /// reads. False once the connection has ended (an error, or its end).
    fn server_read(&mut self, chunk: usize) -> bool {
        self.server.tcp_mut().chunk = chunk;
        loop {
            match self.server.read(&mut self.read_buf) {
                Ok(0) => return false,
                Ok(n) => self.server_got.extend_from_slice(&self.read_buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    assert!(self.corrupted, "an error on an intact stream: {e}");
                    return false;
                }
            }
        }
    }

    /// The server's records, all to the client, which reads their
    /// plaintext. False once the client refused them (after a corruption).
    fn server_flush(&mut self) -> bool {
        self.server.tcp_mut().room = usize::MAX;
        assert!(self.server.flush().expect("into memory"));
        assert_eq!(self.server.wants_write(), 0);
        self.given_back += self.server.settle(0);
        assert_eq!(
            self.given_back, self.reserved,
            "owed nothing: all given back"
        );
        let wire = std::mem::take(&mut self.server.tcp_mut().outbound);
        let mut rest = &wire[..];
        while !rest.is_empty() {
            self.client.read_tls(&mut rest).expect("from memory");
            if self.client.process_new_packets().is_err() {
                // The server's alert after a corrupted record.
                assert!(self.corrupted, "the client refused the server's records");
                return false;
            }
            let mut got = Vec::new();
            match self.client.reader().read_to_end(&mut got) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client read: {e}"),
            }
            self.client_got.extend_from_slice(&got);
        }
        true
    }

    fn check(&self) {
        assert!(
            self.client_sent.starts_with(&self.server_got),
            "server read other bytes"
        );
        assert!(
            self.server_sent.starts_with(&self.client_got),
            "client read other bytes"
        );
    }
}

/// Drives the transport through the ops `data` encodes (pairs of bytes):
/// the client sends, the wire delivers in cuts of any size, the server
/// reads, writes under push-back, flushes, a byte on the wire is flipped,
/// the client hangs up. After every op, each side has read a prefix of what
/// the other sent; at the end of an intact run, all of it; the server never
/// panics, fails only on a corrupted stream, and gives back every
/// reservation once its records are on the wire.
pub fn tls_transport(pair: &TlsPair, data: &[u8]) {
    let name = "localhost".try_into().expect("a valid name");
    let mut run = Run {
        server: TlsTransport::new(Pipe::default(), &pair.server, false).expect("a server"),
        client: rustls::ClientConnection::new(Arc::clone(&pair.client), name).expect("a client"),
        client_sent: Vec::new(),
        server_got: Vec::new(),
        server_sent: Vec::new(),
        client_got: Vec::new(),
        reserved: 0,
        given_back: 0,
        read_buf: vec![0u8; 256 * 1024].into_boxed_slice(),
        corrupted: false,
        next: 0,
    };
    for op in data.chunks(2) {
        let (kind, arg) = (op[0], usize::from(*op.get(1).unwrap_or(&0)));
        match kind % 7 {
            0 => {
                // rustls takes what fits under its buffer limit.
                let message = run.bytes(1 + arg * arg);
                let n = io::Write::write(&mut run.client.writer(), &message).expect("memory");
                run.client_sent.extend_from_slice(&message[..n]);
            }
            1 => run.client_flush(),
            2 => {
                if !run.server_read(1 + arg * 61) {
                    run.check();
                    return;
                }
            }
            3 => {
                if run.server.handshaking() {
                    continue;
                }
                // One to three pieces, small and large, under push-back.
                let pieces: Vec<Vec<u8>> = (0..1 + arg % 3)
                    .map(|i| run.bytes(1 + (arg * (i + 1) * 97) % 40_000))
                    .collect();
                let slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
                run.server.tcp_mut().room = arg * 211;
                match run.server.write_vectored(&slices) {
                    Ok(taken) => {
                        assert!(taken > 0);
                        let all: Vec<u8> = pieces.concat();
                        run.server_sent.extend_from_slice(&all[..taken]);
                        run.reserved += taken;
                        let back = run.server.settle(taken);
                        assert!(back == 0 || run.server.wants_write() == 0);
                        run.given_back += back;
                    }
                    Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
                }
            }
            4 => {
                if !run.server_flush() {
                    run.check();
                    return;
                }
            }
            5 => {
                let wire = &mut run.server.tcp_mut().inbound;
                if !wire.is_empty() {
                    let at = arg * 131 % wire.len();
                    wire[at] ^= 0x5a;
                    run.corrupted = true;
                }
            }
            _ => {
                // The client hangs up after what it sent: the server reads
                // it all, then the end.
                run.client_flush();
                run.server.tcp_mut().eof = true;
                run.server_read(usize::MAX);
                run.check();
                if !run.corrupted && !run.client.is_handshaking() {
                    assert_eq!(run.server_got, run.client_sent, "lost at the end");
                }
                return;
            }
        }
        run.check();
    }
    // Everything on both wires delivered: each side has all the other sent.
    for _ in 0..4 {
        run.client_flush();
        if !run.server_read(usize::MAX) || !run.server_flush() {
            run.check();
            return;
        }
    }
    run.check();
    if !run.corrupted {
        assert!(!run.server.handshaking(), "the handshake did not finish");
        assert_eq!(run.server_got, run.client_sent, "the server lost bytes");
        assert_eq!(run.client_got, run.server_sent, "the client lost bytes");
    }
}
