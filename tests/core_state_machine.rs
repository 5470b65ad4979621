//! The core against a simple reference model, with `proptest-state-machine`:
//! random sequences of opens, subscribes, unsubscribes, publishes, socket
//! writes that complete or stall, closes, lost sockets and shutdown.
//!
//! The model knows each connection's subscription set and which messages it
//! is owed. After every step the test drains the core like the shell does
//! and checks:
//! * the core's table sizes (`stats`) match the model's sets;
//! * each connection receives only messages of channels it was subscribed to
//!   when they were published, in publish order, without duplicates, and
//!   under `disconnect` without gaps;
//! * one transmit never holds more messages than the queue bound, nor more
//!   control frames than their own bound, and a connection gets no transmit while one is unacknowledged;
//! * a connection closed as a slow consumer really had a full queue;
//! * peer closes, lost sockets and shutdown remove connections, shutdown
//!   closes everyone with 1001, and the drained core is empty.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use ws_realtime::core::{
    CloseReason, ConnId, Core, CoreConfig, Event, Identity, Open, Output, Publish,
    SlowClientPolicy, Transmit,
};
use ws_realtime::fuzzing::op::{Op, PayloadChoice};
use ws_realtime::proto::position::Position;

/// The few channels the model plays with, so subscriptions overlap.
const CHANNELS: [&str; 3] = ["lines", "books", "trades"];

/// The queue bound under test: small, so overflows happen often.
const BUFFER: usize = 4;

/// The reference model's view of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelConn {
    /// Channels it is subscribed to.
    channels: BTreeSet<&'static str>,
    /// False once the client closed, the socket was lost, or shutdown
    /// started (the core's own slow-consumer closes are tracked by the test,
    /// which knows the policy's outcome only after the fact).
    open: bool,
}

/// The reference state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    /// Every connection ever opened, by open order.
    conns: Vec<ModelConn>,
    /// Shutdown has begun.
    shutting_down: bool,
    /// Which slow-client policy this case runs.
    policy: SlowClientPolicy,
}

struct CoreModel;

/// A set of channels, by index into [`CHANNELS`].
fn channel_set() -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::subsequence(vec![0u8, 1, 2], 0..=CHANNELS.len())
}

/// The channel index `i` names.
fn channel(index: u8) -> &'static str {
    CHANNELS[usize::from(index) % CHANNELS.len()]
}

/// A step of the shared operation language (`ws_realtime::fuzzing::op`),
/// from the part this model covers. Connection indices address every
/// connection ever opened (the model keeps closed ones), modulo their count.
fn open(channels: Vec<u8>) -> Op {
    Op::Open {
        user: 0,
        address: 0,
        channels,
        expires_in_secs: None,
    }
}

impl ReferenceStateMachine for CoreModel {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        prop_oneof![
            Just(SlowClientPolicy::Disconnect),
            Just(SlowClientPolicy::DropOldest)
        ]
        .prop_map(|policy| Model {
            conns: Vec::new(),
            shutting_down: false,
            policy,
        })
        .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        if state.conns.is_empty() {
            return channel_set().prop_map(open).boxed();
        }
        let conn = any::<u8>();
        prop_oneof![
            3 => channel_set().prop_map(open),
            4 => (conn, channel_set()).prop_map(|(conn, channels)| Op::Subscribe { conn, id: Some(1), channels }),
            2 => (conn, channel_set()).prop_map(|(conn, channels)| Op::Unsubscribe { conn, id: Some(1), channels }),
            10 => (0u8..3).prop_map(|channel| Op::Publish { channel, offset: None, payload: PayloadChoice::Filler { size: 0, binary: false } }),
            4 => conn.prop_map(|conn| Op::WriteComplete { conn }),
            3 => Just(Op::WriteAll),
            1 => conn.prop_map(|conn| Op::PeerClose { conn }),
            1 => conn.prop_map(|conn| Op::SocketClosed { conn }),
            2 => (1u16..500).prop_map(|millis| Op::Advance { millis }),
            1 => Just(Op::Shutdown),
        ]
        .boxed()
    }

    fn preconditions(state: &Model, step: &Op) -> bool {
        // Shrinking may remove the opens a step refers to.
        match step {
            Op::Subscribe { .. }
            | Op::Unsubscribe { .. }
            | Op::WriteComplete { .. }
            | Op::PeerClose { .. }
            | Op::SocketClosed { .. } => !state.conns.is_empty(),
            _ => true,
        }
    }

    fn apply(mut state: Model, step: &Op) -> Model {
        let count = state.conns.len();
        match step {
            Op::Open { channels, .. } if !state.shutting_down => {
                state.conns.push(ModelConn {
                    channels: channels.iter().map(|&c| channel(c)).collect(),
                    open: true,
                });
            }
            Op::Subscribe { conn, channels, .. } => {
                let conn = &mut state.conns[usize::from(*conn) % count];
                if conn.open && !state.shutting_down {
                    conn.channels.extend(channels.iter().map(|&c| channel(c)));
                }
            }
            Op::Unsubscribe { conn, channels, .. } => {
                let conn = &mut state.conns[usize::from(*conn) % count];
                if conn.open && !state.shutting_down {
                    for &c in channels {
                        conn.channels.remove(channel(c));
                    }
                }
            }
            Op::PeerClose { conn } | Op::SocketClosed { conn } => {
                let conn = &mut state.conns[usize::from(*conn) % count];
                conn.open = false;
                conn.channels.clear();
            }
            Op::Shutdown => {
                state.shutting_down = true;
            }
            // Publishes, writes and time change no subscription; the other
            // operations are never drawn here.
            _ => {}
        }
        state
    }
}

