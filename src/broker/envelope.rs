//! [`Envelope`]: one message as it travels between nodes.
//!
//! ```text
//! 0      3     4         12        20          28        36
//! | SW\1 | kind | origin | sequence | sent at µs | exclude | payload ...
//! ```
//! All integers little-endian. `origin` is the publishing node's random id,
//! so a node skips its own messages (it served them locally already).
//! `sequence` counts the origin's messages per channel from 1, so a receiver
//! knows how many it missed. `sent_at` (µs since the Unix epoch) gives the
//! cross-node latency. `exclude` is the sender's connection id on the
//! origin node (`u64::MAX`: none); only the origin could use it, and the
//! origin skips its own messages, so it is carried for inspection.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::MessageKind;

const MAGIC: [u8; 3] = *b"SW\x01";
/// Bytes before the payload.
pub(crate) const HEADER: usize = 36;
const SEQUENCE_AT: usize = 12;
const NO_EXCLUDE: u64 = u64::MAX;

/// One message between nodes, borrowed from the bytes it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub(crate) kind: MessageKind,
    pub(crate) origin: u64,
    pub(crate) sequence: u64,
    pub(crate) sent_at_us: u64,
    pub(crate) exclude: Option<u64>,
    pub(crate) payload: &'a [u8],
}

/// Why bytes on a broker channel are not an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    Short,
    Magic,
    Kind,
}

impl<'a> Envelope<'a> {
    /// The envelope of a message published now (sequence 0: the publishing
    /// thread numbers it with [`set_sequence`] as it goes out).
    pub(crate) fn new(
        kind: MessageKind,
        origin: u64,
        exclude: Option<u64>,
        payload: &'a [u8],
    ) -> Envelope<'a> {
        Envelope {
            kind,
            origin,
            sequence: 0,
            sent_at_us: now_us(),
            exclude,
            payload,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(match self.kind {
            MessageKind::Text => 1,
            MessageKind::Binary => 2,
        });
        out.extend_from_slice(&self.origin.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.sent_at_us.to_le_bytes());
        out.extend_from_slice(&self.exclude.unwrap_or(NO_EXCLUDE).to_le_bytes());
        out.extend_from_slice(self.payload);
        out
    }

    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Envelope<'a>, Malformed> {
        if bytes.len() < HEADER {
            return Err(Malformed::Short);
        }
        if bytes[..3] != MAGIC {
            return Err(Malformed::Magic);
        }
        let kind = match bytes[3] {
            1 => MessageKind::Text,
            2 => MessageKind::Binary,
            _ => return Err(Malformed::Kind),
        };
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let exclude = word(28);
        Ok(Envelope {
            kind,
            origin: word(4),
            sequence: word(SEQUENCE_AT),
            sent_at_us: word(20),
            exclude: (exclude != NO_EXCLUDE).then_some(exclude),
            payload: &bytes[HEADER..],
        })
    }
}

/// Numbers an encoded envelope in place.
pub(crate) fn set_sequence(encoded: &mut [u8], sequence: u64) {
    encoded[SEQUENCE_AT..SEQUENCE_AT + 8].copy_from_slice(&sequence.to_le_bytes());
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        for (kind, exclude) in [(MessageKind::Text, Some(7)), (MessageKind::Binary, None)] {
            let mut env = Envelope::new(kind, 0xfeed_beef, exclude, b"hello");
            env.sequence = 42;
            let mut bytes = env.encode();
            assert_eq!(bytes.len(), HEADER + 5);
            assert_eq!(Envelope::decode(&bytes), Ok(env));
            set_sequence(&mut bytes, 43);
            assert_eq!(Envelope::decode(&bytes).unwrap().sequence, 43);
        }
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        let good = Envelope::new(MessageKind::Text, 1, None, b"").encode();
        assert_eq!(Envelope::decode(&good[..HEADER - 1]), Err(Malformed::Short));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Envelope::decode(&bad), Err(Malformed::Magic));
        let mut bad = good;
        bad[3] = 9;
        assert_eq!(Envelope::decode(&bad), Err(Malformed::Kind));
    }
}
