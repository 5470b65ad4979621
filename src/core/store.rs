//! Stream state across channels: each channel's [`ChannelHistory`], and the
//! global byte cap (`WS_HISTORY_MAX_BYTES`) enforced oldest first through one
//! queue of every stored entry in the order it was stored.
//!
//! Entries a channel removes by its own bounds stay in the queue as stale
//! slots (skipped when reached) and the queue is compacted when they are the
//! majority, so storing stays O(1) amortized and the queue bounded.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::config::{HistoryConfig, HistoryLimits, SlowClientPolicy};
use super::history::{Accounting, ChannelHistory, Stored};
use super::{CoreConfig, Publish, Routed};
use crate::proto::position::Position;
use crate::proto::server::EncodedMessage;

/// One stored entry in global storage order.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The channel (index into [`Store::channels`]).
    channel: u32,
    /// The ring index of the message.
    index: u64,
    /// Whether it is the snapshot-map entry that message set (else the ring
    /// entry).
    snapshot: bool,
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Messages held in history rings.
    pub messages: usize,
    /// Keys held in snapshot maps.
    pub snapshot_keys: usize,
    /// Bytes accounted (frames plus bookkeeping), bounded by
    /// `WS_HISTORY_MAX_BYTES`.
    pub bytes: usize,
    /// Entries evicted so far (by any bound).
    pub evictions: u64,
}

/// What [`Store::publish`] worked out for one message.
#[derive(Debug)]
pub(crate) struct Published {
    /// The channel's index.
    pub(crate) channel: u32,
    /// The message's frame, encoded once.
    pub(crate) encoded: EncodedMessage,
    /// Its (channel, key) hash, when asked for or when the channel conflates.
    pub(crate) hash: Option<u64>,
    /// The channel's slow-client policy.
    pub(crate) policy: SlowClientPolicy,
}

/// All channels' stream state.
#[derive(Debug)]
pub(crate) struct Store {
    /// Limits, the global cap and the epoch.
    config: HistoryConfig,
    /// Channel state by name → index in `channels`. Channels are kept once
    /// they have published, so positions never go back.
    ids: HashMap<String, u32>,
    /// Channel state.
    pub(crate) channels: Vec<ChannelHistory>,
    /// Each channel's slow-client policy (by index, as `channels`), resolved
    /// from the delivery rules once, when it first publishes.
    policies: Vec<SlowClientPolicy>,
    /// Every stored entry, oldest first, for the global cap.
    queue: VecDeque<Slot>,
    /// How many `queue` slots are stale.
    stale: usize,
    /// Bytes stored across channels.
    bytes: usize,
    /// Messages in rings across channels.
    messages: usize,
    /// Snapshot keys across channels.
    keys: usize,
    /// Evictions so far.
    evictions: u64,
}

impl Store {
    pub(crate) fn new(config: HistoryConfig) -> Store {
        Store {
            config,
            ids: HashMap::new(),
            channels: Vec::new(),
            policies: Vec::new(),
            queue: VecDeque::new(),
            stale: 0,
            bytes: 0,
            messages: 0,
            keys: 0,
            evictions: 0,
        }
    }

    /// This process's epoch.
    pub(crate) fn epoch(&self) -> &str {
        &self.config.epoch
    }

    /// The channel's state, if it ever published.
    pub(crate) fn find(&self, channel: &str) -> Option<u32> {
        self.ids.get(channel).copied()
    }

    /// The index of `channel`'s state, created if it has none yet (before
    /// its first publish only for a delayed subscriber, which must read
    /// from the ring from the start); `policy_for` is asked on creation.
    pub(crate) fn ensure(
        &mut self,
        channel: &str,
        policy_for: impl FnOnce(&str) -> SlowClientPolicy,
    ) -> u32 {
        if let Some(&id) = self.ids.get(channel) {
            return id;
        }
        let limits = limits_for(&self.config, channel).clone();
        let id = self.channels.len() as u32;
        self.channels.push(ChannelHistory::new(limits));
        self.policies.push(policy_for(channel));
        self.ids.insert(channel.to_owned(), id);
        id
    }

    /// Whether `channel` keeps history (a delayed subscriber is served
    /// from it), by the limits it has or would get.
    pub(crate) fn keeps_history(&self, channel: &str) -> bool {
        match self.ids.get(channel) {
            Some(&id) => self.channels[id as usize].limits.enabled(),
            None => limits_for(&self.config, channel).enabled(),
        }
    }

    /// The slow-client policy of a channel that has published.
    pub(crate) fn policy(&self, id: u32) -> SlowClientPolicy {
        self.policies[id as usize]
    }

