//! `sw_config`: everything `sw_server_start` needs to know.

use std::ffi::c_char;
use std::time::Duration;

use super::boundary::{boundary, c_str, sw_result};
use crate::protocol::deflate::DeflateOptions;
use crate::server::{BackpressurePolicy, Config, Dispatch, ProxyHeader, Rate, RateLimitPolicy};

/// Server configuration. Create with `sw_config_new`, adjust with the
/// setters, pass to `sw_server_start` (which copies it), free with `sw_config_free`.
/// Not thread-safe: use one `sw_config` from one thread at a time.
#[derive(Debug)]
pub struct sw_config {
    pub(crate) inner: Config,
    /// Made into a fresh broker at each `sw_server_start` (a broker serves
    /// one server; a config may start several).
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<crate::broker::RedisConfig>,
}

/// What to do when a connection's unsent bytes would exceed the cap
/// (`sw_config_set_backpressure`). Pass as `uint32_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sw_backpressure {
    /// Close the connection with 1008 (the default).
    Close = 0,
    /// Drop the message; the connection stays open.
    Drop = 1,
}

/// A new configuration with the defaults: 127.0.0.1:9001, one event loop and
/// one worker per core, 16 MiB messages, 4 MiB send buffer per connection
/// (close on overflow), ping every 30 s, 100,000 connections.
/// Free with `sw_config_free`. Returns NULL only on a caught panic.
#[unsafe(no_mangle)]
pub extern "C" fn sw_config_new() -> *mut sw_config {
    boundary(|| {
        Box::into_raw(Box::new(sw_config {
            inner: Config::default(),
            #[cfg(feature = "redis")]
            redis: None,
        }))
    })
}

/// Frees a configuration. NULL does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_free(config: *mut sw_config) {
    boundary(|| {
        if !config.is_null() {
            // SAFETY: made by sw_config_new and not freed before (the caller's promise).
            drop(unsafe { Box::from_raw(config) });
        }
    })
}

pub(crate) fn with_config(
    config: *mut sw_config,
    f: impl FnOnce(&mut Config) -> Result<(), sw_result>,
) -> sw_result {
    boundary(|| {
        // SAFETY: a non-NULL pointer from sw_config_new, used by one thread at a time.
        let Some(cfg) = (unsafe { config.as_mut() }) else {
            return sw_result::NullParameter;
        };
        match f(&mut cfg.inner) {
            Ok(()) => sw_result::Ok,
            Err(e) => e,
        }
    })
}

/// Listen address, e.g. `"0.0.0.0:9001"` or `"[::1]:0"` (port 0 picks a free
/// port; see `sw_server_local_port`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_listen(
    config: *mut sw_config,
    addr: *const c_char,
) -> sw_result {
    with_config(config, |c| {
        let s = unsafe { c_str(addr) }?;
        c.listen = s.parse().map_err(|_| sw_result::InvalidArgument)?;
        Ok(())
    })
}

/// Event loop threads; 0 = one per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_threads(config: *mut sw_config, threads: u32) -> sw_result {
    with_config(config, |c| {
        c.threads = threads as usize;
        Ok(())
    })
}

/// Worker threads running the callbacks; 0 = one per core.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_workers(config: *mut sw_config, workers: u32) -> sw_result {
    with_config(config, |c| {
        c.dispatch = Dispatch::Workers(workers as usize);
        Ok(())
    })
}

/// `true`: the callbacks run on the event loop threads instead of on
/// workers. A message then reaches `on_message` with no hand-off between
/// threads, and a small one (at most 4 KiB, whole) straight from where the
/// loop read it: the fastest way for callbacks that never block. A callback
/// that blocks stalls every connection of its loop. `false` goes back to
/// workers, one per core; `sw_config_set_workers` called after this also
/// goes back to workers, as many as it says.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_inline_dispatch(
    config: *mut sw_config,
    on_loops: bool,
) -> sw_result {
    with_config(config, |c| {
        c.dispatch = match (on_loops, c.dispatch) {
            (true, _) => Dispatch::Inline,
            (false, Dispatch::Workers(n)) => Dispatch::Workers(n),
            (false, Dispatch::Inline) => Dispatch::Workers(0),
        };
        Ok(())
    })
}

/// Open sockets beyond this get 503 before the upgrade.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_max_connections(
    config: *mut sw_config,
    max: u32,
) -> sw_result {
    with_config(config, |c| {
        c.max_connections = max as usize;
        Ok(())
    })
}

/// Topics one connection may be subscribed to at once (`sw_conn_subscribe`,
/// `sw_upgrade_subscribe`); default 1,024. A subscription past it is dropped
/// and counted (`SW_COUNTER_SUBSCRIPTIONS_REFUSED`): without a limit, a
/// program that subscribes a connection to whatever its client names lets
/// one client grow the server's memory without bound.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_max_subscriptions(
    config: *mut sw_config,
    max: u32,
) -> sw_result {
    with_config(config, |c| {
        c.max_subscriptions = max as usize;
        Ok(())
    })
}

