//! Core behaviour: fan-out, positions, payload kinds and backpressure.

mod core_support;

use core_support::*;

#[test]
fn publish_reaches_only_subscribers_and_shares_one_buffer() {
    let mut h = Harness::default();
    let a = h.open("a");
    let b = h.open("b");
    let c = h.open("c");
    subscribe(&mut h, a, &["lines"]);
    subscribe(&mut h, b, &["lines"]);
    subscribe(&mut h, c, &["other"]);
    let outcome = h.publish("lines", br#"{"px":1}"#);
    assert_eq!(
        outcome,
        PublishOutcome {
            delivered: 2,
            kind: PayloadKind::Json
        }
    );
    let mut transmits: Vec<Transmit> = std::iter::from_fn(|| h.next_transmit()).collect();
    transmits.sort_by_key(|t| t.conn);
    assert_eq!(transmits.iter().map(|t| t.conn).collect::<Vec<_>>(), [a, b]);
    assert_eq!(
        transmits[0].frames[0].as_ptr(),
        transmits[1].frames[0].as_ptr(),
        "serialize-once: same buffer"
    );
    assert_eq!(
        decode_all(&transmits[0].frames),
        [Received::Json(
            json!({"type":"message","channel":"lines","pos":"~0:1","data":{"px":1}})
        )]
    );
}

#[test]
fn a_transmit_carries_its_oldest_ingest_instant_for_the_latency_metric() {
    let mut h = Harness::default();
    let a = h.open("a");
    subscribe(&mut h, a, &["lines"]);
    let message = |payload: &'static [u8]| Publish {
        channel: "lines".into(),
        pos: None,
        payload: Bytes::from_static(payload),
        key: None,
    };
    let older = h.now;
    let newer = h.now + Duration::from_millis(5);
    // Both are queued before the shell polls, so they leave in one transmit.
    h.core.handle_publish_ingested(h.now, message(b"1"), newer);
    h.core.handle_publish_ingested(h.now, message(b"2"), older);
    let both = h.next_transmit().expect("both messages in one transmit");
    assert_eq!(both.frames.len(), 2);
    assert_eq!(both.oldest_ingest, Some(older));
    h.write_complete(a);

    h.core.handle_publish_ingested(h.now, message(b"3"), newer);
    let next = h.next_transmit().expect("the next message");
    assert_eq!(
        next.oldest_ingest,
        Some(newer),
        "the older instant left with its transmit"
    );
}

#[test]
fn assigned_positions_count_per_channel_from_one_and_offsets_show_topic_and_partition() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a", "b"]);
    h.publish("a", b"1");
    h.publish("a", b"2");
    h.publish("b", b"3");
    let pos: Vec<Value> = h.json(conn).into_iter().map(|m| m["pos"].clone()).collect();
    assert_eq!(pos, [json!("~0:1"), json!("~0:2"), json!("~0:1")]);
    h.core.handle_publish(
        h.now,
        Publish {
            channel: "a".into(),
            pos: Some(Position::Offset {
                topic: "lines".to_owned(),
                partition: 3,
                offset: 1234,
            }),
            payload: Bytes::from_static(b"x"),
            key: None,
        },
    );
    assert_eq!(h.json(conn)[0]["pos"], "lines:3:1234");
}

#[test]
fn payloads_are_embedded_as_json_text_or_base64() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    assert_eq!(h.publish("a", b"plain text").kind, PayloadKind::Text);
    assert_eq!(h.publish("a", &[0xff, 0xfe]).kind, PayloadKind::Binary);
    let frames = h.json(conn);
    assert_eq!(frames[0]["data"], "plain text");
    assert_eq!(frames[1]["b64data"], "//4=");
    assert!(frames[1].get("data").is_none());
}

#[test]
fn only_one_transmit_is_in_flight_until_the_write_completes() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.publish("a", b"1");
    h.publish("a", b"2");
    let first = h.next_transmit().expect("queued frames go out");
    assert_eq!(first.frames.len(), 2, "everything queued leaves together");
    h.publish("a", b"3");
    assert_eq!(
        h.next_transmit(),
        None,
        "nothing more until the write completes"
    );
    h.write_complete(conn);
    assert_eq!(h.next_transmit().map(|t| t.frames.len()), Some(1));
}

#[test]
fn slow_client_is_closed_with_1008_and_told_why() {
    let config = CoreConfig {
        client_buffer_frames: 4,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let slow = h.open("slow");
    let fast = h.open("fast");
    subscribe(&mut h, slow, &["a"]);
    subscribe(&mut h, fast, &["a"]);
    h.publish("a", b"1");
    let mut stuck = None;
    while let Some(t) = h.next_transmit() {
        if t.conn == slow {
            stuck = Some(t);
        } else {
            h.write_complete(t.conn);
        }
    }
    assert!(
        stuck.is_some(),
        "the slow client has a write in flight that never completes"
    );
    for i in 0..10 {
        h.publish("a", format!("{i}").as_bytes());
        assert_eq!(
            h.json(fast).len(),
            1,
            "the fast client keeps getting every message"
        );
    }
    let events = h.events();
    assert!(events.contains(&Event::SlowConsumer { conn: slow }));
    assert!(events.iter().any(|e| matches!(e,
        Event::MessagesDropped { conn, reason: DropReason::SlowConsumerClosed, count } if *conn == slow && *count >= 1)));
    // The stuck write completes at last: the close frame is next, and alone.
    h.write_complete(slow);
    assert_eq!(
        h.drain(slow),
        [Received::Close(1008, "slow consumer".into())]
    );
    assert_eq!(h.disconnects(), [slow]);
    assert!(h.events().iter().any(|e| matches!(e,
        Event::Closed { conn, reason: CloseReason::SlowConsumer, .. } if *conn == slow)));
    assert_eq!(
        h.core.stats().connections,
        1,
        "the fast client is untouched"
    );
}

#[test]
fn slow_client_is_dropped_after_grace_if_the_close_frame_is_never_written() {
    let config = CoreConfig {
        client_buffer_frames: 2,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.publish("a", b"1");
    let _stuck = h.next_transmit().expect("a transmit");
    h.publish("a", b"2");
    h.publish("a", b"3");
    assert!(h.core.inspect(conn).expect("still known").closing);
    assert!(h.disconnects().is_empty());
    h.advance(Duration::from_secs(3));
    assert_eq!(h.disconnects(), [conn]);
    assert!(h.core.inspect(conn).is_none());
}

#[test]
fn drop_oldest_keeps_client_and_counts_drops() {
    let config = CoreConfig {
        client_buffer_frames: 3,
        slow_client_policy: SlowClientPolicy::DropOldest,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    for i in 0..10 {
        h.publish("a", format!("{i}").as_bytes());
    }
    let dropped: u64 = h
        .events()
        .iter()
        .map(|e| match e {
            Event::MessagesDropped {
                reason: DropReason::DropOldest,
                count,
                ..
            } => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(dropped, 7);
    let data: Vec<Value> = h
        .json(conn)
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(
        data,
        [json!(7), json!(8), json!(9)],
        "the newest survive, in order"
    );
    assert!(!h.core.inspect(conn).expect("still open").closing);
}

#[test]
fn byte_bound_closes_a_slow_client_too() {
    let config = CoreConfig {
        client_buffer_bytes: 1000,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    let big = vec![b'x'; 400];
    for _ in 0..3 {
        h.publish("a", &big);
        assert!(h.core.inspect(conn).is_some_and(|c| c.held_bytes <= 1000));
    }
    assert!(h.core.inspect(conn).expect("closing, not gone").closing);
}
