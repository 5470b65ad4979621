//! Observability over real sockets: every documented metric under its name
//! and type after a scripted session, publish→send latency measured at the
//! socket write, readiness during the drain, and connection log lines.

mod kafka_support;
mod server_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prometheus_parse::{Scrape, Value};
use server_support::*;
use tokio_tungstenite::tungstenite::Message;
use ws_realtime::core::Publish;
use ws_realtime::source::{Source, SourceContext, SourceFuture};

/// Prometheus' own `Accept` header.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

/// `/metrics`, parsed, plus the `# TYPE` of every family.
struct Exposition {
    scrape: Scrape,
    types: HashMap<String, String>,
}

impl Exposition {
    async fn fetch(address: SocketAddr, accept: Option<&str>) -> (Exposition, String) {
        let mut http = HttpConnection::open(address).await;
        let answer = http.get("/metrics", accept).await;
        assert_eq!(answer.status, 200);
        let body = answer.text();
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .expect("/metrics is valid Prometheus text");
        let types = body
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect();
        (Exposition { scrape, types }, answer.content_type)
    }

    /// Asserts `family` is declared with `kind`.
    fn assert_type(&self, family: &str, kind: &str) {
        assert_eq!(
            self.types.get(family).map(String::as_str),
            Some(kind),
            "# TYPE of {family}"
        );
        assert!(
            self.scrape.docs.contains_key(family),
            "{family} has a # HELP line"
        );
    }

    /// The sum over the samples named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => panic!("{name} is not a single value"),
            })
            .sum()
    }

    /// A gauge sample's value; fails if the parser did not see a gauge.
    fn gauge(&self, name: &str) -> f64 {
        let sample = self
            .scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} has a sample"));
        match sample.value {
            Value::Gauge(v) => v,
            ref other => panic!("{name} parsed as {other:?}, not a gauge"),
        }
    }

    /// A histogram's observation count (its `+Inf` bucket).
    fn histogram_count(&self, name: &str) -> f64 {
        let sample = self
            .scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} has a sample"));
        match &sample.value {
            Value::Histogram(buckets) => {
                buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .expect("a +Inf bucket")
                    .count
            }
            other => panic!("{name} parsed as {other:?}, not a histogram"),
        }
    }
}

