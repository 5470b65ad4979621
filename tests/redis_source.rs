//! The Redis pub/sub source against a real `redis-server`: each test starts
//! its own server on a free loopback port (no persistence) and kills it when
//! done. Most tests read the messages where the source hands them to the
//! core, the receiver of `PublishSink::channel`; the last one goes through
//! the whole server to a WebSocket client.
//!
//! Tests that need `redis-server` are ignored by default; `.ci/redis`
//! installs it and runs them with `--ignored`.

mod redis_support;
// Its WebSocket client and HTTP helpers are not Kafka-specific.
mod kafka_support;
mod server_support;

use std::time::Duration;

use redis_support::*;
use ws_realtime::config::Settings;
use ws_realtime::metrics::SourceKindLabel;

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn redis_trade_published_to_channel_trade_aapl_arrives_on_trade_aapl() {
    let redis = RedisServer::start();
    let mut source = start_source(&[("WS_REDIS_URL", &redis.url())]);
    source.wait_until_ready().await;

    let trade = r#"{"symbol":"AAPL","price":189.5}"#;
    assert_eq!(cli_publish(redis.port, "channel:trade:AAPL", trade), 1);
    let got = source.next().await;
    assert_eq!(got.channel, "trade:AAPL");
    assert_eq!(got.pos, None);
    assert_eq!(&got.payload[..], trade.as_bytes());

    // Another symbol through the client crate: same pattern, own channel.
    assert_eq!(
        publish(&redis.url(), "channel:trade:MSFT", b"{\"price\":1}").await,
        1
    );
    let got = source.next().await;
    assert_eq!(got.channel, "trade:MSFT");
    assert_eq!(&got.payload[..], b"{\"price\":1}");

    source.stop().await;
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn redis_plain_names_subscribe_exactly_and_globs_psubscribe() {
    let redis = RedisServer::start();
    let mut source = start_source(&[
        ("WS_REDIS_URL", &redis.url()),
        ("WS_REDIS_PATTERNS", "alerts,channel:book:*,channel:lines"),
    ]);
    source.wait_until_ready().await;

    // A plain name is an exact SUBSCRIBE: a longer name does not match it,
    // and Redis delivers it to nobody.
    assert_eq!(publish(&redis.url(), "alerts:extra", b"\"no\"").await, 0);
    // Not subscribed at all: the default trade pattern was replaced.
    assert_eq!(
        publish(&redis.url(), "channel:trade:AAPL", b"\"no\"").await,
        0
    );

    assert_eq!(publish(&redis.url(), "alerts", b"\"a\"").await, 1);
    assert_eq!(
        publish(&redis.url(), "channel:book:AAPL", b"\"b\"").await,
        1
    );
    assert_eq!(publish(&redis.url(), "channel:lines", b"\"c\"").await, 1);

    // One connection delivers in publish order, so the unmatched messages
    // would have come first had they been forwarded.
    let got: Vec<(String, Vec<u8>)> = [
        source.next().await,
        source.next().await,
        source.next().await,
    ]
    .into_iter()
    .map(|p| (p.channel, p.payload.to_vec()))
    .collect();
    assert_eq!(
        got,
        vec![
            // Without the prefix the Redis name is the gateway channel.
            ("alerts".to_owned(), b"\"a\"".to_vec()),
            ("book:AAPL".to_owned(), b"\"b\"".to_vec()),
            ("lines".to_owned(), b"\"c\"".to_vec()),
        ]
    );
    source.stop().await;
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn redis_restart_mid_stream_resumes_flow_and_counts_one_gap() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut source = start_source(&[("WS_REDIS_URL", &url)]);
    source.wait_until_ready().await;
    assert_eq!(publish(&url, "channel:trade:AAPL", b"{\"n\":1}").await, 1);
    assert_eq!(&source.next().await.payload[..], b"{\"n\":1}");
    assert_eq!(source.gaps(), 0, "connecting at startup is not a gap");

    let port = redis.kill();
    source
        .wait_for_readiness("not ready while Redis is down", |s| {
            s.as_ref()
                .err()
                .is_some_and(|reasons| reasons.iter().any(|r| r.starts_with("redis: ")))
        })
        .await;

    let restarted = RedisServer::start_on(port, &[]);
    source.wait_until_ready().await;
    assert_eq!(publish(&url, "channel:trade:AAPL", b"{\"n\":2}").await, 1);
    let got = source.next().await;
    assert_eq!(got.channel, "trade:AAPL");
    assert_eq!(&got.payload[..], b"{\"n\":2}");
    assert_eq!(source.gaps(), 1, "the outage is counted once");
    assert!(
        source
            .metrics
            .encode()
            .contains("websocket_source_gaps_total{reason=\"redis\"} 1"),
        "{}",
        source.metrics.encode()
    );
    source.stop().await;
    drop(restarted);
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn redis_non_json_payloads_are_forwarded_byte_for_byte() {
    let redis = RedisServer::start();
    let mut source = start_source(&[("WS_REDIS_URL", &redis.url())]);
    source.wait_until_ready().await;

    let payloads: [&[u8]; 4] = [
        b"AAPL 189.50 buy",
        &[0x00, 0x9f, 0x92, 0x96, 0xff],
        b"",
        "caf\u{e9} \u{1f4c8}".as_bytes(),
    ];
    for payload in payloads {
        assert_eq!(publish(&redis.url(), "channel:trade:X", payload).await, 1);
    }
    for payload in payloads {
        let got = source.next().await;
        assert_eq!(got.channel, "trade:X");
        assert_eq!(&got.payload[..], payload);
    }
    source.stop().await;
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn redis_password_and_database_in_the_url_are_used() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let port = redis.port;

    let wrong = start_source(&[("WS_REDIS_URL", &format!("redis://:nope@127.0.0.1:{port}/2"))]);
    wrong
        .wait_for_readiness("not ready with a wrong password", |s| {
            s.as_ref().err().is_some_and(|reasons| {
                reasons
                    .iter()
                    .any(|r| r.starts_with("redis: cannot connect") && !r.contains("nope"))
            })
        })
        .await;
    wrong.stop().await;

    let url = format!("redis://:s3cret@127.0.0.1:{port}/2");
    let mut source = start_source(&[("WS_REDIS_URL", &url)]);
    source.wait_until_ready().await;
    assert_eq!(publish(&url, "channel:trade:IBM", b"{}").await, 1);
    assert_eq!(source.next().await.channel, "trade:IBM");
    source.stop().await;
    drop(redis);
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn redis_channel_that_is_only_the_prefix_is_dropped_and_counted() {
    let redis = RedisServer::start();
    let mut source = start_source(&[
        ("WS_REDIS_URL", &redis.url()),
        ("WS_REDIS_PATTERNS", "channel:*"),
    ]);
    source.wait_until_ready().await;
    // Stripping the prefix would leave an empty channel name.
    assert_eq!(publish(&redis.url(), "channel:", b"{}").await, 1);
    assert_eq!(publish(&redis.url(), "channel:lines", b"{}").await, 1);
    assert_eq!(source.next().await.channel, "lines");
    let unroutable = source
        .metrics
        .source_messages
        .get_or_create(&SourceKindLabel {
            source: "redis".to_owned(),
            kind: "unroutable".to_owned(),
        })
        .get();
    assert_eq!(unroutable, 1);
    source.stop().await;
}

/// Needs no server: nothing listens on the port, which is the point.
#[tokio::test]
async fn unreachable_redis_is_not_ready_with_the_reason_and_is_not_a_gap() {
    let port = free_port();
    let source = start_source(&[("WS_REDIS_URL", &format!("redis://127.0.0.1:{port}"))]);
    source
        .wait_for_readiness("not ready naming the unreachable server", |s| {
            s.as_ref().err().is_some_and(|reasons| {
                reasons.iter().any(|r| {
                    r.starts_with(&format!(
                        "redis: cannot connect to redis://127.0.0.1:{port}"
                    ))
                })
            })
        })
        .await;
    assert_eq!(
        source.gaps(),
        0,
        "never having connected loses no subscription"
    );
    source.stop().await;
}

/// The old Node gateway's setup, end to end: a client written for it
/// subscribes by symbol and receives a trade a worker published to Redis.
#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn redis_trade_reaches_a_websocket_client_subscribed_by_symbol() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use ws_realtime::auth::{TokenSpec, mint};
    use ws_realtime::config::ServerConfig;
    use ws_realtime::source::build_sources;

    const SECRET: &str = "an-end-to-end-secret-of-32-bytes!";
    let redis = RedisServer::start();
    let settings = Settings::from_pairs([
        ("WS_BIND_ADDRESS", "127.0.0.1:0"),
        ("WS_AUTH_SECRET", SECRET),
        ("WS_SOURCES", "redis"),
        ("WS_REDIS_URL", redis.url().as_str()),
        ("WS_MAX_CHANNELS_PER_CONNECTION", "5"),
    ]);
    let config = ServerConfig::from_settings(&settings).expect("valid server settings");
    let sources = build_sources(&config, &settings).expect("the redis source builds");
    let server = ws_realtime::shell::start(config, sources)
        .await
        .expect("server starts");
    // Readiness is empty (so Ok) until the server task registers its
    // sources; ask Redis itself whether the pattern subscription is there.
    for _ in 0..(PATIENCE.as_millis() / STEP.as_millis()) {
        if redis.pattern_subscriptions() == 1 {
            break;
        }
        tokio::time::sleep(STEP).await;
    }
    assert_eq!(
        redis.pattern_subscriptions(),
        1,
        "the gateway holds PSUBSCRIBE"
    );
    assert_eq!(
        server.observers.readiness.status(),
        Ok(()),
        "ready once subscribed to Redis"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let token = mint(
        SECRET.as_bytes(),
        &TokenSpec {
            sub: "trader".to_owned(),
            ttl: Duration::from_secs(600),
            roles: Vec::new(),
            channels: None,
            audience: None,
            issuer: None,
        },
        now,
    );
    let url = format!("ws://{}/ws?token={token}", server.address);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("websocket upgrade");

    // Reads the next JSON text frame, skipping WebSocket control frames.
    async fn next_json(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> serde_json::Value {
        for _ in 0..100 {
            let frame = tokio::time::timeout(PATIENCE, ws.next())
                .await
                .expect("a frame within the patience window")
                .expect("the connection stays open")
                .expect("a valid frame");
            if let Message::Text(text) = frame {
                return serde_json::from_str(text.as_str()).expect("server frames are JSON");
            }
        }
        panic!("no text frame among 100 frames");
    }

    assert_eq!(next_json(&mut ws).await["type"], "connected");
    ws.send(Message::Text(
        r#"{"action":"subscribe","symbols":["aapl"]}"#.into(),
    ))
    .await
    .expect("send subscribe");
    let subscribed = next_json(&mut ws).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["channels"], serde_json::json!(["trade:AAPL"]));

    assert_eq!(
        cli_publish(
            redis.port,
            "channel:trade:AAPL",
            r#"{"symbol":"AAPL","price":189.5}"#
        ),
        1
    );
    let message = next_json(&mut ws).await;
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["channel"], "trade:AAPL");
    assert_eq!(
        message["data"],
        serde_json::json!({"symbol":"AAPL","price":189.5})
    );
    assert!(message["pos"].is_string(), "{message}");

    // Non-JSON payloads: text becomes a JSON string, other bytes base64.
    assert_eq!(cli_publish(redis.port, "channel:trade:AAPL", "halted"), 1);
    let text = next_json(&mut ws).await;
    assert_eq!(text["data"], "halted", "{text}");
    assert_ne!(
        text["pos"], message["pos"],
        "each message gets its own sequence"
    );
    assert_eq!(
        publish(&redis.url(), "channel:trade:AAPL", &[0xff, 0x00, 0x01]).await,
        1
    );
    let binary = next_json(&mut ws).await;
    assert_eq!(binary["b64data"], "/wAB", "{binary}");

    // The old free tier: five symbols per connection, all or nothing.
    ws.send(Message::Text(
        r#"{"action":"subscribe","symbols":["msft","ibm","tsla","nvda","amzn"],"id":7}"#.into(),
    ))
    .await
    .expect("send subscribe");
    let refused = next_json(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "channel_limit", "{refused}");

    // Redis restarts: the client stays connected and served, `/ready` says
    // why the server is not ready, and trades flow again afterwards.
    let port = redis.kill();
    for _ in 0..(PATIENCE.as_millis() / STEP.as_millis()) {
        if server.observers.readiness.status().is_err() {
            break;
        }
        tokio::time::sleep(STEP).await;
    }
    let reasons = server
        .observers
        .readiness
        .status()
        .expect_err("not ready without Redis");
    assert!(
        reasons.iter().any(|r| r.starts_with("redis: ")),
        "{reasons:?}"
    );
    ws.send(Message::Text(r#"{"type":"ping","id":9}"#.into()))
        .await
        .expect("send ping");
    let pong = next_json(&mut ws).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], 9, "{pong}");

    let redis = RedisServer::start_on(port, &[]);
    for _ in 0..(PATIENCE.as_millis() / STEP.as_millis()) {
        if redis.pattern_subscriptions() == 1 {
            break;
        }
        tokio::time::sleep(STEP).await;
    }
    assert_eq!(
        cli_publish(redis.port, "channel:trade:AAPL", r#"{"price":190}"#),
        1
    );
    let after = next_json(&mut ws).await;
    assert_eq!(after["channel"], "trade:AAPL", "{after}");
    assert_eq!(after["data"], serde_json::json!({"price":190}));
    assert!(
        server
            .observers
            .metrics
            .encode()
            .contains("websocket_source_gaps_total{reason=\"redis\"} 1"),
        "the outage is counted once"
    );

    let _ = ws.close(None).await;
    server.shutdown().await.expect("clean shutdown");
}

/// `WS_PUBLISH_VIA=redis`: a publish to one server is `PUBLISH`ed to Redis
/// and reaches the clients of both servers, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn redis_publish_via_redis_reaches_the_clients_of_every_server() {
    use ws_realtime::config::ServerConfig;
    use ws_realtime::source::build_sources;

    let redis = RedisServer::start();
    let secret = String::from_utf8(kafka_support::SECRET.to_vec()).unwrap();
    let url = redis.url();
    let settings = Settings::from_pairs([
        ("WS_BIND_ADDRESS", "127.0.0.1:0"),
        ("WS_AUTH_SECRET", secret.as_str()),
        ("WS_SOURCES", "redis"),
        ("WS_API_KEY", kafka_support::API_KEY),
        ("WS_PUBLISH_VIA", "redis"),
        ("WS_REDIS_URL", url.as_str()),
        ("WS_REDIS_PATTERNS", "channel:*"),
    ]);
    let mut servers = Vec::new();
    for _ in 0..2 {
        let config = ServerConfig::from_settings(&settings).expect("valid server settings");
        let sources = build_sources(&config, &settings).expect("the redis source builds");
        servers.push(
            ws_realtime::shell::start(config, sources)
                .await
                .expect("server starts"),
        );
    }
    // PUBLISH answers how many subscribers got it: both servers, once both
    // hold their PSUBSCRIBE (nobody subscribes to the probe channel).
    let mut receivers = 0;
    for _ in 0..(PATIENCE.as_millis() / STEP.as_millis()) {
        receivers = cli_publish(redis.port, "channel:probe", "{}");
        if receivers == 2 {
            break;
        }
        tokio::time::sleep(STEP).await;
    }
    assert_eq!(receivers, 2, "both servers hold PSUBSCRIBE");
    let mut on_a = kafka_support::connect(servers[0].address, "channels=prices").await;
    let mut on_b = kafka_support::connect(servers[1].address, "channels=prices").await;

    for n in 0..10 {
        let (status, answer) = kafka_support::post_json(
            servers[0].address,
            "/api/publish",
            &format!(r#"{{"channel":"prices","data":{{"n":{n}}}}}"#),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["channels"], serde_json::json!(["prices"]));
    }
    let (status, answer) = kafka_support::post_json(
        servers[0].address,
        "/api/publish/batch",
        r#"[{"channel":"prices","data":{"n":10}},{"channel":"prices","data":{"n":11}}]"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    for client in [&mut on_b, &mut on_a] {
        for n in 0..12 {
            let frame = kafka_support::next_message(client).await;
            assert_eq!(frame["channel"], "prices");
            assert_eq!(frame["data"]["n"], n, "in publish order");
        }
    }

    // Redis gone: the publish is 503 within the timeout, never 200.
    drop(redis);
    let (status, answer) = kafka_support::post_json(
        servers[0].address,
        "/api/publish",
        r#"{"channel":"prices","data":{"n":12}}"#,
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "publish_unavailable");
    for server in servers {
        server.shutdown().await.unwrap();
    }
}
