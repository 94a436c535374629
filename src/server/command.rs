//! [`Command`]: what other threads (workers, handles, the C API) ask of a loop.

use std::sync::Arc;

use super::prepared::{Prepared, PreparedMessage};
use super::ConnId;

/// What other threads ask of a loop, through its mailbox.
#[derive(Debug)]
pub(crate) enum Command {
    /// A message for one connection, made ready for its encoding.
    Send {
        id: ConnId,
        message: Prepared<'static>,
        /// Bytes reserved in the connection's buffered count.
        accounted: usize,
    },
    Ping {
        id: ConnId,
        payload: Vec<u8>,
        /// Bytes reserved in the connection's buffered count.
        accounted: usize,
    },
    Close {
        id: ConnId,
        code: u16,
        reason: String,
    },
    /// One message for every open connection of the loop but `exclude`.
    Broadcast {
        message: Arc<PreparedMessage>,
        exclude: Option<ConnId>,
    },
    Subscribe {
        id: ConnId,
        topic: Arc<str>,
    },
    Unsubscribe {
        id: ConnId,
        topic: Arc<str>,
    },
    /// One message for every subscriber of `topic` on the loop but `exclude`.
    Publish {
        topic: Arc<str>,
        message: Arc<PreparedMessage>,
        exclude: Option<ConnId>,
    },
    /// `on_open` has returned. Sent through the loop's channel after whatever
    /// `on_open` sent, so broadcasts that include the connection from here on
    /// can never overtake those messages.
    Opened {
        id: ConnId,
    },
    /// The worker has handled everything up to the connection's close: the
    /// close frame the protocol holds back may go out.
    CloseAck {
        id: ConnId,
    },
    Shutdown,
}
