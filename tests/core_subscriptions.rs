//! Core behaviour: connecting, subscribing, aliases and permissions.

mod core_support;

use core_support::*;

#[test]
fn connected_frame_carries_ids_and_a_timestamp_from_the_anchor() {
    let config = CoreConfig {
        server_id: "gw-1".into(),
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    h.now += Duration::from_millis(1234);
    let conn = h
        .core
        .handle_open(h.now, open_as(identity("tester")))
        .expect("admitted");
    let frames = h.json(conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "connected");
    assert_eq!(frames[0]["userId"], "tester");
    assert_eq!(frames[0]["serverId"], "gw-1");
    assert_eq!(frames[0]["timestamp"], "2026-01-14T10:00:01.234Z");
    assert!(
        frames[0]["connectionId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(matches!(&h.events()[..], [Event::Opened { user_id, .. }] if user_id == "tester"));
}

#[test]
fn connection_ids_are_unique() {
    let mut h = Harness::default();
    let a = h
        .core
        .handle_open(h.now, open_as(identity("a")))
        .expect("admitted");
    h.socket_closed(a);
    let b = h
        .core
        .handle_open(h.now, open_as(identity("a")))
        .expect("admitted");
    assert_ne!(a, b, "a reused slot gets a handle of a new generation");
    let ids: Vec<String> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Opened { connection_id, .. } => Some(connection_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn subscribe_acks_with_id_requested_channels_and_sorted_current() {
    let mut h = Harness::default();
    let conn = h.open("u");
    assert_eq!(
        subscribe(&mut h, conn, &["lines"]),
        json!({"type":"subscribed","id":1,"channels":["lines"],"current":["lines"],"positions":{"lines":"~0:0"}})
    );
    assert_eq!(
        subscribe(&mut h, conn, &["analytics", "lines", "analytics"]),
        json!({"type":"subscribed","id":1,"channels":["analytics","lines"],"current":["analytics","lines"],
            "positions":{"analytics":"~0:0","lines":"~0:0"}})
    );
    h.text(
        conn,
        json!({"type":"unsubscribe","channels":["lines","nope"],"id":2}),
    );
    assert_eq!(
        h.json(conn),
        [json!({"type":"unsubscribed","id":2,"channels":["lines","nope"],"current":["analytics"]})]
    );
}

#[test]
fn subscribe_is_all_or_nothing() {
    let config = CoreConfig {
        max_channels_per_connection: 3,
        channel_rules: vec![ChannelRule {
            pattern: "admin-*".into(),
            access: Access::Roles(vec!["admin".into()]),
        }],
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    for (channels, code, named) in [
        (vec!["b", "bad name", "c"], "invalid_channel", "bad name"),
        (vec!["b", "admin-x"], "forbidden", "admin-x"),
        (vec!["b", "c", "d"], "channel_limit", "d"),
    ] {
        let err = subscribe(&mut h, conn, &channels);
        assert_eq!(err["type"], "error");
        assert_eq!(err["id"], 1);
        assert_eq!(err["code"], code);
        assert!(
            err["message"].as_str().expect("message").contains(named),
            "{err}"
        );
        assert_eq!(
            h.core.inspect(conn).expect("open").channels,
            ["a"],
            "set unchanged after {code}"
        );
    }
    assert_eq!(
        subscribe(&mut h, conn, &["a", "b", "c"])["current"],
        json!(["a", "b", "c"])
    );
}

#[test]
fn symbols_alias_subscribes_upper_cased_trade_channels() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.text(
        conn,
        json!({"action":"subscribe","symbols":["aapl","msft"]}),
    );
    assert_eq!(
        h.json(conn),
        [
            json!({"type":"subscribed","channels":["trade:AAPL","trade:MSFT"],"current":["trade:AAPL","trade:MSFT"],
                "positions":{"trade:AAPL":"~0:0","trade:MSFT":"~0:0"}})
        ]
    );
}

#[test]
fn string_ids_are_echoed_as_given() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.text(conn, json!({"type":"ping","id":"abc"}));
    let frames = h.json(conn);
    assert_eq!(frames[0]["id"], "abc");
    assert_eq!(frames[0]["type"], "pong");
}

#[test]
fn connect_time_channels_are_acked_right_after_connected_without_id() {
    let mut h = Harness::default();
    let mut open = open_as(identity("u"));
    open.channels = vec!["lines".into(), "analytics".into()];
    let conn = h.core.handle_open(h.now, open).expect("admitted");
    let frames = h.json(conn);
    assert_eq!(frames[0]["type"], "connected");
    assert_eq!(
        frames[1],
        json!({"type":"subscribed","channels":["lines","analytics"],"current":["analytics","lines"],
            "positions":{"lines":"~0:0","analytics":"~0:0"}})
    );
}

#[test]
fn forbidden_connect_time_channel_gets_an_error_without_id_and_subscribes_nothing() {
    let mut h = Harness::default();
    let mut who = identity("u");
    who.channel_patterns = Some(["trade:*".into()].into());
    let mut open = open_as(who);
    open.channels = vec!["trade:A".into(), "lines".into()];
    let conn = h.core.handle_open(h.now, open).expect("admitted");
    let frames = h.json(conn);
    assert_eq!(frames[1]["type"], "error");
    assert_eq!(frames[1]["code"], "forbidden");
    assert!(frames[1].get("id").is_none());
    assert!(h.core.inspect(conn).expect("open").channels.is_empty());
}

#[test]
fn token_channels_claim_restricts_subscriptions() {
    let mut h = Harness::default();
    let mut who = identity("u");
    who.channel_patterns = Some(["trade:*".into()].into());
    let conn = h.core.handle_open(h.now, open_as(who)).expect("admitted");
    let _ = h.drain(conn);
    assert_eq!(
        subscribe(&mut h, conn, &["trade:AAPL"])["type"],
        "subscribed"
    );
    assert_eq!(subscribe(&mut h, conn, &["lines"])["code"], "forbidden");
}

#[test]
fn owner_rule_admits_only_the_named_user() {
    let config = CoreConfig {
        channel_rules: vec![ChannelRule {
            pattern: "user:{sub}".into(),
            access: Access::Owner,
        }],
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let alice = h.open("alice");
    let bob = h.open("bob");
    assert_eq!(
        subscribe(&mut h, alice, &["user:alice"])["type"],
        "subscribed"
    );
    assert_eq!(subscribe(&mut h, bob, &["user:alice"])["code"], "forbidden");
}
