//! In-band token refresh in the core: `refresh_required` a lead time before
//! `exp`, the token handed out for verification, the verified identity
//! adopted (same `sub`, new `exp`, channels re-checked), and the close at
//! `exp` when no valid refresh came.

mod core_support;

use core_support::*;

const EXP_MS: u64 = ANCHOR_UNIX_MS + 120_000;

fn expiring(user: &str, exp_ms: u64) -> Identity {
    let mut who = identity(user);
    who.expires_at_unix_ms = Some(exp_ms);
    who
}

/// A harness with one connection for `who`, its `connected` frame read.
fn opened(config: CoreConfig, who: Identity) -> (Harness, ConnId) {
    let mut h = Harness::new(CoreConfig {
        heartbeat_interval: Duration::from_secs(86_400),
        connection_timeout: Duration::from_secs(2 * 86_400),
        ..config
    });
    let conn = h.core.handle_open(h.now, open_as(who)).expect("admitted");
    let _ = h.drain(conn);
    (h, conn)
}

fn refresh(h: &mut Harness, conn: ConnId, id: u64) -> VerifyRequest {
    h.text(
        conn,
        json!({"type":"refresh","token":"new.jwt.token","id":id}),
    );
    h.core.poll_verify().expect("the token goes to the shell")
}

#[test]
fn refresh_required_is_sent_a_lead_time_before_exp() {
    let (mut h, conn) = opened(CoreConfig::default(), expiring("u", EXP_MS));
    h.advance(Duration::from_secs(59));
    assert_eq!(h.json(conn), Vec::<Value>::new());
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.json(conn),
        [json!({"type":"refresh_required","expiresAt":EXP_MS})]
    );
}

#[test]
fn the_lead_is_configurable_and_zero_never_asks() {
    let lead = CoreConfig {
        refresh_lead: Duration::from_secs(10),
        ..CoreConfig::default()
    };
    let (mut h, conn) = opened(lead, expiring("u", EXP_MS));
    h.advance(Duration::from_secs(109));
    assert!(h.json(conn).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.json(conn)[0]["type"], "refresh_required");

    let never = CoreConfig {
        refresh_lead: Duration::ZERO,
        ..CoreConfig::default()
    };
    let (mut h, conn) = opened(never, expiring("u", EXP_MS));
    h.advance(Duration::from_secs(119));
    assert!(h.json(conn).is_empty());
}

#[test]
fn a_verified_refresh_moves_the_expiry_and_answers_refreshed() {
    let (mut h, conn) = opened(CoreConfig::default(), expiring("u", EXP_MS));
    h.advance(Duration::from_secs(60));
    let _ = h.json(conn);
    let request = refresh(&mut h, conn, 7);
    assert_eq!(request.conn, conn);
    assert_eq!(request.token, "new.jwt.token");
    assert!(
        !format!("{request:?}").contains("new.jwt"),
        "tokens stay out of logs"
    );

    let new_exp = EXP_MS + 3_600_000;
    h.core
        .handle_refresh_verified(h.now, conn, request.id, expiring("u", new_exp));
    assert_eq!(
        h.json(conn),
        [json!({"type":"refreshed","id":7,"expiresAt":new_exp})]
    );
    // Past the old exp: still open, and asked again before the new one.
    h.advance(Duration::from_secs(120));
    assert!(!h.core.inspect(conn).expect("open").closing);
    h.advance(Duration::from_secs(3600 - 60 - 60));
    assert_eq!(
        h.json(conn),
        [json!({"type":"refresh_required","expiresAt":new_exp})]
    );
    h.advance(Duration::from_secs(60));
    assert_eq!(
        h.drain(conn),
        [Received::Close(1008, "token expired".into())]
    );
}

