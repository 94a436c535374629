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
