//! Property tests: random operation sequences against the core, with the
//! shell's side (in-flight writes, dropped sockets) and a small reference
//! model kept here. After every step the core's invariants are checked:
//! bounded queues, messages only to the subscribers of the moment, order per
//! channel, acks whose `current` is the real set, silent clients closed in
//! time, one `Closed` per connection.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};
use ws_realtime::proto::position::Position;

#[path = "core_support/outputs.rs"]
mod outputs;

use outputs::Outputs;
use ws_realtime::core::*;
use ws_realtime::fuzzing::op::{Op, PayloadChoice};
use ws_realtime::proto::ws_frame::{self, Opcode};

const CHANNELS: [&str; 5] = ["a", "b", "c", "admin-x", "bad name"];
const TIMEOUT: Duration = Duration::from_secs(10);

/// One operation of the shared language (`ws_realtime::fuzzing::op`), drawn
/// from the part of it this test models: no recovery (its order check has
/// no replays) and no explicit positions (it numbers messages itself).
/// Channels index [`CHANNELS`]; odd users are admins; `LegacySubscribe`
/// sends the channel names as symbols.
fn op() -> impl Strategy<Value = Op> {
    let conn = any::<u8>();
    let channels = prop::collection::vec(0u8..5, 0..4);
    prop_oneof![
        3 => (any::<u8>(), channels.clone()).prop_map(|(user, channels)| Op::Open { user, address: 0, channels, expires_in_secs: None }),
        2 => (conn, channels.clone()).prop_map(|(conn, channels)| Op::Subscribe { conn, id: Some(1), channels }),
        2 => (conn, channels.clone()).prop_map(|(conn, symbols)| Op::LegacySubscribe { conn, symbols }),
        2 => (conn, channels).prop_map(|(conn, channels)| Op::Unsubscribe { conn, id: None, channels }),
        1 => conn.prop_map(|conn| Op::JsonPing { conn, id: Some(7) }),
        1 => (conn, prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(conn, bytes)| Op::Text { conn, bytes }),
        1 => conn.prop_map(|conn| Op::Binary { conn }),
        1 => conn.prop_map(|conn| Op::WsPing { conn, payload: b"p".to_vec() }),
        1 => conn.prop_map(|conn| Op::Activity { conn }),
        1 => conn.prop_map(|conn| Op::FrameTooBig { conn }),
        1 => conn.prop_map(|conn| Op::PeerClose { conn }),
        1 => conn.prop_map(|conn| Op::SocketClosed { conn }),
        8 => (0u8..4, 0u16..400, any::<bool>()).prop_map(|(channel, size, binary)| Op::Publish { channel, offset: None, payload: PayloadChoice::Filler { size, binary } }),
        5 => Just(Op::Poll),
        5 => conn.prop_map(|conn| Op::WriteComplete { conn }),
        3 => (0u16..15_000).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::Shutdown),
    ]
}

fn config() -> impl Strategy<Value = CoreConfig> {
    (
        2usize..8,
        200usize..3000,
        any::<bool>(),
        prop_oneof![Just(1usize), Just(3)],
        1u32..20,
        any::<bool>(),
    )
        .prop_map(
            |(frames, bytes, drop_oldest, batch_max, burst, app_ping)| CoreConfig {
                client_buffer_frames: frames,
                client_buffer_bytes: bytes,
                slow_client_policy: if drop_oldest {
                    SlowClientPolicy::DropOldest
                } else {
                    SlowClientPolicy::Disconnect
                },
                slow_close_grace: Duration::from_secs(2),
                heartbeat_interval: Duration::from_secs(4),
                connection_timeout: TIMEOUT,
                app_ping,
                max_channels_per_connection: 3,
                max_connections: 12,
                max_connections_per_ip: 0,
                rate_limit_per_second: 5,
                rate_limit_burst: burst,
                batch_max,
                batch_delay: Duration::from_millis(20),
                channel_rules: vec![ChannelRule {
                    pattern: "admin-*".into(),
                    access: Access::Roles(vec!["admin".into()]),
                }],
                ..CoreConfig::default()
            },
        )
}

