//! [`Topics`]: one loop's pub/sub table: topic → subscribed slots, and the
//! reverse, so a closing connection leaves every topic it was in. With a
//! broker, the node-wide [`TopicInterest`] hears of the loop's first
//! subscriber of a topic and of its last one leaving.

use std::collections::HashMap;
use std::sync::Arc;

use super::topic_interest::TopicInterest;

/// Topic subscriptions of one loop's connections, by slot.
///
/// Every operation but delivery's walk over a topic's slots takes constant
/// time, whatever the size of the topic and the number of topics a slot is
/// in: each subscription knows its place in both lists ([`Place`]), and
/// leaves them by moving the last entry into its place. A search through
/// the lists instead made 5,000 subscribers leaving one topic cost 12.5
/// million element moves, quadratic in the topic's size (69M of the 1,471M
/// instructions of a 6 s fan-out run, callgrind); a slot in thousands of
/// topics was quadratic in those.
#[derive(Debug)]
pub(crate) struct Topics {
    /// Topic → the slots subscribed to it, in no particular order. The key
    /// is the loop's one copy of the name: its address names the topic in
    /// `places` for as long as the topic has subscribers.
    by_topic: HashMap<Arc<str>, Vec<usize>>,
    /// Slot → the topics it is in (the loop's copies of their names).
    by_slot: HashMap<usize, Vec<Arc<str>>>,
    /// Each subscription, by (slot, topic's address): where it sits.
    places: HashMap<(usize, usize), Place>,
    /// Connections whose messages the loop publishes itself, and where.
    relays: HashMap<usize, Arc<str>>,
    interest: Option<Arc<TopicInterest>>,
    /// Topics one slot may be in ([`Config::max_subscriptions`](super::Config::max_subscriptions)).
    max_per_slot: usize,
}

/// What [`Topics::subscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joined {
    /// The slot is now subscribed.
    New,
    /// It already was.
    Already,
    /// It is in as many topics as a slot may be: nothing done.
    Refused,
}

/// Where one subscription sits: its slot's place in the topic's list, and
/// the topic's place in the slot's list.
#[derive(Debug, Clone, Copy)]
struct Place {
    in_topic: usize,
    in_slot: usize,
}

/// A subscription's key in [`Topics::places`]: the slot and the address of
/// the loop's copy of the topic's name.
fn key(slot: usize, topic: &Arc<str>) -> (usize, usize) {
    (slot, Arc::as_ptr(topic).cast::<u8>() as usize)
}

