//! `Config::rate_limit`: per connection (messages and bytes a second, with
//! the close and pause policies) and per source address (open connections,
//! new connections a second).

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, Client, Ev};
use sockwave::server::{
    Config, Dispatch, Echo, Rate, RateLimit, RateLimitPolicy, Server, ServerHandle,
};

fn server(rate_limit: RateLimit) -> ServerHandle {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 2,
        dispatch: Dispatch::Workers(2),
        shutdown_timeout: Duration::from_millis(500),
        rate_limit,
        ..Config::default()
    };
    Server::start(config, Echo).unwrap()
}

#[test]
fn over_its_message_rate_a_connection_is_closed_with_1008_and_others_are_not() {
    // One message a second after a burst of five: the sixth, sent at once, is over.
    let s = server(RateLimit {
        messages: Some(Rate {
            per_sec: 1.0,
            burst: 5.0,
        }),
        ..RateLimit::default()
    });
    let mut calm = Client::connect(s.local_addr()).unwrap();
    let mut c = Client::connect(s.local_addr()).unwrap();
    for i in 0..6 {
        c.send_text(&format!("m{i}")).unwrap();
    }
    // The close goes out at once: echoes the worker had not sent by then
    // are dropped with the connection. The sixth never reaches the handler.
    let mut echoed = Vec::new();
    let close = loop {
        match c.recv_message().unwrap() {
            Ev::Text(t) => echoed.push(t),
            other => break other,
        }
    };
    assert_eq!(close, Ev::Close(1008, "rate limit exceeded".into()));
    let first: Vec<String> = (0..echoed.len()).map(|i| format!("m{i}")).collect();
    assert!(echoed.len() <= 5 && echoed == first, "{echoed:?}");
    assert_eq!(s.stats().messages_in, 6);
    calm.send_text("still here").unwrap();
    assert_eq!(calm.recv_message().unwrap(), Ev::Text("still here".into()));
    assert_eq!(s.stats().rate_limit_closed, 1);
    s.shutdown_and_join();
}

#[test]
fn over_its_byte_rate_a_connection_is_closed_too() {
    let s = server(RateLimit {
        bytes: Some(Rate {
            per_sec: 1.0,
            burst: 1000.0,
        }),
        ..RateLimit::default()
    });
    let mut c = Client::connect(s.local_addr()).unwrap();
    c.send_binary(&[7; 600]).unwrap();
    assert_eq!(c.recv_message().unwrap(), Ev::Binary(vec![7; 600]));
    c.send_binary(&[8; 600]).unwrap();
    assert_eq!(
        c.recv_message().unwrap(),
        Ev::Close(1008, "rate limit exceeded".into())
    );
    s.shutdown_and_join();
}

#[test]
fn with_the_pause_policy_a_fast_client_is_slowed_to_its_rate_and_loses_nothing() {
    let s = server(RateLimit {
        messages: Some(Rate {
            per_sec: 10.0,
            burst: 2.0,
        }),
        policy: RateLimitPolicy::Pause,
        ..RateLimit::default()
    });
    let mut c = Client::connect(s.local_addr()).unwrap();
    // Request and answer, one at a time: the first three go at once (the
    // burst, then the one that goes into debt); from then on each waits
    // until the connection is read again, a tenth of a second apart.
    for i in 0..3 {
        c.send_text(&format!("m{i}")).unwrap();
        assert_eq!(c.recv_message().unwrap(), Ev::Text(format!("m{i}")));
    }
    let from = Instant::now();
    for i in 3..10 {
        c.send_text(&format!("m{i}")).unwrap();
        assert_eq!(c.recv_message().unwrap(), Ev::Text(format!("m{i}")));
    }
    let took = from.elapsed();
    assert!(
        took >= Duration::from_millis(650),
        "7 messages at 10 a second took only {took:?}"
    );
    assert!(s.stats().rate_limit_paused >= 1);
    assert_eq!(s.stats().rate_limit_closed, 0);
    s.shutdown_and_join();
}

#[test]
fn an_address_may_hold_only_so_many_connections() {
    let s = server(RateLimit {
        connections_per_ip: Some(2),
        ..RateLimit::default()
    });
    let a = Client::connect(s.local_addr()).unwrap();
    let _b = Client::connect(s.local_addr()).unwrap();
    assert!(
        Client::connect(s.local_addr()).is_err(),
        "a third from 127.0.0.1 is closed before its upgrade"
    );
    assert_eq!(s.stats().handshake_per_ip, 1);
    drop(a);
    wait_until("the first released", || s.stats().connections_open == 1);
    let mut c = Client::connect(s.local_addr()).unwrap();
    c.send_text("room again").unwrap();
    assert_eq!(c.recv_message().unwrap(), Ev::Text("room again".into()));
    s.shutdown_and_join();
}

#[test]
fn an_address_may_open_only_so_many_connections_a_second() {
    let s = server(RateLimit {
        handshakes_per_ip: Some(Rate {
            per_sec: 0.5,
            burst: 3.0,
        }),
        ..RateLimit::default()
    });
    for _ in 0..3 {
        let mut c = Client::connect(s.local_addr()).unwrap();
        c.close(1000, "").unwrap();
    }
    assert!(
        Client::connect(s.local_addr()).is_err(),
        "the fourth at once"
    );
    assert_eq!(s.stats().handshake_per_ip, 1);
    s.shutdown_and_join();
}
