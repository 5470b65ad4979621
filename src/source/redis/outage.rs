//! Reconnect bookkeeping for the Redis source: the capped exponential
//! backoff between attempts, and the record of one outage (when it began,
//! how many attempts failed, when the last warning was logged) so that a
//! long outage logs a warning periodically rather than once per retry, and
//! is reported as one gap with its duration when the connection returns.
//!
//! Plain values with `now` passed in, so the policy is tested without a clock.

use std::time::{Duration, Instant};

/// Delay before the next connection attempt: `initial`, doubling after each
/// failure, never above `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// The delay after the first failure, and again after a success.
    initial: Duration,
    /// The cap, so a long outage is still retried every `max`.
    max: Duration,
    /// The delay the next call to [`Backoff::next_delay`] returns.
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the following one is twice as long, up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Starts over after a successful connection.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// One period without a working subscription.
#[derive(Debug, Clone)]
pub(crate) struct Outage {
    /// When delivery stopped: the gap's start.
    started: Instant,
    /// Whether a subscription was lost (a real gap in delivery) rather than
    /// never established (startup), which only the former counts as a gap.
    after_loss: bool,
    /// Failed connection attempts so far, for the periodic warning.
    failed_attempts: u64,
    /// When the last warning was logged; `None` before the first.
    last_warning: Option<Instant>,
}

impl Outage {
    /// An outage that began at `now`; `after_loss` when a working
    /// subscription was lost, `false` when the source has not connected yet.
    pub(crate) fn begin(now: Instant, after_loss: bool) -> Outage {
        Outage {
            started: now,
            after_loss,
            failed_attempts: 0,
            last_warning: None,
        }
    }

    /// Records a failed attempt at `now`; `true` when a warning is due: the
    /// first failure, then at most once per `warn_interval`.
    pub(crate) fn attempt_failed(&mut self, now: Instant, warn_interval: Duration) -> bool {
        self.failed_attempts += 1;
        let due = match self.last_warning {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= warn_interval,
        };
        if due {
            self.last_warning = Some(now);
        }
        due
    }

    /// Failed attempts so far.
    pub(crate) fn failed_attempts(&self) -> u64 {
        self.failed_attempts
    }

    /// How long the outage has lasted at `now`.
    pub(crate) fn duration(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Whether messages may have been missed: a subscription was lost.
    pub(crate) fn is_gap(&self) -> bool {
        self.after_loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<u128> = (0..9).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn warnings_are_periodic_not_per_retry() {
        let t0 = Instant::now();
        let every = Duration::from_secs(30);
        let mut outage = Outage::begin(t0, true);
        let due: Vec<bool> = [0, 1, 5, 29, 30, 31, 59, 61]
            .iter()
            .map(|s| outage.attempt_failed(t0 + Duration::from_secs(*s), every))
            .collect();
        assert_eq!(due, [true, false, false, false, true, false, false, true]);
        assert_eq!(outage.failed_attempts(), 8);
        assert_eq!(
            outage.duration(t0 + Duration::from_secs(61)),
            Duration::from_secs(61)
        );
    }

    #[test]
    fn only_a_lost_subscription_is_a_gap() {
        let now = Instant::now();
        assert!(Outage::begin(now, true).is_gap());
        assert!(!Outage::begin(now, false).is_gap());
    }
}