/// The test's view of one connection in the real core.
#[derive(Debug, Default)]
struct Sut {
    /// The core's handle, while the core holds the connection.
    id: Option<ConnId>,
    /// The handle it had, kept after the core let go: events about a
    /// connection follow its disconnect in the drain order.
    last_id: Option<ConnId>,
    /// A transmit handed out and not yet acknowledged.
    in_flight: Option<Vec<Bytes>>,
    /// Messages owed, in publish order: published on one of its channels
    /// while it was live.
    owed: VecDeque<u64>,
    /// Owed messages not yet seen in any transmit (queued in the core).
    untransmitted: usize,
    /// Requests sent since the last transmit (each may queue one frame).
    requests_since_transmit: usize,
    /// Messages it has received, in order.
    received: Vec<u64>,
    /// The close code it received, if any.
    close_code: Option<u16>,
    /// Closed by the core as a slow consumer.
    slow: bool,
    /// A close is under way (peer close, slow consumer, shutdown): the core
    /// may hold the connection until its close frame is written.
    closing: bool,
}

/// The system under test: the real core plus what the test has observed.
struct Harness {
    core: Core,
    /// The core's next deadline, from the last drain.
    deadline: Option<Instant>,
    now: Instant,
    conns: Vec<Sut>,
    /// Publish sequence: the payload carries it, so frames can be matched.
    next_message: u64,
    /// Channel of every published message.
    channel_of: HashMap<u64, &'static str>,
    /// Messages the core reported dropping under `drop_oldest`, per conn.
    dropped: HashMap<ConnId, u64>,
    policy: SlowClientPolicy,
}

fn config(policy: SlowClientPolicy) -> CoreConfig {
    CoreConfig {
        client_buffer_frames: BUFFER,
        slow_client_policy: policy,
        // Time only advances in small ticks: heartbeats and timeouts are the
        // subject of other tests, not of this model.
        heartbeat_interval: Duration::from_secs(3600),
        connection_timeout: Duration::from_secs(7200),
        rate_limit_per_second: 10_000,
        rate_limit_burst: 10_000,
        ..CoreConfig::default()
    }
}

/// One decoded server frame.
#[derive(Debug)]
enum Wire {
    Text(serde_json::Value),
    Close(u16),
    Other,
}

/// Splits a transmit's bytes into frames (server frames are unmasked).
fn decode(frames: &[Bytes]) -> Vec<Wire> {
    let bytes: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let opcode = bytes[at] & 0x0F;
        let short = usize::from(bytes[at + 1] & 0x7F);
        let (len, header) = match short {
            126 => (
                usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                4,
            ),
            127 => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&bytes[at + 2..at + 10]);
                (usize::try_from(u64::from_be_bytes(raw)).expect("fits"), 10)
            }
            n => (n, 2),
        };
        let payload = &bytes[at + header..at + header + len];
        out.push(match opcode {
            0x1 => {
                Wire::Text(serde_json::from_slice(payload).expect("server text frames are JSON"))
            }
            0x8 => Wire::Close(if payload.len() >= 2 {
                u16::from_be_bytes([payload[0], payload[1]])
            } else {
                0
            }),
            _ => Wire::Other,
        });
        at += header + len;
    }
    out
}

