//! What a client can cost the server before it authenticates: request heads
//! are bounded by `WS_MAX_REQUEST_HEAD_BYTES` (431 and close above it), and
//! the connection limits count sockets from accept, not from the upgrade.
//! Raw sockets throughout, since no well-behaved client sends these.

mod server_support;

use std::net::SocketAddr;
use std::time::Duration;

use server_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn upgrade_head(address: SocketAddr, extra: &str) -> String {
    raw_upgrade_head(address, &format!("token={}", token("alice", &[])), extra)
}

#[tokio::test]
async fn a_100_kb_header_line_is_431_and_the_connection_closes() {
    let server = start(config()).await;
    let big = format!("X-Padding: {}\r\n", "a".repeat(100 * 1024));
    let answer = raw_exchange(
        server.address,
        upgrade_head(server.address, &big).into_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "got {answer:?}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_100_kb_cookie_is_431() {
    let server = start(config()).await;
    let cookie = format!("Cookie: session={}\r\n", "c".repeat(100 * 1024));
    let answer = raw_exchange(
        server.address,
        upgrade_head(server.address, &cookie).into_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "got {answer:?}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_publish_request_with_a_100_kb_header_is_431() {
    let server = start(config()).await;
    let body = r#"{"channel":"lines","data":1}"#;
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\ncontent-type: application/json\r\n\
         X-Padding: {}\r\ncontent-length: {}\r\n\r\n{body}",
        "p".repeat(100 * 1024),
        body.len()
    );
    let answer = raw_exchange(server.address, request.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "got {answer:?}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_head_just_under_the_limit_still_upgrades_and_the_limit_is_configurable() {
    let mut config = config();
    config.max_request_head_bytes = 4096;
    let server = start(config).await;
    let fits = format!("X-Padding: {}\r\n", "a".repeat(2048));
    let answer = raw_exchange(
        server.address,
        upgrade_head(server.address, &fits).into_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "got {answer:?}");
    let over = format!("X-Padding: {}\r\n", "a".repeat(5000));
    let answer = raw_exchange(
        server.address,
        upgrade_head(server.address, &over).into_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "got {answer:?}");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn the_per_address_limit_counts_sockets_that_have_not_upgraded() {
    let mut config = config();
    config.core.max_connections_per_ip = 3;
    let server = start(config).await;
    // Three sockets that connect and say nothing: no upgrade, no token.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(within(TcpStream::connect(server.address)).await.unwrap());
    }
    let (status, body) =
        refusal(try_connect(server.address, &format!("token={}", token("a", &[]))).await);
    assert_eq!(status, 429);
    assert_eq!(body["error"], "too_many_connections_from_address");
    // Closing one frees its share.
    drop(silent.pop());
    let mut admitted = None;
    for _ in 0..50 {
        match try_connect(server.address, &format!("token={}", token("a", &[]))).await {
            Ok(client) => {
                admitted = Some(client);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut client = admitted.expect("a freed share admits a new connection");
    assert_eq!(next_json(&mut client).await["type"], "connected");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn the_total_limit_counts_sockets_that_have_not_upgraded() {
    let mut config = config();
    config.core.max_connections = 2;
    let server = start(config).await;
    let _silent = [
        within(TcpStream::connect(server.address)).await.unwrap(),
        within(TcpStream::connect(server.address)).await.unwrap(),
    ];
    let (status, body) =
        refusal(try_connect(server.address, &format!("token={}", token("a", &[]))).await);
    assert_eq!(status, 429);
    assert_eq!(body["error"], "too_many_connections");
    within(server.shutdown()).await.unwrap();
}

/// Resident set size of this process, in KiB (the server runs in it).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The issue's attack: hundreds of sockets each sending a request line and
/// a 300 KB header line that never ends. Before the head limit each pinned
/// the whole line in hyper's buffer (90–150 MiB for 500); now each is
/// answered 431 and closed after `WS_MAX_REQUEST_HEAD_BYTES`. A second wave
/// stalls just under the limit, which is what a connection can pin for
/// `WS_HANDSHAKE_TIMEOUT`: that cost per connection is measured and
/// printed, and the server must keep serving meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_unfinished_heads_cost_bounded_memory_and_the_server_keeps_serving() {
    const SOCKETS: usize = 400;
    let server = start(config()).await;
    let address = server.address;
    let before = rss_kib();

    // Wave 1: oversized heads, never finished.
    let line: &'static [u8] = Box::leak(
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nX-Padding: {}",
            "z".repeat(300 * 1024)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SOCKETS {
        tasks.spawn(async move {
            let Ok(mut stream) = TcpStream::connect(address).await else {
                return false;
            };
            let _ = stream.write_all(line).await;
            let mut answer = [0u8; 12];
            let read = stream.read_exact(&mut answer).await;
            read.is_ok() && &answer == b"HTTP/1.1 431"
        });
    }
    let mut refused = 0;
    while let Some(done) = within(tasks.join_next()).await {
        refused += usize::from(done.unwrap());
    }
    let after_oversized = rss_kib();

    // Wave 2: heads just under the limit, held open.
    let stall: &'static [u8] = Box::leak(
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nX-Padding: {}",
            "s".repeat(15 * 1024)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let mut held = Vec::new();
    for _ in 0..SOCKETS {
        let mut stream = within(TcpStream::connect(address)).await.unwrap();
        within(stream.write_all(stall)).await.unwrap();
        held.push(stream);
    }
    // Let the server read them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_stalled = rss_kib();

    // Still serving: health, and a real client end to end.
    let (status, _) = http_request(address, "GET", "/health", &[], b"").await;
    assert_eq!(status, 200);
    let mut client = connect(address, "bob", "").await;
    send_json(&mut client, serde_json::json!({"type":"ping","id":1})).await;
    assert_eq!(next_json(&mut client).await["type"], "pong");

    let grown_oversized = after_oversized.saturating_sub(before);
    let per_stalled = after_stalled.saturating_sub(after_oversized) * 1024 / SOCKETS as u64;
    eprintln!(
        "pre-upgrade memory: {SOCKETS} oversized heads grew RSS by {grown_oversized} KiB; \
         {SOCKETS} stalled 15 KiB heads cost {per_stalled} bytes each"
    );
    assert_eq!(refused, SOCKETS, "every oversized head is answered 431");
    // 400 × 300 KB pinned would be ~117 MiB; the bound is 400 × 16 KiB.
    assert!(
        grown_oversized < 40 * 1024,
        "oversized heads grew RSS by {grown_oversized} KiB"
    );
    drop(held);
    within(server.shutdown()).await.unwrap();
}