/// Longest topic name a connection may subscribe to, in bytes; default 256.
/// `sw_conn_subscribe` answers a longer one `SW_RESULT_INVALID_ARGUMENT`, and
/// one given to `sw_upgrade_subscribe` is dropped when the connection opens
/// (both counted in `SW_COUNTER_SUBSCRIPTIONS_REFUSED`): the server keeps
/// each topic's name, so the limit on topics alone would not bound a
/// connection's memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_max_topic_length(
    config: *mut sw_config,
    max: u32,
) -> sw_result {
    with_config(config, |c| {
        c.max_topic_length = max as usize;
        Ok(())
    })
}

/// Largest message (all its frames together) and largest frame a client
/// may send, in bytes; beyond them the connection is closed with 1009. They
/// limit incoming messages only: the server's own sends of any size are
/// allowed, bounded by the send buffer (`sw_config_set_backpressure`). Both must be at least 125.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_max_message_size(
    config: *mut sw_config,
    max_message: u64,
    max_frame: u64,
) -> sw_result {
    with_config(config, |c| {
        if max_message < 125 || max_frame < 125 {
            return Err(sw_result::InvalidArgument);
        }
        c.protocol.max_message_size = max_message;
        c.protocol.max_frame_size = max_frame;
        Ok(())
    })
}

fn millis(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

/// Timeouts in milliseconds; 0 turns the first three off.
/// - `handshake_ms`: a request head must arrive within this (default 10,000);
/// - `idle_ms`: close (1001) after this long without any bytes from the peer (default 120,000);
/// - `ping_interval_ms`: ping after this long of silence (default 30,000);
/// - `pong_timeout_ms`: drop the peer when a ping gets no answer this long (default 20,000);
/// - `close_ms`: wait this long for the peer's close frame (default 5,000).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_timeouts(
    config: *mut sw_config,
    handshake_ms: u32,
    idle_ms: u32,
    ping_interval_ms: u32,
    pong_timeout_ms: u32,
    close_ms: u32,
) -> sw_result {
    with_config(config, |c| {
        if pong_timeout_ms == 0 || close_ms == 0 {
            return Err(sw_result::InvalidArgument);
        }
        c.protocol.handshake_timeout = millis(handshake_ms);
        c.protocol.idle_timeout = millis(idle_ms);
        c.protocol.ping_interval = millis(ping_interval_ms);
        c.protocol.pong_timeout = Duration::from_millis(pong_timeout_ms as u64);
        c.protocol.close_timeout = Duration::from_millis(close_ms as u64);
        Ok(())
    })
}

/// How long `sw_server_stop` waits for close handshakes (default 5,000 ms).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_shutdown_timeout(
    config: *mut sw_config,
    ms: u32,
) -> sw_result {
    with_config(config, |c| {
        c.shutdown_timeout = Duration::from_millis(ms as u64);
        Ok(())
    })
}

/// Per-connection cap on bytes accepted for sending but not yet written,
/// and what happens beyond it (`policy` is an `sw_backpressure` value).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_backpressure(
    config: *mut sw_config,
    max_buffered: u64,
    policy: u32,
) -> sw_result {
    with_config(config, |c| {
        c.backpressure = match policy {
            0 => BackpressurePolicy::Close,
            1 => BackpressurePolicy::Drop,
            _ => return Err(sw_result::InvalidArgument),
        };
        c.max_buffered = usize::try_from(max_buffered).map_err(|_| sw_result::InvalidArgument)?;
        Ok(())
    })
}

/// What happens to a connection over its rate (pass as `uint32_t` to
/// `sw_config_set_rate_limit`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sw_rate_policy {
    /// Close it with 1008 at once (the message over the limit is not handed
    /// to `on_message`; replies not yet sent are dropped).
    Close = 0,
    /// Stop reading it until it is within its rate again (TCP slows the
    /// client; nothing is lost).
    Pause = 1,
}

/// Per-connection limits on what a client sends: `messages_per_sec`
/// messages and `bytes_per_sec` payload bytes a second, each with bursts
/// of twice that; 0 leaves that one unlimited (the default: both).
/// `policy` is an `sw_rate_policy` value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_rate_limit(
    config: *mut sw_config,
    messages_per_sec: u32,
    bytes_per_sec: u64,
    policy: u32,
) -> sw_result {
    with_config(config, |c| {
        c.rate_limit.policy = match policy {
            0 => RateLimitPolicy::Close,
            1 => RateLimitPolicy::Pause,
            _ => return Err(sw_result::InvalidArgument),
        };
        c.rate_limit.messages =
            (messages_per_sec > 0).then(|| Rate::per_sec(f64::from(messages_per_sec)));
        c.rate_limit.bytes = (bytes_per_sec > 0).then(|| Rate::per_sec(bytes_per_sec as f64));
        Ok(())
    })
}

