//! The operations endpoints and `POST /api/publish` over real HTTP.

mod server_support;

use server_support::*;

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, body) = http_request(address, "GET", path, &[], b"").await;
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn health_ready_and_healthz_answer_json() {
    let server = start(config()).await;
    assert_eq!(
        get(server.address, "/health").await,
        (200, r#"{"status":"alive"}"#.to_owned())
    );
    assert_eq!(
        get(server.address, "/ready").await,
        (200, r#"{"status":"ready"}"#.to_owned())
    );
    assert_eq!(
        get(server.address, "/healthz").await,
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    let (status, body) = get(server.address, "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("not_found"));
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn the_live_page_is_served_at_root_only_when_ui_is_on() {
    let server = start(config()).await;
    let (status, body) = get(server.address, "/").await;
    assert_eq!(status, 404, "WS_UI is off by default: {body}");
    within(server.shutdown()).await.unwrap();

    let mut with_ui = config();
    with_ui.ui = true;
    let server = start(with_ui).await;
    let (status, body) = get(server.address, "/").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("<!doctype html>"), "{}", &body[..80]);
    assert!(body.contains("ws-realtime"));
    // Under `serve` the page carries no token: it asks for one.
    assert!(
        body.contains(r#"<script id="ws-realtime-config" type="application/json">{}</script>"#)
    );
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn the_dev_page_carries_the_token_it_connects_with() {
    let mut dev = config();
    dev.ui = true;
    dev.ui_token = Some("header.payload.signature".to_owned());
    let server = start(dev).await;
    let (status, body) = get(server.address, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains(
        r#"<script id="ws-realtime-config" type="application/json">{"token":"header.payload.signature"}</script>"#
    ));
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn ready_is_503_with_reasons_while_a_source_is_not_ready() {
    let server = ws_realtime::shell::start(config(), vec![Box::new(NeverReady)])
        .await
        .unwrap();
    let (status, body) = get(server.address, "/ready").await;
    assert_eq!(status, 503);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "not_ready");
    assert_eq!(json["reasons"][0], "never: broker unreachable");
    assert_eq!(get(server.address, "/healthz").await.0, 503);
    assert_eq!(get(server.address, "/health").await.0, 200);
    within(server.shutdown()).await.unwrap();
}

struct NeverReady;

impl ws_realtime::source::Source for NeverReady {
    fn name(&self) -> &'static str {
        "never"
    }

    fn run(
        self: Box<Self>,
        mut ctx: ws_realtime::source::SourceContext,
    ) -> ws_realtime::source::SourceFuture {
        Box::pin(async move {
            ctx.health.not_ready("broker unreachable");
            ctx.shutdown.wait().await;
        })
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_and_count_a_session() {
    let server = start(config()).await;
    let mut client = connect(server.address, "alice", "").await;
    subscribe(&mut client, &["lines"], 1).await;
    post_publish(
        server.address,
        Some(API_KEY),
        r#"{"channel":"lines","data":{"p":1}}"#,
    )
    .await;
    assert_eq!(next_json(&mut client).await["type"], "message");

    let (status, text) = get(server.address, "/metrics").await;
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    let value = |name: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(value("websocket_connections_total"), 1.0);
    assert_eq!(value("websocket_connections_opened_total"), 1.0);
    assert_eq!(value("websocket_subscriptions"), 1.0);
    assert!(value("websocket_messages_received_total") >= 1.0);
    // connected + subscribed + message
    assert!(value("websocket_messages_sent_total") >= 3.0);
    assert!(value("websocket_bytes_sent_total") > 0.0);
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn publish_needs_the_api_key() {
    let server = start(config()).await;
    let body = r#"{"channel":"lines","data":1}"#;
    let (status, json) = post_publish(server.address, None, body).await;
    assert_eq!(status, 401);
    assert_eq!(json["error"], "unauthorized");
    assert_eq!(
        post_publish(server.address, Some("wrong"), body).await.0,
        401
    );
    let headers = [("authorization", format!("apikey {API_KEY}"))];
    let (status, _) = http_request(
        server.address,
        "POST",
        "/api/publish",
        &headers,
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn publish_rejects_bad_bodies_with_400_and_big_ones_with_413() {
    let mut config = config();
    config.max_publish_bytes = 1024;
    let server = start(config).await;
    let (status, json) =
        post_publish(server.address, Some(API_KEY), r#"{"channel":"lines"}"#).await;
    assert_eq!(status, 400);
    assert!(json["message"].as_str().unwrap().contains("data"), "{json}");
    assert_eq!(
        post_publish(server.address, Some(API_KEY), "{").await.0,
        400
    );
    let big = format!(r#"{{"channel":"lines","data":"{}"}}"#, "x".repeat(4096));
    let (status, json) = post_publish(server.address, Some(API_KEY), &big).await;
    assert_eq!(status, 413);
    assert_eq!(json["error"], "payload_too_large");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn publish_is_off_without_an_api_key() {
    let mut config = config();
    config.api_key = None;
    let server = start(config).await;
    assert_eq!(
        post_publish(server.address, Some(API_KEY), r#"{"channel":"a","data":1}"#)
            .await
            .0,
        404
    );
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn half_sent_request_headers_are_dropped_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = config();
    config.handshake_timeout = std::time::Duration::from_millis(200);
    let server = start(config).await;
    let mut stream = within(tokio::net::TcpStream::connect(server.address))
        .await
        .unwrap();
    within(stream.write_all(b"GET /ws HTTP/1.1\r\nHost: test\r\n"))
        .await
        .unwrap();
    // The headers never finish: the server answers (408) or just closes.
    let mut seen = Vec::new();
    loop {
        let mut buf = [0u8; 256];
        match within(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(
        seen.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    within(server.shutdown()).await.unwrap();
}
