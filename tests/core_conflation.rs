//! Core behaviour: the `conflate` slow-client policy and per-subscription
//! `maxRate`, plus the property both promise (eventual correctness per key,
//! stream order per key, other clients untouched, bounded memory).

mod core_support;

use std::collections::HashMap;

use core_support::*;
use proptest::prelude::*;

/// Conflate, a small queue, and the `symbol` field as the key.
fn conflating(bound: usize) -> CoreConfig {
    let mut config = CoreConfig {
        client_buffer_frames: bound,
        slow_client_policy: SlowClientPolicy::Conflate,
        ..CoreConfig::default()
    };
    config.history.defaults.snapshot_field = Some("symbol".into());
    config
}

fn quote(symbol: &str, px: u64) -> Vec<u8> {
    format!(r#"{{"symbol":"{symbol}","px":{px}}}"#).into_bytes()
}

/// Polls every transmit; completes the writes of `completing` (and returns
/// what they got), leaves the others' transmits in flight (a stalled socket)
/// and returns theirs too.
fn pump(h: &mut Harness, completing: &[ConnId]) -> HashMap<ConnId, Vec<Bytes>> {
    let mut got: HashMap<ConnId, Vec<Bytes>> = HashMap::new();
    for _ in 0..10_000 {
        let Some(transmit) = h.next_transmit() else {
            break;
        };
        got.entry(transmit.conn)
            .or_default()
            .extend(transmit.frames.iter().cloned());
        if completing.contains(&transmit.conn) {
            h.write_complete(transmit.conn);
        }
    }
    got
}

fn data(frames: &[Bytes]) -> Vec<Value> {
    decode_all(frames)
        .into_iter()
        .filter_map(|r| match r {
            Received::Json(v) if v["type"] == "message" => Some(v["data"].clone()),
            Received::Json(v) if v.is_array() => panic!("unexpected array {v}"),
            _ => None,
        })
        .collect()
}

fn conflated(events: &[Event]) -> u64 {
    events
        .iter()
        .map(|e| match e {
            Event::MessagesConflated { count, .. } => *count,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_stalled_client_gets_the_latest_value_of_every_key_in_place() {
    let mut h = Harness::new(conflating(4));
    let slow = h.open("slow");
    let fast = h.open("fast");
    subscribe(&mut h, slow, &["quotes"]);
    subscribe(&mut h, fast, &["quotes"]);
    h.events();
    // The first message goes in flight and stalls there.
    h.publish("quotes", &quote("A", 0));
    let first = pump(&mut h, &[fast]);
    assert_eq!(data(&first[&slow]), [json!({"symbol":"A","px":0})]);
    // 3 keys, 10 rounds: far more than the 4-frame bound.
    let mut fast_got = Vec::new();
    for px in 1..=10 {
        for symbol in ["A", "B", "C"] {
            h.publish("quotes", &quote(symbol, px));
            fast_got.extend(pump(&mut h, &[fast]).remove(&fast).unwrap_or_default());
        }
    }
    assert_eq!(
        data(&fast_got).len(),
        30,
        "the fast client gets every message"
    );
    assert!(h.disconnects().is_empty());
    let events = h.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::SlowConsumer { .. }))
    );
    // Held: 1 in flight + one per key.
    assert_eq!(h.core.inspect(slow).expect("open").held_frames, 4);
    h.write_complete(slow);
    let rest = pump(&mut h, &[slow]);
    // Each key keeps the place of its first queued value and carries its last.
    assert_eq!(
        data(&rest[&slow]),
        [
            json!({"symbol":"A","px":10}),
            json!({"symbol":"B","px":10}),
            json!({"symbol":"C","px":10}),
        ]
    );
    // 30 published, 1 queued before the bound... 3 delivered: 27 replaced.
    assert_eq!(conflated(&events), 27);
}

#[test]
fn more_distinct_keys_than_the_bound_still_disconnects() {
    let mut h = Harness::new(conflating(3));
    let slow = h.open("slow");
    subscribe(&mut h, slow, &["quotes"]);
    h.publish("quotes", &quote("A", 0));
    pump(&mut h, &[]);
    for symbol in ["B", "C", "D", "E"] {
        h.publish("quotes", &quote(symbol, 1));
    }
    let got = pump(&mut h, &[]);
    assert!(got.is_empty(), "the stalled transmit is still in flight");
    let events = h.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SlowConsumer { .. }))
    );
    h.write_complete(slow);
    let rest = pump(&mut h, &[slow]);
    assert_eq!(
        decode_all(&rest[&slow]).last(),
        Some(&Received::Close(1008, "slow consumer".into()))
    );
}