impl Harness {
    fn new(policy: SlowClientPolicy) -> Harness {
        let now = Instant::now();
        Harness {
            core: Core::new(config(policy), now, 1_700_000_000_000),
            deadline: None,
            now,
            conns: Vec::new(),
            next_message: 0,
            channel_of: HashMap::new(),
            dropped: HashMap::new(),
            policy,
        }
    }

    fn index_of(&self, id: ConnId) -> usize {
        // Handles are reused after a connection is gone: the newest
        // connection that had this handle is the one meant.
        self.conns
            .iter()
            .rposition(|c| c.last_id == Some(id))
            .expect("the core only names connections it opened")
    }

    /// Drains the core like the shell: transmits, disconnects, events.
    fn drain(&mut self) {
        loop {
            match self.core.poll_output() {
                Some(Output::Transmit(transmit)) => self.on_transmit(transmit),
                Some(Output::Disconnect(id)) => {
                    let index = self.index_of(id);
                    self.conns[index].id = None;
                }
                Some(Output::Event(event)) => self.on_event(event),
                // The model sends no `refresh` frames.
                Some(Output::Verify(_)) => {}
                Some(Output::Timeout(at)) => {
                    self.deadline = Some(at);
                    return;
                }
                None => {
                    self.deadline = None;
                    return;
                }
            }
        }
    }

    /// A transmit is started: its frames are in flight until `flush`.
    fn on_transmit(&mut self, transmit: Transmit) {
        if std::env::var_os("MODEL_DEBUG").is_some() {
            eprintln!("transmit {} {:?}", transmit.conn, decode(&transmit.frames));
        }
        let index = self.index_of(transmit.conn);
        let conn = &mut self.conns[index];
        assert!(
            conn.in_flight.is_none(),
            "a second transmit for {} before the first was written",
            transmit.conn
        );
        let mut messages = 0;
        for wire in decode(&transmit.frames) {
            if let Wire::Text(frame) = &wire
                && frame["type"] == "message"
            {
                messages += 1;
            }
        }
        // Messages and control frames (answers, pings) have separate
        // bounds; the close frame comes on top.
        let (control_bound, _) = self.core.control_bound();
        assert!(
            messages <= BUFFER && transmit.frames.len() <= BUFFER + control_bound + 1,
            "one transmit held {} frames ({messages} messages), over the bounds {BUFFER} + {control_bound}",
            transmit.frames.len()
        );
        conn.untransmitted = conn.untransmitted.saturating_sub(messages);
        conn.requests_since_transmit = 0;
        conn.in_flight = Some(transmit.frames);
    }

    /// An event, checked against what the test has seen.
    fn on_event(&mut self, event: Event) {
        if std::env::var_os("MODEL_DEBUG").is_some() {
            eprintln!("event {event:?}");
        }
        match event {
            Event::SlowConsumer { conn } => {
                let index = self.index_of(conn);
                let sut = &mut self.conns[index];
                // The bounds count the transmit in flight plus the queue, and
                // answers have their own: either the messages overflowed
                // theirs (the frame that overflowed is among the owed
                // messages), or the answers since the last transmit theirs.
                let in_flight = sut.in_flight.as_ref().map_or(0, |frames| {
                    decode(frames)
                        .iter()
                        .filter(|w| matches!(w, Wire::Text(f) if f["type"] == "message"))
                        .count()
                });
                let (control_bound, _) = self.core.control_bound();
                assert!(
                    in_flight + sut.untransmitted > BUFFER
                        || sut.requests_since_transmit >= control_bound,
                    "{conn} closed as slow with {in_flight} messages in flight, {} messages and {} answers queued",
                    sut.untransmitted,
                    sut.requests_since_transmit
                );
                sut.slow = true;
                sut.closing = true;
            }
            Event::MessagesDropped { conn, count, .. } => {
                *self.dropped.entry(conn).or_default() += count;
            }
            Event::Closed {
                conn,
                reason: CloseReason::SlowConsumer,
                ..
            } => {
                let index = self.index_of(conn);
                self.conns[index].slow = true;
                self.conns[index].closing = true;
            }
            _ => {}
        }
    }

