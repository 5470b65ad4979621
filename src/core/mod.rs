//! The sans-IO heart of ws-realtime: one state machine that decides everything
//! about connections (subscriptions, permissions, heartbeats, backpressure,
//! rate limits, shutdown) without touching a socket, a clock or a thread.
//!
//! The shell (production: hyper + fastwebsockets; tests: turmoil, proptest,
//! fuzz) feeds it inputs, each carrying `now`, and drains its outputs.
//!
//! # Drain order
//! After every `handle_*` call the driver drains, in this order, until each
//! returns `None`:
//! 1. [`Core::poll_transmit`]: pre-encoded WebSocket frames for one
//!    connection, to be written in one vectored write. The connection gets no
//!    further transmit until the shell reports [`Core::handle_write_complete`].
//! 2. [`Core::poll_disconnect`]: connections whose socket the shell must drop
//!    now (their close frame has been written, or its grace period ran out).
//!    The core has already forgotten them.
//! 3. [`Core::poll_event`]: things that happened, for metrics and logs.
//! 4. [`Core::poll_timeout`]: the next instant at which the shell must call
//!    [`Core::handle_timeout`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slab::Slab;

use crate::proto;
use crate::proto::codes::{CloseCode, ErrorCode, PayloadKind};
use crate::proto::position::Position;

/// Handle of one connection inside the core: a slab key. Stable while the
/// connection lives; reused after it is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who a connection is, as established by the shell from the JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: the user id shown in `connected` and in logs.
    pub user_id: String,
    /// Roles from the token's `role` / `roles` claims.
    pub roles: Vec<String>,
    /// Channel patterns from the token's `channels` claim (`trade:*`); `None`
    /// means the token does not restrict channels.
    pub channel_patterns: Option<Vec<String>>,
    /// The token's `exp` in Unix milliseconds; the connection is closed with
    /// 1008 "token expired" when it passes.
    pub expires_at_unix_ms: Option<u64>,
}

/// A connection the shell has authenticated and wants to open.
#[derive(Debug, Clone)]
pub struct Open {
    /// The authenticated identity.
    pub identity: Identity,
    /// The peer address, for the per-address connection limit and logs.
    pub remote: IpAddr,
    /// Channels asked for at connect (`?channels=`, `?assessmentId=`); they go
    /// through the same checks as a `subscribe` frame.
    pub channels: Vec<String>,
    /// permessage-deflate as negotiated in the upgrade; `None` when the
    /// client did not offer it (or compression is off).
    pub deflate: Option<proto::deflate_offer::Deflate>,
}

/// Why the core refused to open a connection (answered before the upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server is draining (HTTP 503).
    #[error("server is shutting down")]
    ShuttingDown,
    /// `max_connections` reached (HTTP 429).
    #[error("connection limit reached")]
    TooManyConnections,
    /// `max_connections_per_ip` reached for this address (HTTP 429).
    #[error("connection limit for this address reached")]
    TooManyFromAddress,
}

/// A message from a source, to be fanned out to the channel's subscribers.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The gateway channel (already routed by the source).
    pub channel: String,
    /// Its stream position; `None` when the source has no offsets (HTTP,
    /// Redis): the core then assigns the channel's next sequence number.
    pub pos: Option<Position>,
    /// The raw payload: JSON is embedded verbatim, other UTF-8 becomes a JSON
    /// string, other bytes go base64 under `b64data`.
    pub payload: Bytes,
}

/// What [`Core::handle_publish`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOutcome {
    /// How many connections it was queued for.
    pub delivered: usize,
    /// How its payload was embedded.
    pub kind: PayloadKind,
}

/// Pre-encoded WebSocket frames for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The connection to write to.
    pub conn: ConnId,
    /// Complete frames (header + payload), in order. Write them in one
    /// vectored write, then call [`Core::handle_write_complete`].
    pub frames: Vec<Bytes>,
    /// When the oldest message in `frames` was ingested (see
    /// [`Core::handle_publish_ingested`]), so the shell can observe ingest →
    /// socket-write latency once per batch; `None` when it holds no message.
    pub oldest_ingest: Option<Instant>,
}

/// Why a connection ended; also the `reason` label of the closed-connections
/// metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent a close frame.
    ClientClosed,
    /// The socket failed or reached EOF without a close frame.
    ConnectionLost,
    /// Outbound queue overflowed under the `disconnect` policy.
    SlowConsumer,
    /// No inbound frame within the connection timeout.
    HeartbeatTimeout,
    /// The token's `exp` passed.
    TokenExpired,
    /// Sustained inbound flooding.
    RateLimitExceeded,
    /// An inbound frame over the size limit.
    FrameTooBig,
    /// The server is draining.
    Shutdown,
    /// A compressed message that is not valid DEFLATE: closed with 1007.
    BadCompressedData,
}

impl CloseReason {
    /// Stable snake_case label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::ConnectionLost => "connection_lost",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::RateLimitExceeded => "rate_limit_exceeded",
            CloseReason::FrameTooBig => "frame_too_big",
            CloseReason::Shutdown => "shutdown",
            CloseReason::BadCompressedData => "bad_compressed_data",
        }
    }
}

