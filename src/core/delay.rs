//! Delayed delivery: a user whose token carries a `delay` claim, or who
//! subscribes to a channel a `[[delivery.rules]]` `delay` matches, gets the
//! channel's messages that much later, served from the channel's history
//! ring (the delayed-quotes tier exchanges require for non-professional
//! users). The longer of the two delays applies.
//!
//! A delayed subscription is a replay (see [`super::recovery`]) that never
//! ends and that sends a stored message only once it is `delay` old: fan-out
//! skips the (connection, channel) as it does for any replay, and the
//! connection's `Delay` timer wakes it when the next stored message comes
//! due. It holds no copy of anything: per subscription a cursor; the frames
//! are the ring's. So the memory a delay implies is the ring's: a channel
//! must keep `delay` × its publish rate messages (`WS_HISTORY_SIZE`,
//! `WS_HISTORY_CHANNEL_BYTES`, `WS_HISTORY_TTL` ≥ the delay, all within
//! `WS_HISTORY_MAX_BYTES`). What the ring lets go of before it is due is
//! skipped and counted (`websocket_messages_dropped_total` with reason
//! `delay_overrun`); the subscription goes on from the oldest message kept.
//!
//! A delayed user never sees data newer than `now − delay`: the ack's
//! position is the cursor just before the first message not yet due;
//! `history: N` replays the N messages before that; `snapshot` holds only
//! the keys whose latest value is already due (the others arrive as their
//! messages come due); `since` replays from the cursor, each message when
//! it is due. A channel that keeps no history cannot be delayed: such a
//! subscribe is refused (`forbidden`).

use std::time::{Duration, Instant};

use super::config::CoreConfig;
use super::conflation::policy_for;
use super::recovery::Replay;
use super::timers::Timer;
use super::{ConnId, Core};
use crate::proto::client::SubscribeOptions;
use crate::proto::cursor::Cursor;

/// How late `identity` gets `channel`'s messages: the longer of the first
/// matching delivery rule's `delay` and the token's `delay` claim; `None`
/// is live.
pub(crate) fn delay_for(
    config: &CoreConfig,
    identity: &super::Identity,
    channel: &str,
) -> Option<Duration> {
    let rule = config
        .delivery_rules
        .iter()
        .find(|rule| super::permissions::pattern_matches(&rule.pattern, channel))
        .and_then(|rule| rule.delay);
    rule.max(identity.delay).filter(|d| !d.is_zero())
}

impl Core {
    /// The delay `conn` gets `channel` with, if any.
    pub(super) fn delay_of(&self, conn: ConnId, channel: &str) -> Option<Duration> {
        let c = self.conns.get(conn)?;
        delay_for(&self.config, &c.identity, channel)
    }

    /// For a newly subscribed channel that `conn` gets delayed: the ack's
    /// position, the replay that delivers it, and (when `since` named the
    /// channel) whether the cursor was recovered. `None` for a live channel.
    pub(super) fn delayed(
        &mut self,
        now: Instant,
        conn: ConnId,
        name: &str,
        options: &SubscribeOptions,
    ) -> Option<(Cursor, Replay, Option<bool>)> {
        let delay = self.delay_of(conn, name)?;
        let config = &self.config;
        let id = self.store.ensure(name, |ch| policy_for(config, ch));
        self.store.expire(now, id);
        let channel = &self.store.channels[id as usize];
        let epoch = self.store.epoch();
        let due = channel.due_until(now, delay);
        let mut recovered = None;
        let mut snapshot = std::collections::VecDeque::new();
        let plan = match options.since.iter().find(|(c, _)| c == name) {
            Some((_, since)) => {
                let found = channel.recovery(since, epoch);
                recovered = Some(found.is_some());
                found
            }
            None => None,
        };
        let plan = match (plan, options.history) {
            (Some(plan), _) => plan,
            (None, Some(n)) if recovered.is_none() => {
                channel.replay_from(due.saturating_sub(n as u64), epoch)
            }
            (None, _) => {
                if options.snapshot && recovered.is_none() {
                    // Only keys whose latest value is already due.
                    snapshot = channel
                        .latest_order
                        .range(..due)
                        .map(|(_, key)| channel.latest[key].json.clone())
                        .collect();
                }
                channel.replay_from(due, epoch)
            }
        };
        let replay = Replay {
            channel: id,
            snapshot,
            next: plan.start,
            after: plan.after,
            ahead: plan.ahead,
            delay: Some(delay),
        };
        Some((plan.positions, replay, recovered))
    }

    /// Arms the connection's `Delay` timer for the earliest stored message
    /// a delayed subscription is waiting for (not for one already due: that
    /// one waits for the socket to drain, and the completed write pumps it).
    pub(super) fn arm_delay_timer(&mut self, now: Instant, conn: ConnId, replays: &[Replay]) {
        let next = replays
            .iter()
            .filter_map(|r| {
                let delay = r.delay?;
                let stored = self.store.channels[r.channel as usize].get(r.next)?;
                Some(stored.at + delay)
            })
            .filter(|due| *due > now)
            .min();
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if c.closing.is_some() || c.timers.get(Timer::Delay) == next {
            return;
        }
        match next {
            Some(at) => c.timers.set(Timer::Delay, at),
            None => c.timers.clear(Timer::Delay),
        }
        self.reschedule(conn);
    }
}
