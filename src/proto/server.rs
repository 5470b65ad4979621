//! Encoding of the JSON text frames the server sends (protocol v1), straight
//! into finished WebSocket frames.
//!
//! Field order is fixed (`type` first) so snapshots and clients see stable
//! bytes. Strings go through `serde_json`'s escaper; everything else is
//! written by hand to keep the hot path (`message`) to one allocation.

use base64::Engine as _;
use bytes::Bytes;
use serde::de::IgnoredAny;

use super::client::RequestId;
use super::codes::{ErrorCode, PayloadKind};
use super::position::Position;
use super::ws_frame::{self, MAX_HEADER_LEN, Opcode};

/// A JSON text being built behind room reserved for its frame header.
struct FrameWriter {
    buf: Vec<u8>,
}

impl FrameWriter {
    fn with_capacity(payload_capacity: usize) -> FrameWriter {
        let mut buf = Vec::with_capacity(MAX_HEADER_LEN + payload_capacity);
        buf.resize(MAX_HEADER_LEN, 0);
        FrameWriter { buf }
    }

    fn raw(&mut self, text: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(text);
        self
    }

    fn string(&mut self, text: &str) -> &mut Self {
        serde_json::to_writer(&mut self.buf, text).expect("writing a str into a Vec cannot fail");
        self
    }

    fn number(&mut self, n: u64) -> &mut Self {
        self.raw(itoa::Buffer::new().format(n).as_bytes())
    }

    fn id_field(&mut self, id: Option<&RequestId>) -> &mut Self {
        if let Some(id) = id {
            self.raw(b",\"id\":");
            serde_json::to_writer(&mut self.buf, &id.to_value())
                .expect("writing a value into a Vec cannot fail");
        }
        self
    }

    fn string_array<'a>(&mut self, items: impl IntoIterator<Item = &'a str>) -> &mut Self {
        self.raw(b"[");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.string(item);
        }
        self.raw(b"]")
    }

    fn finish(self) -> (Bytes, usize) {
        ws_frame::finish_reserved(self.buf, Opcode::Text)
    }

    fn frame(self) -> Bytes {
        self.finish().0
    }
}

/// `{"type":"connected",...}`, the first frame of every connection.
pub fn connected(connection_id: &str, user_id: &str, server_id: &str, unix_ms: u64) -> Bytes {
    let mut w = FrameWriter::with_capacity(128);
    w.raw(b"{\"type\":\"connected\",\"connectionId\":")
        .string(connection_id)
        .raw(b",\"userId\":")
        .string(user_id)
        .raw(b",\"serverId\":")
        .string(server_id)
        .raw(b",\"timestamp\":")
        .string(&iso8601_utc_millis(unix_ms))
        .raw(b"}");
    w.frame()
}

/// `{"type":"subscribed",...}`: `channels` as requested, `current` the whole
/// set afterwards, `positions` each requested channel's cursor, and
/// `recovered` for each channel asked with `since` (omitted when none was).
pub fn subscribed<'a>(
    id: Option<&RequestId>,
    channels: &[String],
    current: impl IntoIterator<Item = &'a str>,
    positions: &[(String, String)],
    recovered: &[(String, bool)],
    max_rates: &[(String, u32)],
) -> Bytes {
    let mut w = ack_fields("subscribed", id, channels, current);
    w.raw(b",\"positions\":{");
    for (i, (channel, cursor)) in positions.iter().enumerate() {
        if i > 0 {
            w.raw(b",");
        }
        w.string(channel).raw(b":").string(cursor);
    }
    w.raw(b"}");
    if !recovered.is_empty() {
        w.raw(b",\"recovered\":{");
        for (i, (channel, ok)) in recovered.iter().enumerate() {
            if i > 0 {
                w.raw(b",");
            }
            w.string(channel)
                .raw(if *ok { b":true" } else { b":false" });
        }
        w.raw(b"}");
    }
    if !max_rates.is_empty() {
        max_rate_field(&mut w, max_rates);
    }
    w.raw(b"}");
    w.frame()
}

