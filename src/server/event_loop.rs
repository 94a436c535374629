//! One event loop: a thread with its own `mio::Poll`, its own SO_REUSEPORT
//! listener, and every connection it accepted, owned outright (no locks on the
//! data path). It reads into one preallocated buffer, parses in place, hands
//! complete messages to workers in per-turn batches, and writes what the
//! workers and other threads send it, coalesced into one write per
//! connection per turn.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::handler::SendDeflate;
use super::handler::{Conn, ConnId, ConnShared, Decision, DropReason, Message};
use super::shared::{Command, Outgoing, Shared, SharedMessage, WorkerEvent};
use super::BackpressurePolicy;
use crate::protocol::close::code;
use crate::protocol::{AcceptOptions, Connection, Event, ProtocolConfig, Request, Sink, Timeout};

pub(crate) const WAKER: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
/// Reads per connection per turn before others get their turn.
const READ_BUDGET: usize = 8;
/// Iovecs per vectored write.
const MAX_IOVECS: usize = 64;
/// Frames up to this size are copied into the previous buffer instead of queued apart.
const COALESCE_MAX: usize = 4096;

/// Bytes waiting for the socket, in order. Small frames share one buffer;
/// large payloads stay where the sender put them and go out through writev.
#[derive(Default)]
struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
}

struct Chunk {
    data: Outgoing,
    /// Payload bytes reserved in the connection's buffered count.
    accounted: usize,
}

impl OutQueue {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn push(&mut self, data: Outgoing, accounted: usize) {
        if let Outgoing::Bytes(new) = &data {
            if new.len() <= COALESCE_MAX {
                if let Some(Chunk {
                    data: Outgoing::Bytes(back),
                    accounted: back_accounted,
                }) = self.chunks.back_mut()
                {
                    if back.len() + new.len() <= 64 * 1024 {
                        back.extend_from_slice(new);
                        *back_accounted += accounted;
                        return;
                    }
                }
            }
        }
        self.chunks.push_back(Chunk { data, accounted });
    }

    fn slices<'a>(&'a self, out: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut n = 0;
        let mut skip = self.offset;
        'chunks: for chunk in &self.chunks {
            for part in chunk.data.parts() {
                if part.len() <= skip {
                    skip -= part.len();
                    continue;
                }
                out[n] = IoSlice::new(&part[skip..]);
                skip = 0;
                n += 1;
                if n == MAX_IOVECS {
                    break 'chunks;
                }
            }
        }
        n
    }

    /// Marks `written` bytes as sent; returns the payload bytes of the frames completed.
    fn advance(&mut self, mut written: usize) -> usize {
        let mut released = 0;
        while let Some(front) = self.chunks.front() {
            let left = front.data.len() - self.offset;
            if written < left {
                self.offset += written;
                break;
            }
            written -= left;
            self.offset = 0;
            released += front.accounted;
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() {
            // Idle connections keep no queue allocation.
            self.chunks = VecDeque::new();
        }
        released
    }

    /// Drops everything; returns the payload bytes that were reserved.
    fn clear(&mut self) -> usize {
        let released = self.chunks.iter().map(|c| c.accounted).sum();
        self.chunks = VecDeque::new();
        self.offset = 0;
        released
    }
}

/// The protocol core writes its own frames (pongs, close frames, handshake
/// responses, messages it compressed) through this.
struct QueueSink<'a> {
    out: &'a mut OutQueue,
    /// Payload bytes of the connection's buffered amount that the next frame carries.
    accounted: usize,
}

impl<'a> QueueSink<'a> {
    fn new(out: &'a mut OutQueue) -> QueueSink<'a> {
        QueueSink { out, accounted: 0 }
    }

    fn accounted(out: &'a mut OutQueue, accounted: usize) -> QueueSink<'a> {
        QueueSink { out, accounted }
    }
}

impl Sink for QueueSink<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.out.push(
            Outgoing::Bytes(bytes.to_vec()),
            std::mem::take(&mut self.accounted),
        );
    }

    fn frame(&mut self, head: &[u8], payload: &[u8], mask: Option<[u8; 4]>) {
        debug_assert!(mask.is_none(), "servers do not mask");
        let mut v = Vec::with_capacity(head.len() + payload.len());
        v.extend_from_slice(head);
        v.extend_from_slice(payload);
        self.out
            .push(Outgoing::Bytes(v), std::mem::take(&mut self.accounted));
    }
}

