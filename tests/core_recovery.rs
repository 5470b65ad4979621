//! Stream state in the core: positions in acks, recovery with `since`,
//! `history`, `snapshot`, the bounds of what is kept, and replays fed as the
//! socket drains.

mod core_support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use core_support::*;
use serde_json::{Value, json};
use ws_realtime::proto::cursor;
use ws_realtime::proto::position::Position;

fn config(size: usize) -> CoreConfig {
    CoreConfig {
        history: HistoryConfig {
            defaults: HistoryLimits {
                messages: size,
                ..HistoryLimits::default()
            },
            ..HistoryConfig::default()
        },
        ..CoreConfig::default()
    }
}

fn kafka(channel: &str, partition: i32, offset: i64, payload: &str) -> Publish {
    Publish {
        channel: channel.into(),
        pos: Some(Position::Offset {
            topic: "quotes".into(),
            partition,
            offset,
        }),
        payload: Bytes::from(payload.to_owned()),
        key: None,
    }
}

/// Subscribes with extra fields and returns (ack, frames after it).
fn subscribe_with(
    h: &mut Harness,
    conn: ConnId,
    channel: &str,
    extra: Value,
) -> (Value, Vec<Value>) {
    let mut frame = json!({"type":"subscribe","channels":[channel],"id":1});
    for (k, v) in extra.as_object().expect("object") {
        frame[k] = v.clone();
    }
    h.text(conn, frame);
    let mut frames = h.json(conn);
    assert!(!frames.is_empty(), "an ack");
    let ack = frames.remove(0);
    (ack, frames)
}

fn data(frames: &[Value]) -> Vec<Value> {
    frames.iter().map(|f| f["data"].clone()).collect()
}

/// The client rule: the ack's cursor plus the pos of each message.
fn cursor_after(ack_cursor: &str, messages: &[Value]) -> String {
    let mut c = cursor::parse(ack_cursor).expect("valid cursor");
    for m in messages {
        if m.get("snapshot").is_some() {
            continue;
        }
        let pos = cursor::parse(m["pos"].as_str().expect("pos")).expect("pos parses");
        let (stream, offset) = &pos.entries[0];
        c.set(stream, *offset);
    }
    c.to_string()
}

#[test]
fn a_client_that_reconnects_to_the_same_process_gets_exactly_what_it_missed() {
    let mut h = Harness::new(config(100));
    let a = h.open("a");
    let (ack, _) = subscribe_with(&mut h, a, "lines", json!({}));
    assert_eq!(ack["positions"]["lines"], "~0:0");
    h.publish("lines", b"1");
    h.publish("lines", b"2");
    let seen = h.json(a);
    let cursor = cursor_after("~0:0", &seen);
    assert_eq!(cursor, "~0:2");
    h.socket_closed(a);
    h.publish("lines", b"3");
    h.publish("lines", b"4");
    let b = h.open("a");
    let (ack, replayed) = subscribe_with(&mut h, b, "lines", json!({"since":{"lines":cursor}}));
    assert_eq!(ack["recovered"]["lines"], true);
    assert_eq!(ack["positions"]["lines"], "~0:2");
    assert_eq!(data(&replayed), [json!(3), json!(4)]);
    h.publish("lines", b"5");
    assert_eq!(data(&h.json(b)), [json!(5)], "then live, no duplicate");
}

#[test]
fn a_cursor_the_ring_no_longer_covers_is_not_recovered_and_nothing_is_replayed() {
    let mut h = Harness::new(config(3));
    let a = h.open("a");
    subscribe_with(&mut h, a, "lines", json!({}));
    h.socket_closed(a);
    for i in 1..=4 {
        h.publish("lines", i.to_string().as_bytes());
    }
    let b = h.open("a");
    let (ack, replayed) = subscribe_with(&mut h, b, "lines", json!({"since":{"lines":"~0:0"}}));
    assert_eq!(ack["recovered"]["lines"], false);
    assert_eq!(ack["positions"]["lines"], "~0:4", "the current position");
    assert!(replayed.is_empty());
    // Three missed: still covered.
    let (ack, replayed) = subscribe_with(&mut h, b, "other", json!({}));
    assert!(replayed.is_empty() && ack["positions"]["other"] == "~0:0");
    let c = h.open("c");
    let (ack, replayed) = subscribe_with(&mut h, c, "lines", json!({"since":{"lines":"~0:1"}}));
    assert_eq!(ack["recovered"]["lines"], true);
    assert_eq!(data(&replayed), [json!(2), json!(3), json!(4)]);
}

