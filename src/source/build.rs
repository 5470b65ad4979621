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

#[cfg(test)]
mod tests {
    use super::*;

    fn build(pairs: &[(&str, &str)]) -> Result<Vec<Box<dyn Source>>, ConfigError> {
        let mut all = vec![
            ("WS_AUTH_SECRET", "0123456789abcdef0123456789abcdef"),
            ("WS_KAFKA_BROKERS", "127.0.0.1:1"),
        ];
        all.extend_from_slice(pairs);
        let settings = Settings::from_pairs(all);
        build_sources(&ServerConfig::from_settings(&settings)?, &settings)
    }

    #[test]
    fn publishing_via_kafka_gives_the_kafka_source_the_bus() {
        let sources = build(&[("WS_API_KEY", "k")]).unwrap();
        let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["kafka", "http"]);
        assert_eq!(sources[0].bus().map(|b| b.name()), Some("kafka"));

        let group = build(&[("WS_API_KEY", "k"), ("WS_KAFKA_MODE", "group")]).unwrap();
        let names: Vec<&str> = group.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["kafka", "kafka-publish", "http"]);
        assert!(group[0].bus().is_none());
        assert_eq!(group[1].bus().map(|b| b.name()), Some("kafka"));

        let local = build(&[("WS_API_KEY", "k"), ("WS_PUBLISH_VIA", "local")]).unwrap();
        assert!(local.iter().all(|s| s.bus().is_none()));
    }

    #[test]
    fn a_route_for_the_publish_topic_is_a_start_up_error_naming_the_variable() {
        let err = build(&[
            ("WS_API_KEY", "k"),
            ("WS_KAFKA_ROUTES", "ws-realtime-publish=elsewhere"),
        ])
        .err()
        .expect("refused");
        assert!(err.to_string().contains("WS_KAFKA_ROUTES"), "{err}");
        assert!(err.to_string().contains("WS_PUBLISH_TOPIC"), "{err}");
    }
}
