//! The sans-IO heart of ws-realtime: one state machine that decides everything
//! about connections (subscriptions, permissions, heartbeats, backpressure,
//! rate limits, shutdown) without touching a socket, a clock or a thread.
//!
//! The shell (production: hyper + fastwebsockets; tests: turmoil, proptest,
//! fuzz) feeds it inputs (`handle_*`, each carrying `now`) and drains its
//! outputs with [`Core::poll_output`]; see [`Core`] for the contract.
//!
//! * `inputs.rs`: what goes in ([`ConnId`], [`Open`], [`Publish`], …);
//!   `outputs.rs`: what comes out ([`Output`] and the types inside it).
//! * `lifecycle.rs`, `requests.rs`, `fanout.rs`: the `impl Core` blocks for
//!   a connection's life, client frames and publishing.
//! * `subscriptions.rs`, `outbound.rs`, `permissions.rs`, `rate_limit.rs`,
//!   `timers.rs`, `connection.rs`, `conn_map.rs`, `conn_slab.rs`,
//!   `config.rs`: one policy or table each; `conflation.rs`, `throttle.rs`
//!   and `delay.rs`: what a slow, rate-limited or delayed subscriber gets.
//! * `route.rs`: the [`Router`] that positions and encodes a message once
//!   for the cores of several workers.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use crate::proto;
use crate::proto::codes::CloseCode;

mod compression;
mod config;
mod conflation;
mod conn_map;
mod conn_slab;
mod connection;
mod delay;
mod fanout;
mod history;
mod inputs;
mod lazy_vec;
mod lifecycle;
mod outbound;
mod outputs;
mod permissions;
mod rate_limit;
mod recovery;
mod refresh;
mod replay_pacing;
mod requests;
mod route;
mod store;
mod subscriptions;
mod throttle;
mod timers;

pub use config::{
    Access, ChannelRule, CoreConfig, DeliveryRule, HistoryConfig, HistoryLimits, HistoryRule,
    SlowClientPolicy,
};
/// The fuzz harness asks which policy a channel has, as the core does.
#[cfg(feature = "fuzzing")]
pub(crate) use conflation::policy_for;
pub(crate) use conn_map::ConnMap;
#[doc(hidden)]
pub use connection::connection_record_size;
pub use inputs::{ConnId, Identity, Open, Publish, PublishOutcome, Refusal};
#[doc(hidden)]
pub use outputs::ConnInspection;
pub use outputs::{CloseReason, DropReason, Event, Output, Stats, Transmit, VerifyRequest};
pub use route::{Routed, Router};
pub use store::HistoryStats;

use conn_slab::ConnSlab;
use connection::Connection;
use recovery::Replay;
use replay_pacing::ReplayPacing;
use store::Store;
use subscriptions::SubscriptionIndex;

