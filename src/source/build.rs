//! Builds the configured sources (`WS_SOURCES`). Each source reads its own
//! settings here, so `check-config` validates them without starting them.
//! It lives with the sources, not in `config`, because it names every
//! source: configuration sits below the sources in the import order.

use crate::config::{ConfigError, ServerConfig, Settings, SourceKind};
use crate::source::Source;
use crate::source::http::HttpSource;
use crate::source::kafka::{KafkaConfig, KafkaSource};
use crate::source::redis::{RedisConfig, RedisSource};

/// The sources `config.sources` names, ready to hand to `run`.
pub fn build_sources(
    config: &ServerConfig,
    settings: &Settings,
) -> Result<Vec<Box<dyn Source>>, ConfigError> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    for kind in &config.sources {
        match kind {
            SourceKind::Http => sources.push(Box::new(HttpSource)),
            SourceKind::Kafka => sources.push(Box::new(KafkaSource::new(
                KafkaConfig::from_settings(settings)?,
            ))),
            SourceKind::Redis => sources.push(Box::new(RedisSource::new(
                RedisConfig::from_settings(settings)?,
            ))),
        }
    }
    Ok(sources)
}
