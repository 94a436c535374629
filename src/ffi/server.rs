//! `sw_server`: start, stop, send, broadcast; the C callbacks behind `Handler`.

use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

use super::boundary::{boundary, bytes, str_bytes, sw_result, sw_str};
use super::config::sw_config;
use super::request::{sw_request, sw_upgrade};
use crate::protocol::{MessageKind, Request};
use crate::server::{
    Conn, ConnId, Decision, DropReason, Handler, Message, SendStatus, Server, ServerHandle, Upgrade,
};

/// A connection id. Ids carry a generation: an id whose connection closed
/// never reaches a newer connection (calls report `SW_RESULT_CLOSED`).
pub type sw_conn_id = u64;

/// "No connection" (for `sw_server_broadcast_*`'s `except`).
pub const SW_CONN_NONE: sw_conn_id = u64::MAX;

/// The kind of a WebSocket message.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sw_message_kind {
    /// UTF-8 text (validated before the callback).
    Text = 1,
    /// Bytes.
    Binary = 2,
}

/// Loop thread. Decide on a valid upgrade request (Origin already checked):
/// do nothing to accept with the subprotocol the server picked, or call
/// `sw_upgrade_select_protocol`, `sw_upgrade_add_header`, `sw_upgrade_reject`.
/// Must not block: every connection of the loop waits for it.
pub type sw_handshake_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        server: *const sw_server,
        req: *const sw_request,
        upgrade: *mut sw_upgrade,
    ),
>;

/// Worker thread. The connection is open; `req` is its upgrade request.
pub type sw_open_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        server: *const sw_server,
        conn: sw_conn_id,
        req: *const sw_request,
    ),
>;

/// Worker thread. A complete message; `data` is borrowed for the call only.
pub type sw_message_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        server: *const sw_server,
        conn: sw_conn_id,
        kind: sw_message_kind,
        data: *const u8,
        len: usize,
    ),
>;

/// Worker thread. The connection closed: the peer's code (1005 if it sent
/// none), ours when we failed it (1002, 1007, 1009 ...), or 1006 when it ended
/// without a close frame. Called exactly once per opened connection, last.
pub type sw_close_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        server: *const sw_server,
        conn: sw_conn_id,
        code: u16,
        reason: sw_str,
    ),
>;

/// Worker thread. The connection's send buffer emptied after backpressure.
pub type sw_drain_cb =
    Option<unsafe extern "C" fn(userdata: *mut c_void, server: *const sw_server, conn: sw_conn_id)>;

/// The application's callbacks; any may be NULL. `userdata` is passed to each
/// and must be safe to use from several threads at once: callbacks of
/// different connections run concurrently on different workers. Callbacks
/// of one connection run one at a time, in order: open, messages, close.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct sw_callbacks {
    /// Passed first to every callback; must be safe to use from any thread.
    pub userdata: *mut c_void,
    /// See `sw_handshake_cb`; NULL accepts every valid upgrade.
    pub on_handshake: sw_handshake_cb,
    /// See `sw_open_cb`; may be NULL.
    pub on_open: sw_open_cb,
    /// See `sw_message_cb`; may be NULL.
    pub on_message: sw_message_cb,
    /// See `sw_close_cb`; may be NULL.
    pub on_close: sw_close_cb,
    /// See `sw_drain_cb`; may be NULL.
    pub on_drain: sw_drain_cb,
}

/// A running server. Every function taking a `const sw_server *` may be
/// called from any thread, including from callbacks.
#[derive(Debug)]
pub struct sw_server {
    handle: OnceLock<ServerHandle>,
}

/// Server counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct sw_stats {
    /// Connections upgraded and not yet closed.
    pub connections_open: u64,
    /// Connections upgraded since the start.
    pub connections_total: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages accepted for sending, one per recipient.
    pub messages_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes accepted for sending, per recipient.
    pub bytes_out: u64,
    /// Messages dropped for backpressure.
    pub dropped_backpressure: u64,
    /// Connections closed for backpressure.
    pub closed_backpressure: u64,
    /// Handshakes that did not end in an open connection, every reason together.
    pub handshake_failures: u64,
}

struct CHandler {
    cbs: sw_callbacks,
    server: *const sw_server,
}

// SAFETY: `server` points to a heap sw_server that outlives every thread that
// runs the handler (sw_server_free joins them first); `userdata` is declared
// thread-safe by the caller of sw_server_start (see sw_callbacks).
unsafe impl Send for CHandler {}
unsafe impl Sync for CHandler {}