#[test]
fn sequences_of_another_process_are_never_recovered() {
    let mut h = Harness::new(config(100));
    h.publish("lines", b"1");
    let a = h.open("a");
    for since in ["~beef:1", "", "~beef:0"] {
        let (ack, replayed) = subscribe_with(&mut h, a, "lines", json!({"since":{"lines":since}}));
        assert_eq!(ack["recovered"]["lines"], false, "{since}");
        assert!(replayed.is_empty());
        h.text(a, json!({"type":"unsubscribe","channels":["lines"]}));
        h.json(a);
    }
}

#[test]
fn kafka_positions_recover_on_another_replica() {
    let mut replica_a = Harness::new(config(100));
    // Each process has its own epoch.
    let mut b_config = config(100);
    b_config.history.epoch = "b".into();
    let mut replica_b = Harness::new(b_config);
    let both = |a: &mut Harness, b: &mut Harness, offset: i64| {
        let m = kafka("quotes", 0, offset, &offset.to_string());
        a.core.handle_publish(a.now, m.clone());
        b.core.handle_publish(b.now, m);
    };
    both(&mut replica_a, &mut replica_b, 10);
    let client = replica_a.open("u");
    let (ack, _) = subscribe_with(&mut replica_a, client, "quotes", json!({}));
    let positions = ack["positions"]["quotes"]
        .as_str()
        .expect("cursor")
        .to_owned();
    assert_eq!(positions, "~0:0,quotes:0:10");
    both(&mut replica_a, &mut replica_b, 11);
    let seen = replica_a.json(client);
    let cursor = cursor_after(&positions, &seen);
    replica_a.socket_closed(client);
    both(&mut replica_a, &mut replica_b, 14);
    both(&mut replica_a, &mut replica_b, 15);
    // The `~0:0` entry says the client saw none of A's own sequences, so
    // B need not vouch for any.
    let on_b = replica_b.open("u");
    let (ack, replayed) = subscribe_with(
        &mut replica_b,
        on_b,
        "quotes",
        json!({"since":{"quotes":cursor}}),
    );
    assert_eq!(ack["recovered"]["quotes"], true, "{ack}");
    assert_eq!(data(&replayed), [json!(14), json!(15)]);
    assert_eq!(replayed[0]["pos"], "quotes:0:14");
}

#[test]
fn a_replica_that_started_after_the_cursor_does_not_vouch_for_it() {
    let mut late = Harness::new(config(100));
    late.core
        .handle_publish(late.now, kafka("quotes", 0, 20, "20"));
    let c = late.open("u");
    let (ack, replayed) = subscribe_with(
        &mut late,
        c,
        "quotes",
        json!({"since":{"quotes":"~a:0,quotes:0:10"}}),
    );
    assert_eq!(ack["recovered"]["quotes"], false);
    assert!(replayed.is_empty());
    late.text(c, json!({"type":"unsubscribe","channels":["quotes"]}));
    late.json(c);
    // The message just before its first one: nothing can be missing.
    let (ack, replayed) = subscribe_with(
        &mut late,
        c,
        "quotes",
        json!({"since":{"quotes":"~a:0,quotes:0:19"}}),
    );
    assert_eq!(ack["recovered"]["quotes"], true);
    assert_eq!(data(&replayed), [json!(20)]);
}

