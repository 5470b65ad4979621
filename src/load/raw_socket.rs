//! A minimal RFC 6455 client for the fast readers: one buffer per
//! connection, filled by plain socket reads as large as the kernel has data
//! for, and frames found in it in place.
//!
//! The fast readers of a fan-out run receive millions of frames a second on
//! one core. Through fastwebsockets each frame costs a `read_frame` future,
//! a UTF-8 validation and a payload split; here a read returns every frame
//! the kernel holds and each costs a header decode and the `"ts":` search
//! (see `stats::timestamps`). Setup (upgrade, subscribe, ack) uses the same
//! buffer, so nothing the server sends right after the ack is lost.
//! Slow readers and the reference keep fastwebsockets: they read a frame at
//! a time on purpose.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::plan::Endpoint;

/// Bytes asked of the kernel per read: enough for a few hundred market-data
/// frames, so a reader that fell behind catches up in few system calls.
const READ_CHUNK: usize = 64 * 1024;
/// Largest frame (or reassembled message) accepted, as for the other readers.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Largest upgrade response accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// What the server sent, one whole message at a time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received<'a> {
    /// A text or binary message (reassembled if it came in fragments).
    Data(&'a [u8]),
    /// A Ping; the caller answers it with [`RawSocket::send_pong`].
    Ping(&'a [u8]),
    /// A Close frame's payload (code and reason).
    Close(&'a [u8]),
}

/// One upgraded connection read by hand.
#[derive(Debug)]
pub(crate) struct RawSocket {
    /// The TCP connection, after the upgrade.
    stream: TcpStream,
    /// Bytes read and not yet parsed live in `buf[start..end]`.
    buf: Vec<u8>,
    /// First unparsed byte.
    start: usize,
    /// End of the bytes read.
    end: usize,
    /// A message arriving in fragments, until its final frame (the server
    /// does not fragment today; a client must still accept it).
    fragments: Option<Vec<u8>>,
    /// Seed of the masking keys clients must put on their frames.
    mask_state: u64,
}

impl RawSocket {
    /// The WebSocket upgrade on `stream` (connected to `endpoint`) with
    /// `token` as a bearer token.
    pub(crate) async fn upgrade(
        mut stream: TcpStream,
        endpoint: &Endpoint,
        token: &str,
    ) -> Result<RawSocket, String> {
        let key = fastwebsockets::handshake::generate_key();
        // The key is 16 random bytes: a fine seed for the masking keys.
        let mask_state = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        }) | 1;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n",
            endpoint.path_and_query, endpoint.host
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send the upgrade request: {e}"))?;
        let mut socket = RawSocket {
            stream,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            fragments: None,
            mask_state,
        };
        loop {
            if let Some(head_end) = memchr::memmem::find(&socket.buf[..socket.end], b"\r\n\r\n") {
                check_upgrade_response(&socket.buf[..head_end])?;
                socket.start = head_end + 4;
                return Ok(socket);
            }
            if socket.end >= MAX_RESPONSE_HEAD {
                return Err("upgrade failed: response head too large".to_owned());
            }
            socket
                .fill()
                .await
                .map_err(|e| format!("upgrade failed: {e}"))?;
        }
    }

    /// The next whole message already read, if any; `Err` for a frame no
    /// server may send (masked, too large, a stray continuation).
    pub(crate) fn next(&mut self) -> Result<Option<Received<'_>>, String> {
        loop {
            let Some(header) = decode_header(&self.buf[self.start..self.end])? else {
                return Ok(None);
            };
            let payload = self.start + header.length..self.start + header.length + header.payload;
            self.start = payload.end;
            match header.opcode {
                0x1 | 0x2 if header.fin && self.fragments.is_none() => {
                    return Ok(Some(Received::Data(&self.buf[payload])));
                }
                0x1 | 0x2 if self.fragments.is_none() => {
                    self.fragments = Some(self.buf[payload].to_vec());
                }
                0x0 => {
                    let Some(message) = self.fragments.as_mut() else {
                        return Err("a continuation frame without a message to continue".into());
                    };
                    if message.len() + payload.len() > MAX_MESSAGE_BYTES {
                        return Err("a fragmented message above 16 MiB".into());
                    }
                    message.extend_from_slice(&self.buf[payload]);
                    if header.fin {
                        // Kept in `buf` past `end`, where no read can reach
                        // it before the caller is done with it.
                        let message = self.fragments.take().expect("checked just above");
                        return Ok(Some(Received::Data(self.park(message))));
                    }
                }
                0x1 | 0x2 => return Err("a new message inside a fragmented one".into()),
                0x8 => return Ok(Some(Received::Close(&self.buf[payload]))),
                0x9 => return Ok(Some(Received::Ping(&self.buf[payload]))),
                0xA => {}
                other => return Err(format!("a frame with the unknown opcode {other}")),
            }
        }
    }

    /// Reads what the kernel has (at least one byte, waiting for it); an
    /// end of stream is an error. Cancel-safe: a read that did not complete
    /// took nothing from the socket.
    pub(crate) async fn fill(&mut self) -> io::Result<()> {
        let pending = self.end - self.start;
        if self.start > 0 && self.buf.len() - self.end < READ_CHUNK / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = pending;
        }
        let wanted = self
            .start
            .saturating_add(decode_needed(&self.buf[self.start..self.end]))
            .max(self.end + READ_CHUNK / 2)
            .min(self.start + MAX_MESSAGE_BYTES + 14);
        if wanted > self.buf.len() {
            self.buf.resize(wanted, 0);
        }
        let read = self.stream.read(&mut self.buf[self.end..]).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.end += read;
        Ok(())
    }

    /// Sends a text frame (masked, as every client frame must be).
    pub(crate) async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        self.send(0x1, text).await
    }

    /// Answers a Ping with its payload.
    pub(crate) async fn send_pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send(0xA, payload).await
    }

    /// Sends a Close frame with `code` and `reason`.
    pub(crate) async fn send_close(&mut self, code: u16, reason: &[u8]) -> io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        self.send(0x8, &payload).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        // xorshift: masking keys only need to differ, not to be secret, for
        // a tool that talks to the operator's own server.
        self.mask_state ^= self.mask_state << 13;
        self.mask_state ^= self.mask_state >> 7;
        self.mask_state ^= self.mask_state << 17;
        let frame = client_frame(opcode, payload, (self.mask_state as u32).to_be_bytes());
        self.stream.write_all(&frame).await
    }

    /// Copies a reassembled message to the free end of `buf` and returns it.
    fn park(&mut self, message: Vec<u8>) -> &[u8] {
        let at = self.end.max(self.start);
        if self.buf.len() < at + message.len() {
            self.buf.resize(at + message.len(), 0);
        }
        self.buf[at..at + message.len()].copy_from_slice(&message);
        &self.buf[at..at + message.len()]
    }
}

