//! Protocol v1 over a real socket: `connected`, subscribe → publish →
//! delivery (and nothing for others), unsubscribe, malformed frames,
//! oversized frames, silent clients.

mod server_support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use server_support::*;
use tokio_tungstenite::tungstenite::Message;
use ws_realtime::core::Publish;

#[tokio::test]
async fn connected_frame_names_the_user_and_server() {
    let mut config = config();
    config.core.server_id = "it-server".to_owned();
    let server = start(config).await;
    let mut client = within(try_connect(
        server.address,
        &format!("token={}", token("tester", &[])),
    ))
    .await
    .unwrap();
    let connected = next_json(&mut client).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["userId"], "tester");
    assert_eq!(connected["serverId"], "it-server");
    assert!(connected["connectionId"].is_string(), "{connected}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn published_message_reaches_subscribers_only() {
    let server = start(config()).await;
    let mut subscriber = connect(server.address, "alice", "").await;
    let mut bystander = connect(server.address, "bob", "").await;
    let ack = subscribe(&mut subscriber, &["lines"], 1).await;
    assert_eq!(ack["id"], 1);
    subscribe(&mut bystander, &["analytics"], 1).await;

    let (status, body) = post_publish(
        server.address,
        Some(API_KEY),
        r#"{"channel":"lines","data":{"symbol":"AAPL","price":189.5}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["published"], 1);

    let message = next_json(&mut subscriber).await;
    assert_eq!(message["type"], "message");
    assert_eq!(message["channel"], "lines");
    assert_eq!(
        message["data"],
        serde_json::json!({"symbol":"AAPL","price":189.5})
    );
    assert!(message["pos"].is_string(), "{message}");

    // The bystander's next frame is the analytics message published after,
    // so the lines message was not sent to it.
    post_publish(
        server.address,
        Some(API_KEY),
        r#"{"channel":"analytics","data":{"n":1}}"#,
    )
    .await;
    let next = next_json(&mut bystander).await;
    assert_eq!(next["channel"], "analytics", "{next}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn channels_in_the_query_subscribe_at_connect() {
    let server = start(config()).await;
    let mut client = connect(server.address, "alice", "&channels=lines").await;
    let ack = next_json(&mut client).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    post_publish(
        server.address,
        Some(API_KEY),
        r#"{"channels":["lines"],"data":[1,2,3]}"#,
    )
    .await;
    let message = next_json(&mut client).await;
    assert_eq!(message["data"], serde_json::json!([1, 2, 3]));
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn unsubscribed_channel_delivers_nothing_more() {
    let server = start(config()).await;
    let mut client = connect(server.address, "alice", "").await;
    subscribe(&mut client, &["lines", "analytics"], 1).await;
    send_json(
        &mut client,
        serde_json::json!({"type":"unsubscribe","channels":["lines"],"id":2}),
    )
    .await;
    let ack = next_json(&mut client).await;
    assert_eq!(ack["type"], "unsubscribed", "{ack}");
    assert_eq!(ack["current"], serde_json::json!(["analytics"]));

    post_publish(
        server.address,
        Some(API_KEY),
        r#"{"channel":"lines","data":1}"#,
    )
    .await;
    post_publish(
        server.address,
        Some(API_KEY),
        r#"{"channel":"analytics","data":2}"#,
    )
    .await;
    let next = next_json(&mut client).await;
    assert_eq!(next["channel"], "analytics", "{next}");
    assert_eq!(next["data"], 2);
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn malformed_frame_gets_an_error_and_the_connection_lives_on() {
    let server = start(config()).await;
    let mut client = connect(server.address, "alice", "").await;
    within(client.send(Message::text("this is not json")))
        .await
        .unwrap();
    let error = next_json(&mut client).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "bad_frame");

    send_json(&mut client, serde_json::json!({"type":"ping","id":3})).await;
    let pong = next_json(&mut client).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], 3);
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn oversized_frame_is_closed_with_1009() {
    let mut config = config();
    config.core.max_message_bytes = 1024;
    let server = start(config).await;
    let mut client = connect(server.address, "alice", "").await;
    // Far over the limit: the server must drain the rest of it, or the
    // kernel resets the socket and the client never reads the 1009.
    let big = format!(
        r#"{{"type":"subscribe","channels":["{}"]}}"#,
        "x".repeat(1024 * 1024)
    );
    within(client.send(Message::text(big))).await.unwrap();
    assert_eq!(close_code(&mut client).await, Some(1009));
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn silent_client_is_closed_after_the_timeout() {
    let mut config = config();
    config.core.connection_timeout = Duration::from_millis(300);
    // No pings before the timeout, so reading does not make the client talk.
    config.core.heartbeat_interval = Duration::from_secs(60);
    let server = start(config).await;
    let mut client = connect(server.address, "alice", "").await;
    // The close arrives (or the socket ends) without the client sending anything.
    let _ = close_code(&mut client).await;
    let metrics = server.observers.metrics.encode();
    assert!(
        metrics.contains("websocket_heartbeat_failures_total 1"),
        "{metrics}"
    );
    within(server.shutdown()).await.unwrap();
}

/// Timers must fire while input never stops: the driver's select prefers
/// input, so deadlines are also served after every turn. Two publishers on
/// their own workers keep the driver's queue busy throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_silent_client_is_closed_while_publishes_never_stop() {
    let mut config = config();
    config.core.connection_timeout = Duration::from_millis(300);
    config.core.heartbeat_interval = Duration::from_millis(100);
    let (server, sink) = start_with_sink(config).await;
    let mut client = connect(server.address, "alice", "").await;
    let flood = |sink: ws_realtime::source::PublishSink| async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < until {
            let publish = Publish {
                channel: "nobody-listens".to_owned(),
                pos: None,
                payload: Bytes::from_static(b"{}"),
                key: None,
            };
            if sink.publish(publish).await.is_err() {
                break;
            }
        }
    };
    let floods = [tokio::spawn(flood(sink.clone())), tokio::spawn(flood(sink))];
    // Silent (not even reading, so no pong) for three timeouts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Reading now answers pings; a server that has not closed it by now
    // would see the client alive and never close it while the flood runs.
    assert_eq!(close_code(&mut client).await, Some(1008));
    for flood in floods {
        flood.abort();
    }
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let server = start(config()).await;
    let mut client = connect(server.address, "alice", "").await;
    let trigger = server.trigger;
    trigger.trigger();
    assert_eq!(close_code(&mut client).await, Some(1001));
    within(server.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn old_gateway_clients_use_action_symbols_and_assessment_id() {
    let server = start(config()).await;
    let mut client = connect(server.address, "alice", "&assessmentId=A42").await;
    let ack = next_json(&mut client).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ack["current"], serde_json::json!(["assessment:A42"]));

    send_json(
        &mut client,
        serde_json::json!({"action":"subscribe","symbols":["aapl"]}),
    )
    .await;
    let ack = next_json(&mut client).await;
    assert_eq!(ack["channels"], serde_json::json!(["trade:AAPL"]), "{ack}");

    post_publish(
        server.address,
        Some(API_KEY),
        r#"{"channel":"trade:AAPL","data":{"p":189.5}}"#,
    )
    .await;
    let message = next_json(&mut client).await;
    assert_eq!(message["channel"], "trade:AAPL", "{message}");
    post_publish(
        server.address,
        Some(API_KEY),
        r#"{"channel":"assessment:A42","data":{"score":7}}"#,
    )
    .await;
    let message = next_json(&mut client).await;
    assert_eq!(message["channel"], "assessment:A42", "{message}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn channel_rules_from_config_forbid_other_roles() {
    let mut config = config();
    config.core.channel_rules = vec![ws_realtime::core::ChannelRule {
        pattern: "admin-*".to_owned(),
        access: ws_realtime::core::Access::Roles(vec!["admin".to_owned()]),
    }];
    let server = start(config).await;
    let mut user = connect(server.address, "alice", "").await;
    send_json(
        &mut user,
        serde_json::json!({"type":"subscribe","channels":["admin-alerts"],"id":5}),
    )
    .await;
    let error = next_json(&mut user).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "forbidden");
    assert_eq!(error["id"], 5);

    let query = format!("token={}", token("root", &["admin"]));
    let mut admin = try_connect(server.address, &query).await.unwrap();
    assert_eq!(next_json(&mut admin).await["type"], "connected");
    subscribe(&mut admin, &["admin-alerts"], 1).await;
    within(server.shutdown()).await.unwrap();
}