#[test]
fn a_lagging_replica_holds_live_messages_the_client_already_has() {
    let mut h = Harness::new(config(100));
    h.core.handle_publish(h.now, kafka("quotes", 0, 1, "1"));
    let c = h.open("u");
    // The client saw up to offset 3 on a replica that was ahead.
    let (ack, replayed) = subscribe_with(
        &mut h,
        c,
        "quotes",
        json!({"since":{"quotes":"~x:0,quotes:0:3"}}),
    );
    assert_eq!(ack["recovered"]["quotes"], true);
    assert!(replayed.is_empty());
    for offset in 2..=5 {
        h.core
            .handle_publish(h.now, kafka("quotes", 0, offset, &offset.to_string()));
    }
    assert_eq!(data(&h.json(c)), [json!(4), json!(5)]);
}

#[test]
fn a_replay_larger_than_the_outbound_bound_is_fed_as_the_socket_drains() {
    let mut cfg = config(1000);
    cfg.client_buffer_frames = 8;
    let mut h = Harness::new(cfg);
    let a = h.open("a");
    subscribe_with(&mut h, a, "lines", json!({}));
    h.socket_closed(a);
    for i in 1..=500 {
        h.publish("lines", i.to_string().as_bytes());
    }
    let b = h.open("b");
    h.text(
        b,
        json!({"type":"subscribe","channels":["lines"],"since":{"lines":"~0:0"}}),
    );
    let mut got = Vec::new();
    let mut next_live = 501;
    for _ in 0..2000 {
        // A turn's replay allowance spent, the shell serves the wake-up the
        // core asks for.
        let next = h.next_transmit().or_else(|| {
            h.advance(Duration::ZERO);
            h.next_transmit()
        });
        let Some(t) = next else {
            break;
        };
        assert!(t.frames.len() <= 8);
        for r in decode_all(&t.frames) {
            if let Received::Json(v) = r
                && v["type"] == "message"
            {
                got.push(v["data"].as_u64().expect("number"));
            }
        }
        // Live messages keep coming during the replay.
        if next_live < 520 {
            h.publish("lines", next_live.to_string().as_bytes());
            next_live += 1;
        }
        h.write_complete(t.conn);
    }
    let expected: Vec<u64> = (1..520).collect();
    assert_eq!(got, expected, "every message once, in order");
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, Event::SlowConsumer { .. })),
        "no slow-consumer close"
    );
}

#[test]
fn a_replay_that_eviction_overtakes_closes_the_connection_as_slow() {
    let mut cfg = config(10);
    cfg.client_buffer_frames = 4;
    let mut h = Harness::new(cfg);
    for i in 1..=10 {
        h.publish("lines", i.to_string().as_bytes());
    }
    let b = h.open("b");
    h.drain(b);
    h.text(
        b,
        json!({"type":"subscribe","channels":["lines"],"since":{"lines":"~0:0"}}),
    );
    // The client reads nothing while the channel publishes past the ring.
    for i in 11..=30 {
        h.publish("lines", i.to_string().as_bytes());
    }
    let t = h.next_transmit().expect("the first transmit");
    h.write_complete(t.conn);
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, Event::SlowConsumer { .. })),
        "never a gap presented as complete"
    );
}

#[test]
fn history_sends_the_last_n_after_an_ack_whose_cursor_precedes_them() {
    let mut h = Harness::new(config(100));
    for i in 1..=5 {
        h.publish("lines", i.to_string().as_bytes());
    }
    let c = h.open("u");
    let (ack, frames) = subscribe_with(&mut h, c, "lines", json!({"history":2}));
    assert_eq!(ack["positions"]["lines"], "~0:3");
    assert_eq!(data(&frames), [json!(4), json!(5)]);
    assert!(frames.iter().all(|f| f.get("snapshot").is_none()));
    assert_eq!(cursor_after("~0:3", &frames), "~0:5");
    let d = h.open("v");
    let (_, frames) = subscribe_with(&mut h, d, "lines", json!({"history":50}));
    assert_eq!(frames.len(), 5, "bounded by what is kept");
}

