//! [`Topics`]: one loop's pub/sub table: topic → subscribed slots, and the
//! reverse, so a closing connection leaves every topic it was in. With a
//! broker, the node-wide [`TopicInterest`] hears of the loop's first
//! subscriber of a topic and of its last one leaving.

use std::collections::HashMap;
use std::sync::Arc;

use super::topic_interest::TopicInterest;

/// Topic subscriptions of one loop's connections, by slot.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_topic: HashMap<Arc<str>, Vec<usize>>,
    by_slot: HashMap<usize, Vec<Arc<str>>>,
    /// Connections whose messages the loop publishes itself, and where.
    relays: HashMap<usize, Arc<str>>,
    interest: Option<Arc<TopicInterest>>,
}

impl Topics {
    /// A loop's table that tells `interest` (when there is a broker).
    pub(crate) fn new(interest: Option<Arc<TopicInterest>>) -> Topics {
        Topics {
            interest,
            ..Topics::default()
        }
    }

    /// Makes `slot` a relay: the loop publishes its messages to `topic`.
    pub(crate) fn relay(&mut self, slot: usize, topic: Arc<str>) {
        self.relays.insert(slot, topic);
    }

    /// Where `slot`'s messages go when it is a relay.
    pub(crate) fn relay_of(&self, slot: usize) -> Option<&Arc<str>> {
        if self.relays.is_empty() {
            return None;
        }
        self.relays.get(&slot)
    }

    /// Subscribes `slot` to `topic`; false if it already was.
    pub(crate) fn subscribe(&mut self, slot: usize, topic: Arc<str>) -> bool {
        let subs = self.by_slot.entry(slot).or_default();
        if subs.contains(&topic) {
            return false;
        }
        subs.push(Arc::clone(&topic));
        let slots = self.by_topic.entry(Arc::clone(&topic)).or_default();
        slots.push(slot);
        if slots.len() == 1 {
            if let Some(interest) = &self.interest {
                interest.joined(&topic);
            }
        }
        true
    }

    /// Unsubscribes `slot` from `topic`; false if it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, slot: usize, topic: &str) -> bool {
        let Some(subs) = self.by_slot.get_mut(&slot) else {
            return false;
        };
        let before = subs.len();
        subs.retain(|t| &**t != topic);
        if subs.len() == before {
            return false;
        }
        if subs.is_empty() {
            self.by_slot.remove(&slot);
        }
        self.remove_from_topic(slot, topic);
        true
    }

    /// Takes `slot` out of every topic (its connection is gone).
    pub(crate) fn remove(&mut self, slot: usize) {
        self.relays.remove(&slot);
        for topic in self.by_slot.remove(&slot).unwrap_or_default() {
            self.remove_from_topic(slot, &topic);
        }
    }

    fn remove_from_topic(&mut self, slot: usize, topic: &str) {
        if let Some(slots) = self.by_topic.get_mut(topic) {
            slots.retain(|s| *s != slot);
            if slots.is_empty() {
                self.by_topic.remove(topic);
                if let Some(interest) = &self.interest {
                    interest.left(topic);
                }
            }
        }
    }

    /// The slots subscribed to `topic`, in the order they subscribed.
    pub(crate) fn subscribers(&self, topic: &str) -> &[usize] {
        self.by_topic.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Topics with at least one subscriber.
    #[cfg(test)]
    fn topic_count(&self) -> usize {
        self.by_topic.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_is_idempotent_and_keeps_order() {
        let mut t = Topics::default();
        assert!(t.subscribe(3, "a".into()));
        assert!(t.subscribe(1, "a".into()));
        assert!(!t.subscribe(3, "a".into()), "already subscribed");
        assert!(t.subscribe(3, "b".into()));
        assert_eq!(t.subscribers("a"), &[3, 1]);
        assert_eq!(t.subscribers("b"), &[3]);
        assert_eq!(t.subscribers("nobody"), &[] as &[usize]);
    }

    #[test]
    fn unsubscribe_and_removal_leave_no_empty_topics() {
        let mut t = Topics::default();
        t.subscribe(1, "a".into());
        t.subscribe(2, "a".into());
        t.subscribe(1, "b".into());
        assert!(t.unsubscribe(2, "a"));
        assert!(!t.unsubscribe(2, "a"), "not subscribed any more");
        assert!(!t.unsubscribe(9, "a"), "never subscribed");
        assert_eq!(t.subscribers("a"), &[1]);
        t.remove(1);
        assert_eq!(t.topic_count(), 0);
        assert!(t.by_slot.is_empty());
    }
}
