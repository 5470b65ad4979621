//! Fuzz target 4: arbitrary source messages (channel, position, payload)
//! through frame encoding. Whatever a source delivers, the `message` frame a
//! client receives must be valid JSON that carries the payload faithfully:
//! JSON verbatim under `data`, other UTF-8 as a string, other bytes as
//! base64 under `b64data`.

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::Value;

use super::harness::{Harness, classify};
use super::scenario;
use crate::core::{CoreConfig, PayloadKind, Position, Publish};

/// One message as a source hands it over.
#[derive(Debug, Arbitrary)]
struct SourceMessage {
    channel: ChannelChoice,
    offset: Option<(i32, i64)>,
    payload: Vec<u8>,
}

/// Mostly valid channels so the frame is actually produced, sometimes any
/// string so channel validation is exercised too.
#[derive(Debug, Arbitrary)]
enum ChannelChoice {
    Known(u8),
    Any(String),
}

/// Fuzz target body. Input starting with `P` is readable (how the
/// hand-written seeds are kept): `P<channel>\n<partition:offset or ->\n<payload>`;
/// anything else is decoded with `arbitrary`.
pub fn source_payload(data: &[u8]) {
    let (channel, offset, payload) = match data.strip_prefix(b"P") {
        Some(readable) => {
            let mut parts = readable.splitn(3, |b| *b == b'\n');
            let channel = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let offset = std::str::from_utf8(parts.next().unwrap_or_default())
                .ok()
                .and_then(|pos| pos.split_once(':'))
                .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)));
            (channel, offset, parts.next().unwrap_or_default().to_vec())
        }
        None => {
            let mut input = Unstructured::new(data);
            let Ok(message) = SourceMessage::arbitrary(&mut input) else {
                return;
            };
            let channel = match message.channel {
                ChannelChoice::Known(index) => scenario::channel(index).to_owned(),
                ChannelChoice::Any(name) => name,
            };
            (channel, message.offset, message.payload)
        }
    };
    check_delivery(channel, offset, payload);
}

/// Publishes one message to a subscriber of its channel and checks the
/// frame it receives.
fn check_delivery(channel: String, offset: Option<(i32, i64)>, payload: Vec<u8>) {
    let mut harness = Harness::new(CoreConfig {
        client_buffer_bytes: 4 * 1024 * 1024,
        ..CoreConfig::default()
    });
    let mut open = scenario::open(0, 0, &[], None);
    open.channels = vec![channel.clone()];
    let conn = harness.open(open).expect("one connection is admitted");
    harness.flush(4);
    harness.take_received();
    let subscribed = harness.channels_of(conn).contains(&channel);

    let pos = match offset {
        Some((partition, offset)) => Position::Offset { partition, offset },
        None => Position::Assigned,
    };
    let outcome = harness.publish(Publish {
        channel: channel.clone(),
        pos,
        payload: Bytes::from(payload.clone()),
    });
    assert_eq!(outcome.delivered, usize::from(subscribed));
    harness.flush(4);

    let frames = harness.take_received();
    let messages: Vec<&Value> = frames
        .iter()
        .flat_map(|(_, frame)| match frame {
            Value::Array(batch) => batch.iter().collect(),
            single => vec![single],
        })
        .filter(|frame| frame["type"] == "message")
        .collect();
    assert_eq!(messages.len(), outcome.delivered, "message frames received");
    for frame in messages {
        check_message(frame, &channel, pos, &payload);
    }
    harness.finish();
}

/// The frame names the channel and position and carries the payload.
fn check_message(frame: &Value, channel: &str, pos: Position, payload: &[u8]) {
    assert_eq!(frame["channel"], channel, "channel of {frame}");
    let shown_pos = frame["pos"].as_str().expect("pos is a string");
    if let Position::Offset { partition, offset } = pos {
        assert_eq!(shown_pos, format!("{partition}:{offset}"));
    }
    match classify(payload) {
        PayloadKind::Json => {
            // Compared as values where serde_json can hold them, else as the
            // raw text the frame reader kept (the payload is embedded verbatim).
            let text = std::str::from_utf8(payload).expect("JSON is UTF-8");
            let expected = serde_json::from_str::<Value>(text)
                .unwrap_or_else(|_| Value::String(text.to_owned()));
            assert_eq!(frame["data"], expected, "data of {frame}");
        }
        PayloadKind::Text => {
            let text = std::str::from_utf8(payload).expect("classified as UTF-8");
            assert_eq!(frame["data"], text, "data of {frame}");
        }
        PayloadKind::Binary => {
            let encoded = frame["b64data"].as_str().expect("b64data is a string");
            let decoded = STANDARD.decode(encoded).expect("b64data is base64");
            assert_eq!(decoded, payload, "b64data of {frame}");
        }
    }
}
