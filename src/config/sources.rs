//! Builds the configured sources (`WS_SOURCES`). Each source reads its own
//! settings here, so `check-config` validates them without starting them.

use crate::config::{ConfigError, ServerConfig, Settings, SourceKind};
use crate::source::Source;
use crate::source::http::HttpSource;
use crate::source::kafka::{KafkaConfig, KafkaSource};

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
            SourceKind::Redis => {
                return Err(ConfigError::invalid(
                    "WS_SOURCES",
                    kind.as_str(),
                    "a source this build includes (http, kafka); the redis source is not part of it yet",
                ));
            }
        }
    }
    Ok(sources)
}
