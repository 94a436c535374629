//! sockwave: a WebSocket server with a mio event loop per core, worker threads
//! for the handlers, and a C API callable from any thread.
//!
//! Start with [`server`]: [`server::Server::start`] with a [`server::Config`]
//! and your [`server::Handler`]; everything a handler needs is in that one
//! module (`use sockwave::server::{...}`).
//!
//! The crate has layers that only depend downwards:
//! - [`server`]: the runtime (event loops, workers, handles).
//! - [`broker`]: pub/sub across nodes (the [`broker::Broker`] interface the
//!   server talks to; Redis as its implementation).
//! - [`protocol`]: the sans-IO RFC 6455 core it is built on (handshake,
//!   frames, messages, close), usable on its own.
//! - [`ffi`]: the C API over the server's public API (`include/sockwave.h`).
#![warn(missing_debug_implementations, missing_docs, unreachable_pub)]

pub use latency::LatencyHistogram;

pub mod broker;
mod buffer_pool;
pub mod ffi;
mod latency;
pub mod protocol;
pub mod server;
mod spares;
