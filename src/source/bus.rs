//! The bus behind `POST /api/publish` (`WS_PUBLISH_VIA`): this replica's
//! core (`local`), or Kafka / Redis, which every replica consumes, so one
//! publish reaches the subscribers of all of them. A publish request hands
//! all its records over at once, in order (so one channel's messages keep
//! their order), and gets one [`Outcome`] per record by a deadline.

use std::sync::Arc;

use tokio::time::Instant;

use crate::core::Publish;
use crate::source::PublishSink;
use crate::source::kafka::producer::KafkaPublisher;
pub use crate::source::outcome::{BusRecord, Outcome};
use crate::source::redis::publisher::RedisPublisher;

/// Where publishes go.
#[derive(Clone)]
pub enum Bus {
    /// Straight into this replica's core.
    Local(PublishSink),
    /// Produced to the publish topic.
    Kafka(Arc<KafkaPublisher>),
    /// `PUBLISH`ed to the prefixed Redis channel.
    Redis(Arc<RedisPublisher>),
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bus::Local(_) => "Bus::Local",
            Bus::Kafka(_) => "Bus::Kafka",
            Bus::Redis(_) => "Bus::Redis",
        })
    }
}

impl Bus {
    /// `local`, `kafka` or `redis`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Bus::Local(_) => "local",
            Bus::Kafka(_) => "kafka",
            Bus::Redis(_) => "redis",
        }
    }

    /// Hands `records` to the bus in order and waits for each, at most
    /// until `deadline`; one outcome per record, in the same order.
    pub async fn publish(&self, records: Vec<BusRecord>, deadline: Instant) -> Vec<Outcome> {
        match self {
            Bus::Local(sink) => publish_locally(sink, records, deadline).await,
            Bus::Kafka(kafka) => kafka.publish(records, deadline).await,
            Bus::Redis(redis) => redis.publish(records, deadline).await,
        }
    }
}

/// One at a time into the core, each answered once the core has taken it.
async fn publish_locally(
    sink: &PublishSink,
    records: Vec<BusRecord>,
    deadline: Instant,
) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(records.len());
    let mut records = records.into_iter();
    for record in records.by_ref() {
        let publish = Publish {
            channel: record.channel,
            pos: None,
            payload: record.payload,
            key: None,
        };
        match tokio::time::timeout_at(deadline, sink.publish_and_wait(publish)).await {
            Ok(Ok(())) => outcomes.push(Outcome::Stored(None)),
            Ok(Err(_)) => {
                outcomes.push(Outcome::Failed(
                    "the server is no longer taking messages".into(),
                ));
                break;
            }
            Err(_) => {
                outcomes.push(Outcome::TimedOut);
                break;
            }
        }
    }
    // Later records were never handed over: they share the fate of the
    // one that stopped the loop.
    let last = outcomes.last().cloned();
    for _ in records {
        outcomes.push(last.clone().unwrap_or(Outcome::TimedOut));
    }
    outcomes
}
