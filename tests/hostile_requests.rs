//! Telling a reading client from a slow one: the answers to a client's own
//! requests have their own bound, so a burst of requests in one write is
//! answered in full while the client reads; a flood is closed as what it
//! is, "rate limit exceeded", not as a slow consumer.

mod server_support;

use std::net::SocketAddr;

use server_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ws_realtime::proto::client_frames::encode_masked;
use ws_realtime::proto::ws_frame::{self, Opcode};

const MASK: [u8; 4] = [1, 2, 3, 4];

/// A raw upgraded connection and the bytes read past the 101.
async fn open(address: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut stream = within(TcpStream::connect(address)).await.unwrap();
    let head = raw_upgrade_head(address, &format!("token={}", token("burst", &[])), "");
    within(stream.write_all(head.as_bytes())).await.unwrap();
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = within(stream.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "closed during the handshake");
        input.extend_from_slice(&chunk[..n]);
        if let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
    };
    assert!(input.starts_with(b"HTTP/1.1 101"));
    (stream, input.split_off(end + 4))
}

/// What a server frame was, for these tests.
#[derive(Debug, PartialEq)]
enum Seen {
    Json(serde_json::Value),
    Close(u16, String),
}

/// Reads frames until `done` says so or the server closes.
async fn read_until(
    stream: &mut TcpStream,
    mut input: Vec<u8>,
    mut done: impl FnMut(&[Seen]) -> bool,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while let Ok(frame) = ws_frame::decode(&input) {
            let len = frame.len;
            match frame.opcode {
                Opcode::Text => {
                    seen.push(Seen::Json(serde_json::from_slice(frame.payload).unwrap()))
                }
                Opcode::Close => {
                    let (code, reason) = frame.close_code_and_reason().unwrap();
                    seen.push(Seen::Close(code, reason.to_owned()));
                    return seen;
                }
                _ => {}
            }
            input.drain(..len);
        }
        if done(&seen) {
            return seen;
        }
        match within(stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => input.extend_from_slice(&chunk[..n]),
        }
    }
}

fn pings(count: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for id in 0..count {
        let ping = format!(r#"{{"type":"ping","id":{id}}}"#);
        wire.extend(encode_masked(true, 0x1, ping.as_bytes(), MASK));
    }
    wire
}

#[tokio::test]
async fn seventeen_pings_in_one_write_with_a_16_frame_queue_all_get_pongs() {
    let mut config = config();
    config.core.client_buffer_frames = 16;
    let server = start(config).await;
    let (mut stream, early) = open(server.address).await;
    within(stream.write_all(&pings(17))).await.unwrap();
    let pongs = |seen: &[Seen]| {
        seen.iter()
            .filter(|s| matches!(s, Seen::Json(j) if j["type"] == "pong"))
            .count()
    };
    let seen = read_until(&mut stream, early, |seen| pongs(seen) == 17).await;
    assert_eq!(pongs(&seen), 17, "{seen:?}");
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Close(..))),
        "a reading client was closed: {seen:?}"
    );
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_flood_of_10000_frames_is_closed_as_rate_limit_exceeded() {
    // The issue's setting: a queue smaller than the rate burst.
    let mut config = config();
    config.core.client_buffer_frames = 16;
    let server = start(config).await;
    let (stream, early) = open(server.address).await;
    let flood = pings(10_000);
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&flood).await;
        writer
    });
    // Read while writing, as a prompt client does.
    let mut input = early;
    let mut chunk = [0u8; 65536];
    let close = loop {
        match ws_frame::decode(&input) {
            Ok(frame) => {
                let len = frame.len;
                if frame.opcode == Opcode::Close {
                    let (code, reason) = frame.close_code_and_reason().unwrap();
                    break Some((code, reason.to_owned()));
                }
                input.drain(..len);
                continue;
            }
            Err(ws_frame::FrameError::Incomplete) => {}
            Err(other) => panic!("bad server frame: {other}"),
        }
        match within(reader.read(&mut chunk)).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => input.extend_from_slice(&chunk[..n]),
        }
    };
    writing.abort();
    assert_eq!(close, Some((1008, "rate limit exceeded".to_owned())));
    let metrics = server.observers.metrics.encode();
    assert!(
        metrics.contains("websocket_slow_consumer_disconnects_total 0"),
        "{metrics}"
    );
    drop(reader);
    within(server.shutdown()).await.unwrap();
}
