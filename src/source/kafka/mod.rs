//! The Kafka source: consumes topics (or `^regex` patterns) with librdkafka,
//! routes each record to a channel and hands it to the core with its
//! `partition:offset` position. With `WS_PUBLISH_VIA=kafka` it also carries
//! the publish producer and reads the publish topic in broadcast mode.
//!
//! * [`config`]: the `WS_KAFKA_*` settings.
//! * [`routing`]: the pure topic/key/payload → channel function.
//! * [`producer`]: the idempotent producer behind `POST /api/publish`.
//! * `consumer`: the loop, delivery, offsets and the health monitor.
//! * `context`: librdkafka callbacks (errors, lag, backfill).
//! * `backfill`: what `backfill:N` still lacks before `/ready`.

mod backfill;
pub mod config;
mod consumer;
mod context;
pub mod producer;
pub mod routing;

use std::sync::Arc;
use std::time::Duration;

pub use config::{KafkaConfig, KafkaMode, StartPosition};
pub use consumer::KafkaTimings;
pub use routing::{Route, Routed, Router, Template};

use super::bus::Bus;
use super::{Source, SourceContext, SourceFuture};
use crate::config::{ConfigError, PublishSettings, PublishVia};
use producer::KafkaPublisher;

/// How long the source waits for the publish topic before it subscribes:
/// subscribing once it exists lets the consumer see it at once, not at its
/// next metadata refresh; a slower answer must not hold up the other topics.
const ENSURE_TOPIC_WAIT: Duration = Duration::from_secs(10);

/// Kafka as a [`Source`].
#[derive(Debug, Clone)]
pub struct KafkaSource {
    /// What to consume and how.
    config: KafkaConfig,
    /// Health-check and warning intervals, instance id.
    timings: KafkaTimings,
    /// `kafka`, or `kafka-publish` for the group-mode companion that reads
    /// the publish topic: its own entry in `/ready`.
    name: &'static str,
    /// The publish producer, when this source reads the publish topic.
    publisher: Option<Arc<KafkaPublisher>>,
}

impl KafkaSource {
    /// A source for `config` with production timings.
    pub fn new(config: KafkaConfig) -> KafkaSource {
        KafkaSource {
            config,
            timings: KafkaTimings::default(),
            name: "kafka",
            publisher: None,
        }
    }

    /// Replaces the timings (tests shorten the health interval).
    pub fn with_timings(mut self, timings: KafkaTimings) -> KafkaSource {
        self.timings = timings;
        self
    }
}

/// The Kafka sources for `config` under `publish`: one consumer, plus in
/// `group` mode with `WS_PUBLISH_VIA=kafka` a broadcast-mode companion for
/// the publish topic (which every replica must read whole). `server_id` is
/// the static group member id when `WS_SERVER_ID` did not set one.
pub fn kafka_sources(
    mut config: KafkaConfig,
    publish: &PublishSettings,
    server_id: &str,
    timings: KafkaTimings,
) -> Result<Vec<KafkaSource>, ConfigError> {
    if config.static_member.is_none() {
        config.static_member = Some(server_id.to_owned());
    }
    if publish.via != PublishVia::Kafka {
        return Ok(vec![KafkaSource::new(config).with_timings(timings)]);
    }
    let config = config.with_publish_topic(&publish.topic)?;
    let publisher = KafkaPublisher::new(&config, &publish.topic, publish.timeout).map_err(|e| {
        ConfigError::invalid(
            "WS_KAFKA_PROPERTY_*",
            &e.to_string(),
            "properties librdkafka accepts for a producer",
        )
    })?;
    let publisher = Some(Arc::new(publisher));
    Ok(match config.publish_companion() {
        None => vec![KafkaSource {
            publisher,
            ..KafkaSource::new(config).with_timings(timings)
        }],
        Some(companion) => vec![
            KafkaSource::new(config).with_timings(timings.clone()),
            KafkaSource {
                name: "kafka-publish",
                publisher,
                ..KafkaSource::new(companion).with_timings(timings)
            },
        ],
    })
}

impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        let KafkaSource {
            config,
            timings,
            publisher,
            ..
        } = *self;
        Box::pin(async move {
            let ensure = publisher.as_ref().map(|p| {
                tokio::spawn(
                    p.clone()
                        .ensure_topic(ctx.shutdown.clone(), Duration::from_secs(30)),
                )
            });
            if let Some(mut ensure) = ensure {
                ctx.health
                    .not_ready("waiting for the publish topic (WS_PUBLISH_TOPIC)");
                if tokio::time::timeout(ENSURE_TOPIC_WAIT, &mut ensure)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "kafka publish: the publish topic is not confirmed yet; consuming meanwhile"
                    );
                }
                consumer::run(config, timings, ctx).await;
                ensure.abort();
            } else {
                consumer::run(config, timings, ctx).await;
            }
            if let Some(publisher) = publisher {
                let _ = tokio::task::spawn_blocking(move || publisher.flush()).await;
            }
        })
    }

    fn bus(&self) -> Option<Bus> {
        self.publisher.clone().map(Bus::Kafka)
    }
}
