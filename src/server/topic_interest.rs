//! [`TopicInterest`]: which topics this node has local subscribers of, over
//! all its loops, so the broker subscribes a topic once per node.
//!
//! Each loop's [`Topics`](super::topics::Topics) reports only its own
//! transitions (its first subscriber of a topic, its last one leaving);
//! this counts the loops per topic and tells the broker on 0 → 1 and 1 → 0.
//! The broker is told under the lock, so its subscribe and unsubscribe of
//! one topic arrive in the order they happened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::broker::Broker;

/// Loops with at least one subscriber, per topic.
#[derive(Debug)]
pub(crate) struct TopicInterest {
    loops: Mutex<HashMap<Arc<str>, usize>>,
    broker: Arc<dyn Broker>,
}

impl TopicInterest {
    pub(crate) fn new(broker: Arc<dyn Broker>) -> TopicInterest {
        TopicInterest {
            loops: Mutex::default(),
            broker,
        }
    }

    /// A loop got its first subscriber of `topic`.
    pub(crate) fn joined(&self, topic: &Arc<str>) {
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        let n = loops.entry(Arc::clone(topic)).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.broker.subscribe(topic);
        }
    }

    /// A loop's last subscriber of `topic` left.
    pub(crate) fn left(&self, topic: &str) {
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        let Some(n) = loops.get_mut(topic) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            loops.remove(topic);
            self.broker.unsubscribe(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::broker::{BrokerHealth, BrokerStats, RemoteSink, Target};
    use crate::protocol::MessageKind;

    /// A broker that records what it was told.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Broker for Recorder {
        fn start(&self, _: Arc<dyn RemoteSink>) -> std::io::Result<()> {
            Ok(())
        }
        fn publish(&self, _: Target<'_>, _: MessageKind, _: &[u8], _: Option<u64>) {}
        fn subscribe(&self, topic: &str) {
            self.0.lock().unwrap().push(format!("+{topic}"));
        }
        fn unsubscribe(&self, topic: &str) {
            self.0.lock().unwrap().push(format!("-{topic}"));
        }
        fn health(&self) -> BrokerHealth {
            BrokerHealth::Healthy
        }
        fn stats(&self) -> BrokerStats {
            BrokerStats::default()
        }
        fn stop(&self) {}
    }

    #[test]
    fn the_broker_hears_the_first_join_and_the_last_leave() {
        let recorder = Arc::new(Recorder::default());
        let interest = TopicInterest::new(recorder.clone());
        let a: Arc<str> = "a".into();
        interest.joined(&a);
        interest.joined(&a);
        interest.left("a");
        interest.left("nobody");
        interest.left("a");
        interest.joined(&a);
        assert_eq!(*recorder.0.lock().unwrap(), ["+a", "-a", "+a"]);
    }
}
