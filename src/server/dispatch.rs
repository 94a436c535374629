//! Dispatch: where the handler runs. A loop's [`Dispatcher`] either runs it
//! on the loop thread ([`Dispatch::Inline`]) or batches [`WorkerEvent`]s per
//! turn for a pool of worker threads ([`Dispatch::Workers`]), one batch per
//! worker per turn, each connection always on the same worker so its events
//! keep their order.

use std::io;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::batch_vectors::BatchVectors;
use super::command::Command;
use super::conn_inner::ConnInner;
use super::mailbox::DeferredWakes;
use super::server_state::ServerState;
use super::stats::micros;
use super::worker_inbox::{current_cpu, worker_inbox, WorkerInbox, WorkerReceiver};
use super::{Conn, Dispatch, Handler, Message};
use crate::latency::LocalHistogram;
use crate::protocol::close::code;
use crate::protocol::{MessageKind, Request};

/// Batches a worker may have waiting before its loops block on it.
const WORKER_QUEUE_BATCHES: usize = 1024;
/// `on_open` calls a loop may have waiting at one worker (or, inline, not yet
/// confirmed by their `Opened`). Past it the loop takes no new request heads
/// for that worker's connections: a connect storm then cannot pile requests
/// up with a worker that is behind, and what the waiting requests hold is
/// freed before more are read, not left as holes between the connections
/// that stay: 275-313 B of RSS per idle connection at 10,000 became 260-265
/// (`scripts/idle_memory.py`), at the same connect rate.
pub(crate) const OPENS_WAITING_PER_WORKER: usize = 16;

/// What a loop hands the handler.
///
/// Each carries the connection's shared part, not a [`Conn`]: the handler is
/// lent a handle built around it (see [`LentConn`]).
pub(crate) enum WorkerEvent {
    Open(Arc<ConnInner>, Box<Request>),
    Message(Arc<ConnInner>, Message),
    /// Another message of the connection of the batch's event before it,
    /// a `Message` or another of these: the messages of one read (16
    /// pipelined, say) go to the worker with one counted reference to their
    /// connection, not one each, whose increment on the loop and decrement
    /// on the worker were two atomic operations a message.
    MessageAgain(Message),
    /// The last event of a connection. With `ack`, the protocol holds the
    /// connection's final close frame until the worker has handled every
    /// earlier event and answers with [`Command::CloseAck`], so replies to
    /// messages that arrived before the close still go out before it.
    Close {
        conn: Arc<ConnInner>,
        code: u16,
        reason: String,
        ack: bool,
    },
    Drain(Arc<ConnInner>),
}

/// Message bytes a loop's batches hold before it hands them to the workers
/// in the middle of a turn: what stays in the second-level cache until the
/// worker has handled it. Measured with one loop and one worker on one
/// core: 256 KiB did best (1,000 x 1 KiB x 16 in flight: +13-21%; 100 x
/// 1 KiB: +4-15%); 32 KiB cost more in thread switches than it saved, 1 MiB
/// gained less.
const HAND_OFF_BYTES: usize = 256 * 1024;

/// Events a loop's batches hold before it hands them to the workers in the
/// middle of a turn, however small their messages: each event has state of
/// its own on both threads (the event, its message's buffer, the reply's
/// command and frame, about 200 bytes), which the byte count above does not
/// see. At 100 connections × 20 B × 16 in flight a turn held 1,600 events
/// in one batch; handed over 512 at a time, the worker finds them still in
/// cache: +6% messages/s (8 interleaved rounds, median of the rounds'
/// ratios; 7 of 8 ahead), +2-5% at 1,000 connections × 20 B and 100 × 128 B.
/// Larger messages reach the byte count first and are unchanged.
const HAND_OFF_EVENTS: usize = 512;

/// The handle a handler is lent for one call, made without touching the
/// server's reference count. A `Conn` built per event cloned the server's
/// `Arc`, and its drop on the worker gave it back: two atomic operations per
/// message on one cache line that every loop and worker shares, which the
/// profile of a 1,000-connection echo put at a tenth of the server's time. A
/// handler that keeps the handle clones it, and the clone is counted as any.
/// On the loop thread the connection's shared part is lent the same way
/// ([`LentConn::borrowed`]).
pub(crate) struct LentConn {
    conn: ManuallyDrop<Conn>,
    /// Whether `conn.inner` is a counted reference to give back on drop.
    owns_inner: bool,
}