#[test]
fn a_channel_without_a_key_conflates_to_its_last_message() {
    let mut config = conflating(2);
    config.history.defaults.snapshot_field = None;
    let mut h = Harness::new(config);
    let slow = h.open("slow");
    subscribe(&mut h, slow, &["ticks"]);
    h.publish("ticks", b"0");
    pump(&mut h, &[]);
    for n in 1..=50u32 {
        h.publish("ticks", n.to_string().as_bytes());
    }
    h.write_complete(slow);
    let rest = pump(&mut h, &[slow]);
    assert_eq!(data(&rest[&slow]), [json!(50)]);
    assert!(h.disconnects().is_empty());
}

#[test]
fn the_kafka_record_key_keys_conflation_when_no_field_is_configured() {
    let mut config = conflating(3);
    config.history.defaults.snapshot_field = None;
    let mut h = Harness::new(config);
    let slow = h.open("slow");
    subscribe(&mut h, slow, &["book"]);
    let publish = |h: &mut Harness, key: &str, n: u32| {
        h.core.handle_publish(
            h.now,
            Publish {
                channel: "book".into(),
                pos: None,
                payload: Bytes::from(n.to_string()),
                key: Some(Bytes::copy_from_slice(key.as_bytes())),
            },
        );
    };
    publish(&mut h, "x", 0);
    pump(&mut h, &[]);
    for n in 1..=20 {
        publish(&mut h, if n % 2 == 0 { "x" } else { "y" }, n);
    }
    h.write_complete(slow);
    let rest = pump(&mut h, &[slow]);
    // Two frames queued before the bound (1 of y, 2 of x), then replaced.
    assert_eq!(data(&rest[&slow]), [json!(19), json!(20)]);
}

#[test]
fn a_client_that_keeps_up_gets_the_same_bytes_under_conflate_and_disconnect() {
    let run = |policy| {
        let mut config = conflating(4);
        config.slow_client_policy = policy;
        let mut h = Harness::new(config);
        let c = h.open("c");
        subscribe(&mut h, c, &["quotes"]);
        let mut all = Vec::new();
        for px in 0..50 {
            h.publish("quotes", &quote(["A", "B"][px as usize % 2], px));
            all.extend(pump(&mut h, &[c]).remove(&c).unwrap_or_default());
        }
        (all, conflated(&h.events()))
    };
    let (conflate, replaced) = run(SlowClientPolicy::Conflate);
    let (disconnect, _) = run(SlowClientPolicy::Disconnect);
    assert_eq!(conflate, disconnect);
    assert_eq!(conflate.len(), 50);
    assert_eq!(replaced, 0);
}

