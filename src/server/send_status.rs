//! What a send reports ([`SendStatus`]) and why a message was refused.

/// How a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Accepted. The loop writes it in order, at once if the socket takes it;
    /// the connection's buffered amount (this message included) was this many bytes.
    Buffered(usize),
    /// Not sent.
    Dropped(DropReason),
}

impl SendStatus {
    /// True when the message was not accepted.
    pub fn is_dropped(self) -> bool {
        matches!(self, SendStatus::Dropped(_))
    }
}

/// Why a message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The connection is closing or closed, or the id is stale.
    Closed,
    /// The message would exceed the connection's buffered cap
    /// ([`Config::max_buffered`](super::Config::max_buffered)); under [`BackpressurePolicy::Close`](super::BackpressurePolicy::Close) the
    /// connection is being closed with 1008 as well.
    Backpressure,
}

/// A ping payload over the 125 bytes a control frame may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTooLong;

impl std::fmt::Display for PayloadTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a control frame's payload is at most 125 bytes")
    }
}

impl std::error::Error for PayloadTooLong {}

/// A reservation refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection no longer takes messages.
    Closed,
    /// Over the cap; the policy is to drop the message.
    Dropped,
    /// Over the cap; the policy is to close, and this reservation is the one
    /// that turned the connection's open flag off: the caller must now send
    /// the 1008 close (directly on the loop, as a command elsewhere).
    MustClose,
}

impl Refused {
    pub(crate) fn status(self) -> SendStatus {
        SendStatus::Dropped(match self {
            Refused::Closed => DropReason::Closed,
            Refused::Dropped | Refused::MustClose => DropReason::Backpressure,
        })
    }
}