impl Topics {
    /// A loop's table that tells `interest` (when there is a broker) and
    /// holds each slot in at most `max_per_slot` topics.
    pub(crate) fn new(interest: Option<Arc<TopicInterest>>, max_per_slot: usize) -> Topics {
        Topics {
            by_topic: HashMap::new(),
            by_slot: HashMap::new(),
            places: HashMap::new(),
            relays: HashMap::new(),
            interest,
            max_per_slot,
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

    /// Subscribes `slot` to `topic`, unless it already is or is in as many
    /// topics as a slot may be.
    pub(crate) fn subscribe(&mut self, slot: usize, topic: Arc<str>) -> Joined {
        let topic = match self.by_topic.get_key_value(&*topic) {
            Some((own, _)) => Arc::clone(own),
            None => topic,
        };
        if self.places.contains_key(&key(slot, &topic)) {
            return Joined::Already;
        }
        if self.by_slot.get(&slot).map_or(0, Vec::len) >= self.max_per_slot {
            return Joined::Refused;
        }
        let slots = self.by_topic.entry(Arc::clone(&topic)).or_default();
        slots.push(slot);
        let in_topic = slots.len() - 1;
        if in_topic == 0 {
            if let Some(interest) = &self.interest {
                interest.joined(&topic);
            }
        }
        let topics = self.by_slot.entry(slot).or_default();
        topics.push(Arc::clone(&topic));
        let in_slot = topics.len() - 1;
        self.places
            .insert(key(slot, &topic), Place { in_topic, in_slot });
        Joined::New
    }

    /// Unsubscribes `slot` from `topic`; false if it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, slot: usize, topic: &str) -> bool {
        let Some((own, _)) = self.by_topic.get_key_value(topic) else {
            return false;
        };
        let topic = Arc::clone(own);
        let Some(place) = self.places.remove(&key(slot, &topic)) else {
            return false;
        };
        if let Some(topics) = self.by_slot.get_mut(&slot) {
            topics.swap_remove(place.in_slot);
            if let Some(moved) = topics.get(place.in_slot) {
                if let Some(p) = self.places.get_mut(&key(slot, moved)) {
                    p.in_slot = place.in_slot;
                }
            }
            if topics.is_empty() {
                self.by_slot.remove(&slot);
            }
        }
        self.leave(slot, &topic, place.in_topic);
        true
    }

    /// Takes `slot` out of every topic (its connection is gone).
    pub(crate) fn remove(&mut self, slot: usize) {
        self.relays.remove(&slot);
        for topic in self.by_slot.remove(&slot).unwrap_or_default() {
            if let Some(place) = self.places.remove(&key(slot, &topic)) {
                self.leave(slot, &topic, place.in_topic);
            }
        }
    }

    /// Takes `slot` out of `topic`'s list, where it sits at `at` (its
    /// records of the subscription are gone already): the list's last slot
    /// moves into its place.
    fn leave(&mut self, slot: usize, topic: &Arc<str>, at: usize) {
        let Some(slots) = self.by_topic.get_mut(topic) else {
            return;
        };
        debug_assert_eq!(slots.get(at), Some(&slot), "a subscription knows its place");
        slots.swap_remove(at);
        if let Some(&moved) = slots.get(at) {
            if let Some(p) = self.places.get_mut(&key(moved, topic)) {
                p.in_topic = at;
            }
        }
        if slots.is_empty() {
            self.by_topic.remove(topic);
            if let Some(interest) = &self.interest {
                interest.left(topic);
            }
        }
    }

    /// The slots subscribed to `topic`, in no particular order.
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

    fn unlimited() -> Topics {
        Topics::new(None, usize::MAX)
    }

    #[test]
    fn subscribe_is_idempotent() {
        let mut t = unlimited();
        assert_eq!(t.subscribe(3, "a".into()), Joined::New);
        assert_eq!(t.subscribe(1, "a".into()), Joined::New);
        assert_eq!(t.subscribe(3, "a".into()), Joined::Already);
        assert_eq!(t.subscribe(3, "b".into()), Joined::New);
        assert_eq!(t.subscribers("a"), &[3, 1], "in order while no one left");
        assert_eq!(t.subscribers("b"), &[3]);
        assert_eq!(t.subscribers("nobody"), &[] as &[usize]);
    }

    #[test]
    fn a_slot_joins_at_most_its_limit_of_topics() {
        let mut t = Topics::new(None, 2);
        assert_eq!(t.subscribe(1, "a".into()), Joined::New);
        assert_eq!(t.subscribe(1, "b".into()), Joined::New);
        assert_eq!(t.subscribe(1, "a".into()), Joined::Already, "not refused");
        assert_eq!(t.subscribe(1, "c".into()), Joined::Refused);
        assert_eq!(t.subscribers("c"), &[] as &[usize], "nothing done");
        assert_eq!(t.topic_count(), 2, "no empty topic kept");
        assert_eq!(t.subscribe(2, "c".into()), Joined::New, "per slot");
        assert!(t.unsubscribe(1, "a"));
        assert_eq!(t.subscribe(1, "c".into()), Joined::New, "room again");
        assert_eq!(t.subscribers("c").len(), 2);
    }

    #[test]
    fn unsubscribe_and_removal_leave_no_empty_topics() {
        let mut t = unlimited();
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

    /// Every topic's list holds exactly the slots subscribed to it, and
    /// every subscription knows its place in both lists.
    fn assert_consistent(t: &Topics, model: &std::collections::BTreeSet<(usize, u8)>) {
        for (topic, slots) in &t.by_topic {
            let mut got: Vec<usize> = slots.clone();
            got.sort_unstable();
            let want: Vec<usize> = model
                .iter()
                .filter(|(_, k)| format!("t{k}") == **topic)
                .map(|&(s, _)| s)
                .collect();
            assert_eq!(got, want, "topic {topic}");
        }
        let topics: std::collections::BTreeSet<u8> = model.iter().map(|&(_, k)| k).collect();
        assert_eq!(t.topic_count(), topics.len(), "no empty topics kept");
        for (&slot, its_topics) in &t.by_slot {
            assert!(!its_topics.is_empty());
            for (i, topic) in its_topics.iter().enumerate() {
                let place = t.places[&key(slot, topic)];
                assert_eq!(place.in_slot, i);
                assert_eq!(t.by_topic[topic][place.in_topic], slot);
                assert!(
                    Arc::ptr_eq(t.by_topic.get_key_value(topic).unwrap().0, topic),
                    "the loop's one copy of the name"
                );
            }
        }
        assert_eq!(t.places.len(), model.len());
        assert_eq!(t.by_slot.values().map(Vec::len).sum::<usize>(), model.len());
    }

    #[test]
    fn any_order_of_joins_and_leaves_keeps_the_table_exact() {
        // A reference model (a set of (slot, topic) pairs) beside the table,
        // through 20,000 random subscribes, unsubscribes and removals.
        let mut t = unlimited();
        let mut model = std::collections::BTreeSet::new();
        let mut rng = 0x2545_f491_u32;
        let mut next = |n: u32| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng % n
        };
        for step in 0..20_000 {
            let slot = next(64) as usize;
            let topic = next(24) as u8;
            let name: Arc<str> = format!("t{topic}").into();
            match next(10) {
                0..=5 => assert_eq!(
                    t.subscribe(slot, name) == Joined::New,
                    model.insert((slot, topic))
                ),
                6..=8 => assert_eq!(t.unsubscribe(slot, &name), model.remove(&(slot, topic))),
                _ => {
                    t.remove(slot);
                    model.retain(|&(s, _)| s != slot);
                }
            }
            if step % 97 == 0 {
                assert_consistent(&t, &model);
            }
        }
        assert_consistent(&t, &model);
    }
}
