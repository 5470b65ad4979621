//! Fuzz target 4: arbitrary source messages (topic, key, position, payload,
//! and a routing template) through Kafka routing and frame encoding.
//! Routing must always yield a valid channel name, and the `message` frame a
//! subscriber receives must be valid JSON that carries the payload
//! faithfully: JSON verbatim under `data`, other UTF-8 as a string, other
//! bytes as base64 under `b64data`.
//!
//! Kafka headers are not part of the input: routing does not read them.

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::Value;

use super::harness::{Harness, classify};
use super::scenario;
use crate::core::{CoreConfig, Publish};
use crate::proto::channel;
use crate::proto::codes::PayloadKind;
use crate::proto::position::Position;
use crate::source::kafka::{Route, Router, Template};

/// Topics the routes below know, plus ones they do not.
const TOPICS: &[&str] = &[
    "lines",
    "trade.AAPL",
    "trade.",
    "assessments",
    "keyed",
    "nested",
    "custom",
    "bad topic!",
    "",
];

/// One message as Kafka hands it to the source.
#[derive(Debug, Arbitrary)]
struct SourceMessage {
    topic: TopicChoice,
    key: Option<Vec<u8>>,
    /// Template of an extra route for topic `custom`, used when it parses.
    template: String,
    offset: Option<(i32, i64)>,
    payload: Vec<u8>,
}

/// Mostly topics with routes, sometimes any string; `Direct` skips routing
/// and publishes on the string as it is, so the core's own channel check is
/// exercised too.
#[derive(Debug, Arbitrary)]
enum TopicChoice {
    Known(u8),
    Any(String),
    Direct(String),
}

/// Fuzz target body. Input starting with `P` is readable (how the
/// hand-written seeds are kept):
/// `P<topic>\n<key, empty for none>\n<partition:offset or ->\n<payload>`;
/// anything else is decoded with `arbitrary`.
pub fn source_payload(data: &[u8]) {
    let message = match data.strip_prefix(b"P") {
        Some(readable) => {
            let mut parts = readable.splitn(4, |b| *b == b'\n');
            let mut next = || parts.next().unwrap_or_default();
            let topic = String::from_utf8_lossy(next()).into_owned();
            let key = Some(next().to_vec()).filter(|key| !key.is_empty());
            let offset = std::str::from_utf8(next())
                .ok()
                .and_then(|pos| pos.split_once(':'))
                .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)));
            SourceMessage {
                topic: TopicChoice::Any(topic),
                key,
                template: "custom:{key}".to_owned(),
                offset,
                payload: next().to_vec(),
            }
        }
        None => {
            let mut input = Unstructured::new(data);
            let Ok(message) = SourceMessage::arbitrary(&mut input) else {
                return;
            };
            message
        }
    };
    let channel = match &message.topic {
        TopicChoice::Direct(channel) => channel.clone(),
        TopicChoice::Known(index) => route(&message, TOPICS[usize::from(*index) % TOPICS.len()]),
        TopicChoice::Any(topic) => route(&message, topic),
    };
    check_delivery(channel, message.offset, message.payload);
}

/// Routes the message with a router like an operator would configure, and
/// checks the channel is one the core accepts.
fn route(message: &SourceMessage, topic: &str) -> String {
    let template = |raw: &str| Template::parse(raw).expect("fixed templates parse");
    let mut routes = vec![
        Route::new("lines", template("{topic}")),
        Route::new("^trade\\..+", template("trade:{symbol}")),
        Route::new("assessments", template("assessment:{assessmentId}")),
        Route::new("keyed", template("{topic}:{key}")),
        Route::new("nested", template("n:{a.b.0}")),
    ];
    if let Ok(custom) = Template::parse(&message.template) {
        routes.push(Route::new("custom", custom));
    }
    let routes = routes
        .into_iter()
        .map(|route| route.expect("fixed topic patterns compile"))
        .collect();
    let router = Router::new(routes, template("{topic}"));
    let routed = router.route(topic, message.key.as_deref(), &message.payload);
    assert!(
        channel::validate(&routed.channel).is_ok(),
        "routing {topic:?} gave invalid channel {:?}",
        routed.channel
    );
    routed.channel
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

    let pos = offset.map(|(partition, offset)| Position::Offset {
        topic: "t".to_owned(),
        partition,
        offset,
    });
    let outcome = harness.publish(Publish {
        channel: channel.clone(),
        pos: pos.clone(),
        payload: Bytes::from(payload.clone()),
        key: None,
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
        check_message(frame, &channel, &pos, &payload);
    }
    harness.finish();
}

/// The frame names the channel and position and carries the payload.
fn check_message(frame: &Value, channel: &str, pos: &Option<Position>, payload: &[u8]) {
    assert_eq!(frame["channel"], channel, "channel of {frame}");
    let shown_pos = frame["pos"].as_str().expect("pos is a string");
    match pos {
        Some(Position::Offset {
            topic,
            partition,
            offset,
        }) => assert_eq!(shown_pos, format!("{topic}:{partition}:{offset}")),
        _ => assert!(shown_pos.starts_with("~0:"), "{shown_pos}"),
    }
    match classify(payload) {
        PayloadKind::Json => {
            // Compared as values where serde_json can hold them, else as the
            // raw text the frame reader kept (the payload is embedded verbatim).
            let text = std::str::from_utf8(payload).expect("JSON is UTF-8");
            // (The reader's raw text has no surrounding JSON whitespace.)
            let expected = serde_json::from_str::<Value>(text).unwrap_or_else(|_| {
                Value::String(text.trim_matches([' ', '\t', '\n', '\r']).to_owned())
            });
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
