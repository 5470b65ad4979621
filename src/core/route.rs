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

use super::Publish;
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
    /// The sequence the router gave it on this process's stream, for a
    /// message without a Kafka position; checked against the store's own.
    pub sequence: Option<u64>,
}

/// Positions and encodes source messages for several workers.
#[derive(Debug)]
pub struct Router {
    /// This process's epoch (`~epoch:seq` positions), the same every core's
    /// store uses.
    epoch: String,
    /// Last sequence given per channel to messages without a Kafka
    /// position: the same counter each core's store keeps.
    sequences: HashMap<String, u64>,
}

impl Router {
    /// A router for a process whose cores use `epoch`
    /// ([`HistoryConfig::epoch`](super::HistoryConfig)).
    pub fn new(epoch: &str) -> Router {
        Router {
            epoch: epoch.to_owned(),
            sequences: HashMap::new(),
        }
    }

    /// Positions `publish` (Kafka's offset, or the channel's next sequence)
    /// and encodes its frame.
    pub fn route(&mut self, publish: Publish) -> Routed {
        let (encoded, sequence) = match &publish.pos {
            Some(kafka @ Position::Offset { .. }) => (
                server::message(&publish.channel, kafka, &self.epoch, &publish.payload),
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
                let encoded =
                    server::message(&publish.channel, &pos, &self.epoch, &publish.payload);
                (encoded, Some(seq))
            }
        };
        Routed {
            publish,
            encoded,
            sequence,
        }
    }
}
