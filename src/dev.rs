//! `ws-realtime dev`: one command that shows data flowing. It listens on
//! 127.0.0.1:8080 (or `WS_BIND_ADDRESS`) with a fixed secret and API key,
//! starts an embedded Kafka (librdkafka's mock cluster) with the feed's
//! topics, produces the synthetic market feed into it, and consumes it with
//! the real Kafka source: the same path as production. It prints a ready
//! token, the Kafka bootstrap address and copy-paste commands.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::{TokenSpec, mint};
use crate::config::{ConfigError, ServerConfig, Settings};
use crate::shell::server::{Observers, ServerError, TcpAccept, run_observed};
use crate::shutdown::Shutdown;
use crate::source::Source;
use crate::source::dev_feed::{FEED_TOPICS, MarketFeed, TICK};
use crate::source::embedded::{EmbeddedKafka, EmbeddedKafkaError};
use crate::source::kafka::{KafkaConfig, KafkaSource};

/// The dev server's HS256 secret. Public on purpose: never use it in production.
pub const DEV_SECRET: &str = "ws-realtime-dev-secret-not-for-production";

/// The dev server's API key for `POST /api/publish`.
pub const DEV_API_KEY: &str = "dev-api-key";

/// The dev server's default address.
pub const DEV_BIND_ADDRESS: &str = "127.0.0.1:8080";

/// Partitions of each embedded topic, so `pos` shows real partitions.
pub const DEV_PARTITIONS: i32 = 3;

/// How long the printed token lasts.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why `dev` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A `WS_*` variable is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The embedded Kafka could not start.
    #[error(transparent)]
    Kafka(#[from] EmbeddedKafkaError),
}

/// The dev configuration: the environment's `WS_*` values, with the dev
/// address, secret and API key filled in where they are unset.
pub fn dev_config(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<ServerConfig, ConfigError> {
    let mut pairs: Vec<(String, String)> = env.into_iter().collect();
    for (name, default) in [
        ("WS_BIND_ADDRESS", DEV_BIND_ADDRESS),
        ("WS_AUTH_SECRET", DEV_SECRET),
        ("WS_API_KEY", DEV_API_KEY),
        // The live page is what a newcomer opens first.
        ("WS_UI", "true"),
    ] {
        if !pairs.iter().any(|(k, v)| k == name && !v.trim().is_empty()) {
            pairs.push((name.to_owned(), default.to_owned()));
        }
    }
    // The feed runs in-process: no broker is needed.
    pairs.retain(|(k, _)| k != "WS_SOURCES");
    pairs.push(("WS_SOURCES".to_owned(), "http".to_owned()));
    ServerConfig::from_settings(&Settings::load(pairs, None)?)
}

/// The Kafka settings of the dev server: the environment's `WS_KAFKA_*`
/// values, but always the embedded cluster at `bootstrap`.
pub fn dev_kafka_config(
    env: impl IntoIterator<Item = (String, String)>,
    bootstrap: &str,
) -> Result<KafkaConfig, ConfigError> {
    let mut pairs: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("WS_KAFKA_") && k != "WS_KAFKA_BROKERS")
        .collect();
    pairs.push(("WS_KAFKA_BROKERS".to_owned(), bootstrap.to_owned()));
    KafkaConfig::from_settings(&Settings::load(pairs, None)?)
}

/// The sources of the dev server: HTTP publish and Kafka.
pub fn dev_sources(kafka: KafkaConfig) -> Vec<Box<dyn Source>> {
    vec![
        Box::new(crate::source::http::HttpSource),
        Box::new(KafkaSource::new(kafka)),
    ]
}

/// Starts the embedded Kafka with the feed's topics.
pub fn start_embedded_kafka() -> Result<EmbeddedKafka, EmbeddedKafkaError> {
    let topics: Vec<(&str, i32)> = FEED_TOPICS.iter().map(|t| (*t, DEV_PARTITIONS)).collect();
    EmbeddedKafka::start(&topics)
}