/// A decoded frame header.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    /// Last frame of its message.
    fin: bool,
    /// The frame's opcode.
    opcode: u8,
    /// Header bytes.
    length: usize,
    /// Payload bytes after the header.
    payload: usize,
}

/// The header of the frame at the start of `bytes`, once the whole frame
/// is there; `Ok(None)` while more bytes are needed.
fn decode_header(bytes: &[u8]) -> Result<Option<Header>, String> {
    let Some(&[first, second]) = bytes.get(..2) else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        return Err("a masked frame from the server".into());
    }
    let (length, payload) = match second & 0x7f {
        126 => match bytes.get(2..4) {
            Some(len) => (4, u16::from_be_bytes([len[0], len[1]]) as usize),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(len) => (
                10,
                usize::try_from(u64::from_be_bytes(len.try_into().expect("8 bytes")))
                    .unwrap_or(usize::MAX),
            ),
            None => return Ok(None),
        },
        short => (2, short as usize),
    };
    if payload > MAX_MESSAGE_BYTES {
        return Err(format!("a frame of {payload} bytes, above 16 MiB"));
    }
    if bytes.len() < length + payload {
        return Ok(None);
    }
    Ok(Some(Header {
        fin: first & 0x80 != 0,
        opcode: first & 0x0f,
        length,
        payload,
    }))
}

/// Bytes the frame at the start of `bytes` needs in all, as far as its
/// header tells (14, the longest header, until it is known).
fn decode_needed(bytes: &[u8]) -> usize {
    match bytes.get(1).map(|second| second & 0x7f) {
        Some(126) if bytes.len() >= 4 => 4 + u16::from_be_bytes([bytes[2], bytes[3]]) as usize,
        Some(127) if bytes.len() >= 10 => 10usize.saturating_add(
            usize::try_from(u64::from_be_bytes(
                bytes[2..10].try_into().expect("8 bytes"),
            ))
            .unwrap_or(usize::MAX),
        ),
        Some(short) if short < 126 => 2 + short as usize,
        _ => 14,
    }
}

/// A whole client frame: FIN, `opcode`, the masked `payload`.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        short @ 0..=125 => frame.push(0x80 | short as u8),
        medium @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(at, byte)| byte ^ mask[at % 4]),
    );
    frame
}

