//! Reading the frames a client sends (RFC 6455 §5), without I/O.
//!
//! The shell reads whatever bytes the socket has into a buffer that exists
//! only while a frame is incomplete, and this reader takes complete frames
//! off its front. Keeping no buffer for an idle socket is what keeps an idle
//! connection at a few hundred bytes; a library reader holds 8 KiB each.
//!
//! Text payloads are passed on unchecked: the core validates UTF-8 and
//! closes with 1007 (RFC 6455 §8.1). Everything the RFC forbids at the frame
//! level is [`Inbound::Invalid`], which the core closes with 1002 (§7.4.1).

use bytes::{Buf, Bytes, BytesMut};

use super::deflate::{self, InflateError};
use super::ws_frame::RSV1;

/// Longest header a client frame can have: 2 bytes, a 64-bit length, a mask.
const MAX_HEADER_LEN: usize = 14;

/// Longest payload a control frame may carry (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What a client's complete frame (or fragmented message) means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A text message, reassembled if it came in fragments.
    Text(Bytes),
    /// A binary message (protocol v1 has none; the core answers with an error).
    Binary,
    /// A ping and its payload, which the pong echoes.
    Ping(Bytes),
    /// A pong: proof of life.
    Pong,
    /// The client's close frame.
    Close,
    /// A message longer than the limit. Its bytes are still arriving, so
    /// nothing after it can be read; the connection closes with 1009. Also
    /// a compressed message that inflates past the limit (a deflate bomb).
    TooBig,
    /// A compressed message whose data is not valid DEFLATE: the connection
    /// closes with 1007 (RFC 7692 §8.1 hands it to RFC 6455's failure).
    BadCompressedData,
    /// A frame no client may send (unmasked, reserved bits, unknown opcode,
    /// a fragmented or oversized control frame, a continuation out of place,
    /// a close frame with a 1-byte payload, an invalid code or a non-UTF-8
    /// reason). Nothing after it can be trusted; the connection is closed
    /// with 1002 and dropped.
    Invalid(&'static str),
}

/// Takes complete client frames off the front of a buffer.
#[derive(Debug)]
pub struct FrameReader {
    /// Longest message accepted, in payload bytes (inclusive).
    max_message_bytes: usize,
    /// A fragmented message being collected. `None` between messages, so
    /// an idle reader holds nothing; boxed, so the reader itself stays small.
    fragments: Option<Box<Fragments>>,
    /// Set after `TooBig` or `Invalid`: the stream has no usable frame
    /// boundaries any more, so every later byte is discarded.
    failed: bool,
    /// The connection negotiated permessage-deflate: RSV1 is allowed on the
    /// first frame of a data message (otherwise it is a protocol error).
    deflate: bool,
}

/// The frames of a message received so far.
#[derive(Debug)]
struct Fragments {
    /// A text message (else binary).
    text: bool,
    /// Its first frame had RSV1: inflate it when complete.
    compressed: bool,
    /// The payload so far (compressed bytes, if `compressed`).
    payload: BytesMut,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// FIN bit: the last frame of its message.
    fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    rsv1: bool,
    /// The 4-bit opcode.
    opcode: u8,
    /// The masking key (clients must mask).
    mask: [u8; 4],
    /// Payload length as declared.
    payload_len: u64,
    /// Bytes the header took.
    header_len: usize,
}

