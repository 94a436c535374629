//! Pub/sub across nodes through a real redis-server (Debian's package,
//! installed by `scripts/setup-redis.sh`; `scripts/test.sh` runs it first).
//! Each test starts its own redis-server on a free loopback port with its
//! own settings, and stops it at the end.
#![cfg(feature = "redis")]

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::redis_server::Redis;
use common::wait_until;
use common::{Client, Ev};
use sockwave::broker::{BrokerHealth, BrokerStats, RedisBroker, RedisConfig};
use sockwave::server::{
    BackpressurePolicy, Config, Conn, Decision, Dispatch, Handler, Message, Server, ServerHandle,
    Upgrade,
};

/// The binary's pub/sub, stateless: a client subscribes to the topic its
/// path names; a message `T|topic|...` is published to that topic, one
/// `B|...` is broadcast, both excluding the sender.
struct Relay;

impl Handler for Relay {
    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        let path = upgrade.request().path();
        Decision::Accept {
            protocol: None,
            headers: Vec::new(),
            subscribe: match path {
                "/" => Vec::new(),
                p => vec![p[1..].to_string()],
            },
            relay: None,
        }
    }

    fn on_message(&self, conn: &Conn, message: Message) {
        let text = message.as_text().unwrap().to_string();
        let mut parts = text.splitn(3, '|');
        let server = conn.server();
        match parts.next() {
            Some("T") => {
                let topic = parts.next().unwrap();
                server.publish(topic, message.kind(), text.as_bytes(), Some(conn.id()));
            }
            Some("B") => {
                server.broadcast_except(message.kind(), text.as_bytes(), Some(conn.id()));
            }
            _ => panic!("unexpected message {text}"),
        }
    }
}

fn node(redis: &Redis, tweak: impl FnOnce(&mut RedisConfig, &mut Config)) -> ServerHandle {
    let mut rc = RedisConfig::new(redis.url());
    rc.prefix = "test:".into();
    rc.max_reconnect_delay = Duration::from_millis(200);
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 2,
        dispatch: Dispatch::Workers(2),
        ..Config::default()
    };
    tweak(&mut rc, &mut config);
    config.broker = Some(RedisBroker::new(rc).unwrap());
    Server::start(config, Relay).unwrap()
}

fn healthy(node: &ServerHandle) -> bool {
    node.broker_health() == Some(BrokerHealth::Healthy)
}

fn stats(node: &ServerHandle) -> BrokerStats {
    node.broker_stats().unwrap()
}

/// A message's text: kind|topic-or-empty|publisher|number.
fn parse(ev: Ev) -> (String, String, usize) {
    let Ev::Text(t) = ev else {
        panic!("expected a text message, got {ev:?}")
    };
    let fields: Vec<&str> = t.split('|').collect();
    (
        fields[0].to_string(),
        fields[2].to_string(),
        fields[3].parse().unwrap(),
    )
}

