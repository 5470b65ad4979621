//! Recovery on another replica, end to end: two servers read the same topic
//! of librdkafka's mock cluster (broadcast mode); a client on server A
//! records its cursor, disconnects, messages keep flowing, and it
//! reconnects to server B with `since`: it gets exactly what it missed,
//! `recovered:true`, then the live stream. Every wait is bounded.

mod kafka_support;

use std::time::Duration;

use futures_util::SinkExt;
use kafka_support::{
    WAIT, apply_pos, connect, connect_bare, http_status, next_message, read_is, subscribe,
};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
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

    // A replica that starts later with backfill recovers the same cursor
    // once it answers /ready.
    let c_settings = [
        ("WS_KAFKA_TOPICS", "lines"),
        ("WS_KAFKA_START", "backfill:10"),
    ];
    let c = kafka_support::start_server(kafka.bootstrap_servers(), &c_settings).await;
    let deadline = Instant::now() + WAIT;
    while http_status(c.address, "/ready").await != 200 {
        assert!(Instant::now() < deadline, "/ready never turned 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut late = connect_bare(c.address).await;
    let mut recovered = false;
    for _ in 0..50 {
        let ack = subscribe(
            &mut late,
            serde_json::json!({"type":"subscribe","channels":["lines"],"since":{"lines":cursor_text},"id":3}),
        )
        .await;
        if ack["recovered"]["lines"] == true {
            recovered = true;
            break;
        }
        late.send(Message::text(
            r#"{"type":"unsubscribe","channels":["lines"]}"#,
        ))
        .await
        .expect("sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the backfilled replica recovers the cursor");
    assert_eq!(read_is(&mut late, 4).await, [3, 4, 5, 6]);

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}
