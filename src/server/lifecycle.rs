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

/// Where a connection stands, as the runtime sees it. What a state holds
/// for a while (the client a PROXY header named, messages held while
/// `on_open` runs) is in the connection's [`Aside`](super::aside::Aside), so
/// this stays a few bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Reading the request head; the upgrade is not decided.
    /// `over_capacity`: accepted past the connection limit, the request gets a 503.
    /// `awaiting_proxy`: a trusted proxy's PROXY protocol header comes first.
    Handshaking {
        over_capacity: bool,
        awaiting_proxy: bool,
    },
    /// Upgraded; `on_open` is running and has not returned. Broadcast and
    /// published messages for the connection wait aside, so they follow
    /// what `on_open` sends. `on_close` is owed.
    Opening,
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

impl Lifecycle {
    /// `on_close` is owed: `on_open` was dispatched and the close not yet reported.
    pub(crate) fn close_owed(&self) -> bool {
        matches!(self, Lifecycle::Opening | Lifecycle::Open)
    }

    /// Leaves `Opening` or `Open` for `Closing`; true when it was `Opening`
    /// (messages may be waiting aside for `on_open`).
    pub(crate) fn end(&mut self) -> bool {
        match *self {
            Lifecycle::Opening => {
                *self = Lifecycle::Closing { clean: false };
                true
            }
            Lifecycle::Open => {
                *self = Lifecycle::Closing { clean: false };
                false
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifecycle_is_a_few_bytes() {
        assert!(std::mem::size_of::<Lifecycle>() <= 3);
    }

    #[test]
    fn only_an_opened_connection_is_owed_a_close_and_ends_once() {
        let mut l = Lifecycle::Opening;
        assert!(l.close_owed());
        assert!(l.end(), "it was opening: look aside for held messages");
        assert_eq!(l, Lifecycle::Closing { clean: false });
        assert!(!l.close_owed());
        assert!(!l.end());

        let mut h = Lifecycle::Handshaking {
            over_capacity: false,
            awaiting_proxy: false,
        };
        assert!(!h.close_owed());
        h.end();
        assert!(
            matches!(h, Lifecycle::Handshaking { .. }),
            "a handshake that never opened is not closed by end()"
        );
        let mut o = Lifecycle::Open;
        assert!(!o.end());
        assert!(matches!(o, Lifecycle::Closing { .. }));
        let mut g = Lifecycle::Lingering;
        g.end();
        assert_eq!(g, Lifecycle::Lingering);
    }
}
