//! The harness the core behaviour tests share: it drives the core through
//! its public API the way the shell does and decodes what a client would read.
//!
//! It speaks the one operation language of every core test layer
//! (`ws_realtime::fuzzing::op::Op`, also the fuzz target's, the property
//! tests' and the state-machine test's): [`Harness::apply`] turns one `Op`
//! into the core call a shell would make. The named helpers (`open`,
//! `text`, `publish`, `advance`, `write_complete`, …) are that language with
//! the names a test reads better: each becomes one `Op`, its connection,
//! user and channel given as indices into the harness's cast.
#![allow(dead_code, unused_imports)]

pub(crate) use std::net::{IpAddr, Ipv4Addr};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use bytes::Bytes;
pub(crate) use serde_json::{Value, json};

pub(crate) use ws_realtime::core::*;
pub(crate) use ws_realtime::fuzzing::op::{Op, PayloadChoice, recover_frame};
pub(crate) use ws_realtime::proto::codes::*;
pub(crate) use ws_realtime::proto::position::Position;
pub(crate) use ws_realtime::proto::ws_frame::{self, Opcode};

mod outputs;
pub(crate) use outputs::Outputs;

/// 2026-01-14T10:00:00.000Z
pub(crate) const ANCHOR_UNIX_MS: u64 = 1_768_384_800_000;

/// The Kafka topic of `Op::Publish` and `Op::PublishAt` (the fuzz target's
/// too, so the cursors `Op::Recover` builds name it).
pub(crate) const TOPIC: &str = "t";

/// A frame the client received, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Received {
    Json(Value),
    Ping,
    Pong(Vec<u8>),
    Close(u16, String),
}

/// What an `Op`'s indices name: users, channels and connections, each in
/// the order the harness first saw it.
#[derive(Debug, Default)]
pub(crate) struct Cast {
    /// `Op::Open`'s `user`.
    users: Vec<String>,
    /// Every channel index of every `Op`.
    channels: Vec<String>,
    /// `Op`'s `conn`: every connection opened through the harness, and any
    /// a test opened on the core itself and then named to the harness.
    conns: Vec<ConnId>,
}

/// Index of `name` in `names`, added if new.
fn intern(names: &mut Vec<String>, name: &str) -> u8 {
    let index = match names.iter().position(|known| known == name) {
        Some(index) => index,
        None => {
            names.push(name.to_owned());
            names.len() - 1
        }
    };
    u8::try_from(index).expect("a test names fewer than 256 users or channels")
}

impl Cast {
    pub(crate) fn user(&mut self, name: &str) -> u8 {
        intern(&mut self.users, name)
    }

    pub(crate) fn channel(&mut self, name: &str) -> u8 {
        intern(&mut self.channels, name)
    }

    pub(crate) fn channels(&mut self, names: &[&str]) -> Vec<u8> {
        names.iter().map(|name| self.channel(name)).collect()
    }

    /// The index `conn` goes by (named now if the harness did not open it).
    pub(crate) fn conn(&mut self, conn: ConnId) -> u8 {
        let index = match self.conns.iter().position(|known| *known == conn) {
            Some(index) => index,
            None => {
                self.conns.push(conn);
                self.conns.len() - 1
            }
        };
        u8::try_from(index).expect("a test drives fewer than 256 connections")
    }

    fn user_name(&self, index: u8) -> &str {
        &self.users[usize::from(index)]
    }

    fn channel_name(&self, index: u8) -> &str {
        &self.channels[usize::from(index)]
    }

    fn channel_names(&self, indices: &[u8]) -> Vec<&str> {
        indices.iter().map(|&i| self.channel_name(i)).collect()
    }

    fn conn_id(&self, index: u8) -> ConnId {
        self.conns[usize::from(index)]
    }
}

/// What applying an `Op` gave back, for the helpers that return it.
#[derive(Debug)]
pub(crate) enum Applied {
    /// `Op::Open`: the connection, or why the core refused it.
    Opened(Result<ConnId, Refusal>),
    /// `Op::Publish`, `Op::PublishAt`: what the core did with the message.
    Published(PublishOutcome),
    /// Every other operation.
    Done,
}

pub(crate) struct Harness {
    pub(crate) core: Core,
    pub(crate) now: Instant,
    /// Outputs taken from `Core::poll_output` and not yet looked at, so a
    /// test can read one kind (events, say) and the others later.
    pub(crate) outputs: Outputs,
    /// What the indices of the `Op`s applied name.
    pub(crate) cast: Cast,
    /// Last Kafka offset `Op::Publish` gave each partition of [`TOPIC`].
    pub(crate) offsets: [i64; 4],
}

