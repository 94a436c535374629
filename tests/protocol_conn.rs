//! The protocol state machine, byte by byte: every rule of RFC 6455 that the
//! core enforces, fed as real bytes, checked against the exact bytes or the
//! close code that come out. No sockets, no threads, a fake clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sockwave::protocol::client;
use sockwave::protocol::mask::apply_mask_reference;
use sockwave::protocol::{
    AcceptOptions, Connection, Event, HandshakeError, MessageKind, ProtocolConfig, ProtocolError,
    State, Timeout,
};

/// An event with everything copied out, so tests can collect and compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Request(String),
    HandshakeFailed(u16),
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
    Failed(u16),
}

fn own(ev: Event<'_>) -> Ev {
    match ev {
        Event::Request(r) => Ev::Request(r.target().to_string()),
        Event::HandshakeFailed(e) => Ev::HandshakeFailed(e.status()),
        Event::Message(MessageKind::Text, p) => Ev::Text(String::from_utf8(p.into_vec()).unwrap()),
        Event::Message(MessageKind::Binary, p) => Ev::Binary(p.into_vec()),
        Event::Ping(p) => Ev::Ping(p.to_vec()),
        Event::Pong(p) => Ev::Pong(p.to_vec()),
        Event::Close(f) => Ev::Close(f.code, f.reason.to_string()),
        Event::Failed(e) => Ev::Failed(e.close_code()),
    }
}

/// Feeds `input` the way the runtime does: read until more input is needed,
/// keep the unconsumed tail in `pending` for next time. Requests are accepted.
fn feed(
    conn: &mut Connection,
    pending: &mut Vec<u8>,
    input: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> Vec<Ev> {
    pending.extend_from_slice(input);
    let mut events = Vec::new();
    let mut pos = 0;
    loop {
        let mut accept_req = None;
        let r = conn.read(&mut pending[pos..], now, out);
        if r.needs_input() {
            break;
        }
        pos += r.consumed;
        if let Some(ev) = r.event {
            if let Event::Request(req) = &ev {
                accept_req = Some(req.clone());
            }
            events.push(own(ev));
        }
        if let Some(req) = accept_req {
            let _ = conn.accept(&req, &AcceptOptions::default(), now, out);
        }
        if pos == pending.len() && conn.state() != State::Handshaking {
            // Let a zero-length frame at the very end still be seen.
            let r = conn.read(&mut pending[pos..], now, out);
            if let Some(ev) = r.event {
                events.push(own(ev));
            }
            break;
        }
    }
    pending.drain(..pos);
    events
}

const REQUEST: &[u8] = b"GET /chat?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame, built by hand (independently of the encoder under test).
fn cframe(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&KEY);
    let mut p = payload.to_vec();
    apply_mask_reference(&mut p, KEY, 0);
    f.extend_from_slice(&p);
    f
}

fn config() -> Arc<ProtocolConfig> {
    Arc::new(ProtocolConfig {
        max_frame_size: 1 << 20,
        max_message_size: 2 << 20,
        ..ProtocolConfig::default()
    })
}

/// A server connection past its handshake, with its output cleared.
fn open_server(cfg: Arc<ProtocolConfig>, now: Instant) -> (Connection, Vec<u8>, Vec<u8>) {
    let mut conn = Connection::server(cfg, now);
    let mut pending = Vec::new();
    let mut out = Vec::new();
    let evs = feed(&mut conn, &mut pending, REQUEST, now, &mut out);
    assert_eq!(evs, vec![Ev::Request("/chat?x=1".into())]);
    assert_eq!(out, RESPONSE);
    out.clear();
    (conn, pending, out)
}

fn close_bytes(code: u16, reason: &str) -> Vec<u8> {
    let mut v = vec![0x88, (2 + reason.len()) as u8];
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(reason.as_bytes());
    v
}

/// Feeds `input` to an open server and checks it fails with `err`, sending exactly the matching close frame.
fn assert_fails(input: &[u8], err: ProtocolError) {
    let now = Instant::now();
    let (mut conn, mut pending, mut out) = open_server(config(), now);
    let evs = feed(&mut conn, &mut pending, input, now, &mut out);
    assert_eq!(
        evs.last(),
        Some(&Ev::Failed(err.close_code())),
        "{input:02x?}"
    );
    assert_eq!(
        out,
        close_bytes(err.close_code(), err.reason()),
        "{input:02x?}"
    );
    assert_eq!(conn.state(), State::Closed);
}

