//! permessage-deflate at fan-out: a message is compressed at most once,
//! however many subscribers negotiated deflate.
//!
//! Every connection agreed `server_no_context_takeover`, so a message's
//! compressed bytes do not depend on who receives it. The first subscriber
//! with deflate that a message frame is queued for pays for the compression;
//! the compressed frame (a second refcounted `Bytes` beside the plain one)
//! is kept, and every later subscriber of the same frame gets a clone.
//! Subscribers without deflate pay nothing, and no connection holds any
//! compressor state.

use bytes::Bytes;

use crate::proto::deflate::Deflater;
use crate::proto::deflate_offer::Deflate;
use crate::proto::ws_frame;

/// The core's one compressor and the last frame it compressed.
#[derive(Debug)]
pub(crate) struct Compression {
    /// Shared by every message; reset before each, so it carries nothing
    /// from one message to the next.
    deflater: Deflater,
    /// Messages with a shorter payload go uncompressed: below this, the
    /// deflate overhead eats the gain (`WS_COMPRESSION_MIN_BYTES`).
    min_bytes: usize,
    /// The plain frame compressed last and the frame to send instead (the
    /// plain one again when compression did not make it smaller). Holding
    /// a clone of the plain frame keeps its memory alive, so no other frame
    /// can ever sit at the same address: the address is a safe key.
    last: Option<(Bytes, Bytes)>,
    /// Bytes compression kept off the wire, summed over deliveries: plain
    /// frame length minus compressed frame length, per subscriber.
    saved_bytes: u64,
}

impl Compression {
    /// No frame compressed yet.
    pub(crate) fn new(min_bytes: usize) -> Compression {
        Compression {
            deflater: Deflater::default(),
            min_bytes,
            last: None,
            saved_bytes: 0,
        }
    }

    /// Bytes kept off the wire so far.
    pub(crate) fn saved_bytes(&self) -> u64 {
        self.saved_bytes
    }

    /// The frame a connection that agreed `deflate` gets instead of the
    /// message frame `plain`: the shared compressed frame, or `None` when
    /// `plain` itself goes (too short, too long for the client's window, or
    /// it does not shrink). Returning `None` rather than a clone of `plain`
    /// keeps a refcount change off the path of every such delivery.
    pub(crate) fn compressed_for(&mut self, deflate: Deflate, plain: &Bytes) -> Option<Bytes> {
        let payload_len = plain.len() - ws_frame::header_len(plain.len());
        if payload_len < self.min_bytes || payload_len > deflate.max_compressed_payload() {
            return None;
        }
        // The hot path: every subscriber after the first of a message, one
        // address comparison.
        let cached = match &self.last {
            Some((key, compressed))
                if key.as_ptr() == plain.as_ptr() && key.len() == plain.len() =>
            {
                compressed
            }
            _ => {
                let decoded = ws_frame::decode(plain).ok()?;
                if decoded.compressed {
                    return None;
                }
                let mut compressed = self.deflater.text_frame(decoded.payload);
                if compressed.len() >= plain.len() {
                    compressed = plain.clone();
                }
                &self.last.insert((plain.clone(), compressed)).1
            }
        };
        if cached.len() >= plain.len() {
            return None;
        }
        self.saved_bytes += (plain.len() - cached.len()) as u64;
        Some(cached.clone())
    }

    /// Lets go of the last frame, so a large message's memory is not held
    /// after its fan-out.
    pub(crate) fn forget_last(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::deflate::inflate;

    const FULL: Deflate = Deflate {
        server_max_window_bits: 15,
    };

    fn order_book() -> Bytes {
        let json = format!(
            r#"{{"type":"message","data":{{"bids":{}}}}}"#,
            "[101.25,400],".repeat(60)
        );
        ws_frame::encode(ws_frame::Opcode::Text, json.as_bytes())
    }

    #[test]
    fn the_same_frame_is_compressed_once_and_shared() {
        let mut compression = Compression::new(256);
        let plain = order_book();
        let a = compression.compressed_for(FULL, &plain).unwrap();
        let b = compression.compressed_for(FULL, &plain).unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr(), "one compressed allocation");
        assert!(a.len() < plain.len() / 3);
        let decoded = ws_frame::decode(&a).unwrap();
        assert!(decoded.compressed);
        let original = ws_frame::decode(&plain).unwrap().payload;
        assert_eq!(inflate(decoded.payload, 1 << 20).unwrap(), original);
        assert_eq!(
            compression.saved_bytes(),
            2 * (plain.len() - a.len()) as u64
        );
    }

    #[test]
    fn short_and_over_window_messages_stay_plain() {
        let mut compression = Compression::new(256);
        let short = ws_frame::encode(ws_frame::Opcode::Text, &[b'a'; 255]);
        assert_eq!(compression.compressed_for(FULL, &short), None);
        let small_window = Deflate {
            server_max_window_bits: 9,
        };
        let long = order_book();
        assert_eq!(compression.compressed_for(small_window, &long), None);
        assert_eq!(compression.saved_bytes(), 0);
    }

    #[test]
    fn incompressible_messages_stay_plain() {
        let mut compression = Compression::new(16);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..600)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let plain = ws_frame::encode(ws_frame::Opcode::Text, &noise);
        assert_eq!(compression.compressed_for(FULL, &plain), None);
        assert_eq!(compression.compressed_for(FULL, &plain), None, "cached");
    }
}
