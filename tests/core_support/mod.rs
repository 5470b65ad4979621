//! The harness the core behaviour tests share: it drives the core through
//! its public API the way the shell does and decodes what a client would read.
#![allow(dead_code, unused_imports)]

pub(crate) use std::net::{IpAddr, Ipv4Addr};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use bytes::Bytes;
pub(crate) use serde_json::{Value, json};

pub(crate) use ws_realtime::core::*;
pub(crate) use ws_realtime::proto::codes::*;
pub(crate) use ws_realtime::proto::position::Position;
pub(crate) use ws_realtime::proto::ws_frame::{self, Opcode};

/// 2026-01-14T10:00:00.000Z
mod outputs;
pub(crate) use outputs::Outputs;

pub(crate) const ANCHOR_UNIX_MS: u64 = 1_768_384_800_000;

/// A frame the client received, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Received {
    Json(Value),
    Ping,
    Pong(Vec<u8>),
    Close(u16, String),
}

pub(crate) struct Harness {
    pub(crate) core: Core,
    pub(crate) now: Instant,
    /// Outputs taken from `Core::poll_output` and not yet looked at, so a
    /// test can read one kind (events, say) and the others later.
    pub(crate) outputs: Outputs,
}

pub(crate) fn identity(user: &str) -> Identity {
    Identity {
        user_id: user.into(),
        roles: vec![],
        channel_patterns: None,
        expires_at_unix_ms: None,
        max_rate: None,
        delay: None,
    }
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
        }
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

    pub(crate) fn default() -> Harness {
        Harness::new(CoreConfig::default())
    }

    pub(crate) fn open(&mut self, user: &str) -> ConnId {
        let conn = self
            .core
            .handle_open(self.now, open_as(identity(user)))
            .expect("admitted");
        let connected = self.drain(conn);
        assert!(matches!(&connected[..], [Received::Json(v)] if v["type"] == "connected"));
        conn
    }

    pub(crate) fn text(&mut self, conn: ConnId, frame: Value) {
        self.core
            .handle_text(self.now, conn, frame.to_string().as_bytes());
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
                self.core.handle_write_complete(self.now, conn);
            } else {
                others.push(transmit.conn);
            }
        }
        for other in others {
            self.core.handle_write_complete(self.now, other);
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

    /// Moves time on, firing every deadline on the way as the shell would.
    pub(crate) fn advance(&mut self, by: Duration) {
        let target = self.now + by;
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

    pub(crate) fn publish(&mut self, channel: &str, payload: &[u8]) -> PublishOutcome {
        let publish = Publish {
            channel: channel.into(),
            pos: None,
            payload: Bytes::copy_from_slice(payload),
            key: None,
        };
        self.core.handle_publish(self.now, publish)
    }
}

pub(crate) fn subscribe(h: &mut Harness, conn: ConnId, channels: &[&str]) -> Value {
    h.text(conn, json!({"type":"subscribe","channels":channels,"id":1}));
    let mut frames = h.json(conn);
    assert_eq!(frames.len(), 1, "{frames:?}");
    frames.remove(0)
}
