//! The C API's contracts, called from Rust as C would call them: NULL
//! handling, argument checks, free(NULL), stale ids, calls from callbacks.

mod common;

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use common::{Client, Ev};
use sockwave::ffi::*;

#[test]
fn null_pointers_and_bad_arguments_are_refused_not_crashed_on() {
    unsafe {
        sw_config_free(ptr::null_mut());
        sw_server_free(ptr::null_mut());
        assert_eq!(
            sw_config_set_threads(ptr::null_mut(), 1),
            sw_result::NullParameter
        );
        let cfg = sw_config_new();
        assert!(!cfg.is_null());
        assert_eq!(
            sw_config_set_listen(cfg, ptr::null()),
            sw_result::NullParameter
        );
        assert_eq!(
            sw_config_set_listen(cfg, c"not an address".as_ptr()),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr()),
            sw_result::Ok
        );
        assert_eq!(
            sw_config_set_backpressure(cfg, 1024, 7),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_config_set_max_message_size(cfg, 10, 10),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_config_add_subprotocol(cfg, c"a, b".as_ptr()),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_config_set_listen(cfg, [0xffu8, 0].as_ptr().cast()),
            sw_result::InvalidUtf8
        );
        assert_eq!(
            sw_config_set_deflate(cfg, 7, 15, 8, 1, 256),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_config_set_deflate(cfg, 2, 8, 8, 1, 256),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_config_set_deflate(cfg, 2, 15, 0, 1, 256),
            sw_result::InvalidArgument
        );
        assert_eq!(sw_config_set_deflate(cfg, 2, 11, 4, 6, 128), sw_result::Ok);
        assert_eq!(
            sw_config_set_deflate(cfg, sw_deflate_mode::Off as u32, 15, 8, 1, 0),
            sw_result::Ok
        );
        let mut out: *mut sw_server = ptr::null_mut();
        assert_eq!(
            sw_server_start(cfg, ptr::null(), &mut out),
            sw_result::NullParameter
        );
        assert!(out.is_null(), "outputs are written only on success");
        assert_eq!(
            sw_conn_send_text(ptr::null(), 1, c"x".as_ptr(), 1),
            sw_result::NullParameter
        );
        assert_eq!(
            sw_server_local_port(ptr::null(), ptr::null_mut()),
            sw_result::NullParameter
        );
        sw_config_free(cfg);
        assert_eq!(
            CStr::from_ptr(sw_result_str(sw_result::Backpressure as u32))
                .to_str()
                .unwrap(),
            "dropped: send buffer full (backpressure)"
        );
        assert_eq!(
            CStr::from_ptr(sw_result_str(12345)).to_str().unwrap(),
            "unknown result"
        );
        assert_eq!(
            CStr::from_ptr(sw_version()).to_str().unwrap(),
            env!("CARGO_PKG_VERSION")
        );
    }
}

static STOP_FROM_CALLBACK: AtomicI32 = AtomicI32::new(-1);
/// The message callback ran to its end (its checks passed).
static CALLBACK_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

unsafe extern "C" fn on_message(
    _ud: *mut c_void,
    server: *const sw_server,
    conn: sw_conn_id,
    _conn_data: *mut c_void,
    kind: sw_message_kind,
    data: *const u8,
    len: usize,
) {
    unsafe {
        STOP_FROM_CALLBACK.store(sw_server_stop(server) as i32, Ordering::SeqCst);
        assert_eq!(kind, sw_message_kind::Text);
        let r = sw_conn_send_text(server, conn, data.cast(), len);
        assert_eq!(r, sw_result::Ok);
        let mut amount = 0u64;
        assert_eq!(
            sw_conn_buffered_amount(server, conn, &mut amount),
            sw_result::Ok
        );
        // Not UTF-8: refused before anything is queued.
        assert_eq!(
            sw_conn_send_text(server, conn, [0xffu8].as_ptr().cast(), 1),
            sw_result::InvalidUtf8
        );
        assert_eq!(
            sw_conn_ping(server, conn, ptr::null(), 126),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_conn_subscribe(server, conn, c"long-y".as_ptr()),
            sw_result::InvalidArgument,
            "a name past the limit"
        );
        CALLBACK_DONE.store(true, Ordering::SeqCst);
    }
}

