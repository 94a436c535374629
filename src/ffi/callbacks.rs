//! `sw_callbacks`: the application's C callbacks, and the [`Handler`] that
//! calls them.

use std::ffi::c_void;

use super::boundary::sw_str;
use super::conn::sw_conn_id;
use super::request::{sw_request, sw_upgrade};
use super::server::sw_server;
use crate::server::{Conn, Decision, Handler, Message, MessageKind, Request, Upgrade};

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
/// `conn_data` (in every connection callback) is what the application kept
/// with the connection (`sw_upgrade_set_user_data`, `sw_conn_set_user_data`),
/// or NULL.
pub type sw_open_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        server: *const sw_server,
        conn: sw_conn_id,
        conn_data: *mut c_void,
        req: *const sw_request,
    ),
>;

/// Worker thread. A complete message; `data` is borrowed for the call only.
pub type sw_message_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        server: *const sw_server,
        conn: sw_conn_id,
        conn_data: *mut c_void,
        kind: sw_message_kind,
        data: *const u8,
        len: usize,
    ),
>;

/// Worker thread. The connection closed: the peer's code (1005 if it sent
/// none), ours when we failed it (1002, 1007, 1009 ...), ours when we
/// started the close and the peer never answered (1008 for backpressure or
/// a rate limit, 1001 for the idle timeout or a shutdown, the code given to
/// `sw_conn_close`), or 1006 when it ended without a close frame (a network
/// drop). Called exactly once per opened connection, last: free
/// `conn_data` here if the application owns it; the server forgets it once
/// this returns and never hands it out again.
pub type sw_close_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        server: *const sw_server,
        conn: sw_conn_id,
        conn_data: *mut c_void,
        code: u16,
        reason: sw_str,
    ),
>;

/// Worker thread. The connection's send buffer emptied after backpressure.
pub type sw_drain_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        server: *const sw_server,
        conn: sw_conn_id,
        conn_data: *mut c_void,
    ),
>;

/// The application's pointer kept with a connection. The server never
/// touches what it points to; it only hands it back.
#[derive(Debug)]
pub(crate) struct CUserData(pub(crate) *mut c_void);

// SAFETY: an opaque pointer the server only stores and returns; what it
// points to is the application's, used by the application's own callbacks
// (which the header requires to be callable from any thread).
unsafe impl Send for CUserData {}
unsafe impl Sync for CUserData {}

/// What the application kept with `conn`, or NULL.
pub(crate) fn conn_data(conn: &Conn) -> *mut c_void {
    conn.data::<CUserData>()
        .map_or(std::ptr::null_mut(), |d| d.0)
}

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

pub(crate) struct CHandler {
    pub(crate) cbs: sw_callbacks,
    pub(crate) server: *const sw_server,
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
        unsafe { &*self.server }.wait_started();
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
                relay: None,
            };
        };
        let view = sw_request { req: request };
        let mut up = sw_upgrade {
            protocol: None,
            headers: Vec::new(),
            reject: None,
            subscribe: Vec::new(),
            relay: None,
            offered: request.protocols().map(str::to_string).collect(),
            peer: upgrade.peer_addr(),
            user_data: None,
        };
        // SAFETY: a C function pointer the user registered; the pointers are valid for the call.
        unsafe { cb(self.cbs.userdata, self.server(), &view, &mut up) };
        if let Some(data) = up.user_data.take() {
            upgrade.set_data(CUserData(data));
        }
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
                relay: up.relay,
            },
        }
    }

    fn on_open(&self, conn: &Conn, request: &Request) {
        if let Some(cb) = self.cbs.on_open {
            let view = sw_request { req: request };
            unsafe {
                cb(
                    self.cbs.userdata,
                    self.server(),
                    conn.id().as_u64(),
                    conn_data(conn),
                    &view,
                )
            };
        }
    }

    fn on_message(&self, conn: &Conn, message: Message) {
        self.on_message_lent(conn, message.kind(), message.as_bytes());
    }

    // C has the message for the call only (see `sw_message_cb`), so
    // it never needs a copy of its own.
    fn on_message_lent(&self, conn: &Conn, kind: MessageKind, data: &[u8]) {
        if let Some(cb) = self.cbs.on_message {
            let kind = match kind {
                MessageKind::Text => sw_message_kind::Text,
                MessageKind::Binary => sw_message_kind::Binary,
            };
            unsafe {
                cb(
                    self.cbs.userdata,
                    self.server(),
                    conn.id().as_u64(),
                    conn_data(conn),
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
                    conn_data(conn),
                    code,
                    sw_str::from(reason),
                )
            };
        }
        // The application freed it in on_close (or owns it elsewhere): it
        // is never handed out again.
        conn.clear_data();
    }

    fn on_drain(&self, conn: &Conn) {
        if let Some(cb) = self.cbs.on_drain {
            unsafe {
                cb(
                    self.cbs.userdata,
                    self.server(),
                    conn.id().as_u64(),
                    conn_data(conn),
                )
            };
        }
    }
}