/// `,"maxRate":{"lines":4,…}`: the effective rate per limited channel.
fn max_rate_field(w: &mut FrameWriter, max_rates: &[(String, u32)]) {
    w.raw(b",\"maxRate\":{");
    for (i, (channel, rate)) in max_rates.iter().enumerate() {
        if i > 0 {
            w.raw(b",");
        }
        w.string(channel).raw(b":").raw(rate.to_string().as_bytes());
    }
    w.raw(b"}");
}

/// `{"type":"unsubscribed",...}`.
pub fn unsubscribed<'a>(
    id: Option<&RequestId>,
    channels: &[String],
    current: impl IntoIterator<Item = &'a str>,
) -> Bytes {
    ack("unsubscribed", id, channels, current)
}

fn ack<'a>(
    kind: &str,
    id: Option<&RequestId>,
    channels: &[String],
    current: impl IntoIterator<Item = &'a str>,
) -> Bytes {
    let mut w = ack_fields(kind, id, channels, current);
    w.raw(b"}");
    w.frame()
}

/// An ack up to (not including) its closing brace.
fn ack_fields<'a>(
    kind: &str,
    id: Option<&RequestId>,
    channels: &[String],
    current: impl IntoIterator<Item = &'a str>,
) -> FrameWriter {
    let mut w = FrameWriter::with_capacity(64 + 48 * channels.len());
    w.raw(b"{\"type\":")
        .string(kind)
        .id_field(id)
        .raw(b",\"channels\":")
        .string_array(channels.iter().map(String::as_str))
        .raw(b",\"current\":")
        .string_array(current);
    w
}

/// `{"type":"error",...}`.
pub fn error(id: Option<&RequestId>, code: ErrorCode, message: &str) -> Bytes {
    let mut w = FrameWriter::with_capacity(64 + message.len());
    w.raw(b"{\"type\":\"error\"")
        .id_field(id)
        .raw(b",\"code\":")
        .string(code.as_str())
        .raw(b",\"message\":")
        .string(message)
        .raw(b"}");
    w.frame()
}

/// `{"type":"pong",...}` answering a JSON `ping`.
pub fn pong(id: Option<&RequestId>, unix_ms: u64) -> Bytes {
    let mut w = FrameWriter::with_capacity(48);
    w.raw(b"{\"type\":\"pong\"")
        .id_field(id)
        .raw(b",\"timestamp\":")
        .number(unix_ms)
        .raw(b"}");
    w.frame()
}

/// `{"type":"ping","timestamp":…}`, the optional app-level heartbeat.
pub fn app_ping(unix_ms: u64) -> Bytes {
    let mut w = FrameWriter::with_capacity(40);
    w.raw(b"{\"type\":\"ping\",\"timestamp\":")
        .number(unix_ms)
        .raw(b"}");
    w.frame()
}

/// A `message` frame encoded once for all subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    /// The complete WebSocket frame.
    pub frame: Bytes,
    /// Length of its header: `frame[header_len..]` is the JSON object, which
    /// batching reuses.
    pub header_len: usize,
    /// How the payload was embedded.
    pub kind: PayloadKind,
}

impl EncodedMessage {
    /// The JSON object without the frame header.
    pub fn json(&self) -> Bytes {
        self.frame.slice(self.header_len..)
    }
}

/// How a payload will be embedded: JSON verbatim, UTF-8 as a JSON string,
/// anything else as base64.
pub fn classify_payload(payload: &[u8]) -> PayloadKind {
    match std::str::from_utf8(payload) {
        Ok(text) if serde_json::from_str::<IgnoredAny>(text).is_ok() => PayloadKind::Json,
        Ok(_) => PayloadKind::Text,
        Err(_) => PayloadKind::Binary,
    }
}

