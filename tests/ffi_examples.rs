//! The C API through real C and C++ programs: ffi-examples/ is built with
//! make (-Wall -Wextra -Werror, plus an AddressSanitizer/UBSan build), each
//! program is run and driven by a WebSocket client, and checked for echoed
//! bytes, close codes, sanitizer reports and clean exits.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use common::{Client, Ev};
use sockwave::protocol::mask::apply_mask_reference;
use sockwave::protocol::MessageKind;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the release library and every example once per test binary.
fn build_examples() {
    static BUILD: Once = Once::new();
    static FAILED: Mutex<Option<String>> = Mutex::new(None);
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let lib = Command::new(cargo)
            .args(["build", "--release", "--lib", "--quiet"])
            .current_dir(root())
            .status()
            .unwrap();
        let make = Command::new("make")
            .args(["-C", "ffi-examples", "all", "static", "asan"])
            .current_dir(root())
            .output()
            .unwrap();
        if !lib.success() || !make.status.success() {
            *FAILED.lock().unwrap() = Some(format!(
                "build failed: {}{}",
                String::from_utf8_lossy(&make.stdout),
                String::from_utf8_lossy(&make.stderr)
            ));
        }
    });
    if let Some(e) = FAILED.lock().unwrap().as_ref() {
        panic!("{e}");
    }
}

struct Program {
    child: Child,
    port: u16,
    stderr: std::thread::JoinHandle<String>,
}

fn start(binary: &str, args: &[&str]) -> Program {
    build_examples();
    let path: PathBuf = root().join("ffi-examples").join(binary);
    let mut child = Command::new(&path)
        .args(args)
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:exitcode=23",
        )
        .env(
            "UBSAN_OPTIONS",
            "print_stacktrace=1:halt_on_error=1:exitcode=24",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{binary}: no port in {line:?}"));
    Program {
        child,
        port,
        stderr,
    }
}

impl Program {
    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// SIGTERM, then the exit status, stdout rest and stderr.
    fn stop(mut self) -> (i32, String, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "program did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (
            status.code().unwrap_or(-1),
            out,
            self.stderr.join().unwrap(),
        )
    }
}

fn assert_clean(code: i32, stderr: &str) {
    assert_eq!(code, 0, "exit status {code}; stderr:\n{stderr}");
    for bad in ["AddressSanitizer", "LeakSanitizer", "runtime error:"] {
        assert!(!stderr.contains(bad), "{bad} reported:\n{stderr}");
    }
}

/// A masked text frame with arbitrary (possibly invalid) payload bytes.
fn raw_text_frame(payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    let mut p = payload.to_vec();
    apply_mask_reference(&mut p, key, 0);
    f.extend(p);
    f
}

/// Returns the client's address as the server's session records it.
fn drive_echo(p: &Program) -> String {
    let mut c = Client::connect(p.addr()).unwrap();
    let me = c.stream.local_addr().unwrap().to_string();
    c.send_text("hello from the test, ✓").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("hello from the test, ✓".into()));
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 13) as u8).collect();
    c.send_binary(&big).unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Binary(big));
    c.send_fragments(MessageKind::Text, &[b"in ", b"three ", b"parts"])
        .unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Text("in three parts".into()));
    c.close(4000, "done").unwrap();
    assert_eq!(c.recv().unwrap(), Ev::Close(4000, "done".into()));
    assert_eq!(c.recv().unwrap(), Ev::Eof);

    // Invalid UTF-8 is failed with 1007 by the library, before C sees it.
    let mut bad = Client::connect(p.addr()).unwrap();
    bad.stream
        .write_all(&raw_text_frame(&[b'o', b'k', 0xff]))
        .unwrap();
    assert_eq!(
        bad.recv().unwrap(),
        Ev::Close(1007, "invalid UTF-8 in text".into())
    );
    me
}