#[test]
fn snapshot_sends_the_latest_message_per_key_marked() {
    let mut cfg = config(100);
    cfg.history.defaults.snapshot_field = Some("symbol".into());
    let mut h = Harness::new(cfg);
    h.publish("quotes", br#"{"symbol":"AAPL","px":1}"#);
    h.publish("quotes", br#"{"symbol":"MSFT","px":2}"#);
    h.publish("quotes", br#"{"symbol":"AAPL","px":3}"#);
    let c = h.open("u");
    let (ack, frames) = subscribe_with(&mut h, c, "quotes", json!({"snapshot":true}));
    assert_eq!(ack["positions"]["quotes"], "~0:3");
    let px: Vec<Value> = frames.iter().map(|f| f["data"]["px"].clone()).collect();
    assert_eq!(px, [json!(2), json!(3)]);
    assert!(frames.iter().all(|f| f["snapshot"] == true));
    h.publish("quotes", br#"{"symbol":"MSFT","px":4}"#);
    let live = h.json(c);
    assert_eq!(live[0]["data"]["px"], 4);
    assert!(live[0].get("snapshot").is_none());
}

/// With several workers the router works out each message's key once for
/// every core; the snapshot it keys is the one a core keying it itself keeps.
#[test]
fn a_routed_message_keys_the_snapshot_as_the_core_would() {
    let mut cfg = config(100);
    cfg.history.defaults.snapshot_field = Some("symbol".into());
    let mut router = Router::new(&cfg);
    let mut h = Harness::new(cfg);
    for (symbol, px) in [("AAPL", 1), ("MSFT", 2), ("AAPL", 3)] {
        let routed = router.route(Publish {
            channel: "quotes".into(),
            pos: None,
            payload: Bytes::from(format!(r#"{{"symbol":"{symbol}","px":{px}}}"#)),
            key: None,
        });
        assert_eq!(routed.key.as_deref(), Some(symbol.as_bytes()));
        h.core.handle_publish_routed(h.now, &routed, h.now);
    }
    let c = h.open("u");
    let (ack, frames) = subscribe_with(&mut h, c, "quotes", json!({"snapshot":true}));
    assert_eq!(ack["positions"]["quotes"], "~0:3");
    let px: Vec<Value> = frames.iter().map(|f| f["data"]["px"].clone()).collect();
    assert_eq!(px, [json!(2), json!(3)]);
}

#[test]
fn without_a_key_field_the_record_key_or_the_last_message_is_the_snapshot() {
    let mut h = Harness::new(config(100));
    h.publish("lines", b"1");
    h.publish("lines", b"2");
    let mut keyed = kafka("quotes", 0, 1, "1");
    keyed.key = Some(Bytes::from_static(b"A"));
    h.core.handle_publish(h.now, keyed.clone());
    keyed.key = Some(Bytes::from_static(b"B"));
    keyed.pos = Some(Position::Offset {
        topic: "quotes".into(),
        partition: 0,
        offset: 2,
    });
    keyed.payload = Bytes::from_static(b"2");
    h.core.handle_publish(h.now, keyed);
    let c = h.open("u");
    let (_, frames) = subscribe_with(&mut h, c, "lines", json!({"snapshot":true}));
    assert_eq!(data(&frames), [json!(2)]);
    let (_, frames) = subscribe_with(&mut h, c, "quotes", json!({"snapshot":true}));
    assert_eq!(data(&frames), [json!(1), json!(2)]);
}

#[test]
fn the_global_byte_cap_evicts_the_oldest_across_channels() {
    let mut cfg = config(1000);
    cfg.history.max_bytes = 4000;
    let mut h = Harness::new(cfg);
    let filler = "x".repeat(200);
    for i in 0..20 {
        let channel = if i % 2 == 0 { "a" } else { "b" };
        h.publish(channel, format!(r#"{{"i":{i},"f":"{filler}"}}"#).as_bytes());
        assert!(h.core.stats().history.bytes <= 4000);
    }
    let stats = h.core.stats().history;
    assert!(stats.evictions > 0 && stats.messages < 20, "{stats:?}");
    let c = h.open("u");
    let (ack, _) = subscribe_with(&mut h, c, "a", json!({"since":{"a":"~0:0"}}));
    assert_eq!(
        ack["recovered"]["a"], false,
        "its oldest messages went first"
    );
    let (_, frames) = subscribe_with(&mut h, c, "b", json!({"history":1}));
    assert_eq!(frames[0]["data"]["i"], 19, "the newest stays");
}

#[test]
fn messages_older_than_the_age_bound_are_not_replayed() {
    let mut cfg = config(100);
    cfg.history.defaults.max_age = Duration::from_secs(60);
    let mut h = Harness::new(cfg);
    h.publish("lines", b"1");
    h.advance(Duration::from_secs(61));
    let c = h.open("u");
    let (ack, frames) = subscribe_with(&mut h, c, "lines", json!({"since":{"lines":"~0:0"}}));
    assert_eq!(ack["recovered"]["lines"], false);
    assert!(frames.is_empty());
}

#[test]
fn history_off_for_a_pattern_keeps_nothing_and_recovers_only_the_current_position() {
    let mut cfg = config(100);
    cfg.history.rules = vec![HistoryRule {
        pattern: "ticks:*".into(),
        limits: HistoryLimits {
            messages: 0,
            ..HistoryLimits::default()
        },
    }];
    let mut h = Harness::new(cfg);
    h.publish("ticks:a", b"1");
    h.publish("ticks:a", b"2");
    assert_eq!(h.core.stats().history.messages, 0);
    let c = h.open("u");
    let (ack, frames) = subscribe_with(&mut h, c, "ticks:a", json!({"since":{"ticks:a":"~0:1"}}));
    assert_eq!(ack["recovered"]["ticks:a"], false);
    assert!(frames.is_empty());
    h.text(c, json!({"type":"unsubscribe","channels":["ticks:a"]}));
    h.json(c);
    let (ack, frames) = subscribe_with(&mut h, c, "ticks:a", json!({"since":{"ticks:a":"~0:2"}}));
    assert_eq!(ack["recovered"]["ticks:a"], true, "nothing missed");
    assert!(frames.is_empty());
}

#[test]
fn a_malformed_cursor_refuses_the_whole_subscribe() {
    let mut h = Harness::default();
    let c = h.open("u");
    h.text(
        c,
        json!({"type":"subscribe","channels":["a","b"],"since":{"b":"b:x:1"},"id":3}),
    );
    let frames = h.json(c);
    assert_eq!(frames[0]["code"], "bad_position");
    assert!(
        frames[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("\"b\"")
    );
    assert!(h.core.inspect(c).expect("open").channels.is_empty());
}

/// A client's frames in order, JSON arrays unpacked.
fn flattened(frames: Vec<Value>) -> Vec<Value> {
    frames
        .into_iter()
        .flat_map(|f| match f {
            Value::Array(items) => items,
            single => vec![single],
        })
        .collect()
}

#[test]
fn a_resubscribe_with_history_replays_in_order_and_nothing_of_the_old_subscription_follows_it() {
    // Batching on: the two messages wait for their JSON array when the
    // client unsubscribes and subscribes again asking for history. They were
    // fanned out before the unsubscribe, so they must arrive before its ack,
    // never behind the new subscription's replay (older values after newer).
    let mut h = Harness::new(CoreConfig {
        batch_max: 4,
        batch_delay: Duration::from_millis(50),
        ..config(100)
    });
    let a = h.open("a");
    subscribe_with(&mut h, a, "lines", json!({}));
    h.publish("lines", b"1");
    h.publish("lines", b"2");
    h.text(a, json!({"type":"unsubscribe","channels":["lines"],"id":2}));
    h.text(
        a,
        json!({"type":"subscribe","channels":["lines"],"history":2,"id":3}),
    );
    let mut seen = flattened(h.json(a));
    h.advance(Duration::from_millis(100));
    seen.extend(flattened(h.json(a)));
    let summary: Vec<String> = seen
        .iter()
        .map(|f| match f["type"].as_str() {
            Some("message") => f["pos"].as_str().expect("pos").to_owned(),
            other => other.expect("type").to_owned(),
        })
        .collect();
    assert_eq!(
        summary,
        ["~0:1", "~0:2", "unsubscribed", "subscribed", "~0:1", "~0:2"],
        "{seen:?}"
    );
    // And the new subscription goes on live, without a duplicate.
    h.publish("lines", b"3");
    h.advance(Duration::from_millis(100));
    assert_eq!(data(&flattened(h.json(a))), [json!(3)]);
}

#[test]
fn a_large_replay_lets_live_fan_out_go_first_and_still_ends_exactly_at_the_live_stream() {
    let mut h = Harness::new(config(1000));
    let bystander = h.open("b");
    subscribe(&mut h, bystander, &["lines"]);
    for i in 0..600 {
        h.publish("lines", i.to_string().as_bytes());
        if i % 100 == 99 {
            assert_eq!(h.json(bystander).len(), 100);
        }
    }
    let recovering = h.open("r");
    let (ack, first_turn) = subscribe_with(
        &mut h,
        recovering,
        "lines",
        json!({"since":{"lines":"~0:0"}}),
    );
    assert_eq!(ack["recovered"]["lines"], true);
    // Its socket takes every write at once, yet one turn carries only part
    // of the replay: the core asks to be woken now for the rest.
    assert!(
        !first_turn.is_empty() && first_turn.len() < 600,
        "one turn replayed {} of 600",
        first_turn.len()
    );
    let now = h.now;
    assert!(
        h.deadline().is_some_and(|at| at <= now),
        "a wake-up for the rest, due now"
    );
    // A live message published before that wake-up reaches the bystander
    // first; the recovering client gets it in order, after its replay.
    h.publish("lines", b"600");
    assert_eq!(data(&h.json(bystander)), [json!(600)]);
    let mut seen = data(&first_turn);
    for _ in 0..100 {
        h.advance(Duration::ZERO);
        let frames = h.json(recovering);
        if frames.is_empty() {
            break;
        }
        seen.extend(data(&frames));
    }
    let expected: Vec<Value> = (0..=600).map(|i| json!(i)).collect();
    assert_eq!(seen, expected, "the whole stream, no gap, no duplicate");
    h.publish("lines", b"601");
    assert_eq!(data(&h.json(recovering)), [json!(601)], "then live");
}

#[test]
fn many_clients_recovering_at_once_are_paced_and_each_gets_exactly_its_stream() {
    // 20 clients x 500 missed messages: many turns' worth of replay, while
    // live messages keep coming and evicting the ring's oldest.
    let mut h = Harness::new(config(1000));
    let users: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    let first: Vec<ConnId> = users.iter().map(|u| h.open(u)).collect();
    for &c in &first {
        subscribe(&mut h, c, &["lines"]);
    }
    for i in 0..750 {
        h.publish("lines", i.to_string().as_bytes());
        while let Some(t) = h.next_transmit() {
            h.write_complete(t.conn);
        }
    }
    for &c in &first {
        h.socket_closed(c);
    }
    for i in 750..1250 {
        h.publish("lines", i.to_string().as_bytes());
    }
    let again: Vec<ConnId> = users.iter().map(|u| h.open(u)).collect();
    for &c in &again {
        h.text(
            c,
            json!({"type":"subscribe","channels":["lines"],"since":{"lines":"~0:750"},"id":1}),
        );
    }
    let mut seen: HashMap<ConnId, Vec<u64>> = HashMap::new();
    let mut live = 1250;
    for step in 0..20_000 {
        let next = h.next_transmit().or_else(|| {
            h.advance(Duration::ZERO);
            h.next_transmit()
        });
        let Some(t) = next else {
            break;
        };
        for r in decode_all(&t.frames) {
            if let Received::Json(v) = r
                && v["type"] == "message"
            {
                seen.entry(t.conn)
                    .or_default()
                    .push(v["data"].as_u64().expect("number"));
            }
        }
        if step % 7 == 0 && live < 1400 {
            h.publish("lines", live.to_string().as_bytes());
            live += 1;
        }
        h.write_complete(t.conn);
    }
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, Event::SlowConsumer { .. })),
        "no recovering client closed as slow"
    );
    let expected: Vec<u64> = (750..live).collect();
    for c in again {
        assert_eq!(
            seen.get(&c),
            Some(&expected),
            "{c:?}: the stream after its cursor"
        );
    }
}