impl FrameReader {
    /// A reader that refuses messages over `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> FrameReader {
        FrameReader {
            max_message_bytes,
            fragments: None,
            failed: false,
            deflate: false,
        }
    }

    /// The same reader on a connection that negotiated permessage-deflate:
    /// compressed messages are inflated (from an empty window, as
    /// `client_no_context_takeover` was agreed) up to the message limit.
    pub fn with_deflate(mut self, deflate: bool) -> FrameReader {
        self.deflate = deflate;
        self
    }

    /// Whether the stream failed (`TooBig` or `Invalid` was returned): the
    /// caller should discard whatever else arrives.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Takes the next complete frame off the front of `input` and says what
    /// it means. `None` means more bytes are needed (or the stream failed and
    /// `input` was emptied). Frames that only continue a fragmented message
    /// are consumed without a result; call again until `None`.
    pub fn next(&mut self, input: &mut BytesMut) -> Option<Inbound> {
        loop {
            if self.failed {
                input.clear();
                return None;
            }
            let header = match parse_header(input) {
                Ok(Some(header)) => header,
                Ok(None) => return None,
                Err(why) => return Some(self.fail(input, Inbound::Invalid(why))),
            };
            if let Some(refusal) = self.check(&header) {
                return Some(self.fail(input, refusal));
            }
            // `check` bounded the length by the message limit, which fits usize.
            let payload_len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
            if input.len() - header.header_len < payload_len {
                // Room for the rest now, so the socket's reads append in place.
                input.reserve(header.header_len + payload_len - input.len());
                return None;
            }
            input.advance(header.header_len);
            let mut payload = input.split_to(payload_len);
            unmask(&mut payload, header.mask);
            if let Some(inbound) = self.complete(header, payload) {
                if self.failed {
                    // What follows a frame no client may send is not trusted.
                    input.clear();
                }
                return Some(inbound);
            }
        }
    }

    /// Refuses a frame from its header alone, before its payload arrives.
    fn check(&self, header: &Header) -> Option<Inbound> {
        let is_control = header.opcode & 0x8 != 0;
        if header.rsv1 {
            if !self.deflate {
                return Some(Inbound::Invalid("reserved bits set without an extension"));
            }
            // RFC 7692 §6.1: only the first frame of a data message.
            if is_control || header.opcode == 0x0 {
                return Some(Inbound::Invalid("RSV1 on a control or continuation frame"));
            }
        }
        if is_control {
            if !header.fin {
                return Some(Inbound::Invalid("fragmented control frame"));
            }
            if header.payload_len > MAX_CONTROL_PAYLOAD {
                return Some(Inbound::Invalid("control frame over 125 bytes"));
            }
            return None;
        }
        let so_far = self.fragments.as_ref().map_or(0, |f| f.payload.len());
        let total = header.payload_len.saturating_add(so_far as u64);
        if total > self.max_message_bytes as u64 {
            return Some(Inbound::TooBig);
        }
        None
    }

    /// What a whole frame means; `None` when it only continued a message.
    fn complete(&mut self, header: Header, payload: BytesMut) -> Option<Inbound> {
        match header.opcode {
            0x0 => {
                let Some(mut fragments) = self.fragments.take() else {
                    return Some(
                        self.fail_stream(Inbound::Invalid("continuation without a message")),
                    );
                };
                fragments.payload.extend_from_slice(&payload);
                if !header.fin {
                    self.fragments = Some(fragments);
                    return None;
                }
                let Fragments {
                    text,
                    compressed,
                    payload,
                } = *fragments;
                Some(self.message(text, compressed, payload))
            }
            0x1 | 0x2 => {
                let text = header.opcode == 0x1;
                if self.fragments.is_some() {
                    return Some(
                        self.fail_stream(Inbound::Invalid("new message inside a fragmented one")),
                    );
                }
                if !header.fin {
                    self.fragments = Some(Box::new(Fragments {
                        text,
                        compressed: header.rsv1,
                        payload,
                    }));
                    return None;
                }
                Some(self.message(text, header.rsv1, payload))
            }
            0x8 => match check_close_payload(&payload) {
                Ok(()) => Some(Inbound::Close),
                Err(why) => Some(self.fail_stream(Inbound::Invalid(why))),
            },
            0x9 => Some(Inbound::Ping(payload.freeze())),
            0xA => Some(Inbound::Pong),
            _ => Some(self.fail_stream(Inbound::Invalid("unknown opcode"))),
        }
    }

    /// Marks the stream failed and drops what is buffered.
    fn fail(&mut self, input: &mut BytesMut, inbound: Inbound) -> Inbound {
        input.clear();
        self.fail_stream(inbound)
    }

    fn fail_stream(&mut self, inbound: Inbound) -> Inbound {
        self.failed = true;
        self.fragments = None;
        inbound
    }

    /// A whole message of the given kind, inflated if it was compressed.
    /// A binary message is refused by the core whatever it holds, so it is
    /// never inflated.
    fn message(&mut self, text: bool, compressed: bool, payload: BytesMut) -> Inbound {
        if !text {
            return Inbound::Binary;
        }
        if !compressed {
            return Inbound::Text(payload.freeze());
        }
        match deflate::inflate(&payload, self.max_message_bytes) {
            Ok(inflated) => Inbound::Text(Bytes::from(inflated)),
            Err(InflateError::TooBig) => self.fail_stream(Inbound::TooBig),
            Err(InflateError::Corrupt) => self.fail_stream(Inbound::BadCompressedData),
        }
    }
}