struct ConnState {
    stream: TcpStream,
    proto: Connection,
    /// Unconsumed input (a partial header or control frame, a partial request head).
    tail: Box<[u8]>,
    out: OutQueue,
    /// Present once the connection is open.
    shared: Option<Arc<ConnShared>>,
    /// Accepted beyond max_connections: the request gets a 503.
    over_capacity: bool,
    /// on_open was dispatched, so on_close is owed exactly once.
    close_owed: bool,
    in_dirty: bool,
    write_failed: bool,
    /// We shut down our sending side and wait for the peer's EOF.
    lingering: bool,
    /// Both close frames were exchanged and nothing followed the peer's.
    handshake_closed: bool,
    /// Our last close frame, waiting for the worker's [`Command::CloseAck`].
    held_close: Option<Box<[u8]>>,
    /// `on_open` has returned ([`Command::Opened`]). Until then broadcast and
    /// published frames wait in the loop's `deferred`, so they follow what
    /// `on_open` sends.
    opened: bool,
}

struct Slot {
    generation: u32,
    conn: Option<ConnState>,
}

/// Counters kept per loop and folded into the shared ones once per turn, so
/// loops do not contend on them per message.
#[derive(Default)]
struct LocalStats {
    messages_in: u64,
    bytes_in: u64,
    messages_out: u64,
    bytes_out: u64,
}

enum Action {
    None,
    Request(Request),
    Message(crate::protocol::MessageKind, Vec<u8>),
    Closed(u16, String),
    HandshakeFailed,
}

pub(crate) struct EventLoop {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    /// The one read buffer: `tail_room` bytes where a connection's tail is
    /// put back in front of what the socket gives.
    rbuf: Box<[u8]>,
    tail_room: usize,
    rx: Receiver<Command>,
    shared: Arc<Shared>,
    proto_config: Arc<ProtocolConfig>,
    workers: Arc<[Sender<Vec<WorkerEvent>>]>,
    batches: Vec<Vec<WorkerEvent>>,
    dirty: Vec<usize>,
    pending_reads: Vec<usize>,
    shutdown_deadline: Option<Instant>,
    next_sweep: Instant,
    sweep_every: Duration,
    stats: LocalStats,
    /// Topic → subscribed slots on this loop, and the reverse for cleanup.
    topics: HashMap<Arc<str>, Vec<usize>>,
    subscriptions: HashMap<usize, Vec<Arc<str>>>,
    /// Shared frames for connections whose `on_open` has not returned yet
    /// (rare and short-lived, so kept here rather than in every connection).
    deferred: HashMap<usize, Vec<Arc<SharedMessage>>>,
}

impl EventLoop {
    pub fn new(
        index: usize,
        poll: Poll,
        listener: TcpListener,
        rx: Receiver<Command>,
        shared: Arc<Shared>,
        workers: Arc<[Sender<Vec<WorkerEvent>>]>,
    ) -> io::Result<EventLoop> {
        let mut listener = listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let cfg = &shared.config;
        let tail_room = cfg.protocol.handshake.max_request_bytes.max(4096);
        let rbuf = vec![0u8; tail_room + cfg.read_buffer_size.max(4096)].into_boxed_slice();
        let proto_config = Arc::new(cfg.protocol.clone());
        let sweep_every = cfg.sweep_interval();
        Ok(EventLoop {
            index,
            poll,
            listener: Some(listener),
            slots: Vec::with_capacity(cfg.reserved_slots()),
            free: Vec::with_capacity(cfg.reserved_slots()),
            live: 0,
            rbuf,
            tail_room,
            rx,
            batches: (0..workers.len()).map(|_| Vec::new()).collect(),
            workers,
            shared,
            proto_config,
            dirty: Vec::new(),
            pending_reads: Vec::new(),
            shutdown_deadline: None,
            next_sweep: Instant::now() + sweep_every,
            sweep_every,
            stats: LocalStats::default(),
            topics: HashMap::new(),
            subscriptions: HashMap::new(),
            deferred: HashMap::new(),
        })
    }

