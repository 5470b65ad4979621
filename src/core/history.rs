//! One channel's stream state: the streams that feed it (and how far back
//! this process can vouch for each), a bounded ring of its last messages
//! holding the very frames fan-out sent, and the latest message per key for
//! snapshots. Deciding whether a client's cursor is still covered lives here.
//!
//! Every message of the channel gets the next ring index, stored or not (a
//! message over the byte bound, or any message of a channel with history
//! off, counts as stored and evicted at once), so a replay that falls behind
//! eviction sees the gap instead of skipping it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::HistoryLimits;
use crate::proto::cursor::{Cursor, StreamId};

/// Bookkeeping bytes counted per stored entry on top of its frame: the
/// ring slot, its place in the store's eviction queue, and allocator slack.
/// Counting it keeps `WS_HISTORY_MAX_BYTES` a bound on memory, not only on
/// frame bytes.
pub(crate) const ENTRY_OVERHEAD: usize = std::mem::size_of::<Stored>() + 16;

/// A stored message.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The complete `message` frame fan-out sent (a refcounted clone).
    pub(crate) frame: Bytes,
    /// Index into the channel's streams.
    pub(crate) stream: u32,
    /// Its offset on that stream.
    pub(crate) offset: u64,
    /// When it was stored, for the age bound.
    pub(crate) at: Instant,
}

/// What the channel knows of one stream that fed it.
#[derive(Debug, Clone)]
pub(crate) struct StreamState {
    /// Which stream.
    pub(crate) id: StreamId,
    /// Offset of its first message this process saw on the channel: before
    /// that this process knows nothing.
    first: u64,
    /// Offset of its last message on the channel.
    pub(crate) last: u64,
    /// Highest offset of it no longer stored; `None` while every message of
    /// it since `first` is still in the ring.
    evicted: Option<u64>,
}

/// An entry of the snapshot map.
#[derive(Debug, Clone)]
pub(crate) struct Latest {
    /// Ring index of the message, which orders the map oldest first.
    pub(crate) index: u64,
    /// The message's JSON object (frame header cut off).
    pub(crate) json: Bytes,
}

/// What a subscribe with `since` / `history` replays, as found by
/// [`ChannelHistory::recovery`].
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The cursor the ack reports: the client applies the replayed messages
    /// on top of it.
    pub(crate) positions: Cursor,
    /// Ring index to replay from.
    pub(crate) start: u64,
    /// Per stream index, the last offset the client has; `None` for streams
    /// it has nothing of. Messages at or below it are skipped.
    pub(crate) after: Vec<Option<u64>>,
    /// Kafka offsets the client has that this replica has not received yet
    /// (it lags the one the client came from): live messages wait behind the
    /// replay until the channel reaches them, so none is sent twice.
    pub(crate) ahead: Vec<(u32, u64)>,
}

/// One channel's stream state.
#[derive(Debug)]
pub(crate) struct ChannelHistory {
    /// Its bounds, resolved from the config when the channel first published.
    pub(crate) limits: HistoryLimits,
    /// The streams that fed it, in order of appearance (a handful).
    pub(crate) streams: Vec<StreamState>,
    /// Index in `streams` of this process's own sequence stream, once it has
    /// assigned one.
    own: Option<u32>,
    /// Stored messages, oldest first.
    pub(crate) ring: VecDeque<Stored>,
    /// Ring index of `ring[0]` (of the next message when the ring is empty).
    pub(crate) first_index: u64,
    /// Ring index the next message gets.
    pub(crate) next_index: u64,
    /// Bytes `ring` accounts for (frames plus [`ENTRY_OVERHEAD`]).
    pub(crate) bytes: usize,
    /// Snapshot map: key → latest message of that key.
    pub(crate) latest: HashMap<Bytes, Latest>,
    /// The snapshot map's keys by their message's ring index, to evict the
    /// oldest key and to send snapshots in stream order.
    pub(crate) latest_order: BTreeMap<u64, Bytes>,
    /// Bytes the snapshot map accounts for.
    pub(crate) latest_bytes: usize,
}

