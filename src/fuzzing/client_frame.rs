//! Fuzz target 1: arbitrary bytes as one client text frame, through
//! decoding and the core. Protocol v1 promises that an unknown or malformed
//! frame gets an `error` frame, never a crash and never silence, and that
//! the connection lives on — except text that is not UTF-8, which RFC 6455
//! §8.1 says fails the connection: it is closed with 1007.

use bytes::Bytes;
use serde_json::Value;

use super::harness::Harness;
use super::scenario;
use crate::core::{CoreConfig, Publish};
use crate::proto::codes::ErrorCode;

/// Every `code` an `error` frame may carry.
const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode::BadFrame,
    ErrorCode::UnknownType,
    ErrorCode::InvalidChannel,
    ErrorCode::Forbidden,
    ErrorCode::ChannelLimit,
    ErrorCode::RateLimited,
    ErrorCode::BinaryNotSupported,
    ErrorCode::BadPosition,
];

/// Fuzz target body: `data` is the payload of one text frame from an
/// authenticated client subscribed to `lines`.
pub fn client_frame(data: &[u8]) {
    let mut harness = Harness::new(CoreConfig {
        channel_rules: scenario::channel_rules(),
        ..CoreConfig::default()
    });
    let conn = harness
        .open(scenario::open(0, 0, &[0], None))
        .expect("the first connection is always admitted");
    harness.flush(4);
    harness.take_received();

    harness.text(conn, data);
    harness.flush(4);
    if std::str::from_utf8(data).is_err() {
        // The harness checks the close frame's code against its reason.
        assert!(!harness.is_open(conn), "text that is not UTF-8 was kept");
        harness.finish();
        return;
    }
    let replies: Vec<Value> = harness
        .take_received()
        .into_iter()
        .map(|(to, frame)| {
            assert_eq!(to, conn, "reply to another connection");
            frame
        })
        .collect();
    for reply in &replies {
        check_reply(reply);
    }
    if !is_client_pong(data) {
        assert!(
            !replies.is_empty(),
            "silence after {:?}",
            String::from_utf8_lossy(data)
        );
    }
    assert!(
        harness.is_open(conn),
        "one text frame closed the connection"
    );

    // The connection still works: what it holds now gets the next message.
    let subscribed = harness.channels_of(conn);
    let delivered = harness
        .publish(Publish {
            channel: "lines".to_owned(),
            pos: None,
            payload: Bytes::from_static(br#"{"price":1}"#),
            key: None,
        })
        .delivered;
    assert_eq!(delivered, usize::from(subscribed.contains("lines")));
    harness.finish();
}

/// A reply frame must be a documented frame; an `error` names a known code
/// and carries a message.
fn check_reply(reply: &Value) {
    if reply["type"] == "error" {
        let code = reply["code"].as_str().expect("error frame has a code");
        assert!(
            ERROR_CODES.iter().any(|known| known.as_str() == code),
            "unknown error code {code}"
        );
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error frame without a message: {reply}"
        );
    }
}

/// `{"type":"pong"}` (or `action`) is the one client frame that needs no
/// answer.
fn is_client_pong(data: &[u8]) -> bool {
    let Ok(Value::Object(frame)) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    let kind = frame.get("type").or_else(|| frame.get("action"));
    kind.and_then(Value::as_str) == Some("pong")
}
