//! Kafka end to end: produce into librdkafka's mock cluster, consume with
//! the real Kafka source inside the real server, receive the frame over a
//! WebSocket on 127.0.0.1 with tokio-tungstenite. Every wait is bounded.

mod kafka_support;
mod server_support;

use std::time::Duration;

use base64::Engine;
use kafka_support::{WAIT, committed_offset, connect, http_status, next_message};
use tokio::time::Instant;
use ws_realtime::source::embedded::EmbeddedKafka;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_json_arrives_as_a_message_frame_with_topic_partition_offset_pos() {
    let kafka = EmbeddedKafka::start(&[("lines", 3)]).unwrap();
    let server = kafka_support::start_server(
        kafka.bootstrap_servers(),
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
    assert_eq!(frame["pos"], format!("lines:{partition}:{offset}"));
    assert_eq!(
        frame["data"],
        serde_json::json!({"symbol":"AAPL","bid":189.5})
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_payload_arrives_as_a_string_and_binary_as_b64data() {
    let kafka = EmbeddedKafka::start(&[("lines", 1)]).unwrap();
    let server = kafka_support::start_server(
        kafka.bootstrap_servers(),
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
    let server = kafka_support::start_server(
        kafka.bootstrap_servers(),
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
    let server = kafka_support::start_server(
        kafka.bootstrap_servers(),
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
    let server = kafka_support::start_server(kafka.bootstrap_servers(), &group).await;
    let mut client = connect(server.address, "channels=orders").await;
    kafka.produce("orders", None, br#"{"n":0}"#).await.unwrap();
    assert_eq!(next_message(&mut client).await["pos"], "orders:0:0");
    server.shutdown().await.unwrap();
    assert_eq!(
        committed_offset(kafka.bootstrap_servers(), "e2e", "orders"),
        Some(1),
        "the delivered message is committed by shutdown"
    );

    kafka.produce("orders", None, br#"{"n":1}"#).await.unwrap();
    let server = kafka_support::start_server(kafka.bootstrap_servers(), &group).await;
    let mut client = connect(server.address, "channels=orders").await;
    kafka.produce("orders", None, br#"{"n":2}"#).await.unwrap();
    // The restarted server resumes at 0:1; the client may or may not have
    // subscribed in time for it, but never sees 0:0 again.
    let frame = next_message(&mut client).await;
    assert!(
        frame["pos"] == "orders:0:1" || frame["pos"] == "orders:0:2",
        "{frame}"
    );
    server.shutdown().await.unwrap();
}