#[test]
fn with_batching_a_behind_client_still_conflates_per_key() {
    let mut config = conflating(4);
    config.batch_max = 3;
    config.batch_delay = Duration::from_millis(5);
    let mut h = Harness::new(config);
    let slow = h.open("slow");
    subscribe(&mut h, slow, &["quotes"]);
    for px in 0..3 {
        h.publish("quotes", &quote("A", px));
    }
    pump(&mut h, &[]); // one array in flight, stalled
    for px in 3..40 {
        h.publish("quotes", &quote(["A", "B"][px as usize % 2], px));
    }
    h.advance(Duration::from_millis(10));
    assert!(h.disconnects().is_empty());
    h.write_complete(slow);
    let frames = pump(&mut h, &[slow]).remove(&slow).expect("frames");
    let mut last: HashMap<String, u64> = HashMap::new();
    for received in decode_all(&frames) {
        let Received::Json(v) = received else {
            continue;
        };
        let items = if v.is_array() {
            v.as_array().cloned().unwrap()
        } else {
            vec![v]
        };
        for item in items {
            let symbol = item["data"]["symbol"].as_str().unwrap().to_owned();
            let px = item["data"]["px"].as_u64().unwrap();
            assert!(
                last.get(&symbol).is_none_or(|&before| before < px),
                "order of {symbol}"
            );
            last.insert(symbol, px);
        }
    }
    assert_eq!(last["A"], 38);
    assert_eq!(last["B"], 39);
}

#[test]
fn max_rate_sends_at_most_n_per_second_per_key_and_the_newest_at_each_interval_end() {
    let mut config = conflating(64);
    config.slow_client_policy = SlowClientPolicy::Disconnect;
    let mut h = Harness::new(config);
    let c = h.open("c");
    h.text(
        c,
        json!({"type":"subscribe","channels":["quotes"],"maxRate":4,"id":1}),
    );
    let ack = h.json(c);
    assert_eq!(ack[0]["maxRate"], json!({"quotes":4}));
    // 100 updates of A and of B, 10 ms apart: 1 second.
    let mut got = Vec::new();
    for px in 0..100 {
        h.publish("quotes", &quote("A", px));
        h.publish("quotes", &quote("B", 1000 + px));
        got.extend(data(&pump(&mut h, &[c]).remove(&c).unwrap_or_default()));
        h.advance(Duration::from_millis(10));
        got.extend(data(&pump(&mut h, &[c]).remove(&c).unwrap_or_default()));
    }
    h.advance(Duration::from_secs(1));
    got.extend(data(&pump(&mut h, &[c]).remove(&c).unwrap_or_default()));
    let of = |symbol: &str| -> Vec<u64> {
        got.iter()
            .filter(|v| v["symbol"] == symbol)
            .map(|v| v["px"].as_u64().unwrap())
            .collect()
    };
    let a = of("A");
    // At once, then the newest at the end of every 250 ms interval (the
    // timer fires before that instant's publish), and the last one.
    assert_eq!(a, [0, 24, 49, 74, 99]);
    assert_eq!(of("B").last(), Some(&1099));
    assert!(conflated(&h.events()) > 0);
}

#[test]
fn max_rate_is_capped_by_the_server_and_narrowed_by_the_token() {
    let mut config = CoreConfig {
        subscription_max_rate: 10,
        ..CoreConfig::default()
    };
    config.history.defaults.snapshot_field = Some("symbol".into());
    let mut h = Harness::new(config);
    let c = h.open("c");
    h.text(
        c,
        json!({"type":"subscribe","channels":["a","b"],"maxRate":50,"id":1}),
    );
    assert_eq!(h.json(c)[0]["maxRate"], json!({"a":10,"b":10}));
    let mut free = identity("free");
    free.max_rate = Some(1);
    let f = h.core.handle_open(h.now, open_as(free)).expect("admitted");
    h.drain(f);
    // The claim applies even when the subscribe names no rate.
    h.text(f, json!({"type":"subscribe","channels":["a"],"id":2}));
    assert_eq!(h.json(f)[0]["maxRate"], json!({"a":1}));
    h.text(
        f,
        json!({"type":"subscribe","channels":["b"],"maxRate":5,"id":3}),
    );
    assert_eq!(h.json(f)[0]["maxRate"], json!({"b":1}));
    // Without a rate or a claim the ack has no maxRate field.
    h.text(c, json!({"type":"subscribe","channels":["a"],"id":4}));
    assert!(h.json(c)[0].get("maxRate").is_none());
}