unsafe extern "C" fn on_handshake(
    _ud: *mut c_void,
    _s: *const sw_server,
    req: *const sw_request,
    up: *mut sw_upgrade,
) {
    unsafe {
        let path = sw_request_path(req);
        let path =
            std::str::from_utf8(std::slice::from_raw_parts(path.ptr.cast(), path.len)).unwrap();
        if path == "/deny" {
            assert_eq!(
                sw_upgrade_reject(up, 200, ptr::null(), 0),
                sw_result::InvalidArgument
            );
            assert_eq!(sw_upgrade_reject(up, 401, b"no".as_ptr(), 2), sw_result::Ok);
            return;
        }
        assert_eq!(sw_request_protocol_count(req), 2);
        assert_eq!(
            sw_upgrade_select_protocol(up, c"never-offered".as_ptr()),
            sw_result::InvalidArgument
        );
        assert_eq!(sw_upgrade_select_protocol(up, c"b".as_ptr()), sw_result::Ok);
        assert_eq!(
            sw_upgrade_add_header(up, c"X-Bad\r\n".as_ptr(), c"v".as_ptr()),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_upgrade_add_header(up, c"X-From-C".as_ptr(), c"yes".as_ptr()),
            sw_result::Ok
        );
        let mut name = sw_str {
            ptr: ptr::null(),
            len: 0,
        };
        let mut value = name;
        assert_eq!(
            sw_request_header_at(req, 0, &mut name, &mut value),
            sw_result::Ok
        );
        assert_eq!(
            sw_request_header_at(req, 999, &mut name, &mut value),
            sw_result::InvalidArgument
        );
        assert!(sw_request_header(req, c"host".as_ptr()).len > 0);
        assert!(sw_request_query(req).ptr.is_null());
        // The server allows one topic per connection: the second is refused
        // (and counted) when the connection opens.
        assert_eq!(sw_upgrade_subscribe(up, c"x".as_ptr()), sw_result::Ok);
        assert_eq!(sw_upgrade_subscribe(up, c"y".as_ptr()), sw_result::Ok);
        // Past the name limit (4 bytes): dropped at the open, and counted.
        assert_eq!(sw_upgrade_subscribe(up, c"long-x".as_ptr()), sw_result::Ok);
    }
}

/// Starts a server with `cfg` (freed here) and `cbs`: the server and its port.
unsafe fn start(cfg: *mut sw_config, cbs: &sw_callbacks) -> (*mut sw_server, u16) {
    unsafe {
        let mut server: *mut sw_server = ptr::null_mut();
        assert_eq!(sw_server_start(cfg, cbs, &mut server), sw_result::Ok);
        sw_config_free(cfg);
        let mut port = 0u16;
        assert_eq!(sw_server_local_port(server, &mut port), sw_result::Ok);
        (server, port)
    }
}

static ECHOED_ON_A_LOOP: AtomicI32 = AtomicI32::new(0);
static ECHOED_ELSEWHERE: AtomicI32 = AtomicI32::new(0);

unsafe extern "C" fn echo_noting_the_thread(
    _ud: *mut c_void,
    server: *const sw_server,
    conn: sw_conn_id,
    _conn_data: *mut c_void,
    _kind: sw_message_kind,
    data: *const u8,
    len: usize,
) {
    let on_loop = std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("sockwave-loop-"));
    let count = if on_loop {
        &ECHOED_ON_A_LOOP
    } else {
        &ECHOED_ELSEWHERE
    };
    count.fetch_add(1, Ordering::SeqCst);
    unsafe { sw_conn_send_binary(server, conn, data, len) };
}

/// `sw_config_set_inline_dispatch`: callbacks on the loop threads, small
/// and large messages alike echoed whole; `false` goes back to workers.
#[test]
fn inline_dispatch_runs_c_callbacks_on_the_loop() {
    for inline in [true, false] {
        ECHOED_ON_A_LOOP.store(0, Ordering::SeqCst);
        ECHOED_ELSEWHERE.store(0, Ordering::SeqCst);
        unsafe {
            let cfg = sw_config_new();
            sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
            sw_config_set_threads(cfg, 1);
            assert_eq!(sw_config_set_inline_dispatch(cfg, true), sw_result::Ok);
            assert_eq!(sw_config_set_inline_dispatch(cfg, inline), sw_result::Ok);
            assert_eq!(
                sw_config_set_inline_dispatch(ptr::null_mut(), true),
                sw_result::NullParameter
            );
            let cbs = sw_callbacks {
                userdata: ptr::null_mut(),
                on_handshake: None,
                on_open: None,
                on_message: Some(echo_noting_the_thread),
                on_close: None,
                on_drain: None,
            };
            let (server, port) = start(cfg, &cbs);
            let mut c = Client::connect(([127, 0, 0, 1], port).into()).unwrap();
            for len in [20, 4096, 4097, 100_000] {
                let data: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
                c.send_binary(&data).unwrap();
                assert_eq!(c.recv().unwrap(), Ev::Binary(data), "{len} bytes");
            }
            let (on_loop, elsewhere) = (
                ECHOED_ON_A_LOOP.load(Ordering::SeqCst),
                ECHOED_ELSEWHERE.load(Ordering::SeqCst),
            );
            if inline {
                assert_eq!((on_loop, elsewhere), (4, 0));
            } else {
                assert_eq!((on_loop, elsewhere), (0, 4));
            }
            drop(c);
            sw_server_free(server);
        }
    }
}

