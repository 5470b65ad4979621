//! Unit tests of `outbound.rs`, in a file of their own so the
//! module holds only its logic.
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
            out.push(
                frame(10),
                FrameKind::Control,
                SlowClientPolicy::Disconnect,
                Tag::BARRIER
            ),
            Pushed::Queued {
                dropped: 0,
                conflated: 0
            }
        );
    }
    assert_eq!(
        out.push(
            frame(10),
            FrameKind::Control,
            SlowClientPolicy::Disconnect,
            Tag::BARRIER
        ),
        Pushed::Overflow
    );
    // Three replies held, yet two messages still fit.
    for _ in 0..2 {
        assert_eq!(
            out.push(
                frame(10),
                FrameKind::Message,
                SlowClientPolicy::Disconnect,
                Tag::BARRIER
            ),
            Pushed::Queued {
                dropped: 0,
                conflated: 0
            }
        );
    }
    assert_eq!(out.take_transmit().map(|b| b.len()), Some(5));
    assert!(!out.control_fits(1), "in flight still counts");
    out.write_complete();
    assert!(out.control_fits(1), "written frees the control bound");
}

#[test]
fn bounds_count_queued_and_in_flight_frames() {
    let mut out = Outbound::new(2, 1000, CONTROL);
    assert_eq!(
        out.push(
            frame(10),
            FrameKind::Message,
            SlowClientPolicy::Disconnect,
            Tag::BARRIER
        ),
        Pushed::Queued {
            dropped: 0,
            conflated: 0
        }
    );
    assert_eq!(out.take_transmit().map(|b| b.len()), Some(1));
    assert_eq!(
        out.push(
            frame(10),
            FrameKind::Message,
            SlowClientPolicy::Disconnect,
            Tag::BARRIER
        ),
        Pushed::Queued {
            dropped: 0,
            conflated: 0
        }
    );
    assert_eq!(
        out.take_transmit(),
        None,
        "one transmit in flight at a time"
    );
    assert_eq!(
        out.push(
            frame(10),
            FrameKind::Message,
            SlowClientPolicy::Disconnect,
            Tag::BARRIER
        ),
        Pushed::Overflow
    );
    assert!(!out.write_complete());
    assert_eq!(
        out.push(
            frame(10),
            FrameKind::Message,
            SlowClientPolicy::Disconnect,
            Tag::BARRIER
        ),
        Pushed::Queued {
            dropped: 0,
            conflated: 0
        }
    );
}

