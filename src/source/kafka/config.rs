//! Kafka settings: which brokers and topics, broadcast or group mode, where
//! to start reading, pass-through librdkafka properties and channel routes,
//! all read from [`Settings`] so a bad value names its `WS_KAFKA_*` variable.

use std::collections::BTreeMap;

use crate::config::{ConfigError, Settings};

use super::routing::{Route, Router, Template};

/// How replicas share the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaMode {
    /// Every replica reads every partition (its own consumer group, no
    /// commits), because any replica may hold a subscriber of any channel.
    Broadcast,
    /// Replicas share one consumer group; offsets are committed only after
    /// the core has taken the message.
    Group,
}

/// Where a partition is read from when this process first gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// Only messages produced from now on (or the committed offset in
    /// `group` mode).
    Latest,
    /// Everything still retained (or the committed offset in `group` mode).
    Earliest,
    /// The last N messages of every partition, then live.
    Backfill(u64),
}

/// Everything the Kafka source needs, validated.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topic names and `^regex` subscriptions, handed to librdkafka as given.
    pub topics: Vec<String>,
    /// The consumer group (suffixed per process in broadcast mode).
    pub group_id: String,
    /// Broadcast or shared group.
    pub mode: KafkaMode,
    /// Where to start reading.
    pub start: StartPosition,
    /// librdkafka properties set verbatim after ours, so an operator can
    /// override anything (SASL, TLS, fetch sizes).
    pub properties: BTreeMap<String, String>,
    /// Turns (topic, key, payload) into a channel.
    pub router: Router,
    /// The topic `POST /api/publish` produces to (`WS_PUBLISH_VIA=kafka`),
    /// consumed by this source and routed by its key (the channel); set by
    /// [`KafkaConfig::with_publish_topic`].
    pub publish_topic: Option<String>,
    /// `group.instance.id` in `group` mode (`WS_SERVER_ID`): static
    /// membership lets a restarted replica take its partitions back at once
    /// instead of waiting out the session timeout of its dead predecessor.
    pub static_member: Option<String>,
}

const TOPICS_VAR: &str = "WS_KAFKA_TOPICS";
const ROUTES_VAR: &str = "WS_KAFKA_ROUTES";
const FALLBACK_VAR: &str = "WS_KAFKA_FALLBACK_CHANNEL";