#[test]
fn without_a_valid_refresh_the_connection_closes_at_exp() {
    let (mut h, conn) = opened(CoreConfig::default(), expiring("u", EXP_MS));
    h.advance(Duration::from_secs(61));
    let request = refresh(&mut h, conn, 1);
    h.core.handle_refresh_rejected(
        h.now,
        conn,
        request.id,
        "token_expired",
        "the token expired at 1 (Unix seconds); request a new token",
    );
    let answer = h.json(conn);
    assert_eq!(answer.len(), 2, "{answer:?}");
    assert_eq!(answer[0]["type"], "refresh_required");
    assert_eq!(answer[1]["type"], "error");
    assert_eq!(answer[1]["code"], "token_expired");
    assert_eq!(answer[1]["id"], 1);
    h.advance(Duration::from_secs(59));
    assert_eq!(
        h.drain(conn),
        [Received::Close(1008, "token expired".into())]
    );
}

#[test]
fn a_refresh_for_another_sub_is_refused_and_changes_nothing() {
    let (mut h, conn) = opened(CoreConfig::default(), expiring("alice", EXP_MS));
    let request = refresh(&mut h, conn, 2);
    h.core
        .handle_refresh_verified(h.now, conn, request.id, expiring("mallory", EXP_MS * 2));
    let answer = h.json(conn);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0]["code"], "sub_mismatch");
    assert_eq!(answer[0]["id"], 2);
    h.advance(Duration::from_secs(120));
    assert!(
        h.drain(conn)
            .contains(&Received::Close(1008, "token expired".into())),
        "the old exp still applies"
    );
}

#[test]
fn channels_the_new_token_no_longer_allows_are_unsubscribed_with_a_reason() {
    let mut who = expiring("u", EXP_MS);
    who.channel_patterns = Some(["trade:*".into(), "lines".into()].into());
    let (mut h, conn) = opened(CoreConfig::default(), who);
    subscribe(&mut h, conn, &["trade:AAPL", "lines"]);

    let request = refresh(&mut h, conn, 3);
    let mut narrower = expiring("u", EXP_MS + 60_000);
    narrower.channel_patterns = Some(["lines".into()].into());
    h.core
        .handle_refresh_verified(h.now, conn, request.id, narrower);
    assert_eq!(
        h.json(conn),
        [
            json!({"type":"refreshed","id":3,"expiresAt":EXP_MS + 60_000}),
            json!({"type":"unsubscribed","channels":["trade:AAPL"],"current":["lines"],"reason":"forbidden"}),
        ]
    );
    assert_eq!(
        h.core.inspect(conn).expect("open").channels,
        ["lines".to_owned()]
    );
    // No more trade messages reach it.
    h.publish("trade:AAPL", b"{}");
    assert!(h.json(conn).is_empty());
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Unsubscribed { channels, .. } if channels == &["trade:AAPL".to_owned()]
    )));
}

#[test]
fn one_refresh_at_a_time_per_connection() {
    let (mut h, conn) = opened(CoreConfig::default(), expiring("u", EXP_MS));
    let first = refresh(&mut h, conn, 1);
    h.text(conn, json!({"type":"refresh","token":"another","id":2}));
    assert!(
        h.core.poll_verify().is_none(),
        "the second waits for nothing"
    );
    let answer = h.json(conn);
    assert_eq!(answer[0]["code"], "rate_limited");
    assert_eq!(answer[0]["id"], 2);
    h.core
        .handle_refresh_verified(h.now, conn, first.id, expiring("u", EXP_MS + 1));
    let _ = h.json(conn);
    let _ = refresh(&mut h, conn, 3);
}

#[test]
fn a_refresh_flood_is_rate_limited_like_any_frame() {
    let config = CoreConfig {
        rate_limit_per_second: 1,
        rate_limit_burst: 2,
        ..CoreConfig::default()
    };
    let (mut h, conn) = opened(config, expiring("u", EXP_MS));
    for id in 0..100 {
        h.text(conn, json!({"type":"refresh","token":"t","id":id}));
    }
    let verifications = std::iter::from_fn(|| h.core.poll_verify()).count();
    assert_eq!(verifications, 1, "one in verification, the rest refused");
    let received = h.drain(conn);
    assert!(
        received.contains(&Received::Close(1008, "rate limit exceeded".into())),
        "a sustained flood closes the connection: {received:?}"
    );
}

