//! The transport seam: what sits between a connection's socket and its
//! protocol state.
//!
//! The event loop never touches a socket directly: it reads plaintext into
//! its one read buffer through [`Transport::read`], and writes the
//! connection's [`super::out_queue::OutQueue`] through
//! [`Transport::write_vectored`]. A transport that keeps bytes of its own (a
//! TLS layer's records not yet taken by the kernel) says so through
//! [`Transport::wants_write`] and pushes them in [`Transport::flush`], and
//! the loop counts them against the connection like its own queue
//! ([`Transport::settle`] keeps their reservations until they are out). Plain TCP
//! ([`TcpTransport`]) is the first implementation: it keeps nothing; TLS
//! (`tls.rs`, the `tls` feature) the second; `stream.rs` holds whichever a
//! connection has.
//! The protocol and the connection's lifecycle never know which transport
//! they run on.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// A byte stream under one connection's frames.
pub(crate) trait Transport {
    /// Reads plaintext into `buf`. `Ok(0)` is the end of the stream;
    /// `WouldBlock` means nothing more until the next readiness event.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Whether a read of `n` bytes into a buffer of `asked` bytes drained the
    /// transport, so under edge-triggered readiness the read that would only
    /// return `WouldBlock` can be skipped.
    fn drained_by(&self, n: usize, asked: usize) -> bool {
        n < asked
    }

