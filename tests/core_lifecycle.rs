//! Core behaviour: heartbeats, token expiry, rate limits, bad frames,
//! closes, shutdown, limits and batching.

mod core_support;

use core_support::*;

#[test]
fn heartbeat_ping_is_sent_every_interval() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.advance(Duration::from_secs(30));
    assert_eq!(h.drain(conn), [Received::Ping]);
    h.activity(conn);
    h.advance(Duration::from_secs(30));
    assert_eq!(h.drain(conn), [Received::Ping]);
}

#[test]
fn app_ping_is_sent_when_enabled() {
    let config = CoreConfig {
        app_ping: true,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    h.advance(Duration::from_secs(30));
    let frames = h.drain(conn);
    assert_eq!(frames[0], Received::Ping);
    assert_eq!(
        frames[1],
        Received::Json(json!({"type":"ping","timestamp": ANCHOR_UNIX_MS + 30_000}))
    );
}

#[test]
fn silent_client_is_closed_after_timeout() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.advance(Duration::from_secs(59));
    assert!(!h.core.inspect(conn).expect("open").closing);
    h.advance(Duration::from_secs(1));
    assert!(h.events().contains(&Event::HeartbeatFailure { conn }));
    let frames = h.drain(conn);
    assert_eq!(
        frames.last(),
        Some(&Received::Close(1008, "connection timeout".into()))
    );
    assert_eq!(h.disconnects(), [conn]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Closed {
            reason: CloseReason::HeartbeatTimeout,
            ..
        }
    )));
}

#[test]
fn any_inbound_frame_resets_the_idle_clock() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.advance(Duration::from_secs(50));
    h.ws_ping(conn, b"hi");
    h.advance(Duration::from_secs(50));
    h.text(conn, json!({"type":"pong"}));
    h.advance(Duration::from_secs(50));
    assert!(!h.core.inspect(conn).expect("open").closing);
    h.advance(Duration::from_secs(10));
    assert!(h.core.inspect(conn).is_none_or(|c| c.closing));
}

#[test]
fn expired_token_closes_with_1008() {
    let mut h = Harness::default();
    let mut who = identity("u");
    who.expires_at_unix_ms = Some(ANCHOR_UNIX_MS + 5_000);
    let conn = h.core.handle_open(h.now, open_as(who)).expect("admitted");
    let _ = h.drain(conn);
    h.advance(Duration::from_secs(4));
    assert!(!h.core.inspect(conn).expect("open").closing);
    h.advance(Duration::from_secs(1));
    // A token shorter-lived than the refresh lead is asked for at once.
    assert_eq!(
        h.drain(conn),
        [
            Received::Json(json!({"type":"refresh_required","expiresAt":ANCHOR_UNIX_MS + 5_000})),
            Received::Close(1008, "token expired".into())
        ]
    );
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Closed {
            reason: CloseReason::TokenExpired,
            ..
        }
    )));
}

