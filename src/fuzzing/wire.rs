//! A strict reader of the WebSocket frames the core hands the shell, so the
//! fuzz targets can check what a real client would receive: every frame
//! complete, unmasked and final, text frames valid UTF-8 JSON, close frames
//! with a code the protocol documents.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

/// WebSocket opcodes the server may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

/// One decoded server frame.
#[derive(Debug, Clone)]
pub(crate) struct ServerFrame {
    pub(crate) opcode: Opcode,
    pub(crate) payload: Vec<u8>,
}

impl ServerFrame {
    /// The JSON of a text frame. Panics (a fuzz finding) when a text frame is
    /// not JSON: every server text frame is protocol v1 JSON.
    ///
    /// Validity is judged by `serde_json`'s grammar without a nesting limit.
    /// A value `serde_json::Value` cannot hold (nesting over 128, numbers
    /// beyond `f64`, lone surrogate escapes: all valid JSON) is returned as
    /// a string of its raw text in place of the envelope member holding it,
    /// so the envelope fields stay readable.
    pub(crate) fn json(&self) -> Option<Value> {
        if self.opcode != Opcode::Text {
            return None;
        }
        let text = std::str::from_utf8(&self.payload)
            .unwrap_or_else(|e| panic!("server text frame is not UTF-8 ({e}): {:?}", self.payload));
        if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
            panic!("server text frame is not JSON ({e}): {text}");
        }
        // Envelope members of a frame, or of each frame of a batch.
        let depth = if text.trim_start().starts_with('[') {
            2
        } else {
            1
        };
        Some(lossy_value(text, depth))
    }

    /// The close code of a close frame.
    pub(crate) fn close_code(&self) -> Option<u16> {
        if self.opcode != Opcode::Close || self.payload.len() < 2 {
            return None;
        }
        Some(u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// `text` (valid JSON) as a `Value`, with members `Value` cannot hold kept
/// as strings of their raw JSON, down to `depth` levels of arrays/objects.
pub(crate) fn lossy_value(text: &str, depth: usize) -> Value {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return value;
    }
    if depth > 0 {
        if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) {
            return items
                .iter()
                .map(|item| lossy_value(item.get(), depth - 1))
                .collect();
        }
        if let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(text) {
            return Value::Object(
                fields
                    .into_iter()
                    .map(|(key, raw)| (key, lossy_value(raw.get(), depth - 1)))
                    .collect(),
            );
        }
    }
    Value::String(text.to_owned())
}

/// Splits `bytes` (one `Bytes` of a `Transmit`) into frames, panicking on
/// anything a browser would reject: a short or overlong buffer, a masked
/// frame, reserved bits, a fragmented frame, an oversized control frame.
pub(crate) fn decode_frames(mut bytes: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    assert!(!bytes.is_empty(), "empty frame buffer in a Transmit");
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "truncated frame header: {bytes:?}");
        let first = bytes[0];
        let second = bytes[1];
        assert!(first & 0x80 != 0, "server frame without FIN");
        assert!(first & 0x70 == 0, "server frame with reserved bits set");
        assert!(second & 0x80 == 0, "server frame is masked");
        let opcode = match first & 0x0f {
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            other => panic!("server frame with opcode {other:#x}"),
        };
        let (len, header) = match second & 0x7f {
            126 => {
                assert!(bytes.len() >= 4, "truncated 16-bit length");
                let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
                assert!(len >= 126, "16-bit length {len} should use the short form");
                (len, 4)
            }
            127 => {
                assert!(bytes.len() >= 10, "truncated 64-bit length");
                let raw: [u8; 8] = bytes[2..10].try_into().expect("slice of 8");
                let len = u64::from_be_bytes(raw);
                assert!(
                    len > u16::MAX as u64,
                    "64-bit length {len} should be shorter"
                );
                (usize::try_from(len).expect("frame length fits memory"), 10)
            }
            short => (short as usize, 2),
        };
        assert!(
            bytes.len() >= header + len,
            "frame says {len} payload bytes, buffer has {}",
            bytes.len() - header
        );
        if matches!(opcode, Opcode::Close | Opcode::Ping | Opcode::Pong) {
            assert!(len <= 125, "control frame of {len} bytes");
        }
        let frame = ServerFrame {
            opcode,
            payload: bytes[header..header + len].to_vec(),
        };
        if opcode == Opcode::Close {
            check_close_payload(&frame.payload);
        }
        frames.push(frame);
        bytes = &bytes[header + len..];
    }
    frames
}

/// Close payloads: empty, or a documented code plus a UTF-8 reason.
fn check_close_payload(payload: &[u8]) {
    if payload.is_empty() {
        return;
    }
    assert!(payload.len() >= 2, "close payload of one byte");
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    assert!(
        matches!(code, 1000 | 1001 | 1002 | 1007 | 1008 | 1009 | 1011),
        "undocumented close code {code}"
    );
    assert!(
        std::str::from_utf8(&payload[2..]).is_ok(),
        "close reason is not UTF-8"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_extended_lengths() {
        let mut buf = vec![0x81, 2, b'{', b'}'];
        buf.extend([0x81, 126, 0, 200]);
        buf.extend(std::iter::repeat_n(b' ', 199));
        buf.push(b'1');
        let frames = decode_frames(&buf);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].payload.len(), 200);
        assert_eq!(frames[1].json(), Some(Value::from(1)));
    }

    #[test]
    #[should_panic(expected = "masked")]
    fn masked_frame_is_a_finding() {
        decode_frames(&[0x81, 0x80, 0, 0, 0, 0]);
    }

    #[test]
    #[should_panic(expected = "not JSON")]
    fn non_json_text_frame_is_a_finding() {
        decode_frames(&[0x81, 1, b'x'])[0].json();
    }

    #[test]
    #[should_panic(expected = "undocumented close code")]
    fn undocumented_close_code_is_a_finding() {
        decode_frames(&[0x88, 2, 0x03, 0xE7]);
    }
}
