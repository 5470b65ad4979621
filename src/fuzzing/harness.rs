//! A shell-like driver for the core that keeps a model of what the core has
//! said (who is open, who is subscribed to what, whose writes are in flight)
//! and checks the core's invariants after every input. Any broken invariant
//! is a panic, which is what the fuzzer and the seed replay look for.
//!
//! Invariants checked:
//! * every output names a connection the shell still holds; a `ConnId` is
//!   not handed out again while the shell still holds its socket;
//! * one `Transmit` in flight per connection (flow control);
//! * every frame is a well-formed server frame, text frames are JSON, the
//!   first one is `connected`, nothing follows a close frame;
//! * a `message` frame goes only to a connection subscribed to its channel;
//! * `delivered` never exceeds the channel's subscribers;
//! * `Closed` exactly once per connection, and only for open ones; every
//!   socket the core drops was reported `Closed`;
//! * `stats()` and `inspect()` agree with the connections and subscriptions
//!   the events described;
//! * a handled timeout never leaves a deadline at or before `now`;
//! * no queue holds more than its bounds in frames and bytes (queued plus in
//!   flight; the close frame may come on top), nor a batch more than
//!   `batch_max` messages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::wire::{self, Opcode};
use crate::core::{
    CloseReason, ConnId, Core, CoreConfig, Event, Open, Output, Publish, PublishOutcome, Refusal,
};
use crate::proto::codes::PayloadKind;
use crate::proto::position::Position;

#[path = "harness_checks.rs"]
mod checks;

/// Wall-clock anchor of every fuzzed core: 2026-01-01T00:00:00Z.
pub(crate) const START_UNIX_MS: u64 = 1_767_225_600_000;

/// Bound on passes over the outputs after one input; a core that keeps
/// producing output forever is a finding.
const MAX_DRAIN_PASSES: usize = 64;

/// A close frame: 2-byte header, code, reason within a control frame's 125.
const MAX_CLOSE_FRAME: usize = 127;

/// Bound on timer wake-ups within one `advance`.
const MAX_WAKEUPS_PER_ADVANCE: usize = 20_000;

/// The `type` values a server text frame may carry (protocol v1).
const SERVER_FRAME_TYPES: &[&str] = &[
    "connected",
    "subscribed",
    "unsubscribed",
    "message",
    "error",
    "pong",
    "ping",
    "refresh_required",
    "refreshed",
];

/// What the harness knows about one connection the shell holds.
#[derive(Debug)]
struct ConnModel {
    /// Checked against every event naming this connection.
    user_id: String,
    /// Channels per the `Subscribed` / `Unsubscribed` events, for the stats
    /// check and the subscriber count of a publish.
    channels: BTreeSet<String>,
    /// Every channel held since open: a message on any other channel is a
    /// delivery to a non-subscriber (a message queued before an unsubscribe
    /// may still arrive, so current membership alone would be too strict).
    ever_subscribed: BTreeSet<String>,
    /// The core reported `Closed`: it no longer counts the connection.
    closed_event: bool,
    /// A `Transmit` is being "written"; no other may come until the harness
    /// reports the write complete.
    write_in_flight: bool,
    /// The first text frame must be `connected`.
    saw_connected: bool,
    /// Nothing may follow a close frame.
    saw_close_frame: bool,
    /// Code of the close frame sent, to compare with the `Closed` reason.
    close_code: Option<u16>,
    /// Reason of the `Closed` event.
    close_reason: Option<CloseReason>,
    /// Last position seen per channel (and Kafka partition, and key where
    /// the order holds per key) in the current subscription: each client
    /// must see a channel's messages in stream order, each once.
    last_pos: BTreeMap<(String, Option<i64>, Option<String>), i128>,
    /// Channels per the `subscribed` and `unsubscribed` frames received so
    /// far: a message of any other channel came before its subscription's
    /// ack or after the `unsubscribed` that ended it. A `subscribed` frame
    /// naming a channel not in it starts a new subscription, whose replay
    /// may go back before what the old one saw.
    acked: BTreeSet<String>,
    /// Channels whose current subscription got a `maxRate` (in a
    /// `subscribed` or `refreshed` frame): a held value of one key may
    /// arrive after a newer value of another, so their order holds per key.
    rate_limited: BTreeSet<String>,
    /// The core told the shell to drop the socket; the model goes once the
    /// drain that reported it is over (its `Closed` may come later in it).
    disconnected: bool,
}

