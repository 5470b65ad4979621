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
/// connection holds one (32 bytes plus one allocation; two `Box<str>`
/// cost 16 bytes more inline and a second allocation of at least 32 bytes).
#[derive(Debug)]
struct ConnLog {
    /// The `connectionId` the client was given followed by the token's
    /// subject, in one allocation: `names[..split]` and `names[split..]`.
    names: Box<str>,
    /// Where the subject starts in `names`.
    split: u32,
    /// Rate-limit hits, once there were any (most connections never have one).
    rate_limit: Option<Box<RateLimitLog>>,
}

impl ConnLog {
    /// A connection's log identity.
    fn new(connection_id: &str, user_id: &str) -> ConnLog {
        // A `connectionId` is short ("{server}-{count}"); one past 4 GiB
        // cannot exist, so the split always fits.
        let split = u32::try_from(connection_id.len()).unwrap_or(u32::MAX);
        ConnLog {
            names: [connection_id, user_id].concat().into_boxed_str(),
            split,
            rate_limit: None,
        }
    }

    /// The `connectionId` the client was given.
    fn connection_id(&self) -> &str {
        &self.names[..self.split as usize]
    }

    /// The token's subject.
    fn user_id(&self) -> &str {
        &self.names[self.split as usize..]
    }
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
        self.by_conn.get(&conn).map_or("", ConnLog::connection_id)
    }

    /// The user of `conn` ("" if unknown).
    pub(crate) fn user_id(&self, conn: ConnId) -> &str {
        self.by_conn.get(&conn).map_or("", ConnLog::user_id)
    }

    /// Logs `event` (at `now`) with the identity of its connection.
    pub(crate) fn record(&mut self, event: &Event, now: Instant) {
        match event {
            Event::Opened {
                conn,
                connection_id,
                user_id,
            } => {
                self.by_conn
                    .insert(*conn, ConnLog::new(connection_id, user_id));
                tracing::info!(conn = %conn, connection_id, user = user_id, "connection opened");
            }
            Event::Closed {
                conn,
                user_id,
                reason,
                duration,
            } => {
                let log = self.by_conn.remove(conn);
                let connection_id = log.as_ref().map_or("", ConnLog::connection_id);
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
        let Some(rate) = log.rate_limit.as_mut() else {
            log.rate_limit = Some(Box::new(RateLimitLog {
                logged_at: now,
                unlogged: 0,
            }));
            let (connection_id, user) = (log.connection_id(), log.user_id());
            tracing::warn!(conn = %conn, connection_id, user, "inbound rate limit hit");
            return;
        };
        rate.unlogged += 1;
        if now.duration_since(rate.logged_at) < RATE_LIMIT_LOG_INTERVAL {
            return;
        }
        let count = std::mem::take(&mut rate.unlogged);
        rate.logged_at = now;
        let (connection_id, user) = (log.connection_id(), log.user_id());
        tracing::warn!(conn = %conn, connection_id, user, count, "inbound rate limit hits since the last report");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connections_log_identity_is_one_allocation_split_in_two() {
        let log = ConnLog::new("srv-a-17", "alice@example");
        assert_eq!(log.connection_id(), "srv-a-17");
        assert_eq!(log.user_id(), "alice@example");
        let empty = ConnLog::new("srv-1", "");
        assert_eq!((empty.connection_id(), empty.user_id()), ("srv-1", ""));
        // Every open connection holds one in a dense map: 32 bytes, so its
        // slot (with the generation) stays at 40.
        assert!(std::mem::size_of::<ConnLog>() <= 32);
    }

    #[test]
    fn log_lines_find_the_identity_from_opened_to_closed() {
        let mut logs = ConnLogs::default();
        let conn = ConnId::new(3, 1);
        let now = Instant::now();
        logs.record(
            &Event::Opened {
                conn,
                connection_id: "srv-9".to_owned(),
                user_id: "bob".to_owned(),
            },
            now,
        );
        assert_eq!(
            (logs.connection_id(conn), logs.user_id(conn)),
            ("srv-9", "bob")
        );
        logs.record(&Event::RateLimited { conn }, now);
        logs.record(
            &Event::Closed {
                conn,
                user_id: "bob".to_owned(),
                reason: CloseReason::ClientClosed,
                duration: Duration::from_secs(1),
            },
            now,
        );
        assert_eq!((logs.connection_id(conn), logs.user_id(conn)), ("", ""));
    }
}
