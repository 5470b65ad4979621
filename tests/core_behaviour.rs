//! Behaviour of the core, one test per rule, driven through its public API
//! the way the shell drives it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use ws_realtime::core::*;
use ws_realtime::proto::ws_frame::{self, Opcode};

/// 2026-01-14T10:00:00.000Z
const ANCHOR_UNIX_MS: u64 = 1_768_384_800_000;

/// A frame the client received, decoded.
#[derive(Debug, Clone, PartialEq)]
enum Received {
    Json(Value),
    Ping,
    Pong(Vec<u8>),
    Close(u16, String),
}

struct Harness {
    core: Core,
    now: Instant,
}

fn identity(user: &str) -> Identity {
    Identity {
        user_id: user.into(),
        roles: vec![],
        channel_patterns: None,
        expires_at_unix_ms: None,
    }
}

fn open_as(identity: Identity) -> Open {
    Open {
        identity,
        remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
        channels: vec![],
    }
}

fn decode_all(frames: &[Bytes]) -> Vec<Received> {
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
    fn new(config: CoreConfig) -> Harness {
        let start = Instant::now();
        Harness {
            core: Core::new(config, start, ANCHOR_UNIX_MS),
            now: start,
        }
    }

    fn default() -> Harness {
        Harness::new(CoreConfig::default())
    }

    fn open(&mut self, user: &str) -> ConnId {
        let conn = self
            .core
            .handle_open(self.now, open_as(identity(user)))
            .expect("admitted");
        let connected = self.drain(conn);
        assert!(matches!(&connected[..], [Received::Json(v)] if v["type"] == "connected"));
        conn
    }

    fn text(&mut self, conn: ConnId, frame: Value) {
        self.core
            .handle_text(self.now, conn, frame.to_string().as_bytes());
    }

    /// Everything the shell would write to `conn`, completing each write;
    /// other connections' transmits are completed unread.
    fn drain(&mut self, conn: ConnId) -> Vec<Received> {
        let mut received = Vec::new();
        let mut others = Vec::new();
        for _ in 0..1000 {
            let Some(transmit) = self.core.poll_transmit() else {
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

    fn json(&mut self, conn: ConnId) -> Vec<Value> {
        self.drain(conn)
            .into_iter()
            .map(|r| match r {
                Received::Json(v) => v,
                other => panic!("expected JSON, got {other:?}"),
            })
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.core.poll_event()).collect()
    }

    fn disconnects(&mut self) -> Vec<ConnId> {
        std::iter::from_fn(|| self.core.poll_disconnect()).collect()
    }

    /// Moves time on, firing every deadline on the way as the shell would.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..10_000 {
            match self.core.poll_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.core.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = target;
    }

    fn publish(&mut self, channel: &str, payload: &[u8]) -> PublishOutcome {
        let publish = Publish {
            channel: channel.into(),
            pos: Position::Assigned,
            payload: Bytes::copy_from_slice(payload),
        };
        self.core.handle_publish(self.now, publish)
    }
}

fn subscribe(h: &mut Harness, conn: ConnId, channels: &[&str]) -> Value {
    h.text(conn, json!({"type":"subscribe","channels":channels,"id":1}));
    let mut frames = h.json(conn);
    assert_eq!(frames.len(), 1, "{frames:?}");
    frames.remove(0)
}

#[test]
fn connected_frame_carries_ids_and_a_timestamp_from_the_anchor() {
    let config = CoreConfig {
        server_id: "gw-1".into(),
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    h.now += Duration::from_millis(1234);
    let conn = h
        .core
        .handle_open(h.now, open_as(identity("tester")))
        .expect("admitted");
    let frames = h.json(conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "connected");
    assert_eq!(frames[0]["userId"], "tester");
    assert_eq!(frames[0]["serverId"], "gw-1");
    assert_eq!(frames[0]["timestamp"], "2026-01-14T10:00:01.234Z");
    assert!(
        frames[0]["connectionId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(matches!(&h.events()[..], [Event::Opened { user_id, .. }] if user_id == "tester"));
}

#[test]
fn connection_ids_are_unique() {
    let mut h = Harness::default();
    let a = h
        .core
        .handle_open(h.now, open_as(identity("a")))
        .expect("admitted");
    h.core.handle_closed(h.now, a);
    let b = h
        .core
        .handle_open(h.now, open_as(identity("a")))
        .expect("admitted");
    assert_eq!(a, b, "the slab key is reused");
    let ids: Vec<String> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Opened { connection_id, .. } => Some(connection_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn subscribe_acks_with_id_requested_channels_and_sorted_current() {
    let mut h = Harness::default();
    let conn = h.open("u");
    assert_eq!(
        subscribe(&mut h, conn, &["lines"]),
        json!({"type":"subscribed","id":1,"channels":["lines"],"current":["lines"]})
    );
    assert_eq!(
        subscribe(&mut h, conn, &["analytics", "lines", "analytics"]),
        json!({"type":"subscribed","id":1,"channels":["analytics","lines"],"current":["analytics","lines"]})
    );
    h.text(
        conn,
        json!({"type":"unsubscribe","channels":["lines","nope"],"id":2}),
    );
    assert_eq!(
        h.json(conn),
        [json!({"type":"unsubscribed","id":2,"channels":["lines","nope"],"current":["analytics"]})]
    );
}

#[test]
fn subscribe_is_all_or_nothing() {
    let config = CoreConfig {
        max_channels_per_connection: 3,
        channel_rules: vec![ChannelRule {
            pattern: "admin-*".into(),
            access: Access::Roles(vec!["admin".into()]),
        }],
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    for (channels, code, named) in [
        (vec!["b", "bad name", "c"], "invalid_channel", "bad name"),
        (vec!["b", "admin-x"], "forbidden", "admin-x"),
        (vec!["b", "c", "d"], "channel_limit", "d"),
    ] {
        let err = subscribe(&mut h, conn, &channels);
        assert_eq!(err["type"], "error");
        assert_eq!(err["id"], 1);
        assert_eq!(err["code"], code);
        assert!(
            err["message"].as_str().expect("message").contains(named),
            "{err}"
        );
        assert_eq!(
            h.core.inspect(conn).expect("open").channels,
            ["a"],
            "set unchanged after {code}"
        );
    }
    assert_eq!(
        subscribe(&mut h, conn, &["a", "b", "c"])["current"],
        json!(["a", "b", "c"])
    );
}

#[test]
fn symbols_alias_subscribes_upper_cased_trade_channels() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.text(
        conn,
        json!({"action":"subscribe","symbols":["aapl","msft"]}),
    );
    assert_eq!(
        h.json(conn),
        [
            json!({"type":"subscribed","channels":["trade:AAPL","trade:MSFT"],"current":["trade:AAPL","trade:MSFT"]})
        ]
    );
}

#[test]
fn string_ids_are_echoed_as_given() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.text(conn, json!({"type":"ping","id":"abc"}));
    let frames = h.json(conn);
    assert_eq!(frames[0]["id"], "abc");
    assert_eq!(frames[0]["type"], "pong");
}

#[test]
fn connect_time_channels_are_acked_right_after_connected_without_id() {
    let mut h = Harness::default();
    let mut open = open_as(identity("u"));
    open.channels = vec!["lines".into(), "analytics".into()];
    let conn = h.core.handle_open(h.now, open).expect("admitted");
    let frames = h.json(conn);
    assert_eq!(frames[0]["type"], "connected");
    assert_eq!(
        frames[1],
        json!({"type":"subscribed","channels":["lines","analytics"],"current":["analytics","lines"]})
    );
}

#[test]
fn forbidden_connect_time_channel_gets_an_error_without_id_and_subscribes_nothing() {
    let mut h = Harness::default();
    let mut who = identity("u");
    who.channel_patterns = Some(vec!["trade:*".into()]);
    let mut open = open_as(who);
    open.channels = vec!["trade:A".into(), "lines".into()];
    let conn = h.core.handle_open(h.now, open).expect("admitted");
    let frames = h.json(conn);
    assert_eq!(frames[1]["type"], "error");
    assert_eq!(frames[1]["code"], "forbidden");
    assert!(frames[1].get("id").is_none());
    assert!(h.core.inspect(conn).expect("open").channels.is_empty());
}

#[test]
fn token_channels_claim_restricts_subscriptions() {
    let mut h = Harness::default();
    let mut who = identity("u");
    who.channel_patterns = Some(vec!["trade:*".into()]);
    let conn = h.core.handle_open(h.now, open_as(who)).expect("admitted");
    let _ = h.drain(conn);
    assert_eq!(
        subscribe(&mut h, conn, &["trade:AAPL"])["type"],
        "subscribed"
    );
    assert_eq!(subscribe(&mut h, conn, &["lines"])["code"], "forbidden");
}

#[test]
fn owner_rule_admits_only_the_named_user() {
    let config = CoreConfig {
        channel_rules: vec![ChannelRule {
            pattern: "user:{sub}".into(),
            access: Access::Owner,
        }],
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let alice = h.open("alice");
    let bob = h.open("bob");
    assert_eq!(
        subscribe(&mut h, alice, &["user:alice"])["type"],
        "subscribed"
    );
    assert_eq!(subscribe(&mut h, bob, &["user:alice"])["code"], "forbidden");
}

#[test]
fn publish_reaches_only_subscribers_and_shares_one_buffer() {
    let mut h = Harness::default();
    let a = h.open("a");
    let b = h.open("b");
    let c = h.open("c");
    subscribe(&mut h, a, &["lines"]);
    subscribe(&mut h, b, &["lines"]);
    subscribe(&mut h, c, &["other"]);
    let outcome = h.publish("lines", br#"{"px":1}"#);
    assert_eq!(
        outcome,
        PublishOutcome {
            delivered: 2,
            kind: PayloadKind::Json
        }
    );
    let mut transmits: Vec<Transmit> = std::iter::from_fn(|| h.core.poll_transmit()).collect();
    transmits.sort_by_key(|t| t.conn);
    assert_eq!(transmits.iter().map(|t| t.conn).collect::<Vec<_>>(), [a, b]);
    assert_eq!(
        transmits[0].frames[0].as_ptr(),
        transmits[1].frames[0].as_ptr(),
        "serialize-once: same buffer"
    );
    assert_eq!(
        decode_all(&transmits[0].frames),
        [Received::Json(
            json!({"type":"message","channel":"lines","pos":"1","data":{"px":1}})
        )]
    );
}

#[test]
fn assigned_positions_count_per_channel_from_one_and_offsets_show_partition() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a", "b"]);
    h.publish("a", b"1");
    h.publish("a", b"2");
    h.publish("b", b"3");
    let pos: Vec<Value> = h.json(conn).into_iter().map(|m| m["pos"].clone()).collect();
    assert_eq!(pos, [json!("1"), json!("2"), json!("1")]);
    h.core.handle_publish(
        h.now,
        Publish {
            channel: "a".into(),
            pos: Position::Offset {
                partition: 3,
                offset: 1234,
            },
            payload: Bytes::from_static(b"x"),
        },
    );
    assert_eq!(h.json(conn)[0]["pos"], "3:1234");
}

#[test]
fn payloads_are_embedded_as_json_text_or_base64() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    assert_eq!(h.publish("a", b"plain text").kind, PayloadKind::Text);
    assert_eq!(h.publish("a", &[0xff, 0xfe]).kind, PayloadKind::Binary);
    let frames = h.json(conn);
    assert_eq!(frames[0]["data"], "plain text");
    assert_eq!(frames[1]["b64data"], "//4=");
    assert!(frames[1].get("data").is_none());
}

#[test]
fn only_one_batch_is_in_flight_until_the_write_completes() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.publish("a", b"1");
    h.publish("a", b"2");
    let first = h.core.poll_transmit().expect("queued frames go out");
    assert_eq!(first.frames.len(), 2, "everything queued leaves together");
    h.publish("a", b"3");
    assert_eq!(
        h.core.poll_transmit(),
        None,
        "nothing more until the write completes"
    );
    h.core.handle_write_complete(h.now, conn);
    assert_eq!(h.core.poll_transmit().map(|t| t.frames.len()), Some(1));
}

#[test]
fn slow_client_is_closed_with_1008_and_told_why() {
    let config = CoreConfig {
        client_buffer_frames: 4,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let slow = h.open("slow");
    let fast = h.open("fast");
    subscribe(&mut h, slow, &["a"]);
    subscribe(&mut h, fast, &["a"]);
    h.publish("a", b"1");
    let mut stuck = None;
    while let Some(t) = h.core.poll_transmit() {
        if t.conn == slow {
            stuck = Some(t);
        } else {
            h.core.handle_write_complete(h.now, t.conn);
        }
    }
    assert!(
        stuck.is_some(),
        "the slow client has a write in flight that never completes"
    );
    for i in 0..10 {
        h.publish("a", format!("{i}").as_bytes());
        assert_eq!(
            h.json(fast).len(),
            1,
            "the fast client keeps getting every message"
        );
    }
    let events = h.events();
    assert!(events.contains(&Event::SlowConsumer { conn: slow }));
    assert!(events.iter().any(|e| matches!(e,
        Event::MessagesDropped { conn, reason: DropReason::SlowConsumerClosed, count } if *conn == slow && *count >= 1)));
    // The stuck write completes at last: the close frame is next, and alone.
    h.core.handle_write_complete(h.now, slow);
    assert_eq!(
        h.drain(slow),
        [Received::Close(1008, "slow consumer".into())]
    );
    assert_eq!(h.disconnects(), [slow]);
    assert!(h.events().iter().any(|e| matches!(e,
        Event::Closed { conn, reason: CloseReason::SlowConsumer, .. } if *conn == slow)));
    assert_eq!(
        h.core.stats().connections,
        1,
        "the fast client is untouched"
    );
}

#[test]
fn slow_client_is_dropped_after_grace_if_the_close_frame_is_never_written() {
    let config = CoreConfig {
        client_buffer_frames: 2,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.publish("a", b"1");
    let _stuck = h.core.poll_transmit().expect("a batch");
    h.publish("a", b"2");
    h.publish("a", b"3");
    assert!(h.core.inspect(conn).expect("still known").closing);
    assert!(h.disconnects().is_empty());
    h.advance(Duration::from_secs(3));
    assert_eq!(h.disconnects(), [conn]);
    assert!(h.core.inspect(conn).is_none());
}

#[test]
fn drop_oldest_keeps_client_and_counts_drops() {
    let config = CoreConfig {
        client_buffer_frames: 3,
        slow_client_policy: SlowClientPolicy::DropOldest,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    for i in 0..10 {
        h.publish("a", format!("{i}").as_bytes());
    }
    let dropped: u64 = h
        .events()
        .iter()
        .map(|e| match e {
            Event::MessagesDropped {
                reason: DropReason::DropOldest,
                count,
                ..
            } => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(dropped, 7);
    let data: Vec<Value> = h
        .json(conn)
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(
        data,
        [json!(7), json!(8), json!(9)],
        "the newest survive, in order"
    );
    assert!(!h.core.inspect(conn).expect("still open").closing);
}

#[test]
fn byte_bound_closes_a_slow_client_too() {
    let config = CoreConfig {
        client_buffer_bytes: 1000,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    let big = vec![b'x'; 400];
    for _ in 0..3 {
        h.publish("a", &big);
        assert!(h.core.inspect(conn).is_some_and(|c| c.held_bytes <= 1000));
    }
    assert!(h.core.inspect(conn).expect("closing, not gone").closing);
}

#[test]
fn heartbeat_ping_is_sent_every_interval() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.advance(Duration::from_secs(30));
    assert_eq!(h.drain(conn), [Received::Ping]);
    h.core.handle_activity(h.now, conn);
    h.advance(Duration::from_secs(30));
    assert_eq!(h.drain(conn), [Received::Ping]);
}

#[test]
fn app_ping_is_sent_when_enabled() {
    let config = CoreConfig {
        app_ping: true,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    h.advance(Duration::from_secs(30));
    let frames = h.drain(conn);
    assert_eq!(frames[0], Received::Ping);
    assert_eq!(
        frames[1],
        Received::Json(json!({"type":"ping","timestamp": ANCHOR_UNIX_MS + 30_000}))
    );
}

#[test]
fn silent_client_is_closed_after_timeout() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.advance(Duration::from_secs(59));
    assert!(!h.core.inspect(conn).expect("open").closing);
    h.advance(Duration::from_secs(1));
    assert!(h.events().contains(&Event::HeartbeatFailure { conn }));
    let frames = h.drain(conn);
    assert_eq!(
        frames.last(),
        Some(&Received::Close(1008, "connection timeout".into()))
    );
    assert_eq!(h.disconnects(), [conn]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Closed {
            reason: CloseReason::HeartbeatTimeout,
            ..
        }
    )));
}

#[test]
fn any_inbound_frame_resets_the_idle_clock() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.advance(Duration::from_secs(50));
    h.core.handle_ping(h.now, conn, b"hi");
    h.advance(Duration::from_secs(50));
    h.text(conn, json!({"type":"pong"}));
    h.advance(Duration::from_secs(50));
    assert!(!h.core.inspect(conn).expect("open").closing);
    h.advance(Duration::from_secs(10));
    assert!(h.core.inspect(conn).is_none_or(|c| c.closing));
}

#[test]
fn expired_token_closes_with_1008() {
    let mut h = Harness::default();
    let mut who = identity("u");
    who.expires_at_unix_ms = Some(ANCHOR_UNIX_MS + 5_000);
    let conn = h.core.handle_open(h.now, open_as(who)).expect("admitted");
    let _ = h.drain(conn);
    h.advance(Duration::from_secs(4));
    assert!(!h.core.inspect(conn).expect("open").closing);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.drain(conn),
        [Received::Close(1008, "token expired".into())]
    );
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Closed {
            reason: CloseReason::TokenExpired,
            ..
        }
    )));
}

#[test]
fn rate_limited_frame_gets_error_and_is_not_processed() {
    let config = CoreConfig {
        rate_limit_per_second: 1,
        rate_limit_burst: 2,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    subscribe(&mut h, conn, &["b"]);
    let err = subscribe(&mut h, conn, &["c"]);
    assert_eq!(err["code"], "rate_limited");
    assert_eq!(h.core.inspect(conn).expect("open").channels, ["a", "b"]);
    assert!(h.events().contains(&Event::RateLimited { conn }));
    h.advance(Duration::from_secs(1));
    assert_eq!(subscribe(&mut h, conn, &["c"])["type"], "subscribed");
}

#[test]
fn sustained_flooding_closes_with_rate_limit_exceeded() {
    let config = CoreConfig {
        rate_limit_per_second: 1,
        rate_limit_burst: 2,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    for _ in 0..10 {
        h.text(conn, json!({"type":"ping"}));
    }
    let frames = h.drain(conn);
    assert_eq!(
        frames.last(),
        Some(&Received::Close(1008, "rate limit exceeded".into()))
    );
}

#[test]
fn occasional_rate_limit_hits_do_not_close_the_connection() {
    let config = CoreConfig {
        rate_limit_per_second: 1,
        rate_limit_burst: 1,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    for _ in 0..20 {
        h.text(conn, json!({"type":"ping"}));
        h.text(conn, json!({"type":"ping"}));
        let frames: Vec<Received> = h
            .drain(conn)
            .into_iter()
            .filter(|f| *f != Received::Ping)
            .collect();
        assert!(
            matches!(&frames[1], Received::Json(e) if e["code"] == "rate_limited"),
            "{frames:?}"
        );
        h.advance(Duration::from_secs(11));
        h.core.handle_activity(h.now, conn);
    }
    assert!(!h.core.inspect(conn).expect("open").closing);
}

#[test]
fn oversized_frame_closes_with_1009() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.core.handle_frame_too_big(h.now, conn);
    assert_eq!(
        h.drain(conn),
        [Received::Close(1009, "frame too big".into())]
    );
    assert_eq!(h.disconnects(), [conn]);
}

#[test]
fn bad_frames_get_error_frames_with_stable_codes() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.core.handle_binary(h.now, conn);
    h.core.handle_text(h.now, conn, b"\xff\xfe");
    h.core.handle_text(h.now, conn, b"{not json");
    h.text(conn, json!({"type":"dance","id":9}));
    let frames = h.json(conn);
    let codes: Vec<&str> = frames
        .iter()
        .map(|f| f["code"].as_str().expect("code"))
        .collect();
    assert_eq!(
        codes,
        [
            "binary_not_supported",
            "bad_frame",
            "bad_frame",
            "unknown_type"
        ]
    );
    assert_eq!(frames[3]["id"], 9);
    assert!(
        frames
            .iter()
            .all(|f| f["type"] == "error" && f["message"].as_str().is_some_and(|m| m.len() > 10))
    );
}

#[test]
fn json_ping_gets_pong_with_id_and_unix_ms() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.now += Duration::from_millis(250);
    h.text(conn, json!({"type":"ping","id":3}));
    assert_eq!(
        h.json(conn),
        [json!({"type":"pong","id":3,"timestamp": ANCHOR_UNIX_MS + 250})]
    );
}

#[test]
fn websocket_ping_is_answered_with_pong_echoing_payload() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.core.handle_ping(h.now, conn, b"abc");
    assert_eq!(h.drain(conn), [Received::Pong(b"abc".to_vec())]);
}

#[test]
fn shutdown_closes_everyone_with_1001_after_queued_frames_and_refuses_opens() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.publish("a", b"1");
    h.core.handle_shutdown(h.now);
    assert_eq!(
        h.core.handle_open(h.now, open_as(identity("late"))),
        Err(Refusal::ShuttingDown)
    );
    assert!(!h.core.is_drained());
    let frames = h.drain(conn);
    assert!(matches!(&frames[0], Received::Json(m) if m["type"] == "message"));
    assert_eq!(
        frames[1],
        Received::Close(1001, "server shutting down".into())
    );
    assert_eq!(h.disconnects(), [conn]);
    assert!(h.core.is_drained());
}

