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
    /// channel's subscribers). A short list, not a map: most connections
    /// hold one to a few channels (at most the per-connection limit), and a
    /// map would cost ~200 bytes per connection even for one.
    by_conn: ConnMap<Held>,
    /// (connection, channel) pairs, kept for [`super::Stats`].
    pairs: usize,
}

/// A (channel id, subscriber key) pair, in 8 bytes: neither slab holds
/// 2^32 entries.
type Pair = (u32, u32);

/// One connection's channels. The common case, one channel, is stored
/// inline: its map slot is 32 bytes either way, and a one-channel
/// connection then allocates nothing (a `Vec` cost it a 32-byte block).
#[derive(Debug)]
enum Held {
    /// Exactly one channel.
    One(Pair),
    /// Any number (empty only on the way out of the map).
    Many(Vec<Pair>),
}

impl Held {
    /// The pairs, in no particular order.
    fn as_slice(&self) -> &[Pair] {
        match self {
            Held::One(pair) => std::slice::from_ref(pair),
            Held::Many(pairs) => pairs,
        }
    }

    /// Adds a pair.
    fn push(&mut self, pair: Pair) {
        match self {
            Held::One(first) => *self = Held::Many(vec![*first, pair]),
            Held::Many(pairs) => pairs.push(pair),
        }
    }

    /// Removes the pair at `at` (an index into [`Held::as_slice`]).
    fn swap_remove(&mut self, at: usize) -> Pair {
        match self {
            Held::One(pair) => {
                let pair = *pair;
                *self = Held::Many(Vec::new());
                pair
            }
            Held::Many(pairs) => pairs.swap_remove(at),
        }
    }
}

/// A slab key as stored in a [`Pair`].
fn narrow(key: usize) -> u32 {
    u32::try_from(key).expect("fewer than 2^32 channels and subscribers per channel")
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
        let pair = (narrow(id), narrow(key));
        match self.by_conn.get_mut(&conn) {
            Some(held) => held.push(pair),
            None => {
                self.by_conn.insert(conn, Held::One(pair));
            }
        }
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
        let Some(at) = mine
            .as_slice()
            .iter()
            .position(|&(held, _)| held == narrow(id))
        else {
            return false;
        };
        let (_, key) = mine.swap_remove(at);
        if mine.as_slice().is_empty() {
            self.by_conn.remove(&conn);
        }
        self.remove_from_channel(id, key as usize);
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
            for &(id, key) in mine.as_slice() {
                self.remove_from_channel(id as usize, key as usize);
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
            .is_some_and(|mine| mine.as_slice().iter().any(|&(held, _)| held == narrow(id)))
    }

    /// How many channels `conn` holds.
    pub(crate) fn count_of(&self, conn: ConnId) -> usize {
        self.by_conn
            .get(&conn)
            .map_or(0, |mine| mine.as_slice().len())
    }

    /// The channels of `conn`, sorted (acks list them so snapshots are stable).
    pub(crate) fn channels_of(&self, conn: ConnId) -> Vec<&str> {
        let mut channels: Vec<&str> = self
            .by_conn
            .get(&conn)
            .map(|mine| {
                mine.as_slice()
                    .iter()
                    .map(|&(id, _)| self.channels[id as usize].name.as_str())
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
    fn a_one_channel_connection_costs_its_map_slot_and_no_allocation() {
        // The slot is (generation, channels) in an `Option`: 32 bytes, the
        // same as with a `Vec`, which also needed a 32-byte block.
        assert_eq!(std::mem::size_of::<Option<(u32, Held)>>(), 32);
        let mut index = SubscriptionIndex::default();
        let conn = ConnId::new(0, 0);
        index.subscribe(conn, "a");
        assert!(matches!(index.by_conn.get(&conn), Some(Held::One(_))));
        index.subscribe(conn, "b");
        index.subscribe(conn, "c");
        assert!(index.unsubscribe(conn, "a"));
        assert_eq!(index.channels_of(conn), ["b", "c"]);
        assert!(index.unsubscribe(conn, "c"));
        assert!(index.unsubscribe(conn, "b"));
        assert!(index.by_conn.get(&conn).is_none());
        assert_eq!(index.pair_count(), 0);
        assert_eq!(index.channel_count(), 0);
        index.subscribe(conn, "d");
        assert!(index.unsubscribe(conn, "d"));
        assert!(index.by_conn.get(&conn).is_none(), "emptied from One");
    }

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
