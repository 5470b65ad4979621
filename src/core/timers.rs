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

/// Deadlines by [`Timer`], stored as signed nanoseconds from the first
/// deadline ever set: 8 bytes each instead of an `Option<Instant>`'s 16.
/// Every connection holds one, so at 10 000 idle connections the 40 bytes
/// saved are 400 KB.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    /// What the offsets count from: the first deadline set (`None` until then).
    base: Option<Instant>,
    /// Indexed by `Timer as usize`; [`DISARMED`] = not armed.
    offsets: [i64; Timer::ALL.len()],
}

/// The offset of a timer that is not armed. (`Default` gives 0, armed at
/// `base`, which is harmless: `base` is `None` until the first `set`, and
/// that fills the table with `DISARMED` first.)
const DISARMED: i64 = i64::MIN;

impl TimerTable {
    /// Arms `timer` for `at`.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        let base = match self.base {
            Some(base) => base,
            None => {
                self.offsets = [DISARMED; Timer::ALL.len()];
                *self.base.insert(at)
            }
        };
        // Deadlines more than 292 years away are clamped (to +-292 years).
        let offset = match at.checked_duration_since(base) {
            Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            None => i64::try_from(base.duration_since(at).as_nanos()).map_or(-i64::MAX, |n| -n),
        };
        self.offsets[timer as usize] = offset;
    }

    /// Disarms `timer`.
    pub(crate) fn clear(&mut self, timer: Timer) {
        if self.base.is_some() {
            self.offsets[timer as usize] = DISARMED;
        }
    }

    /// Whether `timer` is armed and due at `now`; disarms it if so.
    pub(crate) fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        match self.get(timer) {
            Some(at) if at <= now => {
                self.offsets[timer as usize] = DISARMED;
                true
            }
            _ => false,
        }
    }

    /// When `timer` is armed for, if it is.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.instant(self.offsets[timer as usize])
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        // One base for all: the smallest offset is the earliest deadline.
        let earliest = self
            .offsets
            .iter()
            .copied()
            .filter(|&o| o != DISARMED)
            .min()?;
        self.instant(earliest)
    }

    /// The deadline `offset` stands for.
    fn instant(&self, offset: i64) -> Option<Instant> {
        let base = self.base?;
        if offset == DISARMED {
            return None;
        }
        let distance = std::time::Duration::from_nanos(offset.unsigned_abs());
        // Beyond what `Instant` holds (only for clamped offsets): a far
        // future deadline stays far, a far past one is due.
        Some(if offset >= 0 {
            base.checked_add(distance)
                .unwrap_or(base + std::time::Duration::from_secs(1 << 32))
        } else {
            base.checked_sub(distance).unwrap_or(base)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadlines_before_and_after_the_first_keep_their_exact_instants() {
        let start = Instant::now() + Duration::from_secs(3600);
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        assert_eq!(table.get(Timer::Idle), None);
        table.clear(Timer::Heartbeat);
        assert_eq!(table.next(), None, "clearing an empty table arms nothing");
        table.set(
            Timer::Heartbeat,
            start + Duration::from_nanos(25_000_000_007),
        );
        table.set(
            Timer::CloseGrace,
            start - Duration::from_nanos(1_000_000_003),
        );
        table.set(
            Timer::TokenExpiry,
            start + Duration::from_secs(86_400 * 365),
        );
        assert_eq!(table.get(Timer::Idle), None);
        assert_eq!(
            table.get(Timer::Heartbeat),
            Some(start + Duration::from_nanos(25_000_000_007))
        );
        assert_eq!(
            table.next(),
            Some(start - Duration::from_nanos(1_000_000_003))
        );
        assert!(table.take_expired(Timer::CloseGrace, start));
        assert!(!table.take_expired(Timer::CloseGrace, start), "taken once");
        assert!(!table.take_expired(Timer::Heartbeat, start));
        assert_eq!(
            table.next(),
            Some(start + Duration::from_nanos(25_000_000_007))
        );
        table.clear(Timer::Heartbeat);
        assert_eq!(
            table.next(),
            Some(start + Duration::from_secs(86_400 * 365))
        );
    }
}
