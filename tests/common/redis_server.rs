//! A redis-server of a test's own (Debian's package, installed by
//! `scripts/setup-redis.sh`), on a free loopback port.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;

/// A redis-server of this test's own, on a free loopback port.
pub struct Redis {
    pub port: u16,
    pub child: Option<Child>,
    pub extra: Vec<String>,
}

impl Redis {
    pub fn start(extra: &[&str]) -> Redis {
        let port = free_port();
        let mut r = Redis {
            port,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.restart();
        r
    }

    /// (Re)starts the server on its port and returns once it says it is
    /// ready to accept connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", std::env::temp_dir().to_str().unwrap()])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: run scripts/setup-redis.sh (scripts/test.sh does)");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = out.lines();
        for line in lines.by_ref() {
            if line.unwrap().contains("Ready to accept connections") {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Subscribers Redis counts on `channel`.
    pub fn numsub(&self, channel: &str) -> i64 {
        let v: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut self.client())
            .unwrap();
        v[0].1
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
