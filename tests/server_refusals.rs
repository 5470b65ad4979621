//! Every refusal happens before the upgrade, as HTTP with a JSON body
//! `{"error":…,"message":…}`: 401, 403, 429 and 503.

mod server_support;

use std::time::Duration;

use base64::Engine;
use server_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ws_realtime::auth::{TokenSpec, mint};
use ws_realtime::source::{Source, SourceContext, SourceFuture};

#[tokio::test]
async fn missing_token_is_401_with_a_json_body() {
    let server = start(config()).await;
    let (status, body) = refusal(try_connect(server.address, "channels=lines").await);
    assert_eq!(status, 401);
    assert_eq!(body["error"], "token_missing");
    assert!(
        body["message"].as_str().unwrap().contains("token"),
        "{body}"
    );
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn invalid_token_is_401() {
    let server = start(config()).await;
    let (status, body) = refusal(try_connect(server.address, "token=not.a.jwt").await);
    assert_eq!(status, 401);
    assert!(
        body["error"].is_string() && body["message"].is_string(),
        "{body}"
    );

    let spec = TokenSpec {
        sub: "mallory".into(),
        ttl: Duration::from_secs(3600),
        roles: vec![],
        channels: None,
        audience: None,
        issuer: None,
    };
    let forged = mint(b"some-other-secret-some-other-secret", &spec, unix_secs());
    let (status, _) = refusal(try_connect(server.address, &format!("token={forged}")).await);
    assert_eq!(status, 401);
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn expired_token_is_401_token_expired() {
    let server = start(config()).await;
    let spec = TokenSpec {
        sub: "alice".into(),
        ttl: Duration::from_secs(60),
        roles: vec![],
        channels: None,
        audience: None,
        issuer: None,
    };
    let expired = mint(SECRET, &spec, unix_secs() - 3600);
    let (status, body) = refusal(try_connect(server.address, &format!("token={expired}")).await);
    assert_eq!(status, 401);
    assert_eq!(body["error"], "token_expired");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn alg_none_token_is_refused() {
    let server = start(config()).await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64.encode(format!(
        r#"{{"sub":"mallory","exp":{}}}"#,
        unix_secs() + 3600
    ));
    let unsigned = format!("{header}.{claims}.");
    let (status, body) = refusal(try_connect(server.address, &format!("token={unsigned}")).await);
    assert_eq!(status, 401, "{body}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn bearer_header_is_accepted() {
    let server = start(config()).await;
    let bearer = format!("Bearer {}", token("alice", &[]));
    let mut client = connect_request(server.address, "", &[("authorization", &bearer)])
        .await
        .expect("the upgrade succeeds");
    assert_eq!(next_json(&mut client).await["type"], "connected");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn foreign_origin_is_403_and_allowed_origin_connects() {
    let mut config = config();
    config.allowed_origins = Some(vec!["https://app.example".to_owned()]);
    let server = start(config).await;
    let query = format!("token={}", token("alice", &[]));
    let (status, body) = refusal(
        connect_request(
            server.address,
            &query,
            &[("origin", "https://evil.example")],
        )
        .await,
    );
    assert_eq!(status, 403);
    assert_eq!(body["error"], "origin_not_allowed");
    let mut client = connect_request(server.address, &query, &[("origin", "https://app.example")])
        .await
        .expect("the allowed origin connects");
    assert_eq!(next_json(&mut client).await["type"], "connected");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn connection_limit_is_429() {
    let mut config = config();
    config.core.max_connections = 1;
    let server = start(config).await;
    let _first = connect(server.address, "alice", "").await;
    let (status, body) =
        refusal(try_connect(server.address, &format!("token={}", token("bob", &[]))).await);
    assert_eq!(status, 429);
    assert!(body["error"].is_string(), "{body}");
    within(server.shutdown()).await.unwrap();
}

/// Keeps the server's shutdown going (up to its timeout) by not stopping.
struct StubbornSource;

impl Source for StubbornSource {
    fn name(&self) -> &'static str {
        "stubborn"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            ctx.health.ready();
            std::future::pending::<()>().await;
        })
    }
}

#[tokio::test]
async fn upgrade_while_draining_is_503() {
    let mut config = config();
    config.shutdown_timeout = Duration::from_secs(3);
    let server = ws_realtime::shell::start(config, vec![Box::new(StubbornSource)])
        .await
        .unwrap();
    // Accepted (proven by a first request on it) before the listener
    // closes, and used again after the drain began.
    let mut early = within(tokio::net::TcpStream::connect(server.address))
        .await
        .unwrap();
    within(early.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(br#"{"status":"alive"}"#) {
        let mut buf = [0u8; 512];
        let n = within(early.read(&mut buf)).await.unwrap();
        assert!(n > 0, "the health answer arrives");
        seen.extend_from_slice(&buf[..n]);
    }
    let readiness = server.observers.readiness.clone();
    server.trigger.trigger();
    for _ in 0..200 {
        if readiness.is_draining() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(readiness.is_draining());
    let url = format!("ws://{}/ws?token={}", server.address, token("alice", &[]));
    let result = within(tokio_tungstenite::client_async(url, early)).await;
    let (status, body) = refusal(result);
    assert_eq!(status, 503);
    assert_eq!(body["error"], "shutting_down");
    within(server.task).await.unwrap().unwrap();
}