/// `{"type":"message","channel":…,"pos":…,"data":…}` (or `b64data`).
///
/// `pos` is written as the wire spells it (see [`super::cursor`]): a Kafka
/// offset as `topic:partition:offset`, a sequence as `~<epoch>:<seq>` with
/// `epoch` this process's epoch (which a Kafka offset does not use).
pub fn message(channel: &str, pos: &Position, epoch: &str, payload: &[u8]) -> EncodedMessage {
    let kind = classify_payload(payload);
    let payload_room = match kind {
        PayloadKind::Json => payload.len(),
        PayloadKind::Text => payload.len() + payload.len() / 8 + 2,
        PayloadKind::Binary => payload.len().div_ceil(3) * 4,
    };
    let mut w = FrameWriter::with_capacity(88 + channel.len() + payload_room);
    w.raw(b"{\"type\":\"message\",\"channel\":")
        .string(channel)
        .raw(b",\"pos\":\"");
    match pos {
        // Topic names and epochs need no JSON escaping: Kafka allows only
        // `A-Z a-z 0-9 . _ -` and epochs are hex.
        Position::Offset {
            topic,
            partition,
            offset,
        } => {
            w.raw(topic.as_bytes())
                .raw(b":")
                .raw(itoa::Buffer::new().format(*partition).as_bytes())
                .raw(b":")
                .raw(itoa::Buffer::new().format(*offset).as_bytes());
        }
        Position::Sequence(seq) => {
            w.raw(b"~").raw(epoch.as_bytes()).raw(b":").number(*seq);
        }
    }
    match kind {
        PayloadKind::Json => {
            w.raw(b"\",\"data\":").raw(payload);
        }
        PayloadKind::Text => {
            let text = std::str::from_utf8(payload).expect("classified as UTF-8 just above");
            w.raw(b"\",\"data\":").string(text);
        }
        PayloadKind::Binary => {
            w.raw(b"\",\"b64data\":\"");
            let mut encoded = String::with_capacity(payload_room);
            base64::engine::general_purpose::STANDARD.encode_string(payload, &mut encoded);
            w.raw(encoded.as_bytes()).raw(b"\"");
        }
    }
    w.raw(b"}");
    let (frame, header_len) = w.finish();
    EncodedMessage {
        frame,
        header_len,
        kind,
    }
}

/// A stored `message` object (`json`, without frame header) sent again as a
/// snapshot: the same fields plus `"snapshot":true`.
pub fn snapshot_message(json: &[u8]) -> Bytes {
    let body = json.strip_suffix(b"}").unwrap_or(json);
    let mut w = FrameWriter::with_capacity(body.len() + 18);
    w.raw(body).raw(b",\"snapshot\":true}");
    w.frame()
}

/// One text frame holding a JSON array of message objects (batching).
pub fn batch<'a>(objects: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut w = FrameWriter::with_capacity(1024);
    w.raw(b"[");
    for (i, object) in objects.into_iter().enumerate() {
        if i > 0 {
            w.raw(b",");
        }
        w.raw(object);
    }
    w.raw(b"]");
    w.frame()
}

