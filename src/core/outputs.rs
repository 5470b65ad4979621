//! What comes out of the core: the one [`Output`] stream the shell drains,
//! and the types inside it.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::inputs::ConnId;
use crate::proto::client::RequestId;
use crate::proto::codes::ErrorCode;

/// One output of the core, from [`Core::poll_output`](crate::core::Core::poll_output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Frames to write to one socket, in one vectored write; then call
    /// [`Core::handle_write_complete`](crate::core::Core::handle_write_complete).
    Transmit(Transmit),
    /// A socket to drop now: its close frame has been written, or its grace
    /// period ran out. The core has already forgotten the connection.
    Disconnect(ConnId),
    /// Something that happened, for metrics and logs.
    Event(Event),
    /// A `refresh` token to verify off the core's thread; answer with
    /// [`Core::handle_refresh_verified`](crate::core::Core::handle_refresh_verified)
    /// or [`Core::handle_refresh_rejected`](crate::core::Core::handle_refresh_rejected).
    Verify(VerifyRequest),
    /// Nothing else is pending: call
    /// [`Core::handle_timeout`](crate::core::Core::handle_timeout) at this
    /// instant (or on the next input, whichever comes first). Always last.
    Timeout(Instant),
}

/// Pre-encoded WebSocket frames for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The connection to write to.
    pub conn: ConnId,
    /// Complete frames (header + payload), in order. Write them in one
    /// vectored write, then call [`Core::handle_write_complete`](crate::core::Core::handle_write_complete).
    pub frames: Vec<Bytes>,
    /// When the oldest message in `frames` was ingested (see
    /// [`Core::handle_publish_ingested`](crate::core::Core::handle_publish_ingested)), so the shell can observe ingest →
    /// socket-write latency once per transmit; `None` when it holds no message.
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
    /// A frame no client may send (unmasked, reserved bits, unknown opcode,
    /// bad control frame, invalid close code…): closed with 1002.
    ProtocolError,
    /// A text message that is not UTF-8: closed with 1007.
    InvalidUtf8,
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
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InvalidUtf8 => "invalid_utf8",
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
    /// Evicted from the history ring before a delayed subscriber's delay
    /// was over (the ring does not hold the delay's worth of messages).
    DelayOverrun,
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
        /// Its `connectionId` as sent in the `connected` frame.
        connection_id: String,
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
    /// Queued messages were replaced by a newer value of their (channel,
    /// key) under the `conflate` policy or a `maxRate`: the client never
    /// gets them, only the newer value.
    MessagesConflated {
        /// The connection.
        conn: ConnId,
        /// How many were replaced.
        count: u64,
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
    /// What history and snapshots hold.
    pub history: super::HistoryStats,
    /// Bytes held in the outbound queues of all connections (queued and
    /// in flight to the shell).
    pub outbound_bytes: usize,
}

/// What [`Core::inspect`](crate::core::Core::inspect) shows of one connection (tests and fuzzing).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInspection {
    /// Its channels, sorted.
    pub channels: Vec<String>,
    /// Frames held (queued + in flight).
    pub held_frames: usize,
    /// Bytes held (queued + in flight).
    pub held_bytes: usize,
    /// Of `held_frames`, the control frames (replies, pings), which have
    /// their own bound (`Core::control_bound`).
    pub held_control_frames: usize,
    /// Of `held_bytes`, the control frames' bytes.
    pub held_control_bytes: usize,
    /// Whether its close frame is queued or sent.
    pub closing: bool,
    /// Messages waiting for a JSON-array batch.
    pub batched: usize,
}

/// A `refresh` token the shell must verify, off the core's thread.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// The connection that sent it.
    pub conn: ConnId,
    /// The request's `id`, to hand back with the answer.
    pub id: Option<RequestId>,
    /// The token as the client sent it.
    pub token: String,
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A token is a credential: it stays out of logs.
        f.debug_struct("VerifyRequest")
            .field("conn", &self.conn)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