/// What storing or evicting did, for the store's global accounting.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Accounting {
    /// Bytes added (stored).
    pub(crate) added: usize,
    /// Bytes released.
    pub(crate) released: usize,
    /// Entries removed here whose eviction-queue slot is now stale.
    pub(crate) stale: usize,
    /// Entries evicted.
    pub(crate) evicted: u64,
}

impl ChannelHistory {
    pub(crate) fn new(limits: HistoryLimits) -> ChannelHistory {
        ChannelHistory {
            limits,
            streams: Vec::new(),
            own: None,
            ring: VecDeque::new(),
            first_index: 0,
            next_index: 0,
            bytes: 0,
            latest: HashMap::new(),
            latest_order: BTreeMap::new(),
            latest_bytes: 0,
        }
    }

    /// The stream index and offset of the next message: Kafka positions as
    /// given, or this process's next sequence number.
    pub(crate) fn advance(&mut self, kafka: Option<(&str, i32, i64)>, epoch: &str) -> (u32, u64) {
        match kafka {
            Some((topic, partition, offset)) => {
                let offset = u64::try_from(offset).unwrap_or(0);
                let found = self.streams.iter().position(|s| {
                    matches!(&s.id, StreamId::Kafka { topic: t, partition: p } if t == topic && *p == partition)
                });
                let index = match found {
                    Some(i) => i,
                    None => {
                        self.streams.push(StreamState {
                            id: StreamId::Kafka {
                                topic: topic.to_owned(),
                                partition,
                            },
                            first: offset,
                            last: offset,
                            evicted: None,
                        });
                        self.streams.len() - 1
                    }
                };
                self.streams[index].last = offset;
                (index as u32, offset)
            }
            None => {
                let index = match self.own {
                    Some(i) => i as usize,
                    None => {
                        self.streams.push(StreamState {
                            id: StreamId::Gateway {
                                epoch: epoch.to_owned(),
                            },
                            first: 1,
                            last: 0,
                            evicted: None,
                        });
                        self.own = Some((self.streams.len() - 1) as u32);
                        self.streams.len() - 1
                    }
                };
                let stream = &mut self.streams[index];
                stream.last += 1;
                (index as u32, stream.last)
            }
        }
    }

    /// Appends a message (the caller accounts the bytes globally), then
    /// applies the channel's own bounds.
    pub(crate) fn push(&mut self, stored: Stored, now: Instant) -> (u64, Accounting) {
        let index = self.next_index;
        self.next_index += 1;
        let mut acc = Accounting::default();
        let size = stored.frame.len() + ENTRY_OVERHEAD;
        if !self.limits.enabled() || size > self.limits.bytes {
            // Never stored: it is evicted the moment it exists.
            let stream = stored.stream as usize;
            self.streams[stream].evicted = Some(stored.offset);
            self.first_index = self.next_index;
            self.clear_ring(&mut acc);
            acc.evicted += 1;
            return (index, acc);
        }
        self.bytes += size;
        acc.added = size;
        self.ring.push_back(stored);
        while self.ring.len() > self.limits.messages || self.bytes > self.limits.bytes {
            self.evict_front(&mut acc);
            acc.stale += 1;
        }
        self.expire(now, &mut acc);
        (index, acc)
    }

    fn clear_ring(&mut self, acc: &mut Accounting) {
        while !self.ring.is_empty() {
            self.evict_front(acc);
            acc.stale += 1;
        }
    }

    /// Drops messages older than the age bound (their queue slots go stale).
    pub(crate) fn expire(&mut self, now: Instant, acc: &mut Accounting) {
        if self.limits.max_age.is_zero() {
            return;
        }
        while self
            .ring
            .front()
            .is_some_and(|m| now.saturating_duration_since(m.at) >= self.limits.max_age)
        {
            self.evict_front(acc);
            acc.stale += 1;
        }
    }