/// `2026-01-14T10:00:00.000Z` for a Unix time in milliseconds.
pub fn iso8601_utc_millis(unix_ms: u64) -> String {
    let millis = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let (hour, minute, second) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (year, month, day) = civil_from_days(secs / 86_400);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's
/// `civil_from_days`, for non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

/// `{"type":"refresh_required","expiresAt":…}`: the connection's token
/// expires at `expires_at_unix_ms`; send a `refresh` before then.
pub fn refresh_required(expires_at_unix_ms: u64) -> Bytes {
    let mut w = FrameWriter::with_capacity(56);
    w.raw(b"{\"type\":\"refresh_required\",\"expiresAt\":")
        .number(expires_at_unix_ms)
        .raw(b"}");
    w.frame()
}

/// `{"type":"refreshed","id":…,"expiresAt":…,"maxRate":{…}}`: the new token
/// is in use; `expiresAt` is omitted when it has no `exp`, and `maxRate`
/// (every limited channel's rate) appears only when the new token's
/// `maxRate` claim changed a subscription's rate.
pub fn refreshed(
    id: Option<&RequestId>,
    expires_at_unix_ms: Option<u64>,
    max_rates: Option<&[(String, u32)]>,
) -> Bytes {
    let mut w = FrameWriter::with_capacity(64);
    w.raw(b"{\"type\":\"refreshed\"").id_field(id);
    if let Some(at) = expires_at_unix_ms {
        w.raw(b",\"expiresAt\":").number(at);
    }
    if let Some(rates) = max_rates {
        max_rate_field(&mut w, rates);
    }
    w.raw(b"}");
    w.frame()
}

/// `{"type":"unsubscribed","channels":…,"current":…,"reason":…}`: channels
/// the server removed on its own (`reason` `forbidden`: a refreshed token
/// no longer allows them).
pub fn unsubscribed_by_server<'a>(
    channels: &[String],
    current: impl IntoIterator<Item = &'a str>,
    reason: &str,
) -> Bytes {
    let mut w = FrameWriter::with_capacity(80 + 16 * channels.len());
    w.raw(b"{\"type\":\"unsubscribed\",\"channels\":")
        .string_array(channels.iter().map(String::as_str))
        .raw(b",\"current\":")
        .string_array(current)
        .raw(b",\"reason\":")
        .string(reason)
        .raw(b"}");
    w.frame()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(frame: &Bytes) -> serde_json::Value {
        let decoded = ws_frame::decode(frame).expect("server frame decodes");
        assert_eq!(decoded.opcode, Opcode::Text);
        serde_json::from_slice(decoded.payload).expect("server frames are JSON")
    }

    #[test]
    fn timestamps_are_iso8601_utc_with_millis() {
        assert_eq!(iso8601_utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso8601_utc_millis(1_705_238_400_123),
            "2024-01-14T13:20:00.123Z"
        );
        assert_eq!(
            iso8601_utc_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            iso8601_utc_millis(1_798_761_599_999),
            "2026-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn json_payload_is_embedded_verbatim() {
        let m = message(
            "lines",
            &Position::Offset {
                topic: "lines".into(),
                partition: 0,
                offset: 1234,
            },
            "unused",
            br#"{"px": 1.50}"#,
        );
        assert_eq!(m.kind, PayloadKind::Json);
        let decoded = ws_frame::decode(&m.frame).expect("decodes");
        assert_eq!(
            decoded.payload,
            br#"{"type":"message","channel":"lines","pos":"lines:0:1234","data":{"px": 1.50}}"#
        );
        assert_eq!(&m.json()[..], decoded.payload);
    }

    #[test]
    fn text_payload_becomes_a_json_string_and_bytes_go_base64() {
        let text = message("lines", &Position::Sequence(17), "9f3a", b"hello \"world\"");
        assert_eq!(text.kind, PayloadKind::Text);
        assert_eq!(json_of(&text.frame)["data"], "hello \"world\"");
        assert_eq!(json_of(&text.frame)["pos"], "~9f3a:17");
        let binary = message("lines", &Position::Sequence(1), "9f3a", &[0xff, 0x00, 0x01]);
        assert_eq!(binary.kind, PayloadKind::Binary);
        assert_eq!(json_of(&binary.frame)["b64data"], "/wAB");
    }

    #[test]
    fn acks_echo_string_ids() {
        let frame = subscribed(
            Some(&RequestId::Text("a".into())),
            &["x".into()],
            ["w", "x"],
            &[("x".into(), "~ab:0".into())],
            &[("x".into(), true)],
            &[("x".into(), 4)],
        );
        assert_eq!(
            json_of(&frame),
            serde_json::json!({"type":"subscribed","id":"a","channels":["x"],"current":["w","x"],
                "positions":{"x":"~ab:0"},"recovered":{"x":true},"maxRate":{"x":4}})
        );
    }

    #[test]
    fn a_snapshot_message_is_the_stored_object_marked() {
        let m = message("lines", &Position::Sequence(3), "ab", b"{}");
        let snap = snapshot_message(&m.json());
        assert_eq!(
            json_of(&snap),
            serde_json::json!({"type":"message","channel":"lines","pos":"~ab:3","data":{},"snapshot":true})
        );
    }
}