/// `Ok` for a `101 Switching Protocols` that upgrades to `websocket`; the
/// refusal's status line otherwise. (The `Sec-WebSocket-Accept` digest is
/// not checked: it guards against caches and non-WebSocket servers, and
/// this tool talks to a ws-realtime the operator named.)
fn check_upgrade_response(head: &[u8]) -> Result<(), String> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        // Worded as the fastwebsockets path words it.
        return Err(format!(
            "upgrade refused with HTTP {}",
            status.split_once(' ').map_or(status, |(_, rest)| rest)
        ));
    }
    let upgrades = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("upgrade")
                && value.trim().eq_ignore_ascii_case("websocket")
        })
    });
    if !upgrades {
        return Err("upgrade failed: a 101 without Upgrade: websocket".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            short @ 0..=125 => frame.push(short as u8),
            medium @ 126..=0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(medium as u16).to_be_bytes());
            }
            long => {
                frame.push(127);
                frame.extend_from_slice(&(long as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn headers_wait_for_the_whole_frame_at_each_length_form() {
        for size in [0, 125, 126, 70_000] {
            let frame = server_frame(true, 0x1, &vec![b'x'; size]);
            assert_eq!(decode_header(&frame[..frame.len() - 1]).unwrap(), None);
            let header = decode_header(&frame).unwrap().unwrap();
            assert_eq!(header.length + header.payload, frame.len());
            assert_eq!(decode_needed(&frame[..header.length]), frame.len());
            assert!((header.fin, header.opcode) == (true, 0x1));
        }
        assert_eq!(decode_needed(&[0x81]), 14);
    }

    #[test]
    fn masked_or_oversized_server_frames_are_refused() {
        assert!(decode_header(&[0x81, 0x85, 1, 2, 3, 4, b'h']).is_err());
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(u64::MAX).to_be_bytes());
        assert!(decode_header(&huge).is_err());
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        let mask = [1, 2, 3, 4];
        let frame = client_frame(0x1, b"subscribe", mask);
        assert_eq!(frame[0], 0x81);
        assert_eq!(frame[1], 0x80 | 9);
        assert_eq!(&frame[2..6], &mask);
        let unmasked: Vec<u8> = frame[6..]
            .iter()
            .enumerate()
            .map(|(at, byte)| byte ^ mask[at % 4])
            .collect();
        assert_eq!(unmasked, b"subscribe");
        assert_eq!(client_frame(0x1, &[0; 300], mask)[1], 0x80 | 126);
    }

    #[test]
    fn only_a_websocket_101_is_an_upgrade() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade";
        assert_eq!(check_upgrade_response(ok), Ok(()));
        let refused = b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json";
        assert_eq!(
            check_upgrade_response(refused),
            Err("upgrade refused with HTTP 401 Unauthorized".to_owned())
        );
        assert!(check_upgrade_response(b"HTTP/1.1 101 Switching Protocols\r\n").is_err());
    }

    #[tokio::test]
    async fn frames_of_one_read_come_out_one_message_at_a_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let mut read = 0;
            while !request[..read].ends_with(b"\r\n\r\n") {
                read += stream.read(&mut request[read..]).await.unwrap();
            }
            let mut reply =
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
            reply.extend(server_frame(true, 0x1, b"{\"ts\":1}"));
            reply.extend(server_frame(true, 0x9, b"hb"));
            reply.extend(server_frame(false, 0x1, b"{\"ts\""));
            reply.extend(server_frame(true, 0x0, b":2}"));
            reply.extend(server_frame(true, 0x8, &[0x03, 0xe8]));
            stream.write_all(&reply).await.unwrap();
            // The client's pong: header, mask, 2 payload bytes.
            let mut pong = [0; 8];
            stream.read_exact(&mut pong).await.unwrap();
            pong
        });
        let endpoint = Endpoint {
            address,
            host: address.to_string(),
            path_and_query: "/ws".to_owned(),
        };
        let stream = TcpStream::connect(address).await.unwrap();
        let mut socket = RawSocket::upgrade(stream, &endpoint, "t").await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 4 {
            while let Some(received) = socket.next().unwrap() {
                let owned = match received {
                    Received::Data(data) => format!("data {}", String::from_utf8_lossy(data)),
                    Received::Ping(ping) => format!("ping {}", String::from_utf8_lossy(ping)),
                    Received::Close(close) => format!("close {close:?}"),
                };
                seen.push(owned);
            }
            if seen.len() < 4 {
                socket.fill().await.unwrap();
            }
        }
        assert_eq!(
            seen,
            [
                "data {\"ts\":1}",
                "ping hb",
                "data {\"ts\":2}",
                "close [3, 232]"
            ]
        );
        socket.send_pong(b"hb").await.unwrap();
        let pong = server.await.unwrap();
        assert_eq!(pong[0], 0x8A);
        let mask = &pong[2..6];
        assert_eq!([pong[6] ^ mask[0], pong[7] ^ mask[1]], *b"hb");
    }
}
