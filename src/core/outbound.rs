//! A connection's outbound queue: bounded by frames and bytes, counting what
//! is queued plus what is in flight, so a slow socket never holds more than
//! its bound. Messages and control frames (the replies to the client's own
//! requests, pings) have separate bounds: a client that sends a burst of
//! requests in one write and reads promptly gets every answer, instead of
//! being closed as a slow consumer because the answers to one read
//! outnumbered its message queue. At most one transmit is in flight: everything queued for an idle
//! writer leaves in one vectored write, and the next transmit waits for the
//! write to complete.

use std::collections::VecDeque;

use std::time::Instant;

use bytes::Bytes;

use super::config::SlowClientPolicy;
use super::conflation::Tag;

/// What kind of frame is queued; only messages may be dropped by policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A `message` frame (or a JSON-array batch of them).
    Message,
    /// Acks, errors, pongs, pings: never dropped by policy.
    Control,
    /// The close frame: always the last frame a connection gets.
    Close,
}

#[derive(Debug, Clone)]
struct Queued {
    frame: Bytes,
    /// Its kind and, for a message of a conflating channel, its (channel,
    /// key) tag, in one word (see [`Tag`]): 40 bytes per entry.
    tag: Tag,
}

impl Queued {
    fn kind(&self) -> FrameKind {
        match self.tag {
            Tag::CONTROL => FrameKind::Control,
            Tag::CLOSE => FrameKind::Close,
            _ => FrameKind::Message,
        }
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// It is queued; `dropped` older messages made room for it, or
    /// `conflated` queued messages of conflating channels were replaced by
    /// newer values of their key (it may itself have replaced one in place).
    Queued {
        /// Messages dropped under `drop_oldest`.
        dropped: u64,
        /// Messages replaced by a newer value under `conflate`.
        conflated: u64,
    },
    /// Under `drop_oldest` it could not fit even after dropping every queued
    /// message; the new message itself was dropped (together with `dropped`
    /// older ones).
    DroppedNew {
        /// Older messages dropped trying to make room.
        dropped: u64,
        /// Messages of conflating channels replaced trying to make room.
        conflated: u64,
    },
    /// It does not fit and the policy (or its kind) does not allow dropping:
    /// the connection must be closed as a slow consumer.
    Overflow,
}

/// Bytes of control frames one connection may hold (256 KiB): a
/// subscribe ack naming 100 channels is ~30 KB.
pub(crate) const CONTROL_BYTES: usize = 256 * 1024;

/// Room for control frames beyond the answers to requests: the `connected`
/// frame, connect-time acks, heartbeat and application pings.
const CONTROL_SLACK: usize = 16;

/// The control bound of a connection whose rate-limit burst is `burst`:
/// the answers to a whole burst, plus the `rate_limited` errors a flood
/// gets before the limiter closes it, plus [`CONTROL_SLACK`]. A client
/// that reads keeps far below it; one that does not reach it and is closed
/// as a slow consumer, as it should.
pub(crate) fn control_bound(burst: u32) -> Tally {
    Tally {
        frames: (2 * burst as usize + CONTROL_SLACK)
            .try_into()
            .unwrap_or(u32::MAX),
        bytes: CONTROL_BYTES.try_into().unwrap_or(u32::MAX),
    }
}

/// A bound as stored: one past 4 Gi frames or 4 GiB, which no queue held
/// in memory reaches, is as good as unbounded and is kept as `u32::MAX`.
fn clamp(bound: usize) -> u32 {
    u32::try_from(bound).unwrap_or(u32::MAX)
}

/// Queue entries whose buffer a connection keeps between transmits at least
/// (more while its transmits carry more, see [`Outbound::take_transmit`]).
const KEPT_ENTRIES: usize = 8;

/// Frames and bytes of one kind of frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Frames.
    pub(crate) frames: u32,
    /// Bytes.
    pub(crate) bytes: u32,
}

/// The queue and the transmit in flight of one connection.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Frames not yet handed to the shell, oldest first.
    queue: VecDeque<Queued>,
    /// Sum of `queue` frame lengths, so the byte bound is O(1) to check.
    queued_bytes: usize,
    /// Frames handed to the shell and not yet written: they still hold memory.
    /// (The counts are `u32`, as the bounds that keep them small; byte sums
    /// stay `usize`, since frames are shared and may add up past 4 GiB.)
    in_flight_frames: u32,
    /// Bytes of those frames.
    in_flight_bytes: usize,
    /// Whether a transmit is with the shell (one at a time).
    in_flight: bool,
    /// Whether the transmit in flight ends with the close frame.
    close_in_flight: bool,
    /// Bound in frames (messages). The four bounds are `u32` (16 bytes, not
    /// 32, in every connection's record); see [`clamp`].
    max_frames: u32,
    /// Bound in bytes (messages).
    max_bytes: u32,
    /// Control frames held (queued + in flight), counted apart from messages.
    control: Tally,
    /// Of `control`, the part in the transmit in flight.
    control_in_flight: Tally,
    /// Bound of `control`, in frames.
    max_control_frames: u32,
    /// Bound of `control`, in bytes.
    max_control_bytes: u32,
    /// When the oldest message queued since the last transmit was ingested: one
    /// instant per queue, not per frame, so stamping costs nothing on the hot
    /// path. Kept when that message is dropped (the figure errs high).
    oldest_ingest: Option<Instant>,
    /// Queued messages with a replaceable tag: a queue without any (every
    /// client whose channels do not conflate) is never searched or compacted.
    keyed: u32,
}

