//! RFC 6455 where it is mandatory, one test per rule, each naming its
//! section. Raw sockets and hand-built frames: a client library would
//! refuse to send most of these.
//!
//! | rule | section | the server |
//! |---|---|---|
//! | client frames are masked | §5.1 | closes 1002, then the TCP connection |
//! | RSV bits need a negotiated extension | §5.2 | closes 1002 |
//! | unknown opcodes | §5.2 | closes 1002 |
//! | 64-bit length has its top bit clear | §5.2 | closes 1002 |
//! | control frames ≤ 125 bytes, never fragmented | §5.5 | closes 1002 |
//! | a continuation needs a started message | §5.4 | closes 1002 |
//! | text is UTF-8 | §8.1 | closes 1007 |
//! | close payload: empty, or a sendable code (+ UTF-8 reason) | §5.5.1, §7.4 | closes 1002 |
//! | a valid close is echoed | §5.5.1 | closes 1000 |
//! | the opening handshake is HTTP/1.1 | §4.1 | 400 |
//! | `Sec-WebSocket-Key` is 16 bytes of base64 | §4.1 | 400 |
//! | a wrong `Sec-WebSocket-Version` is answered with the supported one | §4.4 | 400 + `Sec-WebSocket-Version: 13` |

mod server_support;

use std::net::SocketAddr;

use server_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ws_realtime::proto::client_frames::encode_masked;
use ws_realtime::proto::ws_frame::{self, Opcode};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// An upgraded raw connection, past the 101 and the `connected` frame.
async fn open(address: SocketAddr) -> TcpStream {
    let mut stream = within(TcpStream::connect(address)).await.unwrap();
    let head = raw_upgrade_head(address, &format!("token={}", token("rfc", &[])), "");
    within(stream.write_all(head.as_bytes())).await.unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        within(stream.read_exact(&mut byte)).await.unwrap();
        seen.push(byte[0]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    stream
}

/// What the server did after `bytes`: the close code it sent (skipping
/// other frames), and whether it then ended the TCP connection.
async fn close_after(address: SocketAddr, bytes: &[u8]) -> (Option<u16>, bool) {
    let mut stream = open(address).await;
    within(stream.write_all(bytes)).await.unwrap();
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    let code = loop {
        match ws_frame::decode(&input) {
            Ok(frame) => {
                let len = frame.len;
                if frame.opcode == Opcode::Close {
                    break frame.close_code_and_reason().map(|(code, _)| code);
                }
                input.drain(..len);
                continue;
            }
            Err(ws_frame::FrameError::Incomplete) => {}
            Err(other) => panic!("the server wrote a bad frame: {other}"),
        }
        match within(stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => return (None, true),
            Ok(n) => input.extend_from_slice(&chunk[..n]),
        }
    };
    // After the close frame the server ends the connection (bounded by
    // its close grace), whether or not the client answers.
    let ended = matches!(within(stream.read(&mut chunk)).await, Ok(0) | Err(_));
    (code, ended)
}

async fn assert_closes_with(bytes: &[u8], expected: u16) {
    let server = start(config()).await;
    let (code, ended) = close_after(server.address, bytes).await;
    assert_eq!(code, Some(expected), "close code after {bytes:02x?}");
    assert!(ended, "the connection ends after the close");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn s5_1_an_unmasked_client_frame_is_closed_with_1002() {
    assert_closes_with(&[0x81, 0x02, b'{', b'}'], 1002).await;
}

#[tokio::test]
async fn s5_2_reserved_bits_without_an_extension_are_closed_with_1002() {
    for rsv in [0x40u8, 0x20, 0x10] {
        let mut frame = encode_masked(true, 0x1, b"{}", MASK);
        frame[0] |= rsv;
        assert_closes_with(&frame, 1002).await;
    }
}

#[tokio::test]
async fn s5_2_an_unknown_opcode_is_closed_with_1002() {
    for opcode in [0x3u8, 0x7, 0xB, 0xF] {
        assert_closes_with(&encode_masked(true, opcode, b"", MASK), 1002).await;
    }
}

#[tokio::test]
async fn s5_2_a_64_bit_length_with_the_top_bit_set_is_closed_with_1002() {
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
    frame.extend_from_slice(&MASK);
    assert_closes_with(&frame, 1002).await;
}

#[tokio::test]
async fn s5_5_a_control_frame_over_125_bytes_is_closed_with_1002() {
    assert_closes_with(&encode_masked(true, 0x9, &[0; 126], MASK), 1002).await;
}

#[tokio::test]
async fn s5_5_a_fragmented_control_frame_is_closed_with_1002() {
    assert_closes_with(&encode_masked(false, 0x9, b"p", MASK), 1002).await;
}

#[tokio::test]
async fn s5_4_a_continuation_without_a_started_message_is_closed_with_1002() {
    assert_closes_with(&encode_masked(true, 0x0, b"x", MASK), 1002).await;
}

#[tokio::test]
async fn s8_1_a_text_message_that_is_not_utf8_is_closed_with_1007() {
    assert_closes_with(
        &encode_masked(true, 0x1, b"{\"type\":\"\xff\"}", MASK),
        1007,
    )
    .await;
    // Split across fragments: checked on the whole message.
    let mut split = encode_masked(false, 0x1, b"{\"a\":\"\xe2\x82", MASK);
    split.extend(encode_masked(true, 0x0, b"\"}", MASK));
    assert_closes_with(&split, 1007).await;
}

#[tokio::test]
async fn s7_4_a_close_with_a_code_no_endpoint_may_send_is_answered_with_1002() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
        let frame = encode_masked(true, 0x8, &code.to_be_bytes(), MASK);
        assert_closes_with(&frame, 1002).await;
    }
}