pub(crate) fn identity(user: &str) -> Identity {
    Identity::unrestricted(user)
}

pub(crate) fn open_as(identity: Identity) -> Open {
    Open {
        identity,
        remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
        channels: vec![],
        deflate: None,
    }
}

pub(crate) fn decode_all(frames: &[Bytes]) -> Vec<Received> {
    frames
        .iter()
        .map(|frame| {
            let decoded = ws_frame::decode(frame).expect("the core writes well-formed frames");
            assert_eq!(decoded.len, frame.len(), "one frame per Bytes");
            match decoded.opcode {
                Opcode::Text => Received::Json(
                    serde_json::from_slice(decoded.payload).expect("text frames are JSON"),
                ),
                Opcode::Ping => Received::Ping,
                Opcode::Pong => Received::Pong(decoded.payload.to_vec()),
                Opcode::Close => {
                    let (code, reason) = decoded
                        .close_code_and_reason()
                        .expect("close frames carry code and reason");
                    Received::Close(code, reason.to_owned())
                }
                Opcode::Binary => panic!("the server never sends binary frames"),
            }
        })
        .collect()
}

impl Harness {
    pub(crate) fn new(config: CoreConfig) -> Harness {
        let start = Instant::now();
        Harness {
            core: Core::new(config, start, ANCHOR_UNIX_MS),
            now: start,
            outputs: Outputs::default(),
            cast: Cast::default(),
            offsets: [0; 4],
        }
    }

    pub(crate) fn default() -> Harness {
        Harness::new(CoreConfig::default())
    }

