//! A connection's outbound queue: bounded by frames and bytes, counting what
//! is queued plus what is in flight, so a slow socket never holds more than
//! its bound. Messages and control frames (the replies to the client's own
//! requests, pings) have separate bounds: a client that sends a burst of
//! requests in one write and reads promptly gets every answer, instead of
//! being closed as a slow consumer because the answers to one read
//! outnumbered its message queue. At most one batch is in flight: everything queued for an idle
//! writer leaves in one vectored write, and the next batch waits for the
//! write to complete.

use std::collections::VecDeque;

use std::time::Instant;

use bytes::Bytes;

use super::config::SlowClientPolicy;

/// What kind of frame is queued; only messages may be dropped by policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A `message` frame (or a batch of them).
    Message,
    /// Acks, errors, pongs, pings: never dropped by policy.
    Control,
    /// The close frame: always the last frame a connection gets.
    Close,
}

#[derive(Debug, Clone)]
struct Queued {
    frame: Bytes,
    kind: FrameKind,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// It is queued; `dropped` older messages made room for it.
    Queued {
        /// Messages dropped under `drop_oldest`.
        dropped: u64,
    },
    /// Under `drop_oldest` it could not fit even after dropping every queued
    /// message; the new message itself was dropped (together with `dropped`
    /// older ones).
    DroppedNew {
        /// Older messages dropped trying to make room.
        dropped: u64,
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
        frames: 2 * burst as usize + CONTROL_SLACK,
        bytes: CONTROL_BYTES,
    }
}

/// Frames and bytes of one kind of frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Frames.
    pub(crate) frames: usize,
    /// Bytes.
    pub(crate) bytes: usize,
}

/// The queue and the in-flight batch of one connection.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Frames not yet handed to the shell, oldest first.
    queue: VecDeque<Queued>,
    /// Sum of `queue` frame lengths, so the byte bound is O(1) to check.
    queued_bytes: usize,
    /// Frames handed to the shell and not yet written: they still hold memory.
    in_flight_frames: usize,
    /// Bytes of those frames.
    in_flight_bytes: usize,
    /// Whether a batch is with the shell (one at a time).
    in_flight: bool,
    /// Whether the batch in flight ends with the close frame.
    close_in_flight: bool,
    /// Bound in frames (messages).
    max_frames: usize,
    /// Bound in bytes (messages).
    max_bytes: usize,
    /// Control frames held (queued + in flight), counted apart from messages.
    control: Tally,
    /// Of `control`, the part in the batch in flight.
    control_in_flight: Tally,
    /// Bound of `control`.
    max_control: Tally,
    /// When the oldest message queued since the last batch was ingested: one
    /// instant per queue, not per frame, so stamping costs nothing on the hot
    /// path. Kept when that message is dropped (the figure errs high).
    oldest_ingest: Option<Instant>,
}

impl Outbound {
    /// An empty queue with the given bounds: `max_frames` and `max_bytes`
    /// for messages, `max_control` for control frames.
    pub(crate) fn new(max_frames: usize, max_bytes: usize, max_control: Tally) -> Outbound {
        Outbound {
            control: Tally::default(),
            control_in_flight: Tally::default(),
            max_control,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight_frames: 0,
            in_flight_bytes: 0,
            in_flight: false,
            close_in_flight: false,
            max_frames,
            max_bytes,
            oldest_ingest: None,
        }
    }

    fn fits(&self, len: usize, kind: FrameKind) -> bool {
        match kind {
            FrameKind::Message => {
                self.frames() - self.control.frames < self.max_frames
                    && self.bytes() - self.control.bytes + len <= self.max_bytes
            }
            FrameKind::Control => self.control_fits(len),
            FrameKind::Close => true,
        }
    }

    /// Whether a control frame of `len` bytes fits its own bound now.
    pub(crate) fn control_fits(&self, len: usize) -> bool {
        self.control.frames < self.max_control.frames
            && self.control.bytes + len <= self.max_control.bytes
    }

    /// Queues a frame within the bounds, applying `policy` to messages.
    pub(crate) fn push(
        &mut self,
        frame: Bytes,
        kind: FrameKind,
        policy: SlowClientPolicy,
    ) -> Pushed {
        let mut dropped = 0;
        while !self.fits(frame.len(), kind) {
            // Dropping messages frees nothing of the control bound.
            if policy == SlowClientPolicy::Disconnect
                || kind != FrameKind::Message
                || !self.drop_oldest_message()
            {
                return match (policy, kind) {
                    (SlowClientPolicy::DropOldest, FrameKind::Message) => {
                        Pushed::DroppedNew { dropped }
                    }
                    _ => Pushed::Overflow,
                };
            }
            dropped += 1;
        }
        self.push_unbounded(frame, kind);
        Pushed::Queued { dropped }
    }

    /// Queues a frame whatever the bounds (the close frame, after the queue
    /// has been emptied or as the last frame).
    pub(crate) fn push_unbounded(&mut self, frame: Bytes, kind: FrameKind) {
        self.queued_bytes += frame.len();
        if kind == FrameKind::Control {
            self.control.frames += 1;
            self.control.bytes += frame.len();
        }
        self.queue.push_back(Queued { frame, kind });
    }

