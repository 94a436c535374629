//! `sw_request` (a borrowed view of an upgrade request) and `sw_upgrade`
//! (the handshake callback's answer).

use std::ffi::{c_char, c_void};

use super::boundary::{boundary, bytes, c_str, sw_result, sw_str};
use crate::protocol::{check_extra_header, Request};

/// An HTTP upgrade request, borrowed for the duration of a callback.
#[derive(Debug)]
pub struct sw_request {
    pub(crate) req: *const Request,
}

impl sw_request {
    fn get<'a>(req: *const sw_request) -> Option<&'a Request> {
        // SAFETY: the pointer is the one sockwave passed into the running
        // callback, whose `req` outlives the call.
        unsafe { req.as_ref().and_then(|r| r.req.as_ref()) }
    }
}

fn view(req: *const sw_request, f: impl FnOnce(&Request) -> Option<&str>) -> sw_str {
    boundary(|| {
        sw_request::get(req)
            .and_then(f)
            .map_or(sw_str::NONE, sw_str::from)
    })
}

/// The request path, without the query (e.g. "/chat/lobby").
#[unsafe(no_mangle)]
pub extern "C" fn sw_request_path(req: *const sw_request) -> sw_str {
    view(req, |r| Some(r.path()))
}

/// The query string after '?'; `ptr` is NULL when there is none.
#[unsafe(no_mangle)]
pub extern "C" fn sw_request_query(req: *const sw_request) -> sw_str {
    view(req, |r| r.query())
}

/// The `Origin` header; `ptr` is NULL when absent.
#[unsafe(no_mangle)]
pub extern "C" fn sw_request_origin(req: *const sw_request) -> sw_str {
    view(req, |r| r.origin())
}

/// The first header called `name` (case-insensitive); `ptr` is NULL when
/// absent or not UTF-8.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_request_header(req: *const sw_request, name: *const c_char) -> sw_str {
    view(req, |r| r.header(unsafe { c_str(name) }.ok()?))
}

/// How many header lines the request has.
#[unsafe(no_mangle)]
pub extern "C" fn sw_request_header_count(req: *const sw_request) -> usize {
    boundary(|| sw_request::get(req).map_or(0, |r| r.headers().count()))
}

/// Header number `index` (0-based, in order of arrival).
/// `SW_RESULT_INVALID_ARGUMENT` past the end, `SW_RESULT_INVALID_UTF8` for a
/// value that is not UTF-8.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_request_header_at(
    req: *const sw_request,
    index: usize,
    name_out: *mut sw_str,
    value_out: *mut sw_str,
) -> sw_result {
    boundary(|| {
        let Some(r) = sw_request::get(req) else {
            return sw_result::NullParameter;
        };
        if name_out.is_null() || value_out.is_null() {
            return sw_result::NullParameter;
        }
        let Some((name, value)) = r.headers().nth(index) else {
            return sw_result::InvalidArgument;
        };
        let Ok(value) = std::str::from_utf8(value) else {
            return sw_result::InvalidUtf8;
        };
        // SAFETY: both checked non-NULL; the caller owns the storage.
        unsafe {
            *name_out = sw_str::from(name);
            *value_out = sw_str::from(value);
        }
        sw_result::Ok
    })
}

/// How many subprotocols the client offered.
#[unsafe(no_mangle)]
pub extern "C" fn sw_request_protocol_count(req: *const sw_request) -> usize {
    boundary(|| sw_request::get(req).map_or(0, |r| r.protocols().count()))
}

/// Offered subprotocol number `index`, in the client's order of preference;
/// `ptr` is NULL past the end.
#[unsafe(no_mangle)]
pub extern "C" fn sw_request_protocol_at(req: *const sw_request, index: usize) -> sw_str {
    view(req, |r| r.protocols().nth(index))
}

/// The handshake callback's answer. Untouched, it accepts with the
/// subprotocol the server picked from its configured list.
#[derive(Debug)]
pub struct sw_upgrade {
    pub(crate) protocol: Option<Option<String>>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) reject: Option<(u16, Vec<u8>)>,
    pub(crate) subscribe: Vec<String>,
    pub(crate) relay: Option<String>,
    pub(crate) offered: Vec<String>,
    pub(crate) peer: Option<std::net::SocketAddr>,
    pub(crate) user_data: Option<*mut c_void>,
}

/// Keeps `data` with the connection if the upgrade goes through: it is
/// passed as `conn_data` to every later callback of the connection, and
/// `sw_conn_user_data` returns it. If the upgrade is refused (or the client
/// leaves first), no callback of that connection runs: free `data` then
/// only if your own bookkeeping says it was not handed on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_upgrade_set_user_data(
    up: *mut sw_upgrade,
    data: *mut c_void,
) -> sw_result {
    with_upgrade(up, |u| {
        u.user_data = Some(data);
        sw_result::Ok
    })
}

/// Room for any address `sw_upgrade_peer_addr` and `sw_conn_peer_addr`
/// write, with its NUL ("[IPv6%scope]:port" at the longest).
pub const SW_ADDR_MAX: usize = 64;