    /// Does what `op` says, as the shell would: one core input (a few for
    /// `PublishBurst`, `WriteAll` and `Advance`). Indices name the cast's
    /// users, channels and connections; a connection index is the order the
    /// harness met it in, closed ones included.
    pub(crate) fn apply(&mut self, op: Op) -> Applied {
        let now = self.now;
        match op {
            Op::Open {
                user,
                address,
                channels,
                expires_in_secs,
            } => {
                let mut identity = identity(self.cast.user_name(user));
                identity.expires_at_unix_ms =
                    expires_in_secs.map(|secs| ANCHOR_UNIX_MS + u64::from(secs) * 1000);
                let open = Open {
                    identity,
                    remote: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + address % 254)),
                    channels: self
                        .cast
                        .channel_names(&channels)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    deflate: None,
                };
                let opened = self.core.handle_open(now, open);
                if let Ok(conn) = opened {
                    self.cast.conn(conn);
                }
                return Applied::Opened(opened);
            }
            Op::Subscribe { conn, id, channels } => {
                let frame = request("subscribe", id, &self.cast.channel_names(&channels));
                self.core.handle_text(now, self.cast.conn_id(conn), &frame);
            }
            Op::Unsubscribe { conn, id, channels } => {
                let frame = request("unsubscribe", id, &self.cast.channel_names(&channels));
                self.core.handle_text(now, self.cast.conn_id(conn), &frame);
            }
            Op::LegacySubscribe { conn, symbols } => {
                let frame =
                    json!({"action": "subscribe", "symbols": self.cast.channel_names(&symbols)});
                self.core
                    .handle_text(now, self.cast.conn_id(conn), frame.to_string().as_bytes());
            }
            Op::JsonPing { conn, id } => {
                let mut frame = json!({"type": "ping"});
                if let Some(id) = id {
                    frame["id"] = id.into();
                }
                self.core
                    .handle_text(now, self.cast.conn_id(conn), frame.to_string().as_bytes());
            }
            Op::JsonPong { conn } => {
                self.core
                    .handle_text(now, self.cast.conn_id(conn), br#"{"type":"pong"}"#);
            }
            Op::Text { conn, bytes } => self.core.handle_text(now, self.cast.conn_id(conn), &bytes),
            Op::Binary { conn } => self.core.handle_binary(now, self.cast.conn_id(conn)),
            Op::WsPing { conn, payload } => {
                let payload = &payload[..payload.len().min(125)];
                self.core.handle_ping(now, self.cast.conn_id(conn), payload);
            }
            Op::Activity { conn } => self.core.handle_activity(now, self.cast.conn_id(conn)),
            Op::FrameTooBig { conn } => {
                self.core.handle_frame_too_big(now, self.cast.conn_id(conn))
            }
            Op::PeerClose { conn } => self.core.handle_peer_close(now, self.cast.conn_id(conn)),
            Op::SocketClosed { conn } => self.core.handle_closed(now, self.cast.conn_id(conn)),
            Op::Publish {
                channel,
                offset,
                payload,
            } => {
                let pos = offset.map(|(partition, step)| {
                    let partition = partition % 4;
                    let last = &mut self.offsets[usize::from(partition)];
                    *last += i64::from(step);
                    Position::Offset {
                        topic: TOPIC.to_owned(),
                        partition: i32::from(partition),
                        offset: *last,
                    }
                });
                return Applied::Published(self.publish_at(channel, pos, payload.bytes()));
            }
            Op::PublishAt {
                channel,
                partition,
                offset,
                payload,
            } => {
                let pos = Position::Offset {
                    topic: TOPIC.to_owned(),
                    partition,
                    offset,
                };
                return Applied::Published(self.publish_at(channel, Some(pos), payload));
            }
            Op::PublishBurst { channel, count } => {
                for i in 0..count % 64 {
                    self.publish_at(channel, None, format!(r#"{{"seq":{i}}}"#).into_bytes());
                }
            }
            Op::Recover {
                conn,
                channel,
                since,
                snapshot,
                history,
            } => {
                let name = self.cast.channel_name(channel);
                let frame = recover_frame(name, since.as_ref(), snapshot, history);
                self.core
                    .handle_text(now, self.cast.conn_id(conn), frame.as_bytes());
            }
            Op::WriteComplete { conn } => {
                self.core
                    .handle_write_complete(now, self.cast.conn_id(conn));
            }
            Op::WriteAll => {
                // Every transmit taken so far, unread: their sockets took it.
                self.outputs.take_from(&mut self.core);
                while let Some(transmit) = self.outputs.transmits.pop_front() {
                    self.core.handle_write_complete(self.now, transmit.conn);
                    self.outputs.take_from(&mut self.core);
                }
            }
            Op::Poll => self.outputs.take_from(&mut self.core),
            Op::Advance { millis } => {
                // Every deadline on the way fires at its own instant.
                let target = self.now + Duration::from_millis(u64::from(millis));
                for _ in 0..10_000 {
                    match self.deadline() {
                        Some(at) if at <= target => {
                            self.now = self.now.max(at);
                            self.core.handle_timeout(self.now);
                        }
                        _ => break,
                    }
                }
                self.now = target;
            }
            Op::Shutdown => self.core.handle_shutdown(now),
        }
        Applied::Done
    }

    /// A source message on channel index `channel`.
    fn publish_at(
        &mut self,
        channel: u8,
        pos: Option<Position>,
        payload: Vec<u8>,
    ) -> PublishOutcome {
        let publish = Publish {
            channel: self.cast.channel_name(channel).to_owned(),
            pos,
            payload: Bytes::from(payload),
            key: None,
        };
        self.core.handle_publish(self.now, publish)
    }

    /// The next transmit, as the shell's drain would see it.
    pub(crate) fn next_transmit(&mut self) -> Option<Transmit> {
        if self.outputs.transmits.is_empty() {
            self.outputs.take_from(&mut self.core);
        }
        self.outputs.transmits.pop_front()
    }

    /// The core's next deadline.
    pub(crate) fn deadline(&mut self) -> Option<Instant> {
        self.outputs.take_from(&mut self.core);
        self.outputs.deadline
    }

    /// `Op::Open` for `user`, admitted, its `connected` frame read.
    pub(crate) fn open(&mut self, user: &str) -> ConnId {
        let user = self.cast.user(user);
        let Applied::Opened(opened) = self.apply(Op::Open {
            user,
            address: 0,
            channels: vec![],
            expires_in_secs: None,
        }) else {
            unreachable!("an open is answered with its connection")
        };
        let conn = opened.expect("admitted");
        let connected = self.drain(conn);
        assert!(matches!(&connected[..], [Received::Json(v)] if v["type"] == "connected"));
        conn
    }

    /// `Op::Text`: `frame` as a text frame from `conn`.
    pub(crate) fn text(&mut self, conn: ConnId, frame: Value) {
        let conn = self.cast.conn(conn);
        self.apply(Op::Text {
            conn,
            bytes: frame.to_string().into_bytes(),
        });
    }

    /// `Op::WriteComplete`: `conn`'s socket took its transmit.
    pub(crate) fn write_complete(&mut self, conn: ConnId) {
        let conn = self.cast.conn(conn);
        self.apply(Op::WriteComplete { conn });
    }

    /// `Op::SocketClosed`: `conn`'s socket ended without a close frame.
    pub(crate) fn socket_closed(&mut self, conn: ConnId) {
        let conn = self.cast.conn(conn);
        self.apply(Op::SocketClosed { conn });
    }

    /// `Op::Text` with any bytes, JSON or not.
    pub(crate) fn text_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        let conn = self.cast.conn(conn);
        self.apply(Op::Text {
            conn,
            bytes: bytes.to_vec(),
        });
    }

