//! Frame headers (RFC 6455 section 5.2): decoded from a byte slice without
//! touching the payload, encoded into a 14-byte array so header and payload
//! can leave in one vectored write.

use super::error::ProtocolError;

/// Frame opcodes. Reserved values never get this far: decoding rejects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// A further fragment of a message.
    Continuation = 0x0,
    /// The first frame of a text message.
    Text = 0x1,
    /// The first frame of a binary message.
    Binary = 0x2,
    /// Close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a header's low four bits, if it is one RFC 6455 defines.
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Close, ping or pong.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The largest possible frame header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;
/// Control frames carry at most this many payload bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of its message.
    pub fin: bool,
    /// RSV1 (permessage-deflate: the message is compressed).
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key (every client frame has one).
    pub mask: Option<[u8; 4]>,
    /// The payload's length.
    pub payload_len: u64,
}

/// What the decoder expects of the peer's frames.
#[doc(hidden)] // for tests, fuzzing and benches; not part of the supported API
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeRules {
    /// Frames must be masked (we are the server) or must not be (we are the client).
    pub expect_masked: bool,
    /// RSV1 is defined by a negotiated extension (permessage-deflate).
    pub allow_rsv1: bool,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`. `Ok(None)` means more bytes are
    /// needed and nothing is consumed; `Ok(Some((header, len)))` consumed `len` bytes.
    #[inline]
    pub fn decode(
        buf: &[u8],
        rules: DecodeRules,
    ) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let b0 = buf[0];
        let b1 = buf[1];
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 || (rsv1 && !rules.allow_rsv1) {
            return Err(ProtocolError::ReservedBits);
        }
        let raw_op = b0 & 0x0F;
        let opcode = OpCode::from_u8(raw_op).ok_or(ProtocolError::ReservedOpcode(raw_op))?;
        let masked = b1 & 0x80 != 0;
        if masked != rules.expect_masked {
            return Err(ProtocolError::BadMask);
        }
        let len7 = b1 & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if len7 > 125 {
                return Err(ProtocolError::ControlTooLong);
            }
            if rsv1 {
                // Extensions never apply to control frames.
                return Err(ProtocolError::ReservedBits);
            }
        }
        let (payload_len, mut at) = match len7 {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                let len = u16::from_be_bytes([buf[2], buf[3]]) as u64;
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthOverflow);
                }
                if len <= u64::from(u16::MAX) {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        let mask = if masked {
            if buf.len() < at + 4 {
                return Ok(None);
            }
            let key = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
            at += 4;
            Some(key)
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv1,
                opcode,
                mask,
                payload_len,
            },
            at,
        )))
    }

    /// Encodes this header into `out` and returns how many bytes it used.
    /// Uses the shortest length form, as RFC 6455 requires.
    #[inline]
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (self.fin as u8) << 7 | (self.rsv1 as u8) << 6 | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = if self.payload_len < 126 {
            out[1] = mask_bit | self.payload_len as u8;
            2
        } else if self.payload_len <= u16::MAX as u64 {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
            4
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
            10
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

/// A server frame header (unmasked) as bytes: the common case of encoding.
///
/// Sixteen bytes: the header, zeros, and its length in the last byte. A
/// server's (unmasked) header is built in a register and stored whole, and
/// the value moves as one 16-byte copy. Written a byte at a time, the first
/// copy of the value (into the frame, the command that carries it) read
/// back bytes still in the store buffer in pieces of other sizes, a stall:
/// a worker's send took 22 ns a message before, 17 after (perf, 1 KiB echo).
#[derive(Clone, Copy)]
pub struct EncodedHeader {
    bytes: [u8; 16],
}

/// Where [`EncodedHeader`] keeps the header's length.
const ENCODED_LEN_AT: usize = 15;

impl EncodedHeader {
    /// Encodes a header.
    #[inline]
    pub fn new(
        opcode: OpCode,
        fin: bool,
        rsv1: bool,
        payload_len: u64,
        mask: Option<[u8; 4]>,
    ) -> Self {
        let header = FrameHeader {
            fin,
            rsv1,
            opcode,
            mask,
            payload_len,
        };
        if mask.is_none() {
            return EncodedHeader::unmasked(&header);
        }
        let mut buf = [0u8; MAX_HEADER_LEN];
        let len = header.encode(&mut buf);
        let mut bytes = [0u8; 16];
        bytes[..MAX_HEADER_LEN].copy_from_slice(&buf);
        bytes[ENCODED_LEN_AT] = len as u8;
        EncodedHeader { bytes }
    }

    /// [`FrameHeader::encode`] of an unmasked header, as one word:
    /// little-endian, so the first byte of the header is its lowest.
    #[inline]
    fn unmasked(h: &FrameHeader) -> Self {
        let first = u128::from((h.fin as u8) << 7 | (h.rsv1 as u8) << 6 | h.opcode as u8);
        let (rest, len) = if h.payload_len < 126 {
            (u128::from(h.payload_len as u8) << 8, 2u8)
        } else if h.payload_len <= u64::from(u16::MAX) {
            // The length's two bytes big-endian: swapped, then stored low first.
            let be = (h.payload_len as u16).swap_bytes();
            (126 << 8 | u128::from(be) << 16, 4)
        } else {
            (127 << 8 | u128::from(h.payload_len.swap_bytes()) << 16, 10)
        };
        let word = first | rest | u128::from(len) << (8 * ENCODED_LEN_AT);
        EncodedHeader {
            bytes: word.to_le_bytes(),
        }
    }

    /// The encoded bytes (2 to 14).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.bytes[ENCODED_LEN_AT])]
    }

    /// The encoded bytes followed by zeros, [`MAX_HEADER_LEN`] in all: a
    /// copy of a fixed size, which compiles to two moves where a copy of
    /// [`as_bytes`](Self::as_bytes) is a call to `memcpy`. Only the first
    /// [`as_bytes`](Self::as_bytes)`().len()` bytes are the header.
    #[inline]
    pub fn padded(&self) -> &[u8; MAX_HEADER_LEN] {
        self.bytes[..MAX_HEADER_LEN]
            .try_into()
            .expect("MAX_HEADER_LEN bytes")
    }
}

impl std::fmt::Debug for EncodedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodedHeader({:02x?})", self.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: DecodeRules = DecodeRules {
        expect_masked: true,
        allow_rsv1: false,
    };
    const CLIENT: DecodeRules = DecodeRules {
        expect_masked: false,
        allow_rsv1: false,
    };

    #[test]
    fn rfc_examples_decode() {
        // RFC 6455 section 5.7 examples.
        let (h, n) = FrameHeader::decode(&[0x81, 0x05, b'H'], CLIENT)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.mask, n),
            (true, OpCode::Text, 5, None, 2)
        );
        let (h, n) = FrameHeader::decode(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d], SERVER)
            .unwrap()
            .unwrap();
        assert_eq!((h.mask, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 6));
        let (h, _) = FrameHeader::decode(&[0x01, 0x03], CLIENT).unwrap().unwrap();
        assert!(!h.fin);
        let (h, n) = FrameHeader::decode(&[0x82, 0x7E, 0x01, 0x00], CLIENT)
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 256, 4));
        let (h, n) = FrameHeader::decode(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0], CLIENT)
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn incomplete_headers_consume_nothing() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(
                FrameHeader::decode(&full[..cut], SERVER),
                Ok(None),
                "cut {cut}"
            );
        }
        assert!(FrameHeader::decode(&full, SERVER).unwrap().is_some());
    }

    #[test]
    fn header_violations() {
        let e = |b: &[u8], r| FrameHeader::decode(b, r).unwrap_err();
        assert_eq!(
            e(&[0xC1, 0x80, 0, 0, 0, 0], SERVER),
            ProtocolError::ReservedBits
        );
        assert_eq!(e(&[0xA1, 0x80], SERVER), ProtocolError::ReservedBits);
        assert_eq!(e(&[0x91, 0x80], SERVER), ProtocolError::ReservedBits);
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                e(&[0x80 | op, 0x80], SERVER),
                ProtocolError::ReservedOpcode(op)
            );
        }
        assert_eq!(e(&[0x09, 0x80], SERVER), ProtocolError::FragmentedControl);
        assert_eq!(e(&[0x89, 0xFE], SERVER), ProtocolError::ControlTooLong);
        assert_eq!(e(&[0x81, 0x05], SERVER), ProtocolError::BadMask);
        assert_eq!(e(&[0x81, 0x85], CLIENT), ProtocolError::BadMask);
        assert_eq!(
            e(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], SERVER),
            ProtocolError::LengthOverflow
        );
        // Lengths in more bytes than they need: 5 and 125 in 16 bits, 65535 in 64.
        for bytes in [
            &[0x82, 0xFE, 0, 5][..],
            &[0x82, 0xFE, 0, 125],
            &[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF],
        ] {
            let mut masked = bytes.to_vec();
            masked[1] |= 0x80;
            masked.extend([0, 0, 0, 0]);
            assert_eq!(e(&masked, SERVER), ProtocolError::NonMinimalLength);
        }
        let head = |b: &[u8]| FrameHeader::decode(b, SERVER).unwrap().unwrap().0;
        assert_eq!(head(&[0x82, 0xFE, 0, 126, 0, 0, 0, 0]).payload_len, 126);
        assert_eq!(
            head(&[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]).payload_len,
            65536
        );
        // RSV1 is fine on data frames once an extension allows it, never on control frames.
        let deflate = DecodeRules {
            expect_masked: true,
            allow_rsv1: true,
        };
        assert!(FrameHeader::decode(&[0xC1, 0x80, 0, 0, 0, 0], deflate)
            .unwrap()
            .is_some());
        assert_eq!(e(&[0xC9, 0x80], deflate), ProtocolError::ReservedBits);
    }

    #[test]
    fn a_header_built_in_a_register_is_the_one_encode_writes() {
        let lengths = [
            0u64,
            1,
            125,
            126,
            127,
            255,
            256,
            65_535,
            65_536,
            0x0102_0304,
            u64::from(u32::MAX) + 1,
            (1 << 63) - 1,
        ];
        let opcodes = [
            OpCode::Continuation,
            OpCode::Text,
            OpCode::Binary,
            OpCode::Close,
            OpCode::Ping,
            OpCode::Pong,
        ];
        for payload_len in lengths {
            for opcode in opcodes {
                for (fin, rsv1) in [(true, false), (false, false), (true, true), (false, true)] {
                    let h = FrameHeader {
                        fin,
                        rsv1,
                        opcode,
                        mask: None,
                        payload_len,
                    };
                    let mut want = [0u8; MAX_HEADER_LEN];
                    let n = h.encode(&mut want);
                    let got = EncodedHeader::new(opcode, fin, rsv1, payload_len, None);
                    assert_eq!(got.as_bytes(), &want[..n], "{h:?}");
                    assert_eq!(&got.padded()[..n], &want[..n]);
                    assert!(got.padded()[n..].iter().all(|&b| b == 0), "{h:?}");
                }
            }
        }
    }

    #[test]
    fn encode_uses_shortest_length_form_and_round_trips() {
        for (len, expect_len) in [
            (0u64, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (1 << 40, 10),
        ] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let h = EncodedHeader::new(OpCode::Binary, true, false, len, mask);
                let bytes = h.as_bytes();
                assert_eq!(bytes.len(), expect_len + if mask.is_some() { 4 } else { 0 });
                let rules = DecodeRules {
                    expect_masked: mask.is_some(),
                    allow_rsv1: false,
                };
                let (d, n) = FrameHeader::decode(bytes, rules).unwrap().unwrap();
                assert_eq!(n, bytes.len());
                assert_eq!(
                    (d.payload_len, d.mask, d.opcode, d.fin),
                    (len, mask, OpCode::Binary, true)
                );
            }
        }
        assert_eq!(
            EncodedHeader::new(OpCode::Text, true, false, 5, None).as_bytes(),
            &[0x81, 0x05]
        );
        assert_eq!(
            EncodedHeader::new(OpCode::Ping, true, false, 0, None).as_bytes(),
            &[0x89, 0x00]
        );
        assert_eq!(
            EncodedHeader::new(OpCode::Binary, true, false, 256, None).as_bytes(),
            &[0x82, 0x7E, 0x01, 0x00]
        );
    }
}