#[test]
fn handshake_then_first_frame_in_the_same_packet() {
    let now = Instant::now();
    let mut conn = Connection::server(config(), now);
    let mut packet = REQUEST.to_vec();
    packet.extend(cframe(0x81, b"Hello"));
    let (mut pending, mut out) = (Vec::new(), Vec::new());
    let evs = feed(&mut conn, &mut pending, &packet, now, &mut out);
    assert_eq!(
        evs,
        vec![Ev::Request("/chat?x=1".into()), Ev::Text("Hello".into())]
    );
    assert_eq!(out, RESPONSE);
    assert!(pending.is_empty());
}

#[test]
fn request_split_at_every_byte_waits_then_succeeds() {
    let now = Instant::now();
    let mut conn = Connection::server(config(), now);
    let (mut pending, mut out) = (Vec::new(), Vec::new());
    let mut evs = Vec::new();
    for b in REQUEST {
        evs.extend(feed(&mut conn, &mut pending, &[*b], now, &mut out));
    }
    assert_eq!(evs, vec![Ev::Request("/chat?x=1".into())]);
    assert_eq!(out, RESPONSE);
}

#[test]
fn bad_requests_get_their_status_and_close() {
    let now = Instant::now();
    let cases: [(&[u8], u16); 3] = [
        (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
        (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        (b"DELETE / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 405),
    ];
    for (req, status) in cases {
        let mut conn = Connection::server(config(), now);
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        let evs = feed(&mut conn, &mut pending, req, now, &mut out);
        assert_eq!(evs.len(), 1);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert_eq!(conn.state(), State::Closed);
    }
    // Garbage that is not HTTP at all fails while parsing.
    let mut conn = Connection::server(config(), now);
    let (mut pending, mut out) = (Vec::new(), Vec::new());
    let evs = feed(
        &mut conn,
        &mut pending,
        b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n",
        now,
        &mut out,
    );
    assert_eq!(evs, vec![Ev::HandshakeFailed(400)]);
    assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    // Oversized heads are refused before they complete.
    let mut conn = Connection::server(config(), now);
    let (mut pending, mut out) = (Vec::new(), Vec::new());
    let big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
    let evs = feed(&mut conn, &mut pending, big.as_bytes(), now, &mut out);
    assert_eq!(evs, vec![Ev::HandshakeFailed(431)]);
    assert_eq!(HandshakeError::RequestTooLarge.status(), 431);
}

#[test]
fn respond_writes_a_plain_response_and_closes() {
    let now = Instant::now();
    let mut conn = Connection::server(config(), now);
    let mut out = Vec::new();
    let mut input = REQUEST.to_vec();
    let r = conn.read(&mut input, now, &mut out);
    assert!(matches!(r.event, Some(Event::Request(_))));
    conn.respond(403, &[], b"origin not allowed", now, &mut out);
    assert!(out.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
    assert!(out.ends_with(b"\r\n\r\norigin not allowed"));
    assert!(conn.is_closed());
}

#[test]
fn messages_text_binary_and_empty() {
    let now = Instant::now();
    let (mut conn, mut pending, mut out) = open_server(config(), now);
    let mut input = cframe(0x81, "héllo".as_bytes());
    input.extend(cframe(0x82, &[0, 1, 2, 255]));
    input.extend(cframe(0x81, b""));
    input.extend(cframe(0x82, b""));
    let evs = feed(&mut conn, &mut pending, &input, now, &mut out);
    assert_eq!(
        evs,
        vec![
            Ev::Text("héllo".into()),
            Ev::Binary(vec![0, 1, 2, 255]),
            Ev::Text("".into()),
            Ev::Binary(vec![])
        ]
    );
    assert!(out.is_empty());
}

#[test]
fn unfragmented_message_is_borrowed_from_the_input() {
    let now = Instant::now();
    let (mut conn, _, mut out) = open_server(config(), now);
    let mut input = cframe(0x82, b"zero-copy");
    let r = conn.read(&mut input, now, &mut out);
    match r.event {
        Some(Event::Message(MessageKind::Binary, sockwave::protocol::Payload::Borrowed(b))) => {
            assert_eq!(b, b"zero-copy")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_owning_reader_gets_the_same_messages_and_failures_owned() {
    let now = Instant::now();
    // A whole frame comes out owned, unmasked while it was copied.
    let (mut conn, _, mut out) = open_server(config(), now);
    conn.own_messages(true);
    let mut input = cframe(0x82, b"kept");
    match conn.read(&mut input, now, &mut out).event {
        Some(Event::Message(MessageKind::Binary, sockwave::protocol::Payload::Owned(v))) => {
            assert_eq!(v, b"kept")
        }
        other => panic!("{other:?}"),
    }

    // Every message and failure as the borrowing reader sees them: whole
    // frames of every length around the word, block and wide sizes, text and
    // binary, fragmented ones, fed whole and in pieces.
    let payload: Vec<u8> = (0..70_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut input = REQUEST.to_vec();
    for len in (0..=40).chain([255, 256, 257, 1023, 1024, 1025, 65_535, 70_000]) {
        input.extend(cframe(0x81, &payload[..len]));
        input.extend(cframe(0x82, &payload[..len]));
    }
    input.extend(cframe(0x01, &payload[..3000]));
    input.extend(cframe(0x80, &payload[3000..9001]));
    // Then text that is not UTF-8, whole: 1007 from both.
    input.extend(cframe(0x81, &[b'o', b'k', 0xff, b'!']));
    let run = |own: bool, lend: bool, step: usize| {
        let mut conn = Connection::server(config(), now);
        conn.own_messages(own);
        conn.lend_small_messages(lend);
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        let mut evs = Vec::new();
        for piece in input.chunks(step) {
            evs.extend(feed(&mut conn, &mut pending, piece, now, &mut out));
        }
        (evs, out)
    };
    let borrowed = run(false, false, input.len());
    assert_eq!(borrowed.0.last(), Some(&Ev::Failed(1007)));
    assert_eq!(borrowed.0.len(), 1 + 2 * 49 + 1 + 1);
    for step in [input.len(), 1, 7, 4096] {
        assert_eq!(run(true, false, step), borrowed, "step {step}");
        assert_eq!(run(true, true, step), borrowed, "lending, step {step}");
    }
}

#[test]
fn an_owning_reader_that_lends_small_messages_lends_only_small_whole_frames() {
    use sockwave::protocol::{Payload, LENT_MESSAGE_MAX};
    let now = Instant::now();
    let (mut conn, _, mut out) = open_server(config(), now);
    conn.own_messages(true);
    conn.lend_small_messages(true);
    let payload = vec![b'x'; LENT_MESSAGE_MAX + 1];
    for (len, lent) in [
        (0, true),
        (20, true),
        (LENT_MESSAGE_MAX, true),
        (LENT_MESSAGE_MAX + 1, false),
    ] {
        let mut input = cframe(0x82, &payload[..len]);
        match conn.read(&mut input, now, &mut out).event {
            Some(Event::Message(MessageKind::Binary, Payload::Borrowed(b))) if lent => {
                assert_eq!(b, &payload[..len])
            }
            Some(Event::Message(MessageKind::Binary, Payload::Owned(v))) if !lent => {
                assert_eq!(v, &payload[..len])
            }
            other => panic!("{len} bytes: {other:?}"),
        }
    }
    // Assembled from fragments: owned, however small.
    let mut input = cframe(0x02, b"a");
    input.extend(cframe(0x80, b"b"));
    let r = conn.read(&mut input, now, &mut out);
    assert!(r.event.is_none());
    let consumed = r.consumed;
    let mut rest = input[consumed..].to_vec();
    match conn.read(&mut rest, now, &mut out).event {
        Some(Event::Message(MessageKind::Binary, Payload::Owned(v))) => assert_eq!(v, b"ab"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fragmented_message_with_interleaved_ping_and_exact_pong() {
    let now = Instant::now();
    let (mut conn, mut pending, mut out) = open_server(config(), now);
    let mut input = cframe(0x01, b"frag");
    input.extend(cframe(0x89, b"ping!"));
    input.extend(cframe(0x00, b"men"));
    input.extend(cframe(0x8A, b"unsolicited"));
    input.extend(cframe(0x80, b"ted"));
    let evs = feed(&mut conn, &mut pending, &input, now, &mut out);
    assert_eq!(
        evs,
        vec![
            Ev::Ping(b"ping!".to_vec()),
            Ev::Pong(b"unsolicited".to_vec()),
            Ev::Text("fragmented".into())
        ]
    );
    assert_eq!(out, b"\x8a\x05ping!");
}

#[test]
fn every_rule_violation_gets_its_close_code() {
    assert_fails(&cframe(0xC1, b"x"), ProtocolError::ReservedBits);
    assert_fails(&cframe(0xA1, b"x"), ProtocolError::ReservedBits);
    assert_fails(&cframe(0x91, b"x"), ProtocolError::ReservedBits);
    for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        assert_fails(&cframe(0x80 | op, b""), ProtocolError::ReservedOpcode(op));
    }
    assert_fails(&cframe(0x09, b""), ProtocolError::FragmentedControl);
    assert_fails(&cframe(0x89, &[0u8; 126]), ProtocolError::ControlTooLong);
    assert_fails(&[0x81, 0x02, b'h', b'i'], ProtocolError::BadMask);
    assert_fails(
        &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
        ProtocolError::LengthOverflow,
    );
    // Five bytes of payload announced in the 16-bit length form: 1002.
    assert_fails(
        &[0x82, 0xFE, 0, 5, 0, 0, 0, 0, 1, 2, 3, 4, 5],
        ProtocolError::NonMinimalLength,
    );
    assert_fails(
        &cframe(0x80, b"cont"),
        ProtocolError::UnexpectedContinuation,
    );
    let mut two_starts = cframe(0x01, b"a");
    two_starts.extend(cframe(0x81, b"b"));
    assert_fails(&two_starts, ProtocolError::ExpectedContinuation);
    assert_fails(
        &cframe(0x81, &[0xce, 0xba, 0xed, 0xa0, 0x80]),
        ProtocolError::InvalidUtf8,
    );
    assert_fails(&cframe(0x88, &[0x03]), ProtocolError::InvalidClosePayload);
    assert_fails(
        &cframe(0x88, &[0x03, 0xe7]),
        ProtocolError::InvalidClosePayload,
    ); // 999
    for bad in [0u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        assert_fails(
            &cframe(0x88, &bad.to_be_bytes()),
            ProtocolError::InvalidClosePayload,
        );
    }
    assert_fails(
        &cframe(0x88, &[0x03, 0xe8, 0xff]),
        ProtocolError::InvalidCloseReason,
    );
}

#[test]
fn utf8_fails_fast_inside_a_fragmented_message() {
    let now = Instant::now();
    let (mut conn, mut pending, mut out) = open_server(config(), now);
    // The first fragment is fine; the second has an impossible byte but is not final.
    let evs = feed(
        &mut conn,
        &mut pending,
        &cframe(0x01, "κόσμε".as_bytes()),
        now,
        &mut out,
    );
    assert!(evs.is_empty());
    let evs = feed(
        &mut conn,
        &mut pending,
        &cframe(0x00, &[0xce, 0xba, 0xf4, 0x90]),
        now,
        &mut out,
    );
    assert_eq!(evs, vec![Ev::Failed(1007)]);
    // And a code point split between fragments is fine.
    let (mut conn, mut pending, mut out) = open_server(config(), now);
    let euro = "€".as_bytes();
    let mut input = cframe(0x01, &euro[..1]);
    input.extend(cframe(0x00, &euro[1..2]));
    input.extend(cframe(0x80, &euro[2..]));
    assert_eq!(
        feed(&mut conn, &mut pending, &input, now, &mut out),
        vec![Ev::Text("€".into())]
    );
}

#[test]
fn utf8_fails_fast_inside_one_frame_still_arriving() {
    let now = Instant::now();
    let (mut conn, mut pending, mut out) = open_server(config(), now);
    let frame = cframe(0x81, &[b'a', b'b', 0xff, b'c', b'd', b'e']);
    // Header plus the first three payload bytes: the bad byte is among them.
    let evs = feed(&mut conn, &mut pending, &frame[..6 + 3], now, &mut out);
    assert_eq!(evs, vec![Ev::Failed(1007)]);
}

#[test]
fn limits_are_checked_from_the_header_before_the_payload() {
    let now = Instant::now();
    let cfg = Arc::new(ProtocolConfig {
        max_frame_size: 1000,
        max_message_size: 1500,
        ..ProtocolConfig::default()
    });
    // A frame header announcing 1001 bytes, and not one payload byte.
    let (mut conn, mut pending, mut out) = open_server(cfg.clone(), now);
    let header = [0x82, 0xFE, 0x03, 0xE9, 1, 2, 3, 4];
    assert_eq!(
        feed(&mut conn, &mut pending, &header, now, &mut out),
        vec![Ev::Failed(1009)]
    );
    assert_eq!(out, close_bytes(1009, "frame too big"));
    // Fragments that add up past the message limit.
    let (mut conn, mut pending, mut out) = open_server(cfg, now);
    let evs = feed(
        &mut conn,
        &mut pending,
        &cframe(0x02, &[0u8; 1000]),
        now,
        &mut out,
    );
    assert!(evs.is_empty());
    let evs = feed(
        &mut conn,
        &mut pending,
        &[0x80, 0xFE, 0x01, 0xF5, 1, 2, 3, 4],
        now,
        &mut out,
    );
    assert_eq!(evs, vec![Ev::Failed(1009)]);
    assert_eq!(out, close_bytes(1009, "message too big"));
}

#[test]
fn peer_initiated_close_is_answered_once() {
    let now = Instant::now();
    let (mut conn, mut pending, mut out) = open_server(config(), now);
    let mut input = cframe(0x88, &[0x03, 0xe8, b'b', b'y', b'e']);
    input.extend(cframe(0x81, b"after close"));
    let evs = feed(&mut conn, &mut pending, &input, now, &mut out);
    assert_eq!(evs, vec![Ev::Close(1000, "bye".into())]);
    assert_eq!(out, close_bytes(1000, "bye"));
    assert_eq!(conn.state(), State::Closed);
    // An empty close is answered with an empty close.
    let (mut conn, mut pending, mut out) = open_server(config(), now);
    assert_eq!(
        feed(&mut conn, &mut pending, &cframe(0x88, b""), now, &mut out),
        vec![Ev::Close(1005, "".into())]
    );
    assert_eq!(out, [0x88, 0x00]);
}

#[test]
fn our_close_ignores_data_and_waits_for_theirs() {
    let now = Instant::now();
    let (mut conn, mut pending, mut out) = open_server(config(), now);
    // Half a message is in progress when we close.
    feed(
        &mut conn,
        &mut pending,
        &cframe(0x01, b"half"),
        now,
        &mut out,
    );
    conn.close(1001, "going", now, &mut out).unwrap();
    assert_eq!(out, close_bytes(1001, "going"));
    out.clear();
    assert_eq!(conn.state(), State::Closing);
    let mut input = cframe(0x80, b"rest of it");
    input.extend(cframe(0x82, b"new data"));
    input.extend(cframe(0x89, b"ping"));
    let evs = feed(&mut conn, &mut pending, &input, now, &mut out);
    // Data is dropped, pings are seen but not answered after our close.
    assert_eq!(evs, vec![Ev::Ping(b"ping".to_vec())]);
    assert!(out.is_empty());
    let evs = feed(
        &mut conn,
        &mut pending,
        &cframe(0x88, &[0x03, 0xe9]),
        now,
        &mut out,
    );
    assert_eq!(evs, vec![Ev::Close(1001, "".into())]);
    assert!(out.is_empty(), "no second close frame");
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.send(MessageKind::Text, b"x", &mut out).is_err());
    assert!(conn.close(1000, "", now, &mut out).is_err());
}

#[test]
fn byte_at_a_time_gives_the_same_events_as_all_at_once() {
    let now = Instant::now();
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let mut input = REQUEST.to_vec();
    input.extend(cframe(0x81, "one".as_bytes()));
    input.extend(cframe(0x02, &big[..30_000]));
    input.extend(cframe(0x89, b"p"));
    input.extend(cframe(0x80, &big[30_000..]));
    input.extend(cframe(0x01, "ü".as_bytes()));
    input.extend(cframe(0x80, "ber".as_bytes()));
    input.extend(cframe(0x88, &[0x03, 0xe8]));
    let run = |step: usize| {
        let mut conn = Connection::server(config(), now);
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        let mut evs = Vec::new();
        for piece in input.chunks(step) {
            evs.extend(feed(&mut conn, &mut pending, piece, now, &mut out));
        }
        (evs, out)
    };
    let whole = run(input.len());
    assert_eq!(whole.0.len(), 6);
    assert_eq!(whole.0[3], Ev::Binary(big.clone()));
    for step in [1, 2, 3, 7, 13, 1000] {
        assert_eq!(run(step), whole, "step {step}");
    }
}

/// Every timer on, in seconds: a handshake of 5, idle 100, a ping every
/// 10 answered within 3, a close answered within 2.
fn timers_config() -> Arc<ProtocolConfig> {
    let s = Duration::from_secs;
    Arc::new(ProtocolConfig {
        handshake_timeout: Some(s(5)),
        idle_timeout: Some(s(100)),
        ping_interval: Some(s(10)),
        pong_timeout: s(3),
        close_timeout: s(2),
        ..ProtocolConfig::default()
    })
}

#[test]
fn timers_handshake_idle_ping_pong_and_close() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let cfg = timers_config();
    // Handshake timeout: dropped silently.
    let mut conn = Connection::server(cfg.clone(), t0);
    let mut out = Vec::new();
    assert_eq!(conn.poll_timeout(), Some(t0 + s(5)));
    assert_eq!(conn.handle_timeout(t0 + s(4), &mut out), None);
    assert_eq!(
        conn.handle_timeout(t0 + s(5), &mut out),
        Some(Timeout::Handshake)
    );
    assert!(conn.is_closed() && out.is_empty());

    // Keep-alive: ping after 10 s of silence, close when no answer within 3 s.
    let (mut conn, mut pending, mut out) = open_server(cfg.clone(), t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + s(10)));
    assert_eq!(conn.handle_timeout(t0 + s(10), &mut out), None);
    assert_eq!(out, [0x89, 0x00]);
    out.clear();
    assert_eq!(conn.poll_timeout(), Some(t0 + s(13)));
    // A pong resets the clock.
    feed(
        &mut conn,
        &mut pending,
        &cframe(0x8A, b""),
        t0 + s(11),
        &mut out,
    );
    assert_eq!(conn.poll_timeout(), Some(t0 + s(21)));
    assert_eq!(conn.handle_timeout(t0 + s(21), &mut out), None);
    assert_eq!(out, [0x89, 0x00]);
    out.clear();
    assert_eq!(
        conn.handle_timeout(t0 + s(24), &mut out),
        Some(Timeout::Pong)
    );
    assert_eq!(out, close_bytes(1001, "ping timeout"));
    assert!(conn.is_closed());

    // Idle timeout with pings off: close 1001 and wait; then the close timeout.
    let cfg = Arc::new(ProtocolConfig {
        ping_interval: None,
        ..(*cfg).clone()
    });
    let (mut conn, _, mut out) = open_server(cfg, t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + s(100)));
    assert_eq!(
        conn.handle_timeout(t0 + s(100), &mut out),
        Some(Timeout::Idle)
    );
    assert_eq!(out, close_bytes(1001, "idle timeout"));
    assert_eq!(conn.state(), State::Closing);
    assert_eq!(conn.poll_timeout(), Some(t0 + s(102)));
    assert_eq!(
        conn.handle_timeout(t0 + s(102), &mut out),
        Some(Timeout::Close)
    );
    assert!(conn.is_closed());
    assert_eq!(conn.poll_timeout(), None);
}

/// The promise a driver relies on to skip `poll_timeout` (the server's loop
/// does after every write): while `timeout_key` stays the same, the timeout
/// only moves later. Walked through every kind of step, with the steps that
/// bring it sooner among them (a close: its timeout is shorter than the idle
/// time left) so the key is seen to change there.
#[test]
fn the_timeout_comes_sooner_only_where_the_timeout_key_changes() {
    enum Do<'a> {
        Input(&'a [u8]),
        Timers,
        Close,
    }
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let full = timers_config();
    let idle_only = Arc::new(ProtocolConfig {
        ping_interval: None,
        ..(*full).clone()
    });
    let (message, pong) = (cframe(0x82, b"hi"), cframe(0x8A, b""));
    let close = cframe(0x88, &1000u16.to_be_bytes());
    let steps = [
        ("accepted", 0, Do::Input(REQUEST)),
        ("a message", 1, Do::Input(&message)),
        ("the keep-alive's time", 11, Do::Timers),
        ("a pong", 12, Do::Input(&pong)),
        ("nothing due", 13, Do::Timers),
        ("a later message", 50, Do::Input(&message)),
        ("our close", 55, Do::Close),
        ("the peer's close", 56, Do::Input(&close)),
    ];
    let mut sooner = 0;
    for cfg in [full, idle_only] {
        let mut conn = Connection::server(cfg, t0);
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        let mut last = (conn.timeout_key(), conn.poll_timeout());
        for (step, secs, what) in &steps {
            let now = t0 + s(*secs);
            match what {
                Do::Input(bytes) => drop(feed(&mut conn, &mut pending, bytes, now, &mut out)),
                Do::Timers => drop(conn.handle_timeout(now, &mut out)),
                Do::Close => conn.close(1000, "bye", now, &mut out).unwrap(),
            }
            let next = (conn.timeout_key(), conn.poll_timeout());
            // `None` (no timeout) is the latest of all.
            let came_sooner = match (last.1, next.1) {
                (Some(a), Some(b)) => b < a,
                (None, Some(_)) => true,
                _ => false,
            };
            if came_sooner {
                assert_ne!(next.0, last.0, "{step}: sooner under the same key");
                sooner += 1;
            }
            last = next;
        }
        assert!(conn.is_closed());
    }
    assert_eq!(sooner, 2, "each walk's close brings the timeout sooner");
}

/// A client and a server connection wired back to back in memory.
struct Pair {
    client: Connection,
    server: Connection,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    server_pending: Vec<u8>,
    client_pending: Vec<u8>,
    now: Instant,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let cfg = config();
        let mut server = Connection::server(cfg.clone(), now);
        let (req, key) = client::request("localhost", "/pair", [7; 16], &["chat"], &[]);
        let mut pending = req;
        let r = server.read(&mut pending, now, &mut Vec::new());
        let Some(Event::Request(request)) = r.event else {
            panic!("no request")
        };
        assert_eq!(request.protocols().collect::<Vec<_>>(), ["chat"]);
        let mut to_client = Vec::new();
        let opts = AcceptOptions {
            protocol: Some("chat"),
            ..Default::default()
        };
        server.accept(&request, &opts, now, &mut to_client).unwrap();
        let (resp, n) = client::parse_response(&to_client, &key).unwrap().unwrap();
        assert_eq!(resp.protocol.as_deref(), Some("chat"));
        to_client.drain(..n);
        Pair {
            client: Connection::client(cfg, now, 0x5eed),
            server,
            to_server: Vec::new(),
            to_client,
            server_pending: Vec::new(),
            client_pending: Vec::new(),
            now,
        }
    }

    /// Moves bytes both ways (in uneven pieces) until both sides are quiet.
    fn pump(&mut self) -> (Vec<Ev>, Vec<Ev>) {
        let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
        while !self.to_server.is_empty() || !self.to_client.is_empty() {
            let bytes = std::mem::take(&mut self.to_server);
            for piece in bytes.chunks(4093) {
                at_server.extend(feed(
                    &mut self.server,
                    &mut self.server_pending,
                    piece,
                    self.now,
                    &mut self.to_client,
                ));
            }
            let bytes = std::mem::take(&mut self.to_client);
            for piece in bytes.chunks(1021) {
                at_client.extend(feed(
                    &mut self.client,
                    &mut self.client_pending,
                    piece,
                    self.now,
                    &mut self.to_server,
                ));
            }
        }
        (at_server, at_client)
    }
}

#[test]
fn in_memory_client_and_server_exchange_everything_then_close() {
    let mut p = Pair::new();
    let large: Vec<u8> = (0..(1 << 20) - 3).map(|i: u32| (i * 7) as u8).collect();
    p.client
        .send(MessageKind::Text, "hello ✓".as_bytes(), &mut p.to_server)
        .unwrap();
    p.client
        .send(MessageKind::Binary, &large, &mut p.to_server)
        .unwrap();
    p.client
        .send_fragment(MessageKind::Text, true, false, b"frag", &mut p.to_server)
        .unwrap();
    p.client.ping(b"keepalive", &mut p.to_server).unwrap();
    p.client
        .send_fragment(MessageKind::Text, false, false, b"men", &mut p.to_server)
        .unwrap();
    p.client
        .send_fragment(MessageKind::Text, false, true, b"ted", &mut p.to_server)
        .unwrap();
    let (at_server, at_client) = p.pump();
    assert_eq!(
        at_server,
        vec![
            Ev::Text("hello ✓".into()),
            Ev::Binary(large.clone()),
            Ev::Ping(b"keepalive".to_vec()),
            Ev::Text("fragmented".into())
        ]
    );
    assert_eq!(at_client, vec![Ev::Pong(b"keepalive".to_vec())]);

    // Server to client: echo everything back, with a server ping interleaved.
    p.server
        .send(MessageKind::Binary, &large, &mut p.to_client)
        .unwrap();
    p.server.ping(b"srv", &mut p.to_client).unwrap();
    p.server
        .send(MessageKind::Text, "héllo".as_bytes(), &mut p.to_client)
        .unwrap();
    let (at_server, at_client) = p.pump();
    assert_eq!(
        at_client,
        vec![
            Ev::Binary(large),
            Ev::Ping(b"srv".to_vec()),
            Ev::Text("héllo".into())
        ]
    );
    assert_eq!(at_server, vec![Ev::Pong(b"srv".to_vec())]);

    // The server closes; the client answers; both end closed.
    p.server
        .close(1000, "done", p.now, &mut p.to_client)
        .unwrap();
    let (at_server, at_client) = p.pump();
    assert_eq!(at_client, vec![Ev::Close(1000, "done".into())]);
    assert_eq!(at_server, vec![Ev::Close(1000, "done".into())]);
    assert!(p.server.is_closed() && p.client.is_closed());
}

/// The timestamps a connection keeps (8 bytes each) give back the very
/// instants they were given, to the nanosecond and a year on.
#[test]
fn timestamps_keep_every_nanosecond_a_year_on() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let cfg = Arc::new(ProtocolConfig {
        idle_timeout: Some(s(100)),
        ping_interval: None,
        ..ProtocolConfig::default()
    });
    let (mut conn, mut pending, mut out) = open_server(cfg, t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + s(100)));
    let later = t0 + s(400 * 86_400) + Duration::from_nanos(7);
    feed(&mut conn, &mut pending, &cframe(0x8A, b""), later, &mut out);
    assert_eq!(conn.poll_timeout(), Some(later + s(100)));
    assert_eq!(
        conn.handle_timeout(later + s(100) - Duration::from_nanos(1), &mut out),
        None
    );
    assert_eq!(
        conn.handle_timeout(later + s(100), &mut out),
        Some(Timeout::Idle)
    );
    assert_eq!(
        conn.poll_timeout(),
        Some(later + s(100) + ProtocolConfig::default().close_timeout)
    );
}

/// A client masks every frame with a fresh key (1,000 frames, 1,000 keys,
/// whatever the seed, 0 included); a server masks none.
#[test]
fn client_mask_keys_differ_and_a_server_masks_nothing() {
    let now = Instant::now();
    for seed in [0, 1, 1 << 32, u64::MAX] {
        let mut client = Connection::client(config(), now, seed);
        let mut keys = Vec::new();
        for _ in 0..1000 {
            let mut out = Vec::new();
            client.send(MessageKind::Binary, b"x", &mut out).unwrap();
            assert_eq!(out[1], 0x80 | 1, "masked, one byte");
            keys.push([out[2], out[3], out[4], out[5]]);
        }
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 1000, "seed {seed:#x}");
    }
    let (mut server, _, _) = open_server(config(), now);
    let mut out = Vec::new();
    server.send(MessageKind::Binary, b"x", &mut out).unwrap();
    assert_eq!(out, [0x82, 1, b'x'], "a server's frame is not masked");
}