/// What the test knows about one open connection.
#[derive(Debug, Default)]
struct Model {
    /// Subscriptions as the acks received so far imply.
    subscribed: BTreeSet<String>,
    /// Message numbers this connection was subscribed for when published.
    eligible: HashSet<u64>,
    /// Last message number received per channel (order check).
    last_received: HashMap<String, u64>,
    /// Last inbound frame.
    last_inbound: Option<Instant>,
    /// Frames handed to the shell and not yet written.
    in_flight: Option<Vec<Bytes>>,
}

/// The channel index `i` names.
fn channel_name(index: u8) -> &'static str {
    CHANNELS[usize::from(index) % CHANNELS.len()]
}

/// The channel names of `indices`.
fn names(indices: &[u8]) -> Vec<&'static str> {
    indices.iter().map(|&i| channel_name(i)).collect()
}

struct World {
    core: Core,
    /// What the core has output and the test has not yet looked at.
    outputs: Outputs,
    config: CoreConfig,
    now: Instant,
    open: Vec<ConnId>,
    models: HashMap<ConnId, Model>,
    next_message: u64,
}

impl World {
    fn pick(&self, index: u8) -> Option<ConnId> {
        (!self.open.is_empty()).then(|| self.open[usize::from(index) % self.open.len()])
    }

    fn inbound(&mut self, conn: ConnId) {
        if let Some(model) = self.models.get_mut(&conn) {
            model.last_inbound = Some(self.now);
        }
    }

    /// A text frame from held connection `index`, if there is one.
    fn text(&mut self, index: u8, bytes: &[u8]) {
        if let Some(conn) = self.pick(index) {
            self.inbound(conn);
            self.core.handle_text(self.now, conn, bytes);
        }
    }