/// Why a message did not reach a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Dropped to make room under the `drop_oldest` policy.
    DropOldest,
    /// Discarded because the connection was closed as a slow consumer.
    SlowConsumerClosed,
}

/// Something that happened, for the shell's metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection was opened.
    Opened {
        /// The connection.
        conn: ConnId,
        /// Its `connectionId` as sent in the `connected` frame.
        connection_id: String,
        /// Its user.
        user_id: String,
    },
    /// A connection is gone from the core.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Its user.
        user_id: String,
        /// Why.
        reason: CloseReason,
        /// How long it was open.
        duration: Duration,
    },
    /// Channels were added to a connection.
    Subscribed {
        /// The connection.
        conn: ConnId,
        /// The channels newly added.
        channels: Vec<String>,
    },
    /// Channels were removed from a connection.
    Unsubscribed {
        /// The connection.
        conn: ConnId,
        /// The channels removed.
        channels: Vec<String>,
    },
    /// Messages did not reach a connection.
    MessagesDropped {
        /// The connection.
        conn: ConnId,
        /// How many.
        count: u64,
        /// Why.
        reason: DropReason,
    },
    /// A connection was closed as a slow consumer.
    SlowConsumer {
        /// The connection.
        conn: ConnId,
    },
    /// A connection was silent past the connection timeout.
    HeartbeatFailure {
        /// The connection.
        conn: ConnId,
    },
    /// A frame was rejected by the inbound rate limit.
    RateLimited {
        /// The connection.
        conn: ConnId,
    },
    /// A client frame was answered with an `error` frame.
    FrameRejected {
        /// The connection.
        conn: ConnId,
        /// The error code sent.
        code: ErrorCode,
    },
}

/// Counts of what the core holds, for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open connections.
    pub connections: usize,
    /// (connection, channel) pairs.
    pub subscriptions: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Open connections that negotiated permessage-deflate.
    pub deflate_connections: usize,
    /// Bytes permessage-deflate kept off the wire since start (plain minus
    /// compressed length, per delivery): monotonic.
    pub compression_saved_bytes: u64,
}

mod compression;
mod config;
mod conn_map;
mod connection;
mod fanout;
mod lifecycle;
mod outbound;
mod permissions;
mod rate_limit;
mod requests;
mod subscriptions;
mod timers;

pub use config::{Access, ChannelRule, CoreConfig, SlowClientPolicy};
pub(crate) use conn_map::ConnMap;

use connection::Connection;
use subscriptions::SubscriptionIndex;

/// The state machine. See the module docs for the drain order.
#[derive(Debug)]
pub struct Core {
    /// The policies.
    config: CoreConfig,
    /// The instant that corresponds to `anchor_unix_ms`: frame timestamps are
    /// computed from it, never from a clock read.
    anchor: Instant,
    /// Unix milliseconds at `anchor`.
    anchor_unix_ms: u64,
    /// Open connections (including those closing); the key is the `ConnId`.
    conns: Slab<Connection>,
    /// Open connections per remote address, for `max_connections_per_ip`.
    per_address: HashMap<IpAddr, usize>,
    /// Who is subscribed to what.
    subscriptions: SubscriptionIndex,
    /// Last sequence assigned per channel for a `Publish` without a `pos`; kept
    /// when a channel loses its subscribers so positions never go back.
    sequences: HashMap<String, u64>,
    /// Connections with frames queued and an idle writer, in the order they
    /// became ready.
    ready: VecDeque<ConnId>,
    /// Sockets the shell must drop.
    disconnects: VecDeque<ConnId>,
    /// Events for metrics and logs.
    events: VecDeque<Event>,
    /// Each connection's next deadline, so the core's next deadline is the
    /// first entry.
    deadlines: BTreeSet<(Instant, ConnId)>,
    /// Set by `handle_shutdown`: new opens are refused.
    shutting_down: bool,
    /// Connections ever opened, to make `connectionId`s unique.
    opened_total: u64,
    /// Reused buffer of a channel's subscribers during fan-out (the index
    /// cannot be borrowed while queues change).
    fanout_scratch: Vec<ConnId>,
    /// The compressor and the frame compressed last, shared by every
    /// connection that negotiated permessage-deflate.
    compression: compression::Compression,
    /// Open connections that negotiated permessage-deflate, for the gauge.
    deflate_connections: usize,
}

/// What [`Core::inspect`] shows of one connection (tests and fuzzing).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInspection {
    /// Its channels, sorted.
    pub channels: Vec<String>,
    /// Frames held (queued + in flight).
    pub held_frames: usize,
    /// Bytes held (queued + in flight).
    pub held_bytes: usize,
    /// Whether its close frame is queued or sent.
    pub closing: bool,
    /// Messages waiting for a JSON-array batch.
    pub batched: usize,
}

