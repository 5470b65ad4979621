//! Decoding of the JSON text frames a client sends (protocol v1):
//! `subscribe`, `unsubscribe`, `ping` and `pong`, with the aliases the older
//! gateways' clients use (`action` for `type`, `symbols` for `channels`).
//!
//! Every way a frame can be wrong is a [`DecodeError`] that carries the
//! request `id` when one could be read, so the `error` answer can echo it.

use serde_json::{Map, Value};

use super::codes::ErrorCode;
use super::cursor::{self, Cursor, CursorError};

/// Largest `history` a subscribe may ask for; what is sent is further
/// bounded by what the server keeps.
pub const MAX_HISTORY_REQUEST: u64 = 100_000;

/// A request `id`, echoed in the answer exactly as the client gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    /// A JSON number (`"id": 3`).
    Number(serde_json::Number),
    /// A JSON string (`"id": "sub-1"`).
    Text(String),
}

impl RequestId {
    /// The id as a JSON value, for encoding.
    pub fn to_value(&self) -> Value {
        match self {
            RequestId::Number(n) => Value::Number(n.clone()),
            RequestId::Text(s) => Value::String(s.clone()),
        }
    }
}

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Add channels (all or nothing).
    Subscribe {
        /// Echoed in the ack.
        id: Option<RequestId>,
        /// Channels as named, `symbols` already mapped to `trade:SYMBOL`; may
        /// hold duplicates.
        channels: Vec<String>,
        /// Stream state asked for with the channels.
        options: SubscribeOptions,
    },
    /// Remove channels.
    Unsubscribe {
        /// Echoed in the ack.
        id: Option<RequestId>,
        /// Channels as named; may hold duplicates.
        channels: Vec<String>,
    },
    /// An application-level ping: answered with `pong`.
    Ping {
        /// Echoed in the pong.
        id: Option<RequestId>,
    },
    /// An answer to the server's app-level ping: activity only.
    Pong,
    /// A fresh token for the same user, before the current one expires.
    Refresh {
        /// Echoed in `refreshed` or the `error`.
        id: Option<RequestId>,
        /// The new JWT (not yet verified).
        token: String,
    },
}

/// The stream-state parts of a `subscribe` (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// `since`: per channel, the cursor to recover from.
    pub since: Vec<(String, Cursor)>,
    /// `snapshot: true`: the latest message per key first.
    pub snapshot: bool,
    /// `history: N`: the last N messages first.
    pub history: Option<usize>,
}

/// What was wrong with a client frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The text frame is not UTF-8.
    #[error("Text frames must be UTF-8 encoded JSON.")]
    NotUtf8,
    /// Not parseable JSON.
    #[error(
        "The frame is not valid JSON; send an object such as {{\"type\":\"subscribe\",\"channels\":[\"lines\"]}}."
    )]
    NotJson,
    /// JSON, but not an object.
    #[error("The frame must be a JSON object with a \"type\" field.")]
    NotObject,
    /// No string `type` (or `action`).
    #[error(
        "The frame has no \"type\" field; use one of subscribe, unsubscribe, ping, pong, refresh."
    )]
    MissingType,
    /// A `type` the server does not know.
    #[error("Unknown frame type \"{0}\"; use one of subscribe, unsubscribe, ping, pong, refresh.")]
    UnknownType(String),
    /// `id` is neither a number nor a string.
    #[error("The \"id\" field must be a number or a string.")]
    BadId,
    /// A subscribe/unsubscribe without `channels` or `symbols`.
    #[error("A {0} frame needs a \"channels\" array (or \"symbols\").")]
    MissingChannels(&'static str),
    /// `channels`/`symbols` is neither a string nor an array of strings.
    #[error("\"{0}\" must be an array of strings.")]
    ChannelsNotStrings(&'static str),
    /// An empty list.
    #[error("A {0} frame must name at least one channel.")]
    NoChannels(&'static str),
    /// `since` is not an object of cursor strings.
    #[error("\"since\" must be an object mapping channel names to cursor strings.")]
    BadSince,
    /// `since` names a channel the frame does not subscribe.
    #[error("\"since\" names channel \"{0}\", which this subscribe does not ask for.")]
    SinceForOtherChannel(String),
    /// A malformed cursor (code `bad_position`).
    #[error("The cursor for channel \"{channel}\" {error}.")]
    BadPosition {
        /// The channel whose cursor it is.
        channel: String,
        /// What is wrong with it.
        error: CursorError,
    },
    /// `snapshot` is not a boolean.
    #[error("\"snapshot\" must be true or false.")]
    BadSnapshot,
    /// `history` is not a whole number in range.
    #[error("\"history\" must be a whole number from 1 to {MAX_HISTORY_REQUEST}.")]
    BadHistory,
    /// Both `snapshot` and `history`.
    #[error("Ask for either \"snapshot\" or \"history\", not both.")]
    SnapshotAndHistory,
    /// A `refresh` without a non-empty string `token`.
    #[error("A refresh frame needs a \"token\": the new JWT as a string.")]
    MissingToken,
}

/// A client frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// The request id, when it could be read.
    pub id: Option<RequestId>,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// The `code` of the `error` frame that answers it.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            DecodeErrorKind::UnknownType(_) => ErrorCode::UnknownType,
            DecodeErrorKind::BadPosition { .. } => ErrorCode::BadPosition,
            _ => ErrorCode::BadFrame,
        }
    }
}