impl LentConn {
    /// A handle to `inner` lent for as long as `server` is held (the caller
    /// keeps its own reference for longer than this value lives).
    pub(crate) fn new(inner: Arc<ConnInner>, server: &Arc<ServerState>) -> LentConn {
        LentConn {
            conn: ManuallyDrop::new(Conn {
                inner,
                server: uncounted(server),
            }),
            owns_inner: true,
        }
    }

    /// [`new`](Self::new) for a connection whose shared part the caller
    /// holds, as `server`, for longer than this value lives: nothing counted.
    pub(crate) fn borrowed(inner: &Arc<ConnInner>, server: &Arc<ServerState>) -> LentConn {
        LentConn {
            conn: ManuallyDrop::new(Conn {
                inner: uncounted(inner),
                server: uncounted(server),
            }),
            owns_inner: false,
        }
    }
}

/// A second `Arc` to what `held` points to, without adding to its count:
/// never to be dropped (see `LentConn`'s `Drop`), and only while `held`
/// lives.
fn uncounted<T>(held: &Arc<T>) -> Arc<T> {
    // SAFETY: `held` is a live Arc, so its pointer is a valid `Arc`
    // allocation. The `Arc` made from it is never dropped (`LentConn`'s
    // `Drop` forgets it), so the count it did not add is never taken away,
    // and the caller keeps `held` for longer than the lent handle lives.
    unsafe { Arc::from_raw(Arc::as_ptr(held)) }
}

impl std::ops::Deref for LentConn {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl Drop for LentConn {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and the field is not used after.
        let Conn { inner, server } = unsafe { ManuallyDrop::take(&mut self.conn) };
        if self.owns_inner {
            drop(inner);
        } else {
            std::mem::forget(inner);
        }
        // Lent: the reference was never counted, so it is not given back.
        std::mem::forget(server);
    }
}

/// One loop turn's events for one worker, and when that turn read them.
pub(crate) struct Batch {
    at: Instant,
    events: Vec<WorkerEvent>,
    /// The loop that sent it (its mailbox counts the batches out at workers).
    from: usize,
    /// Where `events`, emptied, goes back to that loop.
    vectors: Arc<BatchVectors<WorkerEvent>>,
}

/// The worker threads' inboxes, shared by every loop.
pub(crate) type WorkerInboxes = Arc<[WorkerInbox<Batch>]>;

/// Starts the worker threads `dispatch` asks for (none for inline).
pub(crate) fn spawn_workers(
    dispatch: Dispatch,
    handler: &Arc<dyn Handler>,
    server: &Arc<ServerState>,
) -> io::Result<(WorkerInboxes, Vec<JoinHandle<()>>)> {
    let count = match dispatch {
        Dispatch::Inline => 0,
        Dispatch::Workers(0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Dispatch::Workers(n) => n,
    };
    let mut inboxes = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count);
    for w in 0..count {
        let (inbox, rx) = worker_inbox(WORKER_QUEUE_BATCHES);
        let handler = Arc::clone(handler);
        let server = Arc::clone(server);
        let thread = std::thread::Builder::new()
            .name(format!("sockwave-worker-{w}"))
            .spawn(move || {
                server.adopt_current_thread();
                run_worker(rx, handler, server)
            })?;
        inbox.set_worker(thread.thread().clone());
        threads.push(thread);
        inboxes.push(inbox);
    }
    Ok((inboxes.into(), threads))
}

/// Runs the handler for each batch of events, until every loop has gone.
/// How long a batch's messages waited for the worker is measured once per
/// batch: one clock read, a few shared counters, whatever the batch's size.
fn run_worker(mut rx: WorkerReceiver<Batch>, handler: Arc<dyn Handler>, server: Arc<ServerState>) {
    let mut waited = LocalHistogram::default();
    while let Some(batch) = rx.next() {
        let messages = batch
            .events
            .iter()
            .filter(|e| matches!(e, WorkerEvent::Message(..) | WorkerEvent::MessageAgain(..)))
            .count() as u64;
        if messages > 0 {
            waited.record_n(micros(batch.at.elapsed()), messages);
            waited.fold_into(&server.stats.dispatch_latency);
        }
        // The loops this batch's replies go to are woken once, at its end.
        let wakes = DeferredWakes::begin(&server.mailboxes);
        let mut events = batch.events;
        handle_batch(&*handler, &server, &mut events);
        drop(wakes);
        batch.vectors.give(events);
        if let Some(mailbox) = server.mailboxes.get(batch.from) {
            mailbox.batch_done();
        }
    }
}

