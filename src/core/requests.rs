//! What the core does with each client frame: rate limiting first, then
//! decoding, then `subscribe` / `unsubscribe` / `ping` / `pong`. Every
//! rejection is an `error` frame the client can act on.

use std::time::Instant;

use super::lazy_vec::LazyVec;
use super::outbound::FrameKind;
use super::permissions;
use super::rate_limit::Verdict;
use super::throttle::{Held, Throttle};
use super::{CloseReason, ConnId, Core, Event};
use crate::proto::channel;
use crate::proto::client::{self, ClientFrame, RequestId, SubscribeOptions};
use crate::proto::codes::{CloseCode, ErrorCode};
use crate::proto::server;

/// Channels in the order first named, without repeats.
fn deduplicated(channels: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(channels.len());
    channels
        .into_iter()
        .filter(|c| seen.insert(c.clone()))
        .collect()
}

impl Core {
    /// Applies the inbound rate limit; false if the frame must not be
    /// processed.
    fn admit(&mut self, now: Instant, conn: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(conn) else {
            return false;
        };
        match c.rate.take(now) {
            Verdict::Allowed => true,
            Verdict::Limited => {
                self.events.push_back(Event::RateLimited { conn });
                let per_second = self.config.rate_limit_per_second;
                let message = format!(
                    "Too many frames: the limit is {per_second} per second; this frame was not processed. Slow down and retry."
                );
                let error = server::error(None, ErrorCode::RateLimited, &message);
                if self.enqueue_if_room(now, conn, error) {
                    self.events.push_back(Event::FrameRejected {
                        conn,
                        code: ErrorCode::RateLimited,
                    });
                }
                false
            }
            Verdict::Abusive => {
                self.events.push_back(Event::RateLimited { conn });
                self.begin_close(now, conn, CloseCode::Policy, CloseReason::RateLimitExceeded);
                false
            }
        }
    }

    /// Answers with an `error` frame.
    pub(super) fn reject(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RequestId>,
        code: ErrorCode,
        message: &str,
    ) {
        self.events.push_back(Event::FrameRejected { conn, code });
        self.enqueue(
            now,
            conn,
            server::error(id, code, message),
            FrameKind::Control,
        );
    }

    pub(super) fn text(&mut self, now: Instant, conn: ConnId, payload: &[u8]) {
        if !self.accepts_input(conn) {
            return;
        }
        self.reset_idle_timer(now, conn);
        if std::str::from_utf8(payload).is_err() {
            // RFC 6455 §8.1: an endpoint MUST fail the connection.
            self.begin_close(
                now,
                conn,
                CloseCode::InvalidPayload,
                CloseReason::InvalidUtf8,
            );
            return;
        }
        if !self.admit(now, conn) {
            return;
        }
        match client::decode(payload) {
            Ok(ClientFrame::Subscribe {
                id,
                channels,
                options,
            }) => self.subscribe(now, conn, id.as_ref(), channels, &options),
            Ok(ClientFrame::Unsubscribe { id, channels }) => {
                self.unsubscribe(now, conn, id.as_ref(), channels)
            }
            Ok(ClientFrame::Ping { id }) => {
                let pong = server::pong(id.as_ref(), self.unix_ms(now));
                self.enqueue(now, conn, pong, FrameKind::Control);
            }
            Ok(ClientFrame::Pong) => {}
            Ok(ClientFrame::Refresh { id, token }) => self.refresh_requested(now, conn, id, token),
            Err(err) => self.reject(now, conn, err.id.as_ref(), err.code(), &err.to_string()),
        }
    }

    pub(super) fn binary(&mut self, now: Instant, conn: ConnId) {
        if !self.accepts_input(conn) {
            return;
        }
        self.reset_idle_timer(now, conn);
        if !self.admit(now, conn) {
            return;
        }
        let message = "Binary frames are not supported; send JSON text frames.";
        self.reject(now, conn, None, ErrorCode::BinaryNotSupported, message);
    }

