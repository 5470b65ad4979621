//! How much replay a turn may carry, so live fan-out goes first.
//!
//! A replay (see [`super::recovery`]) continues after each completed write,
//! and a socket with room in the kernel completes its write at once: without
//! a limit, a reconnect storm (1 000 clients recovering 500 messages each)
//! is replayed in one pass of the shell's drain as far as the sockets'
//! kernel buffers take it, and a live message published meanwhile waits
//! behind that burst, in the driver and at receivers that share a host or
//! a link with the recovering clients. So replays together queue at most
//! [`REPLAY_FRAMES_PER_TURN`] frames between two wake-ups; a replay that
//! finds the allowance spent parks its connection here and the core asks
//! to be woken at once
//! ([`super::Output::Timeout`] of now). The shell takes the source messages
//! waiting for it before it serves a due deadline, so each turn carries the
//! live fan-out first and then one allowance of replay.
//!
//! Only catching up is paced: a delayed subscription's replay is its live
//! delivery (see [`super::delay`]) and is never parked. A parked replay is
//! still a replay, so fan-out still leaves its channel to it and nothing is
//! queued twice or out of order; a client waiting here has nothing queued
//! for that channel, so pacing never pushes it towards the slow-consumer
//! bound.

use std::collections::VecDeque;

use super::{ConnId, ConnMap};

/// Frames all replays may queue between two wake-ups: twice a client
/// queue's default bound. Small enough that a turn of replay costs a
/// fraction of a millisecond of writes; measured against 256 and 1 024
/// with a 1 000-client storm (BENCHMARKS.md, session 8), 256 took the
/// replay to ~2-3 s, near the ring's reach at 250 msg/s, and 1 024 was
/// base's burst again.
const REPLAY_FRAMES_PER_TURN: usize = 512;

/// The replay allowance and the connections waiting for the next one.
#[derive(Debug)]
pub(crate) struct ReplayPacing {
    /// Frames replays may still queue before the next wake-up.
    allowance: usize,
    /// Connections whose replay found the allowance spent, in the order
    /// they parked: served first come, first served.
    waiting: VecDeque<ConnId>,
    /// Which connections are in `waiting`, so a connection parks once
    /// however often fan-out or its writes try to pump it.
    parked: ConnMap<()>,
    /// The core tick at which to wake up and serve `waiting` (the tick the
    /// first of them parked at); `None` while nobody waits.
    wake: Option<i64>,
}

impl Default for ReplayPacing {
    fn default() -> Self {
        ReplayPacing {
            allowance: REPLAY_FRAMES_PER_TURN,
            waiting: VecDeque::new(),
            parked: ConnMap::default(),
            wake: None,
        }
    }
}

impl ReplayPacing {
    /// Counts one replayed frame against the allowance.
    pub(crate) fn spend(&mut self) {
        self.allowance = self.allowance.saturating_sub(1);
    }

    /// Whether the allowance is spent.
    pub(crate) fn spent(&self) -> bool {
        self.allowance == 0
    }

    /// Parks `conn` until the next wake-up, asking for one at `now_tick`.
    pub(crate) fn park(&mut self, conn: ConnId, now_tick: i64) {
        if self.parked.get(&conn).is_none() {
            self.parked.insert(conn, ());
            self.waiting.push_back(conn);
        }
        self.wake.get_or_insert(now_tick);
    }

    /// When the core must wake up to serve parked replays.
    pub(crate) fn wake(&self) -> Option<i64> {
        self.wake
    }

    /// At a wake-up due by `now_tick`: a fresh allowance, and the parked
    /// connections to pump in order (each parks again if the allowance runs
    /// out before its turn). `None` when no wake-up is due.
    pub(crate) fn refill(&mut self, now_tick: i64) -> Option<VecDeque<ConnId>> {
        if self.wake.is_none_or(|at| at > now_tick) {
            return None;
        }
        self.wake = None;
        self.allowance = REPLAY_FRAMES_PER_TURN;
        for conn in &self.waiting {
            self.parked.remove(conn);
        }
        Some(std::mem::take(&mut self.waiting))
    }
}