/// One loop's side of dispatch.
pub(crate) enum Dispatcher {
    /// The handler runs here, on the loop thread.
    Inline {
        handler: Arc<dyn Handler>,
        server: Arc<ServerState>,
        /// `on_open` calls whose `Opened` the loop has not taken yet.
        opens_waiting: usize,
    },
    /// Events wait in `batches` (one per worker) until [`Dispatcher::flush`].
    Workers {
        inboxes: WorkerInboxes,
        batches: Vec<Vec<WorkerEvent>>,
        /// Message bytes in `batches`.
        batch_bytes: usize,
        /// Events in `batches`.
        batch_events: usize,
        /// Per worker, the connection (its shared part's address) whose
        /// message is the last event of its batch, or 0: a message of the
        /// same connection that follows goes as [`WorkerEvent::MessageAgain`].
        /// The batch holds that connection's reference, so the address
        /// names no other connection while it is here.
        runs: Vec<usize>,
        /// Per worker, `on_open` calls handed to it whose `Opened` the loop
        /// has not taken yet.
        opens_waiting: Vec<usize>,
        /// This loop's index and the number of loops, to spread slots over workers.
        loop_index: usize,
        loops: usize,
        /// Where this loop's mailbox counts its batches out at workers.
        server: Arc<ServerState>,
        /// The batches' vectors, given back by the workers.
        vectors: Arc<BatchVectors<WorkerEvent>>,
    },
}

impl Dispatcher {
    pub(crate) fn new(
        handler: Arc<dyn Handler>,
        inboxes: WorkerInboxes,
        (loop_index, loops): (usize, usize),
        server: &Arc<ServerState>,
    ) -> Dispatcher {
        if inboxes.is_empty() {
            return Dispatcher::Inline {
                handler,
                server: Arc::clone(server),
                opens_waiting: 0,
            };
        }
        Dispatcher::Workers {
            batch_bytes: 0,
            batch_events: 0,
            batches: (0..inboxes.len()).map(|_| Vec::new()).collect(),
            runs: vec![0; inboxes.len()],
            opens_waiting: vec![0; inboxes.len()],
            inboxes,
            loop_index,
            loops,
            server: Arc::clone(server),
            vectors: Arc::new(BatchVectors::new()),
        }
    }

    /// Whether handlers run on worker threads.
    pub(crate) fn has_workers(&self) -> bool {
        matches!(self, Dispatcher::Workers { .. })
    }

    /// Hands `event` of the connection in `slot` to the handler: at once
    /// (inline), or in this turn's batch for the connection's worker.
    pub(crate) fn dispatch(&mut self, slot: usize, event: WorkerEvent) {
        let worker = self.worker_of(slot);
        if matches!(event, WorkerEvent::Open(..)) {
            *self.opens_waiting_at(worker) += 1;
        }
        match self {
            // What an inline handler sends waits in this loop thread's own
            // list (see `mailbox`) and is queued as soon as it returns; a
            // reply to a message's own connection goes straight into its
            // queue (see `lent_queue`).
            Dispatcher::Inline {
                handler, server, ..
            } => handle_event(&**handler, server, event),
            Dispatcher::Workers {
                batches,
                batch_bytes,
                batch_events,
                runs,
                ..
            } => {
                if let WorkerEvent::Message(_, m) | WorkerEvent::MessageAgain(m) = &event {
                    *batch_bytes += m.as_bytes().len();
                }
                *batch_events += 1;
                runs[worker] = 0;
                batches[worker].push(event)
            }
        }
    }

