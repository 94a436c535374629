//! How a message becomes the bytes of one connection's frame.
//!
//! A connection's [`Encoding`] is decided once, at the upgrade, from what
//! permessage-deflate negotiated. Every path that sends (a handle's send, a
//! broadcast, a publish) turns its message into a [`Prepared`] for that
//! encoding through one step: [`prepare`] for one recipient,
//! [`PreparedMessage::prepare_for`] for one of many, which frames (and
//! compresses) the message once and shares those bytes with every recipient.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use super::out_queue::Outgoing;
use crate::protocol::deflate::{self, Agreed, DeflateOptions};
use crate::protocol::{EncodedHeader, MessageKind};

/// How messages to one connection are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// No permessage-deflate.
    Plain,
    /// permessage-deflate without context takeover on our side: any thread
    /// may compress, and one compressed frame per window size serves every
    /// such recipient of a broadcast.
    Stateless { window: u8 },
    /// permessage-deflate with context takeover: only the connection's own
    /// compressor may compress, on its loop, in the order messages are sent.
    PerConnection,
}

impl Encoding {
    /// The encoding the handshake agreed on.
    pub(crate) fn negotiated(agreed: Option<Agreed>) -> Encoding {
        match agreed {
            None => Encoding::Plain,
            Some(a) if a.server_no_context_takeover => Encoding::Stateless {
                window: a.server_max_window_bits,
            },
            Some(_) => Encoding::PerConnection,
        }
    }

    /// Whether a message of `len` bytes goes out uncompressed.
    #[inline]
    pub(crate) fn is_plain_for(self, len: usize, opts: &DeflateOptions) -> bool {
        matches!(self.for_len(len, opts), Encoding::Plain)
    }

    /// The encoding of one message of `len` bytes: plain under the threshold.
    fn for_len(self, len: usize, opts: &DeflateOptions) -> Encoding {
        if len < opts.threshold {
            Encoding::Plain
        } else {
            self
        }
    }
}

/// A message made ready for one connection.
#[derive(Debug)]
pub(crate) enum Prepared<'a> {
    /// The frame's bytes, ready to queue.
    Frame(Outgoing),
    /// A frame every recipient of a broadcast or publish shares: queued by
    /// reference, so a small one is copied without touching its count.
    Shared(&'a Arc<[u8]>),
    /// To be compressed by the connection's own compressor on its loop.
    Deflate(MessageKind, Cow<'a, [u8]>),
}

impl Prepared<'_> {
    /// The same, owning its bytes, to cross to another thread.
    pub(crate) fn into_owned(self) -> Prepared<'static> {
        match self {
            Prepared::Frame(f) => Prepared::Frame(f),
            Prepared::Shared(frame) => Prepared::Frame(Outgoing::Shared(Arc::clone(frame))),
            Prepared::Deflate(kind, data) => Prepared::Deflate(kind, Cow::Owned(data.into_owned())),
        }
    }
}

/// Makes `data` ready for a connection with `encoding`. An owned payload
/// that goes out plain is not copied (unless it is small enough that one
/// buffer with its header is cheaper to write).
pub(crate) fn prepare<'a>(
    kind: MessageKind,
    data: Cow<'a, [u8]>,
    encoding: Encoding,
    opts: &DeflateOptions,
) -> Prepared<'a> {
    match encoding.for_len(data.len(), opts) {
        Encoding::Plain => Prepared::Frame(match data {
            Cow::Borrowed(b) => Outgoing::copy_frame(kind, b),
            Cow::Owned(v) => Outgoing::owned_frame(kind, v),
        }),
        Encoding::Stateless { window } => {
            Prepared::Frame(Outgoing::Bytes(compressed_frame(kind, &data, opts, window)))
        }
        Encoding::PerConnection => Prepared::Deflate(kind, data),
    }
}

/// A frame whose payload is `data` compressed (RSV1 set) with this thread's
/// stateless compressor: no context carried between messages.
fn compressed_frame(kind: MessageKind, data: &[u8], opts: &DeflateOptions, window: u8) -> Vec<u8> {
    let mut z = Vec::new();
    deflate::compress_stateless(data, opts.level, window, opts.mem_level, &mut z);
    let head = EncodedHeader::new(kind.opcode(), true, true, z.len() as u64, None);
    let mut v = Vec::with_capacity(head.as_bytes().len() + z.len());
    v.extend_from_slice(head.as_bytes());
    v.extend_from_slice(&z);
    v
}

/// One message for many recipients (broadcast, publish): the plain frame,
/// and per window size the compressed frame, each built at most once and
/// shared by every recipient that takes that form.
pub(crate) struct PreparedMessage {
    kind: MessageKind,
    data: Vec<u8>,
    plain: Arc<[u8]>,
    compressed: [OnceLock<Arc<[u8]>>; 7],
}

