//! Per-subscription `maxRate`: at most N messages per second per (channel,
//! key) for one connection. A key's first message goes out at once; until
//! its interval (1/N s) has passed, newer values of the key wait here, each
//! replacing the last, and the newest leaves when the interval ends (the
//! connection's `Throttle` timer). So the last state of every key is never
//! lost, only intermediate ones, and per key values stay in stream order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conflation::Delivery;

/// A message held back by a rate limit.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Order of arrival on this connection, so values due together leave in
    /// stream order.
    pub(crate) seq: u64,
    /// The shared `message` frame.
    pub(crate) frame: Bytes,
    /// Where its JSON object starts in `frame` (for JSON-array batches).
    pub(crate) header_len: usize,
    /// When its source received it.
    pub(crate) ingested: Instant,
    /// Its (channel, key) hash: what the limit is per.
    pub(crate) tag: u64,
    /// How it is queued once it leaves (its channel's policy and tag).
    pub(crate) delivery: Delivery,
}

/// One key's rate state.
#[derive(Debug)]
struct KeyState {
    /// When the key may next be sent.
    next: Instant,
    /// The newest value that arrived too early, if any.
    held: Option<Held>,
}

/// What to do with a message offered to a rate limit.
#[derive(Debug)]
pub(crate) enum Offer {
    /// Send it now.
    Send(Held),
    /// It is held until `due`; `replaced` says whether it replaced a value
    /// that was held before (which the client will never get).
    Held {
        /// When it leaves.
        due: Instant,
        /// Whether an older held value was replaced.
        replaced: bool,
    },
}

/// The rate limit of one (connection, channel).
#[derive(Debug)]
pub(crate) struct Throttle {
    /// The channel.
    pub(crate) channel: String,
    /// The effective rate, as echoed in the ack.
    pub(crate) rate: u32,
    /// What the subscribe asked (capped by the server), so a token refresh
    /// can work the rate out again under the new `maxRate` claim.
    pub(crate) asked: Option<u32>,
    /// 1/rate.
    interval: Duration,
    /// Keys seen within their interval; entries whose interval is over and
    /// that hold nothing are pruned when the map reaches its bound.
    keys: HashMap<u64, KeyState>,
    /// Held values, bounded by the connection's queue bound in frames.
    held: usize,
}

impl Throttle {
    /// A rate limit of `rate` messages per second per key; `asked` is what
    /// the subscribe asked for.
    pub(crate) fn new(channel: String, rate: u32, asked: Option<u32>) -> Throttle {
        Throttle {
            channel,
            rate,
            asked,
            interval: Duration::from_secs(1) / rate.max(1),
            keys: HashMap::new(),
            held: 0,
        }
    }

    /// Changes the rate; held values keep their due instants.
    pub(crate) fn set_rate(&mut self, rate: u32) {
        self.rate = rate;
        self.interval = Duration::from_secs(1) / rate.max(1);
    }

    /// Decides about a message at `now`. At most `bound` keys are tracked
    /// (the queue bound): a key beyond it is sent at once, where the
    /// slow-client policy applies, so memory stays bounded.
    pub(crate) fn offer(&mut self, now: Instant, message: Held, bound: usize) -> Offer {
        if let Some(key) = self.keys.get_mut(&message.tag) {
            if now < key.next {
                let replaced = key.held.replace(message).is_some();
                if !replaced {
                    self.held += 1;
                }
                return Offer::Held {
                    due: key.next,
                    replaced,
                };
            }
            if key.held.take().is_some() {
                // Its timer is due at this very instant; the newer value wins.
                self.held -= 1;
            }
            key.next = now + self.interval;
            return Offer::Send(message);
        }
        if self.keys.len() >= bound {
            self.keys
                .retain(|_, key| key.held.is_some() || key.next > now);
        }
        if self.keys.len() < bound {
            self.keys.insert(
                message.tag,
                KeyState {
                    next: now + self.interval,
                    held: None,
                },
            );
        }
        Offer::Send(message)
    }

    /// Takes the held values due at `now` (their keys' next interval starts
    /// now) and forgets keys idle for a whole interval.
    pub(crate) fn take_due(&mut self, now: Instant, out: &mut Vec<Held>) {
        let interval = self.interval;
        let mut taken = 0;
        self.keys.retain(|_, key| {
            if key.next > now {
                return true;
            }
            match key.held.take() {
                Some(held) => {
                    out.push(held);
                    taken += 1;
                    key.next = now + interval;
                    true
                }
                None => false,
            }
        });
        self.held -= taken;
    }

    /// Every held value, whatever its due instant (the limit is being lifted).
    pub(crate) fn into_held(self) -> Vec<Held> {
        self.keys.into_values().filter_map(|key| key.held).collect()
    }

    /// When the earliest held value is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if self.held == 0 {
            return None;
        }
        self.keys
            .values()
            .filter(|key| key.held.is_some())
            .map(|key| key.next)
            .min()
    }

    /// How many values are held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(seq: u64, tag: u64, at: Instant) -> Held {
        Held {
            seq,
            frame: Bytes::from(seq.to_string()),
            header_len: 0,
            ingested: at,
            tag,
            delivery: Delivery::live(crate::core::SlowClientPolicy::Disconnect, None),
        }
    }

    #[test]
    fn first_value_leaves_at_once_and_the_newest_at_the_end_of_the_interval() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new("lines".into(), 4, Some(4));
        assert!(matches!(
            throttle.offer(t0, held(1, 7, t0), 10),
            Offer::Send(_)
        ));
        let ms = Duration::from_millis;
        assert!(matches!(
            throttle.offer(t0 + ms(10), held(2, 7, t0), 10),
            Offer::Held { replaced: false, due } if due == t0 + ms(250)
        ));
        assert!(matches!(
            throttle.offer(t0 + ms(20), held(3, 7, t0), 10),
            Offer::Held { replaced: true, .. }
        ));
        // Another key is independent.
        assert!(matches!(
            throttle.offer(t0 + ms(20), held(4, 8, t0), 10),
            Offer::Send(_)
        ));
        assert_eq!(throttle.next_due(), Some(t0 + ms(250)));
        let mut out = Vec::new();
        throttle.take_due(t0 + ms(100), &mut out);
        assert!(out.is_empty());
        throttle.take_due(t0 + ms(250), &mut out);
        assert_eq!(out.iter().map(|h| h.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(throttle.held(), 0);
        assert_eq!(throttle.next_due(), None);
        // The key's next interval started when the held value left.
        assert!(matches!(
            throttle.offer(t0 + ms(300), held(5, 7, t0), 10),
            Offer::Held { .. }
        ));
    }

    #[test]
    fn keys_beyond_the_bound_are_not_tracked() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new("lines".into(), 1, None);
        for tag in 0..5 {
            assert!(matches!(
                throttle.offer(t0, held(tag, tag, t0), 3),
                Offer::Send(_)
            ));
        }
        assert!(throttle.keys.len() <= 3);
    }
}