impl KafkaConfig {
    /// Reads and validates every `WS_KAFKA_*` setting.
    pub fn from_settings(settings: &Settings) -> Result<KafkaConfig, ConfigError> {
        let brokers = settings.string_or("WS_KAFKA_BROKERS", "localhost:9092");
        let topics = settings
            .list(TOPICS_VAR)
            .unwrap_or_else(|| vec!["lines".into(), "order_book".into(), "analytics".into()]);
        if topics.is_empty() {
            return Err(ConfigError::invalid(
                TOPICS_VAR,
                settings.get(TOPICS_VAR).unwrap_or(""),
                "a comma list of topics or ^regex patterns",
            ));
        }
        for topic in topics.iter().filter(|t| t.starts_with('^')) {
            regex::Regex::new(topic).map_err(|_| {
                ConfigError::invalid(TOPICS_VAR, topic, "a valid regular expression after ^")
            })?;
        }
        let group_id = settings.string_or("WS_KAFKA_GROUP_ID", "ws-realtime");
        let mode = match settings.get("WS_KAFKA_MODE").map(str::trim) {
            None | Some("broadcast") => KafkaMode::Broadcast,
            Some("group") => KafkaMode::Group,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "WS_KAFKA_MODE",
                    other,
                    "broadcast or group",
                ));
            }
        };
        let start = parse_start(settings.get("WS_KAFKA_START"))?;
        let properties = properties(settings);
        let router = router(settings)?;
        Ok(KafkaConfig {
            brokers,
            topics,
            group_id,
            mode,
            start,
            properties,
            router,
            publish_topic: None,
            static_member: settings.get("WS_SERVER_ID").map(|id| id.trim().to_owned()),
        })
    }

    /// This configuration also consuming the publish topic `topic`, each
    /// record routed to the channel in its key. Refuses a configured route
    /// for that topic (it would send publishes to the wrong channel), and in
    /// `group` mode a topic entry naming or matching it (the group would
    /// share what every replica must read: see [`KafkaConfig::publish_companion`]).
    pub fn with_publish_topic(mut self, topic: &str) -> Result<KafkaConfig, ConfigError> {
        if self.router.has_route_for(topic) {
            return Err(ConfigError::invalid(
                ROUTES_VAR,
                topic,
                &format!(
                    "no route for the publish topic {topic:?} (WS_PUBLISH_TOPIC): its records \
                     go to the channel in their key; remove the route or change WS_PUBLISH_TOPIC"
                ),
            ));
        }
        let listed = self.topics.iter().any(|t| names_topic(t, topic));
        if self.mode == KafkaMode::Group && listed {
            return Err(ConfigError::invalid(
                TOPICS_VAR,
                &self.topics.join(","),
                &format!(
                    "topics without the publish topic {topic:?} (WS_PUBLISH_TOPIC) in group mode: \
                     every replica reads it in broadcast mode by itself"
                ),
            ));
        }
        let route = Route::new(topic, Template::parse("{key}").expect("a valid template"))
            .expect("a topic name is not a regex");
        self.router.prepend(route);
        if self.mode == KafkaMode::Broadcast && !self.topics.iter().any(|t| t == topic) {
            self.topics.push(topic.to_owned());
        }
        self.publish_topic = Some(topic.to_owned());
        Ok(self)
    }

    /// In `group` mode, the second consumer every replica runs for the
    /// publish topic: broadcast mode (its own group), only that topic.
    /// `None` in broadcast mode, where the one consumer reads it already.
    pub fn publish_companion(&self) -> Option<KafkaConfig> {
        let topic = self.publish_topic.as_ref()?;
        (self.mode == KafkaMode::Group).then(|| KafkaConfig {
            topics: vec![topic.clone()],
            mode: KafkaMode::Broadcast,
            static_member: None,
            ..self.clone()
        })
    }
}

/// Whether the `WS_KAFKA_TOPICS` entry `entry` (a name or a `^regex`)
/// covers `topic`.
fn names_topic(entry: &str, topic: &str) -> bool {
    if entry.starts_with('^') {
        regex::Regex::new(entry).is_ok_and(|r| r.is_match(topic))
    } else {
        entry == topic
    }
}

fn parse_start(raw: Option<&str>) -> Result<StartPosition, ConfigError> {
    let expected = "latest, earliest or backfill:N (N a whole number)";
    match raw.map(str::trim) {
        None | Some("latest") => Ok(StartPosition::Latest),
        Some("earliest") => Ok(StartPosition::Earliest),
        Some(other) => other
            .strip_prefix("backfill:")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map(StartPosition::Backfill)
            .ok_or_else(|| ConfigError::invalid("WS_KAFKA_START", other, expected)),
    }
}

/// `WS_KAFKA_PROPERTY_SASL_MECHANISMS` (environment) is `sasl.mechanisms`;
/// a key from the TOML `[kafka.properties]` table arrives verbatim
/// (`security.protocol`) and is kept as it is.
fn properties(settings: &Settings) -> BTreeMap<String, String> {
    settings
        .with_prefix("WS_KAFKA_PROPERTY_")
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| {
            let name = if name.contains('.') || name.chars().any(|c| c.is_ascii_lowercase()) {
                name.to_owned()
            } else {
                name.to_ascii_lowercase().replace('_', ".")
            };
            (name, value.to_owned())
        })
        .collect()
}

