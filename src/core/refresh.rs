//! In-band token refresh: a connection outlives its token without
//! reconnecting. A lead time before `exp` ([`CoreConfig::refresh_lead`]) the
//! core queues `refresh_required`; the client answers with a `refresh`
//! frame carrying a new token. The core never verifies a token itself
//! (verification is crypto, and may wait for a key fetch): it hands the
//! token to the shell through [`Core::poll_verify`] and takes back the
//! verified [`Identity`] ([`Core::handle_refresh_verified`]) or the refusal
//! ([`Core::handle_refresh_rejected`]). What follows is policy, and lives
//! here: the new token must name the same `sub`; its `exp` replaces the old
//! one; every held channel is checked again and those the new token no
//! longer allows are dropped with an `unsubscribed` frame whose `reason` is
//! `forbidden`. Without a valid refresh the connection still closes at the
//! old `exp` with 1008 "token expired".
//!
//! [`CoreConfig::refresh_lead`]: super::CoreConfig::refresh_lead

use std::collections::VecDeque;
use std::time::Instant;

use super::outbound::FrameKind;
use super::permissions;
use super::timers::{Timer, TimerTable};
use super::{ConnId, Core, Event, Identity, VerifyRequest};
use crate::proto::client::RequestId;
use crate::proto::codes::ErrorCode;
use crate::proto::server;

/// Tokens waiting for [`Output::Verify`](super::Output::Verify). At most one per connection
/// (see `Connection::refresh_pending`), so it is bounded by the
/// connection count.
#[derive(Debug, Default)]
pub(super) struct RefreshQueue {
    /// In arrival order.
    waiting: VecDeque<VerifyRequest>,
}

impl RefreshQueue {
    /// The oldest waiting token.
    pub(super) fn pop(&mut self) -> Option<VerifyRequest> {
        self.waiting.pop_front()
    }
}

impl Core {
    /// Arms the refresh and expiry timers for a token expiring at
    /// `expires_at_unix_ms` (none when it has no `exp`).
    pub(super) fn arm_token_timers(
        &self,
        now: Instant,
        timers: &mut TimerTable,
        expires_at_unix_ms: Option<u64>,
    ) {
        timers.clear(Timer::TokenExpiry);
        timers.clear(Timer::RefreshDue);
        let Some(exp) = expires_at_unix_ms else {
            return;
        };
        let expiry = self.instant_of_unix_ms(now, exp);
        timers.set(Timer::TokenExpiry, expiry);
        if !self.config.refresh_lead.is_zero() {
            let due = expiry
                .checked_sub(self.config.refresh_lead)
                .map_or(now, |at| at.max(now));
            timers.set(Timer::RefreshDue, due);
        }
    }

    /// The refresh timer fired: ask the client for a new token.
    pub(super) fn refresh_due(&mut self, now: Instant, conn: ConnId) {
        let Some(exp) = self
            .conns
            .get(conn)
            .and_then(|c| c.identity.expires_at_unix_ms)
        else {
            return;
        };
        self.enqueue(now, conn, server::refresh_required(exp), FrameKind::Control);
    }

    /// A `refresh` frame (already rate-limited like any frame): hand the
    /// token to the shell, unless one is being verified already.
    pub(super) fn refresh_requested(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<RequestId>,
        token: String,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if c.refresh_pending {
            let message =
                "A refresh is already being verified on this connection; wait for its answer.";
            self.reject(now, conn, id.as_ref(), ErrorCode::RateLimited, message);
            return;
        }
        c.refresh_pending = true;
        self.refresh
            .waiting
            .push_back(VerifyRequest { conn, id, token });
    }

    /// Next token to verify, leaving every other output in place: a
    /// shortcut for tests; a shell takes them as [`Output::Verify`](super::Output::Verify).
    #[doc(hidden)]
    pub fn poll_verify(&mut self) -> Option<VerifyRequest> {
        self.refresh.pop()
    }

    /// The shell verified the token of a `refresh`: adopt it if it names the
    /// same user, re-check the held channels, and answer `refreshed`.
    pub fn handle_refresh_verified(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<RequestId>,
        identity: Identity,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.refresh_pending = false;
        if c.closing.is_some() {
            return;
        }
        if identity.user_id != c.identity.user_id {
            let message = format!(
                "The new token is for user \"{}\", but this connection belongs to \"{}\": a refresh must keep the same sub. Reconnect to change user.",
                shortened(&identity.user_id),
                shortened(&c.identity.user_id)
            );
            self.reject(
                now,
                conn,
                id.as_ref(),
                ErrorCode::TokenRefused("sub_mismatch"),
                &message,
            );
            return;
        }
        let expires_at = identity.expires_at_unix_ms;
        let mut timers = std::mem::take(&mut c.timers);
        self.arm_token_timers(now, &mut timers, expires_at);
        let c = self
            .conns
            .get_mut(conn)
            .expect("the connection was found above and nothing removed it");
        c.timers = timers;
        c.identity = identity;
        self.reschedule(conn);

        let c = &self.conns[conn];
        let revoked: Vec<String> = self
            .subscriptions
            .channels_of(conn)
            .into_iter()
            .filter(|channel| {
                permissions::check(&c.identity, &self.config.channel_rules, channel).is_err()
            })
            .map(str::to_owned)
            .collect();
        let rates = self.retune_rates(now, conn, &revoked);
        self.enqueue(
            now,
            conn,
            server::refreshed(id.as_ref(), expires_at, rates.as_deref()),
            FrameKind::Control,
        );
        if revoked.is_empty() || !self.flush_batch_before_answer(now, conn) {
            return;
        }
        for channel in &revoked {
            self.subscriptions.unsubscribe(conn, channel);
        }
        // Nor release the values its `maxRate` held back.
        if let Some(c) = self.conns.get_mut(conn) {
            let before = c.throttles.len();
            c.throttles.retain(|t| !revoked.contains(&t.channel));
            self.throttled -= before - c.throttles.len();
        }
        // A revoked channel must not go on replaying its history either.
        self.drop_replays(conn, Some(&revoked));
        let notice = server::unsubscribed_by_server(
            &revoked,
            self.subscriptions.channels_of(conn),
            ErrorCode::Forbidden.as_str(),
        );
        self.enqueue(now, conn, notice, FrameKind::Control);
        self.events.push_back(Event::Unsubscribed {
            conn,
            channels: revoked,
        });
    }

    /// The shell refused the token of a `refresh` (`code` is the
    /// verifier's, e.g. `token_expired`): answer with an `error`; the
    /// connection keeps its current token, and its expiry.
    pub fn handle_refresh_rejected(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<RequestId>,
        code: &'static str,
        message: &str,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.refresh_pending = false;
        let message = format!("The refresh was refused: {message}.");
        self.reject(
            now,
            conn,
            id.as_ref(),
            ErrorCode::TokenRefused(code),
            &message,
        );
    }
}

/// A user id quoted in a message, cut to a sane length.
fn shortened(user: &str) -> String {
    user.chars().take(128).collect()
}