/// Produces the synthetic market feed into `kafka` every [`TICK`] until
/// `shutdown` fires, keyed by symbol.
pub async fn produce_feed(kafka: Arc<EmbeddedKafka>, mut feed: MarketFeed, mut shutdown: Shutdown) {
    let mut interval = tokio::time::interval(TICK);
    let mut failures = 0_u64;
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = interval.tick() => {}
        }
        for message in feed.next_messages(unix_ms()) {
            let produced = kafka
                .produce(
                    message.topic,
                    Some(message.key.as_bytes()),
                    message.json.as_bytes(),
                )
                .await;
            if let Err(error) = produced {
                failures += 1;
                // One line now and then, not one per message.
                if failures.is_power_of_two() {
                    tracing::warn!(%error, failures, "dev feed: producing into the embedded Kafka failed");
                }
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the dev server until `shutdown` fires, printing how to connect.
pub async fn run_dev(mut config: ServerConfig, shutdown: Shutdown) -> Result<(), DevError> {
    let kafka = Arc::new(start_embedded_kafka()?);
    let kafka_config = dev_kafka_config(std::env::vars(), kafka.bootstrap_servers())?;
    let accept = TcpAccept::bind(config.bind_address)
        .await
        .map_err(|source| ServerError::Bind {
            address: config.bind_address,
            source,
        })?;
    let address = crate::shell::Accept::local_addr(&accept).unwrap_or(config.bind_address);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = mint(
        &config.auth.secret,
        &TokenSpec {
            sub: "dev-user".to_owned(),
            ttl: DEV_TOKEN_TTL,
            roles: vec!["admin".to_owned()],
            channels: None,
            audience: config.auth.audience.clone(),
            issuer: config.auth.issuer.clone(),
        },
        now,
    );
    let api_key = config.api_key.clone().unwrap_or_default();
    // The page at `/` connects with the same token (the dev secret is public).
    config.ui_token = Some(token.clone());
    println!("{}", instructions(address, &token, &api_key, config.ui));
    println!("{}", kafka_instructions(kafka.bootstrap_servers()));
    let feed = tokio::spawn(produce_feed(
        kafka.clone(),
        MarketFeed::new(unix_ms()),
        shutdown.clone(),
    ));
    let served = run_observed(
        accept,
        config,
        dev_sources(kafka_config),
        shutdown,
        Observers::default(),
    )
    .await;
    feed.abort();
    let _ = feed.await;
    served?;
    Ok(())
}

/// What `dev` prints about its embedded Kafka.
pub fn kafka_instructions(bootstrap: &str) -> String {
    format!(
        r#"Embedded Kafka (topics {topics}, {DEV_PARTITIONS} partitions each) on {bootstrap}
The synthetic feed is produced into it and consumed by the Kafka source.
Produce your own message (one per line):
  kcat -P -b {bootstrap} -t lines
"#,
        topics = FEED_TOPICS.join(", "),
    )
}

/// What `dev` prints: the token and commands to connect and publish.
pub fn instructions(address: SocketAddr, token: &str, api_key: &str, ui: bool) -> String {
    let reachable = if address.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
    } else {
        address
    };
    let page = if ui {
        format!("Live page (open in a browser): http://{reachable}/\n")
    } else {
        String::new()
    };
    format!(
        r#"ws-realtime dev server on http://{reachable}
(dev secret and API key are public: never use them in production)

{page}
Token (user dev-user, role admin, valid 24h):
  {token}

Connect from a shell (websocat, or wscat -c with the same URL):
  websocat 'ws://{reachable}/ws?token={token}&channels=lines'
Then subscribe to more:
  {{"type":"subscribe","channels":["order_book","analytics"],"id":1}}

Connect from a browser console:
  const ws = new WebSocket("ws://{reachable}/ws?token={token}&channels=lines");
  ws.onmessage = (e) => console.log(JSON.parse(e.data));

Publish your own message:
  curl -sS -X POST http://{reachable}/api/publish -H 'X-API-Key: {api_key}' -H 'Content-Type: application/json' -d '{{"channel":"lines","data":{{"symbol":"DEMO","price":1.23}}}}'

Operations: http://{reachable}/ready  http://{reachable}/metrics
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_config_fills_in_the_dev_defaults_and_keeps_overrides() {
        let config = dev_config(Vec::new()).unwrap();
        assert_eq!(config.bind_address, DEV_BIND_ADDRESS.parse().unwrap());
        assert_eq!(config.auth.secret, DEV_SECRET.as_bytes());
        assert_eq!(config.api_key.as_deref(), Some(DEV_API_KEY));
        assert!(config.ui, "dev serves the live page");
        assert_eq!(config.ui_token, None, "only run_dev fills in the token");

        let config = dev_config(vec![(
            "WS_BIND_ADDRESS".to_owned(),
            "127.0.0.1:0".to_owned(),
        )])
        .unwrap();
        assert_eq!(config.bind_address.port(), 0);
    }

    #[test]
    fn dev_kafka_config_always_points_at_the_embedded_cluster() {
        let env = vec![
            ("WS_KAFKA_BROKERS".to_owned(), "elsewhere:9092".to_owned()),
            ("WS_KAFKA_START".to_owned(), "earliest".to_owned()),
        ];
        let config = dev_kafka_config(env, "127.0.0.1:1234").unwrap();
        assert_eq!(config.brokers, "127.0.0.1:1234");
        assert_eq!(config.topics, FEED_TOPICS);
        assert_eq!(config.start, crate::source::kafka::StartPosition::Earliest);
        let text = kafka_instructions("127.0.0.1:1234");
        assert!(
            text.contains("kcat -P -b 127.0.0.1:1234 -t lines"),
            "{text}"
        );
    }

    #[test]
    fn instructions_name_a_reachable_address_and_the_token() {
        let text = instructions("0.0.0.0:8080".parse().unwrap(), "TOKEN", "KEY", true);
        assert!(
            text.contains("Live page (open in a browser): http://127.0.0.1:8080/"),
            "{text}"
        );
        let quiet = instructions("0.0.0.0:8080".parse().unwrap(), "TOKEN", "KEY", false);
        assert!(!quiet.contains("Live page"), "{quiet}");
        assert!(
            text.contains("websocat 'ws://127.0.0.1:8080/ws?token=TOKEN&channels=lines'"),
            "{text}"
        );
        assert!(text.contains("X-API-Key: KEY"), "{text}");
        assert!(text.contains("new WebSocket("), "{text}");
    }
}