#[test]
fn three_nodes_deliver_every_publish_and_broadcast_once_in_order_never_to_the_sender() {
    let redis = Redis::start(&[]);
    let nodes: Vec<ServerHandle> = (0..3).map(|_| node(&redis, |_, _| {})).collect();
    let topics = ["red", "green", "blue"];
    const PER_NODE_PER_TOPIC: usize = 2;
    const MESSAGES: usize = 60;
    const BROADCASTS: usize = 20;

    // Every client subscribes and publishes: name = node.topic.index.
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for topic in topics {
            for i in 0..PER_NODE_PER_TOPIC {
                let c = Client::connect_with(node.local_addr(), &format!("/{topic}"), &[], &[])
                    .unwrap();
                clients.push((format!("{n}.{topic}.{i}"), topic, c));
            }
        }
    }
    for topic in topics {
        wait_until("every node subscribed at redis", || {
            redis.numsub(&format!("test:topic:{topic}")) == 3
        });
    }
    wait_until("every node healthy", || nodes.iter().all(healthy));

    let broadcasters: Vec<String> = (0..3).map(|n| format!("{n}.red.0")).collect();
    let names: Vec<(String, &str)> = clients.iter().map(|(n, t, _)| (n.clone(), *t)).collect();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|(name, topic, mut c)| {
            let broadcaster = broadcasters.contains(&name);
            let expected = (3 * PER_NODE_PER_TOPIC - 1) * MESSAGES
                + broadcasters.iter().filter(|b| **b != name).count() * BROADCASTS;
            thread::spawn(move || {
                for m in 0..MESSAGES {
                    c.send_text(&format!("T|{topic}|{name}|{m}")).unwrap();
                    if broadcaster && m < BROADCASTS {
                        c.send_text(&format!("B||{name}|{m}")).unwrap();
                    }
                }
                let mut got: HashMap<(String, String), Vec<usize>> = HashMap::new();
                for _ in 0..expected {
                    let (kind, from, m) = parse(c.recv_message().unwrap());
                    got.entry((kind, from)).or_default().push(m);
                }
                (name, got)
            })
        })
        .collect();
    for t in threads {
        let (name, got) = t.join().unwrap();
        let topic = names.iter().find(|(n, _)| *n == name).unwrap().1;
        let mut want: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (other, t) in &names {
            if *other != name && *t == topic {
                want.insert(("T".into(), other.clone()), (0..MESSAGES).collect());
            }
        }
        for b in &broadcasters {
            if *b != name {
                want.insert(("B".into(), b.clone()), (0..BROADCASTS).collect());
            }
        }
        assert_eq!(
            got, want,
            "{name}: every message once, in order, none its own"
        );
    }
    // A publish is counted when Redis answers the pipeline that carried it,
    // which may be after every subscriber has already received it.
    let total = names.len() * MESSAGES + 3 * BROADCASTS;
    let published = || nodes.iter().map(|n| stats(n).published).sum::<u64>();
    wait_until("every publish counted", || published() as usize >= total);
    let published = published();
    assert_eq!(published as usize, total);
    for n in &nodes {
        let s = stats(n);
        assert_eq!(
            (s.lost, s.missed, s.dropped, s.malformed),
            (0, 0, 0, 0),
            "{s:?}"
        );
        // Every message of the other two nodes, once per node.
        assert_eq!(s.received, published - s.published);
        assert_eq!(s.latency.count, s.received);
    }
    for n in nodes {
        n.shutdown_and_join();
    }
}

/// Redis's own count of calls of `command` (INFO commandstats).
fn calls(redis: &Redis, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.client())
        .unwrap();
    let key = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

fn close(mut c: Client) {
    c.close(1000, "").unwrap();
    while !matches!(c.recv().unwrap(), Ev::Close(..) | Ev::Eof) {}
}

#[test]
fn the_node_unsubscribes_when_its_last_subscriber_leaves_and_not_before_the_grace() {
    let redis = Redis::start(&[]);
    let grace = Duration::from_millis(600);
    let n = node(&redis, |rc, _| rc.unsubscribe_grace = grace);
    let channel = "test:topic:news";
    let first = Client::connect_with(n.local_addr(), "/news", &[], &[]).unwrap();
    let second = Client::connect_with(n.local_addr(), "/news", &[], &[]).unwrap();
    wait_until("the node subscribed", || redis.numsub(channel) == 1);
    let subscribes = calls(&redis, "subscribe");

    // One leaves, and the last one leaves while a new one arrives within
    // the grace: no UNSUBSCRIBE, no second SUBSCRIBE.
    close(first);
    close(second);
    let third = Client::connect_with(n.local_addr(), "/news", &[], &[]).unwrap();
    assert_eq!(redis.numsub(channel), 1);
    assert_eq!(calls(&redis, "unsubscribe"), 0);

    let left = Instant::now();
    close(third);
    wait_until("the node unsubscribed", || redis.numsub(channel) == 0);
    assert!(
        left.elapsed() >= grace,
        "unsubscribed before the grace ended"
    );
    assert_eq!(calls(&redis, "subscribe"), subscribes, "no flapping");
    assert_eq!(calls(&redis, "unsubscribe"), 1);
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query(&mut redis.client())
        .unwrap();
    assert_eq!(channels, ["test:broadcast"]);
    n.shutdown_and_join();
}