/// Polls `done` every 20 ms for at most [`STEP`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..(STEP.as_millis() / 20) {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A client socket with a tiny receive buffer, so the server's writes to it
/// block once it stops reading.
async fn tiny_buffer_client(address: SocketAddr, sub: &str, channels: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within(socket.connect(address)).await.unwrap();
    let url = format!(
        "ws://{address}/ws?token={}&channels={channels}",
        token(sub, &[])
    );
    let (mut client, _) = within(tokio_tungstenite::client_async(
        url,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "connected");
    assert_eq!(next_json(&mut client).await["type"], "subscribed");
    client
}

fn bulk_message(channel: &str, bytes: usize) -> Publish {
    Publish {
        channel: channel.to_owned(),
        pos: None,
        payload: Bytes::from(format!(r#"{{"filler":"{}"}}"#, "x".repeat(bytes))),
        key: None,
    }
}

/// Sends a ping frame per call until the server answers `rate_limited` (or
/// closes); returns whether it did.
async fn flood_until_limited(client: &mut Client) -> bool {
    for _ in 0..50 {
        within(client.send(Message::text(r#"{"type":"ping"}"#)))
            .await
            .expect("the frame is sent");
    }
    for _ in 0..100 {
        match next_seen(client).await {
            Seen::Json(json) if json["code"] == "rate_limited" => return true,
            Seen::Json(_) => continue,
            Seen::Close(..) | Seen::Ended => return true,
        }
    }
    false
}

#[tokio::test]
async fn a_scripted_session_moves_every_documented_metric() {
    let mut config = config();
    // Room for the flood's answers; a non-reader of 32 KiB messages still
    // overflows the byte bound.
    config.core.client_buffer_frames = 128;
    config.core.client_buffer_bytes = 512 * 1024;
    config.core.rate_limit_per_second = 2;
    config.core.rate_limit_burst = 5;
    config.core.heartbeat_interval = Duration::from_millis(250);
    config.core.connection_timeout = Duration::from_secs(4);
    let (server, sink) = start_with_sink(config).await;
    let address = server.address;
    let metrics = server.observers.metrics.clone();

    // Never reads again, so never answers a ping: a heartbeat failure.
    let silent = connect(address, "silent", "").await;

    let mut alice = connect(address, "alice", "&channels=lines").await;
    assert_eq!(next_json(&mut alice).await["type"], "subscribed");
    let mut bob = connect(address, "bob", "").await;
    subscribe(&mut bob, &["lines", "other"], 1).await;
    for p in 0..3 {
        let body = format!(r#"{{"channel":"lines","data":{{"p":{p}}}}}"#);
        let (status, _) = post_publish(address, Some(API_KEY), &body).await;
        assert_eq!(status, 200);
        assert_eq!(next_json(&mut alice).await["type"], "message");
        assert_eq!(next_json(&mut bob).await["type"], "message");
    }

    // Every client but `silent` and `slow` answers pings: the heartbeat
    // timeout is short. bob leaves now; alice stays, read in the background.
    within(bob.close(None)).await.unwrap();
    assert!(matches!(
        next_seen(&mut bob).await,
        Seen::Close(..) | Seen::Ended
    ));
    let alice = tokio::spawn(async move { while let Some(Ok(_)) = alice.next().await {} });

    let mut flood = connect(address, "flood", "").await;
    assert!(
        flood_until_limited(&mut flood).await,
        "the flood was limited"
    );
    within(flood.close(None)).await.unwrap();

    // A subscriber that stops reading overflows its queue: closed as slow.
    assert_eq!(metrics.slow_consumer_disconnects.get(), 0);
    let slow = tiny_buffer_client(address, "slow", "bulk").await;
    for _ in 0..2000 {
        if metrics.slow_consumer_disconnects.get() > 0 {
            break;
        }
        within(sink.publish_and_wait(bulk_message("bulk", 32 * 1024)))
            .await
            .unwrap();
    }
    assert_eq!(metrics.slow_consumer_disconnects.get(), 1);

    eventually("the heartbeat failure", || {
        metrics.heartbeat_failures.get() > 0
    })
    .await;
    // Every close has reached the core: alice is the one connection left.
    eventually("every close but alice's", || metrics.connections.get() == 1).await;

    let (metrics_text, content_type) = Exposition::fetch(address, Some(PROMETHEUS_ACCEPT)).await;
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let m = metrics_text;
    for counter in [
        "websocket_connections_opened",
        "websocket_connections_closed",
        "websocket_messages_sent",
        "websocket_messages_received",
        "websocket_bytes_sent",
        "websocket_heartbeat_failures",
        "websocket_slow_consumer_disconnects",
        "websocket_messages_dropped",
        "websocket_rate_limited",
        "websocket_history_evictions",
    ] {
        m.assert_type(counter, "counter");
    }
    for gauge in [
        "websocket_connections_total",
        "websocket_subscriptions",
        "websocket_channels",
        "websocket_history_messages",
        "websocket_history_snapshot_keys",
        "websocket_history_bytes",
        "websocket_build_info",
    ] {
        m.assert_type(gauge, "gauge");
    }
    for histogram in [
        "websocket_connection_duration_seconds",
        "websocket_publish_to_send_seconds",
    ] {
        m.assert_type(histogram, "histogram");
    }

    let opened = m.value("websocket_connections_opened_total", &[]);
    let closed = m.value("websocket_connections_closed_total", &[]);
    assert_eq!(opened, 5.0);
    assert_eq!(m.gauge("websocket_connections_total"), 1.0);
    assert_eq!(opened - closed, 1.0, "open = opened - closed");
    let closed_for = |reason| m.value("websocket_connections_closed_total", &[("reason", reason)]);
    assert_eq!(closed_for("slow_consumer"), 1.0);
    assert_eq!(closed_for("heartbeat_timeout"), 1.0);
    assert!(closed_for("client_closed") >= 1.0, "bob said goodbye");
    assert_eq!(
        m.histogram_count("websocket_connection_duration_seconds"),
        closed
    );

    assert_eq!(m.value("websocket_heartbeat_failures_total", &[]), 1.0);
    assert_eq!(
        m.value("websocket_slow_consumer_disconnects_total", &[]),
        1.0
    );
    assert!(
        m.value(
            "websocket_messages_dropped_total",
            &[("reason", "slow_consumer_closed")]
        ) >= 1.0
    );
    assert!(m.value("websocket_rate_limited_total", &[]) >= 1.0);

    // Subscribe frames, pings, the flood, close frames.
    assert!(m.value("websocket_messages_received_total", &[]) >= 52.0);
    // 5 connected, 2 subscribed, 6 messages, at least one bulk message.
    let sent = m.value("websocket_messages_sent_total", &[]);
    assert!(sent >= 14.0, "{sent}");
    assert!(m.value("websocket_bytes_sent_total", &[]) > 32.0 * 1024.0);

    // alice on `lines` is all that is left.
    assert_eq!(m.gauge("websocket_subscriptions"), 1.0);
    assert_eq!(m.gauge("websocket_channels"), 1.0);
    // The published messages are kept for recovery (history is on by default).
    assert!(m.gauge("websocket_history_messages") >= 3.0);
    assert!(m.gauge("websocket_history_bytes") > 0.0);
    // Three messages to two subscribers at least, each transmit observed once.
    assert!(m.histogram_count("websocket_publish_to_send_seconds") >= 3.0);
    assert_eq!(
        m.value(
            "websocket_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    alice.abort();
    drop((silent, slow));
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn metrics_are_classic_text_for_a_scraper_that_does_not_ask_for_openmetrics() {
    let server = start(config()).await;
    let (exposition, content_type) = Exposition::fetch(server.address, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    exposition.assert_type("websocket_connections_total", "gauge");
    assert_eq!(exposition.gauge("websocket_connections_total"), 0.0);
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn publish_to_send_latency_includes_a_blocked_socket_write() {
    let mut config = config();
    config.core.client_buffer_bytes = 64 * 1024 * 1024;
    let (server, sink) = start_with_sink(config).await;
    let mut client = tiny_buffer_client(server.address, "reader", "big").await;

    // Far more than the socket buffers hold: the write completes only once
    // the client reads, which it does not do for a while.
    let message_bytes = 12 * 1024 * 1024;
    within(sink.publish_and_wait(bulk_message("big", message_bytes)))
        .await
        .unwrap();
    let held = Duration::from_millis(600);
    tokio::time::sleep(held).await;
    let message = next_json(&mut client).await;
    assert_eq!(message["type"], "message");
    let metrics = server.observers.metrics.clone();
    eventually("the write's completion", || {
        metrics.messages_sent.get() >= 3
    })
    .await;

    let (m, _) = Exposition::fetch(server.address, None).await;
    assert_eq!(m.histogram_count("websocket_publish_to_send_seconds"), 1.0);
    let seconds = m.value("websocket_publish_to_send_seconds_sum", &[]);
    assert!(
        seconds >= held.as_secs_f64(),
        "the latency covers the time the write was blocked: {seconds}"
    );
    within(server.shutdown()).await.unwrap();
}

/// A source that is ready and ignores the shutdown, so the drain (and the
/// server's wait for its sources) lasts the whole shutdown timeout.
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
async fn ready_and_healthz_turn_503_naming_the_drain() {
    let mut config = config();
    config.shutdown_timeout = Duration::from_secs(2);
    let server = ws_realtime::shell::start(config, vec![Box::new(StubbornSource)])
        .await
        .unwrap();
    // Opened before the listener closes and used again during the drain.
    let mut http = HttpConnection::open(server.address).await;
    let ready = http.get("/ready", None).await;
    assert_eq!(
        (ready.status, ready.text().as_str()),
        (200, r#"{"status":"ready"}"#)
    );

    let readiness = server.observers.readiness.clone();
    server.trigger.trigger();
    eventually("the drain", || readiness.is_draining()).await;

    let ready = http.get("/ready", None).await;
    assert_eq!(ready.status, 503);
    let json: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(json["status"], "not_ready");
    assert_eq!(json["reasons"], serde_json::json!(["draining"]));
    let healthz = http.get("/healthz", None).await;
    assert_eq!(healthz.status, 503);
    let healthz_body = healthz.text();
    assert!(healthz_body.contains("draining"), "{healthz_body}");
    let health = http.get("/health", None).await;
    assert_eq!(health.status, 200, "alive while draining");
    within(server.task).await.unwrap().unwrap();
}

/// Collects what a `tracing` JSON subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .expect("logs are UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn rate_limit_hits_log_once_then_a_count_and_name_the_connection() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: the server's tasks log on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut config = config();
    config.core.rate_limit_per_second = 1;
    config.core.rate_limit_burst = 2;
    let server = start(config).await;
    let metrics = server.observers.metrics.clone();
    let mut client = connect(server.address, "flood", "&channels=lines").await;
    assert_eq!(next_json(&mut client).await["type"], "subscribed");
    assert!(flood_until_limited(&mut client).await);
    within(client.close(None)).await.ok();
    eventually("the close", || metrics.connections.get() == 0).await;
    let hits = metrics.rate_limited.get();
    assert!(hits >= 3, "the flood hit the limit again and again: {hits}");

    let lines = captured.lines();
    let opened = lines
        .iter()
        .find(|l| l["message"] == "connection opened")
        .expect("an open line");
    let connection_id = opened["connection_id"].as_str().unwrap().to_owned();
    assert!(!connection_id.is_empty());
    assert_eq!(opened["user"], "flood");

    let about_limit: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("inbound rate limit")
        })
        .collect();
    assert_eq!(about_limit[0]["message"], "inbound rate limit hit");
    assert_eq!(about_limit[0]["level"], "WARN");
    // The rest are summarised (at the close, well inside one interval).
    assert_eq!(about_limit.len(), 2, "{about_limit:?}");
    assert_eq!(about_limit[1]["count"].as_u64(), Some(hits - 1));
    for line in about_limit {
        assert_eq!(line["connection_id"], connection_id.as_str());
        assert_eq!(line["user"], "flood");
    }
    for message in ["subscribed", "connection closed"] {
        let line = lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("a {message} line"));
        assert_eq!(line["connection_id"], connection_id.as_str(), "{line}");
        assert_eq!(line["user"], "flood", "{line}");
    }
    let subscribed = lines.iter().find(|l| l["message"] == "subscribed").unwrap();
    assert_eq!(subscribed["level"], "DEBUG");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_messages_and_lag_are_exposed_per_topic_and_partition() {
    let kafka = ws_realtime::source::embedded::EmbeddedKafka::start(&[("lines", 2)]).unwrap();
    let server = kafka_support::start_server(
        kafka.bootstrap_servers(),
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    )
    .await;
    let mut client = kafka_support::connect(server.address, "channels=lines").await;
    let (partition, _) = kafka
        .produce("lines", Some(b"AAPL"), br#"{"bid":1}"#)
        .await
        .unwrap();
    assert_eq!(
        kafka_support::next_message(&mut client).await["channel"],
        "lines"
    );
    let metrics = server.observers.metrics.clone();
    eventually("a lag figure", || {
        metrics.encode().contains("websocket_kafka_consumer_lag{")
    })
    .await;

    let (m, _) = Exposition::fetch(server.address, Some(PROMETHEUS_ACCEPT)).await;
    m.assert_type("websocket_kafka_messages_processed", "counter");
    m.assert_type("websocket_kafka_consumer_lag", "gauge");
    assert_eq!(
        m.value(
            "websocket_kafka_messages_processed_total",
            &[("topic", "lines")]
        ),
        1.0
    );
    let lag = m
        .scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "websocket_kafka_consumer_lag"
                && s.labels.get("topic") == Some("lines")
                && s.labels.get("partition") == Some(partition.to_string().as_str())
        })
        .expect("a lag series for the produced partition");
    assert!(matches!(lag.value, Value::Gauge(v) if v >= 0.0), "{lag:?}");
    server.shutdown().await.unwrap();
}
