//! How a loop answers a request head (see `upgrade::decide`) and opens the
//! connection when the answer is an upgrade.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::conn_inner::{ConnData, ConnInner};
use super::dispatch::WorkerEvent;
use super::event_loop::EventLoop;
use super::lifecycle::Lifecycle;
use super::out_queue::QueueSink;
use super::prepared::Encoding;
use super::stats::HandshakeFailure;
use super::transport::Transport;
use super::upgrade::{decide, Answer, Load};
use crate::protocol::{AcceptOptions, Request};

impl EventLoop {
    /// Answers a request head (see [`decide`]) and opens the connection if
    /// the answer is an upgrade.
    pub(super) fn on_request(&mut self, slot: usize, req: Request, now: Instant) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        let over_capacity = matches!(
            c.lifecycle,
            Lifecycle::Handshaking {
                over_capacity: true,
                ..
            }
        );
        let proxied = c.take_proxied_client();
        let load = Load {
            over_capacity,
            shutting_down: self.server.state().shutting_down.load(Ordering::Acquire),
        };
        // The client: what a trusted proxy said (PROXY header, forwarding
        // headers), else the socket's peer, asked now rather than kept from
        // accept: idle connections are smaller without it.
        let peer = proxied
            .or_else(|| c.transport.proxied_client())
            .or_else(|| c.transport.peer_addr())
            .map(|p| self.server.config().proxies.client_from_headers(p, &req));
        let verdict = decide(
            self.server.config(),
            &*self.handler,
            &req,
            peer,
            &self.server,
            load,
        );
        let mut failure = verdict.failure;
        let mut sink = QueueSink::new(&mut c.out);
        match verdict.answer {
            Answer::Respond(resp) => {
                let headers: Vec<(&str, &str)> = resp
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                c.proto
                    .respond(resp.status, &headers, &resp.body, now, &mut sink);
            }
            Answer::StandardError => {
                let _ = c
                    .proto
                    .accept(&req, &AcceptOptions::default(), now, &mut sink);
            }
            Answer::Accept {
                protocol,
                headers,
                subscribe,
                relay,
                data,
            } => {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let opts = AcceptOptions {
                    protocol: protocol.as_deref(),
                    extensions: None,
                    headers: &headers,
                };
                let accepted_at = c.proto.phase_since();
                if c.proto.accept(&req, &opts, now, &mut sink).is_ok() {
                    self.stats
                        .upgraded(now.saturating_duration_since(accepted_at));
                    self.open(slot, req, protocol, peer, (subscribe, relay), data.0);
                } else {
                    failure = Some(HandshakeFailure::Invalid);
                }
            }
        }
        if let Some(why) = failure {
            self.count_failure(why);
        }
        self.conns.mark_dirty(slot);
    }

    /// The upgrade went out: the connection is open to the handler.
    pub(super) fn open(
        &mut self,
        slot: usize,
        req: Request,
        protocol: Option<String>,
        peer: Option<std::net::SocketAddr>,
        (subscribe, relay): (Vec<String>, Option<String>),
        data: Option<ConnData>,
    ) {
        let id = self.conns.id(slot);
        let c = self.conns.get_mut(slot).expect("present");
        let inner = ConnInner::new(
            id,
            protocol.map(String::into_boxed_str),
            peer,
            Encoding::negotiated(c.proto.deflate()),
        );
        inner.set_data(data);
        let inner = Arc::new(inner);
        c.inner = Some(Arc::clone(&inner));
        c.lifecycle = Lifecycle::Opening;
        // Our answer to the peer's close waits until the handler is through
        // with what arrived before it (see `WorkerEvent::Close`).
        c.proto.hold_close_reply(true);
        let state = self.server.state();
        state.mailboxes[self.index].register(slot, Some(Arc::clone(&inner)));
        state.stats.connections_open.fetch_add(1, Ordering::Relaxed);
        state.mailboxes[self.index]
            .open
            .fetch_add(1, Ordering::Relaxed);
        state
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        for topic in subscribe {
            self.join_topic(slot, topic.into());
        }
        if let Some(topic) = relay {
            self.topics.relay(slot, topic.into());
            // Only published: a small message is copied once, into the
            // publish, from where it lies.
            if let Some(c) = self.conns.get_mut(slot) {
                c.proto.lend_small_messages(true);
            }
        }
        self.dispatcher
            .dispatch(slot, WorkerEvent::Open(inner, Box::new(req)));
    }
}
