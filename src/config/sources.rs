//! Builds the configured sources (`WS_SOURCES`). Each source reads its own
//! settings here, so `check-config` validates them without starting them.

use crate::config::{ConfigError, ServerConfig, Settings, SourceKind};
use crate::source::Source;
use crate::source::http::HttpSource;

/// The sources `config.sources` names, ready to hand to `run`.
pub fn build_sources(
    config: &ServerConfig,
    settings: &Settings,
) -> Result<Vec<Box<dyn Source>>, ConfigError> {
    let _ = settings;
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    for kind in &config.sources {
        match kind {
            SourceKind::Http => sources.push(Box::new(HttpSource)),
            SourceKind::Kafka | SourceKind::Redis => {
                return Err(ConfigError::invalid(
                    "WS_SOURCES",
                    kind.as_str(),
                    "a source this build includes (http); the kafka and redis sources are not part of it yet",
                ));
            }
        }
    }
    Ok(sources)
}
