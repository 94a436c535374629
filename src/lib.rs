//! sockwave: a WebSocket server with a mio event loop per core, worker threads
//! for the handlers, and a C API callable from any thread.
//!
//! The crate has layers that only depend downwards:
//! - [`protocol`]: the sans-IO RFC 6455 core (handshake, frames, messages, close).
//! - [`server`]: the runtime (event loops, workers, handles) built on it.
//! - [`ffi`]: the C API over the server's public API (`include/sockwave.h`).
#![warn(missing_debug_implementations)]

pub mod ffi;
pub mod protocol;
pub mod server;
