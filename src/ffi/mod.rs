//! The C API (`include/sockwave.h`, generated from this module by cbindgen).
//!
//! Conventions (as rustls-ffi and hyper's C API do it):
//! - opaque handles with `_new`/`_start` and `_free` pairs; `_free(NULL)` does nothing;
//! - every fallible function returns `sw_result` (fixed numbers, never reused),
//!   writes its outputs only on success, and takes a buffer followed by its length;
//! - every pointer is checked for NULL; every entry point catches panics and
//!   reports `SW_RESULT_PANIC` (or a documented default) instead of unwinding into C;
//! - callbacks take `void *userdata` first; data handed to a callback is
//!   borrowed for the duration of the call;
//! - everything that takes a `const sw_server *` may be called from any thread,
//!   including from inside callbacks.
//!
//! One file per C object: `boundary.rs` (result codes, the panic boundary,
//! pointer checks), `config.rs` (`sw_config`), `server.rs` (`sw_server`),
//! `conn.rs` (`sw_conn_*` by id), `counters.rs` (`sw_counter`, one counter
//! at a time), `callbacks.rs` (`sw_callbacks` and the
//! handler that calls them), `request.rs` (`sw_request`, `sw_upgrade`),
//! `tls.rs` (certificates, reload), `broker.rs` (pub/sub across nodes).
//! Every entry point runs inside the panic boundary from its first line.
#![allow(non_camel_case_types)]
// Every `extern "C"` function here checks its pointers itself and documents
// what it requires of them in the header; clippy's blanket lint does not know that.
#![allow(clippy::missing_safety_doc)]
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod boundary;
mod broker;
mod callbacks;
mod config;
mod conn;
mod counters;
mod request;
mod server;
mod tls;

pub use boundary::{sw_result, sw_result_str, sw_str, sw_version};
pub use broker::*;
pub use callbacks::*;
pub use config::*;
pub use conn::*;
pub use counters::*;
pub use request::*;
pub use server::*;
pub use tls::*;
