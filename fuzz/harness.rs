//! The fuzz harness bodies, shared by the cargo-fuzz targets and by
//! `tests/fuzz_regressions.rs`, which replays every saved input through them.
#![allow(dead_code)]

use sockwave::protocol::frame::{DecodeRules, FrameHeader, MAX_HEADER_LEN};
use sockwave::protocol::handshake::{
    write_accept, AcceptOptions as HsAccept, HandshakeLimits, Request,
};
use sockwave::protocol::{AcceptOptions, Connection, Event, ProtocolConfig, State};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request parser and validator on arbitrary bytes: never panics, never
/// consumes more than it was given, and a valid upgrade always gets a 101.
pub fn handshake(data: &[u8]) {
    let limits = HandshakeLimits {
        max_request_bytes: 4096,
        max_headers: 32,
    };
    match Request::parse(data, &limits) {
        Ok(Some((req, n))) => {
            assert!(n <= data.len() && n <= limits.max_request_bytes);
            let _ = (
                req.path(),
                req.query(),
                req.origin(),
                req.protocols().count(),
                req.extensions().count(),
            );
            if let Ok(key) = req.validate_upgrade() {
                let opts = HsAccept {
                    protocol: req.protocols().next(),
                    ..Default::default()
                };
                let mut out = [0u8; 4096];
                let n = write_accept(key, &opts, &mut out).expect("fits");
                assert!(out[..n].starts_with(b"HTTP/1.1 101 "));
            }
        }
        Ok(None) => assert!(data.len() < limits.max_request_bytes),
        Err(e) => {
            let mut out = [0u8; 512];
            e.write_response(&mut out).expect("error responses fit");
        }
    }
}

/// Frame header decoding on arbitrary bytes; whatever decodes re-encodes to a
/// header that decodes to the same thing.
pub fn frame(data: &[u8]) {
    for (expect_masked, allow_rsv1) in [(true, false), (false, false), (true, true)] {
        let rules = DecodeRules {
            expect_masked,
            allow_rsv1,
        };
        if let Ok(Some((h, n))) = FrameHeader::decode(data, rules) {
            assert!(n <= data.len() && n <= MAX_HEADER_LEN);
            if h.opcode.is_control() {
                assert!(h.fin && h.payload_len <= 125);
            }
            let mut buf = [0u8; MAX_HEADER_LEN];
            let m = h.encode(&mut buf);
            let (again, m2) = FrameHeader::decode(&buf[..m], rules).unwrap().unwrap();
            assert_eq!((again, m2), (h, m));
        }
    }
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The whole server state machine: a valid handshake, then arbitrary bytes fed
/// in arbitrary pieces (the first byte picks the piece size), with timers
/// fired in between. Checks the runtime's invariants: nothing consumed beyond
/// the input, a tail that stays small, no event after Closed, memory bounded
/// by the message limit.
fn conn_with(data: &[u8], request: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = step as usize % 64 + 1;
    let cfg = Arc::new(ProtocolConfig {
        max_frame_size: 4096,
        max_message_size: 8192,
        ..ProtocolConfig::default()
    });
    let t0 = Instant::now();
    let mut conn = Connection::server(cfg.clone(), t0);
    let mut out = Vec::new();
    let mut pending = request.to_vec();
    let mut now = t0;
    for piece in std::iter::once(&[][..]).chain(rest.chunks(step)) {
        pending.extend_from_slice(piece);
        now += Duration::from_millis(piece.len() as u64);
        let mut pos = 0;
        loop {
            let was_closed = conn.is_closed();
            let mut to_accept = None;
            let available = pending.len() - pos;
            let r = conn.read(&mut pending[pos..], now, &mut out);
            assert!(r.consumed <= available);
            if r.needs_input() {
                break;
            }
            pos += r.consumed;
            if was_closed {
                assert!(r.event.is_none(), "event after close");
            }
            match r.event {
                Some(Event::Request(req)) => to_accept = Some(req),
                Some(Event::Message(_, p)) => {
                    assert!(p.as_slice().len() as u64 <= cfg.max_message_size)
                }
                _ => {}
            }
            if let Some(req) = to_accept {
                conn.accept(&req, &AcceptOptions::default(), now, &mut out)
                    .expect("valid request");
            }
            if pos == pending.len() {
                break;
            }
        }
        pending.drain(..pos);
        // What is kept between reads: a partial header or control frame, never a payload.
        if conn.state() != State::Closed {
            assert!(pending.len() <= 14 + 125, "tail of {} bytes", pending.len());
        }
        assert!(conn.buffered_incoming() as u64 <= cfg.max_message_size);
        if let Some(deadline) = conn.poll_timeout() {
            if deadline <= now + Duration::from_secs(3) {
                conn.handle_timeout(now + Duration::from_secs(3), &mut out);
            }
        }
        if out.len() > 1 << 20 {
            out.clear();
        }
    }
}

/// The whole server state machine after a plain handshake.
pub fn conn(data: &[u8]) {
    conn_with(data, REQUEST);
}

/// The same with permessage-deflate negotiated (shared mode): RSV1 frames go
/// through the inflater, under the message cap.
pub fn conn_deflate(data: &[u8]) {
    conn_with(data, REQUEST_DEFLATE);
}

const REQUEST_DEFLATE: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// The outbound queue against a plain byte queue (see
/// `sockwave::server::fuzzing::out_queue`).
pub fn out_queue(data: &[u8]) {
    sockwave::server::fuzzing::out_queue(data);
}

/// The upgrade decision on any request, configuration and load (see
/// `sockwave::server::fuzzing::upgrade_decision`).
pub fn upgrade(data: &[u8]) {
    sockwave::server::fuzzing::upgrade_decision(data);
}

/// The TLS transport against a rustls client over an in-memory socket cut
/// anywhere (see `sockwave::server::fuzzing::tls_transport`). The
/// certificate is made once per process, at run time.
#[cfg(feature = "tls")]
pub fn tls_transport(data: &[u8]) {
    use sockwave::server::fuzzing::TlsPair;
    use std::sync::OnceLock;
    static PAIR: OnceLock<TlsPair> = OnceLock::new();
    let pair = PAIR.get_or_init(|| {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let server = sockwave::server::TlsConfig::from_pem(
            cert.pem().as_bytes(),
            key_pair.serialize_pem().as_bytes(),
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsPair {
            server,
            client: Arc::new(client),
        }
    });
    sockwave::server::fuzzing::tls_transport(pair, data);
}
