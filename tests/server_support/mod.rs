//! Shared helpers of the `server_*` integration tests: a server on
//! 127.0.0.1:0, tokens, a tokio-tungstenite client with a timeout on every
//! await, and a source the test can publish through directly.
#![allow(dead_code)]

pub mod http;
#[allow(unused_imports)]
pub use http::{HttpConnection, http_request};

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ws_realtime::auth::{TokenSpec, mint};
use ws_realtime::config::ServerConfig;
use ws_realtime::shell::ServerHandle;
use ws_realtime::source::{PublishSink, Source, SourceContext, SourceFuture};

/// The secret every test server uses.
pub const SECRET: &[u8] = b"integration-test-secret-0123456789abcdef";
/// The API key every test server uses.
pub const API_KEY: &str = "test-api-key";
/// Upper bound on any single wait in a test.
pub const STEP: Duration = Duration::from_secs(10);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test configuration: loopback, port 0, the test secret and API key.
pub fn config() -> ServerConfig {
    let mut config = ServerConfig::for_testing(SECRET);
    config.api_key = Some(API_KEY.to_owned());
    config
}

/// Starts a server.
pub async fn start(config: ServerConfig) -> ServerHandle {
    ws_realtime::shell::start(config, Vec::new())
        .await
        .expect("a loopback server starts")
}

/// Starts a server with a source whose sink the test gets back.
pub async fn start_with_sink(config: ServerConfig) -> (ServerHandle, PublishSink) {
    let (tx, rx) = oneshot::channel();
    let server = ws_realtime::shell::start(config, vec![Box::new(HandOverSource(Some(tx)))])
        .await
        .expect("a loopback server starts");
    let sink = within(rx).await.expect("the source starts");
    (server, sink)
}

/// A source that hands its sink to the test and waits for shutdown.
struct HandOverSource(Option<oneshot::Sender<PublishSink>>);

impl Source for HandOverSource {
    fn name(&self) -> &'static str {
        "test"
    }

    fn run(mut self: Box<Self>, mut ctx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            ctx.health.ready();
            if let Some(tx) = self.0.take() {
                let _ = tx.send(ctx.sink.clone());
            }
            ctx.shutdown.wait().await;
        })
    }
}

pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A valid token for `sub` with `roles`.
pub fn token(sub: &str, roles: &[&str]) -> String {
    let spec = TokenSpec {
        sub: sub.to_owned(),
        ttl: Duration::from_secs(3600),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        channels: None,
        audience: None,
        issuer: None,
    };
    mint(SECRET, &spec, unix_secs())
}

/// Awaits `future`, failing the test after [`STEP`].
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("the step finished in time")
}

/// Connects to `/ws` with `query` (e.g. `token=…&channels=a`).
pub async fn try_connect(address: SocketAddr, query: &str) -> Result<Client, tungstenite::Error> {
    let url = format!("ws://{address}/ws?{query}");
    within(tokio_tungstenite::connect_async(url))
        .await
        .map(|(ws, _)| ws)
}

/// Connects as `sub` and returns the client after its `connected` frame.
pub async fn connect(address: SocketAddr, sub: &str, extra_query: &str) -> Client {
    let query = format!("token={}{extra_query}", token(sub, &[]));
    let mut client = try_connect(address, &query)
        .await
        .expect("the upgrade succeeds");
    let connected = next_json(&mut client).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    client
}

/// Connects with a custom request (headers).
pub async fn connect_request(
    address: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Client, tungstenite::Error> {
    let mut request = format!("ws://{address}/ws?{query}")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    within(tokio_tungstenite::connect_async(request))
        .await
        .map(|(ws, _)| ws)
}

/// The status and JSON body of a refused upgrade.
pub fn refusal<T>(result: Result<T, tungstenite::Error>) -> (u16, serde_json::Value) {
    match result {
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "refusal body is JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            });
            (response.status().as_u16(), json)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}

/// What a client saw next, ignoring control frames.
#[derive(Debug)]
pub enum Seen {
    Json(serde_json::Value),
    Close(Option<u16>, String),
    Ended,
}

/// The next text frame (as JSON), close frame, or end of stream.
pub async fn next_seen(client: &mut Client) -> Seen {
    loop {
        match within(client.next()).await {
            None => return Seen::Ended,
            Some(Err(_)) => return Seen::Ended,
            Some(Ok(Message::Text(text))) => {
                return Seen::Json(serde_json::from_str(&text).expect("server frames are JSON"));
            }
            Some(Ok(Message::Close(frame))) => {
                return Seen::Close(
                    frame.as_ref().map(|f: &CloseFrame| u16::from(f.code)),
                    frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                );
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// The next text frame as JSON; fails on close.
pub async fn next_json(client: &mut Client) -> serde_json::Value {
    match next_seen(client).await {
        Seen::Json(json) => json,
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The close code the server sends next, skipping text frames.
pub async fn close_code(client: &mut Client) -> Option<u16> {
    for _ in 0..100_000 {
        match next_seen(client).await {
            Seen::Json(_) => continue,
            Seen::Close(code, _) => return code,
            Seen::Ended => return None,
        }
    }
    panic!("no close frame after 100000 frames")
}

/// Sends a JSON text frame.
pub async fn send_json(client: &mut Client, json: serde_json::Value) {
    within(client.send(Message::text(json.to_string())))
        .await
        .expect("the frame is sent");
}

/// Subscribes to `channels` and waits for the ack.
pub async fn subscribe(client: &mut Client, channels: &[&str], id: u64) -> serde_json::Value {
    send_json(
        client,
        serde_json::json!({"type":"subscribe","channels":channels,"id":id}),
    )
    .await;
    let ack = next_json(client).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    ack
}

/// `POST /api/publish` with `body` and `key`; returns status and body
/// (`Null` when the body is not JSON).
pub async fn post_publish(
    address: SocketAddr,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let answer = http::post_json(address, "/api/publish", key, body).await;
    (answer.status, answer.json())
}

/// A complete WebSocket upgrade request head for `/ws?{query}` with `extra`
/// header lines (each ending in CRLF), for raw-socket tests.
pub fn raw_upgrade_head(address: SocketAddr, query: &str, extra: &str) -> String {
    format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Writes `request` while reading the answer (the server may answer before
/// the client finished writing) and returns what was read until EOF, reset
/// or `STEP`.
pub async fn raw_exchange(address: SocketAddr, request: Vec<u8>) -> String {
    let stream = within(TcpStream::connect(address)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        // Held open: the server, not the client, must end the exchange.
        tokio::time::sleep(STEP).await;
        drop(writer);
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let reading = async {
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
            if response_complete(&answer) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(STEP, reading).await;
    writing.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether `answer` holds a whole response: a 101's head, or a head and
/// the `content-length` bytes of body it announces (keep-alive connections
/// stay open after it).
fn response_complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    if head.starts_with("http/1.1 101") {
        return true;
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|length| answer.len() >= end + 4 + length)
}
