//! The Kafka source against librdkafka's mock cluster (no external
//! services): produce with rdkafka, read what the source hands the core from
//! the `PublishSink` receiver. Every wait is bounded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use ws_realtime::config::Settings;
use ws_realtime::metrics::Metrics;
use ws_realtime::proto::position::Position;
use ws_realtime::shutdown::{self, ShutdownTrigger};
use ws_realtime::source::embedded::EmbeddedKafka;
use ws_realtime::source::kafka::{KafkaConfig, KafkaSource, KafkaTimings};
use ws_realtime::source::{Ingest, PublishSink, Readiness, Source, SourceContext};

const WAIT: Duration = Duration::from_secs(30);

/// One test's mock cluster, and its turn: the tests run one at a time.
/// Eleven mock clusters with their consumers (each fetching every 5 ms)
/// at once saturate a 2-core CI machine, and a consumer starved there
/// missed the 30 s wait for a message.
struct Cluster {
    kafka: EmbeddedKafka,
    /// Held until the test ends (a panic releases it too: no poisoning).
    _turn: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Cluster {
    type Target = EmbeddedKafka;
    fn deref(&self) -> &EmbeddedKafka {
        &self.kafka
    }
}

/// Waits for this test's turn, then starts a mock cluster with `topics`.
async fn cluster(topics: &[(&str, i32)]) -> Cluster {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
    let turn = ONE_AT_A_TIME.lock().await;
    Cluster {
        kafka: EmbeddedKafka::start(topics).unwrap(),
        _turn: turn,
    }
}

/// One running Kafka source and what a test observes of it.
struct Running {
    rx: mpsc::Receiver<Ingest>,
    trigger: ShutdownTrigger,
    task: JoinHandle<()>,
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

fn start_source(kafka: &EmbeddedKafka, pairs: &[(&str, &str)]) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut all = vec![("WS_KAFKA_BROKERS", kafka.bootstrap_servers())];
    all.extend_from_slice(pairs);
    let config = KafkaConfig::from_settings(&Settings::from_pairs(all)).expect("valid test config");
    let source = KafkaSource::new(config).with_timings(KafkaTimings {
        health_interval: Duration::from_millis(200),
        warn_interval: Duration::from_secs(5),
        instance_id: None,
    });
    let (sink, rx) = PublishSink::channel(64);
    let readiness = Readiness::default();
    let health = readiness.register(source.name());
    let (trigger, shutdown) = shutdown::channel();
    let metrics = Arc::new(Metrics::new());
    let ctx = SourceContext {
        sink,
        health,
        shutdown,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(Box::new(source).run(ctx));
    Running {
        rx,
        trigger,
        task,
        readiness,
        metrics,
    }
}

impl Running {
    /// The next message, acknowledged as taken by the core.
    async fn next(&mut self) -> Ingest {
        let mut ingest = timeout(WAIT, self.rx.recv())
            .await
            .expect("a message within the wait")
            .expect("the source is running");
        if let Some(taken) = ingest.taken.take() {
            let _ = taken.send(());
        }
        ingest
    }