    /// `conn`'s socket takes its write in flight, if it has one.
    fn write_complete(&mut self, conn: ConnId) -> Result<(), TestCaseError> {
        let Some(frames) = self.models.get_mut(&conn).and_then(|m| m.in_flight.take()) else {
            return Ok(());
        };
        self.receive(conn, &frames)?;
        self.core.handle_write_complete(self.now, conn);
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Open { user, channels, .. } => {
                let identity = Identity {
                    user_id: format!("user{user}").into(),
                    roles: if user % 2 == 1 {
                        ["admin".into()].into()
                    } else {
                        Box::default()
                    },
                    channel_patterns: None,
                    expires_at_unix_ms: None,
                    max_rate: None,
                    delay: None,
                };
                let channels = channels
                    .iter()
                    .map(|&i| CHANNELS[usize::from(i)].to_owned())
                    .collect();
                let open = Open {
                    identity,
                    remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    channels,
                    deflate: None,
                };
                if let Ok(conn) = self.core.handle_open(self.now, open) {
                    prop_assert!(
                        !self.models.contains_key(&conn),
                        "a live ConnId was handed out twice"
                    );
                    self.open.push(conn);
                    self.models.insert(
                        conn,
                        Model {
                            last_inbound: Some(self.now),
                            ..Model::default()
                        },
                    );
                }
            }
            Op::Subscribe { conn, channels, .. } => {
                let frame = json!({"type":"subscribe","channels":names(&channels),"id":1});
                self.text(conn, frame.to_string().as_bytes());
            }
            Op::LegacySubscribe { conn, symbols } => {
                let frame = json!({"action":"subscribe","symbols":names(&symbols),"id":"s"});
                self.text(conn, frame.to_string().as_bytes());
            }
            Op::Unsubscribe { conn, channels, .. } => {
                let Some(conn) = self.pick(conn) else {
                    return Ok(());
                };
                let names: Vec<&str> = channels.iter().map(|&i| CHANNELS[usize::from(i)]).collect();
                self.inbound(conn);
                self.core.handle_text(
                    self.now,
                    conn,
                    json!({"type":"unsubscribe","channels":names})
                        .to_string()
                        .as_bytes(),
                );
            }
            Op::JsonPing { conn, .. } => {
                let Some(conn) = self.pick(conn) else {
                    return Ok(());
                };
                self.inbound(conn);
                self.core
                    .handle_text(self.now, conn, br#"{"type":"ping","id":7}"#);
            }
            Op::JsonPong { conn } => self.text(conn, br#"{"type":"pong"}"#),
            Op::Text { conn, bytes } => {
                let Some(conn) = self.pick(conn) else {
                    return Ok(());
                };
                self.inbound(conn);
                self.core.handle_text(self.now, conn, &bytes);
            }
            Op::Binary { conn } => {
                let Some(conn) = self.pick(conn) else {
                    return Ok(());
                };
                self.inbound(conn);
                self.core.handle_binary(self.now, conn);
            }
            Op::WsPing { conn, .. } => {
                let Some(conn) = self.pick(conn) else {
                    return Ok(());
                };
                self.inbound(conn);
                self.core.handle_ping(self.now, conn, b"p");
            }
            Op::Activity { conn } => {
                let Some(conn) = self.pick(conn) else {
                    return Ok(());
                };
                self.inbound(conn);
                self.core.handle_activity(self.now, conn);
            }
            Op::FrameTooBig { conn } => {
                let Some(conn) = self.pick(conn) else {
                    return Ok(());
                };
                self.inbound(conn);
                self.core.handle_frame_too_big(self.now, conn);
            }
            Op::PeerClose { conn } => {
                let Some(conn) = self.pick(conn) else {
                    return Ok(());
                };
                self.inbound(conn);
                self.core.handle_peer_close(self.now, conn);
            }
            Op::SocketClosed { conn } => {
                let Some(conn) = self.pick(conn) else {
                    return Ok(());
                };
                self.core.handle_closed(self.now, conn);
                // The shell drops its side of the socket too.
                if let Some(model) = self.models.get_mut(&conn) {
                    model.in_flight = None;
                }
            }
            Op::Publish {
                channel, payload, ..
            } => {
                let (size, binary) = match payload {
                    PayloadChoice::Filler { size, binary } => (size, binary),
                    other => (other.bytes().len() as u16, false),
                };
                self.publish(channel_name(channel), size, binary)?;
            }
            Op::PublishBurst { channel, count } => {
                for _ in 0..count % 64 {
                    self.publish(channel_name(channel), 8, false)?;
                }
            }
            // Outside what this test models (see `op`): its generator never
            // draws them.
            Op::PublishAt { .. } | Op::Recover { .. } => {}
            Op::Poll => self.take_outputs()?,
            Op::WriteAll => {
                for conn in self.open.clone() {
                    self.write_complete(conn)?;
                }
            }
            Op::WriteComplete { conn } => {
                if let Some(conn) = self.pick(conn) {
                    self.write_complete(conn)?;
                }
            }
            Op::Advance { millis } => {
                let target = self.now + Duration::from_millis(u64::from(millis));
                for _ in 0..10_000 {
                    self.take_outputs()?;
                    match self.outputs.deadline {
                        Some(at) if at <= target => {
                            self.now = self.now.max(at);
                            self.core.handle_timeout(self.now);
                            self.drain_events()?;
                        }
                        _ => break,
                    }
                }
                self.now = target;
                self.core.handle_timeout(self.now);
                self.drain_events()?;
                for (&conn, model) in &self.models {
                    let last = model.last_inbound.expect("set at open");
                    if self.now.duration_since(last) >= TIMEOUT {
                        let state = self.core.inspect(conn);
                        prop_assert!(
                            state.is_none_or(|s| s.closing),
                            "{conn} silent past the timeout but not closed"
                        );
                    }
                }
            }
            Op::Shutdown => self.core.handle_shutdown(self.now),
        }
        self.drain_events()
    }

    fn publish(&mut self, channel: &str, size: u16, binary: bool) -> Result<(), TestCaseError> {
        self.next_message += 1;
        let n = self.next_message;
        let payload = if binary {
            let mut bytes = vec![0xffu8; usize::from(size)];
            bytes.extend_from_slice(&n.to_be_bytes());
            bytes
        } else {
            json!({"n": n, "pad": "x".repeat(usize::from(size))})
                .to_string()
                .into_bytes()
        };
        let before: HashMap<ConnId, ConnInspection> = self
            .open
            .iter()
            .filter_map(|&c| self.core.inspect(c).map(|s| (c, s)))
            .collect();
        let subscribers: Vec<ConnId> = before
            .iter()
            .filter(|(_, s)| !s.closing && s.channels.iter().any(|c| c == channel))
            .map(|(&c, _)| c)
            .collect();
        for conn in &subscribers {
            self.models.get_mut(conn).expect("open").eligible.insert(n);
        }
        let outcome = self.core.handle_publish(
            self.now,
            Publish {
                channel: channel.into(),
                pos: Some(Position::Offset {
                    topic: "lines".to_owned(),
                    partition: 0,
                    offset: n as i64,
                }),
                payload: Bytes::from(payload),
                key: None,
            },
        );
        prop_assert!(outcome.delivered <= subscribers.len());
        for (conn, was) in &before {
            let now = self.core.inspect(*conn);
            if !subscribers.contains(conn) {
                prop_assert_eq!(
                    now.as_ref(),
                    Some(was),
                    "a non-subscriber's queue changed on publish"
                );
            }
        }
        let closed_now = subscribers
            .iter()
            .filter(|c| self.core.inspect(**c).is_some_and(|s| s.closing))
            .count();
        if self.config.slow_client_policy == SlowClientPolicy::Disconnect {
            prop_assert_eq!(
                outcome.delivered + closed_now,
                subscribers.len(),
                "every subscriber got it or was closed"
            );
        }
        Ok(())
    }

    /// Checks frames as the client reads them.
    fn receive(&mut self, conn: ConnId, frames: &[Bytes]) -> Result<(), TestCaseError> {
        let model = self
            .models
            .get_mut(&conn)
            .expect("frames only for known connections");
        for frame in frames {
            let decoded = ws_frame::decode(frame).expect("the core writes well-formed frames");
            prop_assert_eq!(decoded.len, frame.len());
            if decoded.opcode != Opcode::Text {
                continue;
            }
            let value: Value =
                serde_json::from_slice(decoded.payload).expect("text frames are JSON");
            let items = match value {
                Value::Array(items) => items,
                other => vec![other],
            };
            for item in items {
                match item["type"].as_str() {
                    Some("message") => {
                        let channel = item["channel"].as_str().expect("channel").to_owned();
                        let pos = item["pos"].as_str().expect("pos");
                        let n: u64 = pos
                            .strip_prefix("lines:0:")
                            .and_then(|p| p.parse().ok())
                            .expect("pos is lines:0:n");
                        prop_assert!(
                            model.eligible.contains(&n),
                            "message {} reached a non-subscriber",
                            n
                        );
                        let last = model.last_received.insert(channel, n).unwrap_or(0);
                        prop_assert!(n > last, "order broken: {} after {}", n, last);
                    }
                    Some(kind @ ("subscribed" | "unsubscribed")) => {
                        for channel in item["channels"].as_array().expect("channels") {
                            let channel = channel.as_str().expect("string").to_owned();
                            if kind == "subscribed" {
                                model.subscribed.insert(channel);
                            } else {
                                model.subscribed.remove(&channel);
                            }
                        }
                        let current: Vec<String> = item["current"]
                            .as_array()
                            .expect("current")
                            .iter()
                            .map(|c| c.as_str().expect("string").to_owned())
                            .collect();
                        prop_assert_eq!(
                            current,
                            model.subscribed.iter().cloned().collect::<Vec<_>>()
                        );
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Takes the core's outputs. Transmits come first in the core's one
    /// output stream, so they are started (put in flight) as they are taken,
    /// as a shell would; events and disconnects wait for `drain_events`.
    fn take_outputs(&mut self) -> Result<(), TestCaseError> {
        self.outputs.take_from(&mut self.core);
        while let Some(transmit) = self.outputs.transmits.pop_front() {
            let model = self.models.get_mut(&transmit.conn);
            prop_assert!(model.is_some(), "transmit for a connection the core forgot");
            let model = model.expect("checked");
            prop_assert!(
                model.in_flight.is_none(),
                "a second transmit while one is in flight"
            );
            prop_assert!(!transmit.frames.is_empty());
            model.in_flight = Some(transmit.frames);
        }
        Ok(())
    }

    fn drain_events(&mut self) -> Result<(), TestCaseError> {
        self.take_outputs()?;
        for event in std::mem::take(&mut self.outputs.events) {
            if let Event::Closed { conn, .. } = event {
                prop_assert!(
                    self.models.remove(&conn).is_some(),
                    "Closed twice or for an unknown connection"
                );
                self.open.retain(|c| *c != conn);
            }
        }
        for conn in std::mem::take(&mut self.outputs.disconnects) {
            prop_assert!(
                !self.models.contains_key(&conn),
                "disconnect for a connection still in the core"
            );
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.core.stats().connections, self.open.len());
        let mut pairs = 0;
        for (&conn, model) in &self.models {
            let state = self
                .core
                .inspect(conn)
                .expect("an open connection is in the core");
            pairs += state.channels.len();
            let (max_frames, max_bytes) = (
                self.config.client_buffer_frames,
                self.config.client_buffer_bytes,
            );
            if state.closing {
                let (control_frames, control_bytes) = self.core.control_bound();
                prop_assert!(
                    state.held_frames <= max_frames + control_frames + 1
                        && state.held_bytes <= max_bytes + control_bytes + 128
                );
                prop_assert!(
                    state.channels.is_empty(),
                    "a closing connection still subscribed"
                );
            } else {
                let (messages, message_bytes) = (
                    state.held_frames - state.held_control_frames,
                    state.held_bytes - state.held_control_bytes,
                );
                prop_assert!(
                    messages <= max_frames,
                    "{} message frames held, bound {}",
                    messages,
                    max_frames
                );
                prop_assert!(
                    message_bytes <= max_bytes,
                    "{} message bytes held, bound {}",
                    message_bytes,
                    max_bytes
                );
                let (control_frames, control_bytes) = self.core.control_bound();
                prop_assert!(
                    state.held_control_frames <= control_frames
                        && state.held_control_bytes <= control_bytes,
                    "{} control frames / {} bytes held, bound {} / {}",
                    state.held_control_frames,
                    state.held_control_bytes,
                    control_frames,
                    control_bytes
                );
                if state.held_frames == 0 && model.in_flight.is_none() {
                    let real: Vec<String> = state.channels.clone();
                    prop_assert_eq!(
                        real,
                        model.subscribed.iter().cloned().collect::<Vec<_>>(),
                        "acks disagree with the real set"
                    );
                }
            }
        }
        prop_assert_eq!(self.core.stats().subscriptions, pairs);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(config in config(), ops in prop::collection::vec(op(), 1..150)) {
        let start = Instant::now();
        let mut world = World {
            core: Core::new(config.clone(), start, 1_768_384_800_000),
            outputs: Outputs::default(),
            config,
            now: start,
            open: Vec::new(),
            models: HashMap::new(),
            next_message: 0,
        };
        for op in ops {
            world.apply(op)?;
        }
        // Shut down and let every socket drain or time out: nothing is left.
        world.apply(Op::Shutdown)?;
        for _ in 0..50 {
            world.apply(Op::Poll)?;
            for conn in world.open.clone() {
                if let Some(frames) = world.models.get_mut(&conn).and_then(|m| m.in_flight.take()) {
                    world.receive(conn, &frames)?;
                    world.core.handle_write_complete(world.now, conn);
                    world.drain_events()?;
                }
            }
            if world.core.is_drained() {
                break;
            }
            world.apply(Op::Advance { millis: 500 })?;
        }
        prop_assert!(world.core.is_drained());
        // Stream state outlives connections (that is what recovery needs);
        // everything else is gone.
        let stats = world.core.stats();
        prop_assert_eq!(
            stats,
            Stats {
                history: stats.history,
                ..Stats::default()
            }
        );
    }
}