/// RFC 6455 §5.5.1 and §7.4: a close payload is empty, or a status code
/// an endpoint may send followed by a UTF-8 reason.
fn check_close_payload(payload: &[u8]) -> Result<(), &'static str> {
    match payload {
        [] => Ok(()),
        [_] => Err("close frame with a 1-byte payload"),
        [high, low, reason @ ..] => {
            if !is_sendable_close_code(u16::from_be_bytes([*high, *low])) {
                return Err("close frame with a code no endpoint may send");
            }
            std::str::from_utf8(reason)
                .map(|_| ())
                .map_err(|_| "close frame with a reason that is not UTF-8")
        }
    }
}

/// Codes an endpoint may put in a close frame (RFC 6455 §7.4.1 and the
/// IANA registry): 1000–1003, 1007–1014, and 3000–4999 for libraries and
/// applications. 1004 is reserved; 1005, 1006 and 1015 must never be sent.
pub fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parses the header at the front of `input`: `Ok(None)` if incomplete.
fn parse_header(input: &[u8]) -> Result<Option<Header>, &'static str> {
    let [first, second, ..] = *input else {
        return Ok(None);
    };
    // RSV2 and RSV3 belong to no extension the server offers; RSV1 is
    // judged with the connection's negotiation in `check`.
    if first & 0x30 != 0 {
        return Err("reserved bits set without an extension");
    }
    if second & 0x80 == 0 {
        return Err("client frame is not masked");
    }
    let (payload_len, length_len) = match second & 0x7F {
        126 => match input.get(2..4) {
            Some(ext) => (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 2),
            None => return Ok(None),
        },
        127 => match input.get(2..10) {
            Some(ext) => {
                let len = u64::from_be_bytes(ext.try_into().expect("slice of 8"));
                if len >> 63 != 0 {
                    return Err("64-bit length with the top bit set");
                }
                (len, 8)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    let mask_at = 2 + length_len;
    let Some(mask) = input.get(mask_at..mask_at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: first & 0x80 != 0,
        rsv1: first & RSV1 != 0,
        opcode: first & 0x0F,
        mask: mask.try_into().expect("slice of 4"),
        payload_len,
        header_len: mask_at + 4,
    }))
}

/// Undoes the client's masking in place (RFC 6455 §5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Encodes a masked client frame: for tests, simulations and the load tool's
/// view of what a browser sends.
pub fn encode_masked(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    encode_masked_with(fin, 0, opcode, payload, mask)
}

/// Like [`encode_masked`] with RSV1 set: the first frame of a message
/// compressed with permessage-deflate (`payload` is already compressed).
pub fn encode_masked_compressed(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    encode_masked_with(fin, RSV1, opcode, payload, mask)
}