/// The core plus the model and a log of what clients received.
#[derive(Debug)]
pub(crate) struct Harness {
    /// The state machine under test.
    core: Core,
    /// Its configuration, for the bounds the invariants check.
    config: CoreConfig,
    /// The fuzzed clock; only moves forward.
    now: Instant,
    /// Connections the shell holds (open, or closed by the core but not yet
    /// dropped by the shell).
    conns: BTreeMap<ConnId, ConnModel>,
    /// Text frames received, per connection, since the last `take_received`.
    received: Vec<(ConnId, Value)>,
    /// Connections opened so far, to compare with `Closed` events at the end.
    opened_total: usize,
    /// `Closed` events so far.
    closed_total: usize,
    /// Last Kafka offset published per (channel, partition), to tell the
    /// core's ordering from the source's.
    last_published: BTreeMap<(String, i64), i64>,
    /// (channel, partition) pairs the source itself published out of order
    /// or repeated an offset of (scripts may): their delivery order is not
    /// checked.
    source_disordered: BTreeSet<(String, i64)>,
    /// The core's next deadline, from the last drain's `Output::Timeout`.
    deadline: Option<Instant>,
}

impl Harness {
    /// A harness around a fresh core.
    pub(crate) fn new(config: CoreConfig) -> Harness {
        let now = Instant::now();
        Harness {
            core: Core::new(config.clone(), now, START_UNIX_MS),
            config,
            now,
            conns: BTreeMap::new(),
            received: Vec::new(),
            opened_total: 0,
            closed_total: 0,
            last_published: BTreeMap::new(),
            source_disordered: BTreeSet::new(),
            deadline: None,
        }
    }

    /// Connections the shell holds whose socket is still up, in id order:
    /// the ones fuzzed inputs may name.
    pub(crate) fn live_conns(&self) -> Vec<ConnId> {
        self.conns.keys().copied().collect()
    }