impl Core {
    /// A core with no connections. `now` and `unix_ms` anchor the wall clock:
    /// timestamps in frames are `unix_ms + (t - now)`; the core never reads a
    /// clock itself.
    pub fn new(config: CoreConfig, now: Instant, unix_ms: u64) -> Core {
        Core {
            anchor: now,
            anchor_unix_ms: unix_ms,
            conns: Slab::new(),
            per_address: HashMap::new(),
            subscriptions: SubscriptionIndex::default(),
            sequences: HashMap::new(),
            ready: VecDeque::new(),
            disconnects: VecDeque::new(),
            events: VecDeque::new(),
            deadlines: BTreeSet::new(),
            shutting_down: false,
            opened_total: 0,
            fanout_scratch: Vec::new(),
            compression: compression::Compression::new(config.compression_min_bytes),
            deflate_connections: 0,
            config,
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
        if self.touch(now, conn) {
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
        self.touch(now, conn);
    }

    /// The client sent a frame over `max_message_bytes`: close 1009.
    pub fn handle_frame_too_big(&mut self, now: Instant, conn: ConnId) {
        if self.touch(now, conn) {
            self.begin_close(now, conn, CloseCode::TooBig, CloseReason::FrameTooBig);
        }
    }

    /// The client sent a compressed message that is not valid DEFLATE:
    /// close 1007 (RFC 7692 §8.1 fails the connection).
    pub fn handle_bad_compressed_data(&mut self, now: Instant, conn: ConnId) {
        if self.touch(now, conn) {
            self.begin_close(
                now,
                conn,
                CloseCode::InvalidPayload,
                CloseReason::BadCompressedData,
            );
        }
    }

    /// The client sent a close frame: the core answers it and disconnects.
    pub fn handle_peer_close(&mut self, now: Instant, conn: ConnId) {
        if self.touch(now, conn) {
            self.begin_close(now, conn, CloseCode::Normal, CloseReason::ClientClosed);
        }
    }

    /// The socket failed or hit EOF. The core forgets the connection now; no
    /// disconnect output follows (the shell already knows).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get(conn.0) {
            let reason = c.closing.unwrap_or(CloseReason::ConnectionLost);
            self.forget(now, conn, reason);
        }
    }

    /// The last [`Transmit`] for `conn` has been handed to the kernel.
    pub fn handle_write_complete(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn.0) else {
            return;
        };
        if c.outbound.write_complete() {
            let reason = c
                .closing
                .expect("a close frame is only queued by begin_close");
            self.disconnects.push_back(conn);
            self.forget(now, conn, reason);
        } else {
            self.mark_ready(conn);
        }
    }

    /// A message from a source: encoded once, queued for every subscriber.
    pub fn handle_publish(&mut self, now: Instant, publish: Publish) -> PublishOutcome {
        self.publish(now, publish, now)
    }

    /// [`Core::handle_publish`] for a message a source received at
    /// `ingested`: the batches carrying it report that instant in
    /// [`Transmit::oldest_ingest`]. The core only carries it; no policy uses it.
    pub fn handle_publish_ingested(
        &mut self,
        now: Instant,
        publish: Publish,
        ingested: Instant,
    ) -> PublishOutcome {
        self.publish(now, publish, ingested)
    }

    /// The deadline from [`Core::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.timeout(now);
    }

    /// Graceful shutdown: refuse new connections, close everyone with 1001
    /// after what is already queued.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let open: Vec<ConnId> = self.conns.iter().map(|(key, _)| ConnId(key)).collect();
        for conn in open {
            self.begin_close(now, conn, CloseCode::GoingAway, CloseReason::Shutdown);
        }
    }

    /// Next frames to write (see drain order).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(conn) = self.ready.pop_front() {
            let Some(c) = self.conns.get_mut(conn.0) else {
                continue;
            };
            c.in_ready = false;
            if let Some(frames) = c.outbound.take_batch() {
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

    /// Next socket to drop (see drain order).
    pub fn poll_disconnect(&mut self) -> Option<ConnId> {
        self.disconnects.pop_front()
    }

    /// Next event (see drain order).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the core next needs [`Core::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// What the core holds now.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.len(),
            subscriptions: self.subscriptions.pair_count(),
            channels: self.subscriptions.channel_count(),
            deflate_connections: self.deflate_connections,
            compression_saved_bytes: self.compression.saved_bytes(),
        }
    }

    /// True once shutdown has begun and every connection is gone.
    pub fn is_drained(&self) -> bool {
        self.shutting_down && self.conns.is_empty()
    }

    /// One connection's state, for property tests and fuzzing.
    #[doc(hidden)]
    pub fn inspect(&self, conn: ConnId) -> Option<ConnInspection> {
        let c = self.conns.get(conn.0)?;
        Some(ConnInspection {
            channels: self
                .subscriptions
                .channels_of(conn)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            held_frames: c.outbound.frames(),
            held_bytes: c.outbound.bytes(),
            closing: c.closing.is_some(),
            batched: c.batch.len(),
        })
    }
}