#[test]
fn redis_restarted_mid_stream_local_delivery_goes_on_and_the_loss_is_counted() {
    let mut redis = Redis::start(&[]);
    let a = node(&redis, |_, _| {});
    let b = node(&redis, |_, _| {});
    let mut publisher = Client::connect_with(a.local_addr(), "/", &[], &[]).unwrap();
    let mut local = Client::connect_with(a.local_addr(), "/ticks", &[], &[]).unwrap();
    let mut remote = Client::connect_with(b.local_addr(), "/ticks", &[], &[]).unwrap();
    wait_until("both nodes subscribed", || {
        redis.numsub("test:topic:ticks") == 2
    });
    wait_until("both nodes healthy", || healthy(&a) && healthy(&b));

    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = Arc::clone(&seen);
        thread::spawn(move || loop {
            let (_, from, m) = parse(remote.recv_message().unwrap());
            seen.lock().unwrap().push(m);
            if from == "end" {
                return;
            }
        })
    };
    let remote_count = || seen.lock().unwrap().len();
    // Each message is sent once the previous one reached the local
    // subscriber: local delivery is checked at every step.
    let mut next = 0;
    // Returns how many have been sent.
    let mut send = |from: &str| {
        publisher
            .send_text(&format!("T|ticks|{from}|{next}"))
            .unwrap();
        assert_eq!(parse(local.recv_message().unwrap()).2, next);
        next += 1;
        next
    };
    while remote_count() < 200 {
        send("p");
    }
    redis.kill();
    let mut during = 0;
    while healthy(&a) || during < 200 {
        send("p");
        during += u32::from(!healthy(&a));
    }
    redis.restart();
    // Sent so far, when both nodes report healthy: nothing after is lost.
    let mut mark = send("p");
    while !(healthy(&a) && healthy(&b)) {
        mark = send("p");
    }
    for _ in 0..500 {
        send("p");
    }
    let next = send("end");
    reader.join().unwrap();
    drop((publisher, local));

    let seen = seen.lock().unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order or twice"
    );
    let after: Vec<usize> = seen.iter().copied().filter(|&m| m >= mark).collect();
    assert_eq!(
        after,
        (mark..next).collect::<Vec<_>>(),
        "lost after healthy"
    );
    let missing = (next - seen.len()) as u64;
    let (sa, sb) = (stats(&a), stats(&b));
    eprintln!(
        "sent {next}, remote saw {}, healthy from {mark}: lost {} + missed {} (unconfirmed {})",
        seen.len(),
        sa.lost,
        sb.missed,
        sa.unconfirmed
    );
    assert!(sa.lost > 0, "the outage went uncounted: {sa:?}");
    assert_eq!(
        sa.lost + sb.missed,
        missing,
        "the counted loss is what the client saw: {sa:?} {sb:?}"
    );
    assert!(sa.reconnects >= 1 && sb.reconnects >= 1);
    a.shutdown_and_join();
    b.shutdown_and_join();
}

#[test]
fn a_node_whose_clients_read_slowly_keeps_its_redis_link_and_slows_no_one() {
    // Redis disconnects a subscriber that lags 4 MiB behind (32 MiB by
    // default): a node that stopped reading Redis while one of its clients
    // stalls would be cut off before the 16 MiB below went through.
    let redis = Redis::start(&["--client-output-buffer-limit", "pubsub 4mb 2mb 1"]);
    let a = node(&redis, |_, _| {});
    let b = node(&redis, |_, c| c.backpressure = BackpressurePolicy::Drop);
    let c = node(&redis, |_, _| {});
    // On b, a client that never reads (with a small receive window, so the
    // kernel soaks up little); on c, one that reads.
    let stalled = Client::connect_with(b.local_addr(), "/firehose", &[], &[]).unwrap();
    socket2::SockRef::from(&stalled.stream)
        .set_recv_buffer_size(4096)
        .unwrap();
    let mut reader = Client::connect_with(c.local_addr(), "/firehose", &[], &[]).unwrap();
    let mut publisher = Client::connect_with(a.local_addr(), "/", &[], &[]).unwrap();
    wait_until("b and c subscribed", || {
        redis.numsub("test:topic:firehose") == 2
    });
    const MESSAGES: usize = 16_000;
    // The publisher stays at most WINDOW messages (512 KiB) ahead of what b
    // and c have taken from Redis: a node that keeps reading never lags near
    // the limit, however busy the machine (other tests share its two
    // cores), while one that stopped reading Redis stops the publisher here
    // and the test fails (or Redis cuts it off, which fails it too).
    const WINDOW: usize = 512;
    let filler = "x".repeat(1024);
    let got = Arc::new(AtomicUsize::new(0));
    let reader = {
        let got = Arc::clone(&got);
        thread::spawn(move || {
            (0..MESSAGES)
                .map(|_| {
                    let m = parse(reader.recv_message().unwrap()).2;
                    got.fetch_add(1, Ordering::Relaxed);
                    m
                })
                .collect::<Vec<_>>()
        })
    };
    for m in 0..MESSAGES {
        if m >= WINDOW && m % (WINDOW / 2) == 0 {
            let taken = (m - WINDOW) as u64;
            wait_until("b and c to keep reading Redis", || {
                let sb = stats(&b);
                assert_eq!(sb.reconnects, 0, "redis cut b off: {sb:?}");
                got.load(Ordering::Relaxed) as u64 >= taken && sb.received >= taken
            });
        }
        publisher
            .send_text(&format!("T|firehose|p|{m}|{filler}"))
            .unwrap();
    }
    assert_eq!(reader.join().unwrap(), (0..MESSAGES).collect::<Vec<_>>());
    wait_until("b received everything", || {
        let sb = stats(&b);
        assert_eq!(sb.reconnects, 0, "redis cut b off: {sb:?}");
        assert_eq!(sb.missed + sb.dropped, 0, "{sb:?}");
        sb.received == MESSAGES as u64
    });
    assert!(
        b.stats().dropped_backpressure > 0,
        "the stalled client should have had messages dropped: {:?}",
        b.stats()
    );
    drop((stalled, publisher));
    for n in [a, b, c] {
        n.shutdown_and_join();
    }
}

