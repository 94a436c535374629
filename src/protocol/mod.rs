//! The sans-IO WebSocket protocol core (RFC 6455).
//!
//! Bytes and `now` in, events and bytes out: this module knows nothing of
//! sockets, threads or clocks, so every rule can be tested byte by byte and
//! fuzzed in memory. (`tests/layering.rs` fails the build of the tests if a
//! file here ever imports mio, crossbeam, std::net, std::thread or reads the clock.)
//!
//! - [`handshake`]: parse the upgrade request incrementally, validate it, write responses.
//! - [`frame`]: decode and encode frame headers.
//! - [`mask`], [`utf8`]: the hot loops, each with a reference implementation.
//! - [`close`]: close codes and payloads.
//! - [`deflate`]: permessage-deflate negotiation and (de)compression (RFC 7692).
//! - [`conn`]: the per-connection state machine that ties them together.
//! - [`client`]: the client side of the handshake, for tests and load generation.

pub mod client;
pub mod close;
pub mod conn;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
mod moment;
pub mod utf8;

pub use close::{code as close_code, CloseFrame};
pub use conn::{
    Connection, Event, MessageKind, Payload, ProtocolConfig, Read, Role, SendError, Sink, State,
    Timeout, LENT_MESSAGE_MAX,
};
pub use error::ProtocolError;
pub use frame::{EncodedHeader, FrameHeader, OpCode};
pub use handshake::{
    check_extra_header, AcceptOptions, HandshakeError, HandshakeLimits, HeaderRefused, Request,
};