#[test]
fn c_echo_server_echoes_and_closes_cleanly() {
    let p = start("build/echo_server", &["127.0.0.1:0"]);
    let me = drive_echo(&p);
    // A client still connected at shutdown is closed with 1001.
    let mut last = Client::connect(p.addr()).unwrap();
    last.send_text("still here").unwrap();
    assert_eq!(last.recv().unwrap(), Ev::Text("still here".into()));
    let waiter = std::thread::spawn(move || last.recv_message().unwrap());
    let (code, _, stderr) = p.stop();
    assert_eq!(
        waiter.join().unwrap(),
        Ev::Close(1001, "server shutting down".into())
    );
    assert_clean(code, &stderr);
    // The session made in the handshake callback came with every callback
    // and was freed in on_close (ASan's build checks the freeing).
    assert!(
        stderr.contains(&format!("from {me} closed: 4000 done (3 messages)")),
        "{stderr}"
    );
    assert!(
        stderr.contains("closed: 1007 invalid UTF-8 in text"),
        "{stderr}"
    );
}

#[test]
fn c_echo_server_linked_statically() {
    let p = start("build/echo_server_static", &["127.0.0.1:0"]);
    drive_echo(&p);
    let (code, _, stderr) = p.stop();
    assert_clean(code, &stderr);
}

/// A sanitizer test proves nothing if the build dropped the sanitizers: each
/// `build-asan/` binary must carry ASan's and UBSan's runtime hooks.
#[test]
fn the_sanitizer_builds_are_instrumented() {
    build_examples();
    for binary in ["echo_server", "chat_ticker", "send_storm", "rooms"] {
        let path = root().join("ffi-examples/build-asan").join(binary);
        let bytes = std::fs::read(&path).unwrap();
        for hook in [&b"__asan_init"[..], b"__ubsan_handle_"] {
            assert!(
                bytes.windows(hook.len()).any(|w| w == hook),
                "{} lacks {}",
                path.display(),
                String::from_utf8_lossy(hook)
            );
        }
        let plain = std::fs::read(root().join("ffi-examples/build").join(binary)).unwrap();
        assert!(
            !plain.windows(11).any(|w| w == b"__asan_init"),
            "the plain build must not be the instrumented one"
        );
    }
}

#[test]
fn c_echo_server_under_address_sanitizer_reports_nothing() {
    let p = start("build-asan/echo_server", &["127.0.0.1:0"]);
    drive_echo(&p);
    for i in 0..20 {
        let mut c = Client::connect(p.addr()).unwrap();
        c.send_text(&format!("round {i}")).unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Text(format!("round {i}")));
        if i % 2 == 0 {
            c.close(1000, "").unwrap();
            assert_eq!(c.recv().unwrap(), Ev::Close(1000, String::new()));
        }
        // Odd rounds vanish without a close frame.
    }
    let (code, _, stderr) = p.stop();
    assert_clean(code, &stderr);
}

#[test]
fn cpp_chat_room_relays_and_its_own_thread_ticks() {
    for binary in ["build/chat_ticker", "build-asan/chat_ticker"] {
        let p = start(binary, &["127.0.0.1:0", "20"]);
        let mut a = Client::connect_with(p.addr(), "/room/1", &[], &[]).unwrap();
        let mut b = Client::connect_with(p.addr(), "/room/1", &[], &[]).unwrap();
        assert_eq!(a.recv().unwrap(), Ev::Text("welcome to /room/1".into()));
        assert_eq!(b.recv().unwrap(), Ev::Text("welcome to /room/1".into()));
        // Ticks from the C++ thread reach both, numbered in order.
        let next_tick = |c: &mut Client| match c.recv().unwrap() {
            Ev::Text(t) if t.starts_with("tick ") => t[5..].parse::<u64>().unwrap(),
            other => panic!("{other:?}"),
        };
        let t1 = next_tick(&mut a);
        let t2 = next_tick(&mut a);
        assert_eq!(t2, t1 + 1);
        next_tick(&mut b);
        // Chat: a's message reaches b, not a.
        a.send_text("hello b").unwrap();
        loop {
            match b.recv().unwrap() {
                Ev::Text(t) if t.starts_with("tick ") => continue,
                other => {
                    assert_eq!(other, Ev::Text("hello b".into()));
                    break;
                }
            }
        }
        b.send_binary(&[1, 2, 3]).unwrap();
        loop {
            match a.recv().unwrap() {
                Ev::Text(t) => assert!(
                    t.starts_with("tick "),
                    "a got its own or a foreign message: {t}"
                ),
                other => {
                    assert_eq!(other, Ev::Binary(vec![1, 2, 3]));
                    break;
                }
            }
        }
        drop((a, b));
        let (code, _, stderr) = p.stop();
        assert_clean(code, &stderr);
        assert!(stderr.contains("relayed 2 messages"), "{stderr}");
        assert!(stderr.contains(", 0 loop panics"), "{stderr}");
    }
}

