//! [`Aside`]: what a connection holds only for a while, kept out of its slot
//! so an idle connection pays one word for all of it.

use std::net::SocketAddr;
use std::sync::Arc;

use super::prepared::PreparedMessage;

/// The short-lived part of a connection: made when one of these appears,
/// dropped once all are gone again.
#[derive(Debug, Default)]
pub(crate) struct Aside {
    /// Unconsumed input: a read ended inside a header or a control frame,
    /// or inside the request head.
    pub(crate) tail: Vec<u8>,
    /// The client a trusted proxy's PROXY header named, until the upgrade.
    pub(crate) client: Option<SocketAddr>,
    /// Broadcasts and publishes held while `on_open` runs, so they follow
    /// what it sends.
    pub(crate) deferred: Vec<Arc<PreparedMessage>>,
}

impl Aside {
    /// Nothing left: the box can go.
    pub(crate) fn is_empty(&self) -> bool {
        self.tail.is_empty() && self.client.is_none() && self.deferred.is_empty()
    }
}
