//! Close codes and close frame payloads (RFC 6455 sections 5.5.1 and 7.4).

use super::utf8;

/// Well-known close codes. Any `u16` is a close code on the wire; these are
/// the names the server itself uses.
pub mod code {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: u16 = 1000;
    /// 1001: the endpoint is going away (server shutdown, page left, timeout).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1003: a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Reserved: never on the wire; "the peer's close frame had no code".
    pub const NO_STATUS: u16 = 1005;
    /// Reserved: never on the wire; "the connection ended without a close frame".
    pub const ABNORMAL: u16 = 1006;
    /// 1007: a message's data did not match its kind (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// 1010: (client) an extension the server did not agree to.
    pub const MANDATORY_EXTENSION: u16 = 1010;
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: u16 = 1012;
    /// 1013: try again later (temporary overload).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// May `code` appear in a close frame? 1000-1003 and 1007-1014 are the codes
/// IANA registered for the wire, 3000-4999 belong to libraries and applications;
/// everything else (0-999, 1004-1006, 1015-2999, 5000+) is a protocol error.
pub fn is_valid_wire_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A parsed close frame payload, borrowing its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The code, or [`code::NO_STATUS`] when the payload was empty.
    pub code: u16,
    /// The reason (valid UTF-8, at most 123 bytes).
    pub reason: &'a str,
}

/// Why a close payload was refused; each maps to the close code we answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosePayloadError {
    /// One byte: a code cannot be half present (1002).
    Truncated,
    /// A code that may not be sent (1002).
    InvalidCode(u16),
    /// The reason is not UTF-8 (1007).
    InvalidReason,
}

impl ClosePayloadError {
    /// The close code this error is answered with.
    pub fn close_code(self) -> u16 {
        match self {
            ClosePayloadError::Truncated | ClosePayloadError::InvalidCode(_) => {
                code::PROTOCOL_ERROR
            }
            ClosePayloadError::InvalidReason => code::INVALID_PAYLOAD,
        }
    }
}

/// Parses an (already unmasked) close frame payload.
pub fn parse_close_payload(payload: &[u8]) -> Result<CloseFrame<'_>, ClosePayloadError> {
    match payload.len() {
        0 => Ok(CloseFrame {
            code: code::NO_STATUS,
            reason: "",
        }),
        1 => Err(ClosePayloadError::Truncated),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_wire_code(code) {
                return Err(ClosePayloadError::InvalidCode(code));
            }
            let reason_bytes = &payload[2..];
            utf8::validate(reason_bytes).map_err(|_| ClosePayloadError::InvalidReason)?;
            // Validated just above.
            let reason =
                std::str::from_utf8(reason_bytes).map_err(|_| ClosePayloadError::InvalidReason)?;
            Ok(CloseFrame { code, reason })
        }
    }
}

/// The longest reason that fits a control frame (125 bytes minus the code).
pub const MAX_REASON_LEN: usize = 123;

/// Writes a close payload (`code` + `reason`) into `out` and returns its length.
/// A reason longer than [`MAX_REASON_LEN`] is cut at a character boundary.
/// [`code::NO_STATUS`] produces the empty payload.
pub fn write_close_payload(code: u16, reason: &str, out: &mut [u8; 125]) -> usize {
    if code == code::NO_STATUS {
        return 0;
    }
    out[..2].copy_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    out[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    2 + cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_codes() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(is_valid_wire_code(c), "{c}");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_wire_code(c), "{c}");
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(
            parse_close_payload(&[]),
            Ok(CloseFrame {
                code: 1005,
                reason: ""
            })
        );
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(ClosePayloadError::Truncated)
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, b'b', b'y', b'e']),
            Ok(CloseFrame {
                code: 1000,
                reason: "bye"
            })
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xe7]),
            Err(ClosePayloadError::InvalidCode(999))
        );
        let bad_reason = [0x03, 0xe8, 0xce, 0xba, 0xed, 0xa0, 0x80];
        let err = parse_close_payload(&bad_reason).unwrap_err();
        assert_eq!(err, ClosePayloadError::InvalidReason);
        assert_eq!(err.close_code(), 1007);
        assert_eq!(ClosePayloadError::Truncated.close_code(), 1002);
    }

    #[test]
    fn write_payload_truncates_on_char_boundary() {
        let mut out = [0u8; 125];
        assert_eq!(write_close_payload(1005, "ignored", &mut out), 0);
        let n = write_close_payload(1001, "bye", &mut out);
        assert_eq!(&out[..n], &[0x03, 0xe9, b'b', b'y', b'e']);
        let long = "é".repeat(100); // 200 bytes
        let n = write_close_payload(4000, &long, &mut out);
        assert_eq!(n, 2 + 122);
        assert!(std::str::from_utf8(&out[2..n]).is_ok());
    }
}