    fn remote(&self) -> &super::shared::LoopRemote {
        &self.shared.loops[self.index]
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.shutdown_deadline {
                if self.live == 0 || now >= deadline {
                    break;
                }
            }
            let mut timeout = self.next_sweep.saturating_duration_since(now);
            if let Some(d) = self.shutdown_deadline {
                timeout = timeout.min(d.saturating_duration_since(now));
            }
            if !self.pending_reads.is_empty() {
                timeout = Duration::ZERO;
            }
            // Announce the sleep, then look once more, so a command pushed in
            // between either is seen here or wakes the poll.
            self.remote().asleep.store(true, Ordering::SeqCst);
            if !self.rx.is_empty() {
                timeout = Duration::ZERO;
            }
            let polled = self.poll.poll(&mut events, Some(timeout));
            self.remote().asleep.store(false, Ordering::SeqCst);
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("loop {}: poll failed: {e}", self.index);
                    break;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER => self.accept_all(now),
                    Token(slot) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let to_eof = event.is_read_closed() || event.is_error();
                            self.read_conn(slot, now, to_eof);
                        }
                        if event.is_writable() {
                            self.mark_dirty(slot);
                        }
                    }
                }
            }
            for slot in std::mem::take(&mut self.pending_reads) {
                self.read_conn(slot, now, true);
            }
            self.handle_commands(now);
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + self.sweep_every;
            }
            self.flush_dirty(now);
            self.dispatch_batches();
            self.publish_stats();
        }
        self.release_all();
        self.dispatch_batches();
        self.publish_stats();
    }

    fn accept_all(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.add_conn(stream, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog for now.
                    log::warn!("loop {}: accept failed: {e}", self.index);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream, now: Instant) {
        let max = self.shared.config.max_connections;
        let count = self.shared.sockets.fetch_add(1, Ordering::AcqRel) + 1;
        if count > self.shared.config.max_sockets() {
            // Far past the limit: not even a 503, the descriptor is what we must save.
            self.shared.sockets.fetch_sub(1, Ordering::AcqRel);
            self.shared
                .stats
                .handshake_failures
                .capacity
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !cfg!(target_os = "linux") {
            // Linux copies it from the listener (see `bind_listeners`).
            let _ = stream.set_nodelay(true);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                if self.slots.len() >= 1 << 24 {
                    self.shared.sockets.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                self.slots.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("loop {}: register failed: {e}", self.index);
            self.free.push(slot);
            self.shared.sockets.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.slots[slot].conn = Some(ConnState {
            stream,
            proto: Connection::server(Arc::clone(&self.proto_config), now),
            tail: Box::default(),
            out: OutQueue::default(),
            shared: None,
            over_capacity: count > max,
            close_owed: false,
            in_dirty: false,
            write_failed: false,
            lingering: false,
            handshake_closed: false,
            held_close: None,
            opened: false,
        });
        self.live += 1;
        // The request may already be waiting: edge-triggered readiness was
        // armed at registration, so the first event will come; nothing to do.
    }

    fn conn_mut(&mut self, slot: usize) -> Option<&mut ConnState> {
        self.slots.get_mut(slot)?.conn.as_mut()
    }

    fn live_slot(&mut self, id: ConnId) -> Option<usize> {
        live_conn(&mut self.slots, self.index, id).map(|(slot, _)| slot)
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(c) = self.conn_mut(slot) {
            if !c.in_dirty {
                c.in_dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    fn worker_for(&self, slot: usize) -> usize {
        (slot * self.shared.loops.len() + self.index) % self.workers.len()
    }

    fn dispatch(&mut self, slot: usize, event: WorkerEvent) {
        if self.workers.is_empty() {
            // Inline dispatch: the handler runs here; what it sends comes back
            // through this loop's channel and goes out this same turn.
            return handle_event(&*self.shared.handler, event);
        }
        let w = self.worker_for(slot);
        self.batches[w].push(event);
    }

    fn dispatch_batches(&mut self) {
        for (w, batch) in self.batches.iter_mut().enumerate() {
            if !batch.is_empty() {
                // Blocks when the worker is far behind: this loop then stops
                // reading, which pushes back on its clients through TCP.
                let _ = self.workers[w].send(std::mem::take(batch));
            }
        }
    }

    fn publish_stats(&mut self) {
        let s = &self.shared.stats;
        let l = std::mem::take(&mut self.stats);
        if l.messages_in > 0 {
            s.messages_in.fetch_add(l.messages_in, Ordering::Relaxed);
            s.bytes_in.fetch_add(l.bytes_in, Ordering::Relaxed);
        }
        if l.messages_out > 0 {
            s.messages_out.fetch_add(l.messages_out, Ordering::Relaxed);
            s.bytes_out.fetch_add(l.bytes_out, Ordering::Relaxed);
        }
    }

    fn handle_of(&self, inner: &Arc<ConnShared>) -> Conn {
        Conn {
            inner: Arc::clone(inner),
            server: Arc::clone(&self.shared),
        }
    }

    /// Reads what the socket has. A short read means it is drained: under
    /// edge-triggered readiness any later data raises a new event, so the
    /// extra read that would only return EAGAIN is skipped (one syscall per
    /// message saved). With `to_eof` (the event also reported the peer's FIN
    /// or an error, which raise no further edge) it reads on to EOF.
    fn read_conn(&mut self, slot: usize, now: Instant, to_eof: bool) {
        let read_len = self.rbuf.len() - self.tail_room;
        for _ in 0..READ_BUDGET {
            let tail_room = self.tail_room;
            let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
                return;
            };
            if c.write_failed {
                return self.release(slot);
            }
            let read = c.stream.read(&mut self.rbuf[tail_room..]);
            let n = match read {
                Ok(0) => return self.on_eof(slot, now),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.on_eof(slot, now),
            };
            let drained = n < read_len && !to_eof;
            if c.lingering || c.proto.is_closed() {
                // After the close, input is only drained so the socket ends cleanly.
                if drained {
                    return;
                }
                continue;
            }
            let tail = std::mem::take(&mut c.tail);
            let start = tail_room - tail.len();
            self.rbuf[start..tail_room].copy_from_slice(&tail);
            self.process_input(slot, start, tail_room + n, drained, now);
            if drained {
                return;
            }
        }
        self.pending_reads.push(slot);
    }

    /// Runs the protocol over `rbuf[start..end]` and acts on each event;
    /// `drained`: the socket had nothing more to give after these bytes.
    fn process_input(
        &mut self,
        slot: usize,
        start: usize,
        end: usize,
        drained: bool,
        now: Instant,
    ) {
        let mut pos = start;
        loop {
            let Some(c) = self.slots[slot].conn.as_mut() else {
                return;
            };
            // What the protocol writes lands here first: a final close frame may
            // have to wait for the worker (see `held_close`).
            let mut written = Vec::new();
            let r = c.proto.read(&mut self.rbuf[pos..end], now, &mut written);
            if r.needs_input() {
                break;
            }
            let wrote = !written.is_empty();
            let hold = wrote
                && c.close_owed
                && matches!(r.event, Some(Event::Close(_)) | Some(Event::Failed(_)));
            if hold {
                c.held_close = Some(written.into_boxed_slice());
            } else if wrote {
                c.out.push(Outgoing::Bytes(written), 0);
            }
            pos += r.consumed;
            if matches!(r.event, Some(Event::Close(_))) {
                // The peer's close frame was the last thing it sent: once ours
                // is out, the socket can simply be closed (see `flush`).
                c.handshake_closed = drained && pos == end;
            }
            let action = match r.event {
                None | Some(Event::Ping(_)) | Some(Event::Pong(_)) => Action::None,
                Some(Event::Request(req)) => Action::Request(req),
                Some(Event::Message(kind, payload)) => Action::Message(kind, payload.into_vec()),
                Some(Event::Close(f)) => Action::Closed(f.code, f.reason.to_string()),
                Some(Event::Failed(e)) => Action::Closed(e.close_code(), e.reason().to_string()),
                Some(Event::HandshakeFailed(_)) => Action::HandshakeFailed,
            };
            if wrote {
                self.mark_dirty(slot);
            }
            match action {
                Action::None => {}
                Action::Request(req) => self.on_request(slot, req, now),
                Action::Message(kind, data) => {
                    self.stats.messages_in += 1;
                    self.stats.bytes_in += data.len() as u64;
                    if let Some(inner) = c_shared(&self.slots[slot]) {
                        let conn = self.handle_of(&inner);
                        self.dispatch(slot, WorkerEvent::Message(conn, Message::new(kind, data)));
                    }
                }
                Action::Closed(code, reason) => self.report_close(slot, code, reason, true),
                Action::HandshakeFailed => {
                    self.shared
                        .stats
                        .handshake_failures
                        .invalid
                        .fetch_add(1, Ordering::Relaxed);
                    self.mark_dirty(slot);
                }
            }
            if pos == end {
                break;
            }
        }
        let Some(c) = self.slots[slot].conn.as_mut() else {
            return;
        };
        if c.proto.is_closed() {
            self.mark_dirty(slot);
        } else if pos < end {
            c.tail = self.rbuf[pos..end].into();
        }
    }

    fn on_request(&mut self, slot: usize, req: Request, now: Instant) {
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        let failures = &shared.stats.handshake_failures;
        let Some(c) = self.conn_mut(slot) else { return };
        let mut sink = QueueSink::new(&mut c.out);
        if c.over_capacity || shared.shutting_down.load(Ordering::Acquire) {
            failures.capacity.fetch_add(1, Ordering::Relaxed);
            c.proto.respond(
                503,
                &[("Retry-After", "1")],
                b"server at capacity",
                now,
                &mut sink,
            );
            return self.mark_dirty(slot);
        }
        if !req.is_upgrade() {
            let answer = catch_unwind(AssertUnwindSafe(|| shared.handler.on_http(&req)))
                .unwrap_or_else(|_| {
                    Some(super::HttpResponse {
                        status: 500,
                        headers: Vec::new(),
                        body: b"handler panicked".to_vec(),
                    })
                });
            match answer {
                Some(resp) => {
                    let headers = str_pairs(&resp.headers);
                    c.proto
                        .respond(resp.status, &headers, &resp.body, now, &mut sink);
                }
                None => {
                    failures.invalid.fetch_add(1, Ordering::Relaxed);
                    let _ = c
                        .proto
                        .accept(&req, &AcceptOptions::default(), now, &mut sink);
                }
            }
            return self.mark_dirty(slot);
        }
        if req.validate_upgrade().is_err() {
            failures.invalid.fetch_add(1, Ordering::Relaxed);
            let _ = c
                .proto
                .accept(&req, &AcceptOptions::default(), now, &mut sink);
            return self.mark_dirty(slot);
        }
        if !cfg.allowed_origins.is_empty() {
            let allowed = req.origin().is_some_and(|o| {
                cfg.allowed_origins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o))
            });
            if !allowed {
                failures.origin.fetch_add(1, Ordering::Relaxed);
                c.proto
                    .respond(403, &[], b"origin not allowed", now, &mut sink);
                return self.mark_dirty(slot);
            }
        }
        let offered = req
            .protocols()
            .find(|p| cfg.subprotocols.iter().any(|s| s == p));
        let decision = catch_unwind(AssertUnwindSafe(|| {
            shared.handler.on_upgrade(&req, offered)
        }))
        .unwrap_or_else(|_| Decision::reject(500, "handler panicked"));
        match decision {
            Decision::Reject {
                status,
                headers,
                body,
            } => {
                failures.rejected.fetch_add(1, Ordering::Relaxed);
                let headers = str_pairs(&headers);
                c.proto.respond(status, &headers, &body, now, &mut sink);
                self.mark_dirty(slot)
            }
            Decision::Accept {
                protocol,
                headers,
                subscribe,
            } => {
                let hdrs = str_pairs(&headers);
                let opts = AcceptOptions {
                    protocol: protocol.as_deref(),
                    extensions: None,
                    headers: &hdrs,
                };
                let accepted = c.proto.accept(&req, &opts, now, &mut sink);
                if accepted.is_err() {
                    failures.invalid.fetch_add(1, Ordering::Relaxed);
                    return self.mark_dirty(slot);
                }
                let generation = self.slots[slot].generation;
                let c = self.slots[slot].conn.as_mut().expect("present");
                let inner = Arc::new(ConnShared {
                    id: ConnId::new(self.index, slot, generation),
                    buffered: Default::default(),
                    open: true.into(),
                    want_drain: false.into(),
                    protocol: protocol.map(String::into_boxed_str),
                    // Asked now rather than kept from accept: idle
                    // connections are smaller without it.
                    peer: c.stream.peer_addr().ok(),
                    deflate: c.proto.deflate().map(|a| SendDeflate {
                        shared: a.server_no_context_takeover,
                        window: a.server_max_window_bits,
                    }),
                });
                c.shared = Some(Arc::clone(&inner));
                c.close_owed = true;
                {
                    let mut reg = self
                        .remote()
                        .registry
                        .write()
                        .unwrap_or_else(|e| e.into_inner());
                    if reg.len() <= slot {
                        reg.resize(slot + 1, None);
                    }
                    reg[slot] = Some(Arc::clone(&inner));
                }
                shared
                    .stats
                    .connections_open
                    .fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .connections_total
                    .fetch_add(1, Ordering::Relaxed);
                for topic in subscribe {
                    self.subscribe(slot, topic.into());
                }
                let conn = self.handle_of(&inner);
                self.dispatch(slot, WorkerEvent::Open(conn, Box::new(req)));
                self.mark_dirty(slot);
            }
        }
    }

    /// Tells the handler the connection closed, once. With `ack`, the close
    /// frame is held until the worker is through (sends from earlier events
    /// still count); otherwise further sends stop at once.
    fn report_close(&mut self, slot: usize, code: u16, reason: String, ack: bool) {
        let Some(c) = self.conn_mut(slot) else { return };
        let Some(inner) = c.shared.clone() else {
            return;
        };
        let ack = ack && c.held_close.is_some();
        if !ack {
            inner.open.store(false, Ordering::Release);
        }
        if !std::mem::take(&mut c.close_owed) {
            return;
        }
        self.shared
            .stats
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        let conn = self.handle_of(&inner);
        self.dispatch(slot, WorkerEvent::Close(conn, code, reason, ack));
    }

    fn on_eof(&mut self, slot: usize, now: Instant) {
        if let Some(c) = self.conn_mut(slot) {
            c.proto.transport_closed(now);
        }
        self.report_close(slot, code::ABNORMAL, String::new(), false);
        self.release(slot);
    }

    /// Frees the slot and the socket (telling the handler first, if it is owed).
    fn release(&mut self, slot: usize) {
        self.report_close(slot, code::ABNORMAL, String::new(), false);
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(mut c) = s.conn.take() else { return };
        s.generation = s.generation.wrapping_add(1);
        // No epoll_ctl(DEL): closing the descriptor (dropping `c`, below)
        // removes it from the poll set, as it is never duplicated.
        if let Some(inner) = &c.shared {
            inner.open.store(false, Ordering::Release);
            let deferred: usize = self
                .deferred
                .remove(&slot)
                .map_or(0, |list| list.iter().map(|m| m.data.len()).sum());
            inner.release(c.out.clear() + deferred);
            let mut reg = self.shared.loops[self.index]
                .registry
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = reg.get_mut(slot) {
                *entry = None;
            }
        }
        drop(c);
        for topic in self.subscriptions.get(&slot).cloned().unwrap_or_default() {
            self.unsubscribe(slot, &topic);
        }
        self.free.push(slot);
        self.live -= 1;
        self.shared.sockets.fetch_sub(1, Ordering::AcqRel);
    }

    fn release_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.release(slot);
        }
    }

    fn handle_commands(&mut self, now: Instant) {
        // Bounded per turn so a flood of sends cannot starve reads and timers.
        for _ in 0..65_536 {
            let Ok(cmd) = self.rx.try_recv() else { return };
            match cmd {
                Command::Send {
                    id,
                    frame,
                    accounted,
                } => {
                    let Some((slot, c)) = live_conn(&mut self.slots, self.index, id) else {
                        continue;
                    };
                    if !c.proto.is_open() && c.held_close.is_none() {
                        if let Some(inner) = &c.shared {
                            inner.release(accounted);
                        }
                        continue;
                    }
                    self.stats.messages_out += 1;
                    self.stats.bytes_out += accounted as u64;
                    c.out.push(frame, accounted);
                    self.mark_dirty(slot);
                }
                Command::Ping { id, payload } => {
                    let Some((slot, c)) = live_conn(&mut self.slots, self.index, id) else {
                        continue;
                    };
                    let _ = c.proto.ping(&payload, &mut QueueSink::new(&mut c.out));
                    self.mark_dirty(slot);
                }
                Command::Close { id, code, reason } => {
                    let Some((slot, c)) = live_conn(&mut self.slots, self.index, id) else {
                        continue;
                    };
                    let _ = c
                        .proto
                        .close(code, &reason, now, &mut QueueSink::new(&mut c.out));
                    if let Some(inner) = &c.shared {
                        inner.open.store(false, Ordering::Release);
                    }
                    self.mark_dirty(slot);
                }
                Command::SendCompressed {
                    id,
                    kind,
                    data,
                    accounted,
                } => {
                    let Some((slot, c)) = live_conn(&mut self.slots, self.index, id) else {
                        continue;
                    };
                    let sent = c.proto.send(
                        kind,
                        &data,
                        &mut QueueSink::accounted(&mut c.out, accounted),
                    );
                    if sent.is_err() {
                        if let Some(inner) = &c.shared {
                            inner.release(accounted);
                        }
                        continue;
                    }
                    self.stats.messages_out += 1;
                    self.stats.bytes_out += accounted as u64;
                    self.mark_dirty(slot);
                }
                Command::Broadcast { message, exclude } => self.broadcast(message, exclude, now),
                Command::Subscribe { id, topic } => {
                    if let Some(slot) = self.live_slot(id) {
                        self.subscribe(slot, topic);
                    }
                }
                Command::Unsubscribe { id, topic } => {
                    if let Some(slot) = self.live_slot(id) {
                        self.unsubscribe(slot, &topic);
                    }
                }
                Command::Publish {
                    topic,
                    message,
                    exclude,
                } => self.publish(&topic, message, exclude, now),
                Command::Opened { id } => {
                    let Some((slot, c)) = live_conn(&mut self.slots, self.index, id) else {
                        continue;
                    };
                    c.opened = true;
                    for message in self.deferred.remove(&slot).unwrap_or_default() {
                        queue_shared(c, &message, &self.shared.config.protocol.deflate);
                    }
                    self.mark_dirty(slot);
                }
                Command::CloseAck { id } => {
                    let Some((slot, c)) = live_conn(&mut self.slots, self.index, id) else {
                        continue;
                    };
                    if let Some(bytes) = c.held_close.take() {
                        c.out.push(Outgoing::Bytes(bytes.into_vec()), 0);
                    }
                    self.mark_dirty(slot);
                }
                Command::Shutdown => self.begin_shutdown(now),
            }
        }
    }

    fn broadcast(&mut self, message: Arc<SharedMessage>, exclude: Option<ConnId>, now: Instant) {
        for slot in 0..self.slots.len() {
            self.deliver_shared(slot, &message, exclude, now);
        }
    }

    fn publish(
        &mut self,
        topic: &str,
        message: Arc<SharedMessage>,
        exclude: Option<ConnId>,
        now: Instant,
    ) {
        let Some(slots) = self.topics.get(topic) else {
            return;
        };
        for slot in slots.clone() {
            self.deliver_shared(slot, &message, exclude, now);
        }
    }

    /// Queues one shared message for `slot`, under its cap and policy.
    fn deliver_shared(
        &mut self,
        slot: usize,
        message: &Arc<SharedMessage>,
        exclude: Option<ConnId>,
        now: Instant,
    ) {
        let cap = self.shared.config.max_buffered;
        let policy = self.shared.config.backpressure;
        let Some(c) = self.slots[slot].conn.as_mut() else {
            return;
        };
        let Some(inner) = &c.shared else { return };
        if Some(inner.id) == exclude || !c.proto.is_open() {
            return;
        }
        let len = message.data.len();
        match inner.reserve(len, cap) {
            Ok(_) => {
                self.stats.messages_out += 1;
                self.stats.bytes_out += len as u64;
                if !c.opened {
                    self.deferred
                        .entry(slot)
                        .or_default()
                        .push(Arc::clone(message));
                    return;
                }
                queue_shared(c, message, &self.shared.config.protocol.deflate);
            }
            Err(DropReason::Backpressure) => {
                let s = &self.shared.stats;
                s.dropped_backpressure.fetch_add(1, Ordering::Relaxed);
                if policy == BackpressurePolicy::Close && inner.open.swap(false, Ordering::AcqRel) {
                    s.closed_backpressure.fetch_add(1, Ordering::Relaxed);
                    let _ = c.proto.close(
                        code::POLICY_VIOLATION,
                        "send buffer full",
                        now,
                        &mut QueueSink::new(&mut c.out),
                    );
                }
            }
            Err(DropReason::Closed) => return,
        }
        self.mark_dirty(slot);
    }

    fn subscribe(&mut self, slot: usize, topic: Arc<str>) {
        let subs = self.subscriptions.entry(slot).or_default();
        if subs.contains(&topic) {
            return;
        }
        subs.push(Arc::clone(&topic));
        self.topics.entry(topic).or_default().push(slot);
    }

    fn unsubscribe(&mut self, slot: usize, topic: &str) {
        if let Some(subs) = self.subscriptions.get_mut(&slot) {
            subs.retain(|t| &**t != topic);
            if subs.is_empty() {
                self.subscriptions.remove(&slot);
            }
        }
        if let Some(slots) = self.topics.get_mut(topic) {
            slots.retain(|s| *s != slot);
            if slots.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(now + self.shared.config.shutdown_timeout);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for slot in 0..self.slots.len() {
            let Some(c) = self.slots[slot].conn.as_mut() else {
                continue;
            };
            if c.shared.is_none() {
                // Still handshaking: nothing to say goodbye to.
                self.release(slot);
                continue;
            }
            let _ = c.proto.close(
                code::GOING_AWAY,
                "server shutting down",
                now,
                &mut QueueSink::new(&mut c.out),
            );
            if let Some(inner) = &c.shared {
                inner.open.store(false, Ordering::Release);
            }
            self.mark_dirty(slot);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let close_timeout = self.proto_config.close_timeout;
        for slot in 0..self.slots.len() {
            let Some(c) = self.slots[slot].conn.as_mut() else {
                continue;
            };
            if let Some(at) = c.proto.closed_since() {
                // Closed, but the peer neither read our last bytes nor hung up.
                if now >= at + close_timeout {
                    self.release(slot);
                }
                continue;
            }
            if c.proto.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            let before = c.out.chunks.len();
            let fired = c.proto.handle_timeout(now, &mut QueueSink::new(&mut c.out));
            let wrote = c.out.chunks.len() != before;
            match fired {
                Some(Timeout::Handshake) => {
                    self.shared
                        .stats
                        .handshake_failures
                        .timeout
                        .fetch_add(1, Ordering::Relaxed);
                    self.release(slot);
                    continue;
                }
                Some(Timeout::Pong) => {
                    self.report_close(slot, code::ABNORMAL, "ping timeout".into(), false)
                }
                Some(Timeout::Close) => {
                    self.report_close(slot, code::ABNORMAL, "close timeout".into(), false)
                }
                Some(Timeout::Idle) => {
                    if let Some(inner) = c_shared(&self.slots[slot]) {
                        inner.open.store(false, Ordering::Release);
                    }
                }
                None => {}
            }
            if wrote || fired.is_some() {
                self.mark_dirty(slot);
            }
        }
    }

    fn flush_dirty(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            if let Some(c) = self.conn_mut(slot) {
                c.in_dirty = false;
            }
            self.flush(slot, now);
        }
        // Keep the allocation for the next turn.
        self.dirty = dirty;
        self.dirty.clear();
    }

    fn flush(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        while !c.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = c.out.slices(&mut slices);
            // One slice (the common echo reply) takes the plain send path,
            // cheaper in the kernel than writev's iovec import.
            let wrote = if n == 1 {
                c.stream.write(&slices[0])
            } else {
                c.stream.write_vectored(&slices[..n])
            };
            match wrote {
                Ok(0) => {
                    c.write_failed = true;
                    break;
                }
                Ok(written) => {
                    let released = c.out.advance(written);
                    if released > 0 {
                        if let Some(inner) = &c.shared {
                            inner.release(released);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.write_failed = true;
                    break;
                }
            }
        }
        if c.write_failed {
            let released = c.out.clear();
            if let Some(inner) = &c.shared {
                inner.release(released);
            }
            if !c.proto.is_closed() {
                c.proto.transport_closed(now);
            }
            self.report_close(slot, code::ABNORMAL, String::new(), false);
            return self.release(slot);
        }
        let drained = c.out.is_empty();
        if drained {
            if let Some(inner) = c.shared.clone() {
                if inner.want_drain.swap(false, Ordering::AcqRel)
                    && inner.open.load(Ordering::Acquire)
                {
                    let conn = self.handle_of(&inner);
                    self.dispatch(slot, WorkerEvent::Drain(conn));
                }
            }
        }
        let Some(c) = self.conn_mut(slot) else { return };
        if c.proto.is_closed() {
            if drained && c.held_close.is_none() && c.handshake_closed {
                // The close handshake is complete and the socket holds no
                // unread input, so close(2) ends it with a FIN, not a reset:
                // no half-close, no waiting for the peer's EOF.
                return self.release(slot);
            }
            if drained && !c.lingering && c.held_close.is_none() {
                // Everything said: half-close and wait (bounded by the close
                // timeout) for the peer's EOF, so unread input cannot turn our
                // last frames into a reset.
                c.lingering = true;
                let _ = c.stream.shutdown(Shutdown::Write);
                if c.shared.is_none() {
                    // A refused handshake: no WebSocket close frames to wait for.
                    self.report_close(slot, code::ABNORMAL, String::new(), false);
                }
            }
        }
    }
}

/// Queues a shared message in the form this connection takes: plain, the
/// message's one compressed frame for its window (no context takeover), or
/// compressed with the connection's own compressor (context takeover).
fn queue_shared(
    c: &mut ConnState,
    message: &SharedMessage,
    opts: &crate::protocol::deflate::DeflateOptions,
) {
    let len = message.data.len();
    match c
        .shared
        .as_ref()
        .and_then(|i| i.deflate)
        .filter(|_| len >= opts.threshold)
    {
        None => c
            .out
            .push(Outgoing::Shared(Arc::clone(&message.plain)), len),
        Some(d) if d.shared => c
            .out
            .push(Outgoing::Shared(message.compressed(opts, d.window)), len),
        Some(_) => {
            let _ = c.proto.send(
                message.kind,
                &message.data,
                &mut QueueSink::accounted(&mut c.out, len),
            );
        }
    }
}

/// The slot and state of connection `id` on loop `index`, if it is still that
/// connection (a free function so callers keep their other fields borrowable).
fn live_conn(slots: &mut [Slot], index: usize, id: ConnId) -> Option<(usize, &mut ConnState)> {
    let slot = id.slot();
    let s = slots.get_mut(slot)?;
    if id.loop_index() != index || s.generation != id.generation() {
        return None;
    }
    Some((slot, s.conn.as_mut()?))
}

fn str_pairs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

fn c_shared(slot: &Slot) -> Option<Arc<ConnShared>> {
    slot.conn.as_ref()?.shared.clone()
}

/// Runs the handler for a batch of events, one at a time, catching panics so
/// one bad event cannot take the worker (or the process) down.
pub(crate) fn run_worker(rx: Receiver<Vec<WorkerEvent>>, shared: Arc<Shared>) {
    let handler = Arc::clone(&shared.handler);
    drop(shared);
    for batch in rx.iter() {
        for event in batch {
            handle_event(&*handler, event);
        }
    }
}

/// Runs the handler for one event (on a worker, or inline on the loop),
/// catching panics so one bad event cannot take the thread down.
fn handle_event(handler: &dyn super::Handler, event: WorkerEvent) {
    let result = catch_unwind(AssertUnwindSafe(|| match event {
        WorkerEvent::Open(conn, req) => {
            let opened = catch_unwind(AssertUnwindSafe(|| handler.on_open(&conn, &req)));
            conn.server
                .command(conn.inner.id, Command::Opened { id: conn.inner.id });
            if let Err(panic) = opened {
                std::panic::resume_unwind(panic);
            }
        }
        WorkerEvent::Message(conn, msg) => handler.on_message(&conn, msg),
        WorkerEvent::Close(conn, code, reason, ack) => {
            conn.inner.open.store(false, Ordering::Release);
            handler.on_close(&conn, code, &reason);
            if ack {
                conn.server
                    .command(conn.inner.id, Command::CloseAck { id: conn.inner.id });
            }
        }
        WorkerEvent::Drain(conn) => handler.on_drain(&conn),
    }));
    if result.is_err() {
        log::error!("handler panicked; the event was dropped");
    }
}
