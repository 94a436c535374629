//! The runtime: N event loops (one per core by default), each with its own
//! SO_REUSEPORT listener and `mio::Poll`, and the handler run on worker
//! threads or inline on the loops.
//!
//! ```no_run
//! use sockwave::server::{Config, Echo, Server};
//! let server = Server::start(Config::default(), Echo).unwrap();
//! println!("listening on {}", server.local_addr());
//! server.join();
//! ```
//!
//! # What a user needs
//! [`Server::start`] with a [`Config`] and a [`Handler`] gives a
//! [`ServerHandle`]; each connection is a [`Conn`] handed to the handler.
//! Both work from any thread.
//!
//! # How it is built (one concept per file)
//! | file | concept |
//! | --- | --- |
//! | `start.rs` | [`Server`]: binds the listeners, starts the threads |
//! | `server_handle.rs` | [`ServerHandle`]: broadcast, publish, shutdown, join from any thread |
//! | `server_state.rs` | what every thread of one server shares |
//! | `conn.rs` | [`Conn`], the thread-safe handle |
//! | `conn_inner.rs` | what a connection's loop shares with other threads; the one reservation that applies the backpressure policy |
//! | `conn_id.rs` | [`ConnId`]: slot, loop and generation |
//! | `handler.rs` | [`Handler`], what its hooks see ([`Upgrade`]) and answer ([`Decision`], [`HttpResponse`]), [`Echo`] |
//! | `message.rs` | [`Message`], a complete incoming message |
//! | `send_status.rs` | [`SendStatus`], [`DropReason`] |
//! | `config.rs` | [`Config`] and its choices |
//! | `stats.rs` | [`Stats`], and per-loop tallies |
//! | `command.rs` | what other threads ask of a loop |
//! | `loop_commands.rs` | how the loop carries those out |
//! | `loop_accept.rs` | how the loop accepts (and retries when out of descriptors) |
//! | `loop_upgrade.rs` | how the loop answers a request head and opens the connection |
//! | `loop_timers.rs` | how the loop acts on due deadlines |
//! | `mailbox.rs` | a loop's channel, waker and id registry |
//! | `event_loop.rs` | the loop's turn: poll, accept, read, process, commands, timers, flush |
//! | `conn_table.rs` | slots, generations, free list, the flush list |
//! | `loop_conn.rs` | one connection as its loop owns it |
//! | `lifecycle.rs` | the runtime's view of a connection, one enum |
//! | `aside.rs` | what a connection holds only for a while (input cut in a header, a PROXY client, messages held for `on_open`) |
//! | `transport.rs` | the seam between socket and protocol; plain TCP |
//! | `tls_config.rs` | [`TlsConfig`]: certificates, SNI, reload |
//! | `tls_transport.rs` | TLS on that seam (rustls) |
//! | `stream.rs` | the transport a connection holds: TCP or TLS |
//! | `out_queue.rs` | the bytes a connection owes, coalesced, written by iovecs |
//! | `prepared.rs` | encoding decided once per connection; messages framed once for many |
//! | `dispatch.rs` | inline or worker dispatch, the worker thread, batches |
//! | `rate_limit.rs` | [`RateLimit`]: per-connection and per-address limits, token buckets |
//! | `ip_limits.rs` | connections and handshakes per source address, shared by the loops |
//! | `trusted_proxies.rs` | [`TrustedProxies`]: whose word about the client's address counts; `Forwarded` / `X-Forwarded-For` |
//! | `proxy_protocol.rs` | the PROXY protocol header, versions 1 and 2 |
//! | `topics.rs` | pub/sub subscriptions of one loop |
//! | `topic_interest.rs` | with a broker: the topics the node has subscribers of, over all loops |
//! | `node_sink.rs` | with a broker: other nodes' messages into this node's loops |
//! | `timers.rs` | deadlines in a heap: a tick costs what is due |
//! | `upgrade.rs` | the upgrade decision, a pure function of config, handler, request and load |

mod aside;
mod batch_vectors;
mod command;
mod command_queue;
mod config;
mod conn;
mod conn_id;
mod conn_inner;
mod conn_table;
mod core_sharing;
mod dispatch;
mod event_loop;
#[doc(hidden)]
pub mod fuzzing;
mod handler;
mod ip_limits;
mod lent_queue;
mod lifecycle;
mod loop_accept;
mod loop_commands;
mod loop_conn;
mod loop_timers;
mod loop_upgrade;
mod mailbox;
mod message;
mod node_sink;
mod out_queue;
mod parking;
mod prepared;
mod proxy_protocol;
mod rate_limit;
mod run_delay;
mod send_status;
mod server_handle;
mod server_state;
mod start;
mod stats;
mod stream;
mod timers;
#[cfg(feature = "tls")]
mod tls_config;
#[cfg(feature = "tls")]
mod tls_transport;
mod topic_interest;
mod topics;
mod transport;
mod trusted_proxies;
mod upgrade;
mod worker_inbox;
mod yield_gauge;

pub use crate::latency::LatencyHistogram;
pub use config::{BackpressurePolicy, Config, Dispatch};
pub use conn::Conn;
pub(crate) use conn::SubscriptionRefused;
pub use conn_id::ConnId;
pub use handler::{Decision, Echo, Handler, HttpResponse, Upgrade};
pub use mailbox::LoopGauges;
pub use message::Message;
pub use rate_limit::{Rate, RateLimit, RateLimitPolicy};
pub use send_status::{DropReason, PayloadTooLong, SendStatus};
pub use server_handle::ServerHandle;
pub use start::Server;
pub use stats::{HandshakeFailures, Latencies, Stats, StatsSnapshot, TlsHandshakes};
#[cfg(feature = "tls")]
pub use tls_config::{TlsConfig, TlsError};
pub use trusted_proxies::{IpNetwork, ProxyHeader, TrustedProxies};

pub use crate::protocol::{MessageKind, ProtocolConfig, Request};
