//! Kafka end to end: produce into librdkafka's mock cluster, consume with
//! the real Kafka source inside the real server, receive the frame over a
//! WebSocket on 127.0.0.1 with tokio-tungstenite. Every wait is bounded.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ws_realtime::auth::{TokenSpec, mint};
use ws_realtime::config::{ServerConfig, Settings};
use ws_realtime::shell::ServerHandle;
use ws_realtime::source::embedded::EmbeddedKafka;
use ws_realtime::source::kafka::{KafkaConfig, KafkaSource, KafkaTimings};

const SECRET: &[u8] = b"kafka-e2e-secret-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(30);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn start_server(kafka: &EmbeddedKafka, pairs: &[(&str, &str)]) -> ServerHandle {
    let mut all = vec![("WS_KAFKA_BROKERS", kafka.bootstrap_servers())];
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

fn token() -> String {
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
async fn connect(address: SocketAddr, query: &str) -> Client {
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

async fn next_json(client: &mut Client) -> serde_json::Value {
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

async fn next_message(client: &mut Client) -> serde_json::Value {
    for _ in 0..100 {
        let frame = next_json(client).await;
        if frame["type"] == "message" {
            return frame;
        }
    }
    panic!("no message frame");
}

/// The HTTP status of `GET path`.
async fn http_status(address: SocketAddr, path: &str) -> u16 {
    let mut stream = timeout(WAIT, TcpStream::connect(address))
        .await
        .unwrap()
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_json_arrives_as_a_message_frame_with_partition_offset_pos() {
    let kafka = EmbeddedKafka::start(&[("lines", 3)]).unwrap();
    let server = start_server(
        &kafka,
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    )
    .await;
    let mut client = connect(server.address, "channels=lines").await;
    let (partition, offset) = kafka
        .produce("lines", Some(b"AAPL"), br#"{"symbol":"AAPL","bid":189.5}"#)
        .await
        .unwrap();
    let frame = next_message(&mut client).await;
    assert_eq!(frame["channel"], "lines");
    assert_eq!(frame["pos"], format!("{partition}:{offset}"));
    assert_eq!(
        frame["data"],
        serde_json::json!({"symbol":"AAPL","bid":189.5})
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_payload_arrives_as_a_string_and_binary_as_b64data() {
    let kafka = EmbeddedKafka::start(&[("lines", 1)]).unwrap();
    let server = start_server(
        &kafka,
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    )
    .await;
    let mut client = connect(server.address, "channels=lines").await;
    kafka.produce("lines", None, b"plain text").await.unwrap();
    let binary = [0xff_u8, 0x00, 0xfe, 0x80];
    kafka.produce("lines", None, &binary).await.unwrap();
    let text = next_message(&mut client).await;
    assert_eq!(text["data"], "plain text");
    let bytes = next_message(&mut client).await;
    assert_eq!(
        bytes["b64data"],
        base64::engine::general_purpose::STANDARD.encode(binary)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assessment_gateway_configuration_routes_by_field_and_market_data_to_market() {
    let kafka = EmbeddedKafka::start(&[("trading.fills", 2), ("market-data.eod", 1)]).unwrap();
    let server = start_server(
        &kafka,
        &[
            ("WS_KAFKA_TOPICS", r"^trading\..*,^market-data\..*"),
            (
                "WS_KAFKA_ROUTES",
                r"^trading\..*=assessment:{assessmentId};^market-data\..*=market",
            ),
            ("WS_KAFKA_START", "earliest"),
        ],
    )
    .await;
    let mut mine = connect(server.address, "assessmentId=A1&channels=market").await;
    kafka
        .produce("trading.fills", None, br#"{"assessmentId":"B2","qty":9}"#)
        .await
        .unwrap();
    kafka
        .produce("trading.fills", None, br#"{"assessmentId":"A1","qty":1}"#)
        .await
        .unwrap();
    kafka
        .produce("market-data.eod", None, br#"{"close":101}"#)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let frame = next_message(&mut mine).await;
        seen.push((frame["channel"].clone(), frame["data"].clone()));
    }
    seen.sort_by_key(|(channel, _)| channel.to_string());
    assert_eq!(
        seen,
        vec![
            (
                serde_json::json!("assessment:A1"),
                serde_json::json!({"assessmentId":"A1","qty":1})
            ),
            (
                serde_json::json!("market"),
                serde_json::json!({"close":101})
            ),
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_gives_503_then_flow_starts_and_ready_turns_200() {
    let kafka = EmbeddedKafka::start(&[("lines", 1)]).unwrap();
    kafka.broker_down().unwrap();
    let server = start_server(
        &kafka,
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    )
    .await;
    assert_eq!(http_status(server.address, "/ready").await, 503);
    // Clients are served while the broker is away.
    let mut client = connect(server.address, "channels=lines").await;
    kafka.broker_up().unwrap();
    let deadline = Instant::now() + WAIT;
    while http_status(server.address, "/ready").await != 200 {
        assert!(Instant::now() < deadline, "/ready never turned 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kafka
        .produce("lines", None, br#"{"back":true}"#)
        .await
        .unwrap();
    let frame = next_message(&mut client).await;
    assert_eq!(frame["data"], serde_json::json!({"back":true}));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_mode_delivers_over_websocket_and_commits_for_the_next_server() {
    let kafka = EmbeddedKafka::start(&[("orders", 1)]).unwrap();
    let group = [
        ("WS_KAFKA_TOPICS", "orders"),
        ("WS_KAFKA_MODE", "group"),
        ("WS_KAFKA_GROUP_ID", "e2e"),
        ("WS_KAFKA_START", "earliest"),
        // See kafka_source.rs: the mock delays rebalancing an emptied group.
        ("WS_KAFKA_PROPERTY_session.timeout.ms", "6000"),
    ];
    let server = start_server(&kafka, &group).await;
    let mut client = connect(server.address, "channels=orders").await;
    kafka.produce("orders", None, br#"{"n":0}"#).await.unwrap();
    assert_eq!(next_message(&mut client).await["pos"], "0:0");
    server.shutdown().await.unwrap();

    let server = start_server(&kafka, &group).await;
    let mut client = connect(server.address, "channels=orders").await;
    kafka.produce("orders", None, br#"{"n":1}"#).await.unwrap();
    let frame = next_message(&mut client).await;
    assert_eq!(frame["pos"], "0:1");
    // Had the first server not committed, the second would have consumed
    // 0:0 again (possibly before this client subscribed).
    let exposition = server.observers.metrics.encode();
    assert!(
        exposition.contains("websocket_kafka_messages_processed_total{topic=\"orders\"} 1"),
        "{exposition}"
    );
    server.shutdown().await.unwrap();
}
