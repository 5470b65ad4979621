//! Kafka figures against librdkafka's mock cluster (no external broker),
//! printed for the record; they assert completeness and order, never speed.
//!
//! ```sh
//! cargo bench --bench kafka_mock                # both
//! cargo bench --bench kafka_mock -- throughput  # produce → source → sink rate
//! cargo bench --bench kafka_mock -- idle        # fetch requests to an idle broker
//! ```
//!
//! They were ignored tests in tests/kafka_source.rs and tests/kafka_publish.rs;
//! the test suite keeps checks, the benches keep measurements.

#[path = "../tests/kafka_support/mod.rs"]
mod kafka_support;
#[path = "../tests/server_support/mod.rs"]
mod server_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio::time::timeout;
use ws_realtime::config::Settings;
use ws_realtime::metrics::Metrics;
use ws_realtime::proto::position::Position;
use ws_realtime::shutdown;
use ws_realtime::source::embedded::EmbeddedKafka;
use ws_realtime::source::kafka::{KafkaConfig, KafkaSource, KafkaTimings};
use ws_realtime::source::{Ingest, PublishSink, Readiness, Source, SourceContext};

/// Upper bound on any one wait.
const WAIT: Duration = Duration::from_secs(30);

fn main() {
    // `cargo bench` passes `--bench`; any other argument selects by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if wanted("throughput") {
        runtime.block_on(mock_cluster_throughput());
    }
    if wanted("idle") {
        runtime.block_on(idle_fetch_rate());
    }
}

/// The partition and offset of a Kafka message.
fn offset_of(ingest: &Ingest) -> (i32, i64) {
    match ingest.publish.pos {
        Some(Position::Offset {
            partition, offset, ..
        }) => (partition, offset),
        _ => panic!("Kafka messages carry their offset"),
    }
}

/// The next message the source hands the core, acknowledged as taken.
async fn next(rx: &mut mpsc::Receiver<Ingest>) -> Ingest {
    let mut ingest = timeout(WAIT, rx.recv())
        .await
        .expect("a message within the wait")
        .expect("the source is running");
    if let Some(taken) = ingest.taken.take() {
        let _ = taken.send(());
    }
    ingest
}

/// Throughput of produce → mock cluster → source → sink: 50 000 messages on
/// three partitions, produced first, then read from the earliest offset.
async fn mock_cluster_throughput() {
    const COUNT: usize = 50_000;
    let kafka = EmbeddedKafka::start(&[("lines", 3)]).unwrap();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let payload = br#"{"symbol":"AAPL","bid":189.51,"ask":189.53,"timestamp":1795440062000}"#;
    let produce_started = Instant::now();
    for chunk in 0..COUNT / 1000 {
        let sends = (0..1000).map(|i| {
            let key = format!("k{}", chunk * 1000 + i);
            let producer = &producer;
            async move {
                producer
                    .send(
                        FutureRecord::to("lines").key(&key).payload(&payload[..]),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        for result in futures_util::future::join_all(sends).await {
            result.expect("the mock acknowledges");
        }
    }
    let produce_elapsed = produce_started.elapsed();

    let config = KafkaConfig::from_settings(&Settings::from_pairs([
        ("WS_KAFKA_BROKERS", kafka.bootstrap_servers()),
        ("WS_KAFKA_TOPICS", "lines"),
        ("WS_KAFKA_START", "earliest"),
    ]))
    .expect("a valid config");
    let source = KafkaSource::new(config).with_timings(KafkaTimings {
        health_interval: Duration::from_millis(200),
        ..KafkaTimings::default()
    });
    let (sink, mut rx) = PublishSink::channel(64);
    let readiness = Readiness::default();
    let (trigger, shutdown) = shutdown::channel();
    let ctx = SourceContext {
        sink,
        health: readiness.register(source.name()),
        shutdown,
        metrics: Arc::new(Metrics::new()),
    };
    let task = tokio::spawn(Box::new(source).run(ctx));

    let first = next(&mut rx).await;
    let consume_started = Instant::now();
    let mut last_offset = HashMap::new();
    let (p, o) = offset_of(&first);
    last_offset.insert(p, o);
    for _ in 1..COUNT {
        let (p, o) = offset_of(&next(&mut rx).await);
        if let Some(previous) = last_offset.insert(p, o) {
            assert!(o > previous, "order kept per partition");
        }
    }
    let consume_elapsed = consume_started.elapsed();
    println!(
        "throughput: produced {COUNT} in {produce_elapsed:?} ({:.0}/s); consumed {} in {consume_elapsed:?} ({:.0}/s)",
        COUNT as f64 / produce_elapsed.as_secs_f64(),
        COUNT - 1,
        (COUNT - 1) as f64 / consume_elapsed.as_secs_f64(),
    );
    trigger.trigger();
    timeout(WAIT, task)
        .await
        .expect("the source stops within the wait")
        .expect("the source task ends cleanly");
}

/// The fetch requests a publishing server sends to an idle broker, the
/// price of the short `fetch.wait.max.ms` default.
async fn idle_fetch_rate() {
    use kafka_support::{connect, next_message, post_json, start_publishing_server};
    let kafka = EmbeddedKafka::start(&[("lines", 3)]).unwrap();
    let server = start_publishing_server(
        kafka.bootstrap_servers(),
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    )
    .await;
    let mut client = connect(server.address, "channels=lines").await;
    let (status, _) = post_json(
        server.address,
        "/api/publish",
        r#"{"channel":"lines","data":1}"#,
    )
    .await;
    assert_eq!(status, 200);
    next_message(&mut client).await;
    kafka.track_requests().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.take_request_count(1).unwrap();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let fetches = kafka.take_request_count(1).unwrap();
    println!(
        "idle: {fetches} fetch requests in {window:?} = {:.0}/s (one broker; topics lines (3 partitions) and the publish topic)",
        fetches as f64 / window.as_secs_f64()
    );
    server.shutdown().await.unwrap();
}
