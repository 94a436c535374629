//! [`Lifecycle`]: the runtime's view of one connection, beside the
//! protocol's own state machine (which decides what goes on the wire).
//!
//! ```text
//! Handshaking ──upgrade──► Opening ──on_open returned──► Open
//!      │                      │                            │
//!      │ refused / timeout    └────────── end ─────────────┤  (on_close dispatched, once)
//!      ▼                                                   ▼
//!  (answer written) ─────────────────────────────────► Closing ──all written──► Lingering
//!                                                          │                        │
//!                                                          └──── released ◄─────────┘
//! ```
//!
//! A connection is released (its socket closed, its slot freed) from any
//! state: at EOF, on a write error, when a timer gives up on it, or once
//! everything is said. Every path that ends a connection goes through the
//! event loop's `end`, which alone reports the close to the handler.

use std::sync::Arc;

use super::prepared::PreparedMessage;

/// Where a connection stands, as the runtime sees it.
#[derive(Debug)]
pub(crate) enum Lifecycle {
    /// Reading the request head; the upgrade is not decided.
    /// `over_capacity`: accepted past the connection limit, the request gets a 503.
    /// `awaiting_proxy`: a trusted proxy's PROXY protocol header comes first;
    /// `client`: the address it gave (boxed: rare, and one word when absent).
    Handshaking {
        over_capacity: bool,
        awaiting_proxy: bool,
        client: Option<Box<std::net::SocketAddr>>,
    },
    /// Upgraded; `on_open` is running and has not returned. Broadcast and
    /// published messages for the connection wait here, so they follow what
    /// `on_open` sends. `on_close` is owed.
    Opening { deferred: Deferred },
    /// Open: `on_close` is owed.
    Open,
    /// `on_close` was dispatched; what is queued still goes out (with the
    /// close frame the protocol may hold back until the worker is through).
    /// `clean`: the peer's close frame was the last thing it sent, so once
    /// everything is written the socket can simply be closed.
    Closing { clean: bool },
    /// Our sending side is shut; waiting, bounded by the close timeout, for
    /// the peer's EOF, so unread input cannot turn our last bytes into a reset.
    Lingering,
}

/// Messages held for a connection while its `on_open` runs: rare and
/// short-lived, so boxed, and nothing at all (a null box) while empty; an
/// idle connection's lifecycle stays one word and a tag.
#[derive(Debug, Default)]
// The box is the point: one word in every connection's slot instead of a
// Vec's three, for a list that exists only while on_open runs.
#[allow(clippy::box_collection)]
pub(crate) struct Deferred(Option<Box<Vec<Arc<PreparedMessage>>>>);

impl Deferred {
    pub(crate) fn push(&mut self, message: Arc<PreparedMessage>) {
        self.0.get_or_insert_default().push(message);
    }

    pub(crate) fn take(&mut self) -> Vec<Arc<PreparedMessage>> {
        self.0.take().map_or_else(Vec::new, |d| *d)
    }
}

impl Lifecycle {
    /// `on_close` is owed: `on_open` was dispatched and the close not yet reported.
    pub(crate) fn close_owed(&self) -> bool {
        matches!(self, Lifecycle::Opening { .. } | Lifecycle::Open)
    }

    /// Leaves `Opening` or `Open` for `Closing`; returns the messages that
    /// were waiting for `on_open`, if any.
    pub(crate) fn end(&mut self) -> Vec<Arc<PreparedMessage>> {
        let was = std::mem::replace(self, Lifecycle::Closing { clean: false });
        match was {
            Lifecycle::Opening { mut deferred } => deferred.take(),
            Lifecycle::Open => Vec::new(),
            other => {
                *self = other;
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageKind;

    #[test]
    fn an_idle_lifecycle_is_two_words() {
        assert_eq!(std::mem::size_of::<Lifecycle>(), 16);
    }

    #[test]
    fn only_an_opened_connection_is_owed_a_close_and_ends_once() {
        let m = PreparedMessage::new(MessageKind::Text, b"x");
        let mut deferred = Deferred::default();
        deferred.push(m);
        let mut l = Lifecycle::Opening { deferred };
        assert!(l.close_owed());
        assert_eq!(l.end().len(), 1, "the deferred messages come back");
        assert!(matches!(l, Lifecycle::Closing { clean: false }));
        assert!(!l.close_owed());
        assert!(l.end().is_empty());

        let mut h = Lifecycle::Handshaking {
            over_capacity: false,
            awaiting_proxy: false,
            client: None,
        };
        assert!(!h.close_owed());
        h.end();
        assert!(
            matches!(h, Lifecycle::Handshaking { .. }),
            "a handshake that never opened is not closed by end()"
        );
        let mut o = Lifecycle::Open;
        o.end();
        assert!(matches!(o, Lifecycle::Closing { .. }));
        let mut g = Lifecycle::Lingering;
        g.end();
        assert!(matches!(g, Lifecycle::Lingering));
    }
}
