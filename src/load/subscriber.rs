//! One subscriber connection: TCP (optionally from a chosen source address),
//! the WebSocket upgrade with a bearer token, one subscribe and its ack, then
//! reading until the run ends, timestamping every frame as it arrives. Fast
//! readers go through [`RawSocket`] (cheap per frame); slow readers and the
//! reference through fastwebsockets, a frame at a time.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError};
use http_body_util::Empty;
use hyper::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::load::plan::Endpoint;
use crate::load::raw_socket::{RawSocket, Received};
use crate::load::slow_readers::{self, KeyTrack, ReaderRole, SlowReaders};
use crate::load::stats::DeliveryStats;

/// Largest frame a subscriber accepts; far above any market-data message,
/// small enough that a broken server cannot make the tool allocate wildly.
const MAX_FRAME_BYTES: usize = 16 << 20;
/// Frames a connection may see between its subscribe and the ack before it
/// gives up (the connect timeout bounds the time).
const MAX_FRAMES_BEFORE_ACK: usize = 10_000;
/// Distinct error messages kept for the summary.
const ERROR_SAMPLE: usize = 8;

type Socket = WebSocket<TokioIo<Upgraded>>;

/// What one connection needs to know.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    /// Connection index (`i` in `load-{i}` and `i % channels`).
    pub index: usize,
    /// The token to present.
    pub token: String,
    /// The channel to subscribe to.
    pub channel: String,
    /// Which entry of the plan's channel list that is.
    pub channel_index: usize,
    /// The source address to bind, if any.
    pub source_ip: Option<IpAddr>,
    /// Its part in the slow-reader scenario.
    pub role: ReaderRole,
}

/// Shared by every subscriber of a run.
#[derive(Debug)]
pub struct SubscriberContext {
    /// The WebSocket endpoint.
    pub endpoint: Endpoint,
    /// Where deliveries are counted.
    pub stats: Arc<DeliveryStats>,
    /// Connection counts and errors.
    pub connections: Arc<ConnectionCounters>,
    /// The slow-reader scenario, when `--slow-readers` is set.
    pub slow: Option<Arc<SlowReaders>>,
    /// Bound on TCP + upgrade + subscribe + ack.
    pub connect_timeout: Duration,
    /// The run's hard end: no connection outlives it.
    pub deadline: Instant,
}

/// How a connection's setup ended, sent to the orchestrator.
#[derive(Debug)]
pub struct SetupOutcome {
    /// Whether it is a slow reader (not owed every message).
    pub slow: bool,
    /// Which channel the connection subscribed to, or the error.
    pub result: Result<usize, String>,
    /// Time from the first SYN to the ack (or the failure).
    pub elapsed: Duration,
}

/// Connection counts updated by the subscribers.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Connections subscribed and still open.
    pub open: AtomicUsize,
    /// Connections closed by the server (or broken) before the run ended.
    pub dropped: AtomicU64,
    /// Up to [`ERROR_SAMPLE`] distinct errors (setup failures and drops),
    /// behind a mutex because errors are rare and the hot path never takes it.
    errors: Mutex<Vec<String>>,
}

impl ConnectionCounters {
    /// Remembers `error` if it is new and there is room.
    pub fn note_error(&self, error: &str) {
        let mut errors = self
            .errors
            .lock()
            .expect("no thread panics while holding it");
        if errors.len() < ERROR_SAMPLE && !errors.iter().any(|e| e == error) {
            errors.push(error.to_owned());
        }
    }

    /// The distinct errors seen, in order of first appearance.
    pub fn error_sample(&self) -> Vec<String> {
        self.errors
            .lock()
            .expect("no thread panics while holding it")
            .clone()
    }
}