impl Outbound {
    /// An empty queue with the given bounds: `max_frames` and `max_bytes`
    /// for messages, `max_control` for control frames.
    pub(crate) fn new(max_frames: usize, max_bytes: usize, max_control: Tally) -> Outbound {
        Outbound {
            control: Tally::default(),
            control_in_flight: Tally::default(),
            max_control_frames: max_control.frames,
            max_control_bytes: max_control.bytes,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight_frames: 0,
            in_flight_bytes: 0,
            in_flight: false,
            close_in_flight: false,
            max_frames: clamp(max_frames),
            max_bytes: clamp(max_bytes),
            oldest_ingest: None,
            keyed: 0,
        }
    }

    fn fits(&self, len: usize, kind: FrameKind) -> bool {
        match kind {
            FrameKind::Message => {
                self.frames() - (self.control.frames as usize) < self.max_frames as usize
                    && self.message_bytes() + len <= self.max_bytes as usize
            }
            FrameKind::Control => self.control_fits(len),
            FrameKind::Close => true,
        }
    }

    /// Whether a control frame of `len` bytes fits its own bound now.
    pub(crate) fn control_fits(&self, len: usize) -> bool {
        self.control.frames < self.max_control_frames
            && self.control.bytes as usize + len <= self.max_control_bytes as usize
    }

    /// Queues a frame within the bounds, applying `policy` (the policy of
    /// the message's channel) to messages. `tag` is the message's conflation
    /// tag, used only once the message bound is reached: a client that keeps
    /// up costs nothing more under one policy than another. At the bound,
    /// queued values of conflating channels are compacted first whatever the
    /// new message's policy, so a client mixing a conflating channel with a
    /// `disconnect` one is closed only when even the compacted queue is full.
    /// Control frames have their own bound, which neither dropping nor
    /// conflating frees.
    // Inlined into the fan-out loop, as it was before the bounds became
    // `u32` (which tipped the heuristic: +1.6 % instructions per delivery in
    // `benches/callgrind.sh`; inlined, 1.2 % fewer than before).
    #[inline]
    pub(crate) fn push(
        &mut self,
        frame: Bytes,
        kind: FrameKind,
        policy: SlowClientPolicy,
        tag: Tag,
    ) -> Pushed {
        if !self.fits(frame.len(), kind) {
            if kind != FrameKind::Message {
                return Pushed::Overflow;
            }
            if policy == SlowClientPolicy::Conflate {
                return self.conflate(frame, tag);
            }
            let conflated = self.compact();
            return self.push_over_bound(frame, policy, conflated, tag);
        }
        self.push_tagged(frame, kind, tag);
        Pushed::Queued {
            dropped: 0,
            conflated: 0,
        }
    }

    /// A message of a `disconnect` or `drop_oldest` channel at the bound,
    /// after compaction freed `conflated` places.
    fn push_over_bound(
        &mut self,
        frame: Bytes,
        policy: SlowClientPolicy,
        conflated: u64,
        tag: Tag,
    ) -> Pushed {
        let kind = FrameKind::Message;
        let mut dropped = 0;
        while !self.fits(frame.len(), kind) {
            if policy != SlowClientPolicy::DropOldest {
                return Pushed::Overflow;
            }
            if !self.drop_oldest_message() {
                return Pushed::DroppedNew { dropped, conflated };
            }
            dropped += 1;
        }
        self.push_tagged(frame, kind, tag);
        Pushed::Queued { dropped, conflated }
    }

    /// Queues a frame whatever the bounds (the close frame, after the queue
    /// has been emptied or as the last frame).
    pub(crate) fn push_unbounded(&mut self, frame: Bytes, kind: FrameKind) {
        self.push_tagged(frame, kind, Tag::BARRIER);
    }

