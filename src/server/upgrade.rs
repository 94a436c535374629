//! The upgrade decision: what to answer a request head, as a pure function
//! of the configuration, the handler, the request and the server's load ([`decide`]).

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::conn_inner::ConnData;

use super::stats::HandshakeFailure;
use super::{Config, Decision, Handler, HttpResponse, ServerHandle, Upgrade};
use crate::protocol::{check_extra_header, Request};

/// What the loop answers a request head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// An HTTP response: 503 at capacity, 403 for an origin, a hook's
    /// rejection, or the application's answer to a plain HTTP request.
    Respond(HttpResponse),
    /// The protocol's own error response for a request that is not a valid
    /// upgrade (400, 405, 426 with the version header ...).
    StandardError,
    /// Upgrade, with what the handler chose.
    Accept {
        protocol: Option<String>,
        headers: Vec<(String, String)>,
        subscribe: Vec<String>,
        relay: Option<String>,
        data: KeptData,
    },
}

/// What the hook kept with the connection ([`Upgrade::set_data`]); equal
/// when both are the same value or both absent.
#[derive(Clone, Default)]
pub(crate) struct KeptData(pub(crate) Option<ConnData>);

impl PartialEq for KeptData {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        }
    }
}

impl Eq for KeptData {}

impl std::fmt::Debug for KeptData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// The answer, and the handshake failure it counts as, if any.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) answer: Answer,
    pub(crate) failure: Option<HandshakeFailure>,
}

/// What the server load says about a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
    /// Accepted past the connection limit.
    pub(crate) over_capacity: bool,
    pub(crate) shutting_down: bool,
}

fn respond(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    Answer::Respond(HttpResponse {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    })
}

/// Decides what to answer `request`. Runs the handler's HTTP and upgrade
/// hooks (a panic in one answers 500, and so does a header the server may
/// not send: see [`check_extra_header`]); touches no socket.
pub(crate) fn decide(
    config: &Config,
    handler: &dyn Handler,
    request: &Request,
    peer: Option<SocketAddr>,
    server: &ServerHandle,
    load: Load,
) -> Verdict {
    let verdict = decide_unchecked(config, handler, request, peer, server, load);
    let headers = match &verdict.answer {
        Answer::Respond(r) => &r.headers,
        Answer::Accept { headers, .. } => headers,
        Answer::StandardError => return verdict,
    };
    match headers
        .iter()
        .find_map(|(n, v)| check_extra_header(n, v).err().map(|e| (n, e)))
    {
        None => verdict,
        Some((name, why)) => {
            log::error!("the handler answered {} with header {name:?}, which the server may not send ({why:?}): 500", request.path());
            Verdict {
                answer: respond(500, &[], b"handler error"),
                failure: Some(HandshakeFailure::Rejected),
            }
        }
    }
}