/// Runs one subscriber: sets it up, reports the outcome on `setup`, then
/// counts deliveries until `stop` fires or the deadline passes.
pub async fn run_subscriber(
    ctx: Arc<SubscriberContext>,
    spec: SubscriberSpec,
    setup: mpsc::UnboundedSender<SetupOutcome>,
    mut stop: watch::Receiver<bool>,
) {
    if spec.role == ReaderRole::Fast {
        return run_fast_reader(ctx, spec, setup, stop).await;
    }
    let started = Instant::now();
    let setup_deadline = (started + ctx.connect_timeout).min(ctx.deadline);
    let opened = tokio::time::timeout_at(setup_deadline, open_and_subscribe(&ctx, &spec)).await;
    let Some(mut socket) = report_setup(&ctx, &spec, &setup, opened, started) else {
        return;
    };
    // One timer for the whole connection, not one per read: a timer per
    // frame would cost a timer-wheel insert and removal per delivery.
    let mut last = KeyTrack::default();
    let ended = tokio::select! {
        biased;
        _ = stop.wait_for(|stopped| *stopped) => None,
        () = tokio::time::sleep_until(ctx.deadline) => None,
        ended = read_until(&ctx, spec.role, &mut socket, &mut last) => Some(ended),
    };
    if let Some(slow) = &ctx.slow {
        slow.finish(spec.role, last, ended.is_some());
    }
    ctx.connections.open.fetch_sub(1, Relaxed);
    match ended {
        Some(error) => {
            ctx.connections.dropped.fetch_add(1, Relaxed);
            ctx.connections.note_error(&error);
        }
        None => {
            // The run is over; say goodbye so the server logs a clean close.
            let close = socket.write_frame(Frame::close(1000, b"load test finished"));
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        }
    }
}

/// Sends the outcome of a connection's setup to the orchestrator (and
/// counts it open when it worked); the socket when it did.
fn report_setup<S>(
    ctx: &SubscriberContext,
    spec: &SubscriberSpec,
    setup: &mpsc::UnboundedSender<SetupOutcome>,
    opened: Result<Result<S, String>, tokio::time::error::Elapsed>,
    started: Instant,
) -> Option<S> {
    let result = match opened {
        Ok(result) => result,
        Err(_) => Err(format!(
            "setup timed out after {:?} (connect, upgrade, subscribe, ack)",
            ctx.connect_timeout
        )),
    };
    let (socket, result) = match result {
        Ok(socket) => {
            ctx.connections.open.fetch_add(1, Relaxed);
            (Some(socket), Ok(spec.channel_index))
        }
        Err(error) => {
            ctx.connections.note_error(&error);
            (None, Err(error))
        }
    };
    let _ = setup.send(SetupOutcome {
        slow: spec.role == ReaderRole::Slow,
        result,
        elapsed: started.elapsed(),
    });
    socket
}

/// A fast reader (see [`RawSocket`]): the same life as
/// [`run_subscriber`]'s, read in large chunks, with the receive time taken
/// once per read for all the frames it returned.
async fn run_fast_reader(
    ctx: Arc<SubscriberContext>,
    spec: SubscriberSpec,
    setup: mpsc::UnboundedSender<SetupOutcome>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let setup_deadline = (started + ctx.connect_timeout).min(ctx.deadline);
    let opened = tokio::time::timeout_at(setup_deadline, open_and_subscribe_raw(&ctx, &spec)).await;
    let Some(mut socket) = report_setup(&ctx, &spec, &setup, opened, started) else {
        return;
    };
    let ended = tokio::select! {
        biased;
        _ = stop.wait_for(|stopped| *stopped) => None,
        () = tokio::time::sleep_until(ctx.deadline) => None,
        ended = read_raw_until(&ctx, &mut socket) => Some(ended),
    };
    ctx.connections.open.fetch_sub(1, Relaxed);
    match ended {
        Some(error) => {
            ctx.connections.dropped.fetch_add(1, Relaxed);
            ctx.connections.note_error(&error);
        }
        None => {
            let close = socket.send_close(1000, b"load test finished");
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        }
    }
}

/// Counts every message a fast reader receives until the connection ends,
/// and says why it ended.
async fn read_raw_until(ctx: &SubscriberContext, socket: &mut RawSocket) -> String {
    let mut pings = Vec::new();
    loop {
        {
            let mut tally = ctx.stats.tally(unix_now_ns());
            loop {
                match socket.next() {
                    Ok(None) => break,
                    Ok(Some(Received::Data(data))) => {
                        tally.frame(data);
                    }
                    Ok(Some(Received::Ping(payload))) => pings.push(payload.to_vec()),
                    Ok(Some(Received::Close(payload))) => {
                        return format!("closed by the server: {}", close_reason(payload));
                    }
                    Err(error) => return format!("connection lost: {error}"),
                }
            }
        }
        for ping in pings.drain(..) {
            if let Err(error) = socket.send_pong(&ping).await {
                return format!("connection lost: {error}");
            }
        }
        if let Err(error) = socket.fill().await {
            return format!("connection lost: {error}");
        }
    }
}

