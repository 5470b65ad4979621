//! `WS_PUBLISH_VIA=kafka` end to end on librdkafka's mock cluster: a
//! publish to one server reaches the clients of another, in order, with a
//! Kafka position; a broker that does not answer makes publishes 503 within
//! `WS_PUBLISH_TIMEOUT`, never 200; the batch endpoint and its limits.

mod kafka_support;
mod server_support;

use std::time::Duration;

use kafka_support::{connect, next_message, post_json, same_position, start_publishing_server};
use tokio::time::Instant;
use ws_realtime::source::embedded::EmbeddedKafka;

/// Every start position earliest: nothing published before a consumer's
/// assignment is missed.
const EARLIEST: (&str, &str) = ("WS_KAFKA_START", "earliest");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_one_server_reaches_the_clients_of_another_in_order_with_a_kafka_pos() {
    // The publish topic is not created here: the first server creates it.
    let kafka = EmbeddedKafka::start(&[("lines", 1)]).unwrap();
    let pairs = [("WS_KAFKA_TOPICS", "lines"), EARLIEST];
    let a = start_publishing_server(kafka.bootstrap_servers(), &pairs).await;
    let b = start_publishing_server(kafka.bootstrap_servers(), &pairs).await;
    let mut on_b = connect(b.address, "channels=prices").await;
    let mut on_a = connect(a.address, "channels=prices").await;

    let mut answered = Vec::new();
    for n in 0..20 {
        let (status, answer) = post_json(
            a.address,
            "/api/publish",
            &format!(r#"{{"channel":"prices","data":{{"n":{n}}}}}"#),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["published"], 1);
        let pos = answer["pos"].as_str().expect("a Kafka position");
        let parts: Vec<&str> = pos.split(':').collect();
        assert_eq!(parts.len(), 3, "topic:partition:offset, got {pos}");
        assert_eq!(parts[0], "ws-realtime-publish");
        assert!(parts[1].parse::<i32>().is_ok() && parts[2].parse::<i64>().is_ok());
        answered.push(answer["pos"].clone());
    }
    for client in [&mut on_b, &mut on_a] {
        for (n, pos) in answered.iter().enumerate() {
            let frame = next_message(client).await;
            assert_eq!(frame["channel"], "prices");
            assert_eq!(
                frame["data"],
                serde_json::json!({ "n": n }),
                "in publish order"
            );
            assert!(
                same_position(&frame["pos"], pos),
                "{} vs {pos}",
                frame["pos"]
            );
        }
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_does_not_answer_makes_publishes_503_within_the_timeout_never_200() {
    let kafka = EmbeddedKafka::start(&[("lines", 1)]).unwrap();
    let server = start_publishing_server(
        kafka.bootstrap_servers(),
        &[
            ("WS_KAFKA_TOPICS", "lines"),
            ("WS_PUBLISH_TIMEOUT", "1s"),
            EARLIEST,
        ],
    )
    .await;
    let mut client = connect(server.address, "channels=alerts").await;
    let publish = |n: u32| format!(r#"{{"channel":"alerts","data":{{"n":{n}}}}}"#);
    let (status, answer) = post_json(server.address, "/api/publish", &publish(0)).await;
    assert_eq!(status, 200, "{answer}");

    kafka.broker_down().unwrap();
    for n in 1..=2 {
        let started = Instant::now();
        let (status, answer) = post_json(server.address, "/api/publish", &publish(n)).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"], "publish_unavailable");
        assert!(answer["message"].is_string());
        assert!(
            took < Duration::from_millis(2500),
            "answered after {took:?}"
        );
    }

    kafka.broker_up().unwrap();
    // librdkafka reconnects with a backoff: retry until a publish is stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let (status, answer) = post_json(server.address, "/api/publish", &publish(99)).await;
        if status == 200 {
            break answer;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(Instant::now() < deadline, "publishes never flowed again");
    };
    // The client stayed connected; every 200 arrived (a 503'd message
    // is not known to be stored, so it may or may not show up too).
    let first = next_message(&mut client).await;
    assert_eq!(first["data"]["n"], 0);
    loop {
        let frame = next_message(&mut client).await;
        if frame["data"]["n"] == 99 {
            assert!(same_position(&frame["pos"], &stored["pos"]));
            break;
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_stored_whole_delivered_in_order_and_bad_batches_are_4xx_json() {
    let kafka = EmbeddedKafka::start(&[("lines", 1)]).unwrap();
    let pairs = [
        ("WS_KAFKA_TOPICS", "lines"),
        ("WS_MAX_PUBLISH_BATCH", "100"),
        EARLIEST,
    ];
    let a = start_publishing_server(kafka.bootstrap_servers(), &pairs).await;
    let b = start_publishing_server(kafka.bootstrap_servers(), &pairs).await;
    let mut on_b = connect(b.address, "channels=pnl:1,pnl:2").await;

    let batch: Vec<String> = (0..100)
        .map(|n| format!(r#"{{"channel":"pnl:{}","data":{{"n":{n}}}}}"#, 1 + n % 2))
        .collect();
    let (status, answer) = post_json(
        a.address,
        "/api/publish/batch",
        &format!("[{}]", batch.join(",")),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["published"], 100);
    let results = answer["messages"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(|r| r["pos"].is_string()), "{answer}");

    // Per channel, in publish order (the two channels may interleave).
    let mut next = [0_u64, 1];
    for _ in 0..100 {
        let frame = next_message(&mut on_b).await;
        let n = frame["data"]["n"].as_u64().unwrap();
        let channel = if frame["channel"] == "pnl:1" { 0 } else { 1 };
        assert_eq!(n, next[channel], "order within {}", frame["channel"]);
        next[channel] += 2;
        assert!(same_position(&frame["pos"], &results[n as usize]["pos"]));
    }

    let too_many = format!("[{}]", vec![r#"{"channel":"x","data":1}"#; 101].join(","));
    for (body, code) in [
        ("this is not json", "bad_request"),
        (r#"{"channel":"x","data":1}"#, "bad_request"),
        (too_many.as_str(), "too_many_messages"),
        (
            r#"[{"channel":"x","data":1},{"channel":"no spaces","data":1}]"#,
            "invalid_channel",
        ),
    ] {
        let (status, answer) = post_json(a.address, "/api/publish/batch", body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"], code, "{answer}");
        assert!(answer["message"].is_string());
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_group_mode_the_publish_topic_is_still_read_whole_by_every_server() {
    let kafka = EmbeddedKafka::start(&[("orders", 2)]).unwrap();
    let pairs = [
        ("WS_KAFKA_TOPICS", "orders"),
        ("WS_KAFKA_MODE", "group"),
        ("WS_KAFKA_GROUP_ID", "publish-group-test"),
        EARLIEST,
    ];
    let a = start_publishing_server(kafka.bootstrap_servers(), &pairs).await;
    let b = start_publishing_server(kafka.bootstrap_servers(), &pairs).await;
    let mut on_a = connect(a.address, "channels=news").await;
    let mut on_b = connect(b.address, "channels=news").await;
    for n in 0..5 {
        let (status, answer) = post_json(
            b.address,
            "/api/publish",
            &format!(r#"{{"channel":"news","data":{{"n":{n}}}}}"#),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    // The group shares "orders", but both servers get every publish.
    for client in [&mut on_a, &mut on_b] {
        for n in 0..5 {
            assert_eq!(next_message(client).await["data"]["n"], n);
        }
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