    /// [`dispatch`](Self::dispatch) for a message of `inner`'s connection,
    /// which the caller holds: with workers, a reference to it is counted
    /// once per run of its messages in a batch (see
    /// [`WorkerEvent::MessageAgain`]).
    pub(crate) fn dispatch_message(
        &mut self,
        slot: usize,
        inner: &Arc<ConnInner>,
        message: Message,
    ) {
        let worker = self.worker_of(slot);
        let Dispatcher::Workers {
            batches,
            batch_bytes,
            batch_events,
            runs,
            ..
        } = self
        else {
            return self.dispatch(slot, WorkerEvent::Message(Arc::clone(inner), message));
        };
        *batch_bytes += message.as_bytes().len();
        *batch_events += 1;
        let key = Arc::as_ptr(inner) as usize;
        let event = if runs[worker] == key {
            WorkerEvent::MessageAgain(message)
        } else {
            runs[worker] = key;
            WorkerEvent::Message(Arc::clone(inner), message)
        };
        batches[worker].push(event);
    }

    /// Hands the inline handler a message lent from the loop's read buffer
    /// (see [`Handler::on_message_lent`]); with workers, a copy of it as
    /// any message.
    pub(crate) fn dispatch_lent(
        &mut self,
        slot: usize,
        inner: &Arc<ConnInner>,
        kind: MessageKind,
        data: &[u8],
    ) {
        match self {
            Dispatcher::Inline {
                handler, server, ..
            } => handle_lent_message(&**handler, server, inner, kind, data),
            Dispatcher::Workers { .. } => {
                self.dispatch_message(slot, inner, Message::copied(kind, data))
            }
        }
    }

    /// Whether the handler runs on the loop thread.
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self, Dispatcher::Inline { .. })
    }

    /// Whether this turn's batches hold enough message bytes or events to
    /// be handed to the workers before the loop reads on (see
    /// `EventLoop::hand_off`).
    pub(crate) fn wants_hand_off(&self) -> bool {
        matches!(self, Dispatcher::Workers { batch_bytes, batch_events, .. }
            if *batch_bytes >= HAND_OFF_BYTES || *batch_events >= HAND_OFF_EVENTS)
    }

    /// Whether this turn's batches hold any event.
    pub(crate) fn has_batched(&self) -> bool {
        matches!(self, Dispatcher::Workers { batch_events, .. } if *batch_events > 0)
    }

    /// Whether the connection in `slot` may have its request head read now:
    /// false while its worker has [`OPENS_WAITING_PER_WORKER`] `on_open`
    /// calls of this loop waiting. The loop is woken when they return.
    pub(crate) fn takes_open_for(&mut self, slot: usize) -> bool {
        let worker = self.worker_of(slot);
        *self.opens_waiting_at(worker) < OPENS_WAITING_PER_WORKER
    }

    /// The loop took the `Opened` of the connection in `slot`.
    pub(crate) fn opened(&mut self, slot: usize) {
        let worker = self.worker_of(slot);
        let waiting = self.opens_waiting_at(worker);
        *waiting = waiting.saturating_sub(1);
    }

    /// The `on_open` calls of this loop waiting at `worker` (inline: 0).
    fn opens_waiting_at(&mut self, worker: usize) -> &mut usize {
        match self {
            Dispatcher::Inline { opens_waiting, .. } => opens_waiting,
            Dispatcher::Workers { opens_waiting, .. } => &mut opens_waiting[worker],
        }
    }

    /// The worker that runs the handler of the connection in `slot`: always
    /// the same one, so its events keep their order.
    fn worker_of(&self, slot: usize) -> usize {
        match self {
            Dispatcher::Inline { .. } => 0,
            Dispatcher::Workers {
                batches,
                loop_index,
                loops,
                ..
            } => (slot * *loops + *loop_index) % batches.len(),
        }
    }

    /// Frees the batch vectors the workers gave back that no turn took for
    /// a second; how many are still kept.
    pub(crate) fn trim(&self) -> usize {
        match self {
            Dispatcher::Inline { .. } => 0,
            Dispatcher::Workers { vectors, .. } => vectors.trim(),
        }
    }

    /// Sends this turn's batches; `at` is when the turn read their events.
    /// True when one went to a worker that last ran on this thread's CPU:
    /// it most likely shares the core, and runs only once the loop waits.
    pub(crate) fn flush(&mut self, at: Instant) -> bool {
        let mut shares_core = false;
        if let Dispatcher::Workers {
            inboxes,
            batches,
            batch_bytes,
            batch_events,
            runs,
            loop_index,
            server,
            vectors,
            ..
        } = self
        {
            *batch_bytes = 0;
            *batch_events = 0;
            runs.fill(0);
            let mailbox = &server.mailboxes[*loop_index];
            let mut cpu = None;
            for (inbox, batch) in inboxes.iter().zip(batches.iter_mut()) {
                if !batch.is_empty() {
                    let here = *cpu.get_or_insert_with(current_cpu);
                    shares_core |= here.is_some_and(|c| inbox.last_ran_on(c));
                    // Blocks when the worker is far behind: this loop then stops
                    // reading, which pushes back on its clients through TCP.
                    // A vector a worker gave back takes the batch's place.
                    let events = std::mem::replace(batch, vectors.take());
                    mailbox.batch_sent();
                    let sent = inbox.send(Batch {
                        at,
                        events,
                        from: *loop_index,
                        vectors: Arc::clone(vectors),
                    });
                    if sent.is_err() {
                        mailbox.batch_done();
                    }
                }
            }
        }
        shares_core
    }
}