#[test]
fn an_invalid_max_rate_is_a_bad_request_and_changes_nothing() {
    let mut h = Harness::default();
    let c = h.open("c");
    h.text(
        c,
        json!({"type":"subscribe","channels":["a"],"maxRate":2,"id":1}),
    );
    h.json(c);
    for bad in [json!(0), json!(-1), json!("4"), json!(2.5), json!(true)] {
        h.text(
            c,
            json!({"type":"subscribe","channels":["a","b"],"maxRate":bad,"id":7}),
        );
        let reply = h.json(c);
        assert_eq!(reply[0]["type"], "error", "{bad}");
        assert_eq!(reply[0]["code"], "bad_request", "{bad}");
        assert_eq!(reply[0]["id"], 7);
    }
    h.text(
        c,
        json!({"type":"subscribe","channels":["a"],"maxRate":2,"id":9}),
    );
    let ack = h.json(c);
    assert_eq!(ack[0]["current"], json!(["a"]), "b was never added");
    assert_eq!(ack[0]["maxRate"], json!({"a":2}));
}

#[test]
fn lifting_a_rate_sends_what_it_held_and_unsubscribing_forgets_it() {
    let mut config = CoreConfig::default();
    config.history.defaults.snapshot_field = Some("symbol".into());
    let mut h = Harness::new(config);
    let c = h.open("c");
    h.text(
        c,
        json!({"type":"subscribe","channels":["q"],"maxRate":1,"id":1}),
    );
    h.json(c);
    h.publish("q", &quote("A", 1));
    h.publish("q", &quote("A", 2));
    let now: Vec<Value> = h
        .json(c)
        .into_iter()
        .filter(|v| v["type"] == "message")
        .collect();
    assert_eq!(now.len(), 1, "the second value waits for the interval");
    h.publish("q", &quote("A", 3));
    h.text(c, json!({"type":"subscribe","channels":["q"],"id":2}));
    let got: Vec<Value> = h
        .json(c)
        .into_iter()
        .filter(|v| v["type"] == "message")
        .collect();
    assert_eq!(got.last().map(|v| v["data"]["px"].clone()), Some(json!(3)));
    // Rate again, hold a value, unsubscribe: nothing more arrives.
    h.text(
        c,
        json!({"type":"subscribe","channels":["q"],"maxRate":1,"id":3}),
    );
    h.json(c);
    h.publish("q", &quote("A", 4));
    h.publish("q", &quote("A", 5));
    h.text(c, json!({"type":"unsubscribe","channels":["q"],"id":4}));
    h.json(c);
    h.advance(Duration::from_secs(2));
    assert!(h.json(c).iter().all(|v| v["type"] != "message"));
}

// ---------------------------------------------------------------------------
// The property.

#[derive(Debug, Clone)]
enum Op {
    /// Publish the next value of a key.
    Publish(u8),
    /// The slow client's socket takes what is in flight.
    SlowWrites,
    /// Time passes (rate intervals end).
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..4).prop_map(Op::Publish),
        1 => Just(Op::SlowWrites),
        2 => (1u16..400).prop_map(Op::Advance),
    ]
}

/// Per client: (key, value) in arrival order.
type Seen = Vec<(String, u64)>;

fn record(seen: &mut Seen, frames: &[Bytes]) {
    for v in data(frames) {
        seen.push((
            v["symbol"].as_str().unwrap().to_owned(),
            v["px"].as_u64().unwrap(),
        ));
    }
}

struct Run {
    fast: Vec<Bytes>,
    slow: Seen,
    rated: Seen,
    last: HashMap<String, u64>,
}

