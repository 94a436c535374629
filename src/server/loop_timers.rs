//! How a loop acts on the deadlines in its [`super::timers::Timers`]: the
//! protocol's timers (handshake, idle, ping, pong, close) and the end of the
//! wait for a closed connection's peer to hang up.

use std::time::Instant;

use super::event_loop::EventLoop;
use super::out_queue::QueueSink;
use super::stats::{HandshakeFailure, TlsFailure};
use super::transport::Transport;
use crate::protocol::close::code;
use crate::protocol::Timeout;

impl EventLoop {
    /// Acts on every deadline that has come.
    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some((slot, at)) = self.timers.pop_due(now) {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            if c.timer != at {
                // Superseded by an earlier entry for the same connection (or
                // left by the slot's last one).
                continue;
            }
            c.timer = 0;
            self.on_deadline(slot, now);
            self.reschedule(slot);
        }
    }

    pub(super) fn on_deadline(&mut self, slot: usize, now: Instant) {
        let close_timeout = self.proto_config.close_timeout;
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(limits) = c.limits.as_mut() {
            if limits.paused_until.is_some_and(|t| t <= now) {
                // Back within its rate: what it sent meanwhile waits in the
                // socket, and no new edge will say so.
                limits.paused_until = None;
                self.pending_reads.push(slot);
            }
        }
        if let Some(at) = c.proto.closed_since() {
            // Closed, but the peer neither read our last bytes nor hung up.
            if now >= at + close_timeout {
                self.release(slot);
            }
            return;
        }
        if c.proto.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let fired = c.proto.handle_timeout(now, &mut QueueSink::new(&mut c.out));
        if fired == Some(Timeout::Idle) {
            // Our close frame is queued: the closing handshake has started.
            c.stop_sends();
        }
        // A keep-alive ping may have been written even when nothing fired.
        self.conns.mark_dirty(slot);
        match fired {
            Some(Timeout::Handshake) => {
                self.count_failure(HandshakeFailure::Timeout);
                if self
                    .conns
                    .get_mut(slot)
                    .is_some_and(|c| c.transport.handshaking())
                {
                    self.server.state().stats.tls.failed(TlsFailure::Timeout);
                }
                self.release(slot);
            }
            Some(Timeout::Pong) => self.end(slot, code::ABNORMAL, "ping timeout".into()),
            Some(Timeout::Close) => self.end(slot, code::ABNORMAL, "close timeout".into()),
            Some(Timeout::Idle) | None => {}
        }
    }

    /// [`reschedule`](Self::reschedule) where the deadline may have come
    /// sooner: not while the connection is scheduled at or before the
    /// deadline its timer key gave (see
    /// [`LoopConn::timer_key`](super::loop_conn::LoopConn::timer_key)). Activity
    /// since then only moved the deadline later, and the entry it has fires
    /// first, finds nothing due and schedules the later one. After every
    /// write (`flush`), computing the deadline again to find the entry
    /// already earlier was 230 instructions (callgrind).
    pub(super) fn refresh_timer(&mut self, slot: usize) {
        if self
            .conns
            .get_mut(slot)
            .is_some_and(|c| c.timer != 0 && c.timer_key == c.timer_key())
        {
            return;
        }
        self.reschedule(slot);
    }

    /// Schedules the connection's next deadline: the protocol's next timer,
    /// or, once closed, the end of the wait for the peer to hang up.
    pub(super) fn reschedule(&mut self, slot: usize) {
        let close_timeout = self.proto_config.close_timeout;
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        c.timer_key = c.timer_key();
        let deadline = match c.proto.closed_since() {
            Some(at) => Some(at + close_timeout),
            None => c.proto.poll_timeout(),
        };
        let paused = c.limits.as_ref().and_then(|l| l.paused_until);
        let deadline = match (deadline, paused) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = deadline {
            self.timers.schedule(slot, at, &mut c.timer);
        }
    }
}