/// Writes `addr` as `1.2.3.4:5678` or `[::1]:5678`, NUL-terminated, into
/// `buf` (`cap` bytes); `*len_out` gets its length without the NUL.
pub(crate) fn write_addr(
    addr: Option<std::net::SocketAddr>,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> Result<(), sw_result> {
    if buf.is_null() || len_out.is_null() {
        return Err(sw_result::NullParameter);
    }
    let text = addr.ok_or(sw_result::Io)?.to_string();
    if text.len() >= cap {
        return Err(sw_result::InvalidArgument);
    }
    // SAFETY: checked for NULL; the caller's buffer holds `cap` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
        *len_out = text.len();
    }
    Ok(())
}

/// The client's address (as the socket reports it) during the handshake
/// callback, into `buf` of `cap` bytes (`SW_ADDR_MAX` is always enough):
/// `1.2.3.4:5678` or `[::1]:5678`, NUL-terminated, its length in
/// `*len_out`. `SW_RESULT_INVALID_ARGUMENT` if `cap` is too small.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_upgrade_peer_addr(
    up: *const sw_upgrade,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> sw_result {
    boundary(|| {
        // SAFETY: the pointer sockwave passed into the running handshake callback.
        let Some(u) = (unsafe { up.as_ref() }) else {
            return sw_result::NullParameter;
        };
        match write_addr(u.peer, buf, cap, len_out) {
            Ok(()) => sw_result::Ok,
            Err(e) => e,
        }
    })
}

fn with_upgrade(up: *mut sw_upgrade, f: impl FnOnce(&mut sw_upgrade) -> sw_result) -> sw_result {
    boundary(|| {
        // SAFETY: the pointer sockwave passed into the running handshake callback.
        match unsafe { up.as_mut() } {
            Some(u) => f(u),
            None => sw_result::NullParameter,
        }
    })
}

/// Accepts with `protocol` as the subprotocol (it must be one the client
/// offered), or with none when `protocol` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_upgrade_select_protocol(
    up: *mut sw_upgrade,
    protocol: *const c_char,
) -> sw_result {
    with_upgrade(up, |u| {
        if protocol.is_null() {
            u.protocol = Some(None);
            return sw_result::Ok;
        }
        match unsafe { c_str(protocol) } {
            Ok(p) if u.offered.iter().any(|o| o == p) => {
                u.protocol = Some(Some(p.to_string()));
                sw_result::Ok
            }
            Ok(_) => sw_result::InvalidArgument,
            Err(e) => e,
        }
    })
}

/// Adds a header to the response (the 101, or the rejection).
/// `SW_RESULT_INVALID_ARGUMENT` (nothing added) for a name that is not an
/// HTTP token (empty, a space, a tab, a colon, a control character ...), a
/// value with a control character (CR, LF, NUL ...), or a header the server
/// writes itself: `Content-Length`, `Transfer-Encoding`, `Connection`,
/// `Upgrade`, any `Sec-WebSocket-*` (the subprotocol is chosen with
/// `sw_upgrade_select_protocol`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_upgrade_add_header(
    up: *mut sw_upgrade,
    name: *const c_char,
    value: *const c_char,
) -> sw_result {
    with_upgrade(up, |u| {
        let (n, v) = match unsafe { (c_str(name), c_str(value)) } {
            (Ok(n), Ok(v)) => (n, v),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        if check_extra_header(n, v).is_err() {
            return sw_result::InvalidArgument;
        }
        u.headers.push((n.to_string(), v.to_string()));
        sw_result::Ok
    })
}

/// Refuses the upgrade with HTTP `status` (400-599) and `body` (copied).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_upgrade_reject(
    up: *mut sw_upgrade,
    status: u16,
    body: *const u8,
    body_len: usize,
) -> sw_result {
    with_upgrade(up, |u| {
        if !(400..=599).contains(&status) {
            return sw_result::InvalidArgument;
        }
        match unsafe { bytes(body, body_len) } {
            Ok(b) => {
                u.reject = Some((status, b.to_vec()));
                sw_result::Ok
            }
            Err(e) => e,
        }
    })
}

/// Subscribes the new connection to `topic` before the 101 goes out, so no
/// `sw_server_publish_*` after the client sees the connection open misses it
/// (within `sw_config_set_max_subscriptions` and
/// `sw_config_set_max_topic_length`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_upgrade_subscribe(
    up: *mut sw_upgrade,
    topic: *const c_char,
) -> sw_result {
    with_upgrade(up, |u| match unsafe { c_str(topic) } {
        Ok(t) => {
            u.subscribe.push(t.to_string());
            sw_result::Ok
        }
        Err(e) => e,
    })
}

/// Makes the new connection a relay: every message it sends is published to
/// `topic` (never back to it) by its event loop, and `on_message` is not
/// called for it. Pub/sub without a callback per message; `on_open`,
/// `on_close` and `on_drain` still come. Called again, the last topic wins.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_upgrade_relay(up: *mut sw_upgrade, topic: *const c_char) -> sw_result {
    with_upgrade(up, |u| match unsafe { c_str(topic) } {
        Ok(t) => {
            u.relay = Some(t.to_string());
            sw_result::Ok
        }
        Err(e) => e,
    })
}