#[test]
fn byte_bound_applies() {
    let mut out = Outbound::new(100, 25, CONTROL);
    assert_eq!(
        out.push(
            frame(20),
            FrameKind::Message,
            SlowClientPolicy::Disconnect,
            Tag::BARRIER
        ),
        Pushed::Queued {
            dropped: 0,
            conflated: 0
        }
    );
    assert_eq!(
        out.push(
            frame(10),
            FrameKind::Message,
            SlowClientPolicy::Disconnect,
            Tag::BARRIER
        ),
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
    out.push(
        frame(1),
        FrameKind::Control,
        SlowClientPolicy::DropOldest,
        Tag::BARRIER,
    );
    out.push(
        frame(2),
        FrameKind::Message,
        SlowClientPolicy::DropOldest,
        Tag::BARRIER,
    );
    out.push(
        frame(3),
        FrameKind::Message,
        SlowClientPolicy::DropOldest,
        Tag::BARRIER,
    );
    assert_eq!(
        out.push(
            frame(4),
            FrameKind::Message,
            SlowClientPolicy::DropOldest,
            Tag::BARRIER
        ),
        Pushed::Queued {
            dropped: 1,
            conflated: 0
        }
    );
    let lens: Vec<usize> = out.queued().map(Bytes::len).collect();
    assert_eq!(lens, [1, 3, 4]);
    // A control frame over its own bound drops no message: it overflows.
    assert_eq!(
        out.push(
            frame(5),
            FrameKind::Control,
            SlowClientPolicy::DropOldest,
            Tag::BARRIER
        ),
        Pushed::Overflow
    );
    let mut tiny = Outbound::new(2, 5, CONTROL);
    assert_eq!(
        tiny.push(
            frame(9),
            FrameKind::Message,
            SlowClientPolicy::DropOldest,
            Tag::BARRIER
        ),
        Pushed::DroppedNew {
            dropped: 0,
            conflated: 0
        }
    );
}

fn conflate(out: &mut Outbound, len: usize, tag: u64) -> Pushed {
    out.push(
        frame(len),
        FrameKind::Message,
        SlowClientPolicy::Conflate,
        Tag::key(tag),
    )
}

#[test]
fn conflate_compacts_then_replaces_the_last_value_of_a_key_in_place() {
    let mut out = Outbound::new(4, 1000, CONTROL);
    conflate(&mut out, 1, 7);
    out.take_transmit();
    conflate(&mut out, 2, 7);
    conflate(&mut out, 3, 8);
    conflate(&mut out, 4, 7);
    assert_eq!(out.frames(), 4);
    // Full: a new key compacts 7's two values into the first place.
    assert_eq!(
        conflate(&mut out, 5, 9),
        Pushed::Queued {
            dropped: 0,
            conflated: 1
        }
    );
    let lens: Vec<usize> = out.queued().map(Bytes::len).collect();
    assert_eq!(lens, [4, 3, 5]);
    assert_eq!(out.bytes(), 1 + 4 + 3 + 5, "bytes follow the frames kept");
    assert_eq!(
        conflate(&mut out, 7, 8),
        Pushed::Queued {
            dropped: 0,
            conflated: 1
        },
    );
    let lens: Vec<usize> = out.queued().map(Bytes::len).collect();
    assert_eq!(lens, [4, 7, 5]);
    assert_eq!(out.bytes(), 1 + 4 + 7 + 5);
    // A fourth key cannot fit: overflow.
    assert_eq!(conflate(&mut out, 1, 10), Pushed::Overflow);
}

#[test]
fn conflate_never_moves_a_value_ahead_of_an_untagged_message() {
    let mut out = Outbound::new(3, 1000, CONTROL);
    conflate(&mut out, 1, 7);
    out.take_transmit();
    conflate(&mut out, 2, 7);
    // A JSON-array batch (no tag) may hold key 7 too.
    out.push(
        frame(3),
        FrameKind::Message,
        SlowClientPolicy::Conflate,
        Tag::BARRIER,
    );
    assert_eq!(conflate(&mut out, 4, 7), Pushed::Overflow);
}

#[test]
fn conflate_leaves_queued_replies_out_of_the_message_bound() {
    let mut out = Outbound::new(2, 1000, CONTROL);
    out.push(
        frame(1),
        FrameKind::Control,
        SlowClientPolicy::Conflate,
        Tag::BARRIER,
    );
    conflate(&mut out, 2, 7);
    conflate(&mut out, 3, 8);
    // Two messages fill the bound; the reply does not count against it.
    assert_eq!(
        conflate(&mut out, 4, 7),
        Pushed::Queued {
            dropped: 0,
            conflated: 1
        }
    );
    let lens: Vec<usize> = out.queued().map(Bytes::len).collect();
    assert_eq!(lens, [1, 4, 3]);
    assert_eq!(out.control().frames, 1);
}

#[test]
fn a_transmit_of_control_frames_only_gives_the_buffer_back() {
    // An idle subscriber got its ack (a control frame) and nothing since:
    // it must hold no queue memory, or every idle connection pays for one.
    let mut out = Outbound::new(100, 100_000, CONTROL);
    out.push(
        frame(1),
        FrameKind::Control,
        SlowClientPolicy::Disconnect,
        Tag::CONTROL,
    );
    out.take_transmit();
    out.write_complete();
    assert_eq!(out.queue.capacity(), 0);
}

#[test]
fn the_queue_keeps_the_buffer_its_last_transmit_needed_and_gives_a_burst_back() {
    let mut out = Outbound::new(100, 100_000, CONTROL);
    out.push(
        frame(1),
        FrameKind::Message,
        SlowClientPolicy::Disconnect,
        Tag::FIXED,
    );
    out.take_transmit();
    out.write_complete();
    let kept = out.queue.capacity();
    assert!((1..=KEPT_ENTRIES).contains(&kept), "{kept}");
    for _ in 0..50 {
        out.push(
            frame(1),
            FrameKind::Message,
            SlowClientPolicy::Disconnect,
            Tag::FIXED,
        );
    }
    out.take_transmit();
    out.write_complete();
    let burst = out.queue.capacity();
    assert!(burst >= 50, "the buffer fits the last transmit: {burst}");
    // The next turns carry 50 again: no regrowth.
    for _ in 0..50 {
        out.push(
            frame(1),
            FrameKind::Message,
            SlowClientPolicy::Disconnect,
            Tag::FIXED,
        );
    }
    assert_eq!(out.queue.capacity(), burst, "kept, not regrown");
    out.take_transmit();
    out.write_complete();
    // Back to one frame a turn: the burst's buffer is given back.
    out.push(
        frame(1),
        FrameKind::Message,
        SlowClientPolicy::Disconnect,
        Tag::FIXED,
    );
    out.take_transmit();
    assert!(
        out.queue.capacity() <= KEPT_ENTRIES,
        "a burst's buffer is given back: {}",
        out.queue.capacity()
    );
}

#[test]
fn a_queue_entry_is_a_frame_and_one_word() {
    // What a client that keeps up pays per queued frame, whatever the
    // policy: the size it had before conflation existed.
    assert_eq!(std::mem::size_of::<Queued>(), 40);
}

#[test]
fn write_complete_reports_the_close_frame() {
    let mut out = Outbound::new(4, 1000, CONTROL);
    out.push(
        frame(5),
        FrameKind::Message,
        SlowClientPolicy::Disconnect,
        Tag::BARRIER,
    );
    assert_eq!(out.discard_queued(), 1);
    out.push_unbounded(frame(4), FrameKind::Close);
    assert_eq!(out.take_transmit().map(|b| b.len()), Some(1));
    assert!(out.write_complete());
}
