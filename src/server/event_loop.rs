//! [`EventLoop`]: one loop thread's turn. Poll; accept; read every readable
//! connection into the one read buffer and run the protocol over it in place
//! (an inline handler's replies are written as soon as their connection is
//! read; with workers, a turn that reads much hands its batches over in
//! slices and writes the replies each brings back); take the commands other
//! threads sent; fire the timers that are due; hand the rest of the turn's
//! events to the workers, one batch per worker, and take what they send back
//! at once if they share this core; write every connection that still has
//! something to say, once.
//!
//! The loop owns its connections outright (no locks on the data path). How
//! it accepts, answers upgrades, carries out commands and acts on deadlines
//! is in `loop_accept.rs`, `loop_upgrade.rs`, `loop_commands.rs` and
//! `loop_timers.rs`. The parts it turns are named types: [`ConnTable`] (slots and generations),
//! [`LoopConn`](super::loop_conn::LoopConn) and its [`Lifecycle`], [`OutQueue`](super::out_queue::OutQueue),
//! [`Timers`], [`Topics`], [`Dispatcher`], the [`Transport`] under each
//! connection, and [`decide`](super::upgrade::decide) for the upgrade. Every end of a connection
//! goes through [`EventLoop::end`].

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use super::command::Command;
use super::conn_inner::ConnInner;
use super::conn_table::ConnTable;
use super::core_sharing::CoreSharing;
use super::dispatch::{Dispatcher, WorkerEvent};
use super::lent_queue::{self, LentQueue};
use super::lifecycle::Lifecycle;
use super::mailbox;
use super::out_queue::{self, QueueSink};
use super::prepared::PreparedMessage;
use super::proxy_protocol::{self, Proxied};
use super::rate_limit::{ConnLimits, RateLimitPolicy};
use super::server_state::ServerState;
use super::stats::{HandshakeFailure, LoopStats, TlsFailure};
use super::timers::Timers;
use super::topics::Topics;
use super::transport::Transport;
use super::{Config, ConnId, Handler, Message, ServerHandle};
use crate::protocol::close::code;
use crate::protocol::{Event, MessageKind, Payload, ProtocolConfig};

pub(crate) const WAKER: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
/// How long accepting waits after the process ran out of descriptors.
pub(super) const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Handshakes (a TLS handshake's steps, request heads) a loop progresses per
/// turn: a flood of them cannot starve the connections that are open (their
/// reads and writes come first every turn; the rest of the handshakes wait
/// for the next).
const HANDSHAKES_PER_TURN: usize = 64;
/// Reads per connection per turn before others get their turn.
const READ_BUDGET: usize = 8;
/// How often the thread's caches give back what they did not reuse.
const CACHE_TRIM_EVERY: Duration = Duration::from_secs(1);

/// One event loop and everything it owns.
pub(crate) struct EventLoop {
    pub(super) index: usize,
    pub(super) poll: Poll,
    pub(super) listener: Option<TcpListener>,
    pub(super) conns: ConnTable,
    /// The one read buffer: `tail_room` bytes in front, where a connection's
    /// unconsumed tail is put back before what the socket gives.
    pub(super) read_buf: Box<[u8]>,
    pub(super) tail_room: usize,
    /// The commands taken from the mailbox this turn (kept for its allocation).
    pub(super) taken: Vec<Command>,
    /// Publishes to one topic that came one after another, not yet
    /// delivered (see `deliver_publish_run`), and their topic.
    pub(super) publish_run: Vec<(Arc<PreparedMessage>, Option<ConnId>)>,
    pub(super) publish_topic: Option<Arc<str>>,
    pub(super) server: ServerHandle,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) proto_config: Arc<ProtocolConfig>,
    pub(super) dispatcher: Dispatcher,
    pub(super) topics: Topics,
    pub(super) timers: Timers,
    /// Connections that used their read budget and have more to give.
    pub(super) pending_reads: Vec<usize>,
    /// Connections whose request head waits until their worker has fewer
    /// `on_open` calls of this loop waiting (see [`OPENS_WAITING_PER_WORKER`](super::dispatch::OPENS_WAITING_PER_WORKER)).
    held_heads: Vec<usize>,
    /// With workers: how a hand-off lets a worker on this core run, and
    /// whether the loop runs under `SCHED_BATCH`.
    core_sharing: Option<CoreSharing>,
    /// Transport handshakes this turn may still progress.
    pub(super) handshake_budget: usize,
    pub(super) shutdown_deadline: Option<Instant>,
    /// Accepting failed (out of descriptors, say): try again at this instant.
    /// Under edge-triggered readiness the listener raises no new event for
    /// connections already waiting in its backlog.
    pub(super) accept_retry: Option<Instant>,
    /// When the thread's caches are next trimmed.
    next_trim: Instant,
    /// Wake for that trim, busy or not: the caches keep something.
    trim_wake: Option<Instant>,
    pub(super) stats: LoopStats,
}

