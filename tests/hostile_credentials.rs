//! Credentials fail closed when they are ambiguous: a request carrying more
//! than one token (two `?token=`, or a Bearer header and a `?token=`) is 401
//! `ambiguous_credentials`, and one with two `Origin` headers is 403
//! `ambiguous_origin`, whichever of them is valid. Raw requests, since
//! client libraries will not send duplicate headers.

mod server_support;

use server_support::*;

/// The status line and the JSON body of a raw upgrade attempt.
async fn attempt(
    address: std::net::SocketAddr,
    query: &str,
    extra: &str,
) -> (String, serde_json::Value) {
    let answer = raw_exchange(
        address,
        raw_upgrade_head(address, query, extra).into_bytes(),
    )
    .await;
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn forged() -> String {
    let spec = ws_realtime::auth::TokenSpec {
        sub: "mallory".into(),
        ttl: std::time::Duration::from_secs(3600),
        roles: vec!["admin".into()],
        channels: None,
        audience: None,
        issuer: None,
    };
    ws_realtime::auth::mint(b"not-the-server-secret-not-the-server", &spec, unix_secs())
}

#[tokio::test]
async fn a_forged_query_token_followed_by_a_valid_one_is_refused() {
    let server = start(config()).await;
    let query = format!("token={}&token={}", forged(), token("alice", &[]));
    let (status, body) = attempt(server.address, &query, "").await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    assert_eq!(body["error"], "ambiguous_credentials", "{body}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_valid_bearer_header_with_a_forged_query_token_is_refused() {
    let server = start(config()).await;
    let header = format!("Authorization: Bearer {}\r\n", token("alice", &[]));
    let query = format!("token={}", forged());
    let (status, body) = attempt(server.address, &query, &header).await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    assert_eq!(body["error"], "ambiguous_credentials", "{body}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let server = start(config()).await;
    let header = format!(
        "Authorization: Bearer {}\r\nAuthorization: Bearer {}\r\n",
        token("alice", &[]),
        forged()
    );
    let (status, body) = attempt(server.address, "channels=lines", &header).await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    assert_eq!(body["error"], "ambiguous_credentials", "{body}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn two_origin_headers_are_403_even_if_the_first_is_allowed() {
    let mut config = config();
    config.allowed_origins = Some(vec!["https://app.example".to_owned()]);
    let server = start(config).await;
    let query = format!("token={}", token("alice", &[]));
    let origins = "Origin: https://app.example\r\nOrigin: https://evil.example\r\n";
    let (status, body) = attempt(server.address, &query, origins).await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    assert_eq!(body["error"], "ambiguous_origin", "{body}");
    // One allowed origin still connects.
    let (status, _) = attempt(server.address, &query, "Origin: https://app.example\r\n").await;
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    within(server.shutdown()).await.unwrap();
}
