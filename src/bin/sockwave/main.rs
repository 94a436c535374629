//! `sockwave`: the standalone server.
//!
//! With no arguments it serves an echo on 127.0.0.1:9001. `--mode broadcast`
//! makes one room of every connection; `--mode pubsub` makes each URL path a
//! channel. Plain HTTP on the same port: `/` (a demo page), `/healthz`,
//! `/metrics` (Prometheus). SIGINT/SIGTERM close every connection with 1001
//! and exit 0 within the shutdown timeout. Every flag also reads an
//! environment variable (see `--help`).

mod app;
mod logger;
mod notify;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sockwave::protocol::deflate::DeflateOptions;
use sockwave::server::{
    BackpressurePolicy, Config, Dispatch, IpNetwork, ProxyHeader, Rate, RateLimit, RateLimitPolicy,
    Server, TrustedProxies,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Every message goes back to its sender.
    Echo,
    /// What one client sends reaches every other client.
    Broadcast,
    /// Each client subscribes to the channel named by its URL path
    /// (ws://host:9001/chat/lobby); what it sends is published to that channel.
    Pubsub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Compression {
    /// No permessage-deflate.
    Off,
    /// No context takeover either way: no zlib state per connection (default).
    /// `shared`, its name before 0.2, is still accepted.
    #[value(alias = "shared")]
    Stateless,
    /// Context takeover: a compressor and inflater per connection, sized by
    /// --deflate-window-bits and --deflate-mem-level.
    Dedicated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DispatchArg {
    Workers,
    Inline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Overflow {
    /// Close a connection whose send buffer overflows (1008).
    Close,
    /// Drop the messages that do not fit.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProxyArg {
    /// X-Forwarded-For or Forwarded (RFC 7239) in the upgrade request.
    Forwarded,
    /// A PROXY protocol header (v1 or v2) first on the connection (before TLS, with TLS).
    ProxyProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OverRate {
    /// Close the connection (1008).
    Close,
    /// Stop reading it until it is within its rate again.
    Pause,
}

#[derive(Debug, Parser)]
#[command(
    name = "sockwave",
    version,
    about = "A WebSocket server: echo, broadcast room or pub/sub channels."
)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, env = "SOCKWAVE_LISTEN", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,

    /// What the server does with messages.
    #[arg(long, env = "SOCKWAVE_MODE", value_enum, default_value_t = Mode::Echo)]
    mode: Mode,

    /// Event loop threads (each with its own listener); 0 = one per core.
    #[arg(long, env = "SOCKWAVE_THREADS", default_value_t = 0)]
    threads: usize,

    /// Worker threads running the message handling; 0 = one per core.
    #[arg(long, env = "SOCKWAVE_WORKERS", default_value_t = 0)]
    workers: usize,

    /// Where messages are handled: on worker threads, or inline on the event
    /// loops (no thread hand-off; the server's modes never block).
    #[arg(long, env = "SOCKWAVE_DISPATCH", value_enum, default_value_t = DispatchArg::Workers)]
    dispatch: DispatchArg,

    /// Open connections beyond this get 503 before the upgrade.
    #[arg(long, env = "SOCKWAVE_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,

    /// Largest message (and frame); bigger ones are refused with 1009. Accepts K, M, G suffixes.
    #[arg(long, env = "SOCKWAVE_MAX_MESSAGE_SIZE", default_value = "16M", value_parser = parse_size)]
    max_message_size: u64,

    /// Close connections that send nothing for this long (0 = never). Accepts ms, s, m suffixes.
    #[arg(long, env = "SOCKWAVE_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Connections that have not sent a complete upgrade request by then are dropped (0 = never).
    #[arg(long, env = "SOCKWAVE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,

    /// How long a ping may wait for its pong before the connection is dropped.
    #[arg(long, env = "SOCKWAVE_PONG_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pong_timeout: Duration,

    /// Ping connections silent for this long, and drop them if no answer comes (0 = off).
    #[arg(long, env = "SOCKWAVE_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    ping_interval: Duration,

    /// Allowed Origin (repeatable, or comma-separated in the variable); others get 403.
    /// None given: any origin.
    #[arg(
        long = "allowed-origin",
        env = "SOCKWAVE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,

    /// A proxy or load balancer in front of the server (an address or a
    /// network, e.g. 10.0.0.0/8; repeatable, or comma-separated in the
    /// variable): its word about the client's address is taken.
    #[arg(
        long = "trusted-proxy",
        env = "SOCKWAVE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<IpNetwork>,

    /// How trusted proxies give the client's address.
    #[arg(long, env = "SOCKWAVE_PROXY_HEADER", value_enum, default_value_t = ProxyArg::Forwarded)]
    proxy_header: ProxyArg,

    /// With --allowed-origin: also accept requests with no Origin header
    /// (non-browser clients; browsers always send one).
    #[arg(long, env = "SOCKWAVE_ALLOW_MISSING_ORIGIN")]
    allow_missing_origin: bool,

    /// A subprotocol the server speaks (repeatable); the first one in the
    /// client's order of preference is chosen.
    #[arg(
        long = "subprotocol",
        env = "SOCKWAVE_SUBPROTOCOLS",
        value_delimiter = ','
    )]
    subprotocols: Vec<String>,

    /// Per-connection cap on unsent bytes. Accepts K, M, G suffixes.
    #[arg(long, env = "SOCKWAVE_MAX_BUFFERED", default_value = "4M", value_parser = parse_size)]
    max_buffered: u64,

    /// What happens to a connection whose unsent bytes would pass --max-buffered.
    #[arg(long, env = "SOCKWAVE_ON_OVERFLOW", value_enum, default_value_t = Overflow::Close)]
    on_overflow: Overflow,

    /// Messages per second one connection may send (bursts of twice that); 0 = no limit.
    #[arg(long, env = "SOCKWAVE_RATE_MESSAGES", default_value_t = 100_000)]
    rate_messages: u32,

    /// Payload bytes per second one connection may send (bursts of twice
    /// that); 0 = no limit. Accepts K, M, G suffixes.
    #[arg(long, env = "SOCKWAVE_RATE_BYTES", default_value = "64M", value_parser = parse_size)]
    rate_bytes: u64,

    /// What happens to a connection over --rate-messages or --rate-bytes.
    #[arg(long, env = "SOCKWAVE_ON_RATE_LIMIT", value_enum, default_value_t = OverRate::Close)]
    on_rate_limit: OverRate,

    /// Open connections per client address; 0 = no limit (the default: behind
    /// a proxy every client has the proxy's address).
    #[arg(long, env = "SOCKWAVE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    max_connections_per_ip: u32,

    /// New connections per second per client address (bursts of twice
    /// that); 0 = no limit (the default, for the same reason).
    #[arg(long, env = "SOCKWAVE_HANDSHAKES_PER_IP", default_value_t = 0)]
    handshakes_per_ip: u32,

    /// permessage-deflate (RFC 7692) when clients offer it (browsers do).
    #[arg(long, env = "SOCKWAVE_DEFLATE", value_enum, default_value_t = Compression::Stateless)]
    deflate: Compression,

    /// LZ77 window for permessage-deflate, 9..=15 (ours, and asked of clients that allow it).
    #[arg(long, env = "SOCKWAVE_DEFLATE_WINDOW_BITS", default_value_t = 15, value_parser = clap::value_parser!(u8).range(9..=15))]
    deflate_window_bits: u8,

    /// zlib memory level for permessage-deflate, 1..=9 (hash table of 2^(level+9) bytes).
    #[arg(long, env = "SOCKWAVE_DEFLATE_MEM_LEVEL", default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=9))]
    deflate_mem_level: u8,

    /// zlib compression level, 0..=9.
    #[arg(long, env = "SOCKWAVE_DEFLATE_LEVEL", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=9))]
    deflate_level: u8,

    /// Messages shorter than this go uncompressed. Accepts K, M suffixes.
    #[arg(long, env = "SOCKWAVE_DEFLATE_THRESHOLD", default_value = "256", value_parser = parse_size)]
    deflate_threshold: u64,

    /// How long SIGINT/SIGTERM wait for close handshakes before exiting.
    #[arg(long, env = "SOCKWAVE_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Log level on stderr: error, warn, info, debug, trace.
    #[arg(long, env = "SOCKWAVE_LOG", default_value = "info")]
    log_level: log::LevelFilter,

    /// Print the man page (roff) and exit: `sockwave --print-man > sockwave.1`.
    #[arg(long, hide = true)]
    print_man: bool,

    /// Print completions for a shell and exit: `source <(sockwave --print-completions bash)`.
    #[arg(long, hide = true, value_name = "SHELL")]
    print_completions: Option<clap_complete::Shell>,

    /// Log lines for people (text) or for log collectors (json: one object
    /// a line with ts, level, thread, msg).
    #[arg(long, env = "SOCKWAVE_LOG_FORMAT", value_enum, default_value_t = logger::Format::Text)]
    log_format: logger::Format,

    /// wss://: the PEM certificate chain (leaf first). With --tls-key, every
    /// connection on the port speaks TLS (the demo page and /metrics too).
    #[cfg(feature = "tls")]
    #[arg(long, env = "SOCKWAVE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of --tls-cert.
    #[cfg(feature = "tls")]
    #[arg(long, env = "SOCKWAVE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Another certificate, for clients that ask for NAME (SNI):
    /// NAME=CERT.pem,KEY.pem. Repeatable (in the environment, separated by
    /// ';'). SIGHUP re-reads every TLS file.
    #[cfg(feature = "tls")]
    #[arg(
        long,
        env = "SOCKWAVE_TLS_SNI",
        value_delimiter = ';',
        requires = "tls_cert"
    )]
    tls_sni: Vec<String>,

    /// Pub/sub and broadcast across nodes through Redis:
    /// redis://[user:password@]host:port/. Every node given the same Redis
    /// (and prefix) behaves as one server.
    #[cfg(feature = "redis")]
    #[arg(long, env = "SOCKWAVE_REDIS")]
    redis: Option<String>,

    /// Prefix of the Redis channel names (deployments sharing a Redis differ here).
    #[cfg(feature = "redis")]
    #[arg(
        long,
        env = "SOCKWAVE_REDIS_PREFIX",
        default_value = "sockwave:",
        requires = "redis"
    )]
    redis_prefix: String,
}