/// Every log line of this test binary, for the tests that check what a user
/// is told.
fn logs() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                logs()
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", r.level(), r.args()));
            }
        }
        fn flush(&self) {}
    }
    LOGS.get_or_init(|| {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Info);
        Mutex::default()
    })
}

/// A TCP server on a free port that is not Redis: `reply` to whatever comes
/// (or, with `None`, a close at once).
fn impostor(reply: Option<&'static [u8]>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let Some(reply) = reply else { continue };
            thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {
                    if s.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_redis_that_speaks_garbage_or_hangs_up_is_logged_and_the_node_serves_locally() {
    logs();
    for (reply, told) in [
        (
            Some(&b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..]),
            "not RESP",
        ),
        (None, "connection lost"),
    ] {
        let port = impostor(reply);
        let fake = Redis {
            port,
            child: None,
            extra: Vec::new(),
        };
        let n = node(&fake, |_, _| {});
        let mut sender = Client::connect_with(n.local_addr(), "/", &[], &[]).unwrap();
        let mut receiver = Client::connect_with(n.local_addr(), "/local", &[], &[]).unwrap();
        sender.send_text("T|local|s|0").unwrap();
        assert_eq!(parse(receiver.recv_message().unwrap()).2, 0);
        let address = format!("redis at 127.0.0.1:{port} failed");
        wait_until("the failure logged", || {
            logs()
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("WARN") && l.contains(&address) && l.contains(told))
        });
        assert!(matches!(n.broker_health(), Some(BrokerHealth::Degraded(_))));
        // Counted just after the local delivery, on the handler's thread.
        wait_until("the publish to other nodes counted as lost", || {
            stats(&n).lost == 1
        });
        drop((sender, receiver));
        n.shutdown_and_join();
        std::mem::forget(fake); // no child to kill
    }
}

/// C: every connection subscribes to "news"; what a client sends is
/// published there, excluding the sender.
mod from_c {
    use std::ffi::c_void;

    use sockwave::ffi::*;

    pub unsafe extern "C" fn subscribe_news(
        _: *mut c_void,
        _: *const sw_server,
        _: *const sw_request,
        up: *mut sw_upgrade,
    ) {
        unsafe { assert_eq!(sw_upgrade_subscribe(up, c"news".as_ptr()), sw_result::Ok) };
    }

    pub unsafe extern "C" fn publish_news(
        _: *mut c_void,
        server: *const sw_server,
        conn: sw_conn_id,
        _conn_data: *mut c_void,
        _: sw_message_kind,
        data: *const u8,
        len: usize,
    ) {
        let r = unsafe { sw_server_publish_binary(server, c"news".as_ptr(), data, len, conn) };
        assert_eq!(r, sw_result::Ok);
    }
}