    async fn take(&mut self, count: usize) -> Vec<Ingest> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.next().await);
        }
        out
    }

    async fn stop(self) {
        self.trigger.trigger();
        timeout(WAIT, self.task)
            .await
            .expect("the source stops within the wait")
            .expect("the source task does not panic");
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        while self.readiness.status().is_err() {
            assert!(
                Instant::now() < deadline,
                "not ready in time: {:?}",
                self.readiness.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn offset_of(ingest: &Ingest) -> (i32, i64) {
    match ingest.publish.pos {
        Some(Position::Offset {
            partition, offset, ..
        }) => (partition, offset),
        _ => panic!("Kafka messages carry their offset"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_message_reaches_the_sink_with_topic_channel_and_partition_offset() {
    let kafka = cluster(&[("lines", 3)]).await;
    let mut source = start_source(
        &kafka,
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    );
    let (partition, offset) = kafka
        .produce("lines", Some(b"EURUSD"), br#"{"bid":1.1}"#)
        .await
        .unwrap();
    let ingest = source.next().await;
    assert_eq!(ingest.publish.channel, "lines");
    assert_eq!(&ingest.publish.payload[..], br#"{"bid":1.1}"#);
    assert_eq!(offset_of(&ingest), (partition, offset));
    source.wait_ready().await;
    // The counter moves just after the hand-over, so allow it a moment.
    let deadline = Instant::now() + WAIT;
    loop {
        let exposition = source.metrics.encode();
        if exposition.contains("websocket_kafka_messages_processed_total{topic=\"lines\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "{exposition}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_and_non_utf8_payloads_arrive_byte_for_byte() {
    let kafka = cluster(&[("lines", 1)]).await;
    // Only topics the mock cluster has: a missing default topic can hold up
    // the mock's group join past the wait.
    let mut source = start_source(
        &kafka,
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    );
    let payloads: [&[u8]; 3] = [b"plain text, not json", &[0xff, 0x00, 0xfe, 0x80], b""];
    for payload in payloads {
        kafka.produce("lines", None, payload).await.unwrap();
    }
    let received = source.take(3).await;
    for (ingest, payload) in received.iter().zip(payloads) {
        assert_eq!(&ingest.publish.payload[..], payload);
        assert_eq!(ingest.publish.channel, "lines");
    }
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_broadcast_sources_on_one_cluster_both_receive_every_message() {
    let kafka = cluster(&[("lines", 3)]).await;
    let same_group = [
        ("WS_KAFKA_START", "earliest"),
        ("WS_KAFKA_GROUP_ID", "replicas"),
    ];
    let mut first = start_source(&kafka, &same_group);
    let mut second = start_source(&kafka, &same_group);
    let mut produced = BTreeSet::new();
    for i in 0..30 {
        let key = format!("k{i}");
        produced.insert(
            kafka
                .produce(
                    "lines",
                    Some(key.as_bytes()),
                    format!("{{\"i\":{i}}}").as_bytes(),
                )
                .await
                .unwrap(),
        );
    }
    for source in [&mut first, &mut second] {
        let seen: BTreeSet<_> = source.take(30).await.iter().map(offset_of).collect();
        assert_eq!(seen, produced, "each replica sees the whole stream");
    }
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_mode_commits_after_delivery_and_a_restart_loses_nothing() {
    let kafka = cluster(&[("orders", 1)]).await;
    let group = [
        ("WS_KAFKA_MODE", "group"),
        ("WS_KAFKA_GROUP_ID", "shared"),
        ("WS_KAFKA_TOPICS", "orders"),
        ("WS_KAFKA_START", "earliest"),
        // The mock coordinator waits (session timeout - 1 s) before
        // rebalancing a group whose last member left; a real broker treats
        // the emptied group like a new one. A short session keeps this quick.
        ("WS_KAFKA_PROPERTY_session.timeout.ms", "6000"),
    ];
    for i in 0..10 {
        kafka
            .produce("orders", None, format!("{{\"n\":{i}}}").as_bytes())
            .await
            .unwrap();
    }
    let mut first = start_source(&kafka, &group);
    let taken = first.take(5).await;
    assert_eq!(
        taken.iter().map(|i| offset_of(i).1).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    // The sixth message reaches the queue but the core never takes it: its
    // offset must not be committed.
    let untaken = timeout(WAIT, first.rx.recv()).await.unwrap().unwrap();
    assert_eq!(offset_of(&untaken), (0, 5));
    first.stop().await;
    drop(untaken);

    let mut second = start_source(&kafka, &group);
    let rest = second.take(5).await;
    assert_eq!(
        rest.iter().map(|i| offset_of(i).1).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9],
        "the restart resumes at the first message the core did not take"
    );
    second.stop().await;
}

/// A topic created while the source runs and matching its ^regex makes the
/// consumer's group rebalance. The partitions it already read resume where
/// they stopped (a broadcast group commits nothing, so they used to restart
/// at `WS_KAFKA_START`: with `earliest`, every message again), and the
/// broadcast group's short session keeps the rejoin short (with
/// librdkafka's default 45 s session the mock cluster held it for 44 s,
/// and every message with it; `next` waits 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_while_running_is_consumed_and_old_partitions_resume_where_they_stopped() {
    let kafka = cluster(&[("market-data.eod", 1)]).await;
    let mut source = start_source(
        &kafka,
        &[
            ("WS_KAFKA_TOPICS", r"^market-data\..*"),
            ("WS_KAFKA_START", "earliest"),
            // New topics are noticed at the next metadata refresh: 10 s in
            // production, 500 ms here.
            (
                "WS_KAFKA_PROPERTY_TOPIC_METADATA_REFRESH_INTERVAL_MS",
                "500",
            ),
        ],
    );
    kafka.produce("market-data.eod", None, b"{}").await.unwrap();
    assert_eq!(offset_of(&source.next().await), (0, 0));
    kafka.create_topic("market-data.fx", 1).unwrap();
    kafka
        .produce("market-data.fx", None, b"{\"new\":true}")
        .await
        .unwrap();
    kafka
        .produce("market-data.eod", None, b"{\"second\":true}")
        .await
        .unwrap();
    let mut after: Vec<(String, i64)> = source
        .take(2)
        .await
        .iter()
        .map(|ingest| (ingest.publish.channel.clone(), offset_of(ingest).1))
        .collect();
    after.sort();
    assert_eq!(
        after,
        [
            ("market-data.eod".to_owned(), 1),
            ("market-data.fx".to_owned(), 0)
        ]
    );
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_topics_subscribe_to_every_matching_topic_only() {
    let kafka = cluster(&[
        ("market-data.eod", 1),
        ("market-data.intraday", 2),
        ("unrelated", 1),
    ])
    .await;
    let mut source = start_source(
        &kafka,
        &[
            ("WS_KAFKA_TOPICS", r"^market-data\..*"),
            ("WS_KAFKA_START", "earliest"),
        ],
    );
    kafka.produce("unrelated", None, b"{}").await.unwrap();
    kafka.produce("market-data.eod", None, b"{}").await.unwrap();
    kafka
        .produce("market-data.intraday", None, b"{}")
        .await
        .unwrap();
    let channels: BTreeSet<String> = source
        .take(2)
        .await
        .into_iter()
        .map(|i| i.publish.channel)
        .collect();
    assert_eq!(
        channels,
        BTreeSet::from([
            "market-data.eod".to_owned(),
            "market-data.intraday".to_owned()
        ])
    );
    // A last message on a matching topic: had `unrelated` been consumed, it
    // would have arrived before this one or alongside it.
    kafka
        .produce("market-data.eod", None, b"{\"last\":true}")
        .await
        .unwrap();
    let last = source.next().await;
    assert_eq!(&last.publish.payload[..], b"{\"last\":true}");
    assert!(source.rx.try_recv().is_err());
    source.stop().await;
}

/// (topic, key, payload, expected channel).
type RoutingCase = (
    &'static str,
    Option<&'static [u8]>,
    &'static [u8],
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_routing_template_builds_its_channel_and_fallbacks_are_counted() {
    let kafka = cluster(&[
        ("trading.fills", 1),
        ("market-data.eod", 1),
        ("keyed", 1),
        ("pairs", 1),
        ("lines", 1),
    ])
    .await;
    let mut source = start_source(
        &kafka,
        &[
            (
                "WS_KAFKA_TOPICS",
                r"^trading\..*,^market-data\..*,keyed,pairs,lines",
            ),
            (
                "WS_KAFKA_ROUTES",
                r"^trading\..*=assessment:{assessmentId};^market-data\..*=market;keyed={key};pairs={topic}:{key}",
            ),
            ("WS_KAFKA_FALLBACK_CHANNEL", "unrouted:{topic}"),
            ("WS_KAFKA_START", "earliest"),
        ],
    );
    let cases: [RoutingCase; 6] = [
        (
            "trading.fills",
            None,
            br#"{"assessmentId":"A17","qty":3}"#,
            "assessment:A17",
        ),
        (
            "trading.fills",
            None,
            br#"{"qty":3}"#,
            "unrouted:trading.fills",
        ),
        ("market-data.eod", None, b"close", "market"),
        ("keyed", Some(b"AAPL"), b"{}", "AAPL"),
        ("pairs", Some(b"MSFT"), b"{}", "pairs:MSFT"),
        ("lines", None, b"{}", "unrouted:lines"),
    ];
    for (topic, key, payload, expected) in cases {
        kafka.produce(topic, key, payload).await.unwrap();
        let ingest = source.next().await;
        assert_eq!(ingest.publish.channel, expected, "{topic} {payload:?}");
    }
    let exposition = source.metrics.encode();
    assert!(
        exposition.contains(
            "websocket_source_messages_total{source=\"kafka\",kind=\"routing_fallback\"} 1"
        ),
        "{exposition}"
    );
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_start_replays_the_last_n_messages_of_each_partition() {
    let kafka = cluster(&[("analytics", 2)]).await;
    for partition in 0..2 {
        for i in 0..10 {
            kafka
                .produce_to_partition("analytics", partition, format!("{i}").as_bytes())
                .await
                .unwrap();
        }
    }
    let mut source = start_source(
        &kafka,
        &[
            ("WS_KAFKA_TOPICS", "analytics"),
            ("WS_KAFKA_START", "backfill:3"),
        ],
    );
    let seen: BTreeSet<_> = source.take(6).await.iter().map(offset_of).collect();
    let expected: BTreeSet<_> = (0..2).flat_map(|p| (7..10).map(move |o| (p, o))).collect();
    assert_eq!(seen, expected);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_makes_the_source_not_ready_until_it_exists() {
    let kafka = cluster(&[("lines", 1)]).await;
    let mut source = start_source(
        &kafka,
        &[
            ("WS_KAFKA_TOPICS", "lines,late"),
            ("WS_KAFKA_START", "earliest"),
            // A new topic means a rebalance of a running group, which the
            // mock coordinator delays by (session timeout - 1 s).
            ("WS_KAFKA_PROPERTY_session.timeout.ms", "6000"),
            (
                "WS_KAFKA_PROPERTY_topic.metadata.refresh.interval.ms",
                "500",
            ),
        ],
    );
    let deadline = Instant::now() + WAIT;
    loop {
        match source.readiness.status() {
            Err(reasons) if reasons.iter().any(|r| r.contains("topic missing: late")) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "never reported the missing topic: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    kafka.create_topic("late", 1).unwrap();
    source.wait_ready().await;
    kafka.produce("late", None, b"{}").await.unwrap();
    assert_eq!(source.next().await.publish.channel, "late");
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_unreachable_at_start_then_reachable_later_starts_the_flow_and_turns_ready() {
    let kafka = cluster(&[("lines", 1)]).await;
    kafka.broker_down().unwrap();
    let mut source = start_source(
        &kafka,
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    );
    // While the broker refuses connections the source says why it is not ready.
    let deadline = Instant::now() + WAIT;
    loop {
        match source.readiness.status() {
            Err(reasons) if reasons.iter().any(|r| r.contains("broker unreachable")) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "never reported the outage: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(source.rx.try_recv().is_err());
    kafka.broker_up().unwrap();
    kafka
        .produce("lines", None, b"{\"after\":\"outage\"}")
        .await
        .unwrap();
    let ingest = source.next().await;
    assert_eq!(&ingest.publish.payload[..], b"{\"after\":\"outage\"}");
    source.wait_ready().await;
    source.stop().await;
}

/// The lag gauge of `topic` partition 0, if reported yet.
fn lag(metrics: &Metrics, topic: &str) -> Option<i64> {
    let prefix = "websocket_kafka_consumer_lag{";
    let wanted = format!("topic=\"{topic}\"");
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&wanted) && l.contains("partition=\"0\""))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sink_pauses_consumption_and_the_lag_gauge_shows_it() {
    let kafka = cluster(&[("lines", 1)]).await;
    let mut source = start_source(
        &kafka,
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    );
    const PRODUCED: usize = 300;
    for i in 0..PRODUCED {
        kafka
            .produce("lines", None, format!("{{\"i\":{i}}}").as_bytes())
            .await
            .unwrap();
    }
    // Nobody reads: the source stops at the bounded queue, and the lag says
    // how far behind it is.
    let deadline = Instant::now() + WAIT;
    loop {
        if lag(&source.metrics, "lines").is_some_and(|l| l >= 100) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag never grew: {:?}",
            lag(&source.metrics, "lines")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(source.rx.len() <= source.rx.max_capacity());
    // Reading everything lets it catch up, in order.
    let received = source.take(PRODUCED).await;
    let offsets: Vec<i64> = received.iter().map(|i| offset_of(i).1).collect();
    assert_eq!(offsets, (0..PRODUCED as i64).collect::<Vec<_>>());
    let deadline = Instant::now() + WAIT;
    while lag(&source.metrics, "lines") != Some(0) {
        assert!(
            Instant::now() < deadline,
            "lag never returned to 0: {:?}",
            lag(&source.metrics, "lines")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    source.stop().await;
}