impl EventLoop {
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        mut listener: TcpListener,
        server: ServerHandle,
        handler: Arc<dyn Handler>,
        dispatcher: Dispatcher,
    ) -> io::Result<EventLoop> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let cfg = server.config();
        let tail_room = tail_room(cfg);
        let read_buf = read_buffer(cfg);
        let topics = Topics::new(server.state().interest.clone(), cfg.max_subscriptions);
        Ok(EventLoop {
            index,
            poll,
            listener: Some(listener),
            conns: ConnTable::new(index, cfg.reserved_slots()),
            read_buf,
            tail_room,
            taken: Vec::new(),
            publish_run: Vec::new(),
            publish_topic: None,
            proto_config: Arc::new(cfg.protocol.clone()),
            server,
            handler,
            dispatcher,
            topics,
            timers: Timers::new(Instant::now()),
            pending_reads: Vec::new(),
            held_heads: Vec::new(),
            core_sharing: None,
            handshake_budget: HANDSHAKES_PER_TURN,
            shutdown_deadline: None,
            accept_retry: None,
            next_trim: Instant::now(),
            trim_wake: None,
            stats: LoopStats::default(),
        })
    }

    fn state(&self) -> &ServerState {
        self.server.state()
    }

    /// Turns until shutdown is complete, then releases everything.
    pub(crate) fn run(mut self) {
        self.state().mailboxes[self.index].adopt_own_thread();
        let _closes = ClosesMailbox(Arc::clone(self.server.state()), self.index);
        if self.dispatcher.has_workers() {
            self.core_sharing = Some(CoreSharing::adopt_loop_thread());
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.len() == 0 || now >= deadline {
                    break;
                }
            }
            let polled = self.poll(&mut events, now);
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("loop {}: poll failed: {e}", self.index);
                    break;
                }
            }
            let now = Instant::now();
            if let Some(sharing) = &mut self.core_sharing {
                sharing.note_turn(now, &self.server.state().stats);
            }
            out_queue::set_turn(now);
            self.trim_caches(now);
            self.handshake_budget = HANDSHAKES_PER_TURN;
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER => self.accept_all(now),
                    Token(slot) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let to_eof = event.is_read_closed() || event.is_error();
                            self.read_conn_contained(slot, now, to_eof);
                            if self.dispatcher.wants_hand_off() {
                                self.hand_off(now);
                            } else if self.conns.take_dirty_slot(slot) {
                                self.write_early(slot);
                            }
                        }
                        // Every event reports the socket writable while it
                        // is, a read's too: only a connection that waits
                        // for that room is flushed for it (see
                        // `LoopConn::awaits_writable`).
                        if event.is_writable()
                            && self
                                .conns
                                .get_mut(slot)
                                .is_some_and(|c| c.awaits_writable())
                        {
                            self.conns.mark_dirty(slot);
                        }
                    }
                }
            }
            if self.accept_retry.is_some_and(|at| now >= at) {
                self.accept_all(now);
            }
            for slot in std::mem::take(&mut self.pending_reads) {
                self.read_conn_contained(slot, now, true);
            }
            // The rest of the turn's events go to the workers now, not
            // after the writes: where a worker shares this core, stepping
            // aside lets it answer them before the loop sleeps, and the answers
            // are written this turn. Handed over after the sleep began, each
            // answer woke the loop through its waker for a second turn (one
            // more `epoll_wait` and `write` on the waker per turn): pinned to
            // one core, 100 connections × 20 B, one in flight, 186-193k →
            // 197-210k msgs/s (5 rounds, each ahead); one connection 13k → 16k.
            // Before held request heads are released: an `Opened` this
            // hand-off brings back must release them. (The hand-off takes
            // the turn's commands itself.)
            if self.dispatcher.has_batched() {
                self.hand_off(now);
            } else {
                self.handle_commands(now);
            }
            if !self.held_heads.is_empty() {
                self.release_held_heads();
            }
            self.fire_timers(now);
            self.flush_dirty();
            self.dispatcher.flush(now);
            out_queue::fold_send_waits(&self.server.state().stats.send_latency);
            self.fold_queued_bytes();
        }
        for slot in 0..self.conns.slot_bound() {
            self.release(slot);
        }
        self.dispatcher.flush(Instant::now());
        self.stats.fold_into(&self.server.state().stats);
    }

    /// Hands what this turn has read so far to the workers, lets them run,
    /// and queues and writes what they sent back, before reading on. A turn
    /// that reads megabytes (1,000 connections x 16 KiB) and hands them over
    /// at its end leaves the worker and then the loop's writes to find every
    /// message out of cache; in slices of `HAND_OFF_BYTES` (or
    /// `HAND_OFF_EVENTS` small messages), each is read, handled, queued and
    /// written while it is still there. Where the worker shares this core
    /// (it took its last batch on this CPU), the loop steps aside for it
    /// ([`CoreSharing`]), which is what lets it run now; a worker on another
    /// core handles the batch beside the loop, which reads on at once.
    fn hand_off(&mut self, now: Instant) {
        if self.dispatcher.flush(now) {
            if let Some(sharing) = &mut self.core_sharing {
                sharing.let_worker_run(&self.server.state().mailboxes[self.index]);
            }
        }
        self.handle_commands(now);
        self.flush_dirty();
    }

    /// Writes what an inline handler queued for the connection just read,
    /// before the loop reads the next one, as uWebSockets uncorks a socket
    /// after its data handler. A turn that wrote every connection's replies
    /// at its end had queued them all first (16 MB at 1,000 connections x
    /// 1 KiB x 16 in flight), and the kernel's copy of them read memory out
    /// of cache: written as they are made, they leave from buffers still in
    /// cache, and the pool hands the same few to the next connection. (The
    /// same holds for the replies a hand-off brings back: with workers,
    /// `_copy_from_iter` fell from 5.6% to 1.8% of the samples.)
    fn write_early(&mut self, slot: usize) {
        self.count_before_writing();
        self.flush(slot);
    }

    /// Folds what the loop counted into the server's stats, before the
    /// bytes it counted go out: a peer that reads our answer and then the
    /// stats finds its message in them.
    fn count_before_writing(&mut self) {
        self.stats.fold_into(&self.server.state().stats);
    }

    /// Frees what this thread's caches (large buffers, out-queue storage,
    /// message-in-progress boxes) kept and did not reuse for a second. While
    /// they keep anything, the loop wakes a second later to look again, so an
    /// idle loop gives a burst's memory back too.
    fn trim_caches(&mut self, now: Instant) {
        crate::buffer_pool::maintain(now);
        if now < self.next_trim {
            return;
        }
        self.next_trim = now + CACHE_TRIM_EVERY;
        let kept = out_queue::trim_spares()
            + crate::protocol::conn::trim_spares()
            + crate::buffer_pool::kept()
            + self.dispatcher.trim();
        self.trim_wake = (kept > 0).then_some(self.next_trim);
    }

    /// Reads next turn the request heads whose workers take opens again (their
    /// `Opened` came back in this turn's commands).
    fn release_held_heads(&mut self) {
        self.held_heads.sort_unstable();
        self.held_heads.dedup();
        let (dispatcher, pending) = (&mut self.dispatcher, &mut self.pending_reads);
        self.held_heads.retain(|&slot| {
            let released = dispatcher.takes_open_for(slot);
            if released {
                pending.push(slot);
            }
            !released
        });
    }

    /// Moves this turn's change in queued bytes into the loop's gauge.
    fn fold_queued_bytes(&self) {
        let delta = out_queue::take_queued_delta();
        let gauge = &self.server.state().mailboxes[self.index].queued_bytes;
        if delta > 0 {
            gauge.fetch_add(delta as usize, Ordering::Relaxed);
        } else if delta < 0 {
            gauge.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Blocks until something happens or the next deadline.
    fn poll(&mut self, events: &mut Events, now: Instant) -> io::Result<()> {
        let next = [
            self.timers.next_deadline(),
            self.shutdown_deadline,
            self.accept_retry,
            self.trim_wake,
        ]
        .into_iter()
        .flatten()
        .min();
        let mut timeout = next.map(|at| at.saturating_duration_since(now));
        if !self.pending_reads.is_empty() {
            timeout = Some(Duration::ZERO);
        }
        let mailbox = &self.server.state().mailboxes[self.index];
        if let Some(bound) = mailbox.sleep_bound() {
            timeout = Some(timeout.map_or(bound, |t| t.min(bound)));
        }
        // Announced under the queue's lock: a command sent from here on
        // wakes the poll, and one sent before is seen now.
        if !mailbox.sleep() || mailbox::own_pending() {
            timeout = Some(Duration::ZERO);
        }
        let polled = self.poll.poll(events, timeout);
        mailbox.woke();
        polled
    }

    /// [`read_conn`](Self::read_conn), with a panic in it contained to the
    /// connection. Its input is what a remote peer controls, so a bug of
    /// ours that it meets (an index out of bounds, say: a 15,873-byte
    /// message once met one in the buffer pool) must not take the loop
    /// thread down with every other connection on it. The connection is
    /// dropped (its handler sees 1006), the panic is counted and logged, and
    /// the loop goes on. Nothing is given up on the normal path: unwinding
    /// costs only when it happens.
    fn read_conn_contained(&mut self, slot: usize, now: Instant, to_eof: bool) {
        let read = catch_unwind(AssertUnwindSafe(|| self.read_conn(slot, now, to_eof)));
        if read.is_err() {
            if self.read_buf.is_empty() {
                // Taken by `process_input` and dropped by the unwinding.
                self.read_buf = read_buffer(self.server.config());
            }
            log::error!(
                "loop {}: panicked while reading connection {slot}; dropping it",
                self.index
            );
            self.server
                .state()
                .stats
                .loop_panics
                .fetch_add(1, Ordering::Relaxed);
            self.release(slot);
        }
    }

    /// Reads what the transport has. A short read means it is drained: under
    /// edge-triggered readiness any later data raises a new event, so the
    /// extra read that would only return EAGAIN is skipped (one syscall per
    /// message saved). With `to_eof` (the event also reported the peer's FIN
    /// or an error, which raise no further edge) it reads on to EOF.
    ///
    /// A connection whose queue is over the cap is not read: whatever it
    /// sends would only make the server queue more (pongs, close echoes, the
    /// replies of an echo handler) for a peer that does not read. TCP pushes
    /// back on it instead, and reading resumes once the queue drains (see
    /// `flush`).
    fn read_conn(&mut self, slot: usize, now: Instant, to_eof: bool) {
        let tail_room = self.tail_room;
        let read_len = self.read_buf.len() - tail_room;
        let cap = self.server.config().max_buffered;
        for _ in 0..READ_BUDGET {
            let Some(c) = self.conns.get_mut(slot) else {
                return;
            };
            if c.limits.as_ref().is_some_and(|l| l.paused_until.is_some()) {
                // Over its rate: the timer that ends the pause reads it again.
                return;
            }
            if c.owed() >= cap {
                c.read_paused = true;
                if to_eof {
                    // The peer hung up or reset: a write will tell which.
                    self.conns.mark_dirty(slot);
                }
                return;
            }
            let handshaking = c.transport.handshaking();
            if handshaking || matches!(c.lifecycle, Lifecycle::Handshaking { .. }) {
                if !self.dispatcher.takes_open_for(slot) {
                    // Not read, so not missed: the slot is read once released.
                    return self.held_heads.push(slot);
                }
                if self.handshake_budget == 0 {
                    return self.pending_reads.push(slot);
                }
                self.handshake_budget -= 1;
            }
            let read = c.transport.read(&mut self.read_buf[tail_room..]);
            if handshaking {
                let tls = &self.server.state().stats.tls;
                match &read {
                    Ok(0) => tls.failed(TlsFailure::Closed),
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        tls.failed(TlsFailure::Invalid)
                    }
                    _ if !c.transport.handshaking() => tls.done(),
                    _ => {}
                }
            }
            let n = match read {
                Ok(0) => return self.release(slot),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.release(slot),
            };
            let drained = c.transport.drained_by(n, read_len) && !to_eof;
            if matches!(c.lifecycle, Lifecycle::Lingering) || c.proto.is_closed() {
                // After the close, input is only drained so the socket ends cleanly.
                if drained {
                    return;
                }
                continue;
            }
            let tail = c.take_tail();
            let start = tail_room - tail.len();
            self.read_buf[start..tail_room].copy_from_slice(&tail);
            self.process_input(slot, start, tail_room + n, drained, now);
            // What an inline handler sent goes into its queues now, while
            // the messages it answers are still in cache.
            if mailbox::own_pending() {
                self.handle_own_commands(now);
            }
            if drained {
                return;
            }
        }
        self.pending_reads.push(slot);
    }

    /// Runs the protocol over `read_buf[start..end]` and acts on each event;
    /// `drained`: the socket had nothing more to give after these bytes.
    fn process_input(
        &mut self,
        slot: usize,
        start: usize,
        end: usize,
        drained: bool,
        now: Instant,
    ) {
        // Taken out for the call, so that a message lent from it (see
        // `Handler::on_message_lent`) can be read while the rest of the loop
        // is in use. A panic in between drops it: see `read_conn_contained`.
        let mut buf = std::mem::take(&mut self.read_buf);
        self.process_input_in(&mut buf, slot, start, end, drained, now);
        self.read_buf = buf;
    }

    fn process_input_in(
        &mut self,
        buf: &mut [u8],
        slot: usize,
        start: usize,
        end: usize,
        drained: bool,
        now: Instant,
    ) {
        // Where `buf` starts, to find a lent message in it again once the
        // event that lends it (which also borrows the connection) is gone.
        let base = buf.as_ptr() as usize;
        let mut pos = start;
        while pos < end {
            let Some(c) = self.conns.get_mut(slot) else {
                return;
            };
            if let Lifecycle::Handshaking {
                awaiting_proxy: awaiting @ true,
                ..
            } = &mut c.lifecycle
            {
                match proxy_protocol::parse(&buf[pos..end]) {
                    Ok(Some((proxied, n))) => {
                        *awaiting = false;
                        if let Proxied::Client(addr) = proxied {
                            c.set_proxied_client(addr);
                        }
                        pos += n;
                        continue;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // A trusted proxy must say whose connection it is.
                        self.count_failure(HandshakeFailure::Invalid);
                        return self.release(slot);
                    }
                }
            }
            let r = c
                .proto
                .read(&mut buf[pos..end], now, &mut QueueSink::new(&mut c.out));
            if r.needs_input() {
                break;
            }
            pos += r.consumed;
            // The connection's id, not its shared part: a lent message's
            // handler borrows that from the table (`dispatch_lent`), and only
            // a message that leaves the thread takes a counted reference.
            let id = c.inner.as_ref().map(|i| i.id);
            match r.event {
                None | Some(Event::Pong(_)) => {}
                Some(Event::Ping(_)) => self.conns.mark_dirty(slot),
                Some(Event::Request(req)) => self.on_request(slot, req, now),
                Some(Event::Message(kind, payload)) => {
                    #[cfg(test)]
                    if payload.as_slice() == tests::PANIC_ON {
                        panic!("a bug of ours, met on one connection's input");
                    }
                    // A small message may come lent (see `lend_small_messages`).
                    let (lent, owned) = match payload {
                        Payload::Borrowed(b) => {
                            let at = b.as_ptr() as usize - base;
                            (at..at + b.len(), None)
                        }
                        Payload::Owned(v) => (0..0, Some(v)),
                    };
                    let len = owned.as_ref().map_or(lent.len(), Vec::len);
                    self.stats.received(len);
                    if !self.within_rate(slot, len, now) {
                        continue;
                    }
                    let Some(id) = id else { continue };
                    if let Some(topic) = self.topics.relay_of(slot) {
                        // A relay: published here, no handler call.
                        let topic = Arc::clone(topic);
                        let data = owned.as_deref().unwrap_or(&buf[lent]);
                        self.server.publish(&topic, kind, data, Some(id));
                        if let Some(v) = owned {
                            crate::buffer_pool::give(v);
                        }
                        continue;
                    }
                    match owned {
                        Some(v) => self.dispatch_message(slot, Message::new(kind, v)),
                        None => self.dispatch_lent(slot, kind, &buf[lent]),
                    }
                }
                Some(Event::Close(frame)) => {
                    let (code, reason) = (frame.code, frame.reason.to_string());
                    self.end(slot, code, reason);
                    // The peer's close frame was the last thing it sent: once
                    // ours is out, the socket can simply be closed (see `flush`).
                    if let Some(c) = self.conns.get_mut(slot) {
                        if let Lifecycle::Closing { clean } = &mut c.lifecycle {
                            *clean = drained && pos == end;
                        }
                    }
                }
                Some(Event::Failed(e)) => self.end(slot, e.close_code(), e.reason().to_string()),
                Some(Event::HandshakeFailed(_)) => {
                    self.count_failure(HandshakeFailure::Invalid);
                    self.conns.mark_dirty(slot);
                }
            }
        }
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if c.proto.is_closed() {
            self.conns.mark_dirty(slot);
        } else if pos < end {
            c.keep_tail(&buf[pos..end]);
        }
    }

    /// Charges a message of `len` bytes to the connection's rate limits.
    /// Over them, the policy: close with 1008 (and the message is not
    /// handed on: false), or stop reading until the buckets have refilled.
    fn within_rate(&mut self, slot: usize, len: usize, now: Instant) -> bool {
        let state = self.server.state();
        let limit = &state.config.rate_limit;
        if !limit.per_connection() {
            return true;
        }
        let Some(c) = self.conns.get_mut(slot) else {
            return false;
        };
        // Full buckets at the first message: as full as they would have
        // been by then had they existed since the accept.
        let limits = c
            .limits
            .get_or_insert_with(|| Box::new(ConnLimits::new(limit, None, now)));
        let Some(wait) = limits.charge(limit, len, now) else {
            return true;
        };
        match limit.policy {
            RateLimitPolicy::Close => {
                // What it sent after the first breach is dropped unseen.
                if c.inner
                    .as_ref()
                    .is_none_or(|i| i.open.load(Ordering::Acquire))
                {
                    state
                        .stats
                        .rate_limit_closed
                        .fetch_add(1, Ordering::Relaxed);
                    c.start_close(code::POLICY_VIOLATION, "rate limit exceeded", now);
                    self.conns.mark_dirty(slot);
                }
                false
            }
            RateLimitPolicy::Pause => {
                if limits.paused_until.is_none() {
                    state
                        .stats
                        .rate_limit_paused
                        .fetch_add(1, Ordering::Relaxed);
                }
                limits.paused_until = Some(now + wait);
                self.reschedule(slot);
                true
            }
        }
    }

    pub(super) fn count_failure(&self, why: HandshakeFailure) {
        self.state().stats.handshake_failures.count(why);
    }

    /// The one place a connection's end is reported: `on_close` is
    /// dispatched once, for a connection that was opened, and the shared
    /// open flag cleared. When the protocol holds back its close frame (the
    /// peer closed), the worker acknowledges the close before it goes out,
    /// and sends made before that still go out first.
    pub(super) fn end(&mut self, slot: usize, code: u16, reason: String) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if !c.lifecycle.close_owed() {
            return;
        }
        // We closed (backpressure, a rate limit, the idle timeout, the
        // application) and the peer never answered: that is why it ended,
        // not a network drop.
        let (code, reason) = match c.proto.started_close() {
            Some(ours) if code == code::ABNORMAL => (
                ours,
                "closed by the server; the client did not answer".into(),
            ),
            _ => (code, reason),
        };
        let deferred: usize = if c.lifecycle.end() {
            c.take_deferred().iter().map(|m| m.len()).sum()
        } else {
            0
        };
        let inner = Arc::clone(
            c.inner
                .as_ref()
                .expect("an opened connection has its inner"),
        );
        inner.release(deferred);
        let ack = c.proto.holds_close_reply();
        if !ack {
            c.stop_sends();
        }
        self.state()
            .stats
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        self.state().mailboxes[self.index]
            .open
            .fetch_sub(1, Ordering::Relaxed);
        self.dispatcher.dispatch(
            slot,
            WorkerEvent::Close {
                conn: inner,
                code,
                reason,
                ack,
            },
        );
    }

    /// Frees the slot and the socket, reporting the end first if it is owed
    /// (as 1006: the connection ended without a close handshake).
    pub(super) fn release(&mut self, slot: usize) {
        self.end(slot, code::ABNORMAL, String::new());
        let Some(mut c) = self.conns.remove(slot) else {
            return;
        };
        if let Some(inner) = &c.inner {
            inner.open.store(false, Ordering::Release);
            inner.release(c.out.clear() + c.transport.abandon());
            self.server.state().mailboxes[self.index].register(slot, None);
        }
        self.topics.remove(slot);
        let state = self.server.state();
        if let Some(ip) = c.limits.as_ref().and_then(|l| l.ip) {
            state.ip_limits.release(ip, &state.config.rate_limit);
        }
        state.sockets.fetch_sub(1, Ordering::AcqRel);
    }

    pub(super) fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(now + self.server.config().shutdown_timeout);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for slot in 0..self.conns.slot_bound() {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            if c.inner.is_none() {
                // Still handshaking: nothing to say goodbye to.
                self.release(slot);
                continue;
            }
            c.start_close(code::GOING_AWAY, "server shutting down", now);
            self.conns.mark_dirty(slot);
        }
    }

    /// Hands a message to the handler (see [`dispatch_to`](Self::dispatch_to)).
    fn dispatch_message(&mut self, slot: usize, message: Message) {
        self.dispatch_to(slot, |d, inner| d.dispatch_message(slot, inner, message));
    }

    /// [`dispatch_message`](Self::dispatch_message) for a message lent from
    /// the read buffer (see `Handler::on_message_lent`).
    fn dispatch_lent(&mut self, slot: usize, kind: MessageKind, data: &[u8]) {
        self.dispatch_to(slot, |d, inner| d.dispatch_lent(slot, inner, kind, data));
    }

    /// Runs `call`, a dispatch for the connection in `slot`, with the
    /// connection's shared part borrowed from the table, which holds it for
    /// longer than the call: a handler's handle made from it counts nothing
    /// (a counted reference's clone and drop were two atomic operations a
    /// message, which `perf` put at 16 ns of a 1 KiB echo's 170 ns in user
    /// space). Inline, the connection's queue is lent to this thread for the
    /// call when it takes messages (see `lent_queue`), so the handler's
    /// replies to it go straight in.
    fn dispatch_to(&mut self, slot: usize, call: impl FnOnce(&mut Dispatcher, &Arc<ConnInner>)) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        let Some(inner) = c.inner.as_ref() else {
            return;
        };
        if !self.dispatcher.is_inline() || !c.takes_messages() {
            return call(&mut self.dispatcher, inner);
        }
        let lent = LentQueue::lend(inner.id, &mut c.out);
        call(&mut self.dispatcher, inner);
        let sent = lent.give_back();
        self.count_lent(slot, sent);
    }

    /// Counts what a handler sent into the lent queue of the connection in
    /// `slot`, which then has something to write.
    fn count_lent(&mut self, slot: usize, (messages, bytes): lent_queue::Sent) {
        if messages > 0 {
            self.stats.sent_many(messages, bytes);
            self.conns.mark_dirty(slot);
        }
    }

    /// Writes every connection marked this turn (see
    /// [`EventLoop::count_before_writing`]).
    fn flush_dirty(&mut self) {
        self.count_before_writing();
        let dirty = self.conns.take_dirty();
        for &slot in &dirty {
            self.flush(slot);
        }
        self.conns.restore_dirty(dirty);
    }

    /// Writes what the connection owes, then moves it on if it is closing.
    fn flush(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if c.write_out().is_err() {
            return self.release(slot);
        }
        if c.read_paused && c.owed() < self.server.config().max_buffered {
            // What the peer sent while it was paused is still in the socket,
            // and no new edge will say so: read it next turn.
            c.read_paused = false;
            self.pending_reads.push(slot);
        }
        let drained = c.out.is_empty() && c.transport.wants_write() == 0;
        if drained {
            if let Some(inner) = c.inner.clone() {
                if inner.want_drain.swap(false, Ordering::AcqRel)
                    && inner.open.load(Ordering::Acquire)
                {
                    self.dispatcher.dispatch(slot, WorkerEvent::Drain(inner));
                }
            }
        }
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if c.proto.is_closed() && drained && !c.proto.holds_close_reply() {
            match c.lifecycle {
                // The close handshake is complete and the socket holds no
                // unread input, so close(2) ends it with a FIN, not a reset:
                // no half-close, no waiting for the peer's EOF.
                Lifecycle::Closing { clean: true } => {
                    c.transport.goodbye();
                    return self.release(slot);
                }
                Lifecycle::Lingering => {}
                _ => {
                    // Everything said: half-close and wait (bounded by the
                    // close timeout) for the peer's EOF, so unread input
                    // cannot turn our last frames into a reset.
                    c.lifecycle = Lifecycle::Lingering;
                    c.transport.shutdown_write();
                }
            }
        }
        self.refresh_timer(slot);
    }
}