/// Routes from `WS_KAFKA_ROUTES` (`pattern=template;…`) and then the TOML
/// `[[kafka.routes]]` array; the first matching route wins.
fn router(settings: &Settings) -> Result<Router, ConfigError> {
    let mut routes = Vec::new();
    if let Some(raw) = settings.get(ROUTES_VAR) {
        for entry in raw.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (topic, channel) = entry.split_once('=').ok_or_else(|| {
                ConfigError::invalid(
                    ROUTES_VAR,
                    entry,
                    "topic-pattern=channel-template entries separated by ';'",
                )
            })?;
            routes.push(route(ROUTES_VAR, topic.trim(), channel.trim())?);
        }
    }
    let toml_routes = settings
        .toml()
        .and_then(|t| t.get("kafka"))
        .and_then(|k| k.get("routes"));
    if let Some(value) = toml_routes {
        let variable = "[[kafka.routes]]";
        let items = value.as_array().ok_or_else(|| {
            ConfigError::invalid(variable, &value.to_string(), "an array of tables")
        })?;
        for item in items {
            let field = |name: &str| item.get(name).and_then(|v| v.as_str());
            match (field("topic"), field("channel")) {
                (Some(topic), Some(channel)) => routes.push(route(variable, topic, channel)?),
                _ => {
                    return Err(ConfigError::invalid(
                        variable,
                        &item.to_string(),
                        "{ topic = \"pattern\", channel = \"template\" }",
                    ));
                }
            }
        }
    }
    let fallback_raw = settings.string_or(FALLBACK_VAR, "{topic}");
    let fallback = Template::parse(&fallback_raw).map_err(|why| {
        ConfigError::invalid(
            FALLBACK_VAR,
            &fallback_raw,
            &format!("a channel template ({why})"),
        )
    })?;
    Ok(Router::new(routes, fallback))
}