    /// The socket of conn `index` takes its in-flight frames.
    fn flush(&mut self, index: usize) {
        let Some(frames) = self.conns[index].in_flight.take() else {
            return;
        };
        for wire in decode(&frames) {
            match wire {
                Wire::Text(frame) if frame["type"] == "message" => {
                    let seq = frame["data"]["seq"].as_u64().expect("payload carries seq");
                    let conn = &mut self.conns[index];
                    assert_eq!(
                        frame["channel"], self.channel_of[&seq],
                        "message {seq} on the wrong channel"
                    );
                    assert!(
                        conn.owed.contains(&seq),
                        "conn {index} got message {seq} it was not subscribed to (owed {:?})",
                        conn.owed
                    );
                    if let Some(&last) = conn.received.last() {
                        assert!(seq > last, "conn {index} got {seq} after {last}");
                    }
                    conn.received.push(seq);
                }
                Wire::Close(code) => self.conns[index].close_code = Some(code),
                _ => {}
            }
        }
        if let Some(id) = self.conns[index].id {
            self.core.handle_write_complete(self.now, id);
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Sut)> {
        self.conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.id.is_some())
    }
}

impl StateMachineTest for CoreModel {
    type SystemUnderTest = Harness;
    type Reference = CoreModel;

    fn init_test(model: &Model) -> Harness {
        Harness::new(model.policy)
    }