/// Room before the read buffer's own bytes for a partial frame or request
/// head kept from the last read, so a message can be parsed in one piece.
fn tail_room(cfg: &Config) -> usize {
    cfg.protocol.handshake.max_request_bytes.max(4096)
}

/// A loop's read buffer: the tail room and what one read takes.
fn read_buffer(cfg: &Config) -> Box<[u8]> {
    vec![0u8; tail_room(cfg) + cfg.read_buffer_size.max(4096)].into_boxed_slice()
}

/// One message of a broadcast or publish for the connection in `slot` (a
/// function of the loop's parts, so a publish can walk its topic's
/// subscribers while it fills their queues).
pub(super) fn deliver(
    conns: &mut ConnTable,
    stats: &mut LoopStats,
    state: &ServerState,
    slot: usize,
    message: &Arc<PreparedMessage>,
    exclude: Option<ConnId>,
    now: Instant,
) {
    let Some(c) = conns.get_mut(slot) else {
        return;
    };
    if c.deliver(message, exclude, state, stats, now) {
        conns.mark_dirty(slot);
    }
}

/// Closes a loop's mailbox when the loop ends, by return or by panic: a
/// command sent to a loop that has gone is dropped, not kept forever.
struct ClosesMailbox(Arc<ServerState>, usize);

