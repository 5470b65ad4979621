//! Where `POST /api/publish` sends a message (`WS_PUBLISH_VIA`): straight
//! into this replica's core (`local`), or through the bus every replica
//! consumes (`kafka`, `redis`) so a publish to any replica reaches the
//! subscribers of all of them. Also the publish topic, the bounded wait for
//! the broker's acknowledgement and the batch limit.

use std::time::Duration;

use crate::config::{ConfigError, Settings, SourceKind};

/// The Kafka topic publishes go through when `WS_PUBLISH_TOPIC` is unset.
pub const DEFAULT_PUBLISH_TOPIC: &str = "ws-realtime-publish";

/// The wait for the broker's acknowledgement when `WS_PUBLISH_TIMEOUT` is unset.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages one `POST /api/publish/batch` may carry when
/// `WS_MAX_PUBLISH_BATCH` is unset.
pub const DEFAULT_MAX_PUBLISH_BATCH: usize = 1000;

/// The path of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishVia {
    /// Into this replica's core only (one process, or no bus).
    Local,
    /// Produced to the publish topic, consumed by every replica.
    Kafka,
    /// `PUBLISH`ed to the prefixed Redis channel every replica subscribes to.
    Redis,
}

impl PublishVia {
    /// The value spelled in `WS_PUBLISH_VIA`.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishVia::Local => "local",
            PublishVia::Kafka => "kafka",
            PublishVia::Redis => "redis",
        }
    }
}

/// The validated publish settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSettings {
    /// Local, Kafka or Redis.
    pub via: PublishVia,
    /// The Kafka topic of `via = kafka` (`WS_PUBLISH_TOPIC`).
    pub topic: String,
    /// Longest a publish request waits for the bus to store its messages
    /// before it answers 503 (`WS_PUBLISH_TIMEOUT`).
    pub timeout: Duration,
    /// Most messages in one batch request (`WS_MAX_PUBLISH_BATCH`).
    pub max_batch: usize,
}

impl Default for PublishSettings {
    fn default() -> Self {
        PublishSettings {
            via: PublishVia::Local,
            topic: DEFAULT_PUBLISH_TOPIC.to_owned(),
            timeout: DEFAULT_PUBLISH_TIMEOUT,
            max_batch: DEFAULT_MAX_PUBLISH_BATCH,
        }
    }
}

impl PublishSettings {
    /// Reads `WS_PUBLISH_*`. Unset, `WS_PUBLISH_VIA` is `kafka` when the
    /// publish API is on (`has_api_key`) and the Kafka source runs, else
    /// `redis` when the Redis source runs, else `local`: a replica without
    /// the API set explicitly to `kafka` still consumes the publish topic,
    /// so it receives what other replicas publish.
    pub fn from_settings(
        settings: &Settings,
        sources: &[SourceKind],
        has_api_key: bool,
    ) -> Result<PublishSettings, ConfigError> {
        let has = |kind| sources.contains(&kind);
        let via = match settings.get("WS_PUBLISH_VIA").map(str::trim) {
            None if has_api_key && has(SourceKind::Kafka) => PublishVia::Kafka,
            None if has_api_key && has(SourceKind::Redis) => PublishVia::Redis,
            None | Some("local") => PublishVia::Local,
            Some(raw @ "kafka") if !has(SourceKind::Kafka) => {
                return Err(ConfigError::invalid(
                    "WS_PUBLISH_VIA",
                    raw,
                    "local or a bus whose source runs: WS_SOURCES must include kafka for kafka",
                ));
            }
            Some("kafka") => PublishVia::Kafka,
            Some(raw @ "redis") if !has(SourceKind::Redis) => {
                return Err(ConfigError::invalid(
                    "WS_PUBLISH_VIA",
                    raw,
                    "local or a bus whose source runs: WS_SOURCES must include redis for redis",
                ));
            }
            Some("redis") => PublishVia::Redis,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "WS_PUBLISH_VIA",
                    other,
                    "local, kafka or redis",
                ));
            }
        };
        let topic = settings.string_or("WS_PUBLISH_TOPIC", DEFAULT_PUBLISH_TOPIC);
        let topic = topic.trim().to_owned();
        if !is_valid_topic(&topic) {
            return Err(ConfigError::invalid(
                "WS_PUBLISH_TOPIC",
                &topic,
                "a Kafka topic name: 1–249 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let timeout = settings.duration_or("WS_PUBLISH_TIMEOUT", DEFAULT_PUBLISH_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(ConfigError::invalid(
                "WS_PUBLISH_TIMEOUT",
                "0",
                "a duration above zero, such as 5s",
            ));
        }
        let max_batch: usize = settings.parse_or(
            "WS_MAX_PUBLISH_BATCH",
            DEFAULT_MAX_PUBLISH_BATCH,
            "a whole number of at least 1, such as 1000",
        )?;
        if max_batch == 0 {
            return Err(ConfigError::invalid(
                "WS_MAX_PUBLISH_BATCH",
                "0",
                "a whole number of at least 1, such as 1000",
            ));
        }
        Ok(PublishSettings {
            via,
            topic,
            timeout,
            max_batch,
        })
    }
}

