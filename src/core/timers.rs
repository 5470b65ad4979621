//! A connection's timers: a small table of deadlines, one per kind. The
//! connection's next deadline is the earliest set entry. No timer wheel: a
//! handful of entries per connection is all there is.

use std::time::Instant;

/// Why the core must wake up for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Close the socket even if the close frame was not written.
    CloseGrace = 0,
    /// The token's `exp` passes.
    TokenExpiry = 1,
    /// No inbound frame for the connection timeout.
    Idle = 2,
    /// Send the next WebSocket Ping.
    Heartbeat = 3,
    /// Send the pending JSON-array batch.
    BatchFlush = 4,
    /// Send the values `maxRate` held back whose interval is over.
    Throttle = 5,
    /// Ask the client for a fresh token (`refresh_required`), a lead time
    /// before the token's `exp`.
    RefreshDue = 6,
    /// Send the stored messages a delayed subscription waits for.
    Delay = 7,
}

impl Timer {
    /// Every timer, in the order expired ones are handled (a close first, so
    /// nothing is sent on a connection that is going away).
    pub(crate) const ALL: [Timer; 8] = [
        Timer::CloseGrace,
        Timer::TokenExpiry,
        Timer::Idle,
        Timer::Heartbeat,
        Timer::Throttle,
        Timer::BatchFlush,
        Timer::RefreshDue,
        Timer::Delay,
    ];
}

/// Deadlines by [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    /// Indexed by `Timer as usize`; `None` = not armed.
    deadlines: [Option<Instant>; 8],
}

impl TimerTable {
    /// Arms `timer` for `at`.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub(crate) fn clear(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// Whether `timer` is armed and due at `now`; disarms it if so.
    pub(crate) fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        match self.deadlines[timer as usize] {
            Some(at) if at <= now => {
                self.deadlines[timer as usize] = None;
                true
            }
            _ => false,
        }
    }

    /// When `timer` is armed for, if it is.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}