/// Several C threads send to every connection while clients connect, read,
/// and leave (cleanly or abruptly). Every client checks that each message is
/// addressed to it and that each thread's sequence arrives complete, in
/// order, once.
#[test]
fn c_threads_send_to_many_connections_while_clients_come_and_go() {
    let p = start("build-asan/send_storm", &["127.0.0.1:0", "4"]);
    let addr = p.addr();
    let clients: Vec<_> = (0..8)
        .map(|k| {
            std::thread::spawn(move || {
                let mut verified = 0u64;
                let end = Instant::now() + Duration::from_secs(3);
                let mut round = 0u64;
                while Instant::now() < end {
                    round += 1;
                    let mut c = Client::connect(addr).unwrap();
                    let Ev::Text(hello) = c.recv().unwrap() else {
                        panic!("no id")
                    };
                    let me: u64 = hello.strip_prefix("id ").unwrap().parse().unwrap();
                    let mut next = [0u64; 4];
                    let stay = Duration::from_millis(50 + (k * 37 + round * 11) % 250);
                    let leave = Instant::now() + stay;
                    while Instant::now() < leave {
                        let Ev::Text(m) = c.recv().unwrap() else {
                            panic!("unexpected event")
                        };
                        let f: Vec<&str> = m.split(' ').collect();
                        assert_eq!(f.len(), 6, "{m}");
                        let (to, t, s): (u64, usize, u64) = (
                            f[1].parse().unwrap(),
                            f[3].parse().unwrap(),
                            f[5].parse().unwrap(),
                        );
                        assert_eq!(to, me, "misdirected: {m}");
                        assert_eq!(
                            s, next[t],
                            "thread {t}: lost or duplicated (got {s}, expected {})",
                            next[t]
                        );
                        next[t] += 1;
                        verified += 1;
                    }
                    if round.is_multiple_of(2) {
                        c.close(1000, "bye").unwrap();
                    }
                    // Odd rounds drop the socket with messages in flight.
                }
                verified
            })
        })
        .collect();
    let verified: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let (code, out, stderr) = p.stop();
    assert_clean(code, &stderr);
    assert!(verified > 1000, "only {verified} messages verified");
    let ok: u64 = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ok="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no totals in {out:?}"));
    assert!(ok >= verified, "sent {ok} < verified {verified}");
    assert!(out.contains("backpressure=0"), "{out}");
}

#[test]
fn cpp_wrapper_rooms_relay_within_a_room_and_a_throwing_handler_gets_1011() {
    for binary in ["build/rooms", "build-asan/rooms"] {
        let p = start(binary, &["127.0.0.1:0"]);
        let mut a = Client::connect_with(p.addr(), "/lobby", &[], &[]).unwrap();
        let mut b = Client::connect_with(p.addr(), "/lobby", &[], &[]).unwrap();
        let mut c = Client::connect_with(p.addr(), "/other", &[], &[]).unwrap();
        for (client, room) in [(&mut a, "/lobby"), (&mut b, "/lobby"), (&mut c, "/other")] {
            let me = client.stream.local_addr().unwrap();
            assert_eq!(
                client.recv_message().unwrap(),
                Ev::Text(format!("joined {room} from {me}"))
            );
        }
        a.send_text("hello lobby").unwrap();
        assert_eq!(b.recv_message().unwrap(), Ev::Text("hello lobby".into()));
        c.send_text("throw").unwrap();
        assert_eq!(
            c.recv_message().unwrap(),
            Ev::Close(1011, "handler error".into())
        );
        // The others go on; the room did not leak to /other.
        b.send_text("still here").unwrap();
        assert_eq!(a.recv_message().unwrap(), Ev::Text("still here".into()));
        drop((a, b, c));
        let (code, _, stderr) = p.stop();
        assert_clean(code, &stderr);
        assert!(
            stderr.contains("left /other: 1011 handler error"),
            "{stderr}"
        );
    }
}