/// Kafka's own rule for topic names (`.` and `..` are reserved).
fn is_valid_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        pairs: &[(&str, &str)],
        sources: &[SourceKind],
        key: bool,
    ) -> Result<PublishSettings, ConfigError> {
        PublishSettings::from_settings(&Settings::from_pairs(pairs.iter().copied()), sources, key)
    }

    #[test]
    fn the_bus_is_the_default_when_its_source_runs_and_the_api_is_on() {
        let kafka_and_redis = [SourceKind::Kafka, SourceKind::Redis, SourceKind::Http];
        assert_eq!(
            read(&[], &kafka_and_redis, true).unwrap().via,
            PublishVia::Kafka
        );
        let redis = [SourceKind::Redis, SourceKind::Http];
        assert_eq!(read(&[], &redis, true).unwrap().via, PublishVia::Redis);
        assert_eq!(
            read(&[], &[SourceKind::Http], true).unwrap().via,
            PublishVia::Local
        );
        assert_eq!(
            read(&[], &[SourceKind::Kafka], false).unwrap().via,
            PublishVia::Local,
            "no API, no publish topic to consume unless asked"
        );
        let explicit = read(&[("WS_PUBLISH_VIA", "kafka")], &[SourceKind::Kafka], false).unwrap();
        assert_eq!(explicit.via, PublishVia::Kafka);
        assert_eq!(
            explicit,
            PublishSettings {
                via: PublishVia::Kafka,
                ..PublishSettings::default()
            }
        );
    }

    #[test]
    fn a_bus_without_its_source_and_bad_values_name_their_variable() {
        for (name, value, sources) in [
            ("WS_PUBLISH_VIA", "kafka", &[SourceKind::Redis][..]),
            ("WS_PUBLISH_VIA", "redis", &[SourceKind::Kafka][..]),
            ("WS_PUBLISH_VIA", "carrier-pigeon", &[SourceKind::Kafka][..]),
            ("WS_PUBLISH_TOPIC", "has space", &[SourceKind::Kafka][..]),
            ("WS_PUBLISH_TOPIC", "a:b", &[SourceKind::Kafka][..]),
            ("WS_PUBLISH_TIMEOUT", "0", &[SourceKind::Kafka][..]),
            ("WS_PUBLISH_TIMEOUT", "soon", &[SourceKind::Kafka][..]),
            ("WS_MAX_PUBLISH_BATCH", "0", &[SourceKind::Kafka][..]),
            ("WS_MAX_PUBLISH_BATCH", "many", &[SourceKind::Kafka][..]),
        ] {
            let err = read(&[(name, value)], sources, true).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn topic_timeout_and_batch_limit_are_read() {
        let s = read(
            &[
                ("WS_PUBLISH_TOPIC", "gw.publish"),
                ("WS_PUBLISH_TIMEOUT", "750ms"),
                ("WS_MAX_PUBLISH_BATCH", "10"),
            ],
            &[SourceKind::Kafka],
            true,
        )
        .unwrap();
        assert_eq!(s.topic, "gw.publish");
        assert_eq!(s.timeout, Duration::from_millis(750));
        assert_eq!(s.max_batch, 10);
    }
}
