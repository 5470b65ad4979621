//! One insta snapshot per server frame kind and per close code + reason, so a
//! protocol change shows up as a snapshot diff. Frames come from a real core
//! and are decoded by a parser written here, independent of the encoder.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

#[path = "core_support/outputs.rs"]
mod outputs;

use outputs::Outputs;
use ws_realtime::core::*;
use ws_realtime::proto::position::Position;

/// A server frame as a client sees it: opcode and payload.
#[derive(Debug)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// Parses one final, unmasked server frame that fills `bytes` exactly.
fn parse_server_frame(bytes: &[u8]) -> ServerFrame {
    assert!(bytes.len() >= 2, "frame shorter than a header");
    assert_eq!(bytes[0] & 0xF0, 0x80, "FIN set, no reserved bits");
    assert_eq!(bytes[1] & 0x80, 0, "server frames are unmasked");
    let (len, start) = match bytes[1] & 0x7F {
        126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
        127 => (
            u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    assert_eq!(bytes.len(), start + len, "one frame per buffer");
    ServerFrame {
        opcode: bytes[0] & 0x0F,
        payload: bytes[start..].to_vec(),
    }
}

fn json_of(frame: &ServerFrame) -> Value {
    assert_eq!(frame.opcode, 0x1, "a text frame");
    serde_json::from_slice(&frame.payload).expect("JSON")
}

fn close_of(frame: &ServerFrame) -> Value {
    assert_eq!(frame.opcode, 0x8, "a close frame");
    let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
    let reason = std::str::from_utf8(&frame.payload[2..]).expect("UTF-8 reason");
    json!({"code": code, "reason": reason})
}

struct Client {
    core: Core,
    now: Instant,
    conn: ConnId,
    /// Outputs taken from the core and not yet looked at.
    outputs: Outputs,
}

impl Client {
    fn with(config: CoreConfig, identity_exp: Option<u64>) -> Client {
        let now = Instant::now();
        let mut core = Core::new(config, now, 1_768_384_800_000);
        let identity = Identity {
            user_id: "tester".into(),
            roles: Box::default(),
            channel_patterns: None,
            expires_at_unix_ms: identity_exp,
            max_rate: None,
            delay: None,
        };
        let conn = core
            .handle_open(
                now,
                Open {
                    identity,
                    remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    channels: vec![],
                    deflate: None,
                },
            )
            .expect("admitted");
        Client {
            core,
            now,
            conn,
            outputs: Outputs::default(),
        }
    }

    fn new() -> Client {
        Client::with(CoreConfig::default(), None)
    }

    /// The next transmit, as the shell's drain would see it.
    fn next_transmit(&mut self) -> Option<Transmit> {
        if self.outputs.transmits.is_empty() {
            self.outputs.take_from(&mut self.core);
        }
        self.outputs.transmits.pop_front()
    }

    /// The core's next deadline.
    fn deadline(&mut self) -> Option<Instant> {
        self.outputs.take_from(&mut self.core);
        self.outputs.deadline
    }

    /// Every frame written to the client since the last call.
    fn frames(&mut self) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        for _ in 0..100 {
            let Some(transmit) = self.next_transmit() else {
                break;
            };
            frames.extend(transmit.frames.iter().map(|f| parse_server_frame(f)));
            self.core.handle_write_complete(self.now, transmit.conn);
        }
        frames
    }

    fn last(&mut self) -> ServerFrame {
        self.frames().pop().expect("a frame was written")
    }

    fn send(&mut self, frame: Value) -> ServerFrame {
        self.core
            .handle_text(self.now, self.conn, frame.to_string().as_bytes());
        self.last()
    }

    fn publish(&mut self, channel: &str, payload: &[u8]) {
        let publish = Publish {
            channel: channel.into(),
            pos: Some(Position::Offset {
                topic: "lines".to_owned(),
                partition: 0,
                offset: 1234,
            }),
            payload: Bytes::copy_from_slice(payload),
            key: None,
        };
        self.core.handle_publish(self.now, publish);
    }

    fn publish_at(&mut self, channel: &str, offset: i64, payload: &[u8]) {
        let publish = Publish {
            channel: channel.into(),
            pos: Some(Position::Offset {
                topic: "quotes".to_owned(),
                partition: 0,
                offset,
            }),
            payload: Bytes::copy_from_slice(payload),
            key: Some(Bytes::from_static(b"AAPL")),
        };
        self.core.handle_publish(self.now, publish);
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.deadline().filter(|at| *at <= target) {
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
        }
        self.now = target;
    }
}

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::assert_json_snapshot!($name, $value, {".connectionId" => "[id]", ".timestamp" => "[ts]"})
    };
}

#[test]
fn connected_frame() {
    let mut client = Client::new();
    snapshot!("connected", json_of(&client.last()));
}

#[test]
fn subscribed_and_unsubscribed_frames() {
    let mut client = Client::new();
    client.frames();
    snapshot!(
        "subscribed",
        json_of(&client.send(json!({"type":"subscribe","channels":["lines","analytics"],"id":1})))
    );
    snapshot!(
        "unsubscribed",
        json_of(&client.send(json!({"type":"unsubscribe","channels":["lines"],"id":2})))
    );
}

