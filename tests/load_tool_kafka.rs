//! The load tool publishing through Kafka: librdkafka's mock cluster, the
//! real Kafka source inside an in-process server on 127.0.0.1:0, the tool's
//! producer, and its subscribers counting every delivery.

use std::time::Duration;

use clap::Parser;
use ws_realtime::config::{ServerConfig, Settings};
use ws_realtime::load::{self, LoadArgs};
use ws_realtime::source::embedded::EmbeddedKafka;
use ws_realtime::source::kafka::{KafkaConfig, KafkaSource};

const SECRET: &str = "load-tool-kafka-secret-0123456789abcdef";
const TOPIC: &str = "loadtest";
/// Upper bound on the whole tool run (it stops by itself well before).
const RUN_LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_publishes_reach_every_subscriber_of_the_topic_channel() {
    let kafka = EmbeddedKafka::start(&[(TOPIC, 1)]).expect("the mock cluster starts");
    let kafka_config = KafkaConfig::from_settings(&Settings::from_pairs([
        ("WS_KAFKA_BROKERS", kafka.bootstrap_servers()),
        ("WS_KAFKA_TOPICS", TOPIC),
        // The consumer may join after the first warmup publishes; reading
        // from the start keeps every window publish deliverable.
        ("WS_KAFKA_START", "earliest"),
    ]))
    .expect("the Kafka settings are valid");
    let server = ws_realtime::shell::start(
        ServerConfig::for_testing(SECRET.as_bytes()),
        vec![Box::new(KafkaSource::new(kafka_config))],
    )
    .await
    .expect("a loopback server starts");

    let args = LoadArgs::try_parse_from([
        "ws-realtime-load".to_owned(),
        "--url".to_owned(),
        format!("ws://{}/ws", server.address),
        "--connections".to_owned(),
        "10".to_owned(),
        "--secret".to_owned(),
        SECRET.to_owned(),
        "--publish-via".to_owned(),
        "kafka".to_owned(),
        "--brokers".to_owned(),
        kafka.bootstrap_servers().to_owned(),
        "--topic".to_owned(),
        TOPIC.to_owned(),
        "--publish-rate".to_owned(),
        "20".to_owned(),
        "--warmup".to_owned(),
        "2s".to_owned(),
        "--duration".to_owned(),
        "2s".to_owned(),
        "--grace".to_owned(),
        "10s".to_owned(),
        "--quiet".to_owned(),
    ])
    .expect("the flags parse");
    let summary = tokio::time::timeout(RUN_LIMIT, load::run(&args))
        .await
        .expect("the tool stops by itself")
        .expect("the run succeeds");

    assert_eq!(summary.channels, 1, "the topic is the only channel");
    assert_eq!(summary.connections.ok, 10, "{summary:?}");
    let publish = summary.publish.as_ref().expect("a publishing run");
    assert_eq!(publish.via, "kafka");
    assert!(publish.sent > 0, "{summary:?}");
    let deliveries = summary.deliveries.as_ref().expect("a publishing run");
    assert_eq!(deliveries.expected, publish.sent * 10, "{summary:?}");
    assert_eq!(deliveries.received, deliveries.expected, "{summary:?}");
    assert_eq!(deliveries.lost, 0, "{summary:?}");
    let latency = summary.latency_us.as_ref().expect("a publishing run");
    assert!(
        latency.p50 <= latency.p99 && latency.p99 <= latency.max,
        "{latency:?}"
    );

    server.shutdown().await.expect("the server shuts down");
}