#[test]
fn rate_limited_frame_gets_error_and_is_not_processed() {
    let config = CoreConfig {
        rate_limit_per_second: 1,
        rate_limit_burst: 2,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    subscribe(&mut h, conn, &["b"]);
    let err = subscribe(&mut h, conn, &["c"]);
    assert_eq!(err["code"], "rate_limited");
    assert_eq!(h.core.inspect(conn).expect("open").channels, ["a", "b"]);
    assert!(h.events().contains(&Event::RateLimited { conn }));
    h.advance(Duration::from_secs(1));
    assert_eq!(subscribe(&mut h, conn, &["c"])["type"], "subscribed");
}

#[test]
fn sustained_flooding_closes_with_rate_limit_exceeded() {
    let config = CoreConfig {
        rate_limit_per_second: 1,
        rate_limit_burst: 2,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    for _ in 0..10 {
        h.text(conn, json!({"type":"ping"}));
    }
    let frames = h.drain(conn);
    assert_eq!(
        frames.last(),
        Some(&Received::Close(1008, "rate limit exceeded".into()))
    );
}

#[test]
fn occasional_rate_limit_hits_do_not_close_the_connection() {
    let config = CoreConfig {
        rate_limit_per_second: 1,
        rate_limit_burst: 1,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    for _ in 0..20 {
        h.text(conn, json!({"type":"ping"}));
        h.text(conn, json!({"type":"ping"}));
        let frames: Vec<Received> = h
            .drain(conn)
            .into_iter()
            .filter(|f| *f != Received::Ping)
            .collect();
        assert!(
            matches!(&frames[1], Received::Json(e) if e["code"] == "rate_limited"),
            "{frames:?}"
        );
        h.advance(Duration::from_secs(11));
        h.activity(conn);
    }
    assert!(!h.core.inspect(conn).expect("open").closing);
}

#[test]
fn oversized_frame_closes_with_1009() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.frame_too_big(conn);
    assert_eq!(
        h.drain(conn),
        [Received::Close(1009, "frame too big".into())]
    );
    assert_eq!(h.disconnects(), [conn]);
}

#[test]
fn text_that_is_not_utf8_is_closed_with_1007_not_answered() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.text_bytes(conn, b"\xff\xfe");
    assert_eq!(
        h.drain(conn),
        [Received::Close(1007, "invalid UTF-8".into())]
    );
    assert_eq!(h.disconnects(), [conn]);
}

#[test]
fn a_protocol_violation_is_closed_with_1002() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.core.handle_protocol_violation(h.now, conn);
    assert_eq!(
        h.drain(conn),
        [Received::Close(1002, "protocol error".into())]
    );
    assert_eq!(h.disconnects(), [conn]);
}

#[test]
fn bad_frames_get_error_frames_with_stable_codes() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.binary(conn);
    h.text_bytes(conn, b"{not json");
    h.text_bytes(conn, b"[1]");
    h.text(conn, json!({"type":"dance","id":9}));
    let frames = h.json(conn);
    let codes: Vec<&str> = frames
        .iter()
        .map(|f| f["code"].as_str().expect("code"))
        .collect();
    assert_eq!(
        codes,
        [
            "binary_not_supported",
            "bad_frame",
            "bad_frame",
            "unknown_type"
        ]
    );
    assert_eq!(frames[3]["id"], 9);
    assert!(
        frames
            .iter()
            .all(|f| f["type"] == "error" && f["message"].as_str().is_some_and(|m| m.len() > 10))
    );
}

#[test]
fn json_ping_gets_pong_with_id_and_unix_ms() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.now += Duration::from_millis(250);
    h.text(conn, json!({"type":"ping","id":3}));
    assert_eq!(
        h.json(conn),
        [json!({"type":"pong","id":3,"timestamp": ANCHOR_UNIX_MS + 250})]
    );
}

#[test]
fn websocket_ping_is_answered_with_pong_echoing_payload() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.ws_ping(conn, b"abc");
    assert_eq!(h.drain(conn), [Received::Pong(b"abc".to_vec())]);
}

#[test]
fn shutdown_closes_everyone_with_1001_after_queued_frames_and_refuses_opens() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.publish("a", b"1");
    h.shutdown();
    assert_eq!(
        h.core.handle_open(h.now, open_as(identity("late"))),
        Err(Refusal::ShuttingDown)
    );
    assert!(!h.core.is_drained());
    let frames = h.drain(conn);
    assert!(matches!(&frames[0], Received::Json(m) if m["type"] == "message"));
    assert_eq!(
        frames[1],
        Received::Close(1001, "server shutting down".into())
    );
    assert_eq!(h.disconnects(), [conn]);
    assert!(h.core.is_drained());
}

#[test]
fn peer_close_is_answered_with_1000_then_disconnected() {
    let mut h = Harness::default();
    let conn = h.open("u");
    h.peer_close(conn);
    assert_eq!(
        h.drain(conn),
        [Received::Close(1000, "normal closure".into())]
    );
    assert_eq!(h.disconnects(), [conn]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Closed {
            reason: CloseReason::ClientClosed,
            ..
        }
    )));
}