    fn push_tagged(&mut self, frame: Bytes, kind: FrameKind, tag: Tag) {
        self.queued_bytes += frame.len();
        let tag = match kind {
            FrameKind::Message => {
                self.keyed += u32::from(tag.replaceable());
                tag
            }
            FrameKind::Control => {
                // Within `u32`: a control frame is only queued within the
                // control bound (`control_fits`), itself a `u32`.
                self.control.frames += 1;
                self.control.bytes += frame.len() as u32;
                Tag::CONTROL
            }
            FrameKind::Close => Tag::CLOSE,
        };
        self.queue.push_back(Queued { frame, tag });
    }

    /// Message bytes held (queued + in flight), control frames left out.
    fn message_bytes(&self) -> usize {
        self.bytes() - self.control.bytes as usize
    }

    /// `conflate` on a message queue at its bound: the new message replaces
    /// the queued one of its key in place; failing that, the queue is
    /// compacted to one (the newest) value per key and the message appended
    /// if it now fits. Otherwise (more distinct keys than the bound, or a
    /// message with no key) the queue overflows and the connection is closed.
    fn conflate(&mut self, frame: Bytes, tag: Tag) -> Pushed {
        let kind = FrameKind::Message;
        if !tag.replaceable() {
            // A message without a key takes the room compaction frees, if any.
            let conflated = self.compact();
            if !self.fits(frame.len(), kind) {
                return Pushed::Overflow;
            }
            self.push_tagged(frame, kind, tag);
            return Pushed::Queued {
                dropped: 0,
                conflated,
            };
        }
        let mut conflated = 0;
        let mut at = self.replaceable(tag);
        if at.is_none() {
            conflated = self.compact();
            if self.fits(frame.len(), kind) {
                self.push_tagged(frame, kind, tag);
                return Pushed::Queued {
                    dropped: 0,
                    conflated,
                };
            }
            at = self.replaceable(tag);
        }
        let Some(at) = at else {
            return Pushed::Overflow;
        };
        let old = self.queue[at].frame.len();
        if self.message_bytes() - old + frame.len() > self.max_bytes as usize {
            return Pushed::Overflow;
        }
        self.queued_bytes = self.queued_bytes - old + frame.len();
        self.queue[at].frame = frame;
        Pushed::Queued {
            dropped: 0,
            conflated: conflated + 1,
        }
    }

    /// For conflating channels, before a transmit leaves: a queue holding half its
    /// message bound or more is compacted to one value per key, so what goes
    /// in flight (where nothing can be replaced any more) holds at most one
    /// frame per key and the other half of the bound stays free for newer
    /// values. A client that keeps up has short queues and never pays for
    /// it. Returns how many messages were replaced.
    pub(crate) fn compact_before_sending(&mut self) -> u64 {
        // With no transmit in flight, every control frame held is queued.
        if self.keyed < 2
            || self.in_flight
            || (self.queue.len() - self.control.frames as usize) * 2 < self.max_frames as usize
        {
            return 0;
        }
        self.compact()
    }

    /// Where the queue's messages may be replaced from: after the last
    /// message that has no tag (a JSON-array batch or a replayed message
    /// may hold any key, so moving a newer value ahead of it could reorder that key) and
    /// after the last control frame (a newer value must not pass an
    /// `unsubscribed` or a `subscribed` ack sent before it: after an
    /// unsubscribe and a subscribe with `history`, it would land ahead of
    /// the replay of its own key).
    fn replaceable_from(&self) -> usize {
        self.queue
            .iter()
            .rposition(|q| q.tag == Tag::BARRIER || q.tag == Tag::CONTROL)
            .map_or(0, |barrier| barrier + 1)
    }

    /// The queued message of `tag` a newer value may replace in place.
    fn replaceable(&self, tag: Tag) -> Option<usize> {
        let from = self.replaceable_from();
        // The last one: any earlier one of the same key holds an older value
        // (the queue is only compacted when needed), which stays in front.
        (from..self.queue.len()).rfind(|&i| self.queue[i].tag == tag)
    }

    /// Keeps one message per tag (after the last barrier): the newest value
    /// at the place of the oldest, so every key keeps its place in line and
    /// its stream order. Returns how many messages it replaced.
    fn compact(&mut self) -> u64 {
        if self.keyed < 2 {
            return 0;
        }
        let from = self.replaceable_from();
        let mut first: std::collections::HashMap<Tag, usize> = std::collections::HashMap::new();
        let mut kept: VecDeque<Queued> = VecDeque::with_capacity(self.queue.len());
        let mut replaced = 0;
        for (i, q) in std::mem::take(&mut self.queue).into_iter().enumerate() {
            if i >= from && q.tag.replaceable() {
                if let Some(&place) = first.get(&q.tag) {
                    // Both frames were counted; only the newer stays.
                    let old: &mut Queued = &mut kept[place];
                    self.queued_bytes -= old.frame.len();
                    old.frame = q.frame;
                    replaced += 1;
                    continue;
                }
                first.insert(q.tag, kept.len());
            }
            kept.push_back(q);
        }
        self.queue = kept;
        self.keyed -= replaced as u32;
        replaced
    }