/// The state machine.
///
/// # Time
///
/// The core never reads a clock. Every input carries `now`, a monotonic
/// [`Instant`] the shell reads; `now` never goes back between calls. Wall
/// time exists only through the anchor given to [`Core::new`]: `now` there
/// is Unix milliseconds `unix_ms`, so a frame stamped at `t` says
/// `unix_ms + (t - now)` and a token's `exp` becomes an instant the same way.
/// A message may also carry the instant a source received it
/// ([`Core::handle_publish_ingested`]); the core only hands it back in
/// [`Transmit::oldest_ingest`], for latency metrics.
///
/// # Outputs
///
/// After every input, drain [`Core::poll_output`] until it returns
/// [`Output::Timeout`] or `None`. It yields, in this order: frames to write
/// ([`Output::Transmit`]; the connection gets no further transmit until
/// [`Core::handle_write_complete`]), sockets to drop ([`Output::Disconnect`];
/// the core has already forgotten them), events for metrics and logs
/// ([`Output::Event`]), `refresh` tokens to verify off the core's thread
/// ([`Output::Verify`]), and last the instant at which the core wants
/// [`Core::handle_timeout`] ([`Output::Timeout`]; `None` when it has no
/// deadline). One stream, so no shell can forget a kind or take them out of
/// order.
///
/// The clock is the shell's: it reads it and hands the core the instant of
/// every input (`clock` below; the production shell reads its runtime's, the
/// simulations their simulated one), and the core never reads one itself.
///
/// ```no_run
/// use std::time::Instant;
/// use ws_realtime::core::{Core, CoreConfig, Output};
///
/// fn drive(clock: impl Fn() -> Instant, unix_ms_at_start: u64) {
///     let mut core = Core::new(CoreConfig::default(), clock(), unix_ms_at_start);
///     let mut deadline: Option<Instant> = None;
///     loop {
///         // 1. Wait for an input or the deadline, and hand it over with the
///         //    time it happened: core.handle_open(now, open),
///         //    core.handle_text(now, conn, &payload), core.handle_publish(now, publish), …
///         let now = clock();
///         if deadline.is_some_and(|at| at <= now) {
///             core.handle_timeout(now);
///         }
///         // 2. Drain every output.
///         loop {
///             match core.poll_output() {
///                 Some(Output::Transmit(transmit)) => {
///                     // Write transmit.frames to transmit.conn's socket, then:
///                     core.handle_write_complete(clock(), transmit.conn);
///                 }
///                 Some(Output::Disconnect(_conn)) => { /* drop the socket */ }
///                 Some(Output::Event(_event)) => { /* metrics and logs */ }
///                 Some(Output::Verify(_request)) => {
///                     // Verify request.token off this thread, then answer with
///                     // core.handle_refresh_verified(…) or handle_refresh_rejected(…).
///                 }
///                 Some(Output::Timeout(at)) => {
///                     deadline = Some(at);
///                     break;
///                 }
///                 None => {
///                     deadline = None;
///                     break;
///                 }
///             }
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Core {
    /// The policies.
    config: CoreConfig,
    /// The instant that corresponds to `anchor_unix_ms`: frame timestamps are
    /// computed from it, never from a clock read.
    anchor: Instant,
    /// Unix milliseconds at `anchor`.
    anchor_unix_ms: u64,
    /// Open connections (including those closing), by `ConnId`.
    conns: ConnSlab<Connection>,
    /// Open connections per remote address, for `max_connections_per_ip`.
    per_address: HashMap<IpAddr, usize>,
    /// Who is subscribed to what.
    subscriptions: SubscriptionIndex,
    /// Stream state per channel: positions (including the sequences of
    /// publishes without a `pos`), history rings and snapshot maps.
    store: Store,
    /// Replays in progress per connection (see `recovery`); fan-out leaves
    /// those (connection, channel) pairs to them.
    replays: ConnMap<Vec<Replay>>,
    /// How much replay the current turn may still carry, and who waits for
    /// the next turn: a reconnect storm's replays must not hold up live
    /// fan-out (see `replay_pacing`).
    replay_pacing: ReplayPacing,
    /// Connections with frames queued and an idle writer, in the order they
    /// became ready.
    ready: VecDeque<ConnId>,
    /// Sockets the shell must drop.
    disconnects: VecDeque<ConnId>,
    /// Events for metrics and logs.
    events: VecDeque<Event>,
    /// Each connection's next deadline, so the core's next deadline is the
    /// first entry. Keyed by [`Core::tick`] rather than by `Instant`: 16 bytes an entry
    /// instead of 24, about 11 bytes less per connection in the tree.
    deadlines: BTreeSet<(i64, ConnId)>,
    /// Set by `handle_shutdown`: new opens are refused.
    shutting_down: bool,
    /// Connections ever opened, to make `connectionId`s unique.
    opened_total: u64,
    /// Reused buffer of a channel's subscribers during fan-out (the index
    /// cannot be borrowed while queues change).
    fanout_scratch: Vec<ConnId>,
    /// `maxRate` subscriptions across connections: while there are none and
    /// the policy is not `conflate`, publishing works out no message keys.
    throttled: usize,
    /// The compressor and the frame compressed last, shared by every
    /// connection that negotiated permessage-deflate.
    compression: compression::Compression,
    /// Open connections that negotiated permessage-deflate, for the gauge.
    deflate_connections: usize,
    /// `refresh` tokens waiting for the shell to verify them.
    refresh: refresh::RefreshQueue,
    /// Bytes held in every connection's outbound queue (queued + in
    /// flight), kept as a running sum so the gauge costs nothing per
    /// stats call: the process's share of the per-client memory bound,
    /// which the simulation checks from outside.
    outbound_bytes: usize,
    /// The most bytes one connection's outbound queue has held since start:
    /// a high-water mark that must stay within the per-client bound.
    outbound_peak_bytes: usize,
    /// Messages offered to `maxRate` limits so far, on any connection: a
    /// held value's `seq`, so the values one connection has due together
    /// leave in arrival order. One counter for the core rather than one
    /// per connection record (8 bytes each, mostly never used).
    throttle_seq: u64,
}

