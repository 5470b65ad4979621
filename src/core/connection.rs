//! The state the core keeps for one open connection.

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;

use super::conflation::Delivery;
use super::lazy_vec::LazyVec;
use super::outbound::Outbound;
use super::rate_limit::TokenBucket;
use super::throttle::Throttle;
use super::timers::TimerTable;
use super::{CloseReason, Identity};
use crate::proto::deflate_offer::Deflate;

/// One message waiting in a JSON-array batch.
#[derive(Debug, Clone)]
pub(crate) struct BatchedMessage {
    /// The shared, complete `message` frame (sent as is when it ends up alone).
    pub(crate) frame: Bytes,
    /// Where its JSON object starts inside `frame`.
    pub(crate) header_len: usize,
    /// When its source received it, for the batch's ingest stamp.
    pub(crate) ingested: Instant,
    /// Its channel's policy and conflation tag, so a conflating channel's
    /// message can be sent alone (and replaced) when the queue is behind
    /// (see `Core::flush_batch`).
    pub(crate) delivery: Delivery,
}

/// [`Connection::scheduled`] of a connection with no timer: a key
/// [`super::Core::tick`] never returns (it clamps at `-i64::MAX`).
pub(crate) const NOT_SCHEDULED: i64 = i64::MIN;

/// One connection.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Who it is: permissions, `userId`, token expiry.
    pub(crate) identity: Identity,
    /// Its address, to release its slot in the per-address limit.
    pub(crate) remote: IpAddr,
    /// Its number among the connections this core opened: its
    /// `connectionId` is `{server id}-{serial}`, formatted when a log line
    /// or an event needs it rather than held as a string per connection.
    pub(crate) serial: u64,
    /// When it opened, for the duration in [`super::Event::Closed`]: as
    /// nanoseconds after the core's anchor (8 bytes; an `Instant` is 16).
    pub(crate) opened_at: u64,
    /// Heartbeat, idle, expiry, close-grace and batch deadlines.
    pub(crate) timers: TimerTable,
    /// Frames for the socket and the bounds that protect memory.
    pub(crate) outbound: Outbound,
    /// Inbound rate limit.
    pub(crate) rate: TokenBucket,
    /// Set once a close frame is queued: why the connection is ending. A
    /// closing connection takes no more frames and holds no subscriptions.
    pub(crate) closing: Option<CloseReason>,
    /// Messages waiting to leave as one JSON-array frame (batching only,
    /// so lazily allocated: 8 bytes in the record while unused).
    pub(crate) batch: LazyVec<BatchedMessage>,
    /// The key ([`super::Core::tick`]) this connection is filed under in
    /// the core's deadline set, so it can be moved when its timers change;
    /// [`NOT_SCHEDULED`] when it has no timer (8 bytes, where an
    /// `Option<Instant>` took 16 and paid for the serial).
    pub(crate) scheduled: i64,
    /// Whether it is already in the core's ready list, so it is listed once.
    pub(crate) in_ready: bool,
    /// Its `maxRate` subscriptions (usually none: fan-out then checks one
    /// empty vector, which costs 8 bytes and no allocation).
    pub(crate) throttles: LazyVec<Throttle>,
    /// What it agreed for permessage-deflate, if anything: decides whether
    /// it gets a message's shared compressed frame or the plain one.
    pub(crate) deflate: Option<Deflate>,
    /// Whether a `refresh` token is with the shell for verification: one at
    /// a time, so a flood of refreshes cannot queue unbounded work.
    pub(crate) refresh_pending: bool,
}

/// The size in bytes of the core's record of one connection: every open
/// connection holds one, idle or not, side by side in the slab, so
/// `benches/footprint.rs` reports it against its budget; not an API.
#[doc(hidden)]
pub fn connection_record_size() -> usize {
    std::mem::size_of::<Connection>()
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    /// Every open connection holds one record in the core's slab, idle or
    /// not, so each byte here is a byte per connection (issue 18 bounds an
    /// idle connection, everything included, at 1.8 KB). The record was 520
    /// bytes before the rarely used vectors became [`LazyVec`]s, the
    /// queue bounds and rate-limit settings `u32`, the open instant an
    /// offset and the `maxRate` arrival counter the core's. A change that
    /// grows it should shrink something else or raise this bound on purpose,
    /// with the reason in BENCHMARKS.md ("Idle memory, wave 3").
    #[test]
    fn the_connection_record_stays_within_its_budget() {
        assert!(
            size_of::<Connection>() <= 400,
            "Connection grew to {} bytes",
            size_of::<Connection>()
        );
        assert!(
            size_of::<Outbound>() <= 112,
            "Outbound: {}",
            size_of::<Outbound>()
        );
        assert!(
            size_of::<TokenBucket>() <= 56,
            "TokenBucket: {}",
            size_of::<TokenBucket>()
        );
        assert!(
            size_of::<TimerTable>() <= 80,
            "TimerTable: {}",
            size_of::<TimerTable>()
        );
        assert_eq!(size_of::<LazyVec<Throttle>>(), 8);
        assert_eq!(size_of::<LazyVec<BatchedMessage>>(), 8);
        assert_eq!(connection_record_size(), size_of::<Connection>());
    }

    /// The deadline set stores instants as nanoseconds from the anchor; the
    /// conversion must be exact both ways, before the anchor too (a token
    /// that expired before the server started), or a timer would fire at
    /// another instant than the one set.
    #[test]
    fn deadline_keys_convert_back_to_the_exact_instant() {
        use std::time::Duration;

        use crate::core::{Core, CoreConfig};

        let anchor = Instant::now() + Duration::from_secs(3600);
        let core = Core::new(CoreConfig::default(), anchor, 0);
        for at in [
            anchor,
            anchor + Duration::from_nanos(1),
            anchor + Duration::new(86_400 * 365, 123_456_789),
            anchor - Duration::from_nanos(1),
            anchor - Duration::new(1800, 987_654_321),
        ] {
            assert_eq!(core.instant(core.tick(at)), at);
        }
        let earlier = core.tick(anchor - Duration::from_nanos(5));
        assert!(
            earlier < core.tick(anchor)
                && core.tick(anchor) < core.tick(anchor + Duration::from_nanos(5))
        );
    }
}
