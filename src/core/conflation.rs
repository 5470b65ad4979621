//! Conflation: what a client that cannot keep up gets instead of a
//! disconnect. Under `WS_SLOW_CLIENT_POLICY=conflate`, once a connection's
//! outbound queue is over its bound, a new message replaces the queued
//! message of the same (channel, key) in place, so the client receives, in
//! order, the latest value of every key it is behind on. The key is the
//! one snapshots use (`store::message_key`: the configured JSON field, else
//! the Kafka record key, else one key per channel, i.e. its last message).
//!
//! The policy is per channel: `[[delivery.rules]]` in the TOML file may set
//! `slow_client_policy` for a pattern (prices conflate, trades disconnect),
//! resolved once when a channel first publishes. A queue may therefore hold
//! messages of conflating and of other channels; only the former are ever
//! replaced, and a full queue is compacted before any policy applies.
//!
//! A message carries its (channel, key) as a 64-bit [`Tag`] worked out once
//! per publish, so a subscriber's queue entry grows by one `u64` (no
//! `Option`: two reserved values say "never replaced") and a client that
//! keeps up costs nothing more; the queue is only searched when it is over
//! its bound. Tags are 64-bit SipHash values of (channel, key): two distinct keys
//! of one channel share a tag with odds of about n²/2⁶⁵ for n keys, which
//! would merge them in a slow client's queue; it is accepted, and keys are
//! chosen by the publisher, not by clients.
//!
//! Messages without a tag (JSON-array batches, replayed messages) are never
//! replaced and nothing newer is moved ahead of them, so per key the values
//! a client gets are always in stream order.

use std::hash::{Hash, Hasher};

use super::config::{CoreConfig, SlowClientPolicy};

/// The slow-client policy of `channel`: the first delivery rule that
/// matches, if it sets one, else `WS_SLOW_CLIENT_POLICY`.
pub(crate) fn policy_for(config: &CoreConfig, channel: &str) -> SlowClientPolicy {
    config
        .delivery_rules
        .iter()
        .find(|rule| super::permissions::pattern_matches(&rule.pattern, channel))
        .and_then(|rule| rule.slow_client_policy)
        .unwrap_or(config.slow_client_policy)
}

/// A queued frame's kind and part in conflation, in one `u64`, so a queue
/// entry is a `Bytes` and a `u64`: 40 bytes, as before conflation existed
/// (an `Option<u64>` beside the kind made it 56, and the larger buffers
/// cost every client that keeps up a measurable share of allocator work).
/// The lowest values are reserved: control frames, the close frame, and
/// messages that are never replaced; every other value is a conflating
/// channel's (channel, key) hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Tag(u64);

impl Tag {
    /// A control frame (ack, error, pong, ping).
    pub(crate) const CONTROL: Tag = Tag(0);
    /// The close frame.
    pub(crate) const CLOSE: Tag = Tag(1);
    /// A message that may hold any key (a JSON-array batch, a replayed
    /// message): never replaced, and no newer value is moved ahead of it.
    pub(crate) const BARRIER: Tag = Tag(2);
    /// One message of a channel that does not conflate: never replaced, but
    /// it holds no key of a conflating channel, so values may pass it.
    pub(crate) const FIXED: Tag = Tag(3);

    /// The tag of a conflating channel's message whose (channel, key) hash
    /// is `hash` (see [`tag`]); the reserved values fold onto the first
    /// free one.
    pub(crate) fn key(hash: u64) -> Tag {
        Tag(hash.max(4))
    }

    /// Whether a newer value of the same tag may replace it.
    pub(crate) fn replaceable(self) -> bool {
        self.0 >= 4
    }
}

/// How one message is queued for one connection: its channel's slow-client
/// policy and its conflation tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// What a full queue does with it.
    pub(crate) policy: SlowClientPolicy,
    /// Whether and by what it may be replaced.
    pub(crate) tag: Tag,
}

impl Delivery {
    /// A live message of a channel under `policy` whose key hash is `hash`
    /// (worked out whenever the channel conflates).
    pub(crate) fn live(policy: SlowClientPolicy, hash: Option<u64>) -> Delivery {
        let tag = match (policy, hash) {
            (SlowClientPolicy::Conflate, Some(hash)) => Tag::key(hash),
            (SlowClientPolicy::Conflate, None) => Tag::BARRIER,
            _ => Tag::FIXED,
        };
        Delivery { policy, tag }
    }

    /// A frame that may hold several keys (a JSON-array batch, a replay).
    pub(crate) fn barrier(policy: SlowClientPolicy) -> Delivery {
        Delivery {
            policy,
            tag: Tag::BARRIER,
        }
    }
}

/// The conflation tag of a message of channel `channel` (its store index)
/// with key `key`.
pub(crate) fn tag(channel: u32, key: &[u8]) -> u64 {
    // `DefaultHasher::new()` has fixed keys: the same (channel, key) always
    // gives the same tag in a process, and the core stays free of randomness.
    let mut hasher = std::hash::DefaultHasher::new();
    channel.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_separate_channels_and_keys() {
        assert_eq!(tag(1, b"AAPL"), tag(1, b"AAPL"));
        assert_ne!(tag(1, b"AAPL"), tag(2, b"AAPL"));
        assert_ne!(tag(1, b"AAPL"), tag(1, b"MSFT"));
        assert_ne!(tag(1, b""), tag(1, b"x"));
    }

    #[test]
    fn only_conflating_channels_get_replaceable_tags() {
        assert!(
            Delivery::live(SlowClientPolicy::Conflate, Some(0))
                .tag
                .replaceable()
        );
        assert!(
            Delivery::live(SlowClientPolicy::Conflate, Some(1))
                .tag
                .replaceable()
        );
        assert_eq!(
            Delivery::live(SlowClientPolicy::Disconnect, Some(9)).tag,
            Tag::FIXED
        );
        assert_eq!(
            Delivery::live(SlowClientPolicy::DropOldest, None).tag,
            Tag::FIXED
        );
        assert!(!Tag::BARRIER.replaceable() && !Tag::FIXED.replaceable());
        assert!(!Tag::CONTROL.replaceable() && !Tag::CLOSE.replaceable());
        assert!(Tag::key(3).replaceable());
    }
}