    /// Removes the oldest stored message.
    pub(crate) fn evict_front(&mut self, acc: &mut Accounting) {
        let old = self
            .ring
            .pop_front()
            .expect("callers check the ring is not empty");
        self.first_index += 1;
        let size = old.frame.len() + ENTRY_OVERHEAD;
        self.bytes -= size;
        acc.released += size;
        acc.evicted += 1;
        let stream = &mut self.streams[old.stream as usize];
        stream.evicted = Some(stream.evicted.map_or(old.offset, |e| e.max(old.offset)));
    }

    /// Records `json` as the latest message of `key`.
    pub(crate) fn remember(&mut self, key: Bytes, index: u64, json: Bytes, acc: &mut Accounting) {
        if !self.limits.enabled() || self.limits.snapshot_keys == 0 {
            return;
        }
        let size = json.len() + key.len() + ENTRY_OVERHEAD;
        if let Some(old) = self.latest.insert(key.clone(), Latest { index, json }) {
            self.latest_order.remove(&old.index);
            let old_size = old.json.len() + key.len() + ENTRY_OVERHEAD;
            self.latest_bytes -= old_size;
            acc.released += old_size;
            acc.stale += 1;
        }
        self.latest_order.insert(index, key);
        self.latest_bytes += size;
        acc.added += size;
        while self.latest.len() > self.limits.snapshot_keys {
            let (&oldest, _) = self.latest_order.first_key_value().expect("map not empty");
            self.forget_latest(oldest, acc);
            acc.stale += 1;
        }
    }

    /// Removes the snapshot entry set by the message at ring index `index`;
    /// false if it is no longer there.
    pub(crate) fn forget_latest(&mut self, index: u64, acc: &mut Accounting) -> bool {
        let Some(key) = self.latest_order.remove(&index) else {
            return false;
        };
        let old = self.latest.remove(&key).expect("order and map agree");
        let size = old.json.len() + key.len() + ENTRY_OVERHEAD;
        self.latest_bytes -= size;
        acc.released += size;
        acc.evicted += 1;
        true
    }

    /// The stored message at ring index `index`.
    pub(crate) fn get(&self, index: u64) -> Option<&Stored> {
        let at = index.checked_sub(self.first_index)?;
        self.ring.get(usize::try_from(at).ok()?)
    }

    /// The own-stream entry every cursor this process hands out carries
    /// (`~epoch:0` before the channel's first sequence): it proves later
    /// that the cursor came from this process.
    fn own_entry(&self, epoch: &str) -> (StreamId, u64) {
        let last = self.own.map_or(0, |i| self.streams[i as usize].last);
        (
            StreamId::Gateway {
                epoch: epoch.to_owned(),
            },
            last,
        )
    }

    /// The cursor of everything the channel has published so far.
    pub(crate) fn latest_cursor(&self, epoch: &str) -> Cursor {
        let mut cursor = Cursor::default();
        cursor.entries.push(self.own_entry(epoch));
        for stream in &self.streams {
            if matches!(stream.id, StreamId::Kafka { .. }) {
                cursor.entries.push((stream.id.clone(), stream.last));
            }
        }
        cursor
    }