/// Plays `ops` with a fast client, and (when `with_others`) a stalled
/// conflating one and a `maxRate` one; checks memory on the way.
fn play(bound: usize, ops: &[Op], with_others: bool) -> Result<Run, TestCaseError> {
    let mut config = conflating(bound);
    // Time runs up to two minutes: keep heartbeats out of the picture.
    config.heartbeat_interval = Duration::from_secs(3600);
    config.connection_timeout = Duration::from_secs(7200);
    let mut h = Harness::new(config);
    let fast = h.open("fast");
    subscribe(&mut h, fast, &["q"]);
    let (mut slow, mut rated) = (None, None);
    if with_others {
        let s = h.open("slow");
        subscribe(&mut h, s, &["q"]);
        let r = h.open("rated");
        h.text(
            r,
            json!({"type":"subscribe","channels":["q"],"maxRate":5,"id":1}),
        );
        h.json(r);
        (slow, rated) = (Some(s), Some(r));
    }
    let mut run = Run {
        fast: Vec::new(),
        slow: Vec::new(),
        rated: Vec::new(),
        last: HashMap::new(),
    };
    let mut next = 0u64;
    let completing: Vec<ConnId> = [Some(fast), rated].into_iter().flatten().collect();
    let collect = |h: &mut Harness, run: &mut Run, all: bool| {
        let mut done = completing.clone();
        if all {
            done.extend(slow);
        }
        let mut got = pump(h, &done);
        run.fast.extend(got.remove(&fast).unwrap_or_default());
        if let Some(r) = rated {
            record(&mut run.rated, &got.remove(&r).unwrap_or_default());
        }
        if let Some(s) = slow {
            record(&mut run.slow, &got.remove(&s).unwrap_or_default());
        }
    };
    for op in ops {
        match op {
            Op::Publish(key) => {
                let symbol = format!("K{key}");
                h.publish("q", &quote(&symbol, next));
                run.last.insert(symbol, next);
                next += 1;
                collect(&mut h, &mut run, false);
            }
            Op::SlowWrites => {
                if let Some(s) = slow {
                    h.write_complete(s);
                }
                collect(&mut h, &mut run, false);
            }
            Op::Advance(ms) => {
                h.advance(Duration::from_millis(u64::from(*ms)));
                collect(&mut h, &mut run, false);
            }
        }
        if let Some(s) = slow {
            let held = h
                .core
                .inspect(s)
                .expect("4 keys fit half a bound of 8: never closed");
            prop_assert!(
                held.held_frames <= bound,
                "{} frames held",
                held.held_frames
            );
            // Each frame is under 100 bytes: the bytes follow the frames.
            prop_assert!(
                held.held_bytes <= bound * 100,
                "{} bytes held",
                held.held_bytes
            );
        }
    }
    // The stream pauses: rate intervals end, the slow socket catches up.
    for _ in 0..4 {
        if let Some(s) = slow {
            h.write_complete(s);
        }
        h.advance(Duration::from_secs(1));
        collect(&mut h, &mut run, true);
    }
    prop_assert!(h.disconnects().is_empty());
    Ok(run)
}

fn check_client(name: &str, seen: &Seen, last: &HashMap<String, u64>) -> Result<(), TestCaseError> {
    let mut got: HashMap<&str, u64> = HashMap::new();
    for (key, value) in seen {
        if let Some(before) = got.get(key.as_str()) {
            prop_assert!(before < value, "{name}: {key} went {before} then {value}");
        }
        got.insert(key, *value);
    }
    let last: HashMap<&str, u64> = last.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    prop_assert_eq!(got, last, "{}: last value per key", name);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn conflated_and_rate_limited_clients_end_with_the_stream_s_last_value_per_key(
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let bound = 8;
        let run = play(bound, &ops, true)?;
        check_client("slow", &run.slow, &run.last)?;
        check_client("rated", &run.rated, &run.last)?;
        let alone = play(bound, &ops, false)?;
        prop_assert!(run.fast == alone.fast, "the fast client's bytes changed");
        let published = ops.iter().filter(|op| matches!(op, Op::Publish(_))).count();
        prop_assert_eq!(data(&run.fast).len(), published, "the fast client got every message");
    }
}
