//! Why a connection is failed, and the close code each reason calls for.

use super::close::code;
use std::fmt;

/// A violation by the peer that fails the connection (RFC 6455 section 7.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV1-3 set without an extension that defines them.
    ReservedBits,
    /// Opcodes 3-7 and 11-15.
    ReservedOpcode(u8),
    /// A control frame with FIN clear.
    FragmentedControl,
    /// A control frame payload over 125 bytes.
    ControlTooLong,
    /// A client frame without a mask, or a server frame with one.
    BadMask,
    /// A 64-bit length with the most significant bit set.
    LengthOverflow,
    /// A length in more bytes than it needs (RFC 6455 5.2: "the minimal
    /// number of bytes MUST be used").
    NonMinimalLength,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// Text that is not UTF-8.
    InvalidUtf8,
    /// A close payload of one byte or with a reserved code.
    InvalidClosePayload,
    /// A close reason that is not UTF-8.
    InvalidCloseReason,
    /// A frame larger than the configured frame limit.
    FrameTooBig,
    /// A message larger than the configured message limit.
    MessageTooBig,
    /// A compressed message that could not be inflated.
    BadCompression,
}

impl ProtocolError {
    /// The close code we send when failing the connection for this reason.
    pub fn close_code(self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => code::INVALID_PAYLOAD,
            ProtocolError::FrameTooBig | ProtocolError::MessageTooBig => code::MESSAGE_TOO_BIG,
            ProtocolError::BadCompression => code::INVALID_PAYLOAD,
            _ => code::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame and the logs.
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::FragmentedControl => "fragmented control frame",
            ProtocolError::ControlTooLong => "control frame too long",
            ProtocolError::BadMask => "bad masking",
            ProtocolError::LengthOverflow => "frame length overflow",
            ProtocolError::NonMinimalLength => "frame length not in its minimal form",
            ProtocolError::UnexpectedContinuation => "continuation without a message",
            ProtocolError::ExpectedContinuation => "expected a continuation frame",
            ProtocolError::InvalidUtf8 => "invalid UTF-8 in text",
            ProtocolError::InvalidClosePayload => "invalid close payload",
            ProtocolError::InvalidCloseReason => "invalid UTF-8 in close reason",
            ProtocolError::FrameTooBig => "frame too big",
            ProtocolError::MessageTooBig => "message too big",
            ProtocolError::BadCompression => "invalid compressed data",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close {})", self.reason(), self.close_code())
    }
}

impl std::error::Error for ProtocolError {}