#[test]
fn peer_close_is_answered_with_1000_then_disconnected() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.core.handle_peer_close(h.now, conn);
    assert_eq!(
        h.drain(conn),
        [Received::Close(1000, "normal closure".into())]
    );
    assert_eq!(h.disconnects(), [conn]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Closed {
            reason: CloseReason::ClientClosed,
            ..
        }
    )));
}

#[test]
fn lost_connection_is_forgotten_at_once_without_disconnect_output() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.events();
    h.core.handle_closed(h.now, conn);
    assert!(h.disconnects().is_empty());
    assert_eq!(h.core.stats(), Stats::default());
    assert!(matches!(
        &h.events()[..],
        [Event::Closed {
            reason: CloseReason::ConnectionLost,
            ..
        }]
    ));
    h.core.handle_closed(h.now, conn);
    assert!(h.events().is_empty(), "Closed is reported once");
    assert_eq!(h.publish("a", b"x").delivered, 0);
}

#[test]
fn connection_limits_refuse_opens() {
    let config = CoreConfig {
        max_connections: 3,
        max_connections_per_ip: 2,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let a = h
        .core
        .handle_open(h.now, open_as(identity("a")))
        .expect("first");
    h.core
        .handle_open(h.now, open_as(identity("b")))
        .expect("second");
    assert_eq!(
        h.core.handle_open(h.now, open_as(identity("c"))),
        Err(Refusal::TooManyFromAddress)
    );
    let mut other = open_as(identity("d"));
    other.remote = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    h.core
        .handle_open(h.now, other.clone())
        .expect("other address");
    assert_eq!(
        h.core.handle_open(h.now, other.clone()),
        Err(Refusal::TooManyConnections)
    );
    h.core.handle_closed(h.now, a);
    h.core
        .handle_open(h.now, open_as(identity("e")))
        .expect("a slot was freed");
}

#[test]
fn batching_sends_waiting_messages_as_one_array_frame() {
    let config = CoreConfig {
        batch_max: 3,
        batch_delay: Duration::from_millis(50),
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    for i in 0..4 {
        h.publish("a", format!("{i}").as_bytes());
    }
    let frames = h.json(conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].as_array().map(Vec::len), Some(3));
    assert_eq!(frames[0][2]["data"], 2);
    h.advance(Duration::from_millis(50));
    assert_eq!(
        h.json(conn),
        [json!({"type":"message","channel":"a","pos":"4","data":3})],
        "a lone message goes as is"
    );
}

#[test]
fn stats_count_connections_subscriptions_and_channels() {
    let mut h = Harness::default();
    let a = h.open("a");
    let b = h.open("b");
    subscribe(&mut h, a, &["x", "y"]);
    subscribe(&mut h, b, &["y"]);
    assert_eq!(
        h.core.stats(),
        Stats {
            connections: 2,
            subscriptions: 3,
            channels: 2
        }
    );
}

#[test]
fn empty_connect_time_channel_names_are_ignored() {
    let mut h = Harness::default();
    let mut open = open_as(identity("u"));
    open.channels = vec!["".into(), "lines".into(), "".into()];
    let conn = h.core.handle_open(h.now, open).expect("admitted");
    let frames = h.json(conn);
    assert_eq!(
        frames[1],
        json!({"type":"subscribed","channels":["lines"],"current":["lines"]})
    );
}

#[test]
fn assigned_positions_keep_counting_when_a_channel_loses_its_subscribers() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.publish("a", b"1");
    h.text(conn, json!({"type":"unsubscribe","channels":["a"]}));
    h.publish("a", b"2");
    h.text(conn, json!({"type":"subscribe","channels":["a"]}));
    h.publish("a", b"3");
    let pos: Vec<Value> = h
        .json(conn)
        .into_iter()
        .filter(|f| f["type"] == "message")
        .map(|m| m["pos"].clone())
        .collect();
    assert_eq!(pos, [json!("1"), json!("3")]);
}