/// Runs the handler for each of a batch's events, in order, leaving
/// `events` empty.
fn handle_batch(handler: &dyn Handler, server: &Arc<ServerState>, events: &mut Vec<WorkerEvent>) {
    // The connection of the run of messages being handled.
    let mut run: Option<Arc<ConnInner>> = None;
    for event in events.drain(..) {
        match event {
            WorkerEvent::Message(inner, msg) => {
                handle_message(handler, server, &inner, msg);
                run = Some(inner);
            }
            WorkerEvent::MessageAgain(msg) => match &run {
                Some(inner) => handle_message(handler, server, inner, msg),
                // The loop starts every run with a `Message` (`dispatch_message`).
                None => {
                    debug_assert!(false, "a MessageAgain follows a Message");
                    log::error!("a message without its connection in a worker's batch");
                }
            },
            event => handle_event(handler, server, event),
        }
    }
}

/// [`handle_event`] for a message of `inner`'s connection, which the
/// caller holds.
fn handle_message(
    handler: &dyn Handler,
    server: &Arc<ServerState>,
    inner: &Arc<ConnInner>,
    msg: Message,
) {
    let conn = LentConn::borrowed(inner, server);
    let r = catch_unwind(AssertUnwindSafe(|| handler.on_message(&conn, msg)));
    if r.is_err() {
        after_panic(&conn);
    }
}

/// Runs the handler for one event (on a worker, or inline on the loop).
/// A panic is caught so it cannot take the thread (or the process) down: it
/// is counted, and the connection it happened on is closed with 1011, since
/// its handler's state can no longer be trusted; every other connection and
/// the worker go on.
fn handle_event(handler: &dyn Handler, server: &Arc<ServerState>, event: WorkerEvent) {
    let lend = |inner| LentConn::new(inner, server);
    let (conn, panicked) = match event {
        WorkerEvent::Open(inner, req) => {
            let conn = lend(inner);
            let r = catch_unwind(AssertUnwindSafe(|| handler.on_open(&conn, &req)));
            // Even when on_open panicked: the loop waits for this to let
            // broadcasts through.
            conn.server
                .command(conn.inner.id, Command::Opened { id: conn.inner.id });
            (conn, r.is_err())
        }
        WorkerEvent::Message(inner, msg) => return handle_message(handler, server, &inner, msg),
        WorkerEvent::MessageAgain(_) => {
            // Only a worker's batch holds one, and `handle_batch` takes it.
            debug_assert!(false, "a MessageAgain is handled in its batch");
            log::error!("a message without its connection outside a worker's batch");
            return;
        }
        WorkerEvent::Close {
            conn: inner,
            code,
            reason,
            ack,
        } => {
            let conn = lend(inner);
            conn.inner.open.store(false, Ordering::Release);
            let r = catch_unwind(AssertUnwindSafe(|| handler.on_close(&conn, code, &reason)));
            if ack {
                conn.server
                    .command(conn.inner.id, Command::CloseAck { id: conn.inner.id });
            }
            (conn, r.is_err())
        }
        WorkerEvent::Drain(inner) => {
            let conn = lend(inner);
            let r = catch_unwind(AssertUnwindSafe(|| handler.on_drain(&conn)));
            (conn, r.is_err())
        }
    };
    if panicked {
        after_panic(&conn);
    }
}