/// SIGHUP: every TLS file read again; new handshakes get what they hold,
/// open connections keep theirs; on any error the certificates in use stay.
fn reload_tls(args: &Args, server: &sockwave::server::ServerHandle) {
    #[cfg(feature = "tls")]
    if let Some(current) = &server.config().tls {
        match tls::load(args) {
            Ok(Some(fresh)) => match current.reload_from(&fresh) {
                Ok(()) => log::info!(
                    "SIGHUP: TLS reloaded: {} (SNI: {:?})",
                    args.tls_cert
                        .as_deref()
                        .unwrap_or(std::path::Path::new(""))
                        .display(),
                    fresh.sni_names()
                ),
                Err(e) => log::error!("SIGHUP: TLS not reloaded: {e}"),
            },
            Ok(None) => log::warn!("SIGHUP: no TLS files to read"),
            Err(e) => log::error!("SIGHUP: TLS not reloaded, the certificates in use stay: {e}"),
        }
        return;
    }
    let _ = (args, server);
    log::info!("SIGHUP: no TLS configured, nothing to reload");
}

#[cfg(feature = "tls")]
mod tls {
    use sockwave::server::TlsConfig;

    use crate::Args;

    /// The TLS configuration the flags name, read from its files.
    pub(crate) fn load(args: &Args) -> Result<Option<TlsConfig>, String> {
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            return Ok(None);
        };
        let tls = TlsConfig::from_pem_files(cert, key).map_err(|e| e.to_string())?;
        for entry in &args.tls_sni {
            let bad = || format!("--tls-sni {entry:?}: expected NAME=CERT.pem,KEY.pem");
            let (name, files) = entry.split_once('=').ok_or_else(bad)?;
            let (cert, key) = files.split_once(',').ok_or_else(bad)?;
            tls.add_sni_pem_files(name.trim(), cert.trim(), key.trim())
                .map_err(|e| format!("--tls-sni {name}: {e}"))?;
        }
        Ok(Some(tls))
    }
}

