//! `sw_conn_*`: one connection, by id, from any thread.

use std::ffi::{c_char, c_void};

use super::boundary::{bytes, c_str, call, str_bytes, sw_result};
use super::callbacks::{conn_data, CUserData};
use super::request::write_addr;
use super::server::{started, sw_server};
use crate::protocol::close::is_valid_wire_code;
use crate::server::{Conn, ConnId, DropReason, MessageKind, SendStatus, SubscriptionRefused};

/// A connection id. Ids carry a generation: an id whose connection closed
/// never reaches a newer connection (calls report `SW_RESULT_CLOSED`).
pub type sw_conn_id = u64;

/// "No connection" (for `sw_server_broadcast_*`'s `except`).
pub const SW_CONN_NONE: sw_conn_id = u64::MAX;

/// `except` as an optional id.
pub(crate) fn except(id: sw_conn_id) -> Option<ConnId> {
    (id != SW_CONN_NONE).then(|| ConnId::from_u64(id))
}

/// The open connection `conn` (during a shutdown too, while it closes).
fn conn_of(server: *const sw_server, conn: sw_conn_id) -> Result<Conn, sw_result> {
    started(server)?
        .conn(ConnId::from_u64(conn))
        .ok_or(sw_result::Closed)
}

/// A subscribe or unsubscribe that did nothing, as C hears of it.
fn refused(why: SubscriptionRefused) -> sw_result {
    match why {
        SubscriptionRefused::NameTooLong => sw_result::InvalidArgument,
        SubscriptionRefused::QueueFull => sw_result::Backpressure,
    }
}

fn sent(s: SendStatus) -> Result<(), sw_result> {
    match s {
        SendStatus::Buffered(_) => Ok(()),
        SendStatus::Dropped(DropReason::Closed) => Err(sw_result::Closed),
        SendStatus::Dropped(DropReason::Backpressure) => Err(sw_result::Backpressure),
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
    call(|| {
        let h = started(server)?;
        let text = unsafe { str_bytes(text, len) }?;
        sent(h.send(ConnId::from_u64(conn), MessageKind::Text, text.as_bytes()))
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
    call(|| {
        let h = started(server)?;
        let data = unsafe { bytes(data, len) }?;
        sent(h.send(ConnId::from_u64(conn), MessageKind::Binary, data))
    })
}

/// Sends a ping with up to 125 bytes of payload; more is
/// `SW_RESULT_INVALID_ARGUMENT` (as `Conn::ping` in Rust refuses it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_ping(
    server: *const sw_server,
    conn: sw_conn_id,
    data: *const u8,
    len: usize,
) -> sw_result {
    call(|| {
        started(server)?;
        if len > 125 {
            return Err(sw_result::InvalidArgument);
        }
        let data = unsafe { bytes(data, len) }?;
        let c = conn_of(server, conn)?;
        sent(c.ping(data).map_err(|_| sw_result::InvalidArgument)?)
    })
}

/// Starts the closing handshake with `code` and a UTF-8 `reason` (up to 123
/// bytes are sent). `code` must be one an endpoint may send (RFC 6455 7.4):
/// 1000-1003, 1007-1014, or 3000-4999; any other (0, 999, 1004, 1005,
/// 1006, 1015, 2999, 5000 ...) is `SW_RESULT_INVALID_ARGUMENT` and nothing
/// happens. `SW_RESULT_CLOSED` if it is already closing or gone.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_close(
    server: *const sw_server,
    conn: sw_conn_id,
    code: u16,
    reason: *const c_char,
    reason_len: usize,
) -> sw_result {
    call(|| {
        started(server)?;
        let reason = unsafe { str_bytes(reason, reason_len) }?;
        if !is_valid_wire_code(code) {
            return Err(sw_result::InvalidArgument);
        }
        let c = conn_of(server, conn)?;
        if !c.is_open() {
            return Err(sw_result::Closed);
        }
        c.close(code, reason);
        Ok(())
    })
}

/// The address of `conn`'s client (as its socket reported it at the
/// upgrade), into `buf` of `cap` bytes (`SW_ADDR_MAX` is always enough), as
/// `sw_upgrade_peer_addr` writes it. `SW_RESULT_CLOSED` for a stale id.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_peer_addr(
    server: *const sw_server,
    conn: sw_conn_id,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> sw_result {
    call(|| {
        started(server)?;
        let c = conn_of(server, conn)?;
        write_addr(c.peer_addr(), buf, cap, len_out)
    })
}

/// Keeps `data` with `conn` (replacing what was kept): it is passed as
/// `conn_data` to the connection's later callbacks. Any thread. The server
/// never touches what it points to; free it in `on_close`, after which the
/// server forgets it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_set_user_data(
    server: *const sw_server,
    conn: sw_conn_id,
    data: *mut c_void,
) -> sw_result {
    call(|| {
        started(server)?;
        conn_of(server, conn)?.set_data(CUserData(data));
        Ok(())
    })
}

/// What is kept with `conn` (NULL if nothing), into `*data_out`.
/// `SW_RESULT_CLOSED` for a stale id (after `on_close`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_user_data(
    server: *const sw_server,
    conn: sw_conn_id,
    data_out: *mut *mut c_void,
) -> sw_result {
    call(|| {
        started(server)?;
        if data_out.is_null() {
            return Err(sw_result::NullParameter);
        }
        let data = conn_data(&conn_of(server, conn)?);
        // SAFETY: checked for NULL; the caller's pointer to one pointer.
        unsafe { *data_out = data };
        Ok(())
    })
}

/// Bytes accepted for sending to `conn` that the kernel has not taken yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_buffered_amount(
    server: *const sw_server,
    conn: sw_conn_id,
    amount_out: *mut u64,
) -> sw_result {
    call(|| {
        started(server)?;
        if amount_out.is_null() {
            return Err(sw_result::NullParameter);
        }
        let c = conn_of(server, conn)?;
        unsafe { *amount_out = c.buffered_amount() as u64 };
        Ok(())
    })
}

/// Subscribes `conn` to `topic` (a NUL-terminated UTF-8 string). Ordered with
/// the connection's sends: a publish after this call reaches it.
/// `SW_RESULT_BACKPRESSURE` (nothing done) when 1,024 subscribes and
/// unsubscribes of `conn` are already waiting for its event loop;
/// `SW_RESULT_INVALID_ARGUMENT` (nothing done, counted in
/// `SW_COUNTER_SUBSCRIPTIONS_REFUSED`) for a name longer than
/// `sw_config_set_max_topic_length` allows. A connection already in as many
/// topics as `sw_config_set_max_subscriptions` allows is not subscribed: its
/// loop drops the subscription and counts it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_subscribe(
    server: *const sw_server,
    conn: sw_conn_id,
    topic: *const c_char,
) -> sw_result {
    call(|| {
        started(server)?;
        let topic = unsafe { c_str(topic) }?;
        conn_of(server, conn)?
            .subscription(topic, true)
            .map_err(refused)
    })
}

/// Removes `conn`'s subscription to `topic`; `SW_RESULT_BACKPRESSURE` and
/// `SW_RESULT_INVALID_ARGUMENT` as `sw_conn_subscribe` (the latter not
/// counted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_conn_unsubscribe(
    server: *const sw_server,
    conn: sw_conn_id,
    topic: *const c_char,
) -> sw_result {
    call(|| {
        started(server)?;
        let topic = unsafe { c_str(topic) }?;
        conn_of(server, conn)?
            .subscription(topic, false)
            .map_err(refused)
    })
}