#[test]
fn callbacks_can_send_choose_protocols_reject_and_cannot_join_themselves() {
    unsafe {
        let cfg = sw_config_new();
        sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
        sw_config_set_threads(cfg, 1);
        sw_config_set_workers(cfg, 1);
        sw_config_set_shutdown_timeout(cfg, 300);
        assert_eq!(sw_config_set_max_subscriptions(cfg, 1), sw_result::Ok);
        assert_eq!(sw_config_set_max_topic_length(cfg, 4), sw_result::Ok);
        let cbs = sw_callbacks {
            userdata: ptr::null_mut(),
            on_handshake: Some(on_handshake),
            on_open: None,
            on_message: Some(on_message),
            on_close: None,
            on_drain: None,
        };
        let (server, port) = start(cfg, &cbs);
        let addr = ([127, 0, 0, 1], port).into();
        // A second server on the same port fails instead of taking half of it.
        let taken = sw_config_new();
        let port_addr = std::ffi::CString::new(format!("127.0.0.1:{port}")).unwrap();
        sw_config_set_listen(taken, port_addr.as_ptr());
        let mut second: *mut sw_server = ptr::null_mut();
        assert_eq!(sw_server_start(taken, &cbs, &mut second), sw_result::Io);
        assert!(second.is_null());
        sw_config_free(taken);

        let mut c = Client::connect_with(addr, "/", &["a", "b"], &[]).unwrap();
        assert_eq!(c.protocol.as_deref(), Some("b"));
        c.send_text("from C").unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Text("from C".into()));
        assert_eq!(
            STOP_FROM_CALLBACK.load(Ordering::SeqCst),
            sw_result::WrongThread as i32
        );
        // The echo can arrive before the callback's last checks ran.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !CALLBACK_DONE.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the callback never finished"
            );
            std::thread::yield_now();
        }
        assert!(Client::connect_with(addr, "/deny", &[], &[]).is_err());

        // A stale id after the connection is gone.
        let mut stats = sw_stats::default();
        assert_eq!(sw_server_stats(server, &mut stats), sw_result::Ok);
        assert_eq!(stats.connections_total, 1);
        assert_eq!(stats.handshake_failures, 1);
        // The same counters one at a time, and those sw_stats has no room for.
        let counter = |c: sw_counter| {
            let mut v = u64::MAX;
            assert_eq!(sw_server_counter(server, c as u32, &mut v), sw_result::Ok);
            v
        };
        assert_eq!(counter(sw_counter::ConnectionsTotal), 1);
        assert_eq!(counter(sw_counter::MessagesIn), stats.messages_in);
        assert_eq!(
            counter(sw_counter::HandshakeRejected),
            1,
            "the /deny client"
        );
        assert_eq!(counter(sw_counter::LoopPanics), 0);
        assert_eq!(counter(sw_counter::TlsHandshakes), 0);
        assert_eq!(
            counter(sw_counter::SubscriptionsRefused),
            3,
            "y, long-x and long-y"
        );
        let mut untouched = 7u64;
        assert_eq!(
            sw_server_counter(server, 25, &mut untouched),
            sw_result::InvalidArgument,
            "a number from a newer header"
        );
        assert_eq!(untouched, 7, "outputs are written only on success");
        assert_eq!(
            sw_server_counter(server, 0, ptr::null_mut()),
            sw_result::NullParameter
        );
        assert_eq!(
            sw_conn_send_text(server, 0xdead_0000_0000, c"x".as_ptr(), 1),
            sw_result::Closed
        );
        assert_eq!(
            sw_server_broadcast_text(server, c"all".as_ptr(), 3, SW_CONN_NONE),
            sw_result::Ok
        );
        assert_eq!(c.recv().unwrap(), Ev::Text("all".into()));
        assert_eq!(sw_server_stop(server), sw_result::Ok);
        assert_eq!(
            sw_server_stop(server),
            sw_result::Ok,
            "stopping twice is fine"
        );
        // A stopped server says so, as the header promises; its counters stay readable.
        assert_eq!(
            sw_server_broadcast_text(server, c"all".as_ptr(), 3, SW_CONN_NONE),
            sw_result::NotRunning
        );
        assert_eq!(
            sw_server_publish_binary(server, c"t".as_ptr(), ptr::null(), 0, SW_CONN_NONE),
            sw_result::NotRunning
        );
        let mut port_after = 0u16;
        assert_eq!(
            sw_server_local_port(server, &mut port_after),
            sw_result::NotRunning
        );
        // Connections are all gone: their ids are stale.
        assert_eq!(
            sw_conn_send_text(server, 0, c"x".as_ptr(), 1),
            sw_result::Closed
        );
        assert_eq!(sw_server_stats(server, &mut stats), sw_result::Ok);
        sw_server_free(server);
    }
}