    /// Connections with a `Transmit` in flight.
    pub(crate) fn writing_conns(&self) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, model)| model.write_in_flight)
            .map(|(conn, _)| *conn)
            .collect()
    }

    /// Whether the core still counts `conn` as open.
    pub(crate) fn is_open(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|model| !model.closed_event)
    }

    /// Current channels of `conn` per the events.
    pub(crate) fn channels_of(&self, conn: ConnId) -> BTreeSet<String> {
        self.conns
            .get(&conn)
            .map(|model| model.channels.clone())
            .unwrap_or_default()
    }

    /// Text frames received since the last call.
    pub(crate) fn take_received(&mut self) -> Vec<(ConnId, Value)> {
        std::mem::take(&mut self.received)
    }

    /// `Core::handle_open`, checking the id is not one the shell still holds.
    pub(crate) fn open(&mut self, open: Open) -> Result<ConnId, Refusal> {
        let user_id = String::from(&*open.identity.user_id);
        let result = self.core.handle_open(self.now, open);
        if let Ok(conn) = result {
            assert!(
                !self.conns.contains_key(&conn),
                "{conn} handed out again while the shell still holds its socket"
            );
            self.conns.insert(
                conn,
                ConnModel {
                    user_id,
                    channels: BTreeSet::new(),
                    ever_subscribed: BTreeSet::new(),
                    closed_event: false,
                    write_in_flight: false,
                    saw_connected: false,
                    saw_close_frame: false,
                    disconnected: false,
                    last_pos: BTreeMap::new(),
                    acked: BTreeSet::new(),
                    rate_limited: BTreeSet::new(),
                    close_code: None,
                    close_reason: None,
                },
            );
            self.opened_total += 1;
        }
        self.drain();
        result
    }

    /// `Core::handle_text`.
    pub(crate) fn text(&mut self, conn: ConnId, payload: &[u8]) {
        self.core.handle_text(self.now, conn, payload);
        self.drain();
    }

    /// `Core::handle_binary`.
    pub(crate) fn binary(&mut self, conn: ConnId) {
        self.core.handle_binary(self.now, conn);
        self.drain();
    }

    /// `Core::handle_ping`.
    pub(crate) fn ping(&mut self, conn: ConnId, payload: &[u8]) {
        self.core.handle_ping(self.now, conn, payload);
        self.drain();
    }

    /// `Core::handle_activity`.
    pub(crate) fn activity(&mut self, conn: ConnId) {
        self.core.handle_activity(self.now, conn);
        self.drain();
    }

    /// `Core::handle_frame_too_big`.
    pub(crate) fn frame_too_big(&mut self, conn: ConnId) {
        self.core.handle_frame_too_big(self.now, conn);
        self.drain();
    }

    /// `Core::handle_peer_close`.
    pub(crate) fn peer_close(&mut self, conn: ConnId) {
        self.core.handle_peer_close(self.now, conn);
        self.drain();
    }

    /// The socket died: `Core::handle_closed`, and the shell drops it.
    pub(crate) fn socket_closed(&mut self, conn: ConnId) {
        self.core.handle_closed(self.now, conn);
        self.drain();
        if let Some(model) = self.conns.remove(&conn) {
            assert!(
                model.closed_event,
                "{conn} never reported Closed after handle_closed"
            );
        }
        self.check_stats();
    }

    /// `Core::handle_write_complete` for a connection with a write in flight.
    pub(crate) fn write_complete(&mut self, conn: ConnId) {
        let model = self.conns.get_mut(&conn).expect("callers pick a held conn");
        assert!(model.write_in_flight, "write_complete without a write");
        model.write_in_flight = false;
        self.core.handle_write_complete(self.now, conn);
        self.drain();
    }

    /// Completes every write in flight, repeatedly, until none is left or
    /// `rounds` passes are done.
    pub(crate) fn flush(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let writing = self.writing_conns();
            if writing.is_empty() {
                return;
            }
            for conn in writing {
                if self.conns.get(&conn).is_some_and(|m| m.write_in_flight) {
                    self.write_complete(conn);
                }
            }
        }
    }

    /// `Core::handle_publish`, checking the outcome against the model.
    pub(crate) fn publish(&mut self, publish: Publish) -> PublishOutcome {
        let subscribers = self
            .conns
            .values()
            .filter(|model| !model.closed_event && model.channels.contains(&publish.channel))
            .count();
        let expected_kind = classify(&publish.payload);
        if let Some(Position::Offset {
            partition, offset, ..
        }) = publish.pos
        {
            let key = (publish.channel.clone(), i64::from(partition));
            if let Some(last) = self.last_published.insert(key.clone(), offset)
                && offset <= last
            {
                self.source_disordered.insert(key);
            }
        }
        let outcome = self.core.handle_publish(self.now, publish);
        assert!(
            outcome.delivered <= subscribers,
            "delivered to {} connections, {subscribers} subscribed",
            outcome.delivered
        );
        assert_eq!(outcome.kind, expected_kind, "payload kind");
        self.drain();
        outcome
    }

    /// `Core::handle_shutdown`.
    pub(crate) fn shutdown(&mut self) {
        self.core.handle_shutdown(self.now);
        self.drain();
    }

    /// Moves the clock forward by `by`, waking the core at each deadline on
    /// the way as a shell's timer would.
    pub(crate) fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..MAX_WAKEUPS_PER_ADVANCE {
            match self.deadline {
                Some(deadline) if deadline <= target => {
                    self.now = self.now.max(deadline);
                    self.core.handle_timeout(self.now);
                    self.drain();
                    if let Some(next) = self.deadline {
                        assert!(
                            next > self.now,
                            "deadline {:?} not after the timeout just handled",
                            next.saturating_duration_since(self.now)
                        );
                    }
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        panic!("more than {MAX_WAKEUPS_PER_ADVANCE} timer wake-ups within {by:?}");
    }

    /// Shuts down, flushes and waits until the core is drained, then checks
    /// that every connection was closed exactly once and nothing is left.
    pub(crate) fn finish(mut self) {
        self.shutdown();
        let step = self.config.slow_close_grace.max(Duration::from_millis(10));
        for _ in 0..1_000 {
            self.flush(64);
            if self.core.is_drained() && self.conns.is_empty() {
                break;
            }
            self.advance(step);
        }
        assert!(self.core.is_drained(), "core not drained after shutdown");
        assert!(
            self.conns.is_empty(),
            "connections never dropped after shutdown: {:?}",
            self.conns.keys().collect::<Vec<_>>()
        );
        assert_eq!(self.opened_total, self.closed_total, "opened vs closed");
        // Stream state outlives connections; the rest is gone.
        let stats = self.core.stats();
        assert_eq!(
            stats,
            crate::core::Stats {
                history: stats.history,
                ..Default::default()
            }
        );
    }

    /// Drains the outputs in the documented order until all are empty, then
    /// checks the invariants that hold between inputs.
    fn drain(&mut self) {
        for _ in 0..MAX_DRAIN_PASSES {
            let mut produced = false;
            let mut messages = Vec::new();
            // The core's order: transmits, disconnects, events, then the
            // deadline, which ends the pass.
            let mut rank = 0;
            loop {
                let output = self.core.poll_output();
                let this_rank = match &output {
                    Some(Output::Transmit(_)) => 0,
                    Some(Output::Disconnect(_)) => 1,
                    Some(Output::Event(_)) => 2,
                    Some(Output::Verify(_)) => 3,
                    Some(Output::Timeout(_)) | None => 4,
                };
                assert!(this_rank >= rank, "outputs out of order: {output:?}");
                rank = this_rank;
                match output {
                    Some(Output::Transmit(transmit)) => {
                        produced = true;
                        self.on_transmit(transmit.conn, &transmit.frames, &mut messages);
                    }
                    Some(Output::Disconnect(conn)) => {
                        produced = true;
                        let model = self.conns.get_mut(&conn).unwrap_or_else(|| {
                            panic!("disconnect of {conn}, which the shell does not hold")
                        });
                        assert!(!model.disconnected, "{conn} disconnected twice");
                        model.disconnected = true;
                        // The shell drops the socket: a write in flight dies with it.
                        model.write_in_flight = false;
                    }
                    Some(Output::Event(event)) => {
                        produced = true;
                        self.on_event(event);
                    }
                    // This shell verifies nothing: the refresh stays pending
                    // and the connection closes at its token's `exp`.
                    Some(Output::Verify(_)) => produced = true,
                    Some(Output::Timeout(at)) => {
                        self.deadline = Some(at);
                        break;
                    }
                    None => {
                        self.deadline = None;
                        break;
                    }
                }
            }
            for (conn, channel) in messages {
                let subscribed = self.conns[&conn].ever_subscribed.contains(&channel);
                assert!(
                    subscribed,
                    "message on {channel:?} sent to non-subscriber {conn}"
                );
            }
            if !produced {
                self.retire_dropped();
                self.check_stats();
                return;
            }
        }
        panic!("outputs still coming after {MAX_DRAIN_PASSES} drain passes");
    }

    /// Forgets the sockets the shell dropped in the drain just finished; by
    /// now the core must have reported each of them `Closed`.
    fn retire_dropped(&mut self) {
        let dropped: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, model)| model.disconnected)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in dropped {
            let model = self.conns.remove(&conn).expect("listed above");
            assert!(
                model.closed_event,
                "{conn} disconnected without a Closed event"
            );
            checks::check_close_code(conn, &model);
        }
    }

    /// `stats()` and each connection's state must agree with what the events
    /// described, and every queue must be within its bounds.
    ///
    /// A closing connection (close frame queued) has already left its
    /// channels, without an `Unsubscribed` event: the core stops fanning out
    /// to it at once and reports it `Closed` when the socket goes.
    fn check_stats(&mut self) {
        let config = &self.config;
        let mut connections = 0;
        let mut subscriptions = 0;
        let mut channels = BTreeSet::new();
        let (mut held_bytes, mut peak_bytes) = (0, 0);
        for (conn, model) in &mut self.conns {
            if model.closed_event {
                continue;
            }
            connections += 1;
            let seen = self
                .core
                .inspect(*conn)
                .unwrap_or_else(|| panic!("{conn} unknown to the core before its Closed event"));
            if seen.closing {
                assert!(seen.channels.is_empty(), "closing {conn} still subscribed");
                model.channels.clear();
            } else {
                let expected: Vec<&String> = model.channels.iter().collect();
                let actual: Vec<&String> = seen.channels.iter().collect();
                assert_eq!(actual, expected, "channels of {conn} vs its events");
            }
            subscriptions += model.channels.len();
            channels.extend(model.channels.iter().cloned());
            held_bytes += seen.held_bytes;
            peak_bytes = peak_bytes.max(seen.held_bytes);
            let close_room = usize::from(seen.closing);
            let (messages, message_bytes) = (
                seen.held_frames - seen.held_control_frames,
                seen.held_bytes - seen.held_control_bytes,
            );
            assert!(
                messages <= config.client_buffer_frames + close_room,
                "{conn} holds {messages} message frames, bound {}",
                config.client_buffer_frames
            );
            assert!(
                message_bytes <= config.client_buffer_bytes + close_room * MAX_CLOSE_FRAME,
                "{conn} holds {message_bytes} message bytes, bound {}",
                config.client_buffer_bytes
            );
            let (control_frames, control_bytes) = self.core.control_bound();
            assert!(
                seen.held_control_frames <= control_frames
                    && seen.held_control_bytes <= control_bytes,
                "{conn} holds {} control frames / {} bytes, bound {control_frames} / {control_bytes}",
                seen.held_control_frames,
                seen.held_control_bytes
            );
            assert!(
                seen.batched < config.batch_max.max(2),
                "{conn} has {} messages waiting for a batch of {}",
                seen.batched,
                config.batch_max
            );
        }
        let stats = self.core.stats();
        assert_eq!(stats.connections, connections, "stats.connections");
        assert_eq!(stats.outbound_bytes, held_bytes, "stats.outbound_bytes");
        let peak = self.core.outbound_peak_bytes();
        assert!(
            peak >= peak_bytes,
            "outbound peak {peak} below a connection's {peak_bytes} held bytes"
        );
        let bound = crate::core::Core::outbound_bound_bytes(config);
        assert!(peak <= bound, "outbound peak {peak} over the bound {bound}");
        assert_eq!(stats.subscriptions, subscriptions, "stats.subscriptions");
        assert_eq!(stats.channels, channels.len(), "stats.channels");
        assert!(
            stats.history.bytes <= config.history.max_bytes,
            "history holds {} bytes, cap {}",
            stats.history.bytes,
            config.history.max_bytes
        );
    }

    /// Checks one `Transmit` and records what the client receives; message
    /// channels go to `messages` to be checked once this pass's events are in.
    fn on_transmit(
        &mut self,
        conn: ConnId,
        frames: &[bytes::Bytes],
        messages: &mut Vec<(ConnId, String)>,
    ) {
        let model = self
            .conns
            .get_mut(&conn)
            .unwrap_or_else(|| panic!("transmit to {conn}, which the shell does not hold"));
        assert!(
            !model.disconnected,
            "transmit to {conn} after its disconnect"
        );
        assert!(
            !model.write_in_flight,
            "second transmit to {conn} before the first was written"
        );
        assert!(!frames.is_empty(), "empty transmit to {conn}");
        model.write_in_flight = true;
        for buffer in frames {
            for frame in wire::decode_frames(buffer) {
                assert!(
                    !model.saw_close_frame,
                    "frame after the close frame to {conn}"
                );
                match frame.opcode {
                    Opcode::Close => {
                        model.saw_close_frame = true;
                        model.close_code = frame.close_code();
                    }
                    Opcode::Binary => panic!("binary frame to {conn}"),
                    Opcode::Ping | Opcode::Pong => {}
                    Opcode::Text => {
                        let json = frame.json().expect("text frame");
                        let items: Vec<&Value> = match &json {
                            Value::Array(batch) => batch.iter().collect(),
                            single => vec![single],
                        };
                        assert!(!items.is_empty(), "empty batch to {conn}");
                        for item in &items {
                            let kind = item
                                .get("type")
                                .and_then(Value::as_str)
                                .unwrap_or_else(|| panic!("frame without type: {item}"));
                            assert!(SERVER_FRAME_TYPES.contains(&kind), "unknown type {kind}");
                            if !model.saw_connected {
                                assert_eq!(kind, "connected", "first frame to {conn}");
                                model.saw_connected = true;
                            }
                            checks::track_subscriptions(model, kind, item);
                            if kind == "message" {
                                let channel = item
                                    .get("channel")
                                    .and_then(Value::as_str)
                                    .unwrap_or_else(|| panic!("message without channel: {item}"));
                                assert!(
                                    model.acked.contains(channel),
                                    "{conn} got a message of {channel:?} outside its subscription: {item}"
                                );
                                checks::check_order(
                                    conn,
                                    model,
                                    channel,
                                    item,
                                    &self.config,
                                    &self.source_disordered,
                                );
                                messages.push((conn, channel.to_owned()));
                            }
                        }
                        self.received.push((conn, json));
                    }
                }
            }
        }
    }

    /// Applies an event to the model, checking it is about a connection in
    /// the right state.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Opened { conn, user_id, .. } => {
                let model = self.model(conn, "Opened");
                assert_eq!(model.user_id, user_id, "Opened user of {conn}");
            }
            Event::Closed {
                conn,
                user_id,
                reason,
                ..
            } => {
                let model = self.model(conn, "Closed");
                assert!(!model.closed_event, "{conn} reported Closed twice");
                assert_eq!(model.user_id, user_id, "Closed user of {conn}");
                model.closed_event = true;
                model.close_reason = Some(reason);
                model.channels.clear();
                self.closed_total += 1;
            }
            Event::Subscribed { conn, channels } => {
                let limit = self.config.max_channels_per_connection;
                let model = self.model(conn, "Subscribed");
                assert!(!model.closed_event, "Subscribed after Closed on {conn}");
                for channel in channels {
                    assert!(
                        model.channels.insert(channel.clone()),
                        "{conn} subscribed twice to {channel:?}"
                    );
                    model.ever_subscribed.insert(channel);
                }
                assert!(
                    model.channels.len() <= limit,
                    "{conn} holds {} channels, limit {limit}",
                    model.channels.len()
                );
            }
            Event::Unsubscribed { conn, channels } => {
                let model = self.model(conn, "Unsubscribed");
                assert!(!model.closed_event, "Unsubscribed after Closed on {conn}");
                for channel in channels {
                    assert!(
                        model.channels.remove(&channel),
                        "{conn} unsubscribed from {channel:?}, which it did not hold"
                    );
                }
            }
            Event::MessagesDropped { conn, .. }
            | Event::MessagesConflated { conn, .. }
            | Event::SlowConsumer { conn }
            | Event::HeartbeatFailure { conn }
            | Event::RateLimited { conn }
            | Event::FrameRejected { conn, .. } => {
                self.model(conn, "event");
            }
        }
    }

    fn model(&mut self, conn: ConnId, what: &str) -> &mut ConnModel {
        self.conns
            .get_mut(&conn)
            .unwrap_or_else(|| panic!("{what} for {conn}, which the shell does not hold"))
    }
}

/// How the core must embed `payload`: JSON verbatim, other UTF-8 as a
/// string, anything else as base64. JSON must be UTF-8 first: `serde_json`
/// skips string contents it is not asked to decode, so bytes like
/// `{"a":"\xff"}` parse, yet embedding them would break the text frame.
pub(crate) fn classify(payload: &[u8]) -> PayloadKind {
    match std::str::from_utf8(payload) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            PayloadKind::Json
        }
        Ok(_) => PayloadKind::Text,
        Err(_) => PayloadKind::Binary,
    }
}
