//! A connection's life in the core: admission, the outbound path every frame
//! takes, timers, and the ways it ends (close frame first, then the socket).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::compression::Compression;
use super::conflation::Delivery;
use super::connection::{Connection, NOT_SCHEDULED};
use super::lazy_vec::LazyVec;
use super::outbound::{self, FrameKind, Outbound, Pushed};
use super::rate_limit::TokenBucket;
use super::timers::{Timer, TimerTable};
use super::{CloseReason, ConnId, Core, DropReason, Event, Open, Refusal};
use crate::proto::codes::CloseCode;
use crate::proto::{server, ws_frame};

impl CloseReason {
    /// The reason text of the close frame.
    fn close_text(self) -> &'static str {
        match self {
            CloseReason::ClientClosed | CloseReason::ConnectionLost => "normal closure",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::HeartbeatTimeout => "connection timeout",
            CloseReason::TokenExpired => "token expired",
            CloseReason::RateLimitExceeded => "rate limit exceeded",
            CloseReason::FrameTooBig => "frame too big",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::BadCompressedData => "corrupt compressed data",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::InvalidUtf8 => "invalid UTF-8",
        }
    }
}

impl Core {
    /// Nanoseconds from the anchor to `now` (0 before it, which no input
    /// is; 584 years would overflow and are capped).
    pub(super) fn nanos_since_anchor(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.anchor).as_nanos();
        u64::try_from(elapsed).unwrap_or(u64::MAX)
    }

    /// `at` as a key of the deadline set: signed nanoseconds from the
    /// anchor (8 bytes, an `Instant` is 16; every connection has an entry).
    /// Exact both ways within ±292 years of the anchor, and clamped there.
    pub(super) fn tick(&self, at: Instant) -> i64 {
        tick_after(self.anchor, at)
    }

    /// The instant of a deadline-set key ([`Core::tick`]).
    pub(super) fn instant(&self, tick: i64) -> Instant {
        let offset = Duration::from_nanos(tick.unsigned_abs());
        if tick >= 0 {
            self.anchor + offset
        } else {
            self.anchor - offset
        }
    }

    /// Wall-clock Unix milliseconds at `now`, from the anchor.
    pub(super) fn unix_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.anchor).as_millis();
        self.anchor_unix_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// The instant at which Unix time reaches `unix_ms` (`now` if it already has).
    pub(super) fn instant_of_unix_ms(&self, now: Instant, unix_ms: u64) -> Instant {
        let ahead = unix_ms.saturating_sub(self.unix_ms(now));
        now.checked_add(Duration::from_millis(ahead))
            .unwrap_or(now + Duration::from_secs(86_400 * 365 * 100))
    }

    /// The `connectionId` of the connection this core opened `serial`-th.
    pub(super) fn connection_id_of(&self, serial: u64) -> String {
        format!("{}-{}", self.config.server_id, serial)
    }

    pub(super) fn open(&mut self, now: Instant, open: Open) -> Result<ConnId, Refusal> {
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        if self.config.max_connections > 0 && self.conns.len() >= self.config.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        let from_address = self.per_address.get(&open.remote).copied().unwrap_or(0);
        if self.config.max_connections_per_ip > 0
            && from_address >= self.config.max_connections_per_ip
        {
            return Err(Refusal::TooManyFromAddress);
        }
        *self.per_address.entry(open.remote).or_default() += 1;
        self.opened_total += 1;
        let connection_id = self.connection_id_of(self.opened_total);

        let mut timers = TimerTable::default();
        if !self.config.heartbeat_interval.is_zero() {
            timers.set(Timer::Heartbeat, now + self.config.heartbeat_interval);
        }
        if !self.config.connection_timeout.is_zero() {
            timers.set(Timer::Idle, now + self.config.connection_timeout);
        }
        self.arm_token_timers(now, &mut timers, open.identity.expires_at_unix_ms);
        let connected = server::connected(
            &connection_id,
            &open.identity.user_id,
            &self.config.server_id,
            self.unix_ms(now),
        );
        let user_id = String::from(&*open.identity.user_id);
        let conn = self.conns.insert(Connection {
            identity: open.identity,
            remote: open.remote,
            serial: self.opened_total,
            opened_at: self.nanos_since_anchor(now),
            timers,
            outbound: Outbound::new(
                self.config.client_buffer_frames,
                self.config.client_buffer_bytes,
                outbound::control_bound(self.config.rate_limit_burst),
            ),
            rate: TokenBucket::new(
                now,
                self.config.rate_limit_per_second,
                self.config.rate_limit_burst,
            ),
            closing: None,
            batch: LazyVec::new(),
            scheduled: NOT_SCHEDULED,
            in_ready: false,
            throttles: LazyVec::new(),
            deflate: open.deflate,
            refresh_pending: false,
        });
        self.deflate_connections += usize::from(open.deflate.is_some());
        self.events.push_back(Event::Opened {
            conn,
            connection_id,
            user_id,
        });
        self.enqueue(now, conn, connected, FrameKind::Control);
        // `?channels=a,,b` leaves empty names: noise, not a request.
        let channels: Vec<String> = open
            .channels
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect();
        if !channels.is_empty() {
            self.subscribe(now, conn, None, channels, &Default::default());
        }
        self.reschedule(conn);
        Ok(conn)
    }

    /// Whether frames from `conn` are still processed: false if the
    /// connection is unknown (or a stale handle) or closing.
    pub(super) fn accepts_input(&self, conn: ConnId) -> bool {
        self.conns.get(conn).is_some_and(|c| c.closing.is_none())
    }

    /// Inbound activity proves the client alive: pushes its idle deadline
    /// (`connection_timeout`) back to `now` plus the timeout.
    pub(super) fn reset_idle_timer(&mut self, now: Instant, conn: ConnId) {
        if self.config.connection_timeout.is_zero() {
            return;
        }
        if let Some(c) = self.conns.get_mut(conn) {
            c.timers
                .set(Timer::Idle, now + self.config.connection_timeout);
            self.reschedule(conn);
        }
    }

    /// Lists `conn` for [`Core::poll_output`] if its writer is idle and
    /// something is queued.
    pub(super) fn mark_ready(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(conn) {
            list_if_ready(&mut self.ready, conn, c);
        }
    }

    /// Queues a frame under the backpressure policy. Returns whether it was
    /// queued (a full queue may drop it, or close the connection).
    pub(super) fn enqueue(
        &mut self,
        now: Instant,
        conn: ConnId,
        frame: Bytes,
        kind: FrameKind,
    ) -> bool {
        let delivery = Delivery::barrier(self.config.slow_client_policy);
        self.enqueue_tagged(now, conn, frame, kind, delivery)
    }

    /// [`Core::enqueue`] for a frame with its channel's policy and
    /// conflation tag, which a conflating channel uses once the queue is
    /// over its bound.
    pub(super) fn enqueue_tagged(
        &mut self,
        now: Instant,
        conn: ConnId,
        frame: Bytes,
        kind: FrameKind,
        delivery: Delivery,
    ) -> bool {
        self.push_to_queue(now, conn, kind, delivery, None, |_, _| frame)
    }

    /// Queues the message frame `plain` for `conn` (the message's one
    /// compressed frame instead if it negotiated deflate, built by the first
    /// such subscriber) and stamps the queue with its ingest instant.
    pub(super) fn enqueue_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        plain: &Bytes,
        ingested: Instant,
        delivery: Delivery,
    ) -> bool {
        let kind = FrameKind::Message;
        self.push_to_queue(
            now,
            conn,
            kind,
            delivery,
            Some(ingested),
            |c, compression| {
                c.deflate
                    .and_then(|deflate| compression.compressed_for(deflate, plain))
                    .unwrap_or_else(|| plain.clone())
            },
        )
    }

    /// The one way a frame enters a queue: the connection's record is looked
    /// up once, `frame` picks the bytes from it, and the push, the byte
    /// accounting, the ingest stamp and the ready list are all done under
    /// that one borrow. Only what is rare (drops, conflation, an overflow)
    /// goes back through `self` afterwards. The fan-out does this for every
    /// subscriber of every message: when choosing the frame, queueing,
    /// stamping and listing each looked the record up again, a delivery
    /// cost 409 instructions at 25 messages per turn (`benches/callgrind.sh`);
    /// under one borrow it costs 285.
    #[inline]
    fn push_to_queue(
        &mut self,
        now: Instant,
        conn: ConnId,
        kind: FrameKind,
        delivery: Delivery,
        ingested: Option<Instant>,
        frame: impl FnOnce(&Connection, &mut Compression) -> Bytes,
    ) -> bool {
        let Some(c) = self.conns.get_mut(conn) else {
            return false;
        };
        if c.closing.is_some() {
            return false;
        }
        let frame = frame(c, &mut self.compression);
        let before = c.outbound.bytes();
        let pushed = c.outbound.push(frame, kind, delivery.policy, delivery.tag);
        let after = c.outbound.bytes();
        // Dropping or conflating may shrink the queue while pushing.
        self.outbound_bytes = self.outbound_bytes + after - before;
        self.outbound_peak_bytes = self.outbound_peak_bytes.max(after);
        let (queued, dropped, conflated) = match pushed {
            Pushed::Queued { dropped, conflated } => (true, dropped, conflated),
            Pushed::DroppedNew { dropped, conflated } => (false, dropped + 1, conflated),
            Pushed::Overflow => {
                // Closing queues the close frame and lists the connection.
                self.close_slow_consumer(now, conn, u64::from(kind == FrameKind::Message));
                return false;
            }
        };
        if queued && let Some(at) = ingested {
            c.outbound.note_ingest(at);
        }
        list_if_ready(&mut self.ready, conn, c);
        self.count_conflated(conn, conflated);
        self.count_drops(conn, dropped, DropReason::DropOldest);
        queued
    }

    /// Queues a control frame only if it fits its bound; false if it was
    /// left out. For answers that are a courtesy (a `rate_limited` error
    /// to a client that floods): their overflow must not close the
    /// connection as a slow consumer when the rate limit is the truth.
    pub(super) fn enqueue_if_room(&mut self, now: Instant, conn: ConnId, frame: Bytes) -> bool {
        let fits = self
            .conns
            .get(conn)
            .is_some_and(|c| c.closing.is_none() && c.outbound.control_fits(frame.len()));
        fits && self.enqueue(now, conn, frame, FrameKind::Control)
    }

    fn count_conflated(&mut self, conn: ConnId, count: u64) {
        if count > 0 {
            self.events
                .push_back(Event::MessagesConflated { conn, count });
        }
    }

    fn count_drops(&mut self, conn: ConnId, count: u64, reason: DropReason) {
        if count > 0 {
            self.events.push_back(Event::MessagesDropped {
                conn,
                count,
                reason,
            });
        }
    }

    /// The queue overflowed under `disconnect`: discard what is unsent
    /// (`also_dropped` counts a message that never got in), and tell the
    /// client why ahead of anything else.
    pub(super) fn close_slow_consumer(&mut self, now: Instant, conn: ConnId, also_dropped: u64) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let before = c.outbound.bytes();
        let discarded = c.outbound.discard_queued() + c.batch.len() as u64;
        self.outbound_bytes -= before - c.outbound.bytes();
        c.batch.clear();
        self.count_drops(
            conn,
            discarded + also_dropped,
            DropReason::SlowConsumerClosed,
        );
        self.events.push_back(Event::SlowConsumer { conn });
        self.begin_close(now, conn, CloseCode::Policy, CloseReason::SlowConsumer);
    }

    /// Queues the close frame after what is already queued, stops everything
    /// else for the connection, and gives the socket `slow_close_grace` to
    /// take it. No-op if it is already closing.
    pub(super) fn begin_close(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: CloseCode,
        reason: CloseReason,
    ) {
        if self.conns.get(conn).is_none_or(|c| c.closing.is_some()) {
            return;
        }
        if reason != CloseReason::SlowConsumer {
            // Messages waiting for a batch were already promised to the client.
            self.flush_batch(now, conn);
        }
        let grace = self.config.slow_close_grace;
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if c.closing.is_some() {
            // Flushing the batch overflowed the queue: already closed as slow.
            return;
        }
        c.closing = Some(reason);
        c.timers = TimerTable::default();
        c.timers.set(Timer::CloseGrace, now + grace);
        let close = ws_frame::close(code.as_u16(), reason.close_text());
        self.outbound_bytes += close.len();
        c.outbound.push_unbounded(close, FrameKind::Close);
        self.outbound_peak_bytes = self.outbound_peak_bytes.max(c.outbound.bytes());
        self.throttled -= std::mem::take(&mut c.throttles).len();
        self.subscriptions.remove_conn(conn);
        self.drop_replays(conn, None);
        self.mark_ready(conn);
        self.reschedule(conn);
    }

    /// Removes the connection from the core and reports it closed.
    pub(super) fn forget(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.remove(conn) else {
            return;
        };
        self.outbound_bytes -= c.outbound.bytes();
        if c.scheduled != NOT_SCHEDULED {
            self.deadlines.remove(&(c.scheduled, conn));
        }
        self.throttled -= c.throttles.len();
        if let Some(count) = self.per_address.get_mut(&c.remote) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&c.remote);
            }
        }
        self.subscriptions.remove_conn(conn);
        self.deflate_connections -= usize::from(c.deflate.is_some());
        self.drop_replays(conn, None);
        self.events.push_back(Event::Closed {
            conn,
            connection_id: self.connection_id_of(c.serial),
            user_id: c.identity.user_id.into_string(),
            reason,
            duration: now
                .saturating_duration_since(self.anchor + Duration::from_nanos(c.opened_at)),
        });
    }

    /// Files the connection under its earliest timer.
    pub(super) fn reschedule(&mut self, conn: ConnId) {
        let anchor = self.anchor;
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let next = c
            .timers
            .next()
            .map_or(NOT_SCHEDULED, |at| tick_after(anchor, at));
        if next == c.scheduled {
            return;
        }
        let scheduled = std::mem::replace(&mut c.scheduled, next);
        if scheduled != NOT_SCHEDULED {
            self.deadlines.remove(&(scheduled, conn));
        }
        if next != NOT_SCHEDULED {
            self.deadlines.insert((next, conn));
        }
    }

    pub(super) fn timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        let now_tick = self.tick(now);
        while let Some(&(at, conn)) = self.deadlines.first() {
            if at > now_tick {
                break;
            }
            self.deadlines.pop_first();
            if let Some(c) = self.conns.get_mut(conn) {
                c.scheduled = NOT_SCHEDULED;
            }
            due.push(conn);
        }
        for conn in due {
            self.fire_timers(now, conn);
            self.reschedule(conn);
        }
        self.serve_paced_replays(now);
    }

    fn fire_timers(&mut self, now: Instant, conn: ConnId) {
        for timer in Timer::ALL {
            let Some(c) = self.conns.get_mut(conn) else {
                return;
            };
            if !c.timers.take_expired(timer, now) {
                continue;
            }
            match timer {
                Timer::CloseGrace => {
                    let reason = c
                        .closing
                        .expect("the grace timer is armed only by begin_close");
                    self.disconnects.push_back(conn);
                    self.forget(now, conn, reason);
                    return;
                }
                Timer::TokenExpiry => {
                    self.begin_close(now, conn, CloseCode::Policy, CloseReason::TokenExpired)
                }
                Timer::Idle => {
                    self.events.push_back(Event::HeartbeatFailure { conn });
                    self.begin_close(now, conn, CloseCode::Policy, CloseReason::HeartbeatTimeout);
                }
                Timer::Heartbeat => {
                    c.timers
                        .set(Timer::Heartbeat, now + self.config.heartbeat_interval);
                    self.enqueue(now, conn, ws_frame::ping(), FrameKind::Control);
                    if self.config.app_ping {
                        let ping = server::app_ping(self.unix_ms(now));
                        self.enqueue(now, conn, ping, FrameKind::Control);
                    }
                }
                Timer::Throttle => self.release_throttled(now, conn),
                Timer::BatchFlush => self.flush_batch(now, conn),
                Timer::RefreshDue => self.refresh_due(now, conn),
                Timer::Delay => self.pump_replays(now, conn),
            }
        }
    }
}

/// Lists `conn` on `ready` if its writer is idle and something is queued.
/// Takes the record rather than `&mut Core`, so a caller already holding its
/// borrow does not look it up again.
fn list_if_ready(ready: &mut VecDeque<ConnId>, conn: ConnId, c: &mut Connection) {
    if !c.in_ready && c.outbound.ready() {
        c.in_ready = true;
        ready.push_back(conn);
    }
}

/// [`Core::tick`] of `at` for a core anchored at `anchor` (a function of
/// its own so it can run while a connection of the core is borrowed).
fn tick_after(anchor: Instant, at: Instant) -> i64 {
    match at.checked_duration_since(anchor) {
        Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        None => i64::try_from(anchor.duration_since(at).as_nanos()).map_or(-i64::MAX, |n| -n),
    }
}
