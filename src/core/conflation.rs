//! Conflation: what a client that cannot keep up gets instead of a
//! disconnect. Under `WS_SLOW_CLIENT_POLICY=conflate`, once a connection's
//! outbound queue is over its bound, a new message replaces the queued
//! message of the same (channel, key) in place, so the client receives, in
//! order, the latest value of every key it is behind on. The key is the
//! one snapshots use (`store::message_key`: the configured JSON field, else
//! the Kafka record key, else one key per channel, i.e. its last message).
//!
//! A message carries its (channel, key) as a 64-bit tag worked out once per
//! publish, so a subscriber's queue entry grows by a `u64` and a client that
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
}