    /// Why one channel of a subscribe request cannot be granted.
    fn refusal(&self, conn: ConnId, name: &str, new_so_far: usize) -> Option<(ErrorCode, String)> {
        let c = self
            .conns
            .get(conn)
            .expect("callers checked the connection exists");
        if let Err(err) = channel::validate(name) {
            let message = channel::refusal_message(name, err);
            return Some((ErrorCode::InvalidChannel, message));
        }
        if let Err(denied) = permissions::check(&c.identity, &self.config.channel_rules, name) {
            let message = format!("You may not subscribe to channel \"{name}\": {denied}.");
            return Some((ErrorCode::Forbidden, message));
        }
        if let Some(delay) = super::delay::delay_for(&self.config, &c.identity, name)
            && !self.subscriptions.holds(conn, name)
            && !self.store.keeps_history(name)
        {
            let message = format!(
                "Channel \"{name}\" reaches you {} s late, from its history, but the server keeps no history for it.",
                delay.as_secs()
            );
            return Some((ErrorCode::Forbidden, message));
        }
        let limit = self.config.max_channels_per_connection;
        if !self.subscriptions.holds(conn, name)
            && self.subscriptions.count_of(conn) + new_so_far + 1 > limit
        {
            let message = format!(
                "Subscribing to channel \"{name}\" would exceed the limit of {limit} channels per connection; unsubscribe from some first."
            );
            return Some((ErrorCode::ChannelLimit, message));
        }
        None
    }

    /// All or nothing: every channel is checked before any is added.
    pub(super) fn subscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RequestId>,
        channels: Vec<String>,
        options: &SubscribeOptions,
    ) {
        let channels = deduplicated(channels);
        let mut new_so_far = 0;
        for name in &channels {
            if let Some((code, message)) = self.refusal(conn, name, new_so_far) {
                self.reject(now, conn, id, code, &message);
                return;
            }
            if !self.subscriptions.holds(conn, name) {
                new_so_far += 1;
            }
        }
        let added: Vec<String> = channels
            .iter()
            .filter(|name| self.subscriptions.subscribe(conn, name))
            .cloned()
            .collect();
        let state = self.stream_state(now, conn, &channels, &added, options);
        let max_rates = self.set_rates(now, conn, &channels, options.max_rate);
        if !self.flush_batch_before_answer(now, conn) {
            // Closed as a slow consumer: it holds no channels any more.
            return;
        }
        let ack = server::subscribed(
            id,
            &channels,
            self.subscriptions.channels_of(conn),
            &state.positions,
            &state.recovered,
            &max_rates,
        );
        self.enqueue(now, conn, ack, FrameKind::Control);
        // Replayed messages follow the ack that reported their cursor.
        self.pump_replays(now, conn);
        if !added.is_empty() {
            self.events.push_back(Event::Subscribed {
                conn,
                channels: added,
            });
        }
    }

    /// Sets the rate limit of each channel of a subscribe: the request's
    /// `maxRate` capped by `WS_SUBSCRIPTION_MAX_RATE`, narrowed by the token's
    /// `maxRate` claim (which applies even when the request names none).
    /// A channel named without either loses its limit; values it held back
    /// are sent now, so its last state is not lost. Returns the effective
    /// rate per limited channel, for the ack.
    fn set_rates(
        &mut self,
        now: Instant,
        conn: ConnId,
        channels: &[String],
        requested: Option<u32>,
    ) -> Vec<(String, u32)> {
        let cap = self.config.subscription_max_rate.max(1);
        let Some(c) = self.conns.get_mut(conn) else {
            return Vec::new();
        };
        let asked = requested.map(|r| r.min(cap));
        let rate = effective_rate(asked, c.identity.max_rate);
        let mut released = Vec::new();
        for name in channels {
            set_rate(
                &mut c.throttles,
                &mut self.throttled,
                name,
                rate,
                asked,
                &mut released,
            );
        }
        self.release(now, conn, released);
        match rate {
            Some(rate) => channels.iter().map(|name| (name.clone(), rate)).collect(),
            None => Vec::new(),
        }
    }

    /// After a token refresh: every subscription's rate is worked out again
    /// from what its subscribe asked and the new token's `maxRate` claim, so
    /// a narrower claim slows live subscriptions at once (a wider one, or
    /// none, restores what they asked). Channels in `leaving` are skipped
    /// (the refresh revokes them). Returns every limited channel's rate when
    /// any changed, for the `refreshed` frame.
    pub(super) fn retune_rates(
        &mut self,
        now: Instant,
        conn: ConnId,
        leaving: &[String],
    ) -> Option<Vec<(String, u32)>> {
        let channels: Vec<String> = self
            .subscriptions
            .channels_of(conn)
            .into_iter()
            .filter(|name| !leaving.iter().any(|l| l == name))
            .map(str::to_owned)
            .collect();
        let c = self.conns.get_mut(conn)?;
        let claim = c.identity.max_rate;
        let mut released = Vec::new();
        let mut changed = false;
        for name in &channels {
            let asked = c
                .throttles
                .iter()
                .find(|t| &t.channel == name)
                .and_then(|t| t.asked);
            changed |= set_rate(
                &mut c.throttles,
                &mut self.throttled,
                name,
                effective_rate(asked, claim),
                asked,
                &mut released,
            );
        }
        let mut rates: Vec<(String, u32)> = c
            .throttles
            .iter()
            .map(|t| (t.channel.clone(), t.rate))
            .collect();
        rates.sort_unstable();
        self.release(now, conn, released);
        changed.then_some(rates)
    }

    /// Sends values a lifted limit held back, in the order they arrived.
    fn release(&mut self, now: Instant, conn: ConnId, mut released: Vec<Held>) {
        released.sort_unstable_by_key(|held| held.seq);
        for held in released {
            self.deliver(now, conn, held);
        }
    }

    /// Channels not held are simply acknowledged.
    pub(super) fn unsubscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RequestId>,
        channels: Vec<String>,
    ) {
        if !self.flush_batch_before_answer(now, conn) {
            return;
        }
        let channels = deduplicated(channels);
        let removed: Vec<String> = channels
            .iter()
            .filter(|name| self.subscriptions.unsubscribe(conn, name))
            .cloned()
            .collect();
        self.drop_replays(conn, Some(&removed));
        if let Some(c) = self.conns.get_mut(conn) {
            let before = c.throttles.len();
            c.throttles.retain(|t| !removed.contains(&t.channel));
            self.throttled -= before - c.throttles.len();
        }
        let ack = server::unsubscribed(id, &channels, self.subscriptions.channels_of(conn));
        self.enqueue(now, conn, ack, FrameKind::Control);
        if !removed.is_empty() {
            self.events.push_back(Event::Unsubscribed {
                conn,
                channels: removed,
            });
        }
    }
}

