//! `sw_config_set_broker_redis`, `sw_server_broker_stats`: pub/sub across
//! nodes from C.
//!
//! A library built without the `redis` feature keeps these functions; they
//! answer `SW_RESULT_UNSUPPORTED`.

use std::ffi::c_char;

use super::boundary::{c_str, call, sw_result};
use super::config::sw_config;
use super::server::{started, sw_server};
use crate::broker::BrokerHealth;

/// A node's link to the other nodes (`sw_server_broker_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct sw_broker_stats {
    /// Connected, and every topic with a local subscriber is subscribed:
    /// messages cross nodes now. False: this node still serves its own
    /// clients; messages to and from other nodes are lost and counted.
    pub healthy: bool,
    /// Messages handed to the broker for the other nodes.
    pub published: u64,
    /// Messages for other nodes lost: the broker was unreachable, or the
    /// publish queue (64 MiB) was full.
    pub lost: u64,
    /// Messages written in a batch whose reply never came.
    pub unconfirmed: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages from other nodes known missed (gaps in their numbering).
    pub missed: u64,
    /// Messages from other nodes this node's loops refused (fan-out full).
    pub dropped: u64,
    /// Reconnects to the broker after a lost connection.
    pub reconnects: u64,
    /// Messages from other nodes whose latency was measured, and the sum
    /// of those latencies in microseconds (publish there to arrival here).
    pub latency_count: u64,
    /// See `latency_count`.
    pub latency_sum_us: u64,
}

/// Publishes and broadcasts of servers started with this config also reach
/// every other node given the same Redis and prefix, and theirs reach this
/// one (`sw_server_publish_*`, `sw_server_broadcast_*`, and the topics of
/// `sw_conn_subscribe` / `sw_upgrade_subscribe`). `url` is
/// `redis://[user:password@]host[:port][/db]`; `prefix` (NULL: "sockwave:")
/// starts every Redis channel name. Nothing connects until
/// `sw_server_start`; a server whose Redis is away starts and serves its own
/// clients. A URL it cannot use is `SW_RESULT_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_broker_redis(
    config: *mut sw_config,
    url: *const c_char,
    prefix: *const c_char,
) -> sw_result {
    call(|| {
        // SAFETY: a non-NULL pointer from sw_config_new, used by one thread at a time.
        let cfg = unsafe { config.as_mut() }.ok_or(sw_result::NullParameter)?;
        let url = unsafe { c_str(url) }?;
        let prefix = if prefix.is_null() {
            None
        } else {
            Some(unsafe { c_str(prefix) }?)
        };
        #[cfg(feature = "redis")]
        {
            let mut redis = crate::broker::RedisConfig::new(url);
            if let Some(p) = prefix {
                redis.prefix = p.to_string();
            }
            // Checked now, so the error comes from this call.
            crate::broker::RedisBroker::new(redis.clone())
                .map_err(|_| sw_result::InvalidArgument)?;
            cfg.redis = Some(redis);
            Ok(())
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = (cfg, url, prefix);
            Err(sw_result::Unsupported)
        }
    })
}

/// The broker's counters and health. `SW_RESULT_INVALID_ARGUMENT` for a
/// server started without a broker. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_broker_stats(
    server: *const sw_server,
    stats_out: *mut sw_broker_stats,
) -> sw_result {
    call(|| {
        let h = started(server)?;
        if stats_out.is_null() {
            return Err(sw_result::NullParameter);
        }
        let (Some(health), Some(s)) = (h.broker_health(), h.broker_stats()) else {
            return Err(sw_result::InvalidArgument);
        };
        let out = sw_broker_stats {
            healthy: health == BrokerHealth::Healthy,
            published: s.published,
            lost: s.lost,
            unconfirmed: s.unconfirmed,
            received: s.received,
            missed: s.missed,
            dropped: s.dropped,
            reconnects: s.reconnects,
            latency_count: s.latency.count,
            latency_sum_us: s.latency.sum_us,
        };
        // SAFETY: checked for NULL; the caller's buffer for one struct.
        unsafe { stats_out.write(out) };
        Ok(())
    })
}
