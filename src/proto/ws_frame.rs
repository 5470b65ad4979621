//! WebSocket frame headers (RFC 6455 §5.2) for the frames the server sends.
//!
//! Server frames are never masked, so one encoded frame serves every
//! subscriber byte for byte: that is what makes fan-out serialize-once. The
//! decoder exists so tests, simulations and fuzzers can read back exactly what
//! the core produced.

use bytes::Bytes;

/// Longest header a server frame can have: 2 bytes plus a 64-bit length.
pub const MAX_HEADER_LEN: usize = 10;

/// Longest payload a control frame (ping, pong, close) may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The frame opcodes the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// A UTF-8 text frame (every JSON frame of protocol v1).
    Text,
    /// A binary frame (only ever decoded, never sent).
    Binary,
    /// A close frame with code and reason.
    Close,
    /// A ping (heartbeat).
    Ping,
    /// A pong (answer to a client ping).
    Pong,
}

impl Opcode {
    /// The 4-bit opcode on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn from_u8(bits: u8) -> Option<Opcode> {
        match bits {
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }
}

/// Writes the header of a final, unmasked frame into the end of `out` and
/// returns how many bytes it took. `out` must hold [`MAX_HEADER_LEN`] bytes.
///
/// Writing right-aligned lets an encoder reserve header room in front of a
/// payload it has not measured yet, then slice the finished frame without a
/// second copy.
pub fn write_header_right_aligned(
    out: &mut [u8; MAX_HEADER_LEN],
    opcode: Opcode,
    payload_len: usize,
) -> usize {
    let first = 0x80 | opcode.as_u8();
    if payload_len < 126 {
        out[8] = first;
        out[9] = payload_len as u8;
        2
    } else if payload_len <= usize::from(u16::MAX) {
        out[6] = first;
        out[7] = 126;
        out[8..10].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[0] = first;
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// The header length of an unmasked frame of `frame_len` bytes in all
/// (header included), as [`write_header_right_aligned`] writes it.
pub fn header_len(frame_len: usize) -> usize {
    match frame_len {
        0..=127 => 2,
        128..=65_539 => 4,
        _ => 10,
    }
}

/// A complete frame (header followed by `payload`).
pub fn encode(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = write_header_right_aligned(&mut header, opcode, payload.len());
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(&header[MAX_HEADER_LEN - header_len..]);
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// Turns a buffer that starts with [`MAX_HEADER_LEN`] reserved bytes followed
/// by the payload into a finished frame, without copying the payload.
/// Returns the frame and its header length.
pub fn finish_reserved(buf: Vec<u8>, opcode: Opcode) -> (Bytes, usize) {
    finish_reserved_with(buf, opcode, 0)
}

/// Like [`finish_reserved`] for a payload compressed with permessage-deflate:
/// the header has RSV1 set (RFC 7692 §6), which marks the message compressed.
pub fn finish_reserved_compressed(buf: Vec<u8>, opcode: Opcode) -> Bytes {
    finish_reserved_with(buf, opcode, RSV1).0
}

fn finish_reserved_with(mut buf: Vec<u8>, opcode: Opcode, extra_bits: u8) -> (Bytes, usize) {
    let payload_len = buf.len() - MAX_HEADER_LEN;
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = write_header_right_aligned(&mut header, opcode, payload_len);
    let start = MAX_HEADER_LEN - header_len;
    header[start] |= extra_bits;
    buf[start..MAX_HEADER_LEN].copy_from_slice(&header[start..]);
    (Bytes::from(buf).slice(start..), header_len)
}

/// The header bit permessage-deflate uses to mark a compressed message.
pub const RSV1: u8 = 0x40;

/// A close frame with `code` and a reason (cut to fit a control frame on a
/// character boundary).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut reason_len = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(reason_len) {
        reason_len -= 1;
    }
    let mut payload = Vec::with_capacity(2 + reason_len);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..reason_len]);
    encode(Opcode::Close, &payload)
}

/// A ping frame (heartbeat) with an empty payload.
pub fn ping() -> Bytes {
    encode(Opcode::Ping, &[])
}

/// A pong answering a client ping; the payload is echoed (cut to 125 bytes).
pub fn pong(payload: &[u8]) -> Bytes {
    encode(
        Opcode::Pong,
        &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)],
    )
}