    /// Positions a message, encodes it once (unless a [`Routed`] message
    /// brings its frame and key: `routed`), stores the frame and returns what
    /// fan-out needs: the channel, the encoded message, its policy
    /// (`policy_for` is asked once per channel) and, when `want_tag` (some
    /// subscription is rate limited) or the channel conflates, its (channel,
    /// key) hash: the key is worked out once per message, by the same rule
    /// as snapshots.
    ///
    /// [`Routed`]: super::Routed
    pub(crate) fn publish(
        &mut self,
        now: Instant,
        publish: &Publish,
        routed: Option<&Routed>,
        want_tag: bool,
        policy_for: impl FnOnce(&str) -> SlowClientPolicy,
    ) -> Published {
        let id = self.ensure(&publish.channel, policy_for);
        let policy = self.policies[id as usize];
        let want_tag = want_tag || policy == SlowClientPolicy::Conflate;
        let channel = &mut self.channels[id as usize];
        let kafka = match &publish.pos {
            Some(Position::Offset {
                topic,
                partition,
                offset,
            }) => Some((topic.as_str(), *partition, *offset)),
            Some(Position::Sequence(_)) | None => None,
        };
        let (stream, offset) = channel.advance(kafka, &self.config.epoch);
        if let Some(routed) = routed {
            let encoded = &routed.encoded;
            debug_assert!(
                routed.sequence.is_none_or(|seq| seq == offset),
                "the router's sequence is the store's: both see every message in order"
            );
            // History keeps the shared frame, so every worker's ring points
            // at one copy in memory. Fan-out gets a copy of its own, made
            // once per message: every subscriber's clone then bumps a
            // refcount only this worker's thread touches, instead of one
            // cache line bouncing between the cores for every delivery.
            let published = self.store(
                now,
                id,
                publish,
                encoded.clone(),
                (stream, offset),
                want_tag,
                policy,
                routed.key.as_ref(),
            );
            // A `Bytes` made from a `Vec` (as `copy_from_slice` makes it)
            // checks on every clone whether its buffer is shared yet; its
            // first clone shares it and is a plain refcounted `Bytes`, so
            // the subscribers' clones are made from that one.
            let local = EncodedMessage {
                frame: Bytes::copy_from_slice(&encoded.frame).clone(),
                header_len: encoded.header_len,
                kind: encoded.kind,
            };
            return Published {
                encoded: local,
                ..published
            };
        }
        let sequence;
        let pos = match &publish.pos {
            Some(given @ Position::Offset { .. }) => given,
            Some(Position::Sequence(_)) | None => {
                sequence = Position::Sequence(offset);
                &sequence
            }
        };
        let encoded = crate::proto::server::message(
            &publish.channel,
            pos,
            &self.config.epoch,
            &publish.payload,
        );
        self.store(
            now,
            id,
            publish,
            encoded,
            (stream, offset),
            want_tag,
            policy,
            None,
        )
    }

    /// Stores the positioned, encoded message of channel `id`; the rest of
    /// [`Store::publish`].
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn store(
        &mut self,
        now: Instant,
        id: u32,
        publish: &Publish,
        encoded: EncodedMessage,
        (stream, offset): (u32, u64),
        want_tag: bool,
        policy: SlowClientPolicy,
        routed_key: Option<&Bytes>,
    ) -> Published {
        let channel = &mut self.channels[id as usize];
        let key = (want_tag || (channel.limits.enabled() && channel.limits.snapshot_keys > 0))
            .then(|| match routed_key {
                Some(key) => key.clone(),
                None => message_key(
                    channel.limits.snapshot_field.as_deref(),
                    &publish.payload,
                    publish.key.as_ref(),
                ),
            });
        let hash = want_tag
            .then(|| key.as_ref().map(|key| super::conflation::tag(id, key)))
            .flatten();
        let published = |encoded| Published {
            channel: id,
            encoded,
            hash,
            policy,
        };
        if !channel.limits.enabled() {
            let (_, acc) = channel.push(
                Stored {
                    frame: Bytes::new(),
                    stream,
                    offset,
                    at: now,
                },
                now,
            );
            self.evictions += acc.evicted;
            return published(encoded);
        }
        let before = (channel.ring.len(), channel.latest.len());
        let (index, mut acc) = channel.push(
            Stored {
                frame: encoded.frame.clone(),
                stream,
                offset,
                at: now,
            },
            now,
        );
        let stored = channel.get(index).is_some();
        if stored {
            self.queue.push_back(Slot {
                channel: id,
                index,
                snapshot: false,
            });
        }
        if channel.limits.snapshot_keys > 0
            && let Some(key) = key
        {
            channel.remember(key, index, encoded.json(), &mut acc);
            self.queue.push_back(Slot {
                channel: id,
                index,
                snapshot: true,
            });
        }
        let after = (channel.ring.len(), channel.latest.len());
        self.messages = self.messages + after.0 - before.0;
        self.keys = self.keys + after.1 - before.1;
        self.account(acc);
        self.enforce_cap();
        published(encoded)
    }