/// [`open_and_subscribe`] for a fast reader.
async fn open_and_subscribe_raw(
    ctx: &SubscriberContext,
    spec: &SubscriberSpec,
) -> Result<RawSocket, String> {
    let stream = connect_tcp(ctx.endpoint.address, spec.source_ip, None)
        .await
        .map_err(|e| format!("TCP connect to {}: {e}", ctx.endpoint.address))?;
    let mut socket = RawSocket::upgrade(stream, &ctx.endpoint, &spec.token).await?;
    socket
        .send_text(subscribe_frame(&spec.channel).as_bytes())
        .await
        .map_err(|e| format!("cannot send the subscribe frame: {e}"))?;
    let mut frames = 0;
    while frames < MAX_FRAMES_BEFORE_ACK {
        while let Some(received) = socket.next()? {
            frames += 1;
            match received {
                Received::Close(payload) => {
                    return Err(format!(
                        "closed by the server before the ack: {}",
                        close_reason(payload)
                    ));
                }
                Received::Data(text) => {
                    // Another process may already be publishing; count it.
                    if ctx.stats.record_frame(text, unix_now_ns()) > 0 {
                        continue;
                    }
                    if let Some(outcome) = subscribe_answer(text) {
                        return outcome.map(|()| socket);
                    }
                }
                Received::Ping(_) => {}
            }
        }
        socket
            .fill()
            .await
            .map_err(|e| format!("connection lost before the subscribe ack: {e}"))?;
    }
    Err(format!(
        "no subscribe ack within {MAX_FRAMES_BEFORE_ACK} frames"
    ))
}

/// The subscribe request every connection sends, with id 1.
fn subscribe_frame(channel: &str) -> String {
    serde_json::json!({
        "type": "subscribe",
        "channels": [channel],
        "id": 1,
    })
    .to_string()
}

/// Reads frames until the connection ends, and says why it ended.
async fn read_until(
    ctx: &SubscriberContext,
    role: ReaderRole,
    socket: &mut Socket,
    last: &mut KeyTrack,
) -> String {
    loop {
        let frame = match socket.read_frame().await {
            Err(error) => return format!("connection lost: {error}"),
            Ok(frame) => frame,
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                ctx.stats.record_frame(&frame.payload, unix_now_ns());
                if role != ReaderRole::Fast {
                    slow_readers::track(&frame.payload, last);
                }
                if role == ReaderRole::Slow
                    && let Some(pause) = ctx.slow.as_ref().and_then(|slow| slow.pause())
                {
                    tokio::time::sleep(pause).await;
                }
            }
            OpCode::Close => return format!("closed by the server: {}", close_text(&frame)),
            OpCode::Ping | OpCode::Pong => {}
        }
    }
}

/// TCP (from `source` when given, with a receive buffer of `recv_buffer`
/// bytes when given) and the WebSocket upgrade with `token`: what every
/// connection of the tool does first.
pub(crate) async fn upgrade(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    recv_buffer: Option<u32>,
    token: &str,
) -> Result<Socket, String> {
    let stream = connect_tcp(endpoint.address, source, recv_buffer)
        .await
        .map_err(|e| format!("TCP connect to {}: {e}", endpoint.address))?;
    let request = hyper::Request::builder()
        .method("GET")
        .uri(endpoint.path_and_query.as_str())
        .header(HOST, endpoint.host.as_str())
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the upgrade request: {e}"))?;
    let (mut socket, _) = fastwebsockets::handshake::client(&SpawnExecutor, request, stream)
        .await
        .map_err(|e| match e {
            WebSocketError::InvalidStatusCode(status) => {
                format!("upgrade refused with HTTP {status}")
            }
            other => format!("upgrade failed: {other}"),
        })?;
    socket.set_max_message_size(MAX_FRAME_BYTES);
    Ok(socket)
}