impl Core {
    /// A core with no connections. `now` and `unix_ms` anchor the wall clock:
    /// timestamps in frames are `unix_ms + (t - now)`; the core never reads a
    /// clock itself.
    pub fn new(config: CoreConfig, now: Instant, unix_ms: u64) -> Core {
        Core {
            compression: compression::Compression::new(config.compression_min_bytes),
            store: Store::new(config.history.clone()),
            replays: ConnMap::default(),
            replay_pacing: ReplayPacing::default(),
            config,
            anchor: now,
            anchor_unix_ms: unix_ms,
            conns: ConnSlab::new(),
            per_address: HashMap::new(),
            subscriptions: SubscriptionIndex::default(),
            ready: VecDeque::new(),
            disconnects: VecDeque::new(),
            events: VecDeque::new(),
            deadlines: BTreeSet::new(),
            shutting_down: false,
            opened_total: 0,
            fanout_scratch: Vec::new(),
            throttled: 0,
            deflate_connections: 0,
            refresh: refresh::RefreshQueue::default(),
            outbound_bytes: 0,
            outbound_peak_bytes: 0,
            throttle_seq: 0,
        }
    }

    /// Admits a connection (limits, draining) and queues its `connected`
    /// frame and the acks of its connect-time channels.
    pub fn handle_open(&mut self, now: Instant, open: Open) -> Result<ConnId, Refusal> {
        self.open(now, open)
    }

    /// A complete text frame from the client (any bytes: the core checks UTF-8).
    pub fn handle_text(&mut self, now: Instant, conn: ConnId, payload: &[u8]) {
        self.text(now, conn, payload);
    }

    /// A binary frame from the client: answered with `binary_not_supported`.
    pub fn handle_binary(&mut self, now: Instant, conn: ConnId) {
        self.binary(now, conn);
    }

    /// A WebSocket Ping from the client: the core queues the Pong.
    pub fn handle_ping(&mut self, now: Instant, conn: ConnId, payload: &[u8]) {
        if self.accepts_input(conn) {
            self.reset_idle_timer(now, conn);
            self.enqueue(
                now,
                conn,
                proto::ws_frame::pong(payload),
                outbound::FrameKind::Control,
            );
        }
    }

    /// Inbound activity that carries no request (a Pong frame).
    pub fn handle_activity(&mut self, now: Instant, conn: ConnId) {
        if self.accepts_input(conn) {
            self.reset_idle_timer(now, conn);
        }
    }

    /// The client sent a frame over `max_message_bytes`: close 1009.
    pub fn handle_frame_too_big(&mut self, now: Instant, conn: ConnId) {
        if self.accepts_input(conn) {
            self.reset_idle_timer(now, conn);
            self.begin_close(now, conn, CloseCode::TooBig, CloseReason::FrameTooBig);
        }
    }

    /// The client sent a compressed message that is not valid DEFLATE:
    /// close 1007 (RFC 7692 §8.1 fails the connection).
    pub fn handle_bad_compressed_data(&mut self, now: Instant, conn: ConnId) {
        if self.accepts_input(conn) {
            self.reset_idle_timer(now, conn);
            self.begin_close(
                now,
                conn,
                CloseCode::InvalidPayload,
                CloseReason::BadCompressedData,
            );
        }
    }

    /// The client broke the WebSocket protocol (the frame reader said so):
    /// close 1002, then the socket is dropped once the close is written or
    /// `slow_close_grace` passes. Nothing else it sent is processed.
    pub fn handle_protocol_violation(&mut self, now: Instant, conn: ConnId) {
        if self.accepts_input(conn) {
            self.reset_idle_timer(now, conn);
            self.begin_close(
                now,
                conn,
                CloseCode::ProtocolError,
                CloseReason::ProtocolError,
            );
        }
    }