/// Decodes one text frame.
pub fn decode(payload: &[u8]) -> Result<ClientFrame, DecodeError> {
    let no_id = |kind| DecodeError { id: None, kind };
    let text = std::str::from_utf8(payload).map_err(|_| no_id(DecodeErrorKind::NotUtf8))?;
    let value: Value = serde_json::from_str(text).map_err(|_| no_id(DecodeErrorKind::NotJson))?;
    let Value::Object(object) = value else {
        return Err(no_id(DecodeErrorKind::NotObject));
    };
    let id = match object.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(RequestId::Number(n.clone())),
        Some(Value::String(s)) => Some(RequestId::Text(s.clone())),
        Some(_) => return Err(no_id(DecodeErrorKind::BadId)),
    };
    let with_id = |kind| DecodeError {
        id: id.clone(),
        kind,
    };
    let kind = match object.get("type").or_else(|| object.get("action")) {
        Some(Value::String(kind)) => kind.as_str(),
        _ => return Err(with_id(DecodeErrorKind::MissingType)),
    };
    match kind {
        "subscribe" => {
            let channels = channels_of(&object, "subscribe").map_err(with_id)?;
            let options = options_of(&object, &channels).map_err(with_id)?;
            Ok(ClientFrame::Subscribe {
                id,
                channels,
                options,
            })
        }
        "unsubscribe" => {
            let channels = channels_of(&object, "unsubscribe").map_err(with_id)?;
            Ok(ClientFrame::Unsubscribe { id, channels })
        }
        "ping" => Ok(ClientFrame::Ping { id }),
        "pong" => Ok(ClientFrame::Pong),
        "refresh" => match object.get("token") {
            Some(Value::String(token)) if !token.is_empty() => Ok(ClientFrame::Refresh {
                id,
                token: token.clone(),
            }),
            _ => Err(with_id(DecodeErrorKind::MissingToken)),
        },
        other => {
            let shown: String = other.chars().take(64).collect();
            Err(with_id(DecodeErrorKind::UnknownType(shown)))
        }
    }
}

/// `channels` (or a single `channel`) as named, then `symbols` as
/// `trade:SYMBOL`.
fn channels_of(
    object: &Map<String, Value>,
    frame: &'static str,
) -> Result<Vec<String>, DecodeErrorKind> {
    let mut channels = Vec::new();
    let mut named = false;
    match object.get("channels") {
        Some(value) => {
            named = true;
            channels.extend(strings_of(value, "channels")?);
        }
        None => {
            if let Some(value) = object.get("channel") {
                named = true;
                let Value::String(channel) = value else {
                    return Err(DecodeErrorKind::ChannelsNotStrings("channel"));
                };
                channels.push(channel.clone());
            }
        }
    }
    if let Some(value) = object.get("symbols") {
        named = true;
        for symbol in strings_of(value, "symbols")? {
            channels.push(format!("trade:{}", symbol.to_uppercase()));
        }
    }
    if !named {
        return Err(DecodeErrorKind::MissingChannels(frame));
    }
    if channels.is_empty() {
        return Err(DecodeErrorKind::NoChannels(frame));
    }
    Ok(channels)
}