async fn open_and_subscribe(
    ctx: &SubscriberContext,
    spec: &SubscriberSpec,
) -> Result<Socket, String> {
    let recv_buffer = (spec.role == ReaderRole::Slow).then_some(slow_readers::SLOW_RECV_BUFFER);
    let mut socket = upgrade(&ctx.endpoint, spec.source_ip, recv_buffer, &spec.token).await?;
    let subscribe = subscribe_frame(&spec.channel);
    socket
        .write_frame(Frame::text(Payload::Owned(subscribe.into_bytes())))
        .await
        .map_err(|e| format!("cannot send the subscribe frame: {e}"))?;
    for _ in 0..MAX_FRAMES_BEFORE_ACK {
        let frame = socket
            .read_frame()
            .await
            .map_err(|e| format!("connection lost before the subscribe ack: {e}"))?;
        match frame.opcode {
            OpCode::Close => {
                return Err(format!(
                    "closed by the server before the ack: {}",
                    close_text(&frame)
                ));
            }
            OpCode::Text => {
                // Another process may already be publishing; count it.
                if ctx.stats.record_frame(&frame.payload, unix_now_ns()) > 0 {
                    continue;
                }
                if let Some(outcome) = subscribe_answer(&frame.payload) {
                    return outcome.map(|()| socket);
                }
            }
            _ => {}
        }
    }
    Err(format!(
        "no subscribe ack within {MAX_FRAMES_BEFORE_ACK} frames"
    ))
}

/// `Some(Ok)` for the ack of our subscribe, `Some(Err)` for its refusal,
/// `None` for any other frame (`connected`, pings).
fn subscribe_answer(text: &[u8]) -> Option<Result<(), String>> {
    let json: serde_json::Value = serde_json::from_slice(text).ok()?;
    let is_ours = json.get("id").and_then(|id| id.as_u64()) == Some(1);
    match json.get("type").and_then(|t| t.as_str()) {
        Some("subscribed") if is_ours => Some(Ok(())),
        Some("error") if is_ours || json.get("id").is_none() => Some(Err(format!(
            "subscribe refused: {}: {}",
            json.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
            json.get("message").and_then(|m| m.as_str()).unwrap_or("")
        ))),
        _ => None,
    }
}

fn close_text(frame: &Frame<'_>) -> String {
    close_reason(&frame.payload)
}

/// A Close frame's payload as "code reason".
fn close_reason(payload: &[u8]) -> String {
    match payload {
        [high, low, reason @ ..] => format!(
            "{} {}",
            u16::from_be_bytes([*high, *low]),
            String::from_utf8_lossy(reason)
        ),
        _ => "no close code".to_owned(),
    }
}

/// A TCP connection to `target`, from `source` when given, with a receive
/// buffer of `recv_buffer` bytes when given (a slow reader).
pub(crate) async fn connect_tcp(
    target: SocketAddr,
    source: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        defer_port_choice(&socket);
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.connect(target).await
}

/// Lets the kernel pick the source port at `connect` rather than `bind`,
/// so ports are unique per 4-tuple and each source address serves about
/// 28 000 connections per destination. Best effort: without it each address
/// still works, with fewer ports.
fn defer_port_choice(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let enable: libc::c_int = 1;
        // SAFETY: the descriptor is open for the lifetime of `socket`, and the
        // option value is a live c_int whose size is passed alongside.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&enable as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Unix time in nanoseconds, the clock the publisher stamps payloads with.
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs hyper's client connection task (which finishes the upgrade) on tokio.
pub(crate) struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_of_our_subscribe_is_recognised() {
        let ack = br#"{"type":"subscribed","id":1,"channels":["ch0"],"current":["ch0"]}"#;
        assert_eq!(subscribe_answer(ack), Some(Ok(())));
        let connected = br#"{"type":"connected","connectionId":"c1","userId":"u"}"#;
        assert_eq!(subscribe_answer(connected), None);
    }

    #[test]
    fn a_refused_subscribe_names_the_code() {
        let error = br#"{"type":"error","id":1,"code":"forbidden","message":"no access to x"}"#;
        let refused = subscribe_answer(error).unwrap().unwrap_err();
        assert!(
            refused.contains("forbidden") && refused.contains("no access to x"),
            "{refused}"
        );
    }

    #[test]
    fn error_samples_keep_distinct_messages_up_to_a_bound() {
        let counters = ConnectionCounters::default();
        for i in 0..20 {
            counters.note_error(&format!("error {}", i % 10));
            counters.note_error("error 0");
        }
        let sample = counters.error_sample();
        assert_eq!(sample.len(), ERROR_SAMPLE);
        assert_eq!(sample[0], "error 0");
    }
}
