//! `sw_server`: start, stop, free; broadcast, publish, stats.

use std::ffi::c_char;
use std::sync::OnceLock;

use super::boundary::{boundary, bytes, c_str, call, str_bytes, sw_result};
use super::callbacks::{sw_callbacks, CHandler};
use super::config::sw_config;
use super::conn::{except, sw_conn_id};
use crate::server::{MessageKind, Server, ServerHandle};

/// A running server. Every function taking a `const sw_server *` may be
/// called from any thread, including from callbacks.
#[derive(Debug)]
pub struct sw_server {
    handle: OnceLock<ServerHandle>,
}

/// Server counters. Its size is fixed (programs allocate it): counters added
/// since are read one at a time with `sw_server_counter`.
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
    /// Callbacks that panicked (a Rust panic unwinding out of a callback
    /// cannot happen from C; counted for parity with the Rust API).
    pub handler_panics: u64,
    /// Broadcasts and publishes an event loop refused (see
    /// `sw_server_broadcast_text`).
    pub dropped_fanout: u64,
    /// Connections closed (1008) for sending faster than their rate limit.
    pub rate_limit_closed: u64,
    /// Times a connection was not read for a while for sending faster than
    /// its rate limit (`SW_RATE_POLICY_PAUSE`).
    pub rate_limit_paused: u64,
    /// Connections closed before their upgrade because their address had
    /// too many open or opened too many lately (also in `handshake_failures`).
    pub handshake_per_ip: u64,
}

impl sw_server {
    /// Blocks until `sw_server_start` has stored the handle (callbacks can
    /// run before it returns).
    pub(crate) fn wait_started(&self) -> &ServerHandle {
        self.handle.wait()
    }
}

/// Binds the listeners and starts every thread; on success `*server_out` is
/// the running server (free it with `sw_server_free`). The address must be
/// free: while another server (sockwave or not) listens there, this returns
/// `SW_RESULT_IO` rather than sharing the port with it. `config` is copied and
/// `callbacks` too (the struct, not what `userdata` points to, which must
/// live until `sw_server_free` returns).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_start(
    config: *const sw_config,
    callbacks: *const sw_callbacks,
    server_out: *mut *mut sw_server,
) -> sw_result {
    call(|| {
        // SAFETY: checked for NULL; the caller passes valid objects.
        let config = unsafe { config.as_ref() }.ok_or(sw_result::NullParameter)?;
        let cbs = unsafe { callbacks.as_ref() }.ok_or(sw_result::NullParameter)?;
        if server_out.is_null() {
            return Err(sw_result::NullParameter);
        }
        #[allow(unused_mut)]
        let mut inner = config.inner.clone();
        #[cfg(feature = "redis")]
        if let Some(redis) = &config.redis {
            let broker = crate::broker::RedisBroker::new(redis.clone())
                .map_err(|_| sw_result::InvalidArgument)?;
            inner.broker = Some(broker);
        }
        let server = Box::into_raw(Box::new(sw_server {
            handle: OnceLock::new(),
        }));
        let handler = CHandler { cbs: *cbs, server };
        match Server::start(inner, handler) {
            Ok(handle) => {
                // SAFETY: `server` was just allocated above.
                let _ = unsafe { &*server }.handle.set(handle);
                unsafe { *server_out = server };
                Ok(())
            }
            Err(_) => {
                // The handler was dropped with the failed start; nothing refers to `server`.
                drop(unsafe { Box::from_raw(server) });
                Err(sw_result::Io)
            }
        }
    })
}

/// The handle of a started server, whatever its state.
pub(crate) fn started<'a>(server: *const sw_server) -> Result<&'a ServerHandle, sw_result> {
    // SAFETY: a pointer from sw_server_start that has not been freed (the caller's promise).
    let s = unsafe { server.as_ref() }.ok_or(sw_result::NullParameter)?;
    s.handle.get().ok_or(sw_result::NotRunning)
}

/// The handle of a running server: `SW_RESULT_NOT_RUNNING` once a shutdown
/// has started.
pub(crate) fn running<'a>(server: *const sw_server) -> Result<&'a ServerHandle, sw_result> {
    let h = started(server)?;
    if !h.is_running() {
        return Err(sw_result::NotRunning);
    }
    Ok(h)
}

/// The port the server listens on (useful after listening on port 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_local_port(
    server: *const sw_server,
    port_out: *mut u16,
) -> sw_result {
    call(|| {
        let h = running(server)?;
        if port_out.is_null() {
            return Err(sw_result::NullParameter);
        }
        unsafe { *port_out = h.local_addr().port() };
        Ok(())
    })
}

