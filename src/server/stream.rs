//! [`Stream`]: the transport one connection holds, plain TCP or TLS.

use std::io::{self, IoSlice};
use std::net::SocketAddr;

use mio::{Registry, Token};

use super::transport::{TcpTransport, Transport};

/// The transport under one connection: plain TCP, or TLS over it (boxed:
/// rustls's state is large, and plain connections should not pay for it).
pub(crate) enum Stream {
    Tcp(TcpTransport),
    #[cfg(feature = "tls")]
    Tls(Box<super::tls_transport::TlsTransport>),
}

macro_rules! each {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Stream::Tcp($t) => $e,
            #[cfg(feature = "tls")]
            Stream::Tls($t) => $e,
        }
    };
}

impl Transport for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, t => t.read(buf))
    }

    fn drained_by(&self, n: usize, asked: usize) -> bool {
        each!(self, t => t.drained_by(n, asked))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        each!(self, t => t.write_vectored(bufs))
    }

    fn write_gathering(&mut self, bufs: &[IoSlice<'_>], gather: bool) -> io::Result<usize> {
        each!(self, t => t.write_gathering(bufs, gather))
    }

    fn flush(&mut self) -> io::Result<bool> {
        each!(self, t => t.flush())
    }

    fn wants_write(&self) -> usize {
        each!(self, t => t.wants_write())
    }

    fn settle(&mut self, released: usize) -> usize {
        each!(self, t => t.settle(released))
    }

    fn abandon(&mut self) -> usize {
        each!(self, t => t.abandon())
    }

    fn handshaking(&self) -> bool {
        each!(self, t => t.handshaking())
    }

    fn goodbye(&mut self) {
        each!(self, t => t.goodbye())
    }

    fn shutdown_write(&mut self) {
        each!(self, t => t.shutdown_write())
    }

    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        each!(self, t => t.register(registry, token))
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        each!(self, t => t.peer_addr())
    }

    fn proxied_client(&self) -> Option<SocketAddr> {
        each!(self, t => t.proxied_client())
    }
}