    fn drop_oldest_message(&mut self) -> bool {
        // A conflating channel's value is the last of its key: never dropped.
        let Some(index) = self
            .queue
            .iter()
            .position(|q| q.kind() == FrameKind::Message && !q.tag.replaceable())
        else {
            return false;
        };
        let removed = self.queue.remove(index).expect("index found just above");
        self.queued_bytes -= removed.frame.len();
        true
    }

    /// Drops every frame not yet handed to the shell; returns how many of them
    /// were messages.
    pub(crate) fn discard_queued(&mut self) -> u64 {
        let messages = self
            .queue
            .iter()
            .filter(|q| q.kind() == FrameKind::Message)
            .count();
        self.queue.clear();
        self.queued_bytes = 0;
        self.keyed = 0;
        self.control = self.control_in_flight;
        self.oldest_ingest = None;
        messages as u64
    }

    /// Records that a message ingested at `at` is queued.
    pub(crate) fn note_ingest(&mut self, at: Instant) {
        self.oldest_ingest = Some(self.oldest_ingest.map_or(at, |oldest| oldest.min(at)));
    }

    /// The ingest instant of the oldest message queued since the last call;
    /// taken together with a transmit.
    pub(crate) fn take_oldest_ingest(&mut self) -> Option<Instant> {
        self.oldest_ingest.take()
    }

    /// Whether frames wait behind the transmit in flight (the socket is not
    /// keeping up with what is queued for it).
    pub(crate) fn behind(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether the shell should be handed a transmit now.
    pub(crate) fn ready(&self) -> bool {
        !self.in_flight && !self.queue.is_empty()
    }

    /// Everything queued, as one transmit now in flight (`None` if one is
    /// already in flight or nothing is queued).
    pub(crate) fn take_transmit(&mut self) -> Option<Vec<Bytes>> {
        if !self.ready() {
            return None;
        }
        self.close_in_flight = self
            .queue
            .back()
            .is_some_and(|q| q.kind() == FrameKind::Close);
        self.in_flight = true;
        self.in_flight_frames = u32::try_from(self.queue.len())
            .expect("a queue holds at most its u32 bounds, plus the close frame");
        self.in_flight_bytes = self.queued_bytes;
        self.queued_bytes = 0;
        self.keyed = 0;
        self.control_in_flight = self.control;
        // Draining (not taking) the queue keeps its buffer, so a client that
        // keeps up allocates no queue per transmit: taking it cost every
        // delivery a malloc and a free whose glibc size-class work was a
        // third of the instructions per delivery (BENCHMARKS.md, callgrind).
        // The buffer kept fits this transmit (at least `KEPT_ENTRIES`, 320
        // bytes): a saturated server's subscribers get tens of frames every
        // turn, and a smaller buffer regrew (8, 16, 32…, a realloc and a
        // copy each) on every turn. One more than twice that size, which a
        // burst grew, is given back, so a connection holds what its last
        // transmit needed, within its queue bound.
        // A transmit of control frames only (the acks and pongs of a connection
        // that receives no messages) gives the buffer back all the same, so an
        // idle subscriber's queue costs nothing between its pings.
        let frames = self.queue.drain(..).map(|q| q.frame).collect();
        let keep = (self.in_flight_frames as usize).max(KEPT_ENTRIES);
        if self.control_in_flight.frames == self.in_flight_frames {
            self.queue.shrink_to(0);
        } else if self.queue.capacity() > 2 * keep {
            self.queue.shrink_to(keep);
        }
        Some(frames)
    }

    /// The transmit in flight was written. Returns whether it held the close
    /// frame (the connection is then finished).
    pub(crate) fn write_complete(&mut self) -> bool {
        if !self.in_flight {
            return false;
        }
        self.in_flight = false;
        self.in_flight_frames = 0;
        self.in_flight_bytes = 0;
        self.control.frames -= self.control_in_flight.frames;
        self.control.bytes -= self.control_in_flight.bytes;
        self.control_in_flight = Tally::default();
        std::mem::take(&mut self.close_in_flight)
    }

    /// Control frames held (queued + in flight).
    pub(crate) fn control(&self) -> Tally {
        self.control
    }

    /// Frames held (queued + in flight).
    pub(crate) fn frames(&self) -> usize {
        self.queue.len() + self.in_flight_frames as usize
    }

    /// Bytes held (queued + in flight).
    pub(crate) fn bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }

    /// Frames queued and not yet handed to the shell, oldest first.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> impl Iterator<Item = &Bytes> {
        self.queue.iter().map(|q| &q.frame)
    }
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