/// [`handle_event`] for a message lent from the loop's read buffer (see
/// [`Handler::on_message_lent`]): inline only.
fn handle_lent_message(
    handler: &dyn Handler,
    server: &Arc<ServerState>,
    inner: &Arc<ConnInner>,
    kind: MessageKind,
    data: &[u8],
) {
    let conn = LentConn::borrowed(inner, server);
    let r = catch_unwind(AssertUnwindSafe(|| {
        handler.on_message_lent(&conn, kind, data)
    }));
    if r.is_err() {
        after_panic(&conn);
    }
}

/// A handler panicked on `conn`: counted, and the connection closed with
/// 1011, since its handler's state can no longer be trusted.
#[cold]
fn after_panic(conn: &Conn) {
    log::error!(
        "handler panicked on connection {}; closing it with 1011",
        conn.id()
    );
    conn.server
        .stats
        .handler_panics
        .fetch_add(1, Ordering::Relaxed);
    conn.close(code::INTERNAL_ERROR, "handler panicked");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::prepared::Encoding;
    use crate::server::{Config, ConnId, ServerHandle};

    /// A connection's shared part, for the connection in `slot`.
    fn conn_inner(slot: usize) -> Arc<ConnInner> {
        Arc::new(ConnInner::new(
            ConnId::new(0, slot, 0),
            None,
            None,
            Encoding::Plain,
        ))
    }

    #[test]
    fn a_lent_handle_counts_nothing_it_borrows_and_a_kept_clone_counts_as_any() {
        let handle = ServerHandle::detached(Config::default());
        let server = Arc::clone(handle.state());
        let inner = conn_inner(0);
        let (servers, inners) = (Arc::strong_count(&server), Arc::strong_count(&inner));
        // `new` takes a counted reference to the connection (a worker's
        // event's) and gives it back; `borrowed` counts nothing.
        for owns in [true, false] {
            let lent = if owns {
                LentConn::new(Arc::clone(&inner), &server)
            } else {
                LentConn::borrowed(&inner, &server)
            };
            let own = usize::from(owns);
            assert_eq!(Arc::strong_count(&server), servers, "lent, not counted");
            assert_eq!(Arc::strong_count(&inner), inners + own);
            assert_eq!(lent.id(), inner.id);
            let kept: Conn = (*lent).clone();
            assert_eq!(
                Arc::strong_count(&server),
                servers + 1,
                "a kept clone counts"
            );
            assert_eq!(Arc::strong_count(&inner), inners + own + 1);
            drop(lent);
            assert_eq!(Arc::strong_count(&server), servers + 1);
            assert_eq!(
                Arc::strong_count(&inner),
                inners + 1,
                "an owned reference went back, a borrowed one was never taken"
            );
            drop(kept);
            assert_eq!(Arc::strong_count(&server), servers);
            assert_eq!(Arc::strong_count(&inner), inners);
        }
    }

    /// Notes the connection and bytes of each message it is handed.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(u64, Vec<u8>)>>);

    impl Handler for Recorder {
        fn on_message(&self, conn: &Conn, msg: Message) {
            let seen = (conn.id().as_u64(), msg.as_bytes().to_vec());
            self.0.lock().unwrap().push(seen);
        }
    }

    /// A loop's dispatcher with one worker, whose batches `rx` receives
    /// (no worker thread runs them), and the server it sends for.
    fn one_worker(
        handler: Arc<dyn Handler>,
    ) -> (ServerHandle, Dispatcher, WorkerReceiver<Batch>, mio::Poll) {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let mailbox = crate::server::mailbox::Mailbox::new(0, waker, 0);
        let handle = ServerHandle::detached_with(Config::default(), vec![mailbox]);
        let (inbox, rx) = worker_inbox(4);
        let d = Dispatcher::new(handler, Arc::from(vec![inbox]), (0, 1), handle.state());
        (handle, d, rx, poll)
    }

    #[test]
    fn a_run_of_one_connections_messages_counts_its_reference_once() {
        let recorder = Arc::new(Recorder::default());
        let handler: Arc<dyn Handler> = Arc::clone(&recorder) as Arc<dyn Handler>;
        let (handle, mut d, mut rx, _poll) = one_worker(Arc::clone(&handler));
        let (a, b) = (conn_inner(1), conn_inner(2));
        let message = |n: u8| Message::new(crate::protocol::MessageKind::Binary, vec![n]);
        // a a a b a b, then a Drain of b between two messages of b: a run
        // starts again after any other event.
        d.dispatch_message(1, &a, message(1));
        d.dispatch_message(1, &a, message(2));
        d.dispatch_message(1, &a, message(3));
        d.dispatch_message(2, &b, message(4));
        d.dispatch_message(1, &a, message(5));
        d.dispatch_message(2, &b, message(6));
        d.dispatch(2, WorkerEvent::Drain(Arc::clone(&b)));
        d.dispatch_message(2, &b, message(7));
        assert_eq!(Arc::strong_count(&a), 1 + 2, "two runs of a");
        assert_eq!(
            Arc::strong_count(&b),
            1 + 4,
            "three runs of b and the drain"
        );
        d.flush(Instant::now());
        // After a hand-over a run starts again: the batch it continued has gone.
        d.dispatch_message(2, &b, message(8));
        d.flush(Instant::now());

        let mut events = rx.next().unwrap().events;
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                WorkerEvent::Message(..) => "message",
                WorkerEvent::MessageAgain(..) => "again",
                WorkerEvent::Drain(..) => "drain",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["message", "again", "again", "message", "message", "message", "drain", "message"]
        );
        handle_batch(&*handler, handle.state(), &mut events);
        assert!(events.is_empty());
        let mut second = rx.next().unwrap().events;
        assert!(matches!(second[..], [WorkerEvent::Message(..)]));
        handle_batch(&*handler, handle.state(), &mut second);
        drop(second);
        assert_eq!(
            Arc::strong_count(&a),
            1,
            "the batches' references went back"
        );
        assert_eq!(Arc::strong_count(&b), 1);
        let (ida, idb) = (a.id.as_u64(), b.id.as_u64());
        let seen = recorder.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                (ida, vec![1]),
                (ida, vec![2]),
                (ida, vec![3]),
                (idb, vec![4]),
                (ida, vec![5]),
                (idb, vec![6]),
                (idb, vec![7]),
                (idb, vec![8]),
            ],
            "each message with its own connection, in order"
        );
    }

    #[test]
    fn a_turn_hands_its_batch_over_once_it_holds_enough_message_bytes_or_events() {
        let (handle, mut d, mut rx, _poll) = one_worker(Arc::new(crate::server::Echo));
        let inner = conn_inner(0);
        let message = || Message::new(crate::protocol::MessageKind::Binary, vec![0; 1024]);
        let mut dispatched = 0;
        while !d.wants_hand_off() {
            d.dispatch(0, WorkerEvent::Message(Arc::clone(&inner), message()));
            dispatched += 1;
        }
        assert_eq!(dispatched, HAND_OFF_BYTES / 1024);
        d.flush(Instant::now());
        assert!(!d.wants_hand_off(), "a flush starts the count again");
        assert_eq!(rx.next().unwrap().events.len(), dispatched);

        // Small messages: handed over by their number.
        let small = || Message::new(crate::protocol::MessageKind::Binary, vec![0; 20]);
        let mut dispatched = 0;
        while !d.wants_hand_off() {
            d.dispatch(0, WorkerEvent::Message(Arc::clone(&inner), small()));
            dispatched += 1;
        }
        assert_eq!(dispatched, HAND_OFF_EVENTS);
        d.flush(Instant::now());
        assert!(!d.wants_hand_off());
        assert_eq!(rx.next().unwrap().events.len(), HAND_OFF_EVENTS);

        let inline = Dispatcher::new(
            Arc::new(crate::server::Echo),
            Arc::from(vec![]),
            (0, 1),
            handle.state(),
        );
        assert!(!inline.wants_hand_off(), "inline has nothing to hand over");
    }
}
