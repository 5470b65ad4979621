//! Fuzz target 5: arbitrary bytes as what a client writes on its socket,
//! through the shell's frame reader. Whatever arrives, and however the
//! kernel splits it into reads, the reader must not panic, must give the
//! same frames for every split, and must never hold more than one frame's
//! worth of bytes plus the read in hand (an idle socket holds nothing).
//! With permessage-deflate negotiated (the first byte's top bit), compressed
//! messages are inflated and must still respect the limit.

use bytes::BytesMut;

use crate::proto::client_frames::{FrameReader, Inbound};

/// The message limit the target reads under: small, so oversized frames
/// are common.
const MAX_MESSAGE: usize = 256;

/// Longest client frame header.
const MAX_HEADER: usize = 14;

/// Fuzz target body: the first byte picks the read size and (top bit)
/// whether deflate was negotiated, the rest is the byte stream.
pub fn client_wire(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let deflate = split & 0x80 != 0;
    let whole = read_in_chunks(stream, stream.len().max(1), deflate);
    let chunk = 1 + usize::from(split % 23);
    let pieces = read_in_chunks(stream, chunk, deflate);
    assert_eq!(
        whole, pieces,
        "the frames depend on how the bytes were split ({chunk}-byte reads)"
    );
}

/// What the reader makes of `stream` arriving `chunk` bytes per read, as
/// the shell feeds it (nothing more once the stream has failed).
fn read_in_chunks(stream: &[u8], chunk: usize, deflate: bool) -> Vec<Inbound> {
    let mut reader = FrameReader::new(MAX_MESSAGE).with_deflate(deflate);
    let mut input = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
        if reader.has_failed() {
            break;
        }
        input.extend_from_slice(piece);
        while let Some(inbound) = reader.next(&mut input) {
            let ends = matches!(
                inbound,
                Inbound::TooBig | Inbound::Invalid(_) | Inbound::BadCompressedData
            );
            if let Inbound::Text(payload) = &inbound {
                assert!(payload.len() <= MAX_MESSAGE, "a text over the limit");
            }
            frames.push(inbound);
            if ends {
                assert!(reader.has_failed(), "a failed stream is marked failed");
                assert!(input.is_empty(), "a failed stream keeps no bytes");
            }
        }
        assert!(
            input.len() <= MAX_HEADER + MAX_MESSAGE + chunk,
            "{} bytes buffered with {chunk}-byte reads",
            input.len()
        );
    }
    frames
}
