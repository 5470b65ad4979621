//! Shared helpers of the `kafka_*` end-to-end tests: a server on 127.0.0.1:0
//! running the real Kafka source, tokens, and a tokio-tungstenite client
//! with a timeout on every await. HTTP goes through `server_support::http`,
//! so a test using this module also declares `mod server_support;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ws_realtime::auth::{TokenSpec, mint};
use ws_realtime::config::{ServerConfig, Settings};
use ws_realtime::proto::cursor;
use ws_realtime::shell::ServerHandle;
use ws_realtime::source::kafka::{KafkaConfig, KafkaSource, KafkaTimings};

pub const SECRET: &[u8] = b"kafka-e2e-secret-0123456789abcdef";
pub const WAIT: Duration = Duration::from_secs(30);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server whose only source is Kafka at `brokers`, configured by `pairs`.
pub async fn start_server(brokers: &str, pairs: &[(&str, &str)]) -> ServerHandle {
    let mut all = vec![("WS_KAFKA_BROKERS", brokers)];
    all.extend_from_slice(pairs);
    let config = KafkaConfig::from_settings(&Settings::from_pairs(all)).expect("valid config");
    let source = KafkaSource::new(config).with_timings(KafkaTimings {
        health_interval: Duration::from_millis(200),
        ..KafkaTimings::default()
    });
    ws_realtime::shell::start(ServerConfig::for_testing(SECRET), vec![Box::new(source)])
        .await
        .expect("a loopback server starts")
}

/// A valid token for `kafka-tester`.
pub fn token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let spec = TokenSpec {
        sub: "kafka-tester".to_owned(),
        ttl: Duration::from_secs(3600),
        roles: Vec::new(),
        channels: None,
        audience: None,
        issuer: None,
    };
    mint(SECRET, &spec, now)
}

/// Connects with `query` appended and waits for the connect-time
/// subscription to be acknowledged, so nothing produced afterwards is missed.
pub async fn connect(address: SocketAddr, query: &str) -> Client {
    let url = format!("ws://{address}/ws?token={}&{query}", token());
    let (mut client, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connects in time")
        .expect("the upgrade succeeds");
    for _ in 0..10 {
        let frame = next_json(&mut client).await;
        if frame["type"] == "subscribed" {
            return client;
        }
    }
    panic!("no subscribed acknowledgement");
}

/// The next text frame as JSON, skipping control frames.
pub async fn next_json(client: &mut Client) -> serde_json::Value {
    for _ in 0..1000 {
        match timeout(WAIT, client.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).expect("server frames are JSON");
            }
            Some(Ok(Message::Close(frame))) => panic!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            other => panic!("stream ended: {other:?}"),
        }
    }
    panic!("only control frames");
}

/// The next `message` frame, skipping acknowledgements.
pub async fn next_message(client: &mut Client) -> serde_json::Value {
    for _ in 0..100 {
        let frame = next_json(client).await;
        if frame["type"] == "message" {
            return frame;
        }
    }
    panic!("no message frame");
}

/// The HTTP status of `GET path`.
pub async fn http_status(address: SocketAddr, path: &str) -> u16 {
    http_get(address, path).await.0
}

/// The HTTP status and body of `GET path`.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    crate::server_support::http::http_get(address, path).await
}

/// The offset `group` has committed for `topic` partition 0, asked of the
/// brokers directly (an OffsetFetch; no group join).
pub fn committed_offset(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("a consumer");
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("the brokers answer an offset fetch");
    match committed.find_partition(topic, 0)?.offset() {
        rdkafka::Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

/// The client rule: the ack's cursor, then each message's pos.
pub fn apply_pos(cursor_text: &mut String, pos: &str) {
    let mut c = cursor::parse(cursor_text).expect("valid cursor");
    let p = cursor::parse(pos).expect("pos parses");
    c.set(&p.entries[0].0, p.entries[0].1);
    *cursor_text = c.to_string();
}

pub async fn subscribe(client: &mut Client, frame: serde_json::Value) -> serde_json::Value {
    client
        .send(Message::text(frame.to_string()))
        .await
        .expect("sent");
    for _ in 0..10 {
        let reply = next_json(client).await;
        if reply["type"] == "subscribed" || reply["type"] == "error" {
            return reply;
        }
    }
    panic!("no answer to the subscribe");
}

/// Connects without channels (so without waiting for an ack).
pub async fn connect_bare(address: std::net::SocketAddr) -> Client {
    let url = format!("ws://{address}/ws?token={}", token());
    let (mut client, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connects in time")
        .expect("the upgrade succeeds");
    assert_eq!(next_json(&mut client).await["type"], "connected");
    client
}

/// Reads `n` messages and returns their `i` fields.
pub async fn read_is(client: &mut Client, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..n {
        let m = next_message(client).await;
        got.push(m["data"]["i"].as_u64().expect("numbered"));
    }
    got
}

/// The API key of [`start_publishing_server`].
pub const API_KEY: &str = "kafka-publish-key";

/// A server with `POST /api/publish` on, publishing through Kafka at
/// `brokers` (`WS_PUBLISH_VIA=kafka`), its Kafka source configured by `pairs`
/// (which may also set `WS_PUBLISH_*`).
pub async fn start_publishing_server(brokers: &str, pairs: &[(&str, &str)]) -> ServerHandle {
    use ws_realtime::config::{PublishSettings, SourceKind};
    let mut all = vec![("WS_KAFKA_BROKERS", brokers), ("WS_PUBLISH_VIA", "kafka")];
    all.extend_from_slice(pairs);
    let settings = Settings::from_pairs(all);
    let publish =
        PublishSettings::from_settings(&settings, &[SourceKind::Kafka, SourceKind::Http], true)
            .expect("valid publish settings");
    let kafka = KafkaConfig::from_settings(&settings).expect("valid config");
    let timings = KafkaTimings {
        health_interval: Duration::from_millis(200),
        ..KafkaTimings::default()
    };
    // Each server its own id (the static group member id in group mode),
    // unless the test sets WS_SERVER_ID.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let server_id = format!(
        "tester-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let sources = ws_realtime::source::kafka::kafka_sources(kafka, &publish, &server_id, timings)
        .expect("valid Kafka sources");
    let mut config = ServerConfig::for_testing(SECRET);
    config.api_key = Some(API_KEY.to_owned());
    config.publish = publish;
    let sources: Vec<Box<dyn ws_realtime::source::Source>> = sources
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn ws_realtime::source::Source>)
        .collect();
    ws_realtime::shell::start(config, sources)
        .await
        .expect("a loopback server starts")
}

/// `POST path` with a JSON `body` and the API key: the status and the JSON
/// answer (every publish answer is JSON; anything else fails the test).
pub async fn post_json(address: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let answer = crate::server_support::http::post_json(address, path, Some(API_KEY), body).await;
    let json = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&answer.body)));
    (answer.status, json)
}

/// Whether a `message` frame's `pos` is the position a publish answer gave:
/// the same `topic:partition:offset`, or (before positions named their
/// topic) the same `partition:offset`.
pub fn same_position(frame_pos: &serde_json::Value, answered: &serde_json::Value) -> bool {
    let (Some(frame), Some(answered)) = (frame_pos.as_str(), answered.as_str()) else {
        return false;
    };
    frame == answered
        || answered
            .split_once(':')
            .is_some_and(|(_, rest)| rest == frame)
}
