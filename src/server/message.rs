//! [`Message`]: a complete message from a client, as a handler gets it.

use std::fmt;

use crate::protocol::MessageKind;

/// A complete message from a client: reassembled from its fragments,
/// decompressed, and for text validated as UTF-8.
///
/// Handlers get one per message; tests of a handler can build their own
/// with [`Message::text`] or [`Message::binary`].
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    kind: MessageKind,
    data: Vec<u8>,
}

impl Message {
    pub(crate) fn new(kind: MessageKind, data: Vec<u8>) -> Message {
        Message { kind, data }
    }

    /// A message of its own with a copy of `data` (in a recycled buffer
    /// when it is large; see `buffer_pool`).
    pub(crate) fn copied(kind: MessageKind, data: &[u8]) -> Message {
        Message::new(kind, crate::buffer_pool::copy_of(data))
    }

    /// A text message.
    pub fn text(text: impl Into<String>) -> Message {
        Message::new(MessageKind::Text, text.into().into_bytes())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Vec<u8>>) -> Message {
        Message::new(MessageKind::Binary, data.into())
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// True for a text message.
    pub fn is_text(&self) -> bool {
        self.kind == MessageKind::Text
    }

    /// The payload, text or binary.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The text of a text message (validated as UTF-8 by the protocol core);
    /// `None` for a binary message.
    pub fn as_text(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Text => std::str::from_utf8(&self.data).ok(),
            MessageKind::Binary => None,
        }
    }

    /// The payload, given up without a copy (say, to send it back with
    /// [`super::Conn::send_owned`]).
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({:?}, {} bytes)", self.kind, self.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_test_can_build_messages() {
        let t = Message::text("héllo");
        assert_eq!((t.kind(), t.as_text()), (MessageKind::Text, Some("héllo")));
        let b = Message::binary(vec![0xff, 0]);
        assert!(!b.is_text());
        assert_eq!(b.as_text(), None);
        assert_eq!(b.into_bytes(), vec![0xff, 0]);
    }
}