    /// Writes from `bufs`, in order; returns how many of their bytes were
    /// taken (by the kernel, or into the transport's own bounded buffer).
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// [`Transport::write_vectored`], where the transport may first copy
    /// many small slices into one buffer when `gather` (plain TCP does, see
    /// [`gathered`]). A caller whose last write was cut short passes false:
    /// bytes the socket has no room for are not copied again and again.
    fn write_gathering(&mut self, bufs: &[IoSlice<'_>], gather: bool) -> io::Result<usize> {
        let _ = gather;
        self.write_vectored(bufs)
    }

    /// Pushes bytes the transport holds; `Ok(true)` once it holds none.
    fn flush(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// Bytes the transport holds for the socket, beyond the loop's queue.
    fn wants_write(&self) -> usize {
        0
    }

    /// The out queue handed the transport messages whose reservations add
    /// up to `released`; returns how many reserved bytes may be given back
    /// now. Plain TCP: all of them, the kernel has the bytes. A transport
    /// that holds bytes of its own (TLS records) keeps them until it holds
    /// none, so what it owes counts against the connection's cap.
    fn settle(&mut self, released: usize) -> usize {
        released
    }

    /// The connection ends: every reservation the transport kept.
    fn abandon(&mut self) -> usize {
        0
    }

    /// The transport's own handshake (TLS) is under way: the loop budgets
    /// how many of those it progresses per turn.
    fn handshaking(&self) -> bool {
        false
    }

    /// Says goodbye at the transport's own level (TLS: close_notify) before
    /// the socket is closed; plain TCP has nothing to say.
    fn goodbye(&mut self) {}

    /// Ends our sending side (after the transport's goodbye, if it has one).
    fn shutdown_write(&mut self);

    /// Adds the transport to the loop's poll set under `token`.
    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()>;

    /// The peer's address.
    fn peer_addr(&self) -> Option<SocketAddr>;

    /// The client a trusted proxy named in a PROXY header this transport
    /// read itself (TLS reads it before the handshake); `None` otherwise.
    fn proxied_client(&self) -> Option<SocketAddr> {
        None
    }
}

/// Slices are gathered into one buffer and sent with one plain `send` when
/// they add up to at most this many bytes (see [`gathered`]).
const GATHER_MAX: usize = 64 * 1024;
/// ... and average at most this many bytes each: many small frames, not a
/// large payload behind a header.
const GATHER_AVERAGE_MAX: usize = 2048;

thread_local! {
    /// The loop thread's one gather buffer: reused for every connection it
    /// writes, so it stays in cache.
    static GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls `send` with `bufs` copied into this thread's gather buffer when
/// they are many small slices (see [`GATHER_MAX`]); `None`, nothing sent,
/// when they are not. Many small frames (a fan-out's share for one
/// subscriber) cost the kernel less as one contiguous send, as uWebSockets'
/// corked writes are, than as an iovec each.
fn gathered(
    bufs: &[IoSlice<'_>],
    send: impl FnOnce(&[u8]) -> io::Result<usize>,
) -> Option<io::Result<usize>> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total > GATHER_MAX || total > bufs.len() * GATHER_AVERAGE_MAX {
        return None;
    }
    GATHER.with(|g| {
        let mut g = g.borrow_mut();
        g.clear();
        for b in bufs {
            g.extend_from_slice(b);
        }
        Some(send(&g))
    })
}

/// Plain TCP: bytes go straight between the socket and the loop's buffers.
#[derive(Debug)]
pub(crate) struct TcpTransport {
    stream: TcpStream,
}

impl TcpTransport {
    pub(crate) fn new(stream: TcpStream) -> TcpTransport {
        if !cfg!(target_os = "linux") {
            // Linux copies TCP_NODELAY from the listener (see `bind_listeners`).
            let _ = stream.set_nodelay(true);
        }
        TcpTransport { stream }
    }
}

impl Transport for TcpTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(&mut self.stream, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // One slice (the common echo reply) takes the plain send path,
        // cheaper in the kernel than writev's iovec import.
        match bufs {
            [one] => Write::write(&mut self.stream, one),
            _ => Write::write_vectored(&mut self.stream, bufs),
        }
    }

    fn write_gathering(&mut self, bufs: &[IoSlice<'_>], gather: bool) -> io::Result<usize> {
        if gather && bufs.len() > 1 {
            let stream = &mut self.stream;
            if let Some(sent) = gathered(bufs, |all| Write::write(stream, all)) {
                return sent;
            }
        }
        self.write_vectored(bufs)
    }

    fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        // No deregister at close: closing the (never duplicated) descriptor
        // removes it from the poll set.
        registry.register(
            &mut self.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(parts: &[Vec<u8>]) -> Vec<IoSlice<'_>> {
        parts.iter().map(|p| IoSlice::new(p)).collect()
    }

    #[test]
    fn many_small_slices_are_gathered_in_order_and_large_ones_are_not() {
        let small: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + i as usize * 30]).collect();
        let mut seen = Vec::new();
        let sent = gathered(&slices(&small), |all| {
            seen = all.to_vec();
            Ok(all.len())
        });
        assert_eq!(sent.unwrap().unwrap(), small.concat().len());
        assert_eq!(seen, small.concat(), "one buffer, every byte in order");

        let header_and_payload = vec![vec![0x82, 126, 16, 0], vec![7; 4096]];
        let refused = gathered(&slices(&header_and_payload), |_| unreachable!());
        assert!(
            refused.is_none(),
            "a large payload behind a header is not copied"
        );
        let too_much: Vec<Vec<u8>> = (0..40).map(|_| vec![1; GATHER_MAX / 32]).collect();
        assert!(gathered(&slices(&too_much), |_| unreachable!()).is_none());
    }

    /// Writes `bytes` as 1,000-byte slices as `LoopConn::write_out` does
    /// (gathered until a write is cut short) until they are all taken or,
    /// unless `wait`, the socket pushes back; returns what was taken and
    /// whether a gathered write was cut short.
    fn write_slices(t: &mut TcpTransport, bytes: &[u8], wait: bool) -> (usize, bool) {
        let (mut off, mut gather) = (0, true);
        while off < bytes.len() {
            let chunks: Vec<IoSlice<'_>> = bytes[off..].chunks(1000).map(IoSlice::new).collect();
            match t.write_gathering(&chunks, gather) {
                Ok(n) => {
                    gather &= off + n == bytes.len();
                    off += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !wait => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        (off, !gather)
    }

    /// A peer that stops reading: a gathered write is cut short, the writes
    /// after it go out vectored, and the peer gets every byte in order.
    #[test]
    fn a_congested_socket_gets_every_byte_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut t = TcpTransport::new(TcpStream::from_std(server));
        let round: Vec<u8> = (0..32_000u32).map(|j| (j % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::thread::park(); // Nothing read until the server is congested.
            (&client).read_to_end(&mut got).unwrap();
            got
        });
        let mut sent = Vec::new();
        loop {
            let (n, cut) = write_slices(&mut t, &round, false);
            sent.extend_from_slice(&round[..n]);
            if n < round.len() {
                assert!(cut, "the socket pushed back on a gathered write");
                reader.thread().unpark();
                let (rest, _) = write_slices(&mut t, &round[n..], true);
                sent.extend_from_slice(&round[n..][..rest]);
                break;
            }
        }
        t.shutdown_write();
        drop(t);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes arrived in the order written");
    }
}