/// A subscription's rate: what it asked (already capped by the server),
/// narrowed by the token's claim, which applies even when it asked none.
fn effective_rate(asked: Option<u32>, claim: Option<u32>) -> Option<u32> {
    match (asked, claim) {
        (Some(asked), Some(claim)) => Some(asked.min(claim)),
        (asked, claim) => asked.or(claim),
    }
}

/// Sets the limit of `name` among a connection's `throttles` to `rate`
/// (`None` lifts it, its held values going to `released`); `throttled`
/// counts limits across connections. Returns whether anything changed.
fn set_rate(
    throttles: &mut LazyVec<Throttle>,
    throttled: &mut usize,
    name: &str,
    rate: Option<u32>,
    asked: Option<u32>,
    released: &mut Vec<Held>,
) -> bool {
    let at = throttles.iter().position(|t| t.channel == name);
    match (rate, at) {
        (Some(rate), Some(at)) => {
            let throttle = &mut throttles[at];
            throttle.asked = asked;
            let changed = throttle.rate != rate;
            throttle.set_rate(rate);
            changed
        }
        (Some(rate), None) => {
            throttles.push(Throttle::new(name.to_owned(), rate, asked));
            *throttled += 1;
            true
        }
        (None, Some(at)) => {
            released.extend(throttles.swap_remove(at).into_held());
            *throttled -= 1;
            true
        }
        (None, None) => false,
    }
}
