//! What the standalone server does: the three modes, and the plain HTTP
//! pages served on the WebSocket port.

use std::fmt::Write as _;

use sockwave::broker::BrokerHealth;
use sockwave::server::{
    Conn, Decision, Handler, HttpResponse, LatencyHistogram, LoopGauges, Message, MessageKind,
    Request, ServerHandle, Upgrade,
};

use crate::Mode;

const DEMO_PAGE: &str = include_str!("demo.html");

pub struct App {
    mode: Mode,
}

impl App {
    pub fn new(mode: Mode) -> App {
        App { mode }
    }

    /// 200 either way: a node whose broker is away still serves its own
    /// clients (degraded, not down), so a load balancer keeps it.
    fn health(server: &ServerHandle) -> String {
        match server.broker_health() {
            None => "ok\n".into(),
            Some(BrokerHealth::Healthy) => "ok\nbroker: healthy\n".into(),
            Some(BrokerHealth::Degraded(why)) => format!("degraded\nbroker: {why}\n"),
        }
    }

    fn metrics(server: &ServerHandle) -> String {
        let s = server.stats();
        let plain = |v: u64| vec![(String::new(), v)];
        let by_reason = [
            ("invalid", s.handshake_invalid),
            ("origin", s.handshake_origin),
            ("capacity", s.handshake_capacity),
            ("rejected", s.handshake_rejected),
            ("timeout", s.handshake_timeout),
            ("per_ip", s.handshake_per_ip),
        ]
        .map(|(r, v)| (format!("{{reason=\"{r}\"}}"), v))
        .to_vec();
        let metrics = [
            ("connections_open", "gauge", "Open WebSocket connections.", plain(s.connections_open)),
            ("connections_total", "counter", "WebSocket connections accepted since start.", plain(s.connections_total)),
            ("messages_received_total", "counter", "Messages received from clients.", plain(s.messages_in)),
            ("messages_sent_total", "counter", "Messages queued to clients.", plain(s.messages_out)),
            ("bytes_received_total", "counter", "Payload bytes received from clients.", plain(s.bytes_in)),
            ("bytes_sent_total", "counter", "Payload bytes queued to clients.", plain(s.bytes_out)),
            (
                "messages_dropped_backpressure_total",
                "counter",
                "Messages dropped because a connection's send buffer was full.",
                plain(s.dropped_backpressure),
            ),
            (
                "connections_closed_backpressure_total",
                "counter",
                "Connections closed (1008) because their send buffer was full.",
                plain(s.closed_backpressure),
            ),
            (
                "handler_panics_total",
                "counter",
                "Handler calls that panicked; each closed its connection with 1011.",
                plain(s.handler_panics),
            ),
            (
                "loop_panics_total",
                "counter",
                "Panics of an event loop while it read one connection (a bug of ours); each dropped that connection.",
                plain(s.loop_panics),
            ),
            (
                "loop_batch_exits_total",
                "counter",
                "Times a loop found a busy task sharing its core and left SCHED_BATCH for a while.",
                plain(s.loop_batch_exits),
            ),
            (
                "fanout_dropped_total",
                "counter",
                "Broadcasts and publishes an event loop refused: too many bytes of them were waiting for it.",
                plain(s.dropped_fanout),
            ),
            (
                "rate_limit_closed_total",
                "counter",
                "Connections closed (1008) for sending faster than their rate limit.",
                plain(s.rate_limit_closed),
            ),
            (
                "rate_limit_paused_total",
                "counter",
                "Times a connection was not read for a while for sending faster than its rate limit.",
                plain(s.rate_limit_paused),
            ),
            (
                "subscriptions_refused_total",
                "counter",
                "Subscriptions refused: their connection was in as many topics as it may be, or the name was too long.",
                plain(s.subscriptions_refused),
            ),
            ("handshake_failures_total", "counter", "Upgrade requests refused, by reason.", by_reason),
            ("tls_handshakes_total", "counter", "TLS handshakes completed.", plain(s.tls_handshakes)),
            (
                "tls_handshake_failures_total",
                "counter",
                "TLS handshakes failed, by reason.",
                [("invalid", s.tls_failed_invalid), ("closed", s.tls_failed_closed), ("timeout", s.tls_failed_timeout)]
                    .map(|(r, v)| (format!("{{reason=\"{r}\"}}"), v))
                    .to_vec(),
            ),
        ];
        let mut out = String::new();
        let broker = server.broker_stats();
        let broker_metrics = broker.iter().flat_map(|b| {
            [
                ("broker_connected", "gauge", "1 while both Redis connections are up.", plain(b.connected.into())),
                ("broker_published_total", "counter", "Messages handed to the broker for other nodes.", plain(b.published)),
                ("broker_lost_total", "counter", "Messages for other nodes lost: the broker was unreachable or the publish queue full.", plain(b.lost)),
                ("broker_unconfirmed_total", "counter", "Messages written to the broker whose batch failed before its reply.", plain(b.unconfirmed)),
                ("broker_received_total", "counter", "Messages received from other nodes.", plain(b.received)),
                ("broker_missed_total", "counter", "Messages from other nodes known missed (gaps in their sequence).", plain(b.missed)),
                ("broker_dropped_total", "counter", "Messages from other nodes this node's loops refused (fan-out queues full).", plain(b.dropped)),
                ("broker_malformed_total", "counter", "Messages on broker channels that were not sockwave's.", plain(b.malformed)),
                ("broker_reconnects_total", "counter", "Connections to the broker made again after one was lost.", plain(b.reconnects)),
            ]
        });
        let gauges = server.loop_gauges();
        let per_loop = |f: fn(&LoopGauges) -> usize| {
            gauges
                .iter()
                .enumerate()
                .map(|(i, g)| (format!("{{loop=\"{i}\"}}"), f(g) as u64))
                .collect::<Vec<_>>()
        };
        let loop_metrics = [
            (
                "loop_connections",
                "gauge",
                "Open connections, by event loop.",
                per_loop(|g| g.connections),
            ),
            (
                "loop_commands_queued",
                "gauge",
                "Commands from other threads waiting for each event loop.",
                per_loop(|g| g.commands_queued),
            ),
            (
                "loop_fanout_pending_bytes",
                "gauge",
                "Bytes of broadcasts and publishes waiting for each event loop.",
                per_loop(|g| g.fanout_pending_bytes),
            ),
            (
                "build_info",
                "gauge",
                "The running build: version and the features compiled in.",
                vec![(
                    format!(
                        "{{version=\"{}\",tls=\"{}\",redis=\"{}\"}}",
                        env!("CARGO_PKG_VERSION"),
                        cfg!(feature = "tls"),
                        cfg!(feature = "redis")
                    ),
                    1,
                )],
            ),
        ];
        for (name, kind, help, samples) in metrics
            .into_iter()
            .chain(broker_metrics)
            .chain(loop_metrics)
        {
            let _ = writeln!(
                out,
                "# HELP sockwave_{name} {help}\n# TYPE sockwave_{name} {kind}"
            );
            for (labels, v) in samples {
                let _ = writeln!(out, "sockwave_{name}{labels} {v}");
            }
        }
        process_metrics(&mut out);
        let l = server.latencies();
        for (name, help, h) in [
            (
                "handshake_duration_seconds",
                "From accept to the upgrade's 101 (TLS included).",
                &l.handshake,
            ),
            (
                "dispatch_wait_seconds",
                "From a message's arrival to its worker taking it.",
                &l.dispatch,
            ),
            (
                "send_wait_seconds",
                "From bytes queued for a client to the write that took them.",
                &l.send,
            ),
        ] {
            histogram(&mut out, name, help, h);
        }
        if let Some(b) = &broker {
            histogram(
                &mut out,
                "broker_delivery_latency_seconds",
                "From the publish on the origin node to the arrival here.",
                &b.latency,
            );
        }
        out
    }
}

