//! Issue 17's hostile clients at scale: a horde of clients that upgrade,
//! subscribe and then never read a byte, and slowloris clients that never
//! finish their request head, next to well-behaved subscribers.
//!
//! * The well-behaved subscribers lose nothing and are not slowed (the
//!   checker's invariants and a delivery-delay bound).
//! * Every never-reading client is cut as a slow consumer, after the server
//!   held at most the documented per-client bound for it: its outbound
//!   queue (`Core::outbound_bound_bytes`, checked by the checker on every
//!   sample) plus its socket's send buffer (`WS_SOCKET_SEND_BUFFER`, modelled
//!   in bytes by `sim::send_buffer`), and the server's total in queues and
//!   socket buffers stays within the sum of those bounds.
//! * A slowloris head is dropped at `WS_HANDSHAKE_TIMEOUT`; a head over
//!   `WS_MAX_REQUEST_HEAD_BYTES` is answered 431 and closed at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use sim::checker::max_delivery_delay;
use sim::recorder::{Happening, Trace};
use sim::run::{FeedEnd, Part, Steps, Subscriber};
use sim::seeds::run_costly_seeds;
use sim::world::{Gate, PORT, SERVER, World, channel, partition_of, token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ws_realtime::core::Core;

use crate::{TEST, policy};

/// Seeds in a plain `cargo test` (a run takes ~1.7 s in a debug build);
/// `SIM_SEEDS=N` runs N/4 (15 in `.ci/sim`).
const SEEDS: u64 = 5;

/// Well-behaved subscribers.
const GOOD: usize = 4;

/// Clients that upgrade and never read (one host, many sockets: the sim
/// holds a thousand of them in a few seconds).
const NEVER_READERS: usize = 1000;

/// The horde's connects are this far apart.
const CONNECT_PACE: Duration = Duration::from_millis(2);

/// Turmoil's bound per stream, in segments (one per write), and of each
/// listener's accept queue.
const TCP_SEGMENTS: usize = 1024;

/// Slowloris clients trickling a request head they never finish.
const SLOWLORIS: usize = 20;

/// Messages published (half of them on the never-readers' channel).
const MESSAGES: usize = 600;

/// The simulated `WS_SOCKET_SEND_BUFFER` (bytes).
const SEND_BUFFER: usize = 8 * 1024;

/// The simulated `WS_CLIENT_BUFFER_BYTES`: small, so the byte bound (not
/// the frame bound) is what the never-readers reach.
const CLIENT_BUFFER_BYTES: usize = 16 * 1024;

/// The simulated `WS_MAX_REQUEST_HEAD_BYTES`.
const HEAD_LIMIT: usize = 4 * 1024;

/// The slowest delivery a good client may see, in simulated time.
const GOOD_DELAY_BOUND: Duration = Duration::from_millis(500);

/// What a never-reading or slowloris socket saw, for the checks after the run.
#[derive(Debug, Default)]
struct Horde {
    /// Each never-reader's local address (its send-buffer account).
    never_readers: Vec<SocketAddr>,
    /// Each slowloris socket: (connected at, closed by the server at).
    slowloris: Vec<(Duration, Option<Duration>)>,
    /// What the oversized head was answered, and when.
    oversized: Option<(String, Duration)>,
}

fn upgrade_head(name: &str, channels: &str) -> String {
    format!(
        "GET /ws?channels={channels} HTTP/1.1\r\nHost: {SERVER}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        token(name)
    )
}

fn elapsed() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

async fn connect() -> std::io::Result<turmoil::net::TcpStream> {
    let mut attempts = 0;
    loop {
        match turmoil::net::TcpStream::connect((SERVER, PORT)).await {
            Ok(stream) => return Ok(stream),
            Err(_) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Reads until the server closes (EOF or reset) or `limit` passes; returns
/// what was read and whether the server closed.
async fn read_until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (seen, false),
            Ok(Ok(0) | Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn never_readers(seed: u64) -> Result<Trace, String> {
    let builder = World::builder()
        .configure(|config| {
            config.socket_send_buffer = SEND_BUFFER;
            config.max_request_head_bytes = HEAD_LIMIT;
            config.core.client_buffer_bytes = CLIENT_BUFFER_BYTES;
            config.core.client_buffer_frames = 4096;
            // Silence alone must not cut the never-readers: the byte bound must.
            config.core.connection_timeout = Duration::from_secs(40);
        })
        // Room for more segments than the modelled send buffer holds, so the
        // byte bound (the server's setting) is what fills, as on a real host.
        .tcp_capacity(TCP_SEGMENTS);
    let handshake_timeout = builder.config().handshake_timeout;
    let per_client = Core::outbound_bound_bytes(&builder.config().core);
    let mut run = builder.start(seed);
    let world = run.world.clone();
    let seen = Arc::new(Mutex::new(Horde::default()));
    let channels = vec![channel(0), channel(1)];
    for i in 0..GOOD {
        run.subscriber(Subscriber::new(format!("good{i}"), channels.clone()).stays_open());
    }
    let horde_seen = seen.clone();
    run.client("horde", Part::Member, |steps| horde(steps, horde_seen));
    let slowloris_seen = seen.clone();
    run.client("slowloris", Part::Bystander, |steps| {
        slowloris(steps, slowloris_seen)
    });
    run.feeder(FeedEnd::default(), |steps| async move {
        let mut rng = steps.world.rng(u64::MAX);
        for _ in 0..MESSAGES {
            let index = rng.random_range(0..2);
            steps
                .world
                .feed
                .publish(&channel(index), partition_of(index));
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..8))).await;
        }
        Ok(MESSAGES)
    });
    let trace = run.finish()?;
    check_run(&world, &trace, &seen, per_client, handshake_timeout)?;
    Ok(trace)
}

/// The never-readers: one host, many sockets. A member: ready once all have
/// upgraded, and it leaves (drops every socket) once the server has dropped
/// each of them by itself, after the run is done.
async fn horde(steps: Steps, seen: Arc<Mutex<Horde>>) -> turmoil::Result {
    let upgraded = Gate::default();
    let mut sockets = Vec::with_capacity(NEVER_READERS);
    for i in 0..NEVER_READERS {
        let (seen, upgraded, steps) = (seen.clone(), upgraded.clone(), steps.clone());
        sockets.push(tokio::spawn(async move {
            // Paced: turmoil's accept queue panics when it is full (a
            // kernel's refuses quietly).
            tokio::time::sleep(CONNECT_PACE * i as u32).await;
            let Ok(mut stream) = connect().await else {
                return;
            };
            let head = upgrade_head(&format!("horde{i}"), &channel(0));
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let Ok(local) = stream.local_addr() else {
                return;
            };
            seen.lock().expect("not poisoned").never_readers.push(local);
            upgraded.arrive();
            // Never read; hold the socket until the server has given up on
            // it by itself (bounded: the check after the run reports one
            // that was never dropped).
            let _ = steps.wait_done().await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let buffers = &steps.world.send_buffers;
            while tokio::time::Instant::now() < deadline
                && buffers
                    .account(local)
                    .is_none_or(|account| account.dropped_at.is_none())
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(stream);
        }));
    }
    upgraded
        .wait_for(NEVER_READERS, Duration::from_secs(20))
        .await?;
    // Give the server time to upgrade them all before the feed starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    steps.ready.arrive();
    for socket in sockets {
        socket.await?;
    }
    steps.left.arrive();
    Ok(())
}

/// The slowloris heads and the oversized one, during the feed.
async fn slowloris(steps: Steps, seen: Arc<Mutex<Horde>>) -> turmoil::Result {
    steps.started.wait(Duration::from_secs(30)).await?;
    let mut tasks = Vec::new();
    for i in 0..SLOWLORIS {
        tasks.push(tokio::spawn(async move {
            let stream = connect().await.ok()?;
            let at = elapsed();
            let (mut reader, mut writer) = stream.into_split();
            let head = format!("GET /ws HTTP/1.1\r\nHost: {SERVER}\r\n");
            writer.write_all(head.as_bytes()).await.ok()?;
            // One header line a second, never the blank line, while watching
            // for the server to give up on the head.
            let trickle = async {
                for line in 0..15 {
                    let header = format!("X-Slow-{i}-{line}: a\r\n");
                    if writer.write_all(header.as_bytes()).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                std::future::pending::<()>().await;
            };
            let closed = tokio::select! {
                () = trickle => false,
                (_, closed) = read_until_closed(&mut reader, Duration::from_secs(20)) => closed,
            };
            Some((at, closed.then(elapsed)))
        }));
    }
    let mut oversized = connect().await?;
    // A head over the limit, sent in slow chunks.
    let mut head = format!("GET /ws HTTP/1.1\r\nHost: {SERVER}\r\nX-Big: ").into_bytes();
    head.extend(std::iter::repeat_n(b'a', 2 * HEAD_LIMIT));
    head.extend_from_slice(b"\r\n\r\n");
    for chunk in head.chunks(512) {
        if oversized.write_all(chunk).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (answer, closed) = read_until_closed(&mut oversized, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    if !closed {
        return Err(format!("an oversized head was not closed: {answer:?}").into());
    }
    seen.lock().expect("not poisoned").oversized = Some((answer, elapsed()));
    for task in tasks {
        let outcome = task.await?;
        let outcome = outcome.ok_or("a slowloris socket failed to connect or write")?;
        seen.lock().expect("not poisoned").slowloris.push(outcome);
    }
    Ok(())
}

/// The scenario's own expectations, after the run.
fn check_run(
    world: &World,
    trace: &Trace,
    seen: &Mutex<Horde>,
    per_client: usize,
    handshake_timeout: Duration,
) -> Result<(), String> {
    let delay = max_delivery_delay(trace, |client| client.starts_with("good"))
        .ok_or("good clients received nothing")?;
    if delay > GOOD_DELAY_BOUND {
        return Err(format!(
            "a good client waited {delay:?} for a message (bound {GOOD_DELAY_BOUND:?})"
        ));
    }
    let seen = seen.lock().expect("not poisoned");
    check_never_readers(world, &seen.never_readers)?;
    let slow = world.metrics.slow_consumer_disconnects.get();
    if slow != NEVER_READERS as u64 {
        return Err(format!(
            "{slow} slow-consumer disconnects, expected one per never-reader ({NEVER_READERS})"
        ));
    }
    // The server's whole holding for its clients, in queues and in socket
    // buffers, never passed the per-client bound times the clients.
    let clients = (NEVER_READERS + GOOD) as u64;
    let total_bound = clients * (per_client + SEND_BUFFER) as u64;
    let worst = trace
        .iter()
        .filter_map(|record| match &record.what {
            Happening::ServerSample(s) => Some(s.outbound_bytes as u64 + s.socket_unread_bytes),
            _ => None,
        })
        .max()
        .unwrap_or_default();
    if worst == 0 || worst > total_bound {
        return Err(format!(
            "queues and socket buffers held {worst} bytes at most; expected some, and at most {total_bound}"
        ));
    }
    check_slowloris(&seen, handshake_timeout)
}

/// Every never-reader filled its send buffer (the bound was reached: the
/// scenario tested something), never beyond it, and was dropped.
fn check_never_readers(world: &World, addresses: &[SocketAddr]) -> Result<(), String> {
    if addresses.len() != NEVER_READERS {
        return Err(format!(
            "{} of {NEVER_READERS} never-readers upgraded",
            addresses.len()
        ));
    }
    let limit = world.send_buffers.limit() as u64;
    for &address in addresses {
        let account = world
            .send_buffers
            .account(address)
            .ok_or_else(|| format!("the server never accepted never-reader {address}"))?;
        if account.read != 0 {
            return Err(format!(
                "never-reader {address} read {} bytes",
                account.read
            ));
        }
        if account.peak_unread != limit {
            return Err(format!(
                "never-reader {address}'s socket held at most {} bytes, its send buffer is {limit}: \
                 {}",
                account.peak_unread,
                if account.peak_unread > limit {
                    "over the bound"
                } else {
                    "it was never filled, so the bound was not tested"
                }
            ));
        }
        if account.dropped_at.is_none() {
            return Err(format!(
                "never-reader {address} was never dropped by the server"
            ));
        }
    }
    Ok(())
}

/// Every slowloris socket was closed by the server no later than the
/// handshake timeout (plus network slack); the oversized head got 431.
fn check_slowloris(seen: &Horde, handshake_timeout: Duration) -> Result<(), String> {
    if seen.slowloris.len() != SLOWLORIS {
        return Err(format!(
            "{} of {SLOWLORIS} slowloris sockets reported",
            seen.slowloris.len()
        ));
    }
    for &(connected, closed) in &seen.slowloris {
        let closed = closed.ok_or("a slowloris socket was never closed by the server")?;
        let took = closed.saturating_sub(connected);
        if took > handshake_timeout + Duration::from_secs(2) {
            return Err(format!(
                "a slowloris socket lasted {took:?} (handshake timeout {handshake_timeout:?})"
            ));
        }
    }
    match &seen.oversized {
        Some((answer, _)) if answer.starts_with("HTTP/1.1 431") => Ok(()),
        other => Err(format!(
            "the oversized head was answered {other:?}, not 431"
        )),
    }
}

#[test]
fn never_readers_are_cut_within_their_bound_and_good_clients_lose_nothing() {
    run_costly_seeds(
        TEST,
        "never_readers::never_readers_are_cut_within_their_bound_and_good_clients_lose_nothing",
        policy(),
        SEEDS,
        never_readers,
    );
}