/// Why bytes did not decode as a server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header or the payload needs.
    #[error("frame is incomplete")]
    Incomplete,
    /// A reserved or unknown opcode.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// Server frames are never masked, fragmented or extended (other than
    /// RSV1 on a data frame, for permessage-deflate).
    #[error("frame is masked, fragmented or uses reserved bits")]
    Unsupported,
}

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedFrame<'a> {
    /// Its opcode.
    pub opcode: Opcode,
    /// Its payload.
    pub payload: &'a [u8],
    /// How many bytes of the input it took (header + payload).
    pub len: usize,
    /// RSV1 was set: the payload is compressed with permessage-deflate.
    pub compressed: bool,
}

impl DecodedFrame<'_> {
    /// For a close frame: its code and reason (`None` if the payload is
    /// empty or the reason is not UTF-8).
    pub fn close_code_and_reason(&self) -> Option<(u16, &str)> {
        if self.opcode != Opcode::Close || self.payload.len() < 2 {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let reason = std::str::from_utf8(&self.payload[2..]).ok()?;
        Some((code, reason))
    }
}

/// Decodes the first frame in `bytes` as the server wrote it (final,
/// unmasked).
pub fn decode(bytes: &[u8]) -> Result<DecodedFrame<'_>, FrameError> {
    let [first, second, rest @ ..] = bytes else {
        return Err(FrameError::Incomplete);
    };
    if first & 0xB0 != 0x80 || second & 0x80 != 0 {
        return Err(FrameError::Unsupported);
    }
    let opcode = Opcode::from_u8(first & 0x0F).ok_or(FrameError::UnknownOpcode(first & 0x0F))?;
    let compressed = first & RSV1 != 0;
    if compressed && !matches!(opcode, Opcode::Text | Opcode::Binary) {
        return Err(FrameError::Unsupported);
    }
    let (payload_len, header_len): (usize, usize) = match second & 0x7F {
        126 => {
            let ext: [u8; 2] = rest
                .get(..2)
                .ok_or(FrameError::Incomplete)?
                .try_into()
                .expect("slice of 2");
            (usize::from(u16::from_be_bytes(ext)), 4)
        }
        127 => {
            let ext: [u8; 8] = rest
                .get(..8)
                .ok_or(FrameError::Incomplete)?
                .try_into()
                .expect("slice of 8");
            let len =
                usize::try_from(u64::from_be_bytes(ext)).map_err(|_| FrameError::Incomplete)?;
            (len, 10)
        }
        short => (usize::from(short), 2),
    };
    let end = header_len
        .checked_add(payload_len)
        .ok_or(FrameError::Incomplete)?;
    let payload = bytes.get(header_len..end).ok_or(FrameError::Incomplete)?;
    Ok(DecodedFrame {
        opcode,
        payload,
        len: end,
        compressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_medium_and_long_frames_round_trip() {
        for len in [0usize, 125, 126, 65_535, 65_536, 70_000] {
            let payload = vec![b'x'; len];
            let frame = encode(Opcode::Text, &payload);
            let decoded = decode(&frame).expect("a frame we encoded decodes");
            assert_eq!(decoded.opcode, Opcode::Text);
            assert_eq!(decoded.payload.len(), len);
            assert_eq!(decoded.len, frame.len());
            assert_eq!(header_len(frame.len()), frame.len() - len);
        }
    }

    #[test]
    fn reserved_header_room_gives_the_same_bytes_as_encode() {
        for len in [3usize, 200, 70_000] {
            let mut buf = vec![0u8; MAX_HEADER_LEN];
            buf.extend(std::iter::repeat_n(b'a', len));
            let (frame, header_len) = finish_reserved(buf, Opcode::Text);
            assert_eq!(frame, encode(Opcode::Text, &vec![b'a'; len]));
            assert_eq!(frame.len() - header_len, len);
        }
    }

    #[test]
    fn close_frame_carries_code_and_reason() {
        let frame = close(1008, "slow consumer");
        let decoded = decode(&frame).expect("close decodes");
        assert_eq!(
            decoded.close_code_and_reason(),
            Some((1008, "slow consumer"))
        );
    }

    #[test]
    fn close_reason_is_cut_to_fit_a_control_frame() {
        let frame = close(1000, &"é".repeat(100));
        let decoded = decode(&frame).expect("close decodes");
        assert!(decoded.payload.len() <= MAX_CONTROL_PAYLOAD);
        assert!(decoded.close_code_and_reason().is_some());
    }

    #[test]
    fn truncated_frames_are_incomplete_not_a_panic() {
        let frame = encode(Opcode::Text, &[b'y'; 300]);
        for cut in 0..frame.len() {
            assert_eq!(decode(&frame[..cut]), Err(FrameError::Incomplete));
        }
    }
}
