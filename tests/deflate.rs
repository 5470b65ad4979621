//! permessage-deflate against a running server, with a raw client that
//! sends the offer, reads RSV1 and inflates (no Rust WebSocket client at
//! hand negotiates deflate): negotiation, one fan-out serving compressed
//! and plain subscribers, bombs and corrupt data refused cleanly.

mod server_support;

use std::net::SocketAddr;

use server_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ws_realtime::proto::client_frames::{encode_masked, encode_masked_compressed};
use ws_realtime::proto::deflate::{Deflater, inflate};
use ws_realtime::proto::deflate_offer::negotiate;
use ws_realtime::proto::ws_frame::{self, Opcode};
use ws_realtime::source::PublishSink;

const MASK: [u8; 4] = [7, 1, 9, 3];

/// A client speaking WebSocket by hand, so it can offer deflate.
struct RawClient {
    stream: TcpStream,
    /// Bytes read but not yet taken as frames.
    buffer: Vec<u8>,
    /// The response's `Sec-WebSocket-Extensions`, if any.
    extensions: Option<String>,
}

/// A frame as the client saw it: opcode, RSV1, payload (inflated if RSV1).
#[derive(Debug)]
struct Seen {
    opcode: Opcode,
    compressed: bool,
    wire_len: usize,
    payload: Vec<u8>,
}