#[test]
fn an_answer_for_a_closed_connection_is_ignored() {
    let (mut h, conn) = opened(CoreConfig::default(), expiring("u", EXP_MS));
    let request = refresh(&mut h, conn, 1);
    h.socket_closed(conn);
    h.core
        .handle_refresh_verified(h.now, conn, request.id, expiring("u", EXP_MS + 1));
    assert!(h.drain(conn).is_empty());
}

#[test]
fn a_refresh_to_a_token_without_exp_stops_both_timers() {
    let (mut h, conn) = opened(CoreConfig::default(), expiring("u", EXP_MS));
    let request = refresh(&mut h, conn, 1);
    h.core
        .handle_refresh_verified(h.now, conn, request.id, identity("u"));
    assert_eq!(h.json(conn), [json!({"type":"refreshed","id":1})]);
    h.advance(Duration::from_secs(3600));
    assert!(h.json(conn).is_empty());
    assert!(!h.core.inspect(conn).expect("open").closing);
}

#[test]
fn a_revoked_channel_releases_nothing_its_max_rate_held_back() {
    let mut who = expiring("u", EXP_MS);
    who.channel_patterns = Some(["trade:*".into(), "lines".into()].into());
    let (mut h, conn) = opened(CoreConfig::default(), who);
    h.text(
        conn,
        json!({"type":"subscribe","channels":["trade:AAPL"],"maxRate":1,"id":1}),
    );
    let _ = h.json(conn);
    h.publish("trade:AAPL", br#"{"px":1}"#);
    h.publish("trade:AAPL", br#"{"px":2}"#);
    let first = h.json(conn);
    assert_eq!(first.len(), 1, "the second value is held back: {first:?}");

    let request = refresh(&mut h, conn, 3);
    let mut narrower = expiring("u", EXP_MS + 60_000);
    narrower.channel_patterns = Some(["lines".into()].into());
    h.core
        .handle_refresh_verified(h.now, conn, request.id, narrower);
    assert_eq!(h.json(conn).len(), 2, "refreshed + unsubscribed");
    h.advance(Duration::from_secs(2));
    assert!(
        h.json(conn).iter().all(|f| f["type"] != "message"),
        "a held value of a revoked channel must not be sent"
    );
}

#[test]
fn messages_batched_before_a_revocation_arrive_before_its_unsubscribed_frame() {
    let mut who = expiring("u", EXP_MS);
    who.channel_patterns = Some(["trade:*".into(), "lines".into()].into());
    let config = CoreConfig {
        batch_max: 4,
        batch_delay: Duration::from_millis(50),
        ..CoreConfig::default()
    };
    let (mut h, conn) = opened(config, who);
    subscribe(&mut h, conn, &["trade:AAPL"]);
    h.publish("trade:AAPL", br#"{"px":1}"#);
    h.publish("trade:AAPL", br#"{"px":2}"#);

    let request = refresh(&mut h, conn, 3);
    let mut narrower = expiring("u", EXP_MS + 60_000);
    narrower.channel_patterns = Some(["lines".into()].into());
    h.core
        .handle_refresh_verified(h.now, conn, request.id, narrower);
    let mut frames = h.json(conn);
    h.advance(Duration::from_millis(100));
    frames.extend(h.json(conn));
    let kinds: Vec<&str> = frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("array"))
        .collect();
    assert_eq!(kinds, ["refreshed", "array", "unsubscribed"], "{frames:?}");
    assert_eq!(
        frames[1],
        json!([
            {"type":"message","channel":"trade:AAPL","pos":"~0:1","data":{"px":1}},
            {"type":"message","channel":"trade:AAPL","pos":"~0:2","data":{"px":2}},
        ])
    );
}