impl Drop for ClosesMailbox {
    fn drop(&mut self) {
        self.0.mailboxes[self.1].close();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use crate::server::{Config, Dispatch, Echo, Server};

    /// A message the loop panics on in this crate's tests only: a stand-in
    /// for a bug of ours that some input meets.
    pub(crate) const PANIC_ON: &[u8] = b"sockwave test: panic on this input";

    fn upgraded(addr: std::net::SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                s.read(&mut byte).unwrap(),
                1,
                "the response head ended early"
            );
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        s
    }

    /// A masked binary frame (mask key 0: the payload goes as it is).
    fn send(s: &mut TcpStream, payload: &[u8]) {
        assert!(payload.len() < 126);
        let mut frame = vec![0x82, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        s.write_all(&frame).unwrap();
    }

    fn recv(s: &mut TcpStream) -> Vec<u8> {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).unwrap();
        let mut payload = vec![0; usize::from(head[1] & 0x7f)];
        s.read_exact(&mut payload).unwrap();
        payload
    }

    #[test]
    fn a_panic_reading_one_connection_drops_it_and_the_loop_serves_the_rest() {
        for dispatch in [Dispatch::Workers(1), Dispatch::Inline] {
            let server = Server::start(
                Config {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    threads: 1,
                    dispatch,
                    shutdown_timeout: std::time::Duration::from_millis(100),
                    ..Config::default()
                },
                Echo,
            )
            .unwrap();
            let addr = server.local_addr();
            let (mut bystander, mut culprit) = (upgraded(addr), upgraded(addr));
            send(&mut bystander, b"before");
            assert_eq!(recv(&mut bystander), b"before");
            send(&mut culprit, PANIC_ON);
            let mut rest = Vec::new();
            culprit.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "dropped without a word: {rest:?}");
            send(&mut bystander, b"after");
            assert_eq!(recv(&mut bystander), b"after", "{dispatch:?}");
            let mut newcomer = upgraded(addr);
            send(&mut newcomer, b"new");
            assert_eq!(recv(&mut newcomer), b"new");
            let stats = server.stats();
            assert_eq!((stats.loop_panics, stats.connections_open), (1, 2));
            server.shutdown_and_join();
        }
    }
}
