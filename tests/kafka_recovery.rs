//! Recovery on another replica, end to end: two servers read the same topic
//! of librdkafka's mock cluster (broadcast mode); a client on server A
//! records its cursor, disconnects, messages keep flowing, and it
//! reconnects to server B with `since`: it gets exactly what it missed,
//! `recovered:true`, then the live stream. Every wait is bounded.

mod kafka_support;

use std::time::Duration;

use futures_util::SinkExt;
use kafka_support::{Client, WAIT, connect, http_status, next_json, next_message};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use ws_realtime::proto::cursor;
use ws_realtime::source::embedded::EmbeddedKafka;

/// The client rule: the ack's cursor, then each message's pos.
fn apply(cursor_text: &mut String, pos: &str) {
    let mut c = cursor::parse(cursor_text).expect("valid cursor");
    let p = cursor::parse(pos).expect("pos parses");
    c.set(&p.entries[0].0, p.entries[0].1);
    *cursor_text = c.to_string();
}

async fn subscribe(client: &mut Client, frame: serde_json::Value) -> serde_json::Value {
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
async fn connect_bare(address: std::net::SocketAddr) -> Client {
    let url = format!("ws://{address}/ws?token={}", kafka_support::token());
    let (mut client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connects in time")
        .expect("the upgrade succeeds");
    assert_eq!(next_json(&mut client).await["type"], "connected");
    client
}

/// Reads `n` messages and returns their `i` fields.
async fn read_is(client: &mut Client, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..n {
        let m = next_message(client).await;
        got.push(m["data"]["i"].as_u64().expect("numbered"));
    }
    got
}

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
        apply(&mut cursor_text, m["pos"].as_str().expect("pos"));
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
