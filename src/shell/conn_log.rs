//! Log lines about connections: who each one is (its `connectionId` and
//! user, on every line about it), and a throttle so a flooding client
//! cannot flood the logs with rate-limit lines too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::core::{CloseReason, ConnId, Core, Event};

/// At most one rate-limit summary line per connection per this interval.
const RATE_LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the log lines about connections remember: the rate-limit throttle
/// of each connection that hit the limit. Who a connection is comes from
/// the core ([`Core::connection_id`], [`Core::user_id`]) while it holds the
/// connection, and from its `Closed` event after: the shell keeps no copy
/// per connection (it cost every idle connection a map slot and a string,
/// ~80 bytes).
#[derive(Debug, Default)]
pub(crate) struct ConnLogs {
    /// By core handle, only connections with a rate-limit hit (most never
    /// have one, so a sparse map); dropped at the connection's `Closed`
    /// event.
    rate_limits: HashMap<ConnId, RateLimitLog>,
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

/// The `connectionId` of `conn` for a log line ("" once the core has no
/// trace of it). Called inside the logging macros, which evaluate a field
/// only for a line that is written: a disabled level formats nothing.
pub(crate) fn connection_id(core: &Core, conn: ConnId) -> String {
    core.connection_id(conn).unwrap_or_default()
}

/// The user of `conn` for a log line ("" once the core has no trace of it).
pub(crate) fn user(core: &Core, conn: ConnId) -> &str {
    core.user_id(conn).unwrap_or_default()
}

impl ConnLogs {
    /// Logs `event` (at `now`) with the identity of its connection.
    /// `core` is the core that queued it, asked for the connection's
    /// identity.
    pub(crate) fn record(&mut self, core: &Core, event: &Event, now: Instant) {
        match event {
            Event::Opened {
                conn,
                connection_id,
                user_id,
            } => {
                tracing::info!(conn = %conn, connection_id, user = user_id, "connection opened");
            }
            Event::Closed {
                conn,
                connection_id,
                user_id,
                reason,
                duration,
            } => {
                let unlogged = self.rate_limits.remove(conn).map_or(0, |r| r.unlogged);
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
                tracing::debug!(conn = %conn, connection_id = connection_id(core, *conn), user = user(core, *conn), ?channels, "subscribed");
            }
            Event::Unsubscribed { conn, channels } => {
                tracing::debug!(conn = %conn, connection_id = connection_id(core, *conn), user = user(core, *conn), ?channels, "unsubscribed");
            }
            Event::MessagesDropped {
                conn,
                count,
                reason,
            } => {
                tracing::debug!(conn = %conn, connection_id = connection_id(core, *conn), user = user(core, *conn), count, ?reason, "messages dropped");
            }
            Event::MessagesConflated { conn, count } => {
                tracing::trace!(conn = %conn, connection_id = connection_id(core, *conn), user = user(core, *conn), count, "messages conflated");
            }
            Event::SlowConsumer { conn } => {
                tracing::warn!(conn = %conn, connection_id = connection_id(core, *conn), user = user(core, *conn), "slow consumer: closing with 1008");
            }
            Event::HeartbeatFailure { conn } => {
                tracing::info!(conn = %conn, connection_id = connection_id(core, *conn), user = user(core, *conn), "silent past the connection timeout: closing");
            }
            Event::RateLimited { conn } => self.rate_limited(core, *conn, now),
            Event::FrameRejected { conn, code } => {
                tracing::debug!(conn = %conn, connection_id = connection_id(core, *conn), user = user(core, *conn), code = code.as_str(), "client frame rejected");
            }
        }
    }

    /// Logs a connection's first rate-limit hit, then at most one line with a
    /// count per [`RATE_LIMIT_LOG_INTERVAL`] (the rest is left for the close).
    fn rate_limited(&mut self, core: &Core, conn: ConnId, now: Instant) {
        let Some(rate) = self.rate_limits.get_mut(&conn) else {
            self.rate_limits.insert(
                conn,
                RateLimitLog {
                    logged_at: now,
                    unlogged: 0,
                },
            );
            tracing::warn!(conn = %conn, connection_id = connection_id(core, conn), user = user(core, conn), "inbound rate limit hit");
            return;
        };
        rate.unlogged += 1;
        if now.duration_since(rate.logged_at) < RATE_LIMIT_LOG_INTERVAL {
            return;
        }
        let count = std::mem::take(&mut rate.unlogged);
        rate.logged_at = now;
        tracing::warn!(conn = %conn, connection_id = connection_id(core, conn), user = user(core, conn), count, "inbound rate limit hits since the last report");
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::core::{CoreConfig, Identity, Open, Output};

    fn core_with_one_connection(now: Instant) -> (Core, ConnId) {
        let mut core = Core::new(
            CoreConfig {
                server_id: "srv".to_owned(),
                ..CoreConfig::default()
            },
            now,
            0,
        );
        let conn = core
            .handle_open(
                now,
                Open {
                    identity: Identity::unrestricted("bob"),
                    remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    channels: vec![],
                    deflate: None,
                },
            )
            .expect("opens");
        (core, conn)
    }

    fn events(core: &mut Core) -> Vec<Event> {
        core.outputs_until_timeout()
            .into_iter()
            .filter_map(|output| match output {
                Output::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn log_lines_take_the_identity_from_the_core_until_the_closed_event_is_polled() {
        let now = Instant::now();
        let (mut core, conn) = core_with_one_connection(now);
        let opened = events(&mut core);
        let Some(Event::Opened {
            connection_id: id, ..
        }) = opened.first()
        else {
            panic!("the open is reported first: {opened:?}");
        };
        let who = |core: &Core| (connection_id(core, conn), user(core, conn).to_owned());
        assert_eq!(who(&core), (id.clone(), "bob".to_owned()));

        // A line about an event queued before the close but logged after
        // the core forgot the connection still names it.
        core.handle_closed(now, conn);
        assert_eq!(who(&core), (id.clone(), "bob".to_owned()));

        let closed = events(&mut core);
        assert!(
            matches!(
                &closed[..],
                [Event::Closed { connection_id: at_close, user_id, .. }]
                    if at_close == id && user_id == "bob"
            ),
            "the close carries who it was: {closed:?}"
        );
        assert_eq!(who(&core), (String::new(), String::new()));
    }

    #[test]
    fn only_a_connection_that_hit_the_rate_limit_is_remembered_until_it_closes() {
        let now = Instant::now();
        let (mut core, conn) = core_with_one_connection(now);
        let mut logs = ConnLogs::default();
        for event in events(&mut core) {
            logs.record(&core, &event, now);
        }
        assert!(
            logs.rate_limits.is_empty(),
            "an idle connection costs nothing here"
        );

        logs.record(&core, &Event::RateLimited { conn }, now);
        logs.record(&core, &Event::RateLimited { conn }, now);
        assert_eq!(logs.rate_limits[&conn].unlogged, 1, "the second hit waits");

        core.handle_closed(now, conn);
        for event in events(&mut core) {
            logs.record(&core, &event, now);
        }
        assert!(logs.rate_limits.is_empty(), "dropped with the connection");
    }
}