    fn account(&mut self, acc: Accounting) {
        self.bytes = self.bytes + acc.added - acc.released;
        self.stale += acc.stale;
        self.evictions += acc.evicted;
    }

    /// Evicts oldest first until the global cap holds, and compacts the
    /// queue when stale slots dominate.
    fn enforce_cap(&mut self) {
        while self.bytes > self.config.max_bytes {
            let Some(slot) = self.queue.pop_front() else {
                break;
            };
            let channel = &mut self.channels[slot.channel as usize];
            let mut acc = Accounting::default();
            let live = if slot.snapshot {
                let had = channel.latest.len();
                let live = channel.forget_latest(slot.index, &mut acc);
                self.keys -= had - channel.latest.len();
                live
            } else if slot.index >= channel.first_index && channel.get(slot.index).is_some() {
                // Slots of one channel are queued in ring order, so a live
                // one is that channel's oldest stored message.
                debug_assert_eq!(slot.index, channel.first_index, "live slot is the front");
                channel.evict_front(&mut acc);
                self.messages -= 1;
                true
            } else {
                false
            };
            if !live {
                // Saturating: a miscount must cost a late compaction, never
                // a panic on a peer's message.
                self.stale = self.stale.saturating_sub(1);
            }
            self.bytes -= acc.released;
            self.evictions += acc.evicted;
        }
        if self.stale > 1024 && self.stale * 2 > self.queue.len() {
            let channels = &self.channels;
            self.queue.retain(|slot| {
                let channel = &channels[slot.channel as usize];
                if slot.snapshot {
                    channel.latest_order.contains_key(&slot.index)
                } else {
                    channel.get(slot.index).is_some()
                }
            });
            self.stale = 0;
        }
    }

    /// Applies the age bound of one channel now (before answering a
    /// subscribe, so an idle channel never replays what has expired).
    pub(crate) fn expire(&mut self, now: Instant, id: u32) {
        let channel = &mut self.channels[id as usize];
        let before = channel.ring.len();
        let mut acc = Accounting::default();
        channel.expire(now, &mut acc);
        self.messages -= before - channel.ring.len();
        self.account(acc);
    }

    /// Counts for `/metrics`.
    pub(crate) fn stats(&self) -> HistoryStats {
        HistoryStats {
            messages: self.messages,
            snapshot_keys: self.keys,
            bytes: self.bytes,
            evictions: self.evictions,
        }
    }
}

/// The limits for `channel`: the first rule whose pattern matches, else the
/// defaults.
fn limits_for<'a>(config: &'a HistoryConfig, channel: &str) -> &'a HistoryLimits {
    config
        .rules
        .iter()
        .find(|rule| super::permissions::pattern_matches(&rule.pattern, channel))
        .map_or(&config.defaults, |rule| &rule.limits)
}

/// The key of `publish` if every core needs it, whatever its subscriptions:
/// its channel keeps snapshots per key, or conflates. The router works it out
/// once for all workers; a JSON payload is parsed for it, so doing it in each
/// worker's store was the larger part of what a worker added per message.
pub(crate) fn key_every_core_needs(config: &CoreConfig, publish: &Publish) -> Option<Bytes> {
    let limits = limits_for(&config.history, &publish.channel);
    let snapshots = limits.enabled() && limits.snapshot_keys > 0;
    let conflates =
        super::conflation::policy_for(config, &publish.channel) == SlowClientPolicy::Conflate;
    (snapshots || conflates).then(|| {
        message_key(
            limits.snapshot_field.as_deref(),
            &publish.payload,
            publish.key.as_ref(),
        )
    })
}

/// The key of a message, for snapshots and for conflation: the configured
/// JSON field (a string's text, or a number's / boolean's JSON), else the
/// Kafka record key, else one key for the whole channel (its last message).
fn message_key(field: Option<&str>, payload: &[u8], record_key: Option<&Bytes>) -> Bytes {
    if let Some(field) = field
        && let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(payload)
    {
        match object.get(field) {
            Some(serde_json::Value::String(text)) => return Bytes::from(text.clone()),
            Some(value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                return Bytes::from(value.to_string());
            }
            _ => {}
        }
    }
    record_key.cloned().unwrap_or_default()
}