fn encode_masked_with(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MAX_HEADER_LEN + payload.len());
    frame.push(u8::from(fin) << 7 | rsv | (opcode & 0x0F));
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=65_535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    let start = frame.len();
    frame.extend_from_slice(payload);
    unmask(&mut frame[start..], mask);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    fn read_all(reader: &mut FrameReader, bytes: &[u8]) -> Vec<Inbound> {
        let mut input = BytesMut::from(bytes);
        std::iter::from_fn(|| reader.next(&mut input)).collect()
    }

    #[test]
    fn a_text_frame_is_unmasked() {
        let frame = encode_masked(true, 0x1, br#"{"type":"ping"}"#, MASK);
        let got = read_all(&mut FrameReader::new(1024), &frame);
        assert_eq!(
            got,
            [Inbound::Text(Bytes::from_static(br#"{"type":"ping"}"#))]
        );
    }

    #[test]
    fn every_length_encoding_reads_back() {
        for len in [0usize, 1, 5, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = encode_masked(true, 0x1, &payload, MASK);
            let got = read_all(&mut FrameReader::new(100_000), &frame);
            assert_eq!(got, [Inbound::Text(Bytes::from(payload))], "len {len}");
        }
    }

    #[test]
    fn bytes_arriving_one_at_a_time_give_the_same_frames() {
        let mut wire = encode_masked(true, 0x9, b"hb", MASK);
        wire.extend(encode_masked(false, 0x1, b"hel", MASK));
        wire.extend(encode_masked(true, 0xA, b"", MASK));
        wire.extend(encode_masked(true, 0x0, b"lo", MASK));
        wire.extend(encode_masked(true, 0x8, &[0x03, 0xE8], MASK));
        let mut reader = FrameReader::new(1024);
        let mut input = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            input.extend_from_slice(&[byte]);
            while let Some(inbound) = reader.next(&mut input) {
                got.push(inbound);
            }
        }
        assert_eq!(
            got,
            [
                Inbound::Ping(Bytes::from_static(b"hb")),
                Inbound::Pong,
                Inbound::Text(Bytes::from_static(b"hello")),
                Inbound::Close,
            ]
        );
        assert!(input.is_empty());
    }

    #[test]
    fn the_size_limit_is_inclusive_and_counts_fragments() {
        let at_limit = encode_masked(true, 0x1, &[b'a'; 10], MASK);
        assert_eq!(read_all(&mut FrameReader::new(10), &at_limit).len(), 1);
        let over = encode_masked(true, 0x1, &[b'a'; 11], MASK);
        assert_eq!(
            read_all(&mut FrameReader::new(10), &over),
            [Inbound::TooBig]
        );
        let mut split = encode_masked(false, 0x1, &[b'a'; 6], MASK);
        split.extend(encode_masked(true, 0x0, &[b'a'; 5], MASK));
        assert_eq!(
            read_all(&mut FrameReader::new(10), &split),
            [Inbound::TooBig]
        );
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_alone() {
        let frame = encode_masked(true, 0x2, &vec![0; 1 << 20], MASK);
        let mut reader = FrameReader::new(1024);
        let mut input = BytesMut::from(&frame[..20]);
        assert_eq!(reader.next(&mut input), Some(Inbound::TooBig));
        assert!(reader.has_failed());
        // Later bytes are discarded, never buffered.
        input.extend_from_slice(&frame[20..]);
        assert_eq!(reader.next(&mut input), None);
        assert!(input.is_empty());
    }

    #[test]
    fn frames_no_client_may_send_are_invalid() {
        let unmasked = [0x81, 0x01, b'a'];
        let reserved = [0xC1, 0x80, 0, 0, 0, 0];
        let unknown = encode_masked(true, 0x3, b"", MASK);
        let long_ping = encode_masked(true, 0x9, &[0; 126], MASK);
        let split_ping = encode_masked(false, 0x9, b"", MASK);
        let lone_continuation = encode_masked(true, 0x0, b"x", MASK);
        let mut interleaved = encode_masked(false, 0x1, b"a", MASK);
        interleaved.extend(encode_masked(true, 0x1, b"b", MASK));
        for bytes in [
            &unmasked[..],
            &reserved[..],
            &unknown,
            &long_ping,
            &split_ping,
            &lone_continuation,
            &interleaved,
        ] {
            let got = read_all(&mut FrameReader::new(1024), bytes);
            assert!(
                matches!(got.as_slice(), [Inbound::Invalid(_)]),
                "{bytes:?} gave {got:?}"
            );
        }
    }

    fn deflated(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::proto::deflate::Deflater::default().compress_into(text, &mut out);
        out
    }

    #[test]
    fn a_compressed_message_is_inflated_when_deflate_was_negotiated() {
        let text = br#"{"type":"subscribe","channels":["a","a","a","a","a"]}"#;
        let compressed = deflated(text);
        let whole = encode_masked_compressed(true, 0x1, &compressed, MASK);
        let mut reader = FrameReader::new(1024).with_deflate(true);
        assert_eq!(
            read_all(&mut reader, &whole),
            [Inbound::Text(Bytes::from_static(text))]
        );
        // Fragmented: RSV1 on the first frame only, a ping in between.
        let (head, tail) = compressed.split_at(compressed.len() / 2);
        let mut wire = encode_masked_compressed(false, 0x1, head, MASK);
        wire.extend(encode_masked(true, 0x9, b"", MASK));
        wire.extend(encode_masked(true, 0x0, tail, MASK));
        wire.extend(encode_masked(true, 0x1, b"plain", MASK));
        assert_eq!(
            read_all(&mut reader, &wire),
            [
                Inbound::Ping(Bytes::new()),
                Inbound::Text(Bytes::from_static(text)),
                Inbound::Text(Bytes::from_static(b"plain")),
            ]
        );
    }

    #[test]
    fn rsv1_is_a_protocol_error_without_deflate_or_in_the_wrong_frame() {
        let compressed = deflated(b"hello");
        let without = encode_masked_compressed(true, 0x1, &compressed, MASK);
        let got = read_all(&mut FrameReader::new(1024), &without);
        assert!(matches!(got.as_slice(), [Inbound::Invalid(_)]), "{got:?}");
        let on_ping = encode_masked_compressed(true, 0x9, b"", MASK);
        let mut on_continuation = encode_masked(false, 0x1, b"a", MASK);
        on_continuation.extend(encode_masked_compressed(true, 0x0, b"b", MASK));
        for wire in [on_ping, on_continuation] {
            let got = read_all(&mut FrameReader::new(1024).with_deflate(true), &wire);
            assert!(matches!(got.as_slice(), [Inbound::Invalid(_)]), "{got:?}");
        }
    }

    #[test]
    fn a_deflate_bomb_is_too_big_and_corrupt_data_is_refused() {
        let bomb = deflated(&vec![b' '; 10 << 20]);
        let wire = encode_masked_compressed(true, 0x1, &bomb, MASK);
        let mut reader = FrameReader::new(64 * 1024).with_deflate(true);
        assert_eq!(read_all(&mut reader, &wire), [Inbound::TooBig]);
        assert!(reader.has_failed());
        let corrupt = encode_masked_compressed(true, 0x1, &[0xff, 0xff, 0xff, 0xff], MASK);
        let mut reader = FrameReader::new(1024).with_deflate(true);
        let mut wire = corrupt;
        wire.extend(encode_masked(true, 0x1, b"{}", MASK));
        assert_eq!(read_all(&mut reader, &wire), [Inbound::BadCompressedData]);
        assert!(reader.has_failed());
    }

    #[test]
    fn close_frames_with_bad_payloads_are_invalid() {
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xff, 0xfe]);
        let mut payloads = vec![vec![0x03], bad_reason];
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            payloads.push(code.to_be_bytes().to_vec());
        }
        for payload in payloads {
            let frame = encode_masked(true, 0x8, &payload, MASK);
            let got = read_all(&mut FrameReader::new(1024), &frame);
            assert!(
                matches!(got.as_slice(), [Inbound::Invalid(_)]),
                "{payload:?} gave {got:?}"
            );
        }
    }

    #[test]
    fn close_frames_with_sendable_codes_are_closes() {
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("bye ✓".as_bytes());
            let frame = encode_masked(true, 0x8, &payload, MASK);
            assert_eq!(
                read_all(&mut FrameReader::new(1024), &frame),
                [Inbound::Close]
            );
        }
        let empty = encode_masked(true, 0x8, b"", MASK);
        assert_eq!(
            read_all(&mut FrameReader::new(1024), &empty),
            [Inbound::Close]
        );
    }

    #[test]
    fn bytes_after_an_invalid_frame_are_dropped() {
        let mut wire = encode_masked(false, 0x6, b"", MASK);
        wire.extend(encode_masked(true, 0x1, b"{}", MASK));
        let mut reader = FrameReader::new(1024);
        let mut input = BytesMut::from(&wire[..]);
        assert!(matches!(reader.next(&mut input), Some(Inbound::Invalid(_))));
        assert!(input.is_empty() && reader.has_failed());
        assert_eq!(reader.next(&mut input), None);
    }

    #[test]
    fn control_frames_may_come_between_fragments() {
        let mut wire = encode_masked(false, 0x2, b"ab", MASK);
        wire.extend(encode_masked(true, 0x9, b"p", MASK));
        wire.extend(encode_masked(true, 0x0, b"cd", MASK));
        let got = read_all(&mut FrameReader::new(1024), &wire);
        assert_eq!(
            got,
            [Inbound::Ping(Bytes::from_static(b"p")), Inbound::Binary]
        );
    }

    #[test]
    fn a_consumed_buffer_is_left_empty_for_the_caller_to_free() {
        let frame = encode_masked(true, 0x1, b"{}", MASK);
        let mut input = BytesMut::from(&frame[..]);
        let mut reader = FrameReader::new(1024);
        assert!(reader.next(&mut input).is_some());
        assert!(reader.next(&mut input).is_none());
        assert!(input.is_empty());
    }
}