    fn drop_oldest_message(&mut self) -> bool {
        let Some(index) = self.queue.iter().position(|q| q.kind == FrameKind::Message) else {
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
            .filter(|q| q.kind == FrameKind::Message)
            .count();
        self.queue.clear();
        self.queued_bytes = 0;
        self.control = self.control_in_flight;
        self.oldest_ingest = None;
        messages as u64
    }

    /// Records that a message ingested at `at` is queued.
    pub(crate) fn note_ingest(&mut self, at: Instant) {
        self.oldest_ingest = Some(self.oldest_ingest.map_or(at, |oldest| oldest.min(at)));
    }

    /// The ingest instant of the oldest message queued since the last call;
    /// taken together with a batch.
    pub(crate) fn take_oldest_ingest(&mut self) -> Option<Instant> {
        self.oldest_ingest.take()
    }

    /// Whether the shell should be handed a batch now.
    pub(crate) fn ready(&self) -> bool {
        !self.in_flight && !self.queue.is_empty()
    }

    /// Everything queued, as one batch now in flight (`None` if a batch is
    /// already in flight or nothing is queued).
    pub(crate) fn take_batch(&mut self) -> Option<Vec<Bytes>> {
        if !self.ready() {
            return None;
        }
        self.close_in_flight = self
            .queue
            .back()
            .is_some_and(|q| q.kind == FrameKind::Close);
        self.in_flight = true;
        self.in_flight_frames = self.queue.len();
        self.in_flight_bytes = self.queued_bytes;
        self.queued_bytes = 0;
        self.control_in_flight = self.control;
        // Taking the queue (not draining it) frees its buffer: an idle
        // connection then holds no queue memory at all.
        let queue = std::mem::take(&mut self.queue);
        Some(queue.into_iter().map(|q| q.frame).collect())
    }

    /// The batch in flight was written. Returns whether it held the close
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
        self.queue.len() + self.in_flight_frames
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
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![b'm'; len])
    }

    /// Room for 100 control frames of any test size.
    const CONTROL: Tally = Tally {
        frames: 100,
        bytes: 100_000,
    };

    #[test]
    fn control_frames_have_their_own_bound_and_never_crowd_out_messages() {
        let mut out = Outbound::new(
            2,
            1000,
            Tally {
                frames: 3,
                bytes: 1000,
            },
        );
        for _ in 0..3 {
            assert_eq!(
                out.push(frame(10), FrameKind::Control, SlowClientPolicy::Disconnect),
                Pushed::Queued { dropped: 0 }
            );
        }
        assert_eq!(
            out.push(frame(10), FrameKind::Control, SlowClientPolicy::Disconnect),
            Pushed::Overflow
        );
        // Three replies held, yet two messages still fit.
        for _ in 0..2 {
            assert_eq!(
                out.push(frame(10), FrameKind::Message, SlowClientPolicy::Disconnect),
                Pushed::Queued { dropped: 0 }
            );
        }
        assert_eq!(out.take_batch().map(|b| b.len()), Some(5));
        assert!(!out.control_fits(1), "in flight still counts");
        out.write_complete();
        assert!(out.control_fits(1), "written frees the control bound");
    }

    #[test]
    fn bounds_count_queued_and_in_flight_frames() {
        let mut out = Outbound::new(2, 1000, CONTROL);
        assert_eq!(
            out.push(frame(10), FrameKind::Message, SlowClientPolicy::Disconnect),
            Pushed::Queued { dropped: 0 }
        );
        assert_eq!(out.take_batch().map(|b| b.len()), Some(1));
        assert_eq!(
            out.push(frame(10), FrameKind::Message, SlowClientPolicy::Disconnect),
            Pushed::Queued { dropped: 0 }
        );
        assert_eq!(out.take_batch(), None, "one batch in flight at a time");
        assert_eq!(
            out.push(frame(10), FrameKind::Message, SlowClientPolicy::Disconnect),
            Pushed::Overflow
        );
        assert!(!out.write_complete());
        assert_eq!(
            out.push(frame(10), FrameKind::Message, SlowClientPolicy::Disconnect),
            Pushed::Queued { dropped: 0 }
        );
    }

    #[test]
    fn byte_bound_applies() {
        let mut out = Outbound::new(100, 25, CONTROL);
        assert_eq!(
            out.push(frame(20), FrameKind::Message, SlowClientPolicy::Disconnect),
            Pushed::Queued { dropped: 0 }
        );
        assert_eq!(
            out.push(frame(10), FrameKind::Message, SlowClientPolicy::Disconnect),
            Pushed::Overflow
        );
        assert_eq!(out.bytes(), 20);
    }

    #[test]
    fn drop_oldest_drops_messages_but_never_control_frames() {
        let mut out = Outbound::new(
            2,
            1000,
            Tally {
                frames: 1,
                bytes: 1000,
            },
        );
        out.push(frame(1), FrameKind::Control, SlowClientPolicy::DropOldest);
        out.push(frame(2), FrameKind::Message, SlowClientPolicy::DropOldest);
        out.push(frame(3), FrameKind::Message, SlowClientPolicy::DropOldest);
        assert_eq!(
            out.push(frame(4), FrameKind::Message, SlowClientPolicy::DropOldest),
            Pushed::Queued { dropped: 1 }
        );
        let lens: Vec<usize> = out.queued().map(Bytes::len).collect();
        assert_eq!(lens, [1, 3, 4]);
        // A control frame over its own bound drops no message: it overflows.
        assert_eq!(
            out.push(frame(5), FrameKind::Control, SlowClientPolicy::DropOldest),
            Pushed::Overflow
        );
        let mut tiny = Outbound::new(2, 5, CONTROL);
        assert_eq!(
            tiny.push(frame(9), FrameKind::Message, SlowClientPolicy::DropOldest),
            Pushed::DroppedNew { dropped: 0 }
        );
    }

    #[test]
    fn write_complete_reports_the_close_frame() {
        let mut out = Outbound::new(4, 1000, CONTROL);
        out.push(frame(5), FrameKind::Message, SlowClientPolicy::Disconnect);
        assert_eq!(out.discard_queued(), 1);
        out.push_unbounded(frame(4), FrameKind::Close);
        assert_eq!(out.take_batch().map(|b| b.len()), Some(1));
        assert!(out.write_complete());
    }
}