fn route(variable: &str, topic: &str, channel: &str) -> Result<Route, ConfigError> {
    let template = Template::parse(channel).map_err(|why| {
        ConfigError::invalid(variable, channel, &format!("a channel template ({why})"))
    })?;
    Route::new(topic, template)
        .map_err(|_| ConfigError::invalid(variable, topic, "a topic name or a valid ^regex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = KafkaConfig::from_settings(&Settings::default()).unwrap();
        assert_eq!(config.brokers, "localhost:9092");
        assert_eq!(config.topics, ["lines", "order_book", "analytics"]);
        assert_eq!(config.group_id, "ws-realtime");
        assert_eq!(config.mode, KafkaMode::Broadcast);
        assert_eq!(config.start, StartPosition::Latest);
        assert!(config.properties.is_empty());
        let routed = config.router.route("lines", None, b"{}");
        assert_eq!(routed.channel, "lines");
        assert!(!routed.fell_back);
    }

    #[test]
    fn start_accepts_backfill_and_rejects_garbage_naming_the_variable() {
        let s = Settings::from_pairs([("WS_KAFKA_START", "backfill:25")]);
        let config = KafkaConfig::from_settings(&s).unwrap();
        assert_eq!(config.start, StartPosition::Backfill(25));
        for bad in ["backfill:", "backfill:-1", "middle"] {
            let s = Settings::from_pairs([("WS_KAFKA_START", bad)]);
            let err = KafkaConfig::from_settings(&s).unwrap_err();
            assert!(err.to_string().contains("WS_KAFKA_START"), "{err}");
        }
    }

    #[test]
    fn mode_group_is_parsed_and_unknown_mode_names_the_variable() {
        let s = Settings::from_pairs([("WS_KAFKA_MODE", "group")]);
        assert_eq!(
            KafkaConfig::from_settings(&s).unwrap().mode,
            KafkaMode::Group
        );
        let s = Settings::from_pairs([("WS_KAFKA_MODE", "fanout")]);
        let err = KafkaConfig::from_settings(&s).unwrap_err();
        assert!(err.to_string().contains("WS_KAFKA_MODE"), "{err}");
    }

    #[test]
    fn environment_properties_become_dotted_lower_case_names() {
        let s = Settings::from_pairs([
            ("WS_KAFKA_PROPERTY_SASL_MECHANISMS", "PLAIN"),
            ("WS_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
        ]);
        let config = KafkaConfig::from_settings(&s).unwrap();
        assert_eq!(config.properties["sasl.mechanisms"], "PLAIN");
        assert_eq!(config.properties["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn toml_properties_and_routes_are_read_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws.toml");
        std::fs::write(
            &path,
            "[kafka]\ntopics = [\"^trading\\\\..*\"]\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\
             [[kafka.routes]]\ntopic = \"^trading\\\\..*\"\nchannel = \"assessment:{assessmentId}\"\n",
        )
        .unwrap();
        let s = Settings::load(Vec::new(), Some(&path)).unwrap();
        let config = KafkaConfig::from_settings(&s).unwrap();
        assert_eq!(config.properties["security.protocol"], "SSL");
        let routed = config
            .router
            .route("trading.fills", None, br#"{"assessmentId":"a7"}"#);
        assert_eq!(routed.channel, "assessment:a7");
    }

    #[test]
    fn routes_variable_holds_several_routes_and_bad_ones_name_it() {
        let s = Settings::from_pairs([(
            "WS_KAFKA_ROUTES",
            r"^trading\..*=assessment:{assessmentId};^market-data\..*=market",
        )]);
        let config = KafkaConfig::from_settings(&s).unwrap();
        assert_eq!(
            config.router.route("market-data.eod", None, b"x").channel,
            "market"
        );
        for bad in ["no-equals-sign", "^(=x", "t=a{b", "t=bad space"] {
            let s = Settings::from_pairs([("WS_KAFKA_ROUTES", bad)]);
            let err = KafkaConfig::from_settings(&s).unwrap_err();
            assert!(err.to_string().contains("WS_KAFKA_ROUTES"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_publish_topic_is_consumed_and_routed_by_key() {
        let config = KafkaConfig::from_settings(&Settings::from_pairs([(
            "WS_KAFKA_ROUTES",
            r"^market\..*=market",
        )]))
        .unwrap()
        .with_publish_topic("ws-realtime-publish")
        .unwrap();
        assert_eq!(
            config.topics,
            ["lines", "order_book", "analytics", "ws-realtime-publish"]
        );
        let routed = config
            .router
            .route("ws-realtime-publish", Some(b"trade:AAPL"), b"{}");
        assert_eq!(routed.channel, "trade:AAPL");
        assert!(
            config.publish_companion().is_none(),
            "one consumer reads both"
        );
    }

    #[test]
    fn a_route_for_the_publish_topic_is_refused_naming_the_variable() {
        for routes in ["ws-realtime-publish=x", r"^ws-.*=x", r"^.*=other"] {
            let err =
                KafkaConfig::from_settings(&Settings::from_pairs([("WS_KAFKA_ROUTES", routes)]))
                    .unwrap()
                    .with_publish_topic("ws-realtime-publish")
                    .unwrap_err();
            assert!(
                err.to_string().contains("WS_KAFKA_ROUTES"),
                "{routes}: {err}"
            );
        }
    }

    #[test]
    fn group_mode_reads_the_publish_topic_in_a_broadcast_companion() {
        let config = KafkaConfig::from_settings(&Settings::from_pairs([
            ("WS_KAFKA_MODE", "group"),
            ("WS_KAFKA_TOPICS", "orders"),
            ("WS_SERVER_ID", "replica-1"),
        ]))
        .unwrap()
        .with_publish_topic("pub")
        .unwrap();
        assert_eq!(config.topics, ["orders"], "the group does not share it");
        assert_eq!(config.static_member.as_deref(), Some("replica-1"));
        let companion = config.publish_companion().unwrap();
        assert_eq!(companion.topics, ["pub"]);
        assert_eq!(companion.mode, KafkaMode::Broadcast);
        assert_eq!(companion.static_member, None);
        let err = KafkaConfig::from_settings(&Settings::from_pairs([
            ("WS_KAFKA_MODE", "group"),
            ("WS_KAFKA_TOPICS", "orders,^pu.*"),
        ]))
        .unwrap()
        .with_publish_topic("pub")
        .unwrap_err();
        assert!(err.to_string().contains("WS_KAFKA_TOPICS"), "{err}");
    }

    #[test]
    fn bad_regex_topic_names_the_variable() {
        let s = Settings::from_pairs([("WS_KAFKA_TOPICS", "lines,^(unclosed")]);
        let err = KafkaConfig::from_settings(&s).unwrap_err();
        assert!(err.to_string().contains("WS_KAFKA_TOPICS"), "{err}");
    }
}