fn decide_unchecked(
    config: &Config,
    handler: &dyn Handler,
    request: &Request,
    peer: Option<SocketAddr>,
    server: &ServerHandle,
    load: Load,
) -> Verdict {
    let verdict = |answer, failure| Verdict { answer, failure };
    if load.over_capacity || load.shutting_down {
        return verdict(
            respond(503, &[("Retry-After", "1")], b"server at capacity"),
            Some(HandshakeFailure::Capacity),
        );
    }
    if !request.attempts_websocket() {
        let answer = catch_unwind(AssertUnwindSafe(|| handler.on_http(request, server)))
            .unwrap_or_else(|_| {
                Some(HttpResponse {
                    status: 500,
                    headers: Vec::new(),
                    body: b"handler panicked".to_vec(),
                })
            });
        return match answer {
            Some(response) => verdict(Answer::Respond(response), None),
            None => verdict(Answer::StandardError, Some(HandshakeFailure::Invalid)),
        };
    }
    if request.validate_upgrade().is_err() {
        return verdict(Answer::StandardError, Some(HandshakeFailure::Invalid));
    }
    if !config.allowed_origins.is_empty() {
        let allowed = match request.origin() {
            Some(o) => config
                .allowed_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o)),
            None => config.allow_missing_origin,
        };
        if !allowed {
            return verdict(
                respond(403, &[], b"origin not allowed"),
                Some(HandshakeFailure::Origin),
            );
        }
    }
    let offered = request
        .protocols()
        .find(|p| config.subprotocols.iter().any(|s| s == p));
    let upgrade = Upgrade::new(request, offered, peer, server);
    let decision = catch_unwind(AssertUnwindSafe(|| handler.on_upgrade(&upgrade)))
        .unwrap_or_else(|_| Decision::reject(500, "handler panicked"));
    match decision {
        Decision::Reject {
            status,
            headers,
            body,
        } => verdict(
            Answer::Respond(HttpResponse {
                status,
                headers,
                body,
            }),
            Some(HandshakeFailure::Rejected),
        ),
        Decision::Accept {
            protocol,
            headers,
            subscribe,
            relay,
        } => verdict(
            Answer::Accept {
                protocol,
                headers,
                subscribe,
                relay,
                data: KeptData(upgrade.take_data()),
            },
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HandshakeLimits;
    use crate::server::{Conn, Message};

    struct Hooks;

    impl Handler for Hooks {
        fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
            match upgrade.request().path() {
                "/reject" => Decision::reject(401, "no"),
                "/panic" => panic!("hook panicked"),
                "/reserved" => Decision::Accept {
                    protocol: None,
                    headers: vec![("Sec-WebSocket-Accept".into(), "forged".into())],
                    subscribe: Vec::new(),
                    relay: None,
                },
                _ => Decision::Accept {
                    protocol: upgrade.protocol().map(str::to_string),
                    headers: vec![("X-Peer".into(), format!("{:?}", upgrade.peer_addr()))],
                    subscribe: vec!["news".into()],
                    relay: None,
                },
            }
        }

        fn on_http(&self, request: &Request, _: &ServerHandle) -> Option<HttpResponse> {
            let headers = match request.path() {
                "/page" => Vec::new(),
                "/split" => vec![("X-A".into(), "1\r\nX-B: 2".into())],
                _ => return None,
            };
            Some(HttpResponse {
                status: 200,
                headers,
                body: b"page".to_vec(),
            })
        }

        fn on_message(&self, _: &Conn, _: Message) {}
    }

    fn request(path: &str, extra: &str) -> Request {
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        Request::parse(head.as_bytes(), &HandshakeLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn upgrade(path: &str, extra: &str) -> Request {
        request(
            path,
            &format!(
                "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}"
            ),
        )
    }

    fn decide_with(config: &Config, req: &Request, load: Load) -> Verdict {
        let server = ServerHandle::detached(config.clone());
        let peer = Some(SocketAddr::from(([127, 0, 0, 1], 5555)));
        decide(config, &Hooks, req, peer, &server, load)
    }

    const CALM: Load = Load {
        over_capacity: false,
        shutting_down: false,
    };

    fn status(v: &Verdict) -> u16 {
        match &v.answer {
            Answer::Respond(r) => r.status,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn load_answers_503_before_anything_else() {
        let cfg = Config::default();
        for load in [
            Load {
                over_capacity: true,
                shutting_down: false,
            },
            Load {
                over_capacity: false,
                shutting_down: true,
            },
        ] {
            let v = decide_with(&cfg, &upgrade("/", ""), load);
            assert_eq!(status(&v), 503);
            assert_eq!(v.failure, Some(HandshakeFailure::Capacity));
        }
    }

    #[test]
    fn a_header_the_server_may_not_send_answers_500() {
        let cfg = Config::default();
        for v in [
            decide_with(&cfg, &upgrade("/reserved", ""), CALM),
            decide_with(&cfg, &request("/split", ""), CALM),
        ] {
            assert!(
                matches!(&v.answer, Answer::Respond(r) if r.status == 500),
                "{v:?}"
            );
            assert_eq!(v.failure, Some(HandshakeFailure::Rejected));
        }
    }

    #[test]
    fn plain_requests_go_to_on_http_or_get_the_standard_error() {
        let cfg = Config::default();
        let page = decide_with(&cfg, &request("/page", ""), CALM);
        assert_eq!((status(&page), page.failure), (200, None));
        let other = decide_with(&cfg, &request("/other", ""), CALM);
        assert_eq!(other.answer, Answer::StandardError);
        assert_eq!(other.failure, Some(HandshakeFailure::Invalid));
    }

    #[test]
    fn a_request_with_handshake_headers_is_a_failed_upgrade_not_a_page() {
        let cfg = Config::default();
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        for extra in [
            format!("{key}Sec-WebSocket-Version: 13\r\n"),
            format!("Upgrade: h2c\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\n"),
            "Sec-WebSocket-Version: 13\r\n".to_string(),
        ] {
            let v = decide_with(&cfg, &request("/page", &extra), CALM);
            assert_eq!(v.answer, Answer::StandardError, "{extra}");
            assert_eq!(v.failure, Some(HandshakeFailure::Invalid));
        }
    }

    #[test]
    fn invalid_upgrades_and_foreign_origins_are_refused() {
        let mut cfg = Config::default();
        let bad = request(
            "/",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
        );
        let v = decide_with(&cfg, &bad, CALM);
        assert_eq!(
            (v.answer, v.failure),
            (Answer::StandardError, Some(HandshakeFailure::Invalid))
        );
        cfg.allowed_origins = vec!["https://ok.example".into()];
        let foreign = decide_with(
            &cfg,
            &upgrade("/", "Origin: https://evil.example\r\n"),
            CALM,
        );
        assert_eq!(
            (status(&foreign), foreign.failure),
            (403, Some(HandshakeFailure::Origin))
        );
        let missing = decide_with(&cfg, &upgrade("/", ""), CALM);
        assert_eq!(status(&missing), 403);
        let ok = decide_with(&cfg, &upgrade("/", "Origin: HTTPS://OK.example\r\n"), CALM);
        assert!(matches!(ok.answer, Answer::Accept { .. }), "{ok:?}");
        // The switch for clients that send no Origin; a foreign one stays out.
        cfg.allow_missing_origin = true;
        let missing = decide_with(&cfg, &upgrade("/", ""), CALM);
        assert!(
            matches!(missing.answer, Answer::Accept { .. }),
            "{missing:?}"
        );
        let foreign = decide_with(
            &cfg,
            &upgrade("/", "Origin: https://evil.example\r\n"),
            CALM,
        );
        assert_eq!(status(&foreign), 403);
    }

    #[test]
    fn the_hook_sees_the_pick_and_the_peer_and_its_answer_is_kept() {
        let cfg = Config {
            subprotocols: vec!["b".into(), "a".into()],
            ..Config::default()
        };
        let v = decide_with(
            &cfg,
            &upgrade("/", "Sec-WebSocket-Protocol: x, a, b\r\n"),
            CALM,
        );
        assert_eq!(
            v.answer,
            Answer::Accept {
                protocol: Some("a".into()),
                headers: vec![("X-Peer".into(), "Some(127.0.0.1:5555)".into())],
                subscribe: vec!["news".into()],
                relay: None,
                data: KeptData(None),
            },
            "the client's first choice among ours"
        );
        assert_eq!(v.failure, None);
        let rejected = decide_with(&cfg, &upgrade("/reject", ""), CALM);
        assert_eq!(
            (status(&rejected), rejected.failure),
            (401, Some(HandshakeFailure::Rejected))
        );
        let panicked = decide_with(&cfg, &upgrade("/panic", ""), CALM);
        assert_eq!(
            (status(&panicked), panicked.failure),
            (500, Some(HandshakeFailure::Rejected))
        );
    }
}
