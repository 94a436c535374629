//! The runtime: N event loops (one per core by default), each with its own
//! SO_REUSEPORT listener and `mio::Poll`, and a pool of worker threads that
//! run the [`Handler`]. See `../shared/DESIGN.md` for the data flow.
//!
//! ```no_run
//! use sockwave::server::{Config, Echo, Server};
//! let server = Server::start(Config::default(), Echo).unwrap();
//! println!("listening on {}", server.local_addr());
//! server.join();
//! ```

mod config;
mod event_loop;
mod handler;
mod shared;

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use crossbeam_channel::{bounded, unbounded};
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

pub use config::{BackpressurePolicy, Config, Dispatch};
pub use handler::{
    Conn, ConnId, Decision, DropReason, Echo, Handler, HttpResponse, Message, SendStatus,
};
pub use shared::{HandshakeFailures, Stats, StatsSnapshot};

use event_loop::{EventLoop, WAKER};
use shared::{Command, LoopRemote, Shared, SharedMessage};

use crate::protocol::MessageKind;

/// Starts servers.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds the listeners and starts every thread. Returns once the server accepts connections.
    pub fn start<H: Handler>(config: Config, handler: H) -> io::Result<ServerHandle> {
        Self::start_arc(config, Arc::new(handler))
    }

    pub fn start_arc(config: Config, handler: Arc<dyn Handler>) -> io::Result<ServerHandle> {
        let loops = config.loop_count().min(255);
        let workers = config.worker_count();
        let listeners = bind_listeners(config.listen, loops, config.backlog)?;
        let local_addr = listeners[0].local_addr()?;

        let mut polls = Vec::with_capacity(loops);
        let mut remotes = Vec::with_capacity(loops);
        let mut receivers = Vec::with_capacity(loops);
        for _ in 0..loops {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (tx, rx) = unbounded();
            remotes.push(LoopRemote {
                tx,
                waker,
                asleep: false.into(),
                registry: RwLock::new(Vec::with_capacity(config.reserved_slots())),
            });
            polls.push(poll);
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            config,
            handler,
            loops: remotes,
            stats: Stats::default(),
            sockets: 0.into(),
            shutting_down: false.into(),
            local_addr,
            threads: Mutex::new(Vec::new()),
        });

        let mut threads = Vec::new();
        let mut worker_txs = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = bounded(1024);
            worker_txs.push(tx);
            let s = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sockwave-worker-{w}"))
                    .spawn(move || event_loop::run_worker(rx, s))?,
            );
        }
        let worker_txs: Arc<[_]> = worker_txs.into();
        for (i, ((poll, rx), listener)) in
            polls.into_iter().zip(receivers).zip(listeners).enumerate()
        {
            listener.set_nonblocking(true)?;
            let listener = mio::net::TcpListener::from_std(listener);
            let ev = EventLoop::new(
                i,
                poll,
                listener,
                rx,
                Arc::clone(&shared),
                Arc::clone(&worker_txs),
            )?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sockwave-loop-{i}"))
                    .spawn(move || ev.run())?,
            );
        }
        *shared.threads.lock().unwrap_or_else(|e| e.into_inner()) = threads;
        Ok(ServerHandle { shared })
    }
}

/// One listener per loop on the same address with SO_REUSEPORT, so the kernel
/// spreads accepts across loops. Port 0 binds the first and reuses its port.
fn bind_listeners(addr: SocketAddr, count: usize, backlog: i32) -> io::Result<Vec<StdTcpListener>> {
    let mut out: Vec<StdTcpListener> = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux,
        // which saves a setsockopt per connection (see `add_conn`).
        socket.set_tcp_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        let listener: StdTcpListener = socket.into();
        if out.is_empty() {
            addr = listener.local_addr()?;
        }
        out.push(listener);
    }
    Ok(out)
}

/// Controls a running server from any thread. Cloning is cheap.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// A handle to the open connection `id`, if it still is that connection.
    pub fn conn(&self, id: ConnId) -> Option<Conn> {
        self.shared.lookup(id).map(|inner| Conn {
            inner,
            server: Arc::clone(&self.shared),
        })
    }

    pub fn send(&self, id: ConnId, kind: MessageKind, data: &[u8]) -> SendStatus {
        match self.conn(id) {
            Some(c) => c.send(kind, data),
            None => SendStatus::Dropped(DropReason::Closed),
        }
    }

    pub fn close(&self, id: ConnId, code: u16, reason: &str) -> bool {
        self.conn(id).map(|c| c.close(code, reason)).is_some()
    }

    /// Sends one message to every open connection. The frame is encoded once
    /// and shared by every loop and recipient.
    pub fn broadcast(&self, kind: MessageKind, data: &[u8]) {
        self.broadcast_except(kind, data, None)
    }

    /// [`ServerHandle::broadcast`] to everyone but `exclude` (say, the sender).
    pub fn broadcast_except(&self, kind: MessageKind, data: &[u8], exclude: Option<ConnId>) {
        let message = SharedMessage::new(kind, data);
        for remote in &self.shared.loops {
            remote.push(Command::Broadcast {
                message: Arc::clone(&message),
                exclude,
            });
        }
    }

    /// Sends one message to every subscriber of `topic` (on every loop) but
    /// `exclude`. The frame is encoded once and shared by all recipients.
    pub fn publish(&self, topic: &str, kind: MessageKind, data: &[u8], exclude: Option<ConnId>) {
        let message = SharedMessage::new(kind, data);
        let topic: Arc<str> = topic.into();
        for remote in &self.shared.loops {
            remote.push(Command::Publish {
                topic: Arc::clone(&topic),
                message: Arc::clone(&message),
                exclude,
            });
        }
    }

    /// Starts a graceful shutdown: stop accepting, close every connection with
    /// 1001, wait up to the shutdown timeout. Returns at once; see [`ServerHandle::join`].
    pub fn shutdown(&self) {
        if !self.shared.shutting_down.swap(true, Ordering::AcqRel) {
            for remote in &self.shared.loops {
                remote.push(Command::Shutdown);
            }
        }
    }

    /// Waits until every loop and worker thread has exited (after a shutdown).
    /// Any handle may join; the others then return at once. Never from a
    /// handler (its own thread is among those joined).
    pub fn join(&self) {
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for t in threads {
            let _ = t.join();
        }
    }

    pub fn shutdown_and_join(&self) {
        self.shutdown();
        self.join();
    }
}

// Here rather than in handler.rs: ServerHandle's fields are private to this module.
impl Conn {
    /// The server this connection belongs to (a full handle: it can broadcast,
    /// publish, shut down; `join` it only from outside the server's threads).
    pub fn server(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.server),
        }
    }
}
