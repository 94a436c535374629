//! [`Server`]: binds the listeners and starts the loop and worker threads.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use super::dispatch::{spawn_workers, Dispatcher};
use super::event_loop::{EventLoop, WAKER};
use super::mailbox::Mailbox;
use super::node_sink::NodeSink;
use super::server_state::ServerState;
use super::topic_interest::TopicInterest;
use super::{Config, ConnId, Dispatch, Handler, ServerHandle};

/// Starts servers.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds the listeners and starts every thread. Returns once the server
    /// accepts connections.
    pub fn start<H: Handler>(config: Config, handler: H) -> io::Result<ServerHandle> {
        Self::start_arc(config, Arc::new(handler))
    }

    /// [`Server::start`] with a handler the caller keeps a reference to.
    pub fn start_arc(config: Config, handler: Arc<dyn Handler>) -> io::Result<ServerHandle> {
        let loops = config.loop_count().min(ConnId::MAX_LOOPS);
        let listeners = bind_listeners(config.listen, loops, config.backlog)?;
        let local_addr = listeners[0].local_addr()?;

        let mut polls = Vec::with_capacity(loops);
        let mut mailboxes = Vec::with_capacity(loops);
        for index in 0..loops {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            polls.push(poll);
            mailboxes.push(Mailbox::new(index, waker, config.reserved_slots()));
        }
        let dispatch = config.dispatch;
        let broker = config.broker.clone();
        let server = ServerHandle::new(Arc::new(ServerState {
            interest: broker
                .as_ref()
                .map(|b| Arc::new(TopicInterest::new(Arc::clone(b)))),
            config,
            mailboxes,
            stats: Default::default(),
            sockets: 0.into(),
            shutting_down: false.into(),
            local_addr,
            threads: Mutex::new(Vec::new()),
            ip_limits: Default::default(),
        }));
        if let Some(broker) = &broker {
            broker.start(Arc::new(NodeSink(Arc::downgrade(server.state()))))?;
        }
        match spawn_threads(&server, &handler, dispatch, polls, listeners) {
            Ok(threads) => {
                *server
                    .state()
                    .threads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = threads;
                Ok(server)
            }
            Err(e) => {
                // What did start winds down; the broker's threads end now.
                server.shutdown();
                if let Some(broker) = &broker {
                    broker.stop();
                }
                Err(e)
            }
        }
    }
}

/// The worker threads, then one thread per loop.
fn spawn_threads(
    server: &ServerHandle,
    handler: &Arc<dyn Handler>,
    dispatch: Dispatch,
    polls: Vec<Poll>,
    listeners: Vec<StdTcpListener>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let loops = polls.len();
    let (inboxes, mut threads) = spawn_workers(dispatch, handler, server.state())?;
    for (index, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
        listener.set_nonblocking(true)?;
        let listener = mio::net::TcpListener::from_std(listener);
        let dispatcher = Dispatcher::new(
            Arc::clone(handler),
            Arc::clone(&inboxes),
            (index, loops),
            server.state(),
        );
        let event_loop = EventLoop::new(
            index,
            poll,
            listener,
            server.clone(),
            handler.clone(),
            dispatcher,
        )?;
        let state = Arc::clone(server.state());
        threads.push(
            std::thread::Builder::new()
                .name(format!("sockwave-loop-{index}"))
                .spawn(move || {
                    state.adopt_current_thread();
                    drop(state);
                    event_loop.run()
                })?,
        );
    }
    Ok(threads)
}

/// One listener per loop on the same address with SO_REUSEPORT, so the kernel
/// spreads accepts across loops. Port 0 binds the first and reuses its port.
///
/// SO_REUSEPORT would also let a second server (of the same user) bind the
/// same address and silently take half of its connections. So the address
/// is first bound without it: that fails with `AddrInUse` while anything
/// listens there, sockwave or not. Only then is this server's group bound.
fn bind_listeners(addr: SocketAddr, count: usize, backlog: i32) -> io::Result<Vec<StdTcpListener>> {
    let mut out: Vec<StdTcpListener> = Vec::with_capacity(count);
    let mut addr = addr;
    if addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe
            .bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("{e} (another server listens there)")))?;
    }
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux,
        // which saves a setsockopt per connection (see `TcpTransport::new`).
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
