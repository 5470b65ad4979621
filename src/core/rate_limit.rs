//! Inbound rate limit: a token bucket per connection, plus a count of recent
//! rejections so sustained abuse can be told from a short burst.

use std::time::{Duration, Instant};

/// How far back rejections count towards "sustained abuse".
pub(crate) const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// A token bucket refilled continuously at `per_second`, holding at most
/// `burst` tokens.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Tokens available now (fractional so slow refill rates work).
    tokens: f64,
    /// Refill rate; 0 disables the limit. Kept as the configured integer
    /// (4 bytes, not an `f64`'s 8: every connection holds a bucket).
    per_second: u32,
    /// Capacity (at least 1), as configured.
    burst: u32,
    /// When `tokens` was last brought up to date.
    updated: Instant,
    /// Start of the current abuse window.
    window_start: Instant,
    /// Rejections since `window_start`.
    rejections_in_window: u32,
}

/// What the bucket says about one inbound frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Process it.
    Allowed,
    /// Refuse it.
    Limited,
    /// Refuse it; the client has been over the limit too often: close.
    Abusive,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(now: Instant, per_second: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst.max(1)),
            per_second,
            burst: burst.max(1),
            updated: now,
            window_start: now,
            rejections_in_window: 0,
        }
    }

    /// Takes one token for a frame arriving at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> Verdict {
        if self.per_second == 0 {
            return Verdict::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(self.per_second)).min(f64::from(self.burst));
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allowed;
        }
        if now.saturating_duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.rejections_in_window = 0;
        }
        self.rejections_in_window += 1;
        if self.rejections_in_window > self.burst {
            Verdict::Abusive
        } else {
            Verdict::Limited
        }
    }
}