#[test]
fn stream_state_frames() {
    let mut client = Client::new();
    client.frames();
    for offset in 10..13 {
        client.publish_at("quotes", offset, format!(r#"{{"px":{offset}}}"#).as_bytes());
    }
    snapshot!(
        "subscribed_with_positions",
        json_of(&client.send(json!({"type":"subscribe","channels":["quotes"],"id":1})))
    );
    client.send(json!({"type":"unsubscribe","channels":["quotes"]}));
    client
        .core
        .handle_text(client.now, client.conn, json!({"type":"subscribe","channels":["quotes"],"since":{"quotes":"~0:0,quotes:0:10"},"id":2}).to_string().as_bytes());
    let frames: Vec<Value> = client.frames().iter().map(json_of).collect();
    assert_eq!(frames.len(), 3, "{frames:?}");
    snapshot!("subscribed_recovered", frames[0]);
    client.send(json!({"type":"unsubscribe","channels":["quotes"]}));
    snapshot!(
        "subscribed_not_recovered",
        json_of(&client.send(
            json!({"type":"subscribe","channels":["quotes"],"since":{"quotes":"~ffff:3"},"id":3})
        ))
    );
    client.send(json!({"type":"unsubscribe","channels":["quotes"]}));
    snapshot!(
        "message_snapshot",
        json_of(
            &client.send(json!({"type":"subscribe","channels":["quotes"],"snapshot":true,"id":4}))
        )
    );
    snapshot!(
        "error_bad_position",
        json_of(
            &client.send(
                json!({"type":"subscribe","channels":["lines"],"since":{"lines":"17"},"id":5})
            )
        )
    );
}

#[test]
fn max_rate_frames() {
    let mut client = Client::new();
    client.frames();
    snapshot!(
        "subscribed_with_max_rate",
        json_of(&client.send(json!({"type":"subscribe","channels":["lines"],"maxRate":4,"id":1})))
    );
    snapshot!(
        "error_bad_request",
        json_of(&client.send(json!({"type":"subscribe","channels":["lines"],"maxRate":0,"id":2})))
    );
}

#[test]
fn message_frames_for_json_text_and_binary_payloads() {
    let mut client = Client::new();
    client.send(json!({"type":"subscribe","channels":["lines"]}));
    client.publish("lines", br#"{"symbol":"AAPL","price":187.25}"#);
    snapshot!("message_json", json_of(&client.last()));
    client.publish("lines", b"market closed");
    snapshot!("message_text", json_of(&client.last()));
    client.publish("lines", &[0x00, 0x9f, 0x92, 0x96, 0xff]);
    snapshot!("message_binary", json_of(&client.last()));
}

#[test]
fn error_frames_for_each_code() {
    let config = CoreConfig {
        max_channels_per_connection: 1,
        rate_limit_per_second: 1,
        rate_limit_burst: 6,
        channel_rules: vec![ChannelRule {
            pattern: "admin-*".into(),
            access: Access::Roles(vec!["admin".into()]),
        }],
        ..CoreConfig::default()
    };
    let mut client = Client::with(config, None);
    client.frames();
    snapshot!(
        "error_bad_frame",
        json_of(&client.send(json!(["not", "an", "object"])))
    );
    snapshot!(
        "error_unknown_type",
        json_of(&client.send(json!({"type":"hello","id":5})))
    );
    snapshot!(
        "error_invalid_channel",
        json_of(&client.send(json!({"type":"subscribe","channels":["no spaces"],"id":6})))
    );
    snapshot!(
        "error_forbidden",
        json_of(&client.send(json!({"type":"subscribe","channels":["admin-alerts"],"id":7})))
    );
    snapshot!(
        "error_channel_limit",
        json_of(&client.send(json!({"type":"subscribe","channels":["a","b"],"id":8})))
    );
    client.core.handle_binary(client.now, client.conn);
    snapshot!("error_binary_not_supported", json_of(&client.last()));
    snapshot!(
        "error_rate_limited",
        json_of(&client.send(json!({"type":"ping","id":9})))
    );
}

#[test]
fn pong_app_ping_and_batched_frames() {
    let config = CoreConfig {
        app_ping: true,
        batch_max: 2,
        batch_delay: Duration::from_millis(10),
        ..CoreConfig::default()
    };
    let mut client = Client::with(config, None);
    client.frames();
    snapshot!("pong", json_of(&client.send(json!({"type":"ping","id":3}))));
    client.advance(Duration::from_secs(30));
    let heartbeat = client.frames();
    assert_eq!(heartbeat[0].opcode, 0x9, "a WebSocket Ping first");
    snapshot!("app_ping", json_of(&heartbeat[1]));
    client.send(json!({"type":"subscribe","channels":["lines"]}));
    client.publish("lines", br#"{"price":1}"#);
    client.publish("lines", br#"{"price":2}"#);
    snapshot!("batched", json_of(&client.last()));
}

fn close_after(config: CoreConfig, exp: Option<u64>, act: impl FnOnce(&mut Client)) -> Value {
    let mut client = Client::with(config, exp);
    client.frames();
    act(&mut client);
    close_of(&client.last())
}

#[test]
fn close_codes_and_reasons() {
    let d = CoreConfig::default;
    snapshot!(
        "close_1000_client_closed",
        close_after(d(), None, |c| c.core.handle_peer_close(c.now, c.conn))
    );
    snapshot!(
        "close_1001_shutdown",
        close_after(d(), None, |c| c.core.handle_shutdown(c.now))
    );
    let slow = CoreConfig {
        client_buffer_frames: 1,
        ..d()
    };
    snapshot!(
        "close_1008_slow_consumer",
        close_after(slow, None, |c| {
            c.send(json!({"type":"subscribe","channels":["lines"]}));
            c.publish("lines", b"1");
            let stuck = c.next_transmit();
            assert!(stuck.is_some(), "the first message is in flight");
            c.publish("lines", b"2");
            c.core.handle_write_complete(c.now, c.conn);
        })
    );
    snapshot!(
        "close_1008_connection_timeout",
        close_after(d(), None, |c| c.advance(Duration::from_secs(60)))
    );
    snapshot!(
        "close_1008_token_expired",
        close_after(d(), Some(1_768_384_801_000), |c| c
            .advance(Duration::from_secs(1)))
    );
    let strict = CoreConfig {
        rate_limit_per_second: 1,
        rate_limit_burst: 1,
        ..d()
    };
    snapshot!(
        "close_1008_rate_limit_exceeded",
        close_after(strict, None, |c| {
            for _ in 0..4 {
                c.core.handle_text(c.now, c.conn, br#"{"type":"ping"}"#);
            }
        })
    );
    snapshot!(
        "close_1002_protocol_error",
        close_after(d(), None, |c| c
            .core
            .handle_protocol_violation(c.now, c.conn))
    );
    snapshot!(
        "close_1007_invalid_utf8",
        close_after(d(), None, |c| c.core.handle_text(
            c.now,
            c.conn,
            b"\xc3\x28"
        ))
    );
    snapshot!(
        "close_1009_frame_too_big",
        close_after(d(), None, |c| c.core.handle_frame_too_big(c.now, c.conn))
    );
    snapshot!(
        "close_1007_bad_compressed_data",
        close_after(d(), None, |c| c
            .core
            .handle_bad_compressed_data(c.now, c.conn))
    );
}

#[test]
fn refresh_frames() {
    let exp = 1_768_384_800_000 + 120_000;
    let quiet = CoreConfig {
        heartbeat_interval: Duration::from_secs(3600),
        connection_timeout: Duration::from_secs(7200),
        ..CoreConfig::default()
    };
    let mut client = Client::with(quiet, Some(exp));
    client.frames();
    client.advance(Duration::from_secs(60));
    snapshot!("refresh_required", json_of(&client.last()));

    client.core.handle_text(
        client.now,
        client.conn,
        br#"{"type":"refresh","token":"a.b.c","id":5}"#,
    );
    let request = client.core.poll_verify().expect("handed to the shell");
    let refreshed = Identity {
        user_id: "tester".into(),
        roles: Box::default(),
        channel_patterns: Some(["lines".into()].into()),
        expires_at_unix_ms: Some(exp + 3_600_000),
        max_rate: None,
        delay: None,
    };
    client.send(json!({"type":"subscribe","channels":["lines","trade:AAPL"],"id":4}));
    client
        .core
        .handle_refresh_verified(client.now, client.conn, request.id, refreshed);
    let frames = client.frames();
    snapshot!("refreshed", json_of(&frames[0]));
    snapshot!("unsubscribed_forbidden", json_of(&frames[1]));

    client.core.handle_text(
        client.now,
        client.conn,
        br#"{"type":"refresh","token":"x.y.z","id":6}"#,
    );
    let request = client.core.poll_verify().expect("handed to the shell");
    client.core.handle_refresh_rejected(
        client.now,
        client.conn,
        request.id,
        "token_expired",
        "the token expired at 1768384700 (Unix seconds); request a new token",
    );
    snapshot!("error_token_expired_on_refresh", json_of(&client.last()));

    // A refresh whose `maxRate` claim narrows the rate of live subscriptions.
    client.core.handle_text(
        client.now,
        client.conn,
        br#"{"type":"refresh","token":"r.a.te","id":7}"#,
    );
    let request = client.core.poll_verify().expect("handed to the shell");
    let tier = Identity {
        user_id: "tester".into(),
        roles: Box::default(),
        channel_patterns: Some(["lines".into()].into()),
        expires_at_unix_ms: Some(exp + 3_600_000),
        max_rate: Some(1),
        delay: None,
    };
    client
        .core
        .handle_refresh_verified(client.now, client.conn, request.id, tier);
    snapshot!("refreshed_max_rate", json_of(&client.last()));
}
