//! [`NodeSink`]: where a broker delivers other nodes' messages: this
//! node's loops, through the same bounded fan-out as a local publish.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::command::Command;
use super::prepared::PreparedMessage;
use super::server_state::ServerState;
use crate::broker::{RemoteSink, Target};
use crate::protocol::MessageKind;

/// The server as its broker sees it. Weak, so the broker (which the
/// server's config owns) does not keep the server alive.
pub(crate) struct NodeSink(pub(crate) Weak<ServerState>);

impl RemoteSink for NodeSink {
    fn deliver(&self, target: Target<'_>, kind: MessageKind, payload: &[u8]) -> bool {
        let Some(state) = self.0.upgrade() else {
            return false;
        };
        if state.shutting_down.load(Ordering::Acquire) {
            return false;
        }
        // Encoded once for every local recipient, as a local publish is.
        let message = PreparedMessage::new(kind, payload);
        match target {
            Target::Broadcast => state.fan_out(&message, || Command::Broadcast {
                message: Arc::clone(&message),
                exclude: None,
            }),
            Target::Topic(topic) => {
                let topic: Arc<str> = topic.into();
                state.fan_out(&message, || Command::Publish {
                    topic: Arc::clone(&topic),
                    message: Arc::clone(&message),
                    exclude: None,
                })
            }
        }
    }
}