impl CHandler {
    /// Callbacks see a fully started server: wait until `sw_server_start` stored the handle.
    fn server(&self) -> *const sw_server {
        // SAFETY: see the Send/Sync note above.
        unsafe { &*self.server }.handle.wait();
        self.server
    }
}

impl Handler for CHandler {
    fn on_upgrade(&self, upgrade: &Upgrade<'_>) -> Decision {
        let (request, protocol) = (upgrade.request(), upgrade.protocol());
        let Some(cb) = self.cbs.on_handshake else {
            return Decision::Accept {
                protocol: protocol.map(str::to_string),
                headers: Vec::new(),
                subscribe: Vec::new(),
            };
        };
        let view = sw_request { req: request };
        let mut up = sw_upgrade {
            protocol: None,
            headers: Vec::new(),
            reject: None,
            subscribe: Vec::new(),
            offered: request.protocols().map(str::to_string).collect(),
        };
        // SAFETY: a C function pointer the user registered; the pointers are valid for the call.
        unsafe { cb(self.cbs.userdata, self.server(), &view, &mut up) };
        match up.reject {
            Some((status, body)) => Decision::Reject {
                status,
                headers: up.headers,
                body,
            },
            None => Decision::Accept {
                protocol: up.protocol.unwrap_or_else(|| protocol.map(str::to_string)),
                headers: up.headers,
                subscribe: up.subscribe,
            },
        }
    }

    fn on_open(&self, conn: &Conn, request: &Request) {
        if let Some(cb) = self.cbs.on_open {
            let view = sw_request { req: request };
            unsafe { cb(self.cbs.userdata, self.server(), conn.id().as_u64(), &view) };
        }
    }

    fn on_message(&self, conn: &Conn, message: Message) {
        if let Some(cb) = self.cbs.on_message {
            let kind = match message.kind() {
                MessageKind::Text => sw_message_kind::Text,
                MessageKind::Binary => sw_message_kind::Binary,
            };
            let data = message.as_bytes();
            unsafe {
                cb(
                    self.cbs.userdata,
                    self.server(),
                    conn.id().as_u64(),
                    kind,
                    data.as_ptr(),
                    data.len(),
                )
            };
        }
    }

    fn on_close(&self, conn: &Conn, code: u16, reason: &str) {
        if let Some(cb) = self.cbs.on_close {
            unsafe {
                cb(
                    self.cbs.userdata,
                    self.server(),
                    conn.id().as_u64(),
                    code,
                    sw_str::from(reason),
                )
            };
        }
    }

    fn on_drain(&self, conn: &Conn) {
        if let Some(cb) = self.cbs.on_drain {
            unsafe { cb(self.cbs.userdata, self.server(), conn.id().as_u64()) };
        }
    }
}

/// Binds the listeners and starts every thread; on success `*server_out` is
/// the running server (free it with `sw_server_free`). `config` is copied and
/// `callbacks` too (the struct, not what `userdata` points to, which must
/// live until `sw_server_free` returns).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_start(
    config: *const sw_config,
    callbacks: *const sw_callbacks,
    server_out: *mut *mut sw_server,
) -> sw_result {
    boundary(|| {
        // SAFETY: checked for NULL; the caller passes valid objects.
        let (Some(config), Some(cbs)) = (unsafe { config.as_ref() }, unsafe { callbacks.as_ref() })
        else {
            return sw_result::NullParameter;
        };
        if server_out.is_null() {
            return sw_result::NullParameter;
        }
        let server = Box::into_raw(Box::new(sw_server {
            handle: OnceLock::new(),
        }));
        let handler = CHandler { cbs: *cbs, server };
        match Server::start(config.inner.clone(), handler) {
            Ok(handle) => {
                // SAFETY: `server` was just allocated above.
                let _ = unsafe { &*server }.handle.set(handle);
                unsafe { *server_out = server };
                sw_result::Ok
            }
            Err(_) => {
                // The handler was dropped with the failed start; nothing refers to `server`.
                drop(unsafe { Box::from_raw(server) });
                sw_result::Io
            }
        }
    })
}

fn handle<'a>(server: *const sw_server) -> Result<&'a ServerHandle, sw_result> {
    // SAFETY: a pointer from sw_server_start that has not been freed (the caller's promise).
    let s = unsafe { server.as_ref() }.ok_or(sw_result::NullParameter)?;
    s.handle.get().ok_or(sw_result::NotRunning)
}

fn with_handle(server: *const sw_server, f: impl FnOnce(&ServerHandle) -> sw_result) -> sw_result {
    boundary(|| match handle(server) {
        Ok(h) => f(h),
        Err(e) => e,
    })
}

