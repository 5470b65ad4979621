//! A slow consumer is closed with 1008 while a fast subscriber on the same
//! channel receives every message.

mod server_support;

use bytes::Bytes;
use futures_util::StreamExt;
use server_support::*;
use tokio_tungstenite::tungstenite::Message;
use ws_realtime::core::Publish;

/// Messages published; big enough to overflow the kernel buffers of a client
/// that stops reading.
const MESSAGES: usize = 400;
const PAYLOAD_BYTES: usize = 32 * 1024;

#[tokio::test]
async fn slow_consumer_is_closed_with_1008_while_a_fast_one_gets_everything() {
    let mut config = config();
    config.core.client_buffer_frames = 8;
    let (server, sink) = start_with_sink(config).await;

    // The slow client: a tiny receive buffer, and it stops reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within(socket.connect(server.address)).await.unwrap();
    let url = format!(
        "ws://{}/ws?token={}&channels=lines",
        server.address,
        token("slow", &[])
    );
    let (mut slow, _) = within(tokio_tungstenite::client_async(
        url,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut slow).await["type"], "connected");
    assert_eq!(next_json(&mut slow).await["type"], "subscribed");

    let mut fast = connect(server.address, "fast", "&channels=lines").await;
    assert_eq!(next_json(&mut fast).await["type"], "subscribed");
    // Lockstep: the next message is published once the fast subscriber has
    // the previous one, so its queue never holds more than one message while
    // the slow client's queue overflows.
    let filler = "x".repeat(PAYLOAD_BYTES);
    let mut seqs = Vec::with_capacity(MESSAGES);
    for seq in 0..MESSAGES {
        let payload = format!(r#"{{"seq":{seq},"filler":"{filler}"}}"#);
        let publish = Publish {
            channel: "lines".to_owned(),
            pos: None,
            payload: Bytes::from(payload),
            key: None,
        };
        within(sink.publish(publish)).await.unwrap();
        loop {
            match within(fast.next()).await {
                Some(Ok(Message::Text(text))) => {
                    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if json["type"] == "message" {
                        seqs.push(json["data"]["seq"].as_u64().unwrap());
                        break;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the fast subscriber lost its connection: {other:?}"),
            }
        }
    }
    assert_eq!(seqs, (0..MESSAGES as u64).collect::<Vec<_>>());

    // Now the slow client reads: what was written before the close, then 1008.
    assert_eq!(close_code(&mut slow).await, Some(1008));
    let metrics = server.observers.metrics.encode();
    assert!(
        metrics.contains("websocket_slow_consumer_disconnects_total 1"),
        "{metrics}"
    );
    within(server.shutdown()).await.unwrap();
}

/// A burst (a Kafka fetch after a stall) larger than a client's queue is
/// written in several turns: a subscriber that reads keeps its connection
/// and gets every message, in order.
#[tokio::test]
async fn a_burst_larger_than_the_client_queue_reaches_a_reading_subscriber() {
    const BURST: u64 = 200;
    let mut config = config();
    config.core.client_buffer_frames = 16;
    let (server, sink) = start_with_sink(config).await;
    let mut client = connect(server.address, "reader", "&channels=lines").await;
    assert_eq!(next_json(&mut client).await["type"], "subscribed");

    // Queued in one go: the driver finds the whole burst waiting.
    for seq in 0..BURST {
        let publish = Publish {
            channel: "lines".to_owned(),
            pos: None,
            payload: Bytes::from(format!(r#"{{"seq":{seq}}}"#)),
            key: None,
        };
        within(sink.publish(publish)).await.unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < BURST as usize {
        let json = next_json(&mut client).await;
        assert_eq!(
            json["type"],
            "message",
            "got {json} after {} messages",
            seqs.len()
        );
        seqs.push(json["data"]["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (0..BURST).collect::<Vec<_>>());
    within(server.shutdown()).await.unwrap();
}