#[tokio::test]
async fn s5_5_1_a_close_with_a_1_byte_payload_is_answered_with_1002() {
    assert_closes_with(&encode_masked(true, 0x8, &[0x03], MASK), 1002).await;
}

#[tokio::test]
async fn s5_5_1_a_valid_close_is_echoed_with_1000() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    assert_closes_with(&encode_masked(true, 0x8, &payload, MASK), 1000).await;
    assert_closes_with(&encode_masked(true, 0x8, b"", MASK), 1000).await;
    let app = encode_masked(true, 0x8, &4000u16.to_be_bytes(), MASK);
    assert_closes_with(&app, 1000).await;
}

#[tokio::test]
async fn protocol_violations_are_counted_with_their_own_close_reason() {
    let server = start(config()).await;
    let _ = close_after(server.address, &[0x81, 0x00]).await;
    let _ = close_after(server.address, &encode_masked(true, 0x1, b"\xc3\x28", MASK)).await;
    // The driver records the close after the socket is gone.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = server.observers.metrics.encode();
        if metrics.contains(r#"websocket_connections_closed_total{reason="protocol_error"} 1"#)
            && metrics.contains(r#"websocket_connections_closed_total{reason="invalid_utf8"} 1"#)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains(r#"websocket_connections_closed_total{reason="protocol_error"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"websocket_connections_closed_total{reason="invalid_utf8"} 1"#),
        "{metrics}"
    );
    within(server.shutdown()).await.unwrap();
}

/// The status line and headers of a raw handshake.
async fn handshake(address: SocketAddr, request: String) -> String {
    let answer = raw_exchange(address, request.into_bytes()).await;
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn s4_1_an_http_1_0_upgrade_is_refused() {
    let server = start(config()).await;
    let head = raw_upgrade_head(server.address, &format!("token={}", token("rfc", &[])), "")
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    let answer = handshake(server.address, head).await;
    assert!(
        answer.starts_with("HTTP/1.0 400") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn s4_1_a_malformed_sec_websocket_key_is_refused() {
    let server = start(config()).await;
    for key in [
        "not-base64!!",
        "c2hvcnQ=",
        "dGhlIHNhbXBsZSBub25jZSB0b28gbG9uZw==",
    ] {
        let head = raw_upgrade_head(server.address, &format!("token={}", token("rfc", &[])), "")
            .replace("dGhlIHNhbXBsZSBub25jZQ==", key);
        let answer = handshake(server.address, head).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "key {key}: {answer}");
    }
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn s4_4_a_wrong_version_gets_400_naming_version_13() {
    let server = start(config()).await;
    let head = raw_upgrade_head(server.address, &format!("token={}", token("rfc", &[])), "")
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let answer = handshake(server.address, head).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nsec-websocket-version: 13"),
        "{answer}"
    );
    within(server.shutdown()).await.unwrap();
}
