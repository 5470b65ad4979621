//! The sans-IO heart of ws-realtime: one state machine that decides everything
//! about connections (subscriptions, permissions, heartbeats, backpressure,
//! rate limits, shutdown) without touching a socket, a clock or a thread.
//!
//! The shell (production: tokio + fastwebsockets; tests: turmoil, proptest,
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

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

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

/// Where a published message sits in its source's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Kafka `partition:offset`, identical on every replica.
    Offset {
        /// Kafka partition.
        partition: i32,
        /// Kafka offset within the partition.
        offset: i64,
    },
    /// Sources without offsets (HTTP, Redis): the core assigns the next
    /// per-channel sequence number.
    Assigned,
}

/// A message from a source, to be fanned out to the channel's subscribers.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The gateway channel (already routed by the source).
    pub channel: String,
    /// Its stream position.
    pub pos: Position,
    /// The raw payload: JSON is embedded verbatim, other UTF-8 becomes a JSON
    /// string, other bytes go base64 under `b64data`.
    pub payload: Bytes,
}

/// How a payload was embedded in the `message` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// Valid JSON, embedded verbatim under `data`.
    Json,
    /// UTF-8 that is not JSON, embedded as a JSON string under `data`.
    Text,
    /// Other bytes, base64 under `b64data`.
    Binary,
}

impl PayloadKind {
    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Json => "json",
            PayloadKind::Text => "text",
            PayloadKind::Binary => "binary",
        }
    }
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
}

/// WebSocket close codes the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure (the client closed, or said goodbye).
    Normal,
    /// 1001: server shutting down.
    GoingAway,
    /// 1008: policy violation (slow consumer, rate limit, token expired).
    Policy,
    /// 1009: inbound frame too big.
    TooBig,
    /// 1011: internal error.
    Internal,
}

impl CloseCode {
    /// The numeric code on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
        }
    }
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

/// Stable `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, or JSON of the wrong shape.
    BadFrame,
    /// A `type` the server does not know.
    UnknownType,
    /// A channel name outside 1–128 chars of `A-Z a-z 0-9 _ . : @ # / -`.
    InvalidChannel,
    /// Not allowed by the token or the channel rules.
    Forbidden,
    /// Over the per-connection channel limit.
    ChannelLimit,
    /// Over the inbound rate limit; the frame was not processed.
    RateLimited,
    /// Binary frames are not part of protocol v1.
    BinaryNotSupported,
}

impl ErrorCode {
    /// The `code` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ChannelLimit => "channel_limit",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
        }
    }
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
}

mod config;
pub use config::{Access, ChannelRule, CoreConfig, SlowClientPolicy};

/// The state machine. See the module docs for the drain order.
#[derive(Debug)]
pub struct Core {
    // Filled in by the core implementation.
}

impl Core {
    /// A core with no connections. `now` and `unix_ms` anchor the wall clock:
    /// timestamps in frames are `unix_ms + (t - now)`; the core never reads a
    /// clock itself.
    pub fn new(config: CoreConfig, now: Instant, unix_ms: u64) -> Core {
        let _ = (config, now, unix_ms);
        todo!("core implementation")
    }

    /// Admits a connection (limits, draining) and queues its `connected`
    /// frame and the acks of its connect-time channels.
    pub fn handle_open(&mut self, now: Instant, open: Open) -> Result<ConnId, Refusal> {
        let _ = (now, open);
        todo!()
    }

    /// A complete text frame from the client (any bytes: the core checks UTF-8).
    pub fn handle_text(&mut self, now: Instant, conn: ConnId, payload: &[u8]) {
        let _ = (now, conn, payload);
        todo!()
    }

    /// A binary frame from the client: answered with `binary_not_supported`.
    pub fn handle_binary(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
        todo!()
    }

    /// A WebSocket Ping from the client: the core queues the Pong.
    pub fn handle_ping(&mut self, now: Instant, conn: ConnId, payload: &[u8]) {
        let _ = (now, conn, payload);
        todo!()
    }

    /// Inbound activity that carries no request (a Pong frame).
    pub fn handle_activity(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
        todo!()
    }

    /// The client sent a frame over `max_message_bytes`: close 1009.
    pub fn handle_frame_too_big(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
        todo!()
    }

    /// The client sent a close frame: the core answers it and disconnects.
    pub fn handle_peer_close(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
        todo!()
    }

    /// The socket failed or hit EOF. The core forgets the connection now; no
    /// disconnect output follows (the shell already knows).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
        todo!()
    }

    /// The last [`Transmit`] for `conn` has been handed to the kernel.
    pub fn handle_write_complete(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
        todo!()
    }

    /// A message from a source: encoded once, queued for every subscriber.
    pub fn handle_publish(&mut self, now: Instant, publish: Publish) -> PublishOutcome {
        let _ = (now, publish);
        todo!()
    }

    /// The deadline from [`Core::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// Graceful shutdown: refuse new connections, close everyone with 1001
    /// after what is already queued.
    pub fn handle_shutdown(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// Next frames to write (see drain order).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        todo!()
    }

    /// Next socket to drop (see drain order).
    pub fn poll_disconnect(&mut self) -> Option<ConnId> {
        todo!()
    }

    /// Next event (see drain order).
    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }

    /// When the core next needs [`Core::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// What the core holds now.
    pub fn stats(&self) -> Stats {
        todo!()
    }

    /// True once shutdown has begun and every connection is gone.
    pub fn is_drained(&self) -> bool {
        todo!()
    }
}
