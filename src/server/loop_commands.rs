//! How a loop carries out the [`Command`]s other threads send it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::command::Command;
use super::event_loop::{deliver, EventLoop};
use super::lifecycle::Lifecycle;
use super::mailbox;
use super::out_queue::QueueSink;
use super::prepared::{Encoding, Prepared, PreparedMessage};
use super::topics::Joined;
use super::ConnId;

/// Commands taken per turn, so a flood of sends cannot starve reads and timers.
const COMMAND_BUDGET: usize = 65_536;

impl EventLoop {
    /// Takes the commands waiting in the loop's channel (at most
    /// [`COMMAND_BUDGET`] a turn), all with one lock.
    pub(super) fn handle_commands(&mut self, now: Instant) {
        self.handle_own_commands(now);
        let mut taken = std::mem::take(&mut self.taken);
        self.server.state().mailboxes[self.index].take_commands(&mut taken, COMMAND_BUDGET);
        self.handle_all(&mut taken, now);
        self.taken = taken;
    }

    /// Carries out the commands this loop sent itself (see `mailbox`); they
    /// are older than anything in the channel. What they cause to be sent
    /// in turn is carried out too.
    #[inline(never)]
    pub(super) fn handle_own_commands(&mut self, now: Instant) {
        while mailbox::own_pending() {
            let mut own = mailbox::take_own();
            self.handle_all(&mut own, now);
            mailbox::restore_own(own);
        }
    }

    /// Carries out `cmds` in order, leaving the vector empty. Publishes to
    /// one topic that follow each other are gathered into a run and
    /// delivered together (see [`EventLoop::deliver_publish_run`]) before
    /// any other command is carried out.
    fn handle_all(&mut self, cmds: &mut Vec<Command>, now: Instant) {
        for cmd in cmds.drain(..) {
            if !self.publish_run.is_empty() && !matches!(cmd, Command::Publish { .. }) {
                self.deliver_publish_run(now);
            }
            self.handle_command(cmd, now);
        }
        self.deliver_publish_run(now);
    }

    /// Adds a publish to the run, delivering the run first if it was for
    /// another topic.
    fn add_to_publish_run(
        &mut self,
        topic: Arc<str>,
        message: Arc<PreparedMessage>,
        exclude: Option<ConnId>,
        now: Instant,
    ) {
        if self.publish_topic.as_ref() != Some(&topic) {
            self.deliver_publish_run(now);
            self.publish_topic = Some(topic);
        }
        self.publish_run.push((message, exclude));
    }

    /// Delivers the run of publishes to one topic, subscriber by subscriber:
    /// each subscriber's state and queue are taken up once for the run, not
    /// once per message (as uWebSockets drains a topic's messages per
    /// subscriber). Each subscriber still gets them in order, and no other
    /// command came between them, so no one can tell.
    ///
    /// A subscriber that owed nothing and was not yet listed for the turn's
    /// flush is written at once, as uWebSockets writes each subscriber's
    /// share in its drain: its queue is then still in cache and goes back
    /// to the stock for the next subscriber, where at the end of the turn
    /// thousands of queues would be fetched again. It is listed all the
    /// same, so the flush (with nothing left to write) still reports a
    /// drain, resumes reads and moves a closing connection on, and any
    /// later delivery this turn waits for that flush: at most two writes a
    /// turn.
    fn deliver_publish_run(&mut self, now: Instant) {
        if self.publish_run.is_empty() {
            return;
        }
        let Self {
            topics,
            conns,
            stats,
            server,
            index,
            publish_run,
            publish_topic,
            ..
        } = self;
        let state = server.state();
        for (message, _) in publish_run.iter() {
            state.mailboxes[*index].release_fanout(message.len());
        }
        if let Some(topic) = publish_topic.take() {
            for &slot in topics.subscribers(&topic) {
                let listed = conns.is_dirty(slot);
                let Some(c) = conns.get_mut(slot) else {
                    continue;
                };
                let idle = !listed && c.owed() == 0;
                if !c.deliver_run(publish_run, state, stats, now) {
                    continue;
                }
                if idle && c.proto.is_open() {
                    // An error is met again, and dealt with, by the flush.
                    let _ = c.write_out();
                }
                conns.mark_dirty(slot);
            }
        }
        publish_run.clear();
    }

    fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Send {
                id,
                message,
                accounted,
            } => self.send(id, message, accounted),
            Command::Ping {
                id,
                payload,
                accounted,
            } => self.ping(id, &payload, accounted),
            Command::Close { id, code, reason } => {
                if let Some((slot, c)) = self.conns.live(id) {
                    c.start_close(code, &reason, now);
                    self.conns.mark_dirty(slot);
                }
            }
            Command::Broadcast { message, exclude } => {
                let state = self.server.state();
                state.mailboxes[self.index].release_fanout(message.len());
                for slot in 0..self.conns.slot_bound() {
                    deliver(
                        &mut self.conns,
                        &mut self.stats,
                        state,
                        slot,
                        &message,
                        exclude,
                        now,
                    );
                }
            }
            Command::Subscribe { id, topic } => {
                if let Some((slot, c)) = self.conns.live(id) {
                    c.took_subscription();
                    self.join_topic(slot, topic);
                }
            }
            Command::Unsubscribe { id, topic } => {
                if let Some((slot, c)) = self.conns.live(id) {
                    c.took_subscription();
                    self.topics.unsubscribe(slot, &topic);
                }
            }
            Command::Publish {
                topic,
                message,
                exclude,
            } => self.add_to_publish_run(topic, message, exclude, now),
            Command::Opened { id } => self.opened(id),
            Command::CloseAck { id } => {
                if let Some((slot, c)) = self.conns.live(id) {
                    c.proto.release_close_reply(&mut QueueSink::new(&mut c.out));
                    c.stop_sends();
                    self.conns.mark_dirty(slot);
                }
            }
            Command::Shutdown => self.begin_shutdown(now),
        }
    }

    /// Subscribes `slot` to `topic`, within the limits of topics per
    /// connection and of a topic's name (the names an upgrade decision
    /// lists are first checked here); a subscription past them is counted
    /// and dropped.
    pub(super) fn join_topic(&mut self, slot: usize, topic: Arc<str>) {
        let cfg = self.server.config();
        let joined = if !cfg.topic_fits(&topic) {
            Joined::Refused
        } else {
            self.topics.subscribe(slot, topic)
        };
        if joined == Joined::Refused {
            let stats = &self.server.state().stats;
            stats.subscriptions_refused.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "loop {}: a subscription past {} topics or {} bytes of name: refused",
                self.index,
                cfg.max_subscriptions,
                cfg.max_topic_length
            );
        }
    }

    /// A ping from another thread; its frame was reserved like a message.
    fn ping(&mut self, id: ConnId, payload: &[u8], accounted: usize) {
        let Some((slot, c)) = self.conns.live(id) else {
            return;
        };
        let sink = &mut QueueSink::accounted(&mut c.out, accounted);
        if c.proto.ping(payload, sink).is_ok() {
            self.conns.mark_dirty(slot);
        } else {
            c.unreserve(accounted);
        }
    }

    /// A message from another thread for one connection.
    fn send(&mut self, id: ConnId, message: Prepared<'static>, accounted: usize) {
        let Some((slot, c)) = self.conns.live(id) else {
            return;
        };
        if c.takes_messages() && c.queue(message, accounted) {
            self.stats.sent(accounted);
            self.conns.mark_dirty(slot);
        } else {
            c.unreserve(accounted);
        }
    }

    /// `on_open` returned: what broadcasts and publishes held back for the
    /// connection follows what `on_open` sent.
    fn opened(&mut self, id: ConnId) {
        self.dispatcher.opened(id.slot());
        let Some((slot, c)) = self.conns.live(id) else {
            return;
        };
        if c.lifecycle != Lifecycle::Opening {
            return;
        }
        let deferred = c.take_deferred();
        c.lifecycle = Lifecycle::Open;
        let opts = &self.proto_config.deflate;
        let encoding = c.inner.as_ref().map_or(Encoding::Plain, |i| i.encoding);
        for message in deferred {
            if !c.queue(message.prepare_for(encoding, opts), message.len()) {
                c.unreserve(message.len());
            }
        }
        self.conns.mark_dirty(slot);
    }
}
