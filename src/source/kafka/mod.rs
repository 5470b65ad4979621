//! The Kafka source: consumes topics (or `^regex` patterns) with librdkafka,
//! routes each record to a channel and hands it to the core with its
//! `partition:offset` position.
//!
//! * [`config`]: the `WS_KAFKA_*` settings.
//! * [`routing`]: the pure topic/key/payload → channel function.
//! * `consumer`: the loop, delivery, offsets and the health monitor.
//! * `context`: librdkafka callbacks (errors, lag, backfill).

pub mod config;
mod consumer;
mod context;
pub mod routing;

pub use config::{KafkaConfig, KafkaMode, StartPosition};
pub use consumer::KafkaTimings;
pub use routing::{Route, Routed, Router, Template};

use super::{Source, SourceContext, SourceFuture};

/// Kafka as a [`Source`].
#[derive(Debug, Clone)]
pub struct KafkaSource {
    /// What to consume and how.
    config: KafkaConfig,
    /// Health-check and warning intervals, instance id.
    timings: KafkaTimings,
}

impl KafkaSource {
    /// A source for `config` with production timings.
    pub fn new(config: KafkaConfig) -> KafkaSource {
        KafkaSource {
            config,
            timings: KafkaTimings::default(),
        }
    }

    /// Replaces the timings (tests shorten the health interval).
    pub fn with_timings(mut self, timings: KafkaTimings) -> KafkaSource {
        self.timings = timings;
        self
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        let KafkaSource { config, timings } = *self;
        Box::pin(consumer::run(config, timings, ctx))
    }
}