/// Runs `f` on connection `conn`, or answers `SW_RESULT_CLOSED` when it is gone.
fn with_conn(
    server: *const sw_server,
    conn: sw_conn_id,
    f: impl FnOnce(&Conn) -> sw_result,
) -> sw_result {
    with_handle(server, |h| match h.conn(ConnId::from_u64(conn)) {
        Some(c) => f(&c),
        None => sw_result::Closed,
    })
}

fn on_sockwave_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("sockwave-"))
}

/// The port the server listens on (useful after listening on port 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_local_port(
    server: *const sw_server,
    port_out: *mut u16,
) -> sw_result {
    with_handle(server, |h| {
        if port_out.is_null() {
            return sw_result::NullParameter;
        }
        unsafe { *port_out = h.local_addr().port() };
        sw_result::Ok
    })
}

/// Starts a graceful shutdown and returns at once: stop accepting, close
/// every connection with 1001, wait for close handshakes up to the shutdown
/// timeout. Any thread, callbacks included.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_shutdown(server: *const sw_server) -> sw_result {
    with_handle(server, |h| {
        h.shutdown();
        sw_result::Ok
    })
}

/// Shuts down (as `sw_server_shutdown`) and waits until every thread has
/// exited; no callback runs after it returns. From a callback it returns
/// `SW_RESULT_WRONG_THREAD` (use `sw_server_shutdown` there).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_stop(server: *const sw_server) -> sw_result {
    with_handle(server, |h| {
        if on_sockwave_thread() {
            return sw_result::WrongThread;
        }
        h.shutdown_and_join();
        sw_result::Ok
    })
}

/// Stops the server if it runs and frees it. NULL does nothing. Never from a
/// callback: there it only starts the shutdown, and the server is not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_free(server: *mut sw_server) {
    boundary(|| {
        if server.is_null() {
            return;
        }
        if on_sockwave_thread() {
            if let Ok(h) = handle(server) {
                h.shutdown();
            }
            return;
        }
        if let Ok(h) = handle(server) {
            h.shutdown_and_join();
        }
        // SAFETY: from sw_server_start, freed once; every thread that could use it has exited.
        drop(unsafe { Box::from_raw(server) });
    })
}

fn status(s: SendStatus) -> sw_result {
    match s {
        SendStatus::Buffered(_) => sw_result::Ok,
        SendStatus::Dropped(DropReason::Closed) => sw_result::Closed,
        SendStatus::Dropped(DropReason::Backpressure) => sw_result::Backpressure,
    }
}

/// Sends a text message (`len` bytes of UTF-8, copied). `SW_RESULT_OK` means
/// accepted and queued in order; `SW_RESULT_CLOSED` or
/// `SW_RESULT_BACKPRESSURE` mean dropped.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_send_text(
    server: *const sw_server,
    conn: sw_conn_id,
    text: *const c_char,
    len: usize,
) -> sw_result {
    with_handle(server, |h| match unsafe { str_bytes(text, len) } {
        Ok(t) => status(h.send(ConnId::from_u64(conn), MessageKind::Text, t.as_bytes())),
        Err(e) => e,
    })
}

/// Sends a binary message (`len` bytes, copied). Results as `sw_conn_send_text`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_send_binary(
    server: *const sw_server,
    conn: sw_conn_id,
    data: *const u8,
    len: usize,
) -> sw_result {
    with_handle(server, |h| match unsafe { bytes(data, len) } {
        Ok(d) => status(h.send(ConnId::from_u64(conn), MessageKind::Binary, d)),
        Err(e) => e,
    })
}

/// Sends a ping with up to 125 bytes of payload.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_ping(
    server: *const sw_server,
    conn: sw_conn_id,
    data: *const u8,
    len: usize,
) -> sw_result {
    if len > 125 {
        return sw_result::InvalidArgument;
    }
    match unsafe { bytes(data, len) } {
        Ok(d) => with_conn(server, conn, |c| status(c.ping(d))),
        Err(e) => e,
    }
}

/// Starts the closing handshake with `code` and a UTF-8 `reason` (up to 123
/// bytes are sent). `SW_RESULT_CLOSED` if it is already closing or gone.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_close(
    server: *const sw_server,
    conn: sw_conn_id,
    code: u16,
    reason: *const c_char,
    reason_len: usize,
) -> sw_result {
    match unsafe { str_bytes(reason, reason_len) } {
        Ok(r) => with_conn(server, conn, |c| {
            if !c.is_open() {
                return sw_result::Closed;
            }
            c.close(code, r);
            sw_result::Ok
        }),
        Err(e) => e,
    }
}

