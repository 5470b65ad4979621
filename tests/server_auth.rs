//! Identity end to end, over real sockets: RS256/ES256 tokens from a JWKS
//! served on 127.0.0.1, `unknown_key` refusals, a JWKS that is down at
//! start (the server starts, `/ready` says why, HS256 still works), and
//! in-band refresh: `refresh_required`, `refreshed`, and every refused
//! refresh (expired token, another `sub`, unknown key), with the
//! connection surviving past its first token's `exp`.

mod auth_support;
mod server_support;

use std::time::Duration;

use auth_support::{JwksServer, jwks, p256_key, rsa_key, spec};
use server_support::*;
use ws_realtime::auth::{JwksConfig, JwksLocation, TokenSpec, mint};
use ws_realtime::config::ServerConfig;

fn with_jwks(url: String) -> ServerConfig {
    let mut config = server_support::config();
    config.auth.jwks = Some(JwksConfig {
        location: JwksLocation::Url(url),
        refresh_interval: Duration::from_secs(300),
        min_refetch_interval: Duration::from_secs(30),
        timeout: Duration::from_secs(2),
        max_body_bytes: 1 << 20,
    });
    config
}

/// An HS256 token for `sub` whose `exp` is `ttl_secs` from now.
fn hs_token(sub: &str, ttl_secs: u64) -> String {
    mint(SECRET, &spec(sub, ttl_secs), unix_secs())
}

async fn ready(address: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = http_request(address, "GET", "/ready", &[], b"").await;
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_the_jwks_connect_and_unknown_kids_get_401() {
    let (rsa, ec) = (rsa_key("rsa-1"), p256_key("ec-1"));
    let idp = JwksServer::start(jwks(&[&rsa, &ec])).await;
    let server = start(with_jwks(idp.url())).await;
    for key in [&rsa, &ec] {
        let token = key.token("alice", unix_secs());
        let mut client = try_connect(server.address, &format!("token={token}"))
            .await
            .expect("a token from the IdP is accepted");
        let connected = next_json(&mut client).await;
        assert_eq!(connected["userId"], "alice");
    }
    let stranger = p256_key("not-published");
    let refused = try_connect(
        server.address,
        &format!("token={}", stranger.token("alice", unix_secs())),
    )
    .await;
    let (status, body) = refusal(refused);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unknown_key")),
        "{body}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_jwks_down_at_start_leaves_the_server_up_unready_and_hs256_working() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let server = start(with_jwks(format!("http://{address}/jwks.json"))).await;
    let mut reasons = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = ready(server.address).await;
        assert_eq!(status, 503, "{body}");
        reasons = body["reasons"].clone();
        if reasons.to_string().contains("cannot load") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        reasons.to_string().contains("jwks: cannot load"),
        "/ready says why: {reasons}"
    );
    let mut client = try_connect(server.address, &format!("token={}", hs_token("bob", 600)))
        .await
        .expect("HS256 still works");
    assert_eq!(next_json(&mut client).await["type"], "connected");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refreshed_connection_outlives_its_first_token() {
    let server = start(server_support::config()).await;
    // Two seconds to live, shorter than the refresh lead: asked at once.
    let short = hs_token("carol", 2);
    let mut client = try_connect(server.address, &format!("token={short}"))
        .await
        .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "connected");
    let asked = next_json(&mut client).await;
    assert_eq!(asked["type"], "refresh_required", "{asked}");
    let exp_ms = asked["expiresAt"].as_u64().unwrap();

    let fresh = hs_token("carol", 3600);
    send_json(
        &mut client,
        serde_json::json!({"type":"refresh","token":fresh,"id":11}),
    )
    .await;
    let answer = next_json(&mut client).await;
    assert_eq!(answer["type"], "refreshed", "{answer}");
    assert_eq!(answer["id"], 11);
    assert!(answer["expiresAt"].as_u64().unwrap() > exp_ms + 3_000_000);

    // Past the first token's exp, the connection still answers.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    send_json(&mut client, serde_json::json!({"type":"ping","id":12})).await;
    let pong = next_json(&mut client).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn refused_refreshes_say_why_and_the_old_exp_still_closes_the_connection() {
    let idp = JwksServer::start(jwks(&[&p256_key("ec-1")])).await;
    let server = start(with_jwks(idp.url())).await;
    let mut client = try_connect(server.address, &format!("token={}", hs_token("dave", 3)))
        .await
        .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "connected");
    assert_eq!(next_json(&mut client).await["type"], "refresh_required");

    let expired = mint(
        SECRET,
        &TokenSpec {
            ttl: Duration::from_secs(10),
            ..spec("dave", 10)
        },
        unix_secs() - 3600,
    );
    let other_sub = hs_token("mallory", 3600);
    let unknown_key = p256_key("rotated-away").token("dave", unix_secs());
    for (id, token, code) in [
        (1, expired, "token_expired"),
        (2, other_sub, "sub_mismatch"),
        (3, unknown_key, "unknown_key"),
        (4, "garbage".to_owned(), "invalid_token"),
    ] {
        send_json(
            &mut client,
            serde_json::json!({"type":"refresh","token":token,"id":id}),
        )
        .await;
        let answer = next_json(&mut client).await;
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["code"], code, "{answer}");
        assert_eq!(answer["id"], id);
    }
    assert_eq!(close_code(&mut client).await, Some(1008));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refresh_flood_is_rate_limited_and_the_server_keeps_serving() {
    let mut config = server_support::config();
    config.core.rate_limit_per_second = 5;
    config.core.rate_limit_burst = 5;
    let server = start(config).await;
    let mut flooder = try_connect(server.address, &format!("token={}", hs_token("eve", 600)))
        .await
        .unwrap();
    assert_eq!(next_json(&mut flooder).await["type"], "connected");
    let token = hs_token("eve", 3600);
    for id in 0..200 {
        let frame = serde_json::json!({"type":"refresh","token":token,"id":id}).to_string();
        if futures_util::SinkExt::send(
            &mut flooder,
            tokio_tungstenite::tungstenite::Message::text(frame),
        )
        .await
        .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut flooder).await, Some(1008));
    // Others are unaffected.
    let mut other = connect(server.address, "frank", "").await;
    send_json(&mut other, serde_json::json!({"type":"ping","id":1})).await;
    assert_eq!(next_json(&mut other).await["type"], "pong");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_rs256_refresh_is_verified_against_the_jwks() {
    let rsa = rsa_key("rsa-1");
    let idp = JwksServer::start(jwks(&[&rsa])).await;
    let server = start(with_jwks(idp.url())).await;
    let first = rsa.token_for(&spec("gina", 2), unix_secs());
    let mut client = try_connect(server.address, &format!("token={first}"))
        .await
        .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "connected");
    assert_eq!(next_json(&mut client).await["type"], "refresh_required");
    let second = rsa.token_for(&spec("gina", 3600), unix_secs());
    send_json(
        &mut client,
        serde_json::json!({"type":"refresh","token":second,"id":"r1"}),
    )
    .await;
    let answer = next_json(&mut client).await;
    assert_eq!(answer["type"], "refreshed", "{answer}");
    assert_eq!(answer["id"], "r1");
    server.shutdown().await.unwrap();
}