/// `since`, `snapshot` and `history`.
fn options_of(
    object: &Map<String, Value>,
    channels: &[String],
) -> Result<SubscribeOptions, DecodeErrorKind> {
    let mut options = SubscribeOptions::default();
    match object.get("since") {
        None | Some(Value::Null) => {}
        Some(Value::Object(since)) => {
            for (channel, value) in since {
                let Value::String(text) = value else {
                    return Err(DecodeErrorKind::BadSince);
                };
                if !channels.contains(channel) {
                    let shown = channel.chars().take(140).collect();
                    return Err(DecodeErrorKind::SinceForOtherChannel(shown));
                }
                let cursor = cursor::parse(text).map_err(|error| DecodeErrorKind::BadPosition {
                    channel: channel.clone(),
                    error,
                })?;
                options.since.push((channel.clone(), cursor));
            }
        }
        Some(_) => return Err(DecodeErrorKind::BadSince),
    }
    match object.get("snapshot") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(snapshot)) => options.snapshot = *snapshot,
        Some(_) => return Err(DecodeErrorKind::BadSnapshot),
    }
    match object.get("history") {
        None | Some(Value::Null) => {}
        Some(value) => {
            let n = value
                .as_u64()
                .filter(|n| (1..=MAX_HISTORY_REQUEST).contains(n))
                .ok_or(DecodeErrorKind::BadHistory)?;
            options.history = Some(n as usize);
        }
    }
    if options.snapshot && options.history.is_some() {
        return Err(DecodeErrorKind::SnapshotAndHistory);
    }
    Ok(options)
}