#[test]
fn c_servers_started_from_one_config_publish_across_nodes() {
    use sockwave::ffi::*;
    use std::ptr;

    let redis = Redis::start(&[]);
    unsafe {
        let cfg = sw_config_new();
        sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
        assert_eq!(
            sw_config_set_broker_redis(cfg, c"http://not-redis/".as_ptr(), ptr::null()),
            sw_result::InvalidArgument
        );
        let url = std::ffi::CString::new(redis.url()).unwrap();
        assert_eq!(
            sw_config_set_broker_redis(cfg, url.as_ptr(), c"c:".as_ptr()),
            sw_result::Ok
        );
        let cbs = sw_callbacks {
            userdata: ptr::null_mut(),
            on_handshake: Some(from_c::subscribe_news),
            on_open: None,
            on_message: Some(from_c::publish_news),
            on_close: None,
            on_drain: None,
        };
        // One config, two servers: each gets a broker of its own.
        let mut servers = [ptr::null_mut(); 2];
        for s in &mut servers {
            assert_eq!(sw_server_start(cfg, &cbs, s), sw_result::Ok);
        }
        sw_config_free(cfg);
        let port = |s: *mut sw_server| {
            let mut p = 0u16;
            assert_eq!(sw_server_local_port(s, &mut p), sw_result::Ok);
            SocketAddr::from(([127, 0, 0, 1], p))
        };
        let mut a = Client::connect_with(port(servers[0]), "/", &[], &[]).unwrap();
        let mut b = Client::connect_with(port(servers[1]), "/", &[], &[]).unwrap();
        wait_until("both subscribed", || redis.numsub("c:topic:news") == 2);
        let stats = |s: *mut sw_server| {
            let mut out = sw_broker_stats::default();
            assert_eq!(sw_server_broker_stats(s, &mut out), sw_result::Ok);
            out
        };
        wait_until("both healthy", || servers.iter().all(|&s| stats(s).healthy));
        a.send_binary(b"from a").unwrap();
        assert_eq!(b.recv_message().unwrap(), Ev::Binary(b"from a".to_vec()));
        b.send_binary(b"from b").unwrap();
        assert_eq!(a.recv_message().unwrap(), Ev::Binary(b"from b".to_vec()));
        // A publish is counted when Redis answers the PUBLISH, which may be
        // after the other node has already delivered it.
        wait_until("both publishes counted", || {
            servers.iter().all(|&s| stats(s).published == 1)
        });
        let (sa, sb) = (stats(servers[0]), stats(servers[1]));
        assert_eq!((sa.published, sa.received), (1, 1));
        assert_eq!((sb.published, sb.received, sb.latency_count), (1, 1, 1));
        assert_eq!(
            sw_server_broker_stats(servers[0], ptr::null_mut()),
            sw_result::NullParameter
        );
        drop((a, b));
        for s in servers {
            sw_server_free(s);
        }
    }
}

/// The binary's pub/sub for sockwave-bench: the path names the topic, a
/// message is published there; `to_sender` is a deliberate bug.
struct PathPubSub {
    to_sender: bool,
}

impl Handler for PathPubSub {
    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        Decision::Accept {
            protocol: None,
            headers: Vec::new(),
            subscribe: vec![upgrade.request().path().to_string()],
            relay: None,
        }
    }

    fn on_message(&self, conn: &Conn, message: Message) {
        // The bench runs one topic here, so every path is /topic-0.
        let exclude = (!self.to_sender).then(|| conn.id());
        conn.server()
            .publish("/topic-0", message.kind(), message.as_bytes(), exclude);
    }
}

fn bench_fanout(publish_at: SocketAddr, subscribe_at: SocketAddr) -> BenchReport {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sockwave-bench"))
        .args(["--mode", "fanout", "--json", "--payload", "32"])
        .args(["--subscribers", "20", "--publishers", "2", "--window", "8"])
        .args(["--duration", "0.5", "--warmup", "0.2", "--settle", "0.3"])
        .args(["--addr", &publish_at.to_string()])
        .args(["--sub-addr", &subscribe_at.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    BenchReport::parse(&String::from_utf8(out.stdout).unwrap())
}

/// The two numbers of sockwave-bench's JSON line these tests read.
struct BenchReport {
    deliveries_per_sec: f64,
    errors: u64,
}

impl BenchReport {
    fn parse(json: &str) -> BenchReport {
        let field = |name: &str| -> f64 {
            let at = json.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
            json[at..]
                .split([',', '}'])
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        BenchReport {
            deliveries_per_sec: field("deliveries_per_sec"),
            errors: field("errors") as u64,
        }
    }
}

#[test]
fn the_fanout_bench_verifies_cross_node_delivery_and_catches_a_server_that_echoes_the_sender() {
    let redis = Redis::start(&[]);
    let start = |to_sender: bool| {
        let mut rc = RedisConfig::new(redis.url());
        rc.prefix = format!("bench{to_sender}:");
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            threads: 1,
            broker: Some(RedisBroker::new(rc).unwrap()),
            ..Config::default()
        };
        Server::start(config, PathPubSub { to_sender }).unwrap()
    };
    let (a, b) = (start(false), start(false));
    let good = bench_fanout(a.local_addr(), b.local_addr());
    assert_eq!(good.errors, 0);
    assert!(good.deliveries_per_sec > 0.0);
    let bad = start(true);
    let caught = bench_fanout(bad.local_addr(), bad.local_addr());
    assert!(caught.errors > 0, "a delivery to the sender went unnoticed");
    for n in [a, b, bad] {
        n.shutdown_and_join();
    }
}
