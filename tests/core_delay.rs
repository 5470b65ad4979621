//! Core behaviour: delayed delivery (a token's `delay` claim or a delivery
//! rule's `delay`): messages served from the history ring once they are that
//! old, never sooner, with history, snapshot and eviction defined.

mod core_support;

use std::collections::HashMap;

use core_support::*;

const MINUTE: Duration = Duration::from_secs(60);

fn quote(symbol: &str, px: u64) -> Vec<u8> {
    format!(r#"{{"symbol":"{symbol}","px":{px}}}"#).into_bytes()
}

/// History keyed by `symbol`, long heartbeats (time runs for minutes), and
/// a `delay` on `eod:*` channels.
fn config() -> CoreConfig {
    let mut config = CoreConfig {
        heartbeat_interval: Duration::from_secs(3600),
        connection_timeout: Duration::from_secs(7200),
        delivery_rules: vec![DeliveryRule {
            pattern: "eod:*".into(),
            slow_client_policy: None,
            delay: Some(Duration::from_secs(10)),
        }],
        ..CoreConfig::default()
    };
    config.history.defaults.snapshot_field = Some("symbol".into());
    config.history.defaults.max_age = Duration::from_secs(3600);
    config
}

fn delayed(h: &mut Harness, user: &str, delay: Duration) -> ConnId {
    let mut who = identity(user);
    who.delay = Some(delay);
    let conn = h.core.handle_open(h.now, open_as(who)).expect("admitted");
    h.drain(conn);
    conn
}

/// The `data` of every message each connection has been sent so far
/// (every write completes).
fn all_data(h: &mut Harness) -> HashMap<ConnId, Vec<Value>> {
    let mut got: HashMap<ConnId, Vec<Value>> = HashMap::new();
    while let Some(transmit) = h.next_transmit() {
        for received in decode_all(&transmit.frames) {
            if let Received::Json(v) = received
                && v["type"] == "message"
            {
                got.entry(transmit.conn)
                    .or_default()
                    .push(v["data"].clone());
            }
        }
        h.write_complete(transmit.conn);
    }
    got
}

/// What [`all_data`] has for each of `conns`, in that order.
fn data_of<const N: usize>(h: &mut Harness, conns: [ConnId; N]) -> [Vec<Value>; N] {
    let mut got = all_data(h);
    conns.map(|conn| got.remove(&conn).unwrap_or_default())
}

/// The `data` of every message `conn` has been sent so far.
fn data(h: &mut Harness, conn: ConnId) -> Vec<Value> {
    let [got] = data_of(h, [conn]);
    got
}

#[test]
fn a_delayed_user_gets_each_message_a_delay_later_and_never_sooner() {
    let mut h = Harness::new(config());
    let live = h.open("live");
    let late = delayed(&mut h, "late", MINUTE);
    subscribe(&mut h, live, &["quotes"]);
    subscribe(&mut h, late, &["quotes"]);
    h.publish("quotes", &quote("A", 1));
    assert_eq!(data(&mut h, live), [json!({"symbol":"A","px":1})]);
    assert!(data(&mut h, late).is_empty());
    h.advance(Duration::from_secs(30));
    h.publish("quotes", &quote("A", 2));
    assert_eq!(data(&mut h, live).len(), 1);
    h.advance(Duration::from_secs(29));
    assert!(data(&mut h, late).is_empty(), "59 s: nothing yet");
    h.advance(Duration::from_secs(1));
    assert_eq!(data(&mut h, late), [json!({"symbol":"A","px":1})]);
    h.advance(Duration::from_secs(29));
    assert!(data(&mut h, late).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(data(&mut h, late), [json!({"symbol":"A","px":2})]);
}

#[test]
fn a_delay_rule_delays_every_subscriber_and_a_longer_claim_wins() {
    let mut h = Harness::new(config());
    let user = h.open("user");
    let later = delayed(&mut h, "later", Duration::from_secs(30));
    let sooner = delayed(&mut h, "sooner", Duration::from_secs(5));
    for conn in [user, later, sooner] {
        subscribe(&mut h, conn, &["eod:prices"]);
    }
    h.publish("eod:prices", &quote("A", 1));
    h.advance(Duration::from_secs(9));
    assert!(all_data(&mut h).is_empty());
    h.advance(Duration::from_secs(1));
    let [u, l, s] = data_of(&mut h, [user, later, sooner]);
    assert_eq!(u.len(), 1, "the rule's 10 s");
    assert_eq!(s.len(), 1, "a shorter claim does not shorten it");
    assert!(l.is_empty());
    h.advance(Duration::from_secs(20));
    assert_eq!(data(&mut h, later).len(), 1);
}

#[test]
fn history_and_snapshot_of_a_delayed_subscription_hold_only_what_is_due() {
    let mut h = Harness::new(config());
    h.publish("quotes", &quote("A", 1));
    h.advance(Duration::from_secs(10));
    h.publish("quotes", &quote("B", 1));
    h.advance(Duration::from_secs(40));
    h.publish("quotes", &quote("A", 2));
    h.advance(Duration::from_secs(10));
    // t = 60 s; 30 s late means up to t = 30 s: A1 and B1, not A2.
    let snap = delayed(&mut h, "snap", Duration::from_secs(30));
    h.text(
        snap,
        json!({"type":"subscribe","channels":["quotes"],"snapshot":true,"id":1}),
    );
    // A's latest value is newer than the delay allows: only B's.
    assert_eq!(data(&mut h, snap), [json!({"symbol":"B","px":1})]);
    let hist = delayed(&mut h, "hist", Duration::from_secs(30));
    h.text(
        hist,
        json!({"type":"subscribe","channels":["quotes"],"history":10,"id":1}),
    );
    assert_eq!(
        data(&mut h, hist),
        [json!({"symbol":"A","px":1}), json!({"symbol":"B","px":1})]
    );
    // A2 (t = 50 s) comes due at t = 80 s for both.
    h.advance(Duration::from_secs(19));
    assert!(all_data(&mut h).is_empty());
    h.advance(Duration::from_secs(1));
    let [s, hi] = data_of(&mut h, [snap, hist]);
    assert_eq!(s, [json!({"symbol":"A","px":2})]);
    assert_eq!(hi, [json!({"symbol":"A","px":2})]);
}

#[test]
fn the_ack_position_of_a_delayed_subscription_is_where_its_data_ends() {
    let mut h = Harness::new(config());
    h.publish("quotes", &quote("A", 1));
    h.advance(Duration::from_secs(60));
    h.publish("quotes", &quote("A", 2));
    let live = h.open("live");
    let late = delayed(&mut h, "late", Duration::from_secs(30));
    let live_pos = subscribe(&mut h, live, &["quotes"])["positions"]["quotes"].clone();
    let late_pos = subscribe(&mut h, late, &["quotes"])["positions"]["quotes"].clone();
    assert_ne!(live_pos, late_pos, "the delayed cursor is behind");
    // Recovering from the delayed cursor elsewhere replays exactly A2.
    let other = h.open("other");
    h.text(
        other,
        json!({"type":"subscribe","channels":["quotes"],"since":{"quotes":late_pos},"id":2}),
    );
    assert_eq!(data(&mut h, other), [json!({"symbol":"A","px":2})]);
}

#[test]
fn messages_the_ring_lets_go_before_they_are_due_are_skipped_and_counted() {
    let mut config = config();
    config.history.defaults.messages = 3;
    let mut h = Harness::new(config);
    let late = delayed(&mut h, "late", Duration::from_secs(10));
    subscribe(&mut h, late, &["quotes"]);
    for px in 0..10 {
        h.publish("quotes", &quote("A", px));
    }
    h.advance(Duration::from_secs(10));
    assert_eq!(
        data(&mut h, late),
        [7, 8, 9].map(|px| json!({"symbol":"A","px":px}))
    );
    let skipped: u64 = h
        .events()
        .iter()
        .map(|e| match e {
            Event::MessagesDropped {
                count,
                reason: DropReason::DelayOverrun,
                ..
            } => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(skipped, 7);
    assert!(
        h.disconnects().is_empty(),
        "a delayed user is not cut for it"
    );
}

#[test]
fn a_channel_without_history_cannot_be_delayed() {
    let mut config = config();
    config.history.defaults.messages = 0;
    let mut h = Harness::new(config);
    let late = delayed(&mut h, "late", MINUTE);
    h.text(
        late,
        json!({"type":"subscribe","channels":["quotes"],"id":1}),
    );
    let answer = h.json(late);
    assert_eq!(answer[0]["type"], "error");
    assert_eq!(answer[0]["code"], "forbidden");
    assert!(
        answer[0]["message"].as_str().unwrap().contains("history"),
        "{answer:?}"
    );
    // A live user is not affected.
    let live = h.open("live");
    assert_eq!(subscribe(&mut h, live, &["quotes"])["type"], "subscribed");
}

#[test]
fn unsubscribing_stops_a_delayed_subscription() {
    let mut h = Harness::new(config());
    let late = delayed(&mut h, "late", Duration::from_secs(10));
    subscribe(&mut h, late, &["quotes"]);
    h.publish("quotes", &quote("A", 1));
    h.text(
        late,
        json!({"type":"unsubscribe","channels":["quotes"],"id":2}),
    );
    h.json(late);
    h.advance(Duration::from_secs(20));
    assert!(data(&mut h, late).is_empty());
}