/// Starts a graceful shutdown and returns at once: stop accepting, close
/// every connection with 1001, wait for close handshakes up to the shutdown
/// timeout. Any thread, callbacks included. Again after the first: does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_shutdown(server: *const sw_server) -> sw_result {
    call(|| {
        started(server)?.shutdown();
        Ok(())
    })
}

/// Shuts down (as `sw_server_shutdown`) and waits until every thread has
/// exited; no callback runs after it returns. From one of this server's
/// callbacks it returns `SW_RESULT_WRONG_THREAD` (use `sw_server_shutdown`
/// there); a callback may stop a different server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_stop(server: *const sw_server) -> sw_result {
    call(|| {
        let h = started(server)?;
        if h.is_server_thread() {
            return Err(sw_result::WrongThread);
        }
        h.shutdown_and_join();
        Ok(())
    })
}

/// Stops the server if it runs and frees it. NULL does nothing. Never from
/// one of its own callbacks: there it only starts the shutdown, and the
/// server is not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_free(server: *mut sw_server) {
    boundary(|| {
        if server.is_null() {
            return;
        }
        if let Ok(h) = started(server) {
            if h.is_server_thread() {
                h.shutdown();
                return;
            }
            h.shutdown_and_join();
        }
        // SAFETY: from sw_server_start, freed once; every thread that could use it has exited.
        drop(unsafe { Box::from_raw(server) });
    })
}

/// Sends a text message to every open connection but `except`
/// (`SW_CONN_NONE` for everyone). The frame is built once for all.
/// `SW_RESULT_BACKPRESSURE`: an event loop refused it, because the
/// configured bytes of broadcasts and publishes were already waiting for it
/// (the other loops took it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_broadcast_text(
    server: *const sw_server,
    text: *const c_char,
    len: usize,
    except_conn: sw_conn_id,
) -> sw_result {
    call(|| {
        let h = running(server)?;
        let text = unsafe { str_bytes(text, len) }?;
        if !h.broadcast_except(MessageKind::Text, text.as_bytes(), except(except_conn)) {
            return Err(sw_result::Backpressure);
        }
        Ok(())
    })
}

/// Sends a binary message to every open connection but `except`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_broadcast_binary(
    server: *const sw_server,
    data: *const u8,
    len: usize,
    except_conn: sw_conn_id,
) -> sw_result {
    call(|| {
        let h = running(server)?;
        let data = unsafe { bytes(data, len) }?;
        if !h.broadcast_except(MessageKind::Binary, data, except(except_conn)) {
            return Err(sw_result::Backpressure);
        }
        Ok(())
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
    except_conn: sw_conn_id,
) -> sw_result {
    call(|| {
        let h = running(server)?;
        let topic = unsafe { c_str(topic) }?;
        let text = unsafe { str_bytes(text, len) }?;
        if !h.publish(
            topic,
            MessageKind::Text,
            text.as_bytes(),
            except(except_conn),
        ) {
            return Err(sw_result::Backpressure);
        }
        Ok(())
    })
}

/// Sends a binary message to every subscriber of `topic` but `except`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_publish_binary(
    server: *const sw_server,
    topic: *const c_char,
    data: *const u8,
    len: usize,
    except_conn: sw_conn_id,
) -> sw_result {
    call(|| {
        let h = running(server)?;
        let topic = unsafe { c_str(topic) }?;
        let data = unsafe { bytes(data, len) }?;
        if !h.publish(topic, MessageKind::Binary, data, except(except_conn)) {
            return Err(sw_result::Backpressure);
        }
        Ok(())
    })
}

/// Copies the server's counters into `*stats_out` (also after a shutdown).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_stats(
    server: *const sw_server,
    stats_out: *mut sw_stats,
) -> sw_result {
    call(|| {
        let h = started(server)?;
        if stats_out.is_null() {
            return Err(sw_result::NullParameter);
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
                + s.handshake_timeout
                + s.handshake_per_ip,
            handler_panics: s.handler_panics,
            dropped_fanout: s.dropped_fanout,
            rate_limit_closed: s.rate_limit_closed,
            rate_limit_paused: s.rate_limit_paused,
            handshake_per_ip: s.handshake_per_ip,
        };
        unsafe { *stats_out = out };
        Ok(())
    })
}