#[test]
fn sibling_functions_answer_the_same_misuse_alike() {
    unsafe {
        // A NULL server with otherwise bad arguments: the server is checked first, everywhere.
        let bad_text = [0xffu8];
        let null = ptr::null::<sw_server>();
        for r in [
            sw_conn_send_text(null, 0, bad_text.as_ptr().cast(), 1),
            sw_conn_send_binary(null, 0, ptr::null(), 5),
            sw_conn_close(null, 0, 1000, bad_text.as_ptr().cast(), 1),
            sw_conn_ping(null, 0, ptr::null(), 500),
            sw_conn_subscribe(null, 0, ptr::null()),
            sw_conn_unsubscribe(null, 0, ptr::null()),
            sw_conn_buffered_amount(null, 0, ptr::null_mut()),
            sw_server_broadcast_text(null, bad_text.as_ptr().cast(), 1, SW_CONN_NONE),
            sw_server_broadcast_binary(null, ptr::null(), 5, SW_CONN_NONE),
            sw_server_publish_text(null, ptr::null(), bad_text.as_ptr().cast(), 1, SW_CONN_NONE),
            sw_server_publish_binary(null, ptr::null(), ptr::null(), 5, SW_CONN_NONE),
            sw_server_local_port(null, ptr::null_mut()),
            sw_server_stats(null, ptr::null_mut()),
            sw_server_counter(null, u32::MAX, ptr::null_mut()),
            sw_config_set_max_subscriptions(ptr::null_mut(), 1),
            sw_config_set_max_topic_length(ptr::null_mut(), 1),
            sw_server_shutdown(null),
            sw_server_stop(null),
        ] {
            assert_eq!(r, sw_result::NullParameter);
        }
    }
}

#[cfg(feature = "tls")]
unsafe extern "C" fn echo(
    _ud: *mut c_void,
    server: *const sw_server,
    conn: sw_conn_id,
    _conn_data: *mut c_void,
    kind: sw_message_kind,
    data: *const u8,
    len: usize,
) {
    unsafe {
        match kind {
            sw_message_kind::Text => sw_conn_send_text(server, conn, data.cast(), len),
            sw_message_kind::Binary => sw_conn_send_binary(server, conn, data, len),
        };
    }
}

