//! Builds the configured sources (`WS_SOURCES`). Each source reads its own
//! settings here, so `check-config` validates them without starting them.
//! It lives with the sources, not in `config`, because it names every
//! source: configuration sits below the sources in the import order.

use crate::config::{ConfigError, PublishVia, ServerConfig, Settings, SourceKind};
use crate::source::Source;
use crate::source::http::HttpSource;
use crate::source::kafka::{KafkaConfig, KafkaTimings, kafka_sources};
use crate::source::redis::{RedisConfig, RedisSource};

/// The sources `config.sources` names, ready to hand to `run`; the one
/// `WS_PUBLISH_VIA` names also carries the publish bus.
pub fn build_sources(
    config: &ServerConfig,
    settings: &Settings,
) -> Result<Vec<Box<dyn Source>>, ConfigError> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    for kind in &config.sources {
        match kind {
            SourceKind::Http => sources.push(Box::new(HttpSource)),
            SourceKind::Kafka => {
                for source in kafka_sources(
                    KafkaConfig::from_settings(settings)?,
                    &config.publish,
                    &config.core.server_id,
                    KafkaTimings::default(),
                )? {
                    sources.push(Box::new(source));
                }
            }
            SourceKind::Redis => {
                let mut source = RedisSource::new(RedisConfig::from_settings(settings)?);
                if config.publish.via == PublishVia::Redis {
                    source = source.with_publisher().map_err(|e| {
                        ConfigError::invalid("WS_REDIS_URL", &e.to_string(), "a usable Redis URL")
                    })?;
                }
                sources.push(Box::new(source));
            }
        }
    }
    Ok(sources)
}
