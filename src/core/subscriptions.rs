//! The subscription index, both ways: channel → its subscribers (a slab, so
//! adding and removing one is O(1) and fan-out walks only that channel's
//! subscribers) and connection → its channels with each one's slab key (so
//! unsubscribing costs a scan of the connection's few channels, and removing
//! a connection costs its own channels).

use std::collections::HashMap;

use slab::Slab;

use super::{ConnId, ConnMap};

/// Who is subscribed to what.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionIndex {
    /// Every channel that has subscribers, by a small id, so a connection's
    /// entries name a channel in 8 bytes instead of a copy of its name.
    channels: Slab<Channel>,
    /// The id of each channel in `channels`, by name.
    ids: HashMap<String, usize>,
    /// Each subscribed connection's channels: (channel id, its key in that
    /// channel's subscribers). A short vector, not a map: most connections
    /// hold one to a few channels (at most the per-connection limit), and a
    /// map would cost ~200 bytes per connection even for one.
    by_conn: ConnMap<Vec<(usize, usize)>>,
    /// (connection, channel) pairs, kept for [`super::Stats`].
    pairs: usize,
}

/// One channel with subscribers.
#[derive(Debug)]
struct Channel {
    /// Its name, for the acks that list a connection's channels.
    name: String,
    /// Its subscribers.
    subscribers: Slab<ConnId>,
}

impl SubscriptionIndex {
    /// Adds `conn` to `channel`; false if it was already there.
    pub(crate) fn subscribe(&mut self, conn: ConnId, channel: &str) -> bool {
        if self.holds(conn, channel) {
            return false;
        }
        let id = match self.ids.get(channel) {
            Some(&id) => id,
            None => {
                let id = self.channels.insert(Channel {
                    name: channel.to_owned(),
                    subscribers: Slab::new(),
                });
                self.ids.insert(channel.to_owned(), id);
                id
            }
        };
        let key = self.channels[id].subscribers.insert(conn);
        self.by_conn
            .get_or_insert_with(conn, || Vec::with_capacity(1))
            .push((id, key));
        self.pairs += 1;
        true
    }

    /// Removes `conn` from `channel`; false if it was not there.
    pub(crate) fn unsubscribe(&mut self, conn: ConnId, channel: &str) -> bool {
        let Some(&id) = self.ids.get(channel) else {
            return false;
        };
        let Some(mine) = self.by_conn.get_mut(&conn) else {
            return false;
        };
        let Some(at) = mine.iter().position(|&(held, _)| held == id) else {
            return false;
        };
        let (_, key) = mine.swap_remove(at);
        if mine.is_empty() {
            self.by_conn.remove(&conn);
        }
        self.remove_from_channel(id, key);
        true
    }

    fn remove_from_channel(&mut self, id: usize, key: usize) {
        let channel = &mut self.channels[id];
        channel.subscribers.remove(key);
        if channel.subscribers.is_empty() {
            let channel = self.channels.remove(id);
            self.ids.remove(&channel.name);
        }
        self.pairs -= 1;
    }

    /// Removes every subscription of `conn`.
    pub(crate) fn remove_conn(&mut self, conn: ConnId) {
        if let Some(mine) = self.by_conn.remove(&conn) {
            for (id, key) in mine {
                self.remove_from_channel(id, key);
            }
        }
    }

    /// Whether `conn` holds `channel`.
    pub(crate) fn holds(&self, conn: ConnId, channel: &str) -> bool {
        let Some(&id) = self.ids.get(channel) else {
            return false;
        };
        self.by_conn
            .get(&conn)
            .is_some_and(|mine| mine.iter().any(|&(held, _)| held == id))
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
            .map(|mine| {
                mine.iter()
                    .map(|&(id, _)| self.channels[id].name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        channels.sort_unstable();
        channels
    }

    /// The subscribers of `channel`.
    pub(crate) fn subscribers(&self, channel: &str) -> Option<&Slab<ConnId>> {
        let &id = self.ids.get(channel)?;
        Some(&self.channels[id].subscribers)
    }

    /// Channels with at least one subscriber.
    pub(crate) fn channel_count(&self) -> usize {
        self.channels.len()
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
        assert!(index.subscribe(ConnId::new(1, 0), "lines"));
        assert!(!index.subscribe(ConnId::new(1, 0), "lines"));
        assert!(index.subscribe(ConnId::new(2, 0), "lines"));
        assert!(index.subscribe(ConnId::new(1, 0), "analytics"));
        assert_eq!(index.channels_of(ConnId::new(1, 0)), ["analytics", "lines"]);
        let mut lines: Vec<ConnId> = index
            .subscribers("lines")
            .expect("has subscribers")
            .iter()
            .map(|(_, c)| *c)
            .collect();
        lines.sort();
        assert_eq!(lines, [ConnId::new(1, 0), ConnId::new(2, 0)]);
        assert_eq!((index.pair_count(), index.channel_count()), (3, 2));
        assert!(index.unsubscribe(ConnId::new(2, 0), "lines"));
        assert!(!index.unsubscribe(ConnId::new(2, 0), "lines"));
        index.remove_conn(ConnId::new(1, 0));
        assert_eq!((index.pair_count(), index.channel_count()), (0, 0));
        assert!(index.subscribers("lines").is_none());
        assert!(!index.holds(ConnId::new(1, 0), "analytics"));
    }
}