/// Per client address: at most `max_connections` open at once and
/// `handshakes_per_sec` new ones a second (bursts of twice that); a
/// connection past either is closed before its request is read. 0 leaves
/// that one unlimited (the default: both; behind a proxy every client has
/// the proxy's address).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_ip_limits(
    config: *mut sw_config,
    max_connections: u32,
    handshakes_per_sec: u32,
) -> sw_result {
    with_config(config, |c| {
        c.rate_limit.connections_per_ip = (max_connections > 0).then_some(max_connections);
        c.rate_limit.handshakes_per_ip =
            (handshakes_per_sec > 0).then(|| Rate::per_sec(f64::from(handshakes_per_sec)));
        Ok(())
    })
}

/// With an allowed-origin list (`sw_config_add_allowed_origin`): whether
/// requests that carry no `Origin` at all are accepted (`true`) or answered
/// 403 like a foreign origin (`false`, the default). Browsers always send
/// `Origin`; other clients often do not, and can send any they like, so the
/// list protects browser users, not the server from other clients.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_allow_missing_origin(
    config: *mut sw_config,
    allow: bool,
) -> sw_result {
    with_config(config, |c| {
        c.allow_missing_origin = allow;
        Ok(())
    })
}

/// How trusted proxies give the client's address (pass as `uint32_t` to
/// `sw_config_set_proxy_header`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sw_proxy_header {
    /// `Forwarded` (RFC 7239) or `X-Forwarded-For` in the upgrade request (the default).
    Forwarded = 0,
    /// A PROXY protocol header, version 1 or 2, first on the connection
    /// (before the TLS handshake when the server terminates TLS).
    ProxyProtocol = 1,
}

/// Trusts `network` ("10.0.0.0/8", "2001:db8::/32" or one address) as a
/// proxy: the client address of its connections (`sw_conn_peer_addr`,
/// `sw_upgrade_peer_addr`) is what it says, not its own. Other peers are
/// their own clients whatever headers they send.
/// `SW_RESULT_INVALID_ARGUMENT` for what is not an address or network.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_add_trusted_proxy(
    config: *mut sw_config,
    network: *const c_char,
) -> sw_result {
    with_config(config, |c| {
        let network = unsafe { c_str(network) }?;
        let net = network.parse().map_err(|_| sw_result::InvalidArgument)?;
        c.proxies.networks.push(net);
        Ok(())
    })
}

/// How trusted proxies give the client's address (`header` is an
/// `sw_proxy_header` value).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_proxy_header(
    config: *mut sw_config,
    header: u32,
) -> sw_result {
    with_config(config, |c| {
        c.proxies.header = match header {
            0 => ProxyHeader::Forwarded,
            1 => ProxyHeader::ProxyProtocol,
            _ => return Err(sw_result::InvalidArgument),
        };
        Ok(())
    })
}

/// permessage-deflate modes (pass as `uint32_t` to `sw_config_set_deflate`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sw_deflate_mode {
    /// Never negotiate compression.
    Off = 0,
    /// No context takeover either way: no zlib state per connection (the default).
    Shared = 1,
    /// Context takeover: a compressor and inflater per connection.
    Dedicated = 2,
}

/// permessage-deflate (RFC 7692): `mode` is an `sw_deflate_mode`;
/// `window_bits` 9..15 is our LZ77 window (and the one asked of clients that
/// allow it); `mem_level` 1..9 sizes the compressor's hash table (2^(mem_level+9)
/// bytes); `level` 0..9 is zlib's; messages shorter than `threshold` bytes go
/// uncompressed. Default: shared, 15, 8, 1, 256.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_deflate(
    config: *mut sw_config,
    mode: u32,
    window_bits: u8,
    mem_level: u8,
    level: u8,
    threshold: u64,
) -> sw_result {
    with_config(config, |c| {
        let base = match mode {
            0 => DeflateOptions::disabled(),
            1 => DeflateOptions::stateless(),
            2 => DeflateOptions::dedicated(window_bits, mem_level),
            _ => return Err(sw_result::InvalidArgument),
        };
        if !(9..=15).contains(&window_bits) || !(1..=9).contains(&mem_level) || level > 9 {
            return Err(sw_result::InvalidArgument);
        }
        c.protocol.deflate = DeflateOptions {
            server_max_window_bits: window_bits,
            client_max_window_bits: window_bits,
            mem_level,
            level,
            threshold: usize::try_from(threshold).map_err(|_| sw_result::InvalidArgument)?,
            ..base
        };
        Ok(())
    })
}

/// Adds a subprotocol the server speaks. The first of the client's offers
/// (in its order of preference) that the server speaks is chosen.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_add_subprotocol(
    config: *mut sw_config,
    protocol: *const c_char,
) -> sw_result {
    with_config(config, |c| {
        let p = unsafe { c_str(protocol) }?;
        if p.is_empty() || p.contains([',', ' ', '\r', '\n']) {
            return Err(sw_result::InvalidArgument);
        }
        c.subprotocols.push(p.to_string());
        Ok(())
    })
}

/// Adds an allowed `Origin` (exact, case-insensitive). With none added, any
/// origin is accepted; otherwise other origins get 403.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_add_allowed_origin(
    config: *mut sw_config,
    origin: *const c_char,
) -> sw_result {
    with_config(config, |c| {
        let o = unsafe { c_str(origin) }?;
        c.allowed_origins.push(o.to_string());
        Ok(())
    })
}
