//! Subscribing with stream state: the positions an ack reports, whether a
//! `since` cursor is recovered, and replays (recovery, `history`,
//! `snapshot`) fed to a connection as its socket drains.
//!
//! A replay is a cursor into the channel's ring. While it runs, fan-out
//! skips that (connection, channel): the live messages are in the ring too
//! and the replay reaches them in order, so the seam between replay and live
//! has neither gap nor duplicate. It only ever fills half the connection's
//! outbound bound and continues after each completed write, so a replay
//! larger than the bound never trips the slow-consumer policy; only a replay
//! that the ring's eviction overtakes (the client reads slower than the
//! channel publishes, for longer than the ring lasts) closes the connection
//! as a slow consumer. Replays together carry a bounded number of frames
//! per turn (see [`super::replay_pacing`]), so live fan-out goes first.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conflation::Delivery;
use super::history::{ChannelHistory, Plan, Stored};
use super::outbound::FrameKind;
use super::{ConnId, Core, DropReason, Event};
use crate::proto::client::SubscribeOptions;
use crate::proto::cursor::Cursor;
use crate::proto::server;

/// A replay in progress for one (connection, channel).
#[derive(Debug)]
pub(crate) struct Replay {
    /// The channel (index into the store).
    pub(super) channel: u32,
    /// Snapshot messages (JSON objects) still to send, before anything else.
    pub(super) snapshot: VecDeque<Bytes>,
    /// Ring index of the next message to consider.
    pub(super) next: u64,
    /// Per stream, the last offset the client has (see [`Plan::after`]).
    pub(super) after: Vec<Option<u64>>,
    /// Offsets the channel must reach before live delivery resumes (see
    /// [`Plan::ahead`]).
    pub(super) ahead: Vec<(u32, u64)>,
    /// For a delayed subscription (see [`super::delay`]): how old a message
    /// must be before it is sent. Such a replay never ends: it is how the
    /// subscription is delivered.
    pub(super) delay: Option<Duration>,
}

impl Replay {
    /// Whether the client has `stored` already (it is at or before the
    /// cursor's offset for its stream).
    fn has(&self, stored: &Stored) -> bool {
        let have = self.after.get(stored.stream as usize).copied().flatten();
        have.is_some_and(|have| stored.offset <= have)
    }
}

/// What an ack says about the stream state of a subscribe.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    /// `positions`: channel → cursor.
    pub(crate) positions: Vec<(String, String)>,
    /// `recovered`: channel → whether `since` was recovered.
    pub(crate) recovered: Vec<(String, bool)>,
}

/// What one pump step does.
enum Step {
    /// Send this frame.
    Send(Bytes, FrameKind),
    /// Skip a message the client already has.
    Skip,
    /// The replay reached live delivery.
    Done,
    /// Wait: the socket must drain, or the channel must publish.
    Wait,
    /// Eviction overtook the replay.
    Gap,
    /// Eviction overtook a delayed subscription by this many messages.
    Skipped(u64),
}

impl Core {
    /// Works out positions, recovery and replays for the channels of a
    /// subscribe; `added` are those the connection did not hold before
    /// (only they get replays).
    pub(super) fn stream_state(
        &mut self,
        now: Instant,
        conn: ConnId,
        channels: &[String],
        added: &[String],
        options: &SubscribeOptions,
    ) -> AckState {
        let mut ack = AckState::default();
        let mut replays = Vec::new();
        let empty = ChannelHistory::new(self.config.history.defaults.clone());
        for name in channels {
            let newly = added.contains(name);
            if newly
                && let Some((positions, replay, recovered)) = self.delayed(now, conn, name, options)
            {
                if let Some(recovered) = recovered {
                    ack.recovered.push((name.clone(), recovered));
                }
                ack.positions.push((name.clone(), positions.to_string()));
                replays.push(replay);
                continue;
            }
            let id = self.store.find(name);
            if let Some(id) = id {
                self.store.expire(now, id);
            }
            let channel = id.map_or(&empty, |id| &self.store.channels[id as usize]);
            let epoch = self.store.epoch();
            let mut positions = channel.latest_cursor(epoch);
            let mut plan: Option<(Plan, VecDeque<Bytes>)> = None;
            if let Some((_, since)) = options.since.iter().find(|(c, _)| c == name) {
                // A channel already held is live already: nothing to replay.
                let found = if newly {
                    channel.recovery(since, epoch)
                } else {
                    None
                };
                ack.recovered.push((name.clone(), found.is_some()));
                if let Some(found) = found {
                    positions = found.positions.clone();
                    plan = Some((found, VecDeque::new()));
                }
            }
            if plan.is_none() && newly {
                if options.snapshot {
                    let snapshot = channel
                        .latest_order
                        .values()
                        .map(|key| channel.latest[key].json.clone())
                        .collect();
                    let live = Plan {
                        positions: Cursor::default(),
                        start: channel.next_index,
                        after: Vec::new(),
                        ahead: Vec::new(),
                    };
                    plan = Some((live, snapshot));
                } else if let Some(n) = options.history {
                    let found = channel.last_n(n, epoch);
                    positions = found.positions.clone();
                    plan = Some((found, VecDeque::new()));
                }
            }
            ack.positions.push((name.clone(), positions.to_string()));
            if let (Some(id), Some((plan, snapshot))) = (id, plan) {
                replays.push(Replay {
                    channel: id,
                    snapshot,
                    next: plan.start,
                    after: plan.after,
                    ahead: plan.ahead,
                    delay: None,
                });
            }
        }
        if !replays.is_empty() {
            self.replays
                .get_or_insert_with(conn, Vec::new)
                .extend(replays);
        }
        ack
    }