    fn apply(mut sut: Harness, model: &Model, step: Op) -> Harness {
        if std::env::var_os("MODEL_DEBUG").is_some() {
            eprintln!("step {step:?}");
        }
        let count = sut.conns.len();
        let kind = if matches!(step, Op::Subscribe { .. }) {
            "subscribe"
        } else {
            "unsubscribe"
        };
        match step {
            Op::Open { channels, .. } => {
                let open = Open {
                    identity: Identity {
                        user_id: format!("user{count}").into(),
                        roles: Box::default(),
                        channel_patterns: None,
                        expires_at_unix_ms: None,
                        max_rate: None,
                        delay: None,
                    },
                    remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    channels: channels.iter().map(|&c| channel(c).to_owned()).collect(),
                    deflate: None,
                };
                match sut.core.handle_open(sut.now, open) {
                    Ok(id) => {
                        assert!(
                            !model.shutting_down,
                            "a draining core admitted a connection"
                        );
                        sut.conns.push(Sut {
                            id: Some(id),
                            last_id: Some(id),
                            requests_since_transmit: 2,
                            ..Sut::default()
                        });
                    }
                    Err(refusal) => {
                        assert!(model.shutting_down, "refused {refusal} while not draining");
                    }
                }
            }
            Op::Subscribe { conn, channels, .. } | Op::Unsubscribe { conn, channels, .. }
                if count > 0 =>
            {
                let index = usize::from(conn) % count;
                if let Some(id) = sut.conns[index].id {
                    let channels: Vec<&str> = channels.iter().map(|&c| channel(c)).collect();
                    let frame = serde_json::json!({"type": kind, "channels": channels, "id": 1});
                    sut.conns[index].requests_since_transmit += 1;
                    sut.core
                        .handle_text(sut.now, id, frame.to_string().as_bytes());
                }
            }
            Op::Publish { channel: index, .. } => {
                let channel = channel(index);
                let seq = sut.next_message;
                sut.next_message += 1;
                sut.channel_of.insert(seq, channel);
                // Owed to every connection the model has subscribed, among
                // those the core still holds.
                let model_live: Vec<usize> = model
                    .conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.open && c.channels.contains(channel))
                    .map(|(i, _)| i)
                    .collect();
                for index in model_live {
                    let conn = &mut sut.conns[index];
                    if conn.id.is_some() && !conn.closing && !model.shutting_down {
                        conn.owed.push_back(seq);
                        conn.untransmitted += 1;
                    }
                }
                sut.core.handle_publish(
                    sut.now,
                    Publish {
                        channel: channel.to_owned(),
                        pos: Some(Position::Offset {
                            topic: "lines".to_owned(),
                            partition: 0,
                            offset: i64::try_from(seq).expect("fits"),
                        }),
                        payload: Bytes::from(format!(r#"{{"seq":{seq}}}"#)),
                        key: None,
                    },
                );
            }
            Op::WriteComplete { conn } if count > 0 => sut.flush(usize::from(conn) % count),
            Op::WriteAll => {
                for index in 0..count {
                    sut.flush(index);
                }
            }
            Op::PeerClose { conn } if count > 0 => {
                let index = usize::from(conn) % count;
                if let Some(id) = sut.conns[index].id {
                    sut.conns[index].closing = true;
                    sut.core.handle_peer_close(sut.now, id);
                }
            }
            Op::SocketClosed { conn } if count > 0 => {
                let index = usize::from(conn) % count;
                if let Some(id) = sut.conns[index].id.take() {
                    sut.conns[index].in_flight = None;
                    sut.core.handle_closed(sut.now, id);
                }
            }
            Op::Advance { millis } => {
                sut.now += Duration::from_millis(u64::from(millis));
                if sut.deadline.is_some_and(|at| at <= sut.now) {
                    sut.core.handle_timeout(sut.now);
                }
            }
            Op::Shutdown => {
                for conn in &mut sut.conns {
                    conn.closing = true;
                }
                sut.core.handle_shutdown(sut.now);
            }
            _ => {}
        }
        sut.drain();
        sut
    }

    fn check_invariants(sut: &Harness, model: &Model) {
        let stats = sut.core.stats();
        let mut settled = 0;
        let mut held = 0;
        let mut subscriptions = 0;
        let mut channels = BTreeSet::new();
        for (index, conn) in sut.live() {
            held += 1;
            if conn.closing {
                continue;
            }
            settled += 1;
            let modelled = &model.conns[index];
            assert!(
                modelled.open,
                "conn {index} is closed in the model but the core holds it"
            );
            subscriptions += modelled.channels.len();
            channels.extend(modelled.channels.iter().copied());
        }
        assert!(
            (settled..=held).contains(&stats.connections),
            "the core counts {} connections; {settled} open and {held} not yet dropped",
            stats.connections
        );
        if settled == held {
            assert_eq!(stats.subscriptions, subscriptions, "subscription count");
            assert_eq!(stats.channels, channels.len(), "channel count");
        }
        for (index, conn) in sut.conns.iter().enumerate() {
            // Received is a subsequence of owed (checked per message); under
            // `disconnect` it is an exact prefix: nothing skipped.
            if sut.policy == SlowClientPolicy::Disconnect {
                let prefix: Vec<u64> = conn
                    .owed
                    .iter()
                    .take(conn.received.len())
                    .copied()
                    .collect();
                assert_eq!(prefix, conn.received, "conn {index} skipped a message");
            }
        }
    }

    fn teardown(mut sut: Harness, _model: Model) {
        // Let every socket take everything, as often as needed, then check
        // the end state: nothing owed was lost except counted drops.
        for _ in 0..1000 {
            let pending = sut.conns.iter().any(|c| c.in_flight.is_some());
            if !pending {
                break;
            }
            for index in 0..sut.conns.len() {
                sut.flush(index);
            }
            sut.drain();
        }
        for (index, conn) in sut.conns.iter().enumerate() {
            let Some(id) = conn.id else { continue };
            if conn.closing || conn.close_code.is_some() {
                continue;
            }
            let missing = conn.owed.len() - conn.received.len();
            let dropped = sut.dropped.get(&id).copied().unwrap_or(0);
            assert!(
                missing as u64 <= dropped,
                "conn {index} is missing {missing} owed messages, {dropped} counted as dropped"
            );
        }
        // Shutdown, flushed: everyone gets 1001 and the core empties.
        sut.core.handle_shutdown(sut.now);
        sut.drain();
        for _ in 0..1000 {
            if sut.core.is_drained() {
                break;
            }
            for index in 0..sut.conns.len() {
                sut.flush(index);
            }
            sut.drain();
            sut.now += Duration::from_secs(1);
            if sut.deadline.is_some_and(|at| at <= sut.now) {
                sut.core.handle_timeout(sut.now);
            }
            sut.drain();
        }
        assert!(sut.core.is_drained(), "the core never drained");
        // Stream state outlives connections (recovery needs it).
        let stats = sut.core.stats();
        assert_eq!(
            stats,
            ws_realtime::core::Stats {
                history: stats.history,
                ..Default::default()
            },
            "tables empty after the drain"
        );
        for (index, conn) in sut.conns.iter().enumerate() {
            if let Some(code) = conn.close_code {
                assert!(
                    [1000, 1001, 1008].contains(&code),
                    "conn {index} closed with unexpected code {code}"
                );
            }
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn core_matches_the_subscription_and_queue_model(sequential 1..60 => CoreModel);
}