impl RawClient {
    async fn connect(address: SocketAddr, query: &str, offer: Option<&str>) -> RawClient {
        let mut stream = within(TcpStream::connect(address)).await.unwrap();
        let mut request = format!(
            "GET /ws?{query} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        if let Some(offer) = offer {
            request.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = Vec::new();
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = within(stream.read(&mut chunk)).await.unwrap();
            assert!(n > 0, "the server answered the upgrade");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        buffer.drain(..head_end);
        RawClient {
            stream,
            buffer,
            extensions,
        }
    }

    async fn next(&mut self) -> Option<Seen> {
        loop {
            if let Ok(frame) = ws_frame::decode(&self.buffer) {
                let payload = if frame.compressed {
                    inflate(frame.payload, 1 << 24).expect("the server's deflate inflates")
                } else {
                    frame.payload.to_vec()
                };
                let seen = Seen {
                    opcode: frame.opcode,
                    compressed: frame.compressed,
                    wire_len: frame.len,
                    payload,
                };
                let len = frame.len;
                self.buffer.drain(..len);
                return Some(seen);
            }
            let mut chunk = [0u8; 65536];
            let n = within(self.stream.read(&mut chunk)).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    async fn next_text(&mut self) -> (bool, usize, serde_json::Value) {
        let seen = self.next().await.expect("a frame");
        assert_eq!(seen.opcode, Opcode::Text, "{seen:?}");
        let json = serde_json::from_slice(&seen.payload).unwrap();
        (seen.compressed, seen.wire_len, json)
    }

    async fn close_code(&mut self) -> Option<u16> {
        while let Some(seen) = self.next().await {
            if seen.opcode == Opcode::Close {
                return Some(u16::from_be_bytes([seen.payload[0], seen.payload[1]]));
            }
        }
        None
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }
}

fn query(sub: &str) -> String {
    format!("token={}&channels=book", token(sub, &[]))
}

fn order_book(levels: usize) -> String {
    let side: Vec<_> = (0..levels)
        .map(|i| serde_json::json!([100.0 + i as f64 * 0.5, 10 + i]))
        .collect();
    serde_json::json!({"symbol": "ETH-USD", "bids": side, "asks": side}).to_string()
}

async fn publish(sink: &PublishSink, payload: &str) {
    sink.publish(ws_realtime::core::Publish {
        channel: "book".to_owned(),
        pos: None,
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        key: None,
    })
    .await
    .unwrap();
}

const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

#[tokio::test]
async fn one_fanout_serves_compressed_and_plain_subscribers_the_same_messages() {
    let (server, sink) = start_with_sink(config()).await;
    let mut deflating = RawClient::connect(server.address, &query("d"), Some(BROWSER_OFFER)).await;
    assert_eq!(
        deflating.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let mut plain_raw = RawClient::connect(server.address, &query("p"), None).await;
    assert_eq!(plain_raw.extensions, None);
    let mut tungstenite = connect(server.address, "t", "&channels=book").await;
    for client in [&mut deflating, &mut plain_raw] {
        let (compressed, _, connected) = client.next_text().await;
        assert!(!compressed, "small frames stay plain");
        assert_eq!(connected["type"], "connected");
    }
    // Acks of the connect-time subscription.
    for client in [&mut deflating, &mut plain_raw] {
        assert_eq!(client.next_text().await.2["type"], "subscribed");
    }
    assert_eq!(next_json(&mut tungstenite).await["type"], "subscribed");

    let big = order_book(40);
    publish(&sink, &big).await;
    publish(&sink, r#"{"tick":1}"#).await;

    let (big_compressed, big_wire, big_json) = deflating.next_text().await;
    let (plain_compressed, plain_wire, plain_json) = plain_raw.next_text().await;
    assert!(big_compressed && !plain_compressed);
    assert!(big_wire * 3 < plain_wire, "{big_wire} vs {plain_wire}");
    assert_eq!(big_json, plain_json);
    assert_eq!(
        big_json["data"],
        serde_json::from_str::<serde_json::Value>(&big).unwrap()
    );
    assert_eq!(next_json(&mut tungstenite).await, plain_json);

    let (small_compressed, _, small_json) = deflating.next_text().await;
    assert!(!small_compressed, "under WS_COMPRESSION_MIN_BYTES");
    assert_eq!(small_json["data"]["tick"], 1);
    assert_eq!(plain_raw.next_text().await.2, small_json);

    // A compressed client request is inflated and answered.
    let mut subscribe = Vec::new();
    let request = br#"{"type":"subscribe","channels":["other"],"id":5}"#;
    Deflater::default().compress_into(request, &mut subscribe);
    deflating
        .send(&encode_masked_compressed(true, 0x1, &subscribe, MASK))
        .await;
    let (_, _, ack) = deflating.next_text().await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_u64()),
        (Some("subscribed"), Some(5))
    );

    let metrics = server.observers.metrics.encode();
    assert!(
        metrics.contains("websocket_connections_deflate 1"),
        "{metrics}"
    );
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let (sent, uncompressed) = (
        counter("websocket_bytes_sent_total"),
        counter("websocket_bytes_uncompressed_total"),
    );
    assert!(
        uncompressed >= sent + (plain_wire - big_wire) as u64,
        "{sent} {uncompressed}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn compression_off_declines_every_offer() {
    let mut config = config();
    config.compression = false;
    let (server, sink) = start_with_sink(config).await;
    let mut client = RawClient::connect(server.address, &query("d"), Some(BROWSER_OFFER)).await;
    assert_eq!(client.extensions, None);
    client.next_text().await;
    client.next_text().await;
    publish(&sink, &order_book(40)).await;
    assert!(!client.next_text().await.0);
    // Without the negotiation, RSV1 is a protocol violation: the reader
    // stops trusting the stream.
    client
        .send(&encode_masked_compressed(true, 0x1, &[0x01, 0x00], MASK))
        .await;
    assert_ne!(client.close_code().await, Some(1000));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_deflate_bomb_is_closed_1009_and_corrupt_data_1007_while_others_go_on() {
    let (server, sink) = start_with_sink(config()).await;
    let mut bystander = RawClient::connect(server.address, &query("b"), Some(BROWSER_OFFER)).await;
    bystander.next_text().await;
    bystander.next_text().await;

    // 100 MiB of spaces in about 100 KiB: far over WS_MAX_MESSAGE_BYTES
    // (64 KiB) once inflated; the wire frame itself is within it.
    let mut bomb = Vec::new();
    Deflater::default().compress_into(&vec![b' '; 60 << 20], &mut bomb);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let mut bomber = RawClient::connect(server.address, &query("x"), Some(BROWSER_OFFER)).await;
    bomber
        .send(&encode_masked_compressed(true, 0x1, &bomb, MASK))
        .await;
    assert_eq!(bomber.close_code().await, Some(1009));

    let mut corrupt = RawClient::connect(server.address, &query("y"), Some(BROWSER_OFFER)).await;
    corrupt
        .send(&encode_masked_compressed(
            true,
            0x1,
            &[0xff, 0xff, 0xff, 0xff],
            MASK,
        ))
        .await;
    corrupt.send(&encode_masked(true, 0x1, b"{}", MASK)).await;
    assert_eq!(corrupt.close_code().await, Some(1007));

    publish(&sink, &order_book(40)).await;
    let (compressed, _, message) = bystander.next_text().await;
    assert!(compressed);
    assert_eq!(message["type"], "message");
    let metrics = server.observers.metrics.encode();
    assert!(
        metrics.contains("websocket_connections_closed_total{reason=\"bad_compressed_data\"} 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

/// The negotiated `Sec-WebSocket-Extensions` for the offers real clients
/// make, and for offers that must be declined (`-` = no header, plain).
#[test]
fn negotiated_extension_header_for_common_offers() {
    let offers = [
        (
            "browser (Chrome, Firefox, Safari)",
            "permessage-deflate; client_max_window_bits",
        ),
        (
            "Python websockets",
            "permessage-deflate; client_max_window_bits",
        ),
        ("Node ws", "permessage-deflate; client_max_window_bits"),
        ("bare", "permessage-deflate"),
        (
            "server window 15",
            "permessage-deflate; server_max_window_bits=15",
        ),
        (
            "server window 10",
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits",
        ),
        (
            "both no-context",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "bad then good",
            "permessage-deflate; server_max_window_bits=7, permessage-deflate",
        ),
        ("unknown parameter", "permessage-deflate; foo=bar"),
        ("other extension", "x-webkit-deflate-frame"),
        ("garbage", "\";;,=\u{7f}"),
    ];
    let table: String = offers
        .iter()
        .map(|(who, offer)| {
            let answer = negotiate([offer.as_bytes()])
                .map_or_else(|| "-".to_owned(), |agreed| agreed.response_header());
            format!("{who}\n  offer:  {offer}\n  answer: {answer}\n")
        })
        .collect();
    insta::assert_snapshot!(table);
}