/// An array of strings, or a lone string (older clients send `"channels":"lines"`).
fn strings_of(value: &Value, field: &'static str) -> Result<Vec<String>, DecodeErrorKind> {
    let items = match value {
        Value::Array(items) => items,
        Value::String(single) => return Ok(vec![single.clone()]),
        _ => return Err(DecodeErrorKind::ChannelsNotStrings(field)),
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            _ => Err(DecodeErrorKind::ChannelsNotStrings(field)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribe_channels(frame: &str) -> Vec<String> {
        match decode(frame.as_bytes()) {
            Ok(ClientFrame::Subscribe { channels, .. }) => channels,
            other => panic!("expected subscribe, got {other:?}"),
        }
    }

    fn subscribe_options(frame: &str) -> SubscribeOptions {
        match decode(frame.as_bytes()) {
            Ok(ClientFrame::Subscribe { options, .. }) => options,
            other => panic!("expected subscribe, got {other:?}"),
        }
    }

    #[test]
    fn subscribe_with_numeric_id_decodes() {
        let frame = decode(br#"{"type":"subscribe","channels":["lines","analytics"],"id":1}"#);
        assert_eq!(
            frame,
            Ok(ClientFrame::Subscribe {
                id: Some(RequestId::Number(1.into())),
                channels: vec!["lines".into(), "analytics".into()],
                options: SubscribeOptions::default(),
            })
        );
    }

    #[test]
    fn since_snapshot_and_history_decode() {
        let options = subscribe_options(
            r#"{"type":"subscribe","channels":["lines"],"since":{"lines":"lines:0:5,~ab:2"},"snapshot":true}"#,
        );
        assert_eq!(options.since.len(), 1);
        assert_eq!(options.since[0].1.to_string(), "lines:0:5,~ab:2");
        assert!(options.snapshot);
        let options =
            subscribe_options(r#"{"type":"subscribe","channels":["lines"],"history":10}"#);
        assert_eq!(options.history, Some(10));
    }

    #[test]
    fn a_malformed_cursor_is_a_bad_position_naming_the_channel() {
        let err =
            decode(br#"{"type":"subscribe","channels":["lines"],"since":{"lines":"17"},"id":4}"#)
                .expect_err("bad cursor");
        assert_eq!(err.code(), ErrorCode::BadPosition);
        assert_eq!(err.id, Some(RequestId::Number(4.into())));
        assert!(err.to_string().contains("\"lines\""), "{err}");
    }

    #[test]
    fn bad_stream_state_options_are_bad_frames() {
        for frame in [
            r#"{"type":"subscribe","channels":["a"],"since":"a:0:1"}"#,
            r#"{"type":"subscribe","channels":["a"],"since":{"a":1}}"#,
            r#"{"type":"subscribe","channels":["a"],"since":{"b":""}}"#,
            r#"{"type":"subscribe","channels":["a"],"snapshot":1}"#,
            r#"{"type":"subscribe","channels":["a"],"history":0}"#,
            r#"{"type":"subscribe","channels":["a"],"history":-3}"#,
            r#"{"type":"subscribe","channels":["a"],"history":5,"snapshot":true}"#,
        ] {
            let err = decode(frame.as_bytes()).expect_err(frame);
            assert_eq!(err.code(), ErrorCode::BadFrame, "{frame}");
        }
    }

    #[test]
    fn action_is_accepted_for_type_and_string_ids_are_kept() {
        let frame = decode(br#"{"action":"unsubscribe","channels":["lines"],"id":"u-1"}"#);
        assert_eq!(
            frame,
            Ok(ClientFrame::Unsubscribe {
                id: Some(RequestId::Text("u-1".into())),
                channels: vec!["lines".into()]
            })
        );
    }

    #[test]
    fn symbols_become_upper_cased_trade_channels() {
        assert_eq!(
            subscribe_channels(r#"{"action":"subscribe","symbols":["aapl","Msft"]}"#),
            ["trade:AAPL", "trade:MSFT"]
        );
    }

    #[test]
    fn unknown_type_keeps_the_id_for_the_error() {
        let err = decode(br#"{"type":"hello","id":7}"#).expect_err("unknown type");
        assert_eq!(err.code(), ErrorCode::UnknownType);
        assert_eq!(err.id, Some(RequestId::Number(7.into())));
    }

    #[test]
    fn garbage_is_a_bad_frame() {
        for frame in [
            &b"not json"[..],
            b"[1,2]",
            b"{}",
            b"{\"type\":3}",
            b"\xff\xfe",
            b"{\"type\":\"subscribe\"}",
            b"{\"type\":\"subscribe\",\"channels\":[1]}",
            b"{\"type\":\"subscribe\",\"channels\":[]}",
        ] {
            let err = decode(frame).expect_err("garbage");
            assert_eq!(
                err.code(),
                ErrorCode::BadFrame,
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    #[test]
    fn a_lone_string_counts_as_one_channel() {
        assert_eq!(
            subscribe_channels(r#"{"type":"subscribe","channels":"lines"}"#),
            ["lines"]
        );
        assert_eq!(
            subscribe_channels(r#"{"type":"subscribe","symbols":"aapl"}"#),
            ["trade:AAPL"]
        );
        // Documented: one name, never split on commas.
        assert_eq!(
            subscribe_channels(r#"{"type":"subscribe","channels":"a,b"}"#),
            ["a,b"]
        );
    }

    #[test]
    fn ping_and_pong_decode() {
        assert_eq!(
            decode(br#"{"type":"ping","id":3}"#),
            Ok(ClientFrame::Ping {
                id: Some(RequestId::Number(3.into()))
            })
        );
        assert_eq!(decode(br#"{"type":"pong"}"#), Ok(ClientFrame::Pong));
    }

    #[test]
    fn refresh_carries_its_token_and_id() {
        assert_eq!(
            decode(br#"{"type":"refresh","token":"a.b.c","id":9}"#),
            Ok(ClientFrame::Refresh {
                id: Some(RequestId::Number(9.into())),
                token: "a.b.c".into(),
            })
        );
    }

    #[test]
    fn refresh_without_a_string_token_is_a_bad_frame_keeping_the_id() {
        for frame in [
            &br#"{"type":"refresh","id":4}"#[..],
            br#"{"type":"refresh","token":"","id":4}"#,
            br#"{"type":"refresh","token":42,"id":4}"#,
        ] {
            let err = decode(frame).expect_err("no token");
            assert_eq!(err.code(), ErrorCode::BadFrame);
            assert_eq!(err.id, Some(RequestId::Number(4.into())));
        }
    }
}
