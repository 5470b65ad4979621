//! Log lines about connections: who each one is (its `connectionId` and
//! user, on every line about it), and a throttle so a flooding client
//! cannot flood the logs with rate-limit lines too.

use std::time::{Duration, Instant};

use crate::core::{CloseReason, ConnId, ConnMap, Event};

/// At most one rate-limit summary line per connection per this interval.
const RATE_LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The log identity of every connection the core holds, from its `Opened`
/// event to its `Closed` event (the socket may be gone earlier).
#[derive(Debug, Default)]
pub(crate) struct ConnLogs {
    /// By core handle.
    by_conn: ConnMap<ConnLog>,
}

/// What log lines about one connection need. Kept small: every open
/// connection holds one.
#[derive(Debug)]
struct ConnLog {
    /// The `connectionId` the client was given.
    connection_id: Box<str>,
    /// The token's subject.
    user_id: Box<str>,
    /// Rate-limit hits, once there were any (most connections never have one).
    rate_limit: Option<Box<RateLimitLog>>,
}

/// A connection's rate-limit hits: the first is logged, then at most one
/// line with a count per [`RATE_LIMIT_LOG_INTERVAL`], the rest at the close.
#[derive(Debug)]
struct RateLimitLog {
    /// When the last line was written.
    logged_at: Instant,
    /// Hits since that line.
    unlogged: u64,
}

impl ConnLogs {
    /// The `connectionId` of `conn` ("" if unknown).
    pub(crate) fn connection_id(&self, conn: ConnId) -> &str {
        self.by_conn.get(&conn).map_or("", |l| &l.connection_id)
    }

    /// The user of `conn` ("" if unknown).
    pub(crate) fn user_id(&self, conn: ConnId) -> &str {
        self.by_conn.get(&conn).map_or("", |l| &l.user_id)
    }

    /// Logs `event` (at `now`) with the identity of its connection.
    pub(crate) fn record(&mut self, event: &Event, now: Instant) {
        match event {
            Event::Opened {
                conn,
                connection_id,
                user_id,
            } => {
                let log = ConnLog {
                    connection_id: connection_id.as_str().into(),
                    user_id: user_id.as_str().into(),
                    rate_limit: None,
                };
                self.by_conn.insert(*conn, log);
                tracing::info!(conn = %conn, connection_id, user = user_id, "connection opened");
            }
            Event::Closed {
                conn,
                user_id,
                reason,
                duration,
            } => {
                let log = self.by_conn.remove(conn);
                let connection_id = log.as_ref().map_or("", |l| &*l.connection_id);
                let unlogged = log
                    .as_ref()
                    .and_then(|l| l.rate_limit.as_ref())
                    .map_or(0, |r| r.unlogged);
                if unlogged > 0 {
                    tracing::warn!(conn = %conn, connection_id, user = user_id, count = unlogged, "inbound rate limit hits since the last report");
                }
                let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                let reason_name = reason.as_str();
                if matches!(
                    reason,
                    CloseReason::SlowConsumer | CloseReason::RateLimitExceeded
                ) {
                    tracing::warn!(conn = %conn, connection_id, user = user_id, reason = reason_name, duration_ms, "connection closed");
                } else {
                    tracing::info!(conn = %conn, connection_id, user = user_id, reason = reason_name, duration_ms, "connection closed");
                }
            }
            Event::Subscribed { conn, channels } => {
                tracing::debug!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), ?channels, "subscribed");
            }
            Event::Unsubscribed { conn, channels } => {
                tracing::debug!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), ?channels, "unsubscribed");
            }
            Event::MessagesDropped {
                conn,
                count,
                reason,
            } => {
                tracing::debug!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), count, ?reason, "messages dropped");
            }
            Event::MessagesConflated { conn, count } => {
                tracing::trace!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), count, "messages conflated");
            }
            Event::SlowConsumer { conn } => {
                tracing::warn!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), "slow consumer: closing with 1008");
            }
            Event::HeartbeatFailure { conn } => {
                tracing::info!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), "silent past the connection timeout: closing");
            }
            Event::RateLimited { conn } => self.rate_limited(*conn, now),
            Event::FrameRejected { conn, code } => {
                tracing::debug!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), code = code.as_str(), "client frame rejected");
            }
        }
    }

    /// Logs a connection's first rate-limit hit, then at most one line with a
    /// count per [`RATE_LIMIT_LOG_INTERVAL`] (the rest is left for the close).
    fn rate_limited(&mut self, conn: ConnId, now: Instant) {
        let Some(log) = self.by_conn.get_mut(&conn) else {
            tracing::warn!(conn = %conn, "inbound rate limit hit");
            return;
        };
        let (connection_id, user) = (&*log.connection_id, &*log.user_id);
        let Some(rate) = log.rate_limit.as_mut() else {
            log.rate_limit = Some(Box::new(RateLimitLog {
                logged_at: now,
                unlogged: 0,
            }));
            tracing::warn!(conn = %conn, connection_id, user, "inbound rate limit hit");
            return;
        };
        rate.unlogged += 1;
        if now.duration_since(rate.logged_at) < RATE_LIMIT_LOG_INTERVAL {
            return;
        }
        let count = std::mem::take(&mut rate.unlogged);
        rate.logged_at = now;
        tracing::warn!(conn = %conn, connection_id, user, count, "inbound rate limit hits since the last report");
    }
}