    /// Whether this process can replay exactly what follows `since` and, if
    /// so, what. See the protocol docs for the rules.
    pub(crate) fn recovery(&self, since: &Cursor, epoch: &str) -> Option<Plan> {
        let mine = since
            .entries
            .iter()
            .any(|(s, _)| matches!(s, StreamId::Gateway { epoch: e } if e == epoch));
        let mut after = vec![None; self.streams.len()];
        let mut ahead = Vec::new();
        let mut names_kafka = false;
        for (stream, offset) in &since.entries {
            let offset = *offset;
            let known = self.streams.iter().position(|s| &s.id == stream);
            match stream {
                StreamId::Gateway { epoch: e } if e == epoch => {
                    let Some(i) = known else {
                        // No sequence assigned yet: only 0 can be genuine.
                        if offset != 0 {
                            return None;
                        }
                        continue;
                    };
                    let s = &self.streams[i];
                    if offset > s.last || offset < s.evicted.unwrap_or(0) {
                        return None;
                    }
                    after[i] = Some(offset);
                }
                // Another process's sequences cannot be replayed here; an
                // entry at 0 only says the client saw none of them.
                StreamId::Gateway { .. } => {
                    if offset != 0 {
                        return None;
                    }
                }
                StreamId::Kafka { .. } => {
                    names_kafka = true;
                    let i = known?;
                    let s = &self.streams[i];
                    if offset.saturating_add(1) < s.first || s.evicted.is_some_and(|e| offset < e) {
                        return None;
                    }
                    if offset > s.last {
                        if !self.limits.enabled() {
                            return None;
                        }
                        ahead.push((i as u32, offset));
                    }
                    after[i] = Some(offset);
                }
            }
        }
        if !mine && !names_kafka {
            // Nothing shows where the client was: no way to vouch.
            return None;
        }
        for (i, s) in self.streams.iter().enumerate() {
            if after[i].is_some() {
                continue;
            }
            let own = Some(i as u32) == self.own;
            // The client has nothing of this stream: every message of it must
            // still be here, and for Kafka the stream must have started
            // feeding the channel after a cursor this process handed out.
            if s.evicted.is_some() || (!own && !mine) {
                return None;
            }
        }
        let mut positions = Cursor::default();
        let own_offset = self.own.and_then(|i| after[i as usize]).unwrap_or(0);
        positions.entries.push((
            StreamId::Gateway {
                epoch: epoch.to_owned(),
            },
            own_offset,
        ));
        for (stream, offset) in &since.entries {
            if matches!(stream, StreamId::Kafka { .. }) {
                positions.entries.push((stream.clone(), *offset));
            }
        }
        Some(Plan {
            positions,
            start: self.first_index,
            after,
            ahead,
        })
    }

    /// A plan that replays the last `n` stored messages, with the cursor
    /// just before them.
    pub(crate) fn last_n(&self, n: usize, epoch: &str) -> Plan {
        self.replay_from(self.next_index.saturating_sub(n as u64), epoch)
    }

    /// The ring index of the first message not yet `delay` old at `now`:
    /// what a subscriber delayed by `delay` must not see yet.
    pub(crate) fn due_until(&self, now: Instant, delay: Duration) -> u64 {
        self.first_index + self.ring.partition_point(|m| m.at + delay <= now) as u64
    }

    /// A plan that replays the stored messages from ring index `start` on
    /// (the oldest stored one if `start` is older), with the cursor just
    /// before them.
    pub(crate) fn replay_from(&self, start: u64, epoch: &str) -> Plan {
        let start = start.clamp(self.first_index, self.next_index);
        let mut after: Vec<Option<u64>> = self
            .streams
            .iter()
            .map(|s| s.evicted.or(s.first.checked_sub(1)))
            .collect();
        let mut seen = vec![false; self.streams.len()];
        let before = (start - self.first_index) as usize;
        for m in self.ring.iter().take(before).rev() {
            let i = m.stream as usize;
            if !seen[i] {
                seen[i] = true;
                after[i] = Some(m.offset);
            }
        }
        let mut positions = Cursor::default();
        let own_after = self.own.and_then(|i| after[i as usize]).unwrap_or(0);
        positions.entries.push((
            StreamId::Gateway {
                epoch: epoch.to_owned(),
            },
            own_after,
        ));
        for (i, s) in self.streams.iter().enumerate() {
            if let (StreamId::Kafka { .. }, Some(offset)) = (&s.id, after[i]) {
                positions.entries.push((s.id.clone(), offset));
            }
        }
        Plan {
            positions,
            start,
            after,
            ahead: Vec::new(),
        }
    }

    /// Whether the channel has reached every offset in `ahead`.
    pub(crate) fn caught_up(&self, ahead: &[(u32, u64)]) -> bool {
        ahead
            .iter()
            .all(|&(i, offset)| self.streams[i as usize].last >= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_message_costs_80_bytes_beside_its_frame() {
        // The documented figure (README, Memory): a 64-byte ring slot plus a
        // 16-byte slot in the store's eviction queue.
        assert_eq!(std::mem::size_of::<Stored>(), 64);
        assert_eq!(ENTRY_OVERHEAD, 80);
    }
}
