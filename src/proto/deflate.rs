//! Raw DEFLATE for permessage-deflate (RFC 7692 §7.2): compressing a server
//! message into a finished frame with RSV1 set, and inflating a client's
//! message with its output bounded.
//!
//! Both run without context takeover (see [`super::deflate_offer`]): every
//! message starts from an empty window, which is what lets one compressed
//! frame serve every subscriber and lets an idle connection hold no inflate
//! state at all.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::ws_frame::{self, MAX_HEADER_LEN, Opcode};

/// The empty stored block a sync flush ends with; RFC 7692 §7.2.1 has the
/// sender strip it and §7.2.2 has the receiver put it back.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compression level: 6 (zlib's default). Measured on the dev feed's order
/// books (benches/core.rs), it costs little more than level 1 per message,
/// and the message is compressed once for all its subscribers.
const LEVEL: u32 = 6;

/// A reusable compressor. Its tables (a few hundred KiB) are allocated once
/// per core, not per message and never per connection; it is reset before
/// every message, so no message depends on another.
pub struct Deflater {
    /// The raw-deflate stream, reset between messages.
    compress: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            compress: Compress::new(Compression::new(LEVEL), false),
        }
    }
}

impl Deflater {
    /// The compressed form of the text `payload`, as a complete frame with
    /// RSV1 set (RFC 7692 §6).
    pub fn text_frame(&mut self, payload: &[u8]) -> Bytes {
        let mut buf = Vec::with_capacity(MAX_HEADER_LEN + payload.len() / 2 + 64);
        buf.resize(MAX_HEADER_LEN, 0);
        self.compress_into(payload, &mut buf);
        ws_frame::finish_reserved_compressed(buf, Opcode::Text)
    }

    /// Appends the raw deflate of `payload` to `out`, sync-flushed and
    /// without the 4-byte tail.
    pub fn compress_into(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.compress.reset();
        loop {
            let consumed = self.consumed();
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            self.compress
                .compress_vec(&payload[consumed..], out, FlushCompress::Sync)
                .expect("raw deflate of any input into a growing Vec cannot fail");
            // The flush is complete once all input is in and the output
            // stopped short of the room it had.
            if self.consumed() == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
    }

    fn consumed(&self) -> usize {
        usize::try_from(self.compress.total_in()).expect("input length fits usize")
    }
}

/// Why a client's compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the message limit (a deflate bomb or just too big):
    /// close 1009. Inflating stopped at the limit.
    #[error("inflated message is over the size limit")]
    TooBig,
    /// Not valid DEFLATE data: close 1007.
    #[error("compressed data is corrupt")]
    Corrupt,
}

/// Inflates one message (its frames' payloads joined, tail stripped as the
/// client sent it) from an empty window. Never produces, nor allocates room
/// for, more than `max_len + 1` bytes of output, whatever the input claims.
pub fn inflate(data: &[u8], max_len: usize) -> Result<Vec<u8>, InflateError> {
    let mut inflater = Decompress::new(false);
    let limit = max_len.saturating_add(1);
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).max(64).min(limit));
    for input in [data, &SYNC_TAIL[..]] {
        let mut offset = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(InflateError::TooBig);
                }
                let room = out.capacity().max(256).min(limit - out.len());
                out.reserve_exact(room);
            }
            let (in_before, out_before) = (inflater.total_in(), out.len());
            let status = inflater
                .decompress_vec(&input[offset..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            offset += usize::try_from(inflater.total_in() - in_before).expect("fits usize");
            if out.len() > max_len {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                // A final block ends the message; anything after it (the
                // tail we appended) is ignored, as §7.2.2 allows.
                return Ok(out);
            }
            let stalled = inflater.total_in() == in_before && out.len() == out_before;
            if offset == input.len() && out.len() < out.capacity() {
                break;
            }
            if stalled && out.len() < out.capacity() {
                return Err(InflateError::Corrupt);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Deflater::default().compress_into(payload, &mut out);
        out
    }

    #[test]
    fn compressed_text_inflates_back_and_is_smaller() {
        let text = br#"{"bids":[[100.5,3],[100.4,7]],"asks":[[100.6,2],[100.7,9]]}"#.repeat(20);
        let deflated = compress(&text);
        assert!(deflated.len() < text.len() / 4, "{}", deflated.len());
        assert!(!deflated.ends_with(&SYNC_TAIL));
        assert_eq!(inflate(&deflated, text.len()).unwrap(), text);
    }

    #[test]
    fn each_message_starts_from_an_empty_window() {
        let mut deflater = Deflater::default();
        let first = b"the same words again and again and again".repeat(4);
        let mut a = Vec::new();
        deflater.compress_into(&first, &mut a);
        let mut b = Vec::new();
        deflater.compress_into(&first, &mut b);
        // Identical input, identical bytes: nothing refers to the first one.
        assert_eq!(a, b);
        assert_eq!(inflate(&b, 1 << 20).unwrap(), first);
    }

    #[test]
    fn the_frame_has_rsv1_and_the_compressed_payload() {
        let payload = b"abcabcabcabcabcabc".repeat(30);
        let frame = Deflater::default().text_frame(&payload);
        assert_eq!(frame[0], 0x80 | 0x40 | 0x1);
        let decoded = ws_frame::decode(&frame).unwrap();
        assert!(decoded.compressed);
        assert_eq!(inflate(decoded.payload, payload.len()).unwrap(), payload);
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit() {
        let bomb = compress(&vec![b'a'; 50 << 20]);
        assert!(bomb.len() < 100 << 10);
        assert_eq!(inflate(&bomb, 64 << 10), Err(InflateError::TooBig));
        let exact = compress(&[b'z'; 1000]);
        assert_eq!(inflate(&exact, 1000).unwrap().len(), 1000);
        assert_eq!(inflate(&exact, 999), Err(InflateError::TooBig));
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        // Block type 3 is reserved.
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 1024),
            Err(InflateError::Corrupt)
        );
        for seed in 0u8..=255 {
            let junk: Vec<u8> = (0..64)
                .map(|i| seed.wrapping_mul(31).wrapping_add(i))
                .collect();
            let _ = inflate(&junk, 1024);
        }
    }

    #[test]
    fn an_empty_message_inflates_to_nothing() {
        assert_eq!(inflate(&compress(b""), 10).unwrap(), b"");
        assert_eq!(inflate(&[0x00], 10).unwrap(), b"");
    }
}
