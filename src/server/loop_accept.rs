//! How a loop accepts connections: out of descriptors it retries rather
//! than spins, and each new socket gets its transport (TLS when configured).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Token;

use super::event_loop::{EventLoop, ACCEPT_RETRY};
use super::loop_conn::LoopConn;
use super::rate_limit::ConnLimits;
use super::stats::HandshakeFailure;
use super::stream::Stream;
#[cfg(feature = "tls")]
use super::tls_transport::TlsTransport;
use super::transport::{TcpTransport, Transport};
use crate::protocol::Connection;

impl EventLoop {
    /// Accepts every waiting connection. When that fails (EMFILE, ENFILE,
    /// ENOBUFS ...), the rest stay in the backlog and accepting is tried
    /// again after [`ACCEPT_RETRY`]: no spinning on the error, open
    /// connections served meanwhile, and recovery once descriptors are free.
    pub(super) fn accept_all(&mut self, now: Instant) {
        while let Some(listener) = &self.listener {
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_retry = None;
                    self.add_conn(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_retry = None;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Said once per episode, not at every retry.
                    if self.accept_retry.is_none() {
                        log::warn!(
                            "loop {}: accept failed: {e}; retrying every {} ms",
                            self.index,
                            ACCEPT_RETRY.as_millis()
                        );
                    }
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    pub(super) fn add_conn(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        let state = self.server.state();
        let limit = &state.config.rate_limit;
        let ip = limit.per_ip().then(|| peer.ip());
        if let Some(ip) = ip {
            if !state.ip_limits.admit(ip, limit, now) {
                // Closed before its request is read: under a flood, the
                // cheapest answer.
                state
                    .stats
                    .handshake_failures
                    .count(HandshakeFailure::PerIp);
                return;
            }
        }
        // Only an address to give back is kept from the start; the buckets
        // come with the first message (an idle connection has none).
        let limits = ip.map(|ip| Box::new(ConnLimits::new(limit, Some(ip), now)));
        let count = state.sockets.fetch_add(1, Ordering::AcqRel) + 1;
        if count > state.config.max_sockets() {
            // Far past the limit: not even a 503, the descriptor is what we must save.
            state.sockets.fetch_sub(1, Ordering::AcqRel);
            state
                .stats
                .handshake_failures
                .count(HandshakeFailure::Capacity);
            if let Some(ip) = ip {
                state.ip_limits.release(ip, limit);
            }
            return;
        }
        let over_capacity = count > state.config.max_connections;
        let refuse = || {
            state.sockets.fetch_sub(1, Ordering::AcqRel);
            if let Some(ip) = ip {
                state.ip_limits.release(ip, limit);
            }
        };
        let expect_proxy = state.config.proxies.expects_proxy_protocol(peer);
        let Some(transport) = self.transport_for(stream, expect_proxy) else {
            return refuse();
        };
        let mut proto = Connection::server(Arc::clone(&self.proto_config), now);
        // Every message becomes a handler's `Message`, which owns its bytes,
        // except a small one an inline handler reads where it lies (see
        // `Handler::on_message_lent`).
        proto.own_messages(true);
        proto.lend_small_messages(self.dispatcher.is_inline());
        // Under TLS the transport reads the PROXY header, before the handshake.
        let awaiting_proxy = expect_proxy && matches!(transport, Stream::Tcp(_));
        let mut conn = LoopConn::new(transport, proto, over_capacity, awaiting_proxy);
        conn.limits = limits;
        let Some(slot) = self.conns.insert(conn) else {
            return refuse();
        };
        let c = self.conns.get_mut(slot).expect("just inserted");
        if let Err(e) = c.transport.register(self.poll.registry(), Token(slot)) {
            log::warn!("loop {}: register failed: {e}", self.index);
            return self.release(slot);
        }
        // The request may already be waiting: edge-triggered readiness was
        // armed at registration, so its event will come.
        self.reschedule(slot);
    }

    /// The transport a new connection gets: TLS when the server has it
    /// (`expect_proxy`: a PROXY header comes first, before TLS).
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    pub(super) fn transport_for(&self, stream: TcpStream, expect_proxy: bool) -> Option<Stream> {
        let tcp = TcpTransport::new(stream);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.server.config().tls {
            return match TlsTransport::new(tcp, tls, expect_proxy) {
                Ok(t) => Some(Stream::Tls(Box::new(t))),
                Err(e) => {
                    log::warn!("loop {}: TLS refused a connection: {e}", self.index);
                    None
                }
            };
        }
        Some(Stream::Tcp(tcp))
    }
}
