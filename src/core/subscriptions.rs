//! The subscription index, both ways: channel → its subscribers (a slab, so
//! adding and removing one is O(1) and fan-out walks only that channel's
//! subscribers) and connection → its channels with each one's slab key (so
//! unsubscribing costs a scan of the connection's few channels, and removing
//! a connection costs its own channels).

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

use super::{ConnId, ConnMap};

/// Who is subscribed to what.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionIndex {
    /// Subscribers of each channel that has any. The name is shared with
    /// every subscriber's entry in `by_conn`, so it is stored once.
    by_channel: HashMap<Arc<str>, Slab<ConnId>>,
    /// Each subscribed connection's channels, with its key in that channel's
    /// slab. A short vector, not a map: most connections hold one to a few
    /// channels (at most the per-connection limit), and a map would cost
    /// ~200 bytes per connection even for one.
    by_conn: ConnMap<Vec<(Arc<str>, usize)>>,
    /// (connection, channel) pairs, kept for [`super::Stats`].
    pairs: usize,
}

impl SubscriptionIndex {
    /// Adds `conn` to `channel`; false if it was already there.
    pub(crate) fn subscribe(&mut self, conn: ConnId, channel: &str) -> bool {
        if self.holds(conn, channel) {
            return false;
        }
        let name: Arc<str> = match self.by_channel.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => Arc::from(channel),
        };
        let key = self
            .by_channel
            .entry(name.clone())
            .or_default()
            .insert(conn);
        let mine = self
            .by_conn
            .get_or_insert_with(conn, || Vec::with_capacity(1));
        mine.push((name, key));
        self.pairs += 1;
        true
    }

    /// Removes `conn` from `channel`; false if it was not there.
    pub(crate) fn unsubscribe(&mut self, conn: ConnId, channel: &str) -> bool {
        let Some(mine) = self.by_conn.get_mut(&conn) else {
            return false;
        };
        let Some(at) = mine.iter().position(|(name, _)| &**name == channel) else {
            return false;
        };
        let (name, key) = mine.swap_remove(at);
        if mine.is_empty() {
            self.by_conn.remove(&conn);
        }
        self.remove_from_channel(&name, key);
        true
    }

    fn remove_from_channel(&mut self, channel: &str, key: usize) {
        let subscribers = self
            .by_channel
            .get_mut(channel)
            .expect("both directions of the index agree");
        subscribers.remove(key);
        if subscribers.is_empty() {
            self.by_channel.remove(channel);
        }
        self.pairs -= 1;
    }

    /// Removes every subscription of `conn`.
    pub(crate) fn remove_conn(&mut self, conn: ConnId) {
        if let Some(mine) = self.by_conn.remove(&conn) {
            for (channel, key) in mine {
                self.remove_from_channel(&channel, key);
            }
        }
    }

    /// Whether `conn` holds `channel`.
    pub(crate) fn holds(&self, conn: ConnId, channel: &str) -> bool {
        self.by_conn
            .get(&conn)
            .is_some_and(|mine| mine.iter().any(|(name, _)| &**name == channel))
    }

    /// How many channels `conn` holds.
    pub(crate) fn count_of(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, Vec::len)
    }

    /// The channels of `conn`, sorted (acks list them so snapshots are stable).
    pub(crate) fn channels_of(&self, conn: ConnId) -> Vec<&str> {
        let mut channels: Vec<&str> = self
            .by_conn
            .get(&conn)
            .map(|mine| mine.iter().map(|(name, _)| &**name).collect())
            .unwrap_or_default();
        channels.sort_unstable();
        channels
    }

    /// The subscribers of `channel`.
    pub(crate) fn subscribers(&self, channel: &str) -> Option<&Slab<ConnId>> {
        self.by_channel.get(channel)
    }

    /// Channels with at least one subscriber.
    pub(crate) fn channel_count(&self) -> usize {
        self.by_channel.len()
    }

    /// (connection, channel) pairs.
    pub(crate) fn pair_count(&self) -> usize {
        self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_and_unsubscribe_keep_both_directions_in_step() {
        let mut index = SubscriptionIndex::default();
        assert!(index.subscribe(ConnId(1), "lines"));
        assert!(!index.subscribe(ConnId(1), "lines"));
        assert!(index.subscribe(ConnId(2), "lines"));
        assert!(index.subscribe(ConnId(1), "analytics"));
        assert_eq!(index.channels_of(ConnId(1)), ["analytics", "lines"]);
        let mut lines: Vec<ConnId> = index
            .subscribers("lines")
            .expect("has subscribers")
            .iter()
            .map(|(_, c)| *c)
            .collect();
        lines.sort();
        assert_eq!(lines, [ConnId(1), ConnId(2)]);
        assert_eq!((index.pair_count(), index.channel_count()), (3, 2));
        assert!(index.unsubscribe(ConnId(2), "lines"));
        assert!(!index.unsubscribe(ConnId(2), "lines"));
        index.remove_conn(ConnId(1));
        assert_eq!((index.pair_count(), index.channel_count()), (0, 0));
        assert!(index.subscribers("lines").is_none());
        assert!(!index.holds(ConnId(1), "analytics"));
    }
}