fn config_has_tls(config: &Config) -> bool {
    #[cfg(feature = "tls")]
    return config.tls.is_some();
    #[cfg(not(feature = "tls"))]
    {
        let _ = config;
        false
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a size: {s:?} (use e.g. 65536, 64K, 16M)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("too large: {s}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("not a duration: {s:?} (use e.g. 30s, 500ms, 2m, 0)");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn off_if_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Args {
    fn config(&self) -> Config {
        let mut c = Config {
            listen: self.listen,
            threads: self.threads,
            dispatch: match self.dispatch {
                DispatchArg::Workers => Dispatch::Workers(self.workers),
                DispatchArg::Inline => Dispatch::Inline,
            },
            max_connections: self.max_connections,
            allowed_origins: self.allowed_origins.clone(),
            allow_missing_origin: self.allow_missing_origin,
            proxies: TrustedProxies {
                networks: self.trusted_proxies.clone(),
                header: match self.proxy_header {
                    ProxyArg::Forwarded => ProxyHeader::Forwarded,
                    ProxyArg::ProxyProtocol => ProxyHeader::ProxyProtocol,
                },
            },
            subprotocols: self.subprotocols.clone(),
            max_buffered: self.max_buffered as usize,
            backpressure: match self.on_overflow {
                Overflow::Close => BackpressurePolicy::Close,
                Overflow::Drop => BackpressurePolicy::Drop,
            },
            shutdown_timeout: self.shutdown_timeout,
            ..Config::default()
        };
        let rate = |n: f64| (n > 0.0).then(|| Rate::per_sec(n));
        c.rate_limit = RateLimit {
            messages: rate(f64::from(self.rate_messages)),
            bytes: rate(self.rate_bytes as f64),
            policy: match self.on_rate_limit {
                OverRate::Close => RateLimitPolicy::Close,
                OverRate::Pause => RateLimitPolicy::Pause,
            },
            connections_per_ip: (self.max_connections_per_ip > 0)
                .then_some(self.max_connections_per_ip),
            handshakes_per_ip: rate(f64::from(self.handshakes_per_ip)),
        };
        c.protocol.max_message_size = self.max_message_size;
        c.protocol.max_frame_size = self.max_message_size;
        c.protocol.idle_timeout = off_if_zero(self.idle_timeout);
        c.protocol.ping_interval = off_if_zero(self.ping_interval);
        c.protocol.handshake_timeout = off_if_zero(self.handshake_timeout);
        c.protocol.pong_timeout = self.pong_timeout;
        let base = match self.deflate {
            Compression::Off => DeflateOptions::disabled(),
            Compression::Stateless => DeflateOptions::stateless(),
            Compression::Dedicated => {
                DeflateOptions::dedicated(self.deflate_window_bits, self.deflate_mem_level)
            }
        };
        c.protocol.deflate = DeflateOptions {
            server_max_window_bits: self.deflate_window_bits,
            client_max_window_bits: self.deflate_window_bits,
            mem_level: self.deflate_mem_level,
            level: self.deflate_level,
            threshold: self.deflate_threshold as usize,
            ..base
        };
        c
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts, so
/// `wait_for_signal` collects them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset/sigaddset;
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` was initialised by block_signals; sigwait writes `sig`.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Every connection is a descriptor: raise the soft limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Keeps glibc's malloc from returning and re-faulting the same pages for
/// every large message.
///
/// A message of 64 KiB or more is allocated, echoed and freed; when it sat at
/// the top of the heap, glibc gives the pages back (the default trim threshold
/// is 128 KiB) and the next message faults them in again: 5.9 faults per
/// message at 1,000 connections x 64 KiB, which cost 43% of the server's CPU
/// (benches/README.md). Messages up to
/// 32 MiB (the largest threshold glibc takes) come from the arenas, and each
/// arena keeps up to 4 MiB of free memory at its top. A user's own
/// `GLIBC_TUNABLES` malloc settings win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// The man page or shell completions, from the CLI definition itself.
fn print_docs(args: &Args) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Args::command();
    let mut out = std::io::stdout().lock();
    if let Some(shell) = args.print_completions {
        clap_complete::generate(shell, &mut cmd, "sockwave", &mut out);
        return ExitCode::SUCCESS;
    }
    match clap_mangen::Man::new(cmd).render(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockwave: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let args = Args::parse();
    if args.print_man || args.print_completions.is_some() {
        return print_docs(&args);
    }
    logger::init(args.log_level, args.log_format);
    raise_fd_limit();
    let signals = block_signals();
    let app = Arc::new(app::App::new(args.mode));
    #[allow(unused_mut)]
    let mut config = args.config();
    #[cfg(feature = "tls")]
    match tls::load(&args) {
        Ok(tls) => config.tls = tls,
        Err(e) => {
            log::error!("TLS: {e}");
            return ExitCode::FAILURE;
        }
    }
    #[cfg(feature = "redis")]
    if let Some(url) = &args.redis {
        let mut redis = sockwave::broker::RedisConfig::new(url.clone());
        redis.prefix = args.redis_prefix.clone();
        match sockwave::broker::RedisBroker::new(redis) {
            Ok(broker) => {
                log::info!(
                    "broker: redis at {url} (channels under {:?}), node {:016x}",
                    args.redis_prefix,
                    broker.node_id()
                );
                config.broker = Some(broker);
            }
            Err(e) => {
                log::error!("--redis: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (ws, http) = if config_has_tls(&config) {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let server = match Server::start_arc(config, app.clone()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "{:?} server listening on {ws}://{} (demo page: {http}://{}/)",
        args.mode,
        server.local_addr(),
        server.local_addr()
    );
    notify::notify(&format!(
        "READY=1\nSTATUS=listening on {ws}://{}",
        server.local_addr()
    ));
    let sig = loop {
        match wait_for_signal(&signals) {
            libc::SIGHUP => reload_tls(&args, &server),
            sig => break sig,
        }
    };
    log::info!(
        "signal {sig}: closing every connection (1001), up to {:?}",
        args.shutdown_timeout
    );
    notify::notify("STOPPING=1");
    server.shutdown_and_join();
    let s = server.stats();
    log::info!(
        "stopped: {} connections, {} messages in, {} out",
        s.connections_total,
        s.messages_in,
        s.messages_out
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