/// Bytes accepted for sending to `conn` that the kernel has not taken yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_buffered_amount(
    server: *const sw_server,
    conn: sw_conn_id,
    amount_out: *mut u64,
) -> sw_result {
    if amount_out.is_null() {
        return sw_result::NullParameter;
    }
    with_conn(server, conn, |c| {
        unsafe { *amount_out = c.buffered_amount() as u64 };
        sw_result::Ok
    })
}

fn broadcast(
    server: *const sw_server,
    kind: MessageKind,
    data: &[u8],
    except: sw_conn_id,
) -> sw_result {
    with_handle(server, |h| {
        let except = (except != SW_CONN_NONE).then(|| ConnId::from_u64(except));
        h.broadcast_except(kind, data, except);
        sw_result::Ok
    })
}

/// Sends a text message to every open connection but `except`
/// (`SW_CONN_NONE` for everyone). The frame is built once for all.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_broadcast_text(
    server: *const sw_server,
    text: *const c_char,
    len: usize,
    except: sw_conn_id,
) -> sw_result {
    match unsafe { str_bytes(text, len) } {
        Ok(t) => broadcast(server, MessageKind::Text, t.as_bytes(), except),
        Err(e) => e,
    }
}

/// Sends a binary message to every open connection but `except`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_broadcast_binary(
    server: *const sw_server,
    data: *const u8,
    len: usize,
    except: sw_conn_id,
) -> sw_result {
    match unsafe { bytes(data, len) } {
        Ok(d) => broadcast(server, MessageKind::Binary, d, except),
        Err(e) => e,
    }
}

/// Copies the server's counters into `*stats_out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_stats(
    server: *const sw_server,
    stats_out: *mut sw_stats,
) -> sw_result {
    with_handle(server, |h| {
        if stats_out.is_null() {
            return sw_result::NullParameter;
        }
        let s = h.stats();
        let out = sw_stats {
            connections_open: s.connections_open,
            connections_total: s.connections_total,
            messages_in: s.messages_in,
            messages_out: s.messages_out,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            dropped_backpressure: s.dropped_backpressure,
            closed_backpressure: s.closed_backpressure,
            handshake_failures: s.handshake_invalid
                + s.handshake_origin
                + s.handshake_capacity
                + s.handshake_rejected
                + s.handshake_timeout,
        };
        unsafe { *stats_out = out };
        sw_result::Ok
    })
}

/// Subscribes `conn` to `topic` (a NUL-terminated UTF-8 string). Ordered with
/// the connection's sends: a publish after this call reaches it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_subscribe(
    server: *const sw_server,
    conn: sw_conn_id,
    topic: *const c_char,
) -> sw_result {
    match unsafe { super::boundary::c_str(topic) } {
        Ok(t) => with_conn(server, conn, |c| {
            c.subscribe(t);
            sw_result::Ok
        }),
        Err(e) => e,
    }
}

/// Removes `conn`'s subscription to `topic`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_unsubscribe(
    server: *const sw_server,
    conn: sw_conn_id,
    topic: *const c_char,
) -> sw_result {
    match unsafe { super::boundary::c_str(topic) } {
        Ok(t) => with_conn(server, conn, |c| {
            c.unsubscribe(t);
            sw_result::Ok
        }),
        Err(e) => e,
    }
}

fn publish(
    server: *const sw_server,
    topic: *const c_char,
    kind: MessageKind,
    data: &[u8],
    except: sw_conn_id,
) -> sw_result {
    with_handle(server, |h| match unsafe { super::boundary::c_str(topic) } {
        Ok(t) => {
            let except = (except != SW_CONN_NONE).then(|| ConnId::from_u64(except));
            h.publish(t, kind, data, except);
            sw_result::Ok
        }
        Err(e) => e,
    })
}

/// Sends a text message to every subscriber of `topic` (on every thread) but
/// `except` (`SW_CONN_NONE` for all). The frame is built once for all.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_publish_text(
    server: *const sw_server,
    topic: *const c_char,
    text: *const c_char,
    len: usize,
    except: sw_conn_id,
) -> sw_result {
    match unsafe { str_bytes(text, len) } {
        Ok(t) => publish(server, topic, MessageKind::Text, t.as_bytes(), except),
        Err(e) => e,
    }
}

/// Sends a binary message to every subscriber of `topic` but `except`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_publish_binary(
    server: *const sw_server,
    topic: *const c_char,
    data: *const u8,
    len: usize,
    except: sw_conn_id,
) -> sw_result {
    match unsafe { bytes(data, len) } {
        Ok(d) => publish(server, topic, MessageKind::Binary, d, except),
        Err(e) => e,
    }
}
