//! `sockwave`: the standalone server. With no arguments it serves an echo on
//! 127.0.0.1:9001. SIGINT/SIGTERM drain gracefully (close 1001) and exit 0.

use std::net::SocketAddr;
use std::process::ExitCode;

use sockwave::server::{Config, Echo, Server};

const USAGE: &str = "\
usage: sockwave [--listen ADDR:PORT] [--threads N] [--workers N]

  --listen ADDR:PORT   address to listen on (default 127.0.0.1:9001)
  --threads N          event loops, 0 = one per core (default 0)
  --workers N          handler worker threads, 0 = one per core (default 0)
  -h, --help           this help
";

fn parse_args() -> Result<Config, String> {
    let mut config = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--listen" => {
                let v = value("--listen")?;
                config.listen = v
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--threads" => {
                config.threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--workers" => {
                config.workers = value("--workers")?
                    .parse()
                    .map_err(|e| format!("--workers: {e}"))?
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(config)
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread it
/// starts), to be collected by `wait_for_signal` instead.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
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

/// Raises the soft limit on open files to the hard limit: every connection is a descriptor.
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

fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sockwave: {e}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();
    let signals = block_signals();
    let server = match Server::start(config, Echo) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sockwave: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "sockwave: echo server listening on ws://{}",
        server.local_addr()
    );
    let sig = wait_for_signal(&signals);
    eprintln!("sockwave: signal {sig}, closing connections (1001)");
    server.shutdown_and_join();
    let s = server.stats();
    eprintln!(
        "sockwave: stopped; {} connections, {} messages in, {} out",
        s.connections_total, s.messages_in, s.messages_out
    );
    ExitCode::SUCCESS
}