    /// Whether fan-out must leave `channel` to a replay on `conn`.
    pub(super) fn replaying(&self, conn: ConnId, channel: u32) -> bool {
        self.replays
            .get(&conn)
            .is_some_and(|r| r.iter().any(|r| r.channel == channel))
    }

    /// Drops the replays of `conn` (closing, or some channels unsubscribed).
    pub(super) fn drop_replays(&mut self, conn: ConnId, channels: Option<&[String]>) {
        let Some(channels) = channels else {
            self.replays.remove(&conn);
            return;
        };
        let ids: Vec<u32> = channels.iter().filter_map(|c| self.store.find(c)).collect();
        if let Some(replays) = self.replays.get_mut(&conn) {
            replays.retain(|r| !ids.contains(&r.channel));
            if replays.is_empty() {
                self.replays.remove(&conn);
            }
        }
    }

    /// Queues replayed frames for `conn` while its queue is under half its
    /// bound; called after a subscribe, after each completed write and when
    /// a replayed channel publishes.
    pub(super) fn pump_replays(&mut self, now: Instant, conn: ConnId) {
        let Some(mut replays) = self.replays.remove(&conn) else {
            return;
        };
        let mut i = 0;
        while i < replays.len() {
            let paced = replays[i].delay.is_none();
            if paced && self.replay_pacing.spent() {
                // Live fan-out goes first; this replay goes on next turn.
                self.skip_known(&mut replays[i]);
                let tick = self.tick(now);
                self.replay_pacing.park(conn, tick);
                i += 1;
                continue;
            }
            let step = self.replay_step(now, conn, &mut replays[i]);
            match step {
                Step::Send(frame, kind) => {
                    if paced {
                        self.replay_pacing.spend();
                    }
                    if kind == FrameKind::Message {
                        // A replayed message is a barrier: live values of
                        // its keys must not pass it.
                        let policy = self.store.policy(replays[i].channel);
                        self.enqueue_message(now, conn, &frame, now, Delivery::barrier(policy));
                    } else {
                        self.enqueue(now, conn, frame, kind);
                    }
                    if self.conns.get(conn).is_none_or(|c| c.closing.is_some()) {
                        return;
                    }
                }
                Step::Skip => {}
                Step::Done => {
                    replays.swap_remove(i);
                }
                Step::Wait => i += 1,
                Step::Gap => {
                    self.close_slow_consumer(now, conn, 0);
                    return;
                }
                Step::Skipped(count) => self.events.push_back(Event::MessagesDropped {
                    conn,
                    count,
                    reason: DropReason::DelayOverrun,
                }),
            }
        }
        self.arm_delay_timer(now, conn, &replays);
        if !replays.is_empty() {
            self.replays.insert(conn, replays);
        }
    }

    /// At the wake-up [`Core::pump_replays`] asked for when the turn's
    /// replay allowance ran out: a fresh allowance, spent on the parked
    /// connections in the order they parked (those it does not reach park
    /// again, in the same order).
    pub(super) fn serve_paced_replays(&mut self, now: Instant) {
        let Some(waiting) = self.replay_pacing.refill(self.tick(now)) else {
            return;
        };
        for conn in waiting {
            self.pump_replays(now, conn);
        }
    }

    fn replay_step(&self, now: Instant, conn: ConnId, replay: &mut Replay) -> Step {
        let Some(c) = self.conns.get(conn) else {
            return Step::Wait;
        };
        let channel = &self.store.channels[replay.channel as usize];
        let done = replay.delay.is_none()
            && replay.snapshot.is_empty()
            && replay.next >= channel.next_index
            && channel.caught_up(&replay.ahead);
        if done {
            return Step::Done;
        }
        let half_frames = (self.config.client_buffer_frames / 2).max(1);
        let half_bytes = self.config.client_buffer_bytes / 2;
        if c.outbound.frames() >= half_frames || c.outbound.bytes() >= half_bytes {
            return Step::Wait;
        }
        if let Some(json) = replay.snapshot.pop_front() {
            return Step::Send(server::snapshot_message(&json), FrameKind::Message);
        }
        if replay.next < channel.first_index {
            if replay.delay.is_some() {
                // The ring did not hold the delay: what fell out is skipped.
                let skipped = channel.first_index - replay.next;
                replay.next = channel.first_index;
                return Step::Skipped(skipped);
            }
            return Step::Gap;
        }
        let Some(stored) = channel.get(replay.next) else {
            return Step::Wait;
        };
        if let Some(delay) = replay.delay
            && stored.at + delay > now
        {
            return Step::Wait;
        }
        replay.next += 1;
        if replay.has(stored) {
            return Step::Skip;
        }
        Step::Send(stored.frame.clone(), FrameKind::Message)
    }

    /// Moves a replay that must wait for the next turn past the stored
    /// messages its client has already (a recovery starts at the ring's
    /// oldest message and skips up to the cursor). Skipping costs no
    /// allowance; left undone, a replay parked at the ring's head would be
    /// overtaken by the next eviction and closed as if its client were slow.
    fn skip_known(&self, replay: &mut Replay) {
        if !replay.snapshot.is_empty() {
            return;
        }
        let channel = &self.store.channels[replay.channel as usize];
        while replay.next >= channel.first_index
            && let Some(stored) = channel.get(replay.next)
            && replay.has(stored)
        {
            replay.next += 1;
        }
    }
}