/// One histogram in Prometheus' text format, in seconds.
fn histogram(out: &mut String, name: &str, help: &str, h: &LatencyHistogram) {
    let name = format!("sockwave_{name}");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound_us, n) in &h.buckets {
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {n}",
            *bound_us as f64 / 1e6
        );
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// The standard process metrics (Prometheus' names), from /proc/self.
fn process_metrics(out: &mut String) {
    let mut put = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    // SAFETY: sysconf reads constants.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces): utime is
        // the 14th field of the line, stime the 15th, rss the 24th.
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        if let (Some(u), Some(s)) = (num(11), num(12)) {
            put(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time.",
                (u + s) / hz,
            );
        }
        if let Some(rss) = num(21) {
            put(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory.",
                rss * page,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        put(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            fds.count() as f64,
        );
    }
}

fn page(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Option<HttpResponse> {
    Some(HttpResponse {
        status,
        headers: vec![
            ("Content-Type".into(), content_type.into()),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: body.into(),
    })
}

impl Handler for App {
    fn on_http(&self, request: &Request, server: &ServerHandle) -> Option<HttpResponse> {
        if request.method() != "GET" {
            let mut r = page(405, "text/plain; charset=utf-8", "method not allowed\n")?;
            r.headers.push(("Allow".into(), "GET".into()));
            return Some(r);
        }
        match request.path() {
            "/" | "/index.html" => page(200, "text/html; charset=utf-8", DEMO_PAGE),
            "/healthz" => page(200, "text/plain; charset=utf-8", Self::health(server)),
            "/metrics" => page(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                Self::metrics(server),
            ),
            // Every other path is a WebSocket endpoint (426 says "upgrade"),
            // except what is obviously a file a browser went looking for.
            p if p.rsplit('/').next().is_some_and(|last| last.contains('.')) => {
                page(404, "text/plain; charset=utf-8", "not found\n")
            }
            _ => None,
        }
    }

    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        Decision::Accept {
            protocol: upgrade.protocol().map(str::to_string),
            headers: Vec::new(),
            // Subscribed before the 101 leaves: a publish the client could
            // have caused after seeing the connection open never misses it.
            subscribe: match self.mode {
                Mode::Pubsub => vec![upgrade.request().path().to_string()],
                _ => Vec::new(),
            },
            // What a pub/sub client sends goes to its channel's other
            // members straight from the loop (no handler call, no worker).
            relay: (self.mode == Mode::Pubsub).then(|| upgrade.request().path().to_string()),
        }
    }

    fn on_open(&self, conn: &Conn, request: &Request) {
        log::debug!(
            "open {} {} from {:?}",
            conn.id(),
            request.path(),
            conn.peer_addr()
        );
    }

    fn on_message(&self, conn: &Conn, message: Message) {
        match self.mode {
            Mode::Echo => {
                let kind = message.kind();
                conn.send_owned(kind, message.into_bytes());
            }
            Mode::Broadcast => {
                conn.server()
                    .broadcast_except(message.kind(), message.as_bytes(), Some(conn.id()));
            }
            // Relayed by the loop (see `on_upgrade`): never called.
            Mode::Pubsub => {}
        }
    }

    fn on_message_lent(&self, conn: &Conn, kind: MessageKind, data: &[u8]) {
        match self.mode {
            Mode::Echo => {
                conn.send(kind, data);
            }
            Mode::Broadcast => {
                conn.server().broadcast_except(kind, data, Some(conn.id()));
            }
            Mode::Pubsub => {}
        }
    }

    fn on_close(&self, conn: &Conn, code: u16, reason: &str) {
        log::debug!("close {} {code} {reason:?}", conn.id());
    }
}