    /// `Op::Binary`: a binary frame from `conn`.
    pub(crate) fn binary(&mut self, conn: ConnId) {
        let conn = self.cast.conn(conn);
        self.apply(Op::Binary { conn });
    }

    /// `Op::WsPing`: a WebSocket Ping from `conn`.
    pub(crate) fn ws_ping(&mut self, conn: ConnId, payload: &[u8]) {
        let conn = self.cast.conn(conn);
        self.apply(Op::WsPing {
            conn,
            payload: payload.to_vec(),
        });
    }

    /// `Op::Activity`: inbound bytes from `conn`, not yet a whole frame.
    pub(crate) fn activity(&mut self, conn: ConnId) {
        let conn = self.cast.conn(conn);
        self.apply(Op::Activity { conn });
    }

    /// `Op::FrameTooBig`: `conn` sent a frame over the size limit.
    pub(crate) fn frame_too_big(&mut self, conn: ConnId) {
        let conn = self.cast.conn(conn);
        self.apply(Op::FrameTooBig { conn });
    }

    /// `Op::PeerClose`: `conn` sent a close frame.
    pub(crate) fn peer_close(&mut self, conn: ConnId) {
        let conn = self.cast.conn(conn);
        self.apply(Op::PeerClose { conn });
    }

    /// `Op::Shutdown`: the server starts draining.
    pub(crate) fn shutdown(&mut self) {
        self.apply(Op::Shutdown);
    }

    /// Everything the shell would write to `conn`, completing each write;
    /// other connections' transmits are completed unread.
    pub(crate) fn drain(&mut self, conn: ConnId) -> Vec<Received> {
        let mut received = Vec::new();
        let mut others = Vec::new();
        for _ in 0..1000 {
            let Some(transmit) = self.next_transmit() else {
                break;
            };
            if transmit.conn == conn {
                received.extend(decode_all(&transmit.frames));
                self.write_complete(conn);
            } else {
                others.push(transmit.conn);
            }
        }
        for other in others {
            self.write_complete(other);
        }
        received
    }

    pub(crate) fn json(&mut self, conn: ConnId) -> Vec<Value> {
        self.drain(conn)
            .into_iter()
            .map(|r| match r {
                Received::Json(v) => v,
                other => panic!("expected JSON, got {other:?}"),
            })
            .collect()
    }

    pub(crate) fn events(&mut self) -> Vec<Event> {
        self.outputs.take_from(&mut self.core);
        std::mem::take(&mut self.outputs.events)
    }

    pub(crate) fn disconnects(&mut self) -> Vec<ConnId> {
        self.outputs.take_from(&mut self.core);
        std::mem::take(&mut self.outputs.disconnects)
    }

    /// `Op::Advance` (as many as `by` needs): moves time on, firing every
    /// deadline on the way as the shell would.
    pub(crate) fn advance(&mut self, by: Duration) {
        assert_eq!(
            by.subsec_nanos() % 1_000_000,
            0,
            "time moves in whole milliseconds"
        );
        let mut left = by.as_millis();
        loop {
            let millis = u16::try_from(left).unwrap_or(u16::MAX);
            self.apply(Op::Advance { millis });
            left -= u128::from(millis);
            if left == 0 {
                break;
            }
        }
    }

    /// `Op::Publish` of `payload` on `channel`, from a source without
    /// positions.
    pub(crate) fn publish(&mut self, channel: &str, payload: &[u8]) -> PublishOutcome {
        let channel = self.cast.channel(channel);
        let Applied::Published(outcome) = self.apply(Op::Publish {
            channel,
            offset: None,
            payload: PayloadChoice::Raw(payload.to_vec()),
        }) else {
            unreachable!("a publish is answered with its outcome")
        };
        outcome
    }
}

/// A protocol v1 `subscribe` or `unsubscribe` frame.
fn request(kind: &str, id: Option<u16>, channels: &[&str]) -> Vec<u8> {
    let mut frame = json!({"type": kind, "channels": channels});
    if let Some(id) = id {
        frame["id"] = id.into();
    }
    frame.to_string().into_bytes()
}

/// `Op::Subscribe` with id 1; returns its one answer.
pub(crate) fn subscribe(h: &mut Harness, conn: ConnId, channels: &[&str]) -> Value {
    let (index, channels) = (h.cast.conn(conn), h.cast.channels(channels));
    h.apply(Op::Subscribe {
        conn: index,
        id: Some(1),
        channels,
    });
    let mut frames = h.json(conn);
    assert_eq!(frames.len(), 1, "{frames:?}");
    frames.remove(0)
}
