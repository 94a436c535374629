//! Fuzz harness bodies for runtime types that are not public: the upgrade
//! decision, the outbound queue and the TLS transport. Run by `fuzz/` (cargo-fuzz) and by
//! `tests/fuzz_regressions.rs`, which replays every saved input. Not API.
//!
//! Neither harness lets a handler panic: libFuzzer's panic hook aborts on
//! any panic, caught or not (the unit tests cover the 500 a panic gets).

#[cfg(feature = "tls")]
mod tls_transport;
#[cfg(feature = "tls")]
pub use tls_transport::{tls_transport, TlsPair};

use std::collections::VecDeque;
use std::sync::Arc;

use super::out_queue::{IoSlices, OutQueue, Outgoing};
use super::upgrade::{decide, Answer, Load};
use super::{Config, Conn, Decision, Handler, HttpResponse, Message, ServerHandle, Upgrade};
use crate::protocol::{HandshakeLimits, MessageKind, Request};

/// The outbound queue against a plain byte queue as the reference: after
/// every push and every partial write, the bytes it would write next are
/// the reference's, its count is the reference's, and the bytes reserved
/// for a frame are given back only once the frame is fully written, and
/// every one of them by the end.
pub fn out_queue(data: &[u8]) {
    let mut q = OutQueue::default();
    let mut model: VecDeque<u8> = VecDeque::new();
    // Per pushed frame: the stream position just past it, what it reserved.
    let mut frames: VecDeque<(usize, usize)> = VecDeque::new();
    let (mut pushed, mut written, mut released, mut accounted_total) = (0usize, 0usize, 0, 0);
    // What the frames written whole so far reserved.
    let mut written_whole = 0;
    let mut next = 0u8;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                next = next.wrapping_add(1);
                next
            })
            .collect()
    };
    for op in data.chunks(2) {
        let (kind, arg) = (op[0], *op.get(1).unwrap_or(&0) as usize);
        // Kind 4: a publish's frame, pushed by reference (`push_shared`),
        // from sizes copied into the buffer before it to sizes kept shared.
        let by_reference = kind % 6 == 4;
        let item = match kind % 6 {
            0 => Some(Outgoing::Bytes(bytes(1 + arg))),
            1 => Some(Outgoing::Bytes(bytes(1 + arg * 64))),
            2 => Some(Outgoing::owned_frame(MessageKind::Binary, bytes(arg * 32))),
            3 => Some(Outgoing::Shared(Arc::from(bytes(1 + arg * 8)))),
            4 => Some(Outgoing::Shared(Arc::from(bytes(1 + arg * 2)))),
            _ => None,
        };
        match item {
            Some(item) => {
                let [a, b] = item.parts();
                model.extend(a.iter().chain(b));
                let len = a.len() + b.len();
                let accounted = arg;
                pushed += len;
                accounted_total += accounted;
                frames.push_back((pushed, accounted));
                match item {
                    Outgoing::Shared(frame) if by_reference => q.push_shared(&frame, accounted),
                    // Kind 2 with an odd argument: the same frame as an
                    // inline handler's reply goes in (`append_frame`, else
                    // the frame built and pushed).
                    Outgoing::Split(_, payload) if arg % 2 == 1 => {
                        if !q.append_frame(MessageKind::Binary, &payload, accounted) {
                            q.push(
                                Outgoing::copy_frame(MessageKind::Binary, &payload),
                                accounted,
                            );
                        }
                    }
                    item => q.push(item, accounted),
                }
            }
            None => {
                // A partial write of up to arg * 97 bytes.
                let want = (arg * 97).min(model.len());
                let front: Vec<u8> = {
                    let mut out = IoSlices::new();
                    q.slices(&mut out);
                    out.iter().flat_map(|s| s.iter().copied()).collect()
                };
                let take = want.min(front.len());
                assert!(
                    front.iter().eq(model.iter().take(front.len())),
                    "the queue would write other bytes than were queued"
                );
                released += q.advance(take);
                model.drain(..take);
                written += take;
                while frames.front().is_some_and(|(end, _)| *end <= written) {
                    written_whole += frames.pop_front().map_or(0, |(_, a)| a);
                }
                assert!(
                    released <= written_whole,
                    "reserved bytes given back before their frame was written"
                );
            }
        }
        assert_eq!(q.queued(), model.len());
        assert_eq!(q.is_empty(), model.is_empty());
    }
    released += q.clear();
    assert_eq!(released, accounted_total, "every reserved byte comes back");
    assert_eq!(q.queued(), 0);
}

/// A handler whose hooks are chosen by the input (none of them panics).
struct Hooks(u8);

impl Handler for Hooks {
    fn on_http(&self, request: &Request, _: &ServerHandle) -> Option<HttpResponse> {
        (self.0 & 1 == 1).then(|| HttpResponse {
            status: 200,
            headers: Vec::new(),
            body: request.path().as_bytes().to_vec(),
        })
    }

    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        match (self.0 >> 1) & 3 {
            0 => Decision::reject(401, "no"),
            1 => Decision::Accept {
                protocol: None,
                headers: vec![("X-Path".into(), upgrade.request().path().into())],
                subscribe: vec![upgrade.request().path().into()],
                relay: None,
            },
            _ => Decision::Accept {
                protocol: upgrade.protocol().map(str::to_string),
                headers: Vec::new(),
                subscribe: Vec::new(),
                relay: None,
            },
        }
    }

    fn on_message(&self, _: &Conn, _: Message) {}
}

/// The upgrade decision on any request head, configuration and load: a 503
/// whenever the server is full or stopping; an upgrade only for a valid
/// request from an allowed origin, with a subprotocol both sides speak;
/// a failure counted exactly when no connection or page results.
pub fn upgrade_decision(data: &[u8]) {
    let Some((&knobs, head)) = data.split_first() else {
        return;
    };
    let Ok(Some((request, _))) = Request::parse(head, &HandshakeLimits::default()) else {
        return;
    };
    let config = Config {
        allowed_origins: if knobs & 1 == 1 {
            vec!["https://a.example".into()]
        } else {
            Vec::new()
        },
        subprotocols: if knobs & 2 == 2 {
            vec!["chat".into(), "v2".into()]
        } else {
            Vec::new()
        },
        ..Config::default()
    };
    let load = Load {
        over_capacity: knobs & 4 == 4,
        shutting_down: knobs & 8 == 8,
    };
    let server = ServerHandle::detached(config.clone());
    let v = decide(&config, &Hooks(knobs >> 4), &request, None, &server, load);
    if load.over_capacity || load.shutting_down {
        assert!(matches!(&v.answer, Answer::Respond(r) if r.status == 503));
        assert!(v.failure.is_some());
        return;
    }
    match &v.answer {
        Answer::Accept { protocol, .. } => {
            assert!(
                request.validate_upgrade().is_ok(),
                "upgraded an invalid request"
            );
            if !config.allowed_origins.is_empty() {
                let origin = request.origin().expect("an allowed origin");
                assert!(origin.eq_ignore_ascii_case("https://a.example"));
            }
            if let Some(p) = protocol {
                assert!(config.subprotocols.contains(p));
                assert!(request.protocols().any(|o| o == p));
            }
            assert!(v.failure.is_none());
        }
        Answer::Respond(r) => {
            assert!((200..=599).contains(&r.status));
            assert_eq!(
                v.failure.is_none(),
                r.status == 200,
                "only the page is no failure"
            );
        }
        Answer::StandardError => assert!(v.failure.is_some()),
    }
}