#[test]
fn lost_connection_is_forgotten_at_once_without_disconnect_output() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.events();
    h.socket_closed(conn);
    assert!(h.disconnects().is_empty());
    assert_eq!(h.core.stats(), Stats::default());
    assert!(matches!(
        &h.events()[..],
        [Event::Closed {
            reason: CloseReason::ConnectionLost,
            ..
        }]
    ));
    h.socket_closed(conn);
    assert!(h.events().is_empty(), "Closed is reported once");
    assert_eq!(h.publish("a", b"x").delivered, 0);
}

#[test]
fn connection_limits_refuse_opens() {
    let config = CoreConfig {
        max_connections: 3,
        max_connections_per_ip: 2,
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let a = h
        .core
        .handle_open(h.now, open_as(identity("a")))
        .expect("first");
    h.core
        .handle_open(h.now, open_as(identity("b")))
        .expect("second");
    assert_eq!(
        h.core.handle_open(h.now, open_as(identity("c"))),
        Err(Refusal::TooManyFromAddress)
    );
    let mut other = open_as(identity("d"));
    other.remote = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    h.core
        .handle_open(h.now, other.clone())
        .expect("other address");
    assert_eq!(
        h.core.handle_open(h.now, other.clone()),
        Err(Refusal::TooManyConnections)
    );
    h.socket_closed(a);
    h.core
        .handle_open(h.now, open_as(identity("e")))
        .expect("a slot was freed");
}

#[test]
fn batching_sends_waiting_messages_as_one_array_frame() {
    let config = CoreConfig {
        batch_max: 3,
        batch_delay: Duration::from_millis(50),
        ..CoreConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    for i in 0..4 {
        h.publish("a", format!("{i}").as_bytes());
    }
    let frames = h.json(conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].as_array().map(Vec::len), Some(3));
    assert_eq!(frames[0][2]["data"], 2);
    h.advance(Duration::from_millis(50));
    assert_eq!(
        h.json(conn),
        [json!({"type":"message","channel":"a","pos":"~0:4","data":3})],
        "a lone message goes as is"
    );
}

#[test]
fn stats_count_connections_subscriptions_and_channels() {
    let mut h = Harness::default();
    let a = h.open("a");
    let b = h.open("b");
    subscribe(&mut h, a, &["x", "y"]);
    subscribe(&mut h, b, &["y"]);
    assert_eq!(
        h.core.stats(),
        Stats {
            connections: 2,
            subscriptions: 3,
            channels: 2,
            history: Default::default(),
            ..Stats::default()
        }
    );
}

#[test]
fn empty_connect_time_channel_names_are_ignored() {
    let mut h = Harness::default();
    let mut open = open_as(identity("u"));
    open.channels = vec!["".into(), "lines".into(), "".into()];
    let conn = h.core.handle_open(h.now, open).expect("admitted");
    let frames = h.json(conn);
    assert_eq!(
        frames[1],
        json!({"type":"subscribed","channels":["lines"],"current":["lines"],"positions":{"lines":"~0:0"}})
    );
}

#[test]
fn assigned_positions_keep_counting_when_a_channel_loses_its_subscribers() {
    let mut h = Harness::default();
    let conn = h.open("u");
    subscribe(&mut h, conn, &["a"]);
    h.publish("a", b"1");
    h.text(conn, json!({"type":"unsubscribe","channels":["a"]}));
    h.publish("a", b"2");
    h.text(conn, json!({"type":"subscribe","channels":["a"]}));
    h.publish("a", b"3");
    let pos: Vec<Value> = h
        .json(conn)
        .into_iter()
        .filter(|f| f["type"] == "message")
        .map(|m| m["pos"].clone())
        .collect();
    assert_eq!(pos, [json!("~0:1"), json!("~0:3")]);
}
