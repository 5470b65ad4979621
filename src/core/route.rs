//! Routing a source message once for every worker: with `WS_WORKERS` > 1
//! each worker's core holds its own connections, and a message is handed to
//! all of them. Positioning and encoding it once per worker would be N times
//! the per-message work, so the [`Router`] does both once, before the hand-off,
//! and each core stores and fans out the [`Routed`] frame as it is.
//!
//! Positions agree by construction: every worker's store sees the same
//! messages in the same order, so its own sequence for a channel advances
//! exactly like the router's (the store checks it in debug builds).

use std::collections::HashMap;

use bytes::Bytes;

use super::{CoreConfig, Publish};
use crate::proto::position::Position;
use crate::proto::server::{self, EncodedMessage};

/// A message positioned and encoded once, ready for every worker's core.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The message as the source gave it (the cores need its channel, key
    /// and payload for subscriptions, snapshots and conflation).
    pub publish: Publish,
    /// Its `message` frame, built once.
    pub encoded: EncodedMessage,
    /// Its key (the snapshot field's value, else the Kafka key), worked out
    /// once when every core needs it: its channel keeps snapshots per key or
    /// conflates. `None` leaves it to a core that needs it anyway (one with
    /// a rate-limited subscription to the channel).
    pub key: Option<Bytes>,
    /// The sequence the router gave it on this process's stream, for a
    /// message without a Kafka position; checked against the store's own.
    pub sequence: Option<u64>,
}

/// Positions and encodes source messages for several workers.
#[derive(Debug)]
pub struct Router {
    /// The cores' configuration: the epoch of `~epoch:seq` positions, and
    /// the rules that say whose messages every core needs the key of.
    config: CoreConfig,
    /// Last sequence given per channel to messages without a Kafka
    /// position: the same counter each core's store keeps.
    sequences: HashMap<String, u64>,
}

impl Router {
    /// A router for a process whose cores all run with `config`.
    pub fn new(config: &CoreConfig) -> Router {
        Router {
            config: config.clone(),
            sequences: HashMap::new(),
        }
    }

    /// Positions `publish` (Kafka's offset, or the channel's next sequence),
    /// encodes its frame and works out its key if every core needs it.
    pub fn route(&mut self, publish: Publish) -> Routed {
        let (encoded, sequence) = match &publish.pos {
            Some(kafka @ Position::Offset { .. }) => (
                server::message(
                    &publish.channel,
                    kafka,
                    &self.config.history.epoch,
                    &publish.payload,
                ),
                None,
            ),
            Some(Position::Sequence(_)) | None => {
                let seq = match self.sequences.get_mut(&publish.channel) {
                    Some(last) => {
                        *last += 1;
                        *last
                    }
                    None => {
                        self.sequences.insert(publish.channel.clone(), 1);
                        1
                    }
                };
                let pos = Position::Sequence(seq);
                let encoded = server::message(
                    &publish.channel,
                    &pos,
                    &self.config.history.epoch,
                    &publish.payload,
                );
                (encoded, Some(seq))
            }
        };
        let key = super::store::key_every_core_needs(&self.config, &publish);
        Routed {
            publish,
            encoded,
            key,
            sequence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{DeliveryRule, HistoryLimits, HistoryRule, SlowClientPolicy};

    fn publish(channel: &str) -> Publish {
        Publish {
            channel: channel.to_owned(),
            pos: None,
            payload: Bytes::from_static(br#"{"symbol":"AAPL","px":101.5}"#),
            key: None,
        }
    }

    /// Parsing the payload for its key is per message, not per worker: the
    /// router does it when every core's store will need it.
    #[test]
    fn the_router_works_out_the_key_once_when_every_core_needs_it() {
        let mut config = CoreConfig::default();
        config.history.defaults.snapshot_field = Some("symbol".to_owned());
        // `raw.*` keeps no history, so no snapshot needs its key...
        config.history.rules.push(HistoryRule {
            pattern: "raw.*".to_owned(),
            limits: HistoryLimits {
                messages: 0,
                snapshot_field: Some("symbol".to_owned()),
                ..HistoryLimits::default()
            },
        });
        // ...except where conflation does.
        config.delivery_rules.push(DeliveryRule {
            pattern: "raw.book".to_owned(),
            slow_client_policy: Some(SlowClientPolicy::Conflate),
            delay: None,
        });
        let mut router = Router::new(&config);
        let key = |routed: Routed| routed.key.map(|key| key.to_vec());
        assert_eq!(key(router.route(publish("quotes"))), Some(b"AAPL".to_vec()));
        assert_eq!(key(router.route(publish("raw.trades"))), None);
        assert_eq!(
            key(router.route(publish("raw.book"))),
            Some(b"AAPL".to_vec())
        );
    }
}