    /// The client sent a close frame: the core answers it and disconnects.
    pub fn handle_peer_close(&mut self, now: Instant, conn: ConnId) {
        if self.accepts_input(conn) {
            self.reset_idle_timer(now, conn);
            self.begin_close(now, conn, CloseCode::Normal, CloseReason::ClientClosed);
        }
    }

    /// The socket failed or hit EOF. The core forgets the connection now; no
    /// disconnect output follows (the shell already knows).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get(conn) {
            let reason = c.closing.unwrap_or(CloseReason::ConnectionLost);
            self.forget(now, conn, reason);
        }
    }

    /// The last [`Transmit`] for `conn` has been handed to the kernel.
    pub fn handle_write_complete(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let before = c.outbound.bytes();
        let finished = c.outbound.write_complete();
        self.outbound_bytes -= before - c.outbound.bytes();
        if finished {
            let reason = c
                .closing
                .expect("a close frame is only queued by begin_close");
            self.disconnects.push_back(conn);
            self.forget(now, conn, reason);
        } else {
            self.pump_replays(now, conn);
            self.mark_ready(conn);
        }
    }

    /// A message from a source: encoded once, queued for every subscriber.
    pub fn handle_publish(&mut self, now: Instant, publish: Publish) -> PublishOutcome {
        self.publish(now, &publish, None, now)
    }

    /// [`Core::handle_publish_ingested`] for a message a [`Router`] has
    /// positioned and encoded once for every worker's core: this core
    /// stores and fans out that frame instead of building its own.
    pub fn handle_publish_routed(
        &mut self,
        now: Instant,
        routed: &Routed,
        ingested: Instant,
    ) -> PublishOutcome {
        self.publish(now, &routed.publish, Some(routed), ingested)
    }

    /// [`Core::handle_publish`] for a message a source received at
    /// `ingested`: the transmits carrying it report that instant in
    /// [`Transmit::oldest_ingest`]. The core only carries it; no policy uses it.
    pub fn handle_publish_ingested(
        &mut self,
        now: Instant,
        publish: Publish,
        ingested: Instant,
    ) -> PublishOutcome {
        self.publish(now, &publish, None, ingested)
    }

    /// The instant of an [`Output::Timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.timeout(now);
    }

    /// Graceful shutdown: refuse new connections, close everyone with 1001
    /// after what is already queued.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let open: Vec<ConnId> = self.conns.iter().map(|(conn, _)| conn).collect();
        for conn in open {
            self.begin_close(now, conn, CloseCode::GoingAway, CloseReason::Shutdown);
        }
    }

    /// Every output up to the next deadline, for unit tests that drive the
    /// core by hand: after the first `Timeout` the core has nothing more
    /// now (and reports that `Timeout` for as long as a timer is pending,
    /// so a plain drain would never end).
    #[cfg(test)]
    pub(crate) fn outputs_until_timeout(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| match self.poll_output() {
            Some(Output::Timeout(_)) | None => None,
            other => other,
        })
        .collect()
    }

    /// The next output; see [`Core`] for the order and the drain loop.
    // Inline so the shell's `match` on the result fuses with building it:
    // without it every transmit is written to a return slot and read back
    // (callgrind, benches/callgrind.sh: see BENCHMARKS.md).
    #[inline]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(transmit) = self.next_transmit() {
            return Some(Output::Transmit(transmit));
        }
        if let Some(conn) = self.disconnects.pop_front() {
            return Some(Output::Disconnect(conn));
        }
        if let Some(event) = self.events.pop_front() {
            return Some(Output::Event(event));
        }
        if let Some(request) = self.refresh.pop() {
            return Some(Output::Verify(request));
        }
        let timer = self.deadlines.first().map(|&(at, _)| at);
        let next = timer.into_iter().chain(self.replay_pacing.wake()).min();
        next.map(|at| Output::Timeout(self.instant(at)))
    }

    /// Frames of the first ready connection that has any.
    fn next_transmit(&mut self) -> Option<Transmit> {
        while let Some(conn) = self.ready.pop_front() {
            let Some(c) = self.conns.get_mut(conn) else {
                continue;
            };
            c.in_ready = false;
            // Free unless the queue holds values of a conflating channel.
            let before = c.outbound.bytes();
            let count = c.outbound.compact_before_sending();
            self.outbound_bytes -= before - c.outbound.bytes();
            if count > 0 {
                self.events
                    .push_back(Event::MessagesConflated { conn, count });
            }
            if let Some(frames) = c.outbound.take_transmit() {
                let oldest_ingest = c.outbound.take_oldest_ingest();
                return Some(Transmit {
                    conn,
                    frames,
                    oldest_ingest,
                });
            }
        }
        None
    }

    /// What the core holds now.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.len(),
            subscriptions: self.subscriptions.pair_count(),
            channels: self.subscriptions.channel_count(),
            deflate_connections: self.deflate_connections,
            compression_saved_bytes: self.compression.saved_bytes(),
            history: self.store.stats(),
            outbound_bytes: self.outbound_bytes,
        }
    }

    /// The most bytes one connection's outbound queue (queued + in flight)
    /// has held since start: never more than [`Core::outbound_bound_bytes`].
    pub fn outbound_peak_bytes(&self) -> usize {
        self.outbound_peak_bytes
    }

    /// The most bytes one connection's outbound queue may hold under
    /// `config`: its message bound (`client_buffer_bytes`), the control
    /// bound and one close frame (at most 127 bytes, RFC 6455 §5.5). The
    /// process's part of the per-client bound in docs/protocol.md; the
    /// socket's send buffer is the host's part.
    pub fn outbound_bound_bytes(config: &CoreConfig) -> usize {
        config.client_buffer_bytes
            + outbound::control_bound(config.rate_limit_burst).bytes as usize
            + 127
    }

    /// True once shutdown has begun and every connection is gone.
    pub fn is_drained(&self) -> bool {
        self.shutting_down && self.conns.is_empty()
    }

    /// The bound on control frames (replies to a client's own requests,
    /// pings) one connection may hold, as (frames, bytes): apart from the
    /// message bound, so the answers to one read of requests never make a
    /// reading client a slow consumer.
    pub fn control_bound(&self) -> (usize, usize) {
        let bound = outbound::control_bound(self.config.rate_limit_burst);
        (bound.frames as usize, bound.bytes as usize)
    }

    /// The `connectionId` of a connection, for the shell's log lines: from
    /// its record while the core holds it, then from its `Closed` event
    /// while that is still queued (an event queued before the core forgot
    /// the connection is polled after); `None` once that was polled too.
    /// Formatted on each call, which only a log line that is written makes,
    /// so no connection holds it as a string.
    pub fn connection_id(&self, conn: ConnId) -> Option<String> {
        match self.conns.get(conn) {
            Some(c) => Some(self.connection_id_of(c.serial)),
            None => self.queued_close(conn).map(|(id, _)| id.to_owned()),
        }
    }

    /// The user (token subject) of a connection, for log lines; found like
    /// [`Core::connection_id`].
    pub fn user_id(&self, conn: ConnId) -> Option<&str> {
        match self.conns.get(conn) {
            Some(c) => Some(&c.identity.user_id),
            None => self.queued_close(conn).map(|(_, user)| user),
        }
    }

    /// The `connectionId` and user in `conn`'s `Closed` event, if it is
    /// still queued. A scan, for the rare line about a forgotten
    /// connection; the latest events are the likeliest, so from the back.
    fn queued_close(&self, conn: ConnId) -> Option<(&str, &str)> {
        self.events.iter().rev().find_map(|event| match event {
            Event::Closed {
                conn: closed,
                connection_id,
                user_id,
                ..
            } if *closed == conn => Some((connection_id.as_str(), user_id.as_str())),
            _ => None,
        })
    }

    /// One connection's state, for property tests and fuzzing.
    #[doc(hidden)]
    pub fn inspect(&self, conn: ConnId) -> Option<ConnInspection> {
        let c = self.conns.get(conn)?;
        Some(ConnInspection {
            channels: self
                .subscriptions
                .channels_of(conn)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            held_frames: c.outbound.frames(),
            held_bytes: c.outbound.bytes(),
            held_control_frames: c.outbound.control().frames as usize,
            held_control_bytes: c.outbound.control().bytes as usize,
            closing: c.closing.is_some(),
            batched: c.batch.len(),
        })
    }
}
