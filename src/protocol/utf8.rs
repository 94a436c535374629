//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! A text message may be split across frames and across reads at any byte, even
//! inside a code point. [`Utf8Validator`] keeps the (at most 3) bytes of an
//! unfinished code point between pieces and fails on the first byte that can
//! never be part of valid UTF-8, so a bad message is rejected as soon as it
//! goes wrong, not only at its end (Autobahn 6.4.x).

/// The message is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Incremental validator. Fast path: simdutf8 over each piece; the carry of a
/// partial code point is completed with `std`'s validator on at most 4 bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Utf8Validator {
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// True when no partial code point is pending.
    pub fn is_complete(&self) -> bool {
        self.carry_len == 0
    }

    /// Validates the next piece of the message. `last` says the message ends
    /// with this piece, in which case a pending partial code point is an error.
    pub fn feed(&mut self, mut piece: &[u8], last: bool) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            // Complete the pending code point with as few bytes as it needs.
            let have = self.carry_len as usize;
            let need = utf8_width(self.carry[0]) - have;
            let take = need.min(piece.len());
            self.carry[have..have + take].copy_from_slice(&piece[..take]);
            let filled = have + take;
            match std::str::from_utf8(&self.carry[..filled]) {
                Ok(_) => {
                    self.carry_len = 0;
                    piece = &piece[take..];
                }
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix: the piece ran out before the code point did.
                    self.carry_len = filled as u8;
                    return if last { Err(InvalidUtf8) } else { Ok(()) };
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match simdutf8::compat::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(InvalidUtf8),
                None if last => Err(InvalidUtf8),
                None => {
                    let tail = &piece[e.valid_up_to()..];
                    self.carry[..tail.len()].copy_from_slice(tail);
                    self.carry_len = tail.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// Forgets any pending bytes (a new message starts).
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }
}

/// Validates a complete message in one call (the common, unfragmented case).
#[inline]
pub fn validate(bytes: &[u8]) -> Result<(), InvalidUtf8> {
    simdutf8::basic::from_utf8(bytes)
        .map(|_| ())
        .map_err(|_| InvalidUtf8)
}

/// Expected sequence length from a lead byte; only called on a byte that a
/// validator already accepted as the start of a partial sequence.
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// The plain reference: a byte-at-a-time state machine written from the
/// table in RFC 3629 section 4, with the same incremental contract.
#[doc(hidden)] // for tests, fuzzing and benches; not part of the supported API
#[derive(Debug, Default, Clone, Copy)]
pub struct ReferenceValidator {
    /// Continuation bytes still expected.
    remaining: u8,
    /// Allowed range for the next continuation byte (narrowed after E0, ED, F0, F4).
    lo: u8,
    hi: u8,
}

impl ReferenceValidator {
    /// Validates the next piece of a message; `last` ends it (a partial code point left over is an error).
    pub fn feed(&mut self, piece: &[u8], last: bool) -> Result<(), InvalidUtf8> {
        for &b in piece {
            if self.remaining == 0 {
                let (n, lo, hi) = match b {
                    0x00..=0x7F => (0, 0, 0),
                    0xC2..=0xDF => (1, 0x80, 0xBF),
                    0xE0 => (2, 0xA0, 0xBF),
                    0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
                    0xED => (2, 0x80, 0x9F),
                    0xF0 => (3, 0x90, 0xBF),
                    0xF1..=0xF3 => (3, 0x80, 0xBF),
                    0xF4 => (3, 0x80, 0x8F),
                    _ => return Err(InvalidUtf8),
                };
                self.remaining = n;
                self.lo = lo;
                self.hi = hi;
            } else {
                if b < self.lo || b > self.hi {
                    return Err(InvalidUtf8);
                }
                self.remaining -= 1;
                self.lo = 0x80;
                self.hi = 0xBF;
            }
        }
        if last && self.remaining != 0 {
            return Err(InvalidUtf8);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `msg` split at every pair of cut points through both validators and
    /// checks they agree; returns the verdict of the whole message.
    fn check_all_splits(msg: &[u8]) -> bool {
        let whole = validate(msg).is_ok();
        assert_eq!(whole, std::str::from_utf8(msg).is_ok(), "{msg:x?}");
        for a in 0..=msg.len() {
            for b in a..=msg.len() {
                let pieces = [&msg[..a], &msg[a..b], &msg[b..]];
                let mut fast = Utf8Validator::new();
                let mut slow = ReferenceValidator::default();
                let mut fast_ok = true;
                let mut slow_ok = true;
                for (i, p) in pieces.iter().enumerate() {
                    let last = i == 2;
                    fast_ok = fast_ok && fast.feed(p, last).is_ok();
                    slow_ok = slow_ok && slow.feed(p, last).is_ok();
                    assert_eq!(fast_ok, slow_ok, "{msg:x?} split {a}/{b} piece {i}");
                }
                assert_eq!(fast_ok, whole, "{msg:x?} split {a}/{b}");
            }
        }
        whole
    }

    #[test]
    fn valid_and_invalid_vectors_agree_across_all_splits() {
        let valid: [&[u8]; 6] = [
            b"",
            b"hello",
            "κόσμε".as_bytes(),
            "\u{10FFFF}\u{FFFF}\u{800}\u{80}".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            &[0xF0, 0x90, 0x80, 0x80],
        ];
        for v in valid {
            assert!(check_all_splits(v));
        }
        let invalid: [&[u8]; 10] = [
            &[0xC0, 0x80],             // overlong
            &[0xED, 0xA0, 0x80],       // surrogate
            &[0xF4, 0x90, 0x80, 0x80], // above U+10FFFF
            &[0xF5],
            &[0xFF],
            &[0x80],
            &[0xE0, 0x80, 0x80],
            &[
                0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80,
            ],
            &[0xE2, 0x82], // truncated at the end
            &[b'a', 0xF0, 0x9F, 0x98],
        ];
        for v in invalid {
            assert!(!check_all_splits(v));
        }
    }

    #[test]
    fn fails_on_the_first_impossible_byte_not_at_the_end() {
        // 0xF4 0x90 can never start a valid sequence: fail before the message ends.
        let mut v = Utf8Validator::new();
        assert!(v.feed(b"ok", false).is_ok());
        assert_eq!(v.feed(&[0xF4], false), Ok(()));
        assert_eq!(v.feed(&[0x90], false), Err(InvalidUtf8));
        // A lone truncated-but-valid prefix is fine until the message ends.
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xE2, 0x82], false).is_ok());
        assert!(!v.is_complete());
        assert!(v.feed(&[0xAC], true).is_ok());
    }

    #[test]
    fn every_two_byte_prefix_matches_reference() {
        // Exhaustive over all byte pairs, each fed one byte at a time.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let msg = [a, b];
                let mut fast = Utf8Validator::new();
                let mut slow = ReferenceValidator::default();
                let f = fast
                    .feed(&msg[..1], false)
                    .and_then(|_| fast.feed(&msg[1..], false));
                let s = slow
                    .feed(&msg[..1], false)
                    .and_then(|_| slow.feed(&msg[1..], false));
                assert_eq!(f.is_ok(), s.is_ok(), "{msg:x?}");
            }
        }
    }
}
