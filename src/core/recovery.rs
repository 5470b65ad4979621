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
//! as a slow consumer.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::history::{ChannelHistory, Plan};
use super::outbound::FrameKind;
use super::{ConnId, Core};
use crate::proto::client::SubscribeOptions;
use crate::proto::cursor::Cursor;
use crate::proto::server;

/// A replay in progress for one (connection, channel).
#[derive(Debug)]
pub(crate) struct Replay {
    /// The channel (index into the store).
    channel: u32,
    /// Snapshot messages (JSON objects) still to send, before anything else.
    snapshot: VecDeque<Bytes>,
    /// Ring index of the next message to consider.
    next: u64,
    /// Per stream, the last offset the client has (see [`Plan::after`]).
    after: Vec<Option<u64>>,
    /// Offsets the channel must reach before live delivery resumes (see
    /// [`Plan::ahead`]).
    ahead: Vec<(u32, u64)>,
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
            let id = self.store.find(name);
            if let Some(id) = id {
                self.store.expire(now, id);
            }
            let channel = id.map_or(&empty, |id| &self.store.channels[id as usize]);
            let epoch = self.store.epoch();
            let newly = added.contains(name);
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
            let step = self.replay_step(conn, &mut replays[i]);
            match step {
                Step::Send(frame, kind) => {
                    if kind == FrameKind::Message {
                        self.enqueue_message(now, conn, frame, now, None);
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
            }
        }
        if !replays.is_empty() {
            self.replays.insert(conn, replays);
        }
    }

    fn replay_step(&self, conn: ConnId, replay: &mut Replay) -> Step {
        let Some(c) = self.conns.get(conn) else {
            return Step::Wait;
        };
        let channel = &self.store.channels[replay.channel as usize];
        let done = replay.snapshot.is_empty()
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
            return Step::Gap;
        }
        let Some(stored) = channel.get(replay.next) else {
            return Step::Wait;
        };
        replay.next += 1;
        let have = replay.after.get(stored.stream as usize).copied().flatten();
        if have.is_some_and(|have| stored.offset <= have) {
            return Step::Skip;
        }
        Step::Send(stored.frame.clone(), FrameKind::Message)
    }
}