/// wss:// from C: certificate files checked when set, with a result that
/// says which input is wrong; an echo over TLS; a hot reload.
#[cfg(feature = "tls")]
#[test]
fn tls_from_c_files_errors_echo_and_reload() {
    use std::ffi::CString;
    let make = || rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (first, second) = (make(), make());
    let dir = std::env::temp_dir().join(format!("sockwave-ffi-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        CString::new(p.to_str().unwrap()).unwrap()
    };
    let cert = path("cert.pem", &first.cert.pem());
    let key = path("key.pem", &first.key_pair.serialize_pem());
    let other_key = path("other.pem", &second.key_pair.serialize_pem());
    let junk = path("junk.pem", "junk\n");
    let missing = CString::new(dir.join("missing.pem").to_str().unwrap()).unwrap();
    unsafe {
        let cfg = sw_config_new();
        sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
        sw_config_set_shutdown_timeout(cfg, 300);
        assert_eq!(
            sw_config_set_tls_files(cfg, missing.as_ptr(), key.as_ptr()),
            sw_result::TlsCertificate
        );
        assert_eq!(
            sw_config_set_tls_files(cfg, cert.as_ptr(), junk.as_ptr()),
            sw_result::TlsKey
        );
        assert_eq!(
            sw_config_set_tls_files(cfg, cert.as_ptr(), other_key.as_ptr()),
            sw_result::TlsRejected
        );
        assert_eq!(
            CStr::from_ptr(sw_result_str(sw_result::TlsKey as u32))
                .to_str()
                .unwrap(),
            "TLS key file unreadable or without a PEM private key"
        );
        assert_eq!(
            sw_config_set_tls_files(cfg, cert.as_ptr(), key.as_ptr()),
            sw_result::Ok
        );
        let cbs = sw_callbacks {
            userdata: ptr::null_mut(),
            on_handshake: None,
            on_open: None,
            on_message: Some(echo),
            on_close: None,
            on_drain: None,
        };
        let (server, port) = start(cfg, &cbs);
        let addr = ([127, 0, 0, 1], port).into();

        let client = common::trusting(&[first.cert.der(), second.cert.der()]);
        let served = common::served_certificate;
        let mut c = Client::connect_tls(addr, client.clone(), "localhost").unwrap();
        c.send_text("from C over TLS").unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Text("from C over TLS".into()));
        assert_eq!(served(&c), first.cert.der().to_vec());

        let fresh = sw_config_new();
        let (pem, key_pem) = (second.cert.pem(), second.key_pair.serialize_pem());
        assert_eq!(
            sw_config_set_tls_pem(
                fresh,
                pem.as_ptr(),
                pem.len(),
                key_pem.as_ptr(),
                key_pem.len()
            ),
            sw_result::Ok
        );
        assert_eq!(sw_server_reload_tls(server, fresh), sw_result::Ok);
        let plain = sw_config_new();
        assert_eq!(
            sw_server_reload_tls(server, plain),
            sw_result::InvalidArgument
        );
        sw_config_free(plain);
        sw_config_free(fresh);
        let d = Client::connect_tls(addr, client, "localhost").unwrap();
        assert_eq!(
            served(&d),
            second.cert.der().to_vec(),
            "new handshakes after the reload"
        );
        c.send_text("still the first").unwrap();
        assert_eq!(c.recv().unwrap(), Ev::Text("still the first".into()));
        drop((c, d));
        sw_server_free(server);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rate_and_address_limits_from_c() {
    unsafe {
        let cfg = sw_config_new();
        sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
        assert_eq!(
            sw_config_set_rate_limit(ptr::null_mut(), 1, 1, 0),
            sw_result::NullParameter
        );
        assert_eq!(
            sw_config_set_rate_limit(cfg, 100, 0, 7),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_config_set_rate_limit(cfg, 100, 1 << 20, sw_rate_policy::Pause as u32),
            sw_result::Ok
        );
        assert_eq!(sw_config_set_ip_limits(cfg, 1, 0), sw_result::Ok);
        let cbs = sw_callbacks {
            userdata: ptr::null_mut(),
            on_handshake: None,
            on_open: None,
            on_message: None,
            on_close: None,
            on_drain: None,
        };
        let (server, port) = start(cfg, &cbs);
        let addr = ([127, 0, 0, 1], port).into();
        let mut first = Client::connect(addr).unwrap();
        assert!(Client::connect(addr).is_err(), "one connection per address");
        let mut stats = sw_stats::default();
        assert_eq!(sw_server_stats(server, &mut stats), sw_result::Ok);
        assert_eq!((stats.handshake_per_ip, stats.handshake_failures), (1, 1));
        first.close(1000, "").unwrap();
        while !matches!(first.recv().unwrap(), Ev::Close(..) | Ev::Eof) {}
        sw_server_free(server);
    }
}

/// What the callbacks of `refusals_are_told_and_nothing_happens` saw.
static HEADER_RESULTS: std::sync::Mutex<Vec<sw_result>> = std::sync::Mutex::new(Vec::new());
static CLOSE_RESULTS: std::sync::Mutex<Vec<sw_result>> = std::sync::Mutex::new(Vec::new());

unsafe extern "C" fn add_headers(
    _: *mut c_void,
    _: *const sw_server,
    _: *const sw_request,
    up: *mut sw_upgrade,
) {
    let tries: [(&CStr, &CStr); 7] = [
        (c"Content-Length", c"1"),
        (c"Sec-WebSocket-Accept", c"forged"),
        (c"connection", c"keep-alive"),
        (c"X Bad", c"1"),
        (c"X\tBad", c"1"),
        (c"X-Split", c"a\r\nX-Evil: 1"),
        (c"X-Fine", c"fine"),
    ];
    let results = tries
        .iter()
        .map(|(n, v)| unsafe { sw_upgrade_add_header(up, n.as_ptr(), v.as_ptr()) })
        .collect();
    *HEADER_RESULTS.lock().unwrap() = results;
}

unsafe extern "C" fn close_with_codes(
    _: *mut c_void,
    server: *const sw_server,
    conn: sw_conn_id,
    _conn_data: *mut c_void,
    _: sw_message_kind,
    _: *const u8,
    _: usize,
) {
    let mut results = Vec::new();
    for code in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 4001] {
        results.push(unsafe { sw_conn_close(server, conn, code, c"bye".as_ptr(), 3) });
    }
    *CLOSE_RESULTS.lock().unwrap() = results;
}

#[test]
fn refusals_are_told_and_nothing_happens() {
    unsafe {
        let cfg = sw_config_new();
        sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
        let cbs = sw_callbacks {
            userdata: ptr::null_mut(),
            on_handshake: Some(add_headers),
            on_open: None,
            on_message: Some(close_with_codes),
            on_close: None,
            on_drain: None,
        };
        let (server, port) = start(cfg, &cbs);
        let mut c = Client::connect(([127, 0, 0, 1], port).into()).unwrap();
        let refused = sw_result::InvalidArgument;
        assert_eq!(
            *HEADER_RESULTS.lock().unwrap(),
            [
                refused,
                refused,
                refused,
                refused,
                refused,
                refused,
                sw_result::Ok
            ]
        );
        c.send_text("close me").unwrap();
        // Every code that may not go on the wire is refused; the last one,
        // an application's 4001, is sent.
        assert_eq!(c.recv_message().unwrap(), Ev::Close(4001, "bye".into()));
        let mut want = vec![refused; 8];
        want.push(sw_result::Ok);
        // The close can reach us before the callback stored what it saw.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while CLOSE_RESULTS.lock().unwrap().len() < want.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "the callback never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(*CLOSE_RESULTS.lock().unwrap(), want);
        // Our client answered the close; the server then ends the socket.
        while c.recv().unwrap() != Ev::Eof {}
        sw_server_free(server);
    }
}

static PEERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn addr_text(buf: &[std::ffi::c_char], len: usize) -> String {
    let bytes: Vec<u8> = buf[..len].iter().map(|&c| c as u8).collect();
    assert_eq!(buf[len], 0, "NUL-terminated");
    String::from_utf8(bytes).unwrap()
}

unsafe extern "C" fn note_upgrade_peer(
    _: *mut c_void,
    _: *const sw_server,
    _: *const sw_request,
    up: *mut sw_upgrade,
) {
    let mut small = [0 as std::ffi::c_char; 4];
    let mut len = 0usize;
    let r = unsafe { sw_upgrade_peer_addr(up, small.as_mut_ptr(), small.len(), &mut len) };
    assert_eq!(
        r,
        sw_result::InvalidArgument,
        "too small a buffer is refused"
    );
    let mut buf = [0 as std::ffi::c_char; SW_ADDR_MAX];
    assert_eq!(
        unsafe { sw_upgrade_peer_addr(up, buf.as_mut_ptr(), buf.len(), &mut len) },
        sw_result::Ok
    );
    PEERS.lock().unwrap().push(addr_text(&buf, len));
}

unsafe extern "C" fn note_conn_peer(
    _: *mut c_void,
    server: *const sw_server,
    conn: sw_conn_id,
    _conn_data: *mut c_void,
    _: *const sw_request,
) {
    let mut buf = [0 as std::ffi::c_char; SW_ADDR_MAX];
    let mut len = 0usize;
    let r = unsafe { sw_conn_peer_addr(server, conn, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(r, sw_result::Ok);
    PEERS.lock().unwrap().push(addr_text(&buf, len));
}

#[test]
fn peer_addresses_and_the_missing_origin_switch_from_c() {
    unsafe {
        let cfg = sw_config_new();
        sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
        sw_config_add_allowed_origin(cfg, c"https://ok.example".as_ptr());
        let cbs = sw_callbacks {
            userdata: ptr::null_mut(),
            on_handshake: Some(note_upgrade_peer),
            on_open: Some(note_conn_peer),
            on_message: None,
            on_close: None,
            on_drain: None,
        };
        // Without the switch, a client that sends no Origin is refused.
        let mut strict: *mut sw_server = ptr::null_mut();
        assert_eq!(sw_server_start(cfg, &cbs, &mut strict), sw_result::Ok);
        let mut port = 0u16;
        sw_server_local_port(strict, &mut port);
        assert!(Client::connect(([127, 0, 0, 1], port).into()).is_err());
        sw_server_free(strict);

        assert_eq!(sw_config_set_allow_missing_origin(cfg, true), sw_result::Ok);
        let mut server: *mut sw_server = ptr::null_mut();
        assert_eq!(sw_server_start(cfg, &cbs, &mut server), sw_result::Ok);
        sw_config_free(cfg);
        sw_server_local_port(server, &mut port);
        PEERS.lock().unwrap().clear();
        let mut c = Client::connect(([127, 0, 0, 1], port).into()).unwrap();
        let me = c.stream.local_addr().unwrap().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while PEERS.lock().unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "on_open never ran");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(*PEERS.lock().unwrap(), [me.clone(), me]);
        c.close(1000, "").unwrap();
        while !matches!(c.recv().unwrap(), Ev::Close(..) | Ev::Eof) {}
        sw_server_free(server);
    }
}

static FIRST: AtomicI32 = AtomicI32::new(1);
static SECOND: AtomicI32 = AtomicI32::new(2);
/// (callback, the value behind its conn_data) as the callbacks saw them.
static SEEN: std::sync::Mutex<Vec<(&str, i32)>> = std::sync::Mutex::new(Vec::new());

fn value_behind(data: *mut c_void) -> i32 {
    assert!(!data.is_null());
    unsafe { &*data.cast::<AtomicI32>() }.load(Ordering::SeqCst)
}

unsafe extern "C" fn keep_first(
    _: *mut c_void,
    _: *const sw_server,
    _: *const sw_request,
    up: *mut sw_upgrade,
) {
    let data = (&FIRST as *const AtomicI32).cast_mut().cast();
    assert_eq!(unsafe { sw_upgrade_set_user_data(up, data) }, sw_result::Ok);
}

unsafe extern "C" fn open_sees(
    _: *mut c_void,
    _: *const sw_server,
    _: sw_conn_id,
    conn_data: *mut c_void,
    _: *const sw_request,
) {
    SEEN.lock().unwrap().push(("open", value_behind(conn_data)));
}

unsafe extern "C" fn message_switches(
    _: *mut c_void,
    server: *const sw_server,
    conn: sw_conn_id,
    conn_data: *mut c_void,
    _: sw_message_kind,
    _: *const u8,
    _: usize,
) {
    SEEN.lock()
        .unwrap()
        .push(("message", value_behind(conn_data)));
    let second = (&SECOND as *const AtomicI32).cast_mut().cast();
    unsafe {
        assert_eq!(sw_conn_set_user_data(server, conn, second), sw_result::Ok);
        let mut now = ptr::null_mut();
        assert_eq!(sw_conn_user_data(server, conn, &mut now), sw_result::Ok);
        assert_eq!(now, second);
        sw_conn_send_text(server, conn, c"switched".as_ptr(), 8);
    }
}

unsafe extern "C" fn close_sees(
    _: *mut c_void,
    _: *const sw_server,
    _: sw_conn_id,
    conn_data: *mut c_void,
    _: u16,
    _: sw_str,
) {
    SEEN.lock()
        .unwrap()
        .push(("close", value_behind(conn_data)));
}

#[test]
fn user_data_set_at_the_handshake_comes_with_every_callback() {
    unsafe {
        let cfg = sw_config_new();
        sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
        let cbs = sw_callbacks {
            userdata: ptr::null_mut(),
            on_handshake: Some(keep_first),
            on_open: Some(open_sees),
            on_message: Some(message_switches),
            on_close: Some(close_sees),
            on_drain: None,
        };
        let (server, port) = start(cfg, &cbs);
        let mut c = Client::connect(([127, 0, 0, 1], port).into()).unwrap();
        c.send_text("switch").unwrap();
        assert_eq!(c.recv_message().unwrap(), Ev::Text("switched".into()));
        c.close(1000, "").unwrap();
        while !matches!(c.recv().unwrap(), Ev::Close(..) | Ev::Eof) {}
        sw_server_free(server);
        assert_eq!(
            *SEEN.lock().unwrap(),
            [("open", 1), ("message", 1), ("close", 2)]
        );
    }
}

static FORWARDED_PEER: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

unsafe extern "C" fn note_forwarded_peer(
    _: *mut c_void,
    server: *const sw_server,
    conn: sw_conn_id,
    _conn_data: *mut c_void,
    _: *const sw_request,
) {
    let mut buf = [0 as std::ffi::c_char; SW_ADDR_MAX];
    let mut len = 0usize;
    let r = unsafe { sw_conn_peer_addr(server, conn, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(r, sw_result::Ok);
    *FORWARDED_PEER.lock().unwrap() = Some(addr_text(&buf, len));
}

#[test]
fn a_trusted_proxy_from_c() {
    unsafe {
        let cfg = sw_config_new();
        sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
        assert_eq!(
            sw_config_add_trusted_proxy(cfg, c"10.0.0.0/33".as_ptr()),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_config_set_proxy_header(cfg, 7),
            sw_result::InvalidArgument
        );
        assert_eq!(
            sw_config_add_trusted_proxy(cfg, c"127.0.0.1".as_ptr()),
            sw_result::Ok
        );
        assert_eq!(
            sw_config_set_proxy_header(cfg, sw_proxy_header::Forwarded as u32),
            sw_result::Ok
        );
        let cbs = sw_callbacks {
            userdata: ptr::null_mut(),
            on_handshake: None,
            on_open: Some(note_forwarded_peer),
            on_message: None,
            on_close: None,
            on_drain: None,
        };
        let (server, port) = start(cfg, &cbs);
        let addr = ([127, 0, 0, 1], port).into();
        let mut c =
            Client::connect_with(addr, "/", &[], &[("X-Forwarded-For", "198.51.100.7")]).unwrap();
        c.close(1000, "").unwrap();
        while !matches!(c.recv().unwrap(), Ev::Close(..) | Ev::Eof) {}
        sw_server_free(server);
        assert_eq!(
            FORWARDED_PEER.lock().unwrap().as_deref(),
            Some("198.51.100.7:0")
        );
    }
}

/// Messages on a relay connection must never reach `on_message`.
static RELAYED_TO_HANDLER: AtomicI32 = AtomicI32::new(0);

unsafe extern "C" fn relay_by_path(
    _: *mut c_void,
    _: *const sw_server,
    req: *const sw_request,
    up: *mut sw_upgrade,
) {
    unsafe {
        let path = sw_request_path(req);
        let bytes = std::slice::from_raw_parts(path.ptr.cast::<u8>(), path.len);
        let topic = std::ffi::CString::new(bytes).unwrap();
        assert_eq!(sw_upgrade_subscribe(up, topic.as_ptr()), sw_result::Ok);
        assert_eq!(sw_upgrade_relay(up, topic.as_ptr()), sw_result::Ok);
        assert_eq!(sw_upgrade_relay(up, ptr::null()), sw_result::NullParameter);
    }
}

unsafe extern "C" fn count_relayed(
    _: *mut c_void,
    _: *const sw_server,
    _: sw_conn_id,
    _: *mut c_void,
    _: sw_message_kind,
    _: *const u8,
    _: usize,
) {
    RELAYED_TO_HANDLER.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn a_relay_from_c_publishes_without_a_message_callback() {
    unsafe {
        let cfg = sw_config_new();
        sw_config_set_listen(cfg, c"127.0.0.1:0".as_ptr());
        let cbs = sw_callbacks {
            userdata: ptr::null_mut(),
            on_handshake: Some(relay_by_path),
            on_open: None,
            on_message: Some(count_relayed),
            on_close: None,
            on_drain: None,
        };
        let (server, port) = start(cfg, &cbs);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut a = Client::connect_with(addr, "/room", &[], &[]).unwrap();
        let mut b = Client::connect_with(addr, "/room", &[], &[]).unwrap();
        let mut other = Client::connect_with(addr, "/elsewhere", &[], &[]).unwrap();
        a.send_text("from a").unwrap();
        assert_eq!(b.recv().unwrap(), Ev::Text("from a".into()));
        b.send_text("from b").unwrap();
        assert_eq!(a.recv().unwrap(), Ev::Text("from b".into()));
        // Nothing went to the other topic, nor back to a sender: the next
        // thing each reads is what its own topic says next.
        other.send_text("alone").unwrap();
        a.send_text("again").unwrap();
        assert_eq!(b.recv().unwrap(), Ev::Text("again".into()));
        b.send_text("last").unwrap();
        assert_eq!(a.recv().unwrap(), Ev::Text("last".into()));
        // A small message is published from where it was read, a large or
        // fragmented one from a buffer of its own: all arrive whole.
        let large: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        a.send_binary(&large).unwrap();
        assert_eq!(b.recv().unwrap(), Ev::Binary(large));
        a.send_fragments(sockwave::protocol::MessageKind::Text, &[b"frag", b"ments"])
            .unwrap();
        assert_eq!(b.recv().unwrap(), Ev::Text("fragments".into()));
        assert_eq!(RELAYED_TO_HANDLER.load(Ordering::SeqCst), 0);
        drop((a, b, other));
        sw_server_free(server);
    }
}
