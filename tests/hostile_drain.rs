//! While the server drains, a new upgrade is answered 503 `shutting_down`
//! (as documented), not refused at TCP level, and probes still get answers.

mod server_support;

use std::time::Duration;

use bytes::Bytes;
use server_support::*;
use ws_realtime::core::Publish;

#[tokio::test]
async fn a_new_upgrade_during_the_drain_gets_503_shutting_down() {
    let mut config = config();
    // A drain that lasts: one subscriber that never reads holds its close
    // frame behind full socket buffers until the close grace (3 s) passes.
    config.socket_send_buffer = 4096;
    let (server, sink) = start_with_sink(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within(socket.connect(server.address)).await.unwrap();
    let url = format!(
        "ws://{}/ws?token={}&channels=lines",
        server.address,
        token("stuck", &[])
    );
    let (mut stuck, _) = within(tokio_tungstenite::client_async(
        url,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut stuck).await["type"], "connected");
    assert_eq!(next_json(&mut stuck).await["type"], "subscribed");
    let filler = "f".repeat(2048);
    for seq in 0..100 {
        let publish = Publish {
            channel: "lines".to_owned(),
            pos: None,
            key: None,
            payload: Bytes::from(format!(r#"{{"seq":{seq},"f":"{filler}"}}"#)),
        };
        within(sink.publish(publish)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.trigger.trigger();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.task.is_finished(), "the drain is still under way");
    let (status, body) =
        refusal(try_connect(server.address, &format!("token={}", token("late", &[]))).await);
    assert_eq!(status, 503);
    assert_eq!(body["error"], "shutting_down");
    let (status, _) = http_request(server.address, "GET", "/ready", &[], b"").await;
    assert_eq!(status, 503, "not ready while draining");
    let (status, _) = http_request(server.address, "GET", "/health", &[], b"").await;
    assert_eq!(status, 200, "alive while draining");

    drop(stuck);
    within(server.task).await.unwrap().unwrap();
}
