//! Recovery on another replica, end to end: two servers read the same topic
//! of librdkafka's mock cluster (broadcast mode); a client on server A
//! records its cursor, disconnects, messages keep flowing, and it
//! reconnects to server B with `since`: it gets exactly what it missed,
//! `recovered:true`, then the live stream. Every wait is bounded.

mod kafka_support;
mod server_support;

use std::time::Duration;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use kafka_support::{
    WAIT, apply_pos, connect, connect_bare, http_get, next_json, next_message, read_is, subscribe,
};
use tokio::time::Instant;
use ws_realtime::source::embedded::EmbeddedKafka;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_replica_exactly_what_it_missed() {
    let kafka = EmbeddedKafka::start(&[("lines", 1)]).unwrap();
    let settings = [("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")];
    let a = kafka_support::start_server(kafka.bootstrap_servers(), &settings).await;
    let b = kafka_support::start_server(kafka.bootstrap_servers(), &settings).await;
    // A watcher on B, to know when B has consumed what was produced.
    let mut watcher = connect(b.address, "channels=lines").await;

    let mut client = connect_bare(a.address).await;
    let ack = subscribe(
        &mut client,
        serde_json::json!({"type":"subscribe","channels":["lines"],"id":1}),
    )
    .await;
    let mut cursor_text = ack["positions"]["lines"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    for i in 0..3 {
        kafka
            .produce("lines", None, format!(r#"{{"i":{i}}}"#).as_bytes())
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let m = next_message(&mut client).await;
        apply_pos(&mut cursor_text, m["pos"].as_str().expect("pos"));
    }
    assert!(cursor_text.contains("lines:0:2"), "{cursor_text}");
    drop(client);

    // Missed while away.
    for i in 3..6 {
        kafka
            .produce("lines", None, format!(r#"{{"i":{i}}}"#).as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(read_is(&mut watcher, 6).await, [0, 1, 2, 3, 4, 5]);

    let mut back = connect_bare(b.address).await;
    let ack = subscribe(
        &mut back,
        serde_json::json!({"type":"subscribe","channels":["lines"],"since":{"lines":cursor_text},"id":2}),
    )
    .await;
    assert_eq!(ack["recovered"]["lines"], true, "{ack}");
    assert_eq!(read_is(&mut back, 3).await, [3, 4, 5]);
    kafka.produce("lines", None, br#"{"i":6}"#).await.unwrap();
    assert_eq!(read_is(&mut back, 1).await, [6], "then live, no duplicate");

    // A replica that starts later with backfill holds the history once it
    // answers /ready: one subscribe recovers the cursor, no retrying.
    let c_settings = [
        ("WS_KAFKA_TOPICS", "lines"),
        ("WS_KAFKA_START", "backfill:10"),
    ];
    let c = kafka_support::start_server(kafka.bootstrap_servers(), &c_settings).await;
    wait_ready(c.address).await;
    let mut late = connect_bare(c.address).await;
    let ack = subscribe(
        &mut late,
        serde_json::json!({"type":"subscribe","channels":["lines"],"since":{"lines":cursor_text},"id":3}),
    )
    .await;
    assert_eq!(ack["recovered"]["lines"], true, "{ack}");
    assert_eq!(read_is(&mut late, 4).await, [3, 4, 5, 6]);

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

/// Polls `/ready` until 200; every not-ready answer must give a reason a
/// backfilling Kafka source can have. Returns the reasons seen.
async fn wait_ready(address: SocketAddr) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let (status, body) = http_get(address, "/ready").await;
        if status == 200 {
            return seen;
        }
        assert_eq!(status, 503, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(body["status"], "not_ready", "{body}");
        for reason in body["reasons"].as_array().expect("reasons") {
            let reason = reason.as_str().expect("text").to_owned();
            assert!(
                reason.starts_with("kafka: connecting")
                    || reason.starts_with("kafka: starting")
                    || reason.starts_with("kafka: backfill: "),
                "{reason}"
            );
            seen.push(reason);
        }
        assert!(
            Instant::now() < deadline,
            "/ready never turned 200: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilling_replica_is_ready_only_once_its_history_holds_the_last_n_of_every_partition()
{
    // Partition 0 holds more than N records, partition 1 fewer, partition 2
    // none (it must not hold readiness back).
    const N: usize = 8;
    let kafka = EmbeddedKafka::start(&[("deep", 3)]).unwrap();
    let held = [(0, 12), (1, 4), (2, 0)];
    for (partition, count) in held {
        // One at a time, so each record is a batch of its own.
        for i in 0..count {
            kafka
                .produce_to_partition("deep", partition, format!(r#"{{"i":{i}}}"#).as_bytes())
                .await
                .unwrap();
        }
    }
    let backfill = format!("backfill:{N}");
    // Slow fetches (one batch per partition per fetch, each held 100 ms by
    // the mock broker) make the backfill take about a second, far longer
    // than the metadata answer that used to make the source ready.
    let settings = [
        ("WS_KAFKA_TOPICS", "deep"),
        ("WS_KAFKA_START", backfill.as_str()),
        ("WS_KAFKA_PROPERTY_MAX_PARTITION_FETCH_BYTES", "1"),
        ("WS_KAFKA_PROPERTY_FETCH_MIN_BYTES", "100000"),
        ("WS_KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "100"),
    ];
    let server = kafka_support::start_server(kafka.bootstrap_servers(), &settings).await;
    let reasons = wait_ready(server.address).await;

    // Ready: one history subscribe returns min(N, M) per partition at once.
    let expected: usize = held.iter().map(|(_, m)| (*m).min(N)).sum();
    let mut client = connect_bare(server.address).await;
    let ack = subscribe(
        &mut client,
        serde_json::json!({"type":"subscribe","channels":["deep"],"history":1000,"id":1}),
    )
    .await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    let mut per_partition: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..expected {
        let m = next_message(&mut client).await;
        let pos = m["pos"].as_str().expect("pos");
        let (partition, _offset) = pos.rsplit_once(':').expect("topic:partition:offset");
        per_partition
            .entry(partition.to_owned())
            .or_default()
            .push(m["data"]["i"].as_u64().expect("numbered"));
    }
    let tail = |m: u64| (m.saturating_sub(N as u64)..m).collect::<Vec<_>>();
    assert_eq!(
        per_partition["deep:0"],
        tail(12),
        "the last N of partition 0"
    );
    assert_eq!(per_partition["deep:1"], tail(4), "all of partition 1");
    assert_eq!(per_partition.len(), 2, "{:?}", per_partition.keys());
    // Nothing more was stored: the next frame is the live one.
    kafka
        .produce_to_partition("deep", 2, br#"{"i":9999}"#)
        .await
        .unwrap();
    let live = next_json(&mut client).await;
    assert_eq!(live["data"]["i"], 9999, "{live}");
    assert!(
        reasons.iter().any(|r| r.starts_with("kafka: backfill: ")),
        "/ready said why it waited: {reasons:?}"
    );

    server.shutdown().await.unwrap();
}