impl std::fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PreparedMessage({:?}, {} bytes)",
            self.kind,
            self.data.len()
        )
    }
}

impl PreparedMessage {
    pub(crate) fn new(kind: MessageKind, data: &[u8]) -> Arc<PreparedMessage> {
        let plain = match Outgoing::copy_frame(kind, data) {
            Outgoing::Bytes(v) => v.into(),
            _ => unreachable!("copy_frame makes one buffer"),
        };
        Arc::new(PreparedMessage {
            kind,
            data: data.to_vec(),
            plain,
            compressed: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    /// The payload's length: what a recipient's buffered amount counts.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    /// This message for a recipient with `encoding`.
    pub(crate) fn prepare_for(&self, encoding: Encoding, opts: &DeflateOptions) -> Prepared<'_> {
        match self.shared_frame(encoding, opts) {
            Some(frame) => Prepared::Shared(frame),
            None => Prepared::Deflate(self.kind, Cow::Borrowed(&self.data)),
        }
    }

    /// The frame a recipient with `encoding` shares with the others, or
    /// `None` when its connection compresses the message itself. A fan-out
    /// asks this once per subscriber per message: a [`Prepared`] made and
    /// dropped there cost its drop glue's call, 11 instructions a delivery
    /// (callgrind).
    #[inline]
    pub(crate) fn shared_frame(
        &self,
        encoding: Encoding,
        opts: &DeflateOptions,
    ) -> Option<&Arc<[u8]>> {
        match encoding.for_len(self.data.len(), opts) {
            Encoding::Plain => Some(&self.plain),
            Encoding::Stateless { window } => Some(self.compressed(opts, window)),
            Encoding::PerConnection => None,
        }
    }

    /// The frame compressed with window `window` (9..=15), built on first use.
    fn compressed(&self, opts: &DeflateOptions, window: u8) -> &Arc<[u8]> {
        let slot = &self.compressed[usize::from(window.clamp(9, 15) - 9)];
        slot.get_or_init(|| compressed_frame(self.kind, &self.data, opts, window).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(p: Prepared<'_>) -> Outgoing {
        match p {
            Prepared::Frame(f) => f,
            Prepared::Shared(frame) => Outgoing::Shared(Arc::clone(frame)),
            Prepared::Deflate(..) => panic!("expected a frame"),
        }
    }

    #[test]
    fn a_prepared_message_is_compressed_once_per_window() {
        let opts = DeflateOptions::stateless();
        let text = "hello hello hello hello".repeat(40);
        let m = PreparedMessage::new(MessageKind::Text, text.as_bytes());
        let at = |window| match frame(m.prepare_for(Encoding::Stateless { window }, &opts)) {
            Outgoing::Shared(a) => a,
            other => panic!("expected shared bytes, got {other:?}"),
        };
        let (a, b, c) = (at(15), at(15), at(10));
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second recipient reuses the first one's frame"
        );
        assert!(!Arc::ptr_eq(&a, &c), "another window gets its own");
        assert_eq!(a[0] & 0x40, 0x40, "RSV1 set");
        assert!(a.len() < text.len() / 4);
    }

    #[test]
    fn every_path_encodes_alike_and_small_messages_stay_plain() {
        let opts = DeflateOptions::stateless();
        let big = vec![b'a'; 4096];
        let small = b"hi".to_vec();
        for encoding in [
            Encoding::Plain,
            Encoding::Stateless { window: 15 },
            Encoding::PerConnection,
        ] {
            for data in [&big, &small] {
                let one = prepare(MessageKind::Binary, Cow::Borrowed(data), encoding, &opts);
                let owned = prepare(
                    MessageKind::Binary,
                    Cow::Owned(data.clone()),
                    encoding,
                    &opts,
                );
                let many = PreparedMessage::new(MessageKind::Binary, data);
                let many = many.prepare_for(encoding, &opts).into_owned();
                match (one, owned, many) {
                    (Prepared::Frame(a), Prepared::Frame(b), Prepared::Frame(c)) => {
                        let bytes = |o: &Outgoing| o.parts().concat();
                        assert_eq!(bytes(&a), bytes(&b), "{encoding:?}, {} bytes", data.len());
                        assert_eq!(bytes(&a), bytes(&c), "{encoding:?}, {} bytes", data.len());
                        let compressed = bytes(&a)[0] & 0x40 != 0;
                        assert_eq!(
                            compressed,
                            data.len() >= opts.threshold && encoding != Encoding::Plain
                        );
                    }
                    (Prepared::Deflate(_, a), Prepared::Deflate(_, b), Prepared::Deflate(_, c)) => {
                        assert_eq!(encoding, Encoding::PerConnection);
                        assert!(data.len() >= opts.threshold);
                        assert!(a == b && b == c);
                    }
                    other => panic!("paths disagree for {encoding:?}: {other:?}"),
                }
            }
        }
    }
}
