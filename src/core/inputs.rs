//! What goes into the core: who a connection is, the connection to open,
//! the message to publish, and the answers to those calls.

use std::net::IpAddr;

use bytes::Bytes;

use crate::proto::codes::PayloadKind;
use crate::proto::position::Position;

/// Handle of one connection inside the core: a slab index plus that slot's
/// generation (as quinn's handles and slotmap keys do). The index is reused
/// once the connection is gone, the generation is not: a stale handle held
/// by the shell (a late command from a dead socket's task) can never address
/// the connection that took its slot over; the core ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The slot in the core's table; small and dense, so tables indexed by
    /// it are plain vectors.
    index: u32,
    /// How many connections held this slot before this one; bumped when a
    /// connection leaves the slot, so older handles stop matching.
    generation: u32,
}

impl ConnId {
    /// The handle of slot `index` at `generation`. Only the core mints
    /// handles for real connections; tests build them to address tables.
    pub(crate) fn new(index: usize, generation: u32) -> ConnId {
        ConnId {
            index: u32::try_from(index).expect("fewer than 2^32 connections at once"),
            generation,
        }
    }

    /// The slot index, for tables indexed by connection.
    pub(crate) fn index(self) -> usize {
        self.index as usize
    }

    /// The slot's generation this handle was minted for.
    pub(crate) fn generation(self) -> u32 {
        self.generation
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}v{}", self.index, self.generation)
    }
}

/// Who a connection is, as established by the shell from the JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: the user id shown in `connected` and in logs.
    pub user_id: Box<str>,
    /// Roles from the token's `role` / `roles` claims. (Boxed slices, not
    /// `Vec`s: 16 bytes each in every connection's record instead of 24,
    /// and an identity never grows.)
    pub roles: Box<[String]>,
    /// Channel patterns from the token's `channels` claim (`trade:*`); `None`
    /// means the token does not restrict channels.
    pub channel_patterns: Option<Box<[String]>>,
    /// The token's `exp` in Unix milliseconds; the connection is closed with
    /// 1008 "token expired" when it passes.
    pub expires_at_unix_ms: Option<u64>,
    /// The token's `maxRate` claim: the most messages per second per
    /// (channel, key) this user gets on any channel (entitlement tiers);
    /// `None` leaves it to the subscribe and `WS_SUBSCRIPTION_MAX_RATE`.
    pub max_rate: Option<u32>,
    /// The token's `delay` claim: this user gets every channel's messages
    /// that much later, served from the history ring (delayed-quotes
    /// entitlement tiers); `None` (or zero) is live.
    pub delay: Option<std::time::Duration>,
}

impl Identity {
    /// The identity of a token that carries only `sub`: no roles, no
    /// channel restriction, no expiry, no rate or delay tier.
    pub fn unrestricted(user_id: &str) -> Identity {
        Identity {
            user_id: user_id.into(),
            roles: Box::default(),
            channel_patterns: None,
            expires_at_unix_ms: None,
            max_rate: None,
            delay: None,
        }
    }
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
    pub deflate: Option<crate::proto::deflate_offer::Deflate>,
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
    /// Redis): the core then assigns the channel's next sequence number on
    /// this process's stream (`~epoch:seq`).
    pub pos: Option<Position>,
    /// The raw payload: JSON is embedded verbatim, other UTF-8 becomes a JSON
    /// string, other bytes go base64 under `b64data`.
    pub payload: Bytes,
    /// The Kafka record key, when the record has one: it keys snapshots when
    /// no JSON field is configured for the channel.
    pub key: Option<Bytes>,
}

/// What [`Core::handle_publish`](crate::core::Core::handle_publish) did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOutcome {
    /// How many connections it was queued for.
    pub delivered: usize,
    /// How its payload was embedded.
    pub kind: PayloadKind,
}
