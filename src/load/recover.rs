//! `--recover`: a reconnect storm (issue 15). Every connection subscribes,
//! keeps its channel's cursor by the protocol's client rule (start from the
//! ack's `positions`, apply each message's `pos`), then all drop at once,
//! stay away for `--offline` while publishing goes on, and reconnect at once
//! with `since`. Each connection checks that its stream, across the gap,
//! has no hole and no duplicate, and measures how long it took to catch up.
//!
//! Positions are checked per stream (everything before the last `:` of a
//! `pos`): HTTP and Redis sequences (`~epoch:seq`) count up by one per
//! message of the channel, and so do the offsets of a Kafka partition whose
//! every record goes to the channel (the channel is the topic), so a jump
//! is a gap and a step back a duplicate.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::auth::{TokenSpec, mint};
use crate::load::plan::{Credentials, Plan, PublishTarget};
use crate::load::publisher::{self, PublishCounters, PublishSchedule};
use crate::load::server_probe;
use crate::load::subscriber::{ConnectionCounters, unix_now_ns};
use crate::load::{LoadArgs, LoadError};

mod cursor;
mod report;

pub use cursor::{Cursor, Step};
pub use report::{RecoverSummary, StormSummary};

type Socket = WebSocket<TokioIo<Upgraded>>;

/// Frames a connection may read before its subscribe is answered.
const MAX_FRAMES_BEFORE_ACK: usize = 10_000;

/// Where the storm is; every connection watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Connected and reading.
    Live,
    /// Drop the connection now (no close frame, as a network blip).
    Drop,
    /// Reconnect with `since` now.
    Reconnect,
    /// The run is over: report.
    Stop,
}

/// What one connection needs.
#[derive(Debug, Clone)]
struct ClientSpec {
    /// Its token.
    token: String,
    /// Its channel.
    channel: String,
    /// The source address to bind, if any.
    source_ip: Option<IpAddr>,
    /// Stays connected through the storm and measures latency instead.
    bystander: bool,
}

/// What one connection saw.
#[derive(Debug, Default, Clone)]
struct ClientReport {
    /// One of the `--bystanders`.
    bystander: bool,
    /// Subscribed before the storm.
    subscribed: bool,
    /// Reconnected and got the recover ack.
    reconnected: bool,
    /// `recovered` of that ack.
    recovered: Option<bool>,
    /// Messages published before the reconnect began that arrived after it:
    /// what was replayed.
    replayed: u64,
    /// Holes in the stream (a position jumped past the next one).
    gaps: u64,
    /// Messages missing in those holes.
    missing: u64,
    /// Messages at or before a position already seen.
    duplicates: u64,
    /// From the start of the reconnect to the first message published after
    /// it: the replay is over and the connection is live again.
    caught_up: Option<Duration>,
    /// Messages read in all.
    messages: u64,
    /// A bystander's latencies (µs, receive time minus the payload's stamp)
    /// before the drop.
    latency_before: Vec<u64>,
    /// A bystander's latencies from the drop to the end.
    latency_during: Vec<u64>,
}

/// Runs the storm as `args` describe and returns its summary.
pub async fn run(args: &LoadArgs) -> Result<RecoverSummary, LoadError> {
    if args.idle {
        return Err(LoadError::invalid(
            "--recover needs publishing: drop --idle",
        ));
    }
    let plan = Plan::from_args(args).await?;
    let target = plan
        .publish
        .clone()
        .expect("a plan without --idle has a publish target");
    let connections = plan.connections + args.bystanders;
    let connect_spread = Duration::from_secs_f64(connections as f64 / args.connect_rate);
    let start = Instant::now();
    let planned = connect_spread
        + 2 * args.connect_timeout
        + args.warmup
        + args.offline
        + args.duration
        + args.grace;
    let deadline = start + planned + Duration::from_secs(5);
    let errors = Arc::new(ConnectionCounters::default());
    let context = Arc::new(StormContext {
        plan: plan.clone(),
        connect_timeout: args.connect_timeout,
        errors: errors.clone(),
    });
    let (stage_tx, stage_rx) = watch::channel(Stage::Live);
    let (setup_tx, mut setup_rx) = mpsc::unbounded_channel();
    let mut clients = JoinSet::new();
    let issued_at = unix_now_ns() / 1_000_000_000;
    for index in 0..connections {
        tokio::time::sleep_until(start + connect_spread.mul_f64(index as f64 / connections as f64))
            .await;
        let token = match &plan.credentials {
            Credentials::Token(token) => token.clone(),
            Credentials::Secret(secret) => mint(
                secret,
                &TokenSpec {
                    sub: format!("load-{index}"),
                    ttl: planned + Duration::from_secs(3600),
                    roles: Vec::new(),
                    channels: None,
                    audience: None,
                    issuer: None,
                },
                issued_at,
            ),
        };
        let spec = ClientSpec {
            token,
            channel: plan.channels[index % plan.channels.len()].clone(),
            source_ip: (!plan.source_ips.is_empty())
                .then(|| plan.source_ips[index % plan.source_ips.len()]),
            bystander: index >= plan.connections,
        };
        clients.spawn(storm_client(
            context.clone(),
            spec,
            stage_rx.clone(),
            setup_tx.clone(),
        ));
    }
    drop(setup_tx);
    let mut subscribed = vec![0u64; plan.channels.len()];
    let mut answered = 0;
    let connect_deadline = start + connect_spread + args.connect_timeout + Duration::from_secs(1);
    while let Ok(Some(outcome)) = tokio::time::timeout_at(connect_deadline, setup_rx.recv()).await {
        answered += 1;
        if let Ok(channel_index) = outcome {
            subscribed[channel_index] += 1;
        }
        if answered == connections {
            break;
        }
    }
    let ok: u64 = subscribed.iter().sum();
    if ok == 0 {
        let _ = stage_tx.send(Stage::Stop);
        clients.abort_all();
        return Err(LoadError::NoConnections {
            requested: connections,
            errors: errors.error_sample(),
        });
    }

    // Publish from now to the end; the storm happens in the middle.
    let publish_start = Instant::now();
    let drop_at = publish_start + args.warmup;
    let reconnect_at = drop_at + args.offline;
    let publish_until = reconnect_at + args.duration;
    let now_ns = unix_now_ns();
    let schedule = Arc::new(PublishSchedule {
        channels: plan.channels.clone(),
        subscribers: subscribed.clone(),
        rate: args.publish_rate,
        payload_bytes: args.payload_bytes,
        start: publish_start,
        until: publish_until,
        window_ns: (
            now_ns,
            now_ns + (publish_until - publish_start).as_nanos() as u64,
        ),
        concurrency: args.publish_concurrency,
        keys: args.keys,
    });
    let publish_counters = Arc::new(PublishCounters::default());
    let publisher = {
        let (counters, errors) = (publish_counters.clone(), errors.clone());
        tokio::spawn(
            async move { publisher::run_publisher(&target, schedule, counters, errors).await },
        )
    };
    tokio::time::sleep_until(drop_at).await;
    let rss_before = args
        .server_pid
        .and_then(server_probe::sample)
        .map(|s| s.rss_kib);
    let _ = stage_tx.send(Stage::Drop);
    tokio::time::sleep_until(reconnect_at).await;
    let _ = stage_tx.send(Stage::Reconnect);
    // Sample the server's memory while the storm is served.
    let mut rss_peak = rss_before;
    while Instant::now() < publish_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(sample) = args.server_pid.and_then(server_probe::sample) {
            rss_peak = rss_peak.max(Some(sample.rss_kib));
        }
    }
    let published = tokio::time::timeout_at(deadline, publisher).await;
    if let Ok(Ok(Err(error))) = published {
        let _ = stage_tx.send(Stage::Stop);
        clients.abort_all();
        return Err(error);
    }
    // Late deliveries: the last publishes need a moment to arrive.
    tokio::time::sleep(
        args.grace
            .min(deadline.saturating_duration_since(Instant::now())),
    )
    .await;
    let rss_after = args
        .server_pid
        .and_then(server_probe::sample)
        .map(|s| s.rss_kib);
    let _ = stage_tx.send(Stage::Stop);
    let mut reports = Vec::with_capacity(connections);
    let collect = async {
        while let Some(joined) = clients.join_next().await {
            if let Ok(report) = joined {
                reports.push(report);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), collect)
        .await
        .is_err()
    {
        clients.abort_all();
    }
    Ok(report::summarize(
        args,
        &plan,
        &reports,
        &publish_counters,
        &errors,
        [rss_before, rss_peak, rss_after],
    ))
}

/// Shared by every connection of a storm.
struct StormContext {
    /// Targets and credentials.
    plan: Plan,
    /// Bound on TCP + upgrade + subscribe + ack.
    connect_timeout: Duration,
    /// Distinct errors for the summary.
    errors: Arc<ConnectionCounters>,
}

/// One connection through the whole storm.
async fn storm_client(
    ctx: Arc<StormContext>,
    spec: ClientSpec,
    mut stage: watch::Receiver<Stage>,
    setup: mpsc::UnboundedSender<Result<usize, String>>,
) -> ClientReport {
    let mut report = ClientReport {
        bystander: spec.bystander,
        ..ClientReport::default()
    };
    let channel_index = ctx
        .plan
        .channels
        .iter()
        .position(|c| *c == spec.channel)
        .unwrap_or(0);
    let subscribe = serde_json::json!({"type": "subscribe", "channels": [spec.channel], "id": 1});
    let opened = tokio::time::timeout(ctx.connect_timeout, async {
        let mut socket = open(&ctx, &spec).await?;
        let ack = subscribe_and_ack(&mut socket, &subscribe, 1).await?;
        Ok::<_, String>((socket, ack))
    })
    .await
    .unwrap_or_else(|_| Err(format!("setup timed out after {:?}", ctx.connect_timeout)));
    let (mut socket, ack) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            ctx.errors.note_error(&error);
            let _ = setup.send(Err(error));
            return report;
        }
    };
    report.subscribed = true;
    let _ = setup.send(Ok(channel_index));
    let mut cursor = Cursor::parse(ack.position(&spec.channel));
    if spec.bystander {
        // Reads through the whole storm; only its latency is of interest.
        let watch = Some(stage.clone());
        tokio::select! {
            _ = reach(&mut stage, Stage::Stop) => {
                let close = socket.write_frame(Frame::close(1000, b"load test finished"));
                let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
            }
            error = read_messages(&mut socket, &spec.channel, &mut cursor, &mut report, None, watch) => {
                ctx.errors.note_error(&format!("bystander: {error}"));
            }
        }
        return report;
    }
    // Live until the drop: every message moves the cursor.
    tokio::select! {
        _ = reach(&mut stage, Stage::Drop) => {}
        error = read_messages(&mut socket, &spec.channel, &mut cursor, &mut report, None, None) => {
            ctx.errors.note_error(&error);
            return report;
        }
    }
    // Drop without a close frame: the server sees the connection vanish.
    drop(socket);
    if reach(&mut stage, Stage::Reconnect).await == Stage::Stop {
        return report;
    }
    let began = Instant::now();
    let began_ns = unix_now_ns();
    let recover = serde_json::json!({
        "type": "subscribe",
        "channels": [spec.channel],
        "since": {spec.channel.clone(): cursor.to_string()},
        "id": 2,
    });
    let reopened = tokio::time::timeout(ctx.connect_timeout, async {
        let mut socket = open(&ctx, &spec).await?;
        let ack = subscribe_and_ack(&mut socket, &recover, 2).await?;
        Ok::<_, String>((socket, ack))
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "reconnect timed out after {:?}",
            ctx.connect_timeout
        ))
    });
    let (mut socket, ack) = match reopened {
        Ok(reopened) => reopened,
        Err(error) => {
            ctx.errors.note_error(&format!("reconnect: {error}"));
            return report;
        }
    };
    report.reconnected = true;
    let recovered = ack.recovered(&spec.channel);
    report.recovered = Some(recovered);
    if !recovered {
        // Nothing is replayed: the stream starts again at the ack's cursor.
        cursor = Cursor::parse(ack.position(&spec.channel));
    }
    let catch_up = Some((began, began_ns));
    tokio::select! {
        _ = reach(&mut stage, Stage::Stop) => {
            let close = socket.write_frame(Frame::close(1000, b"load test finished"));
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        }
        error = read_messages(&mut socket, &spec.channel, &mut cursor, &mut report, catch_up, None) => {
            ctx.errors.note_error(&format!("after the reconnect: {error}"));
        }
    }
    report
}

/// Waits until the storm is at `at` or later (or its sender is gone,
/// which means stop) and returns where it is.
async fn reach(stage: &mut watch::Receiver<Stage>, at: Stage) -> Stage {
    match stage.wait_for(|s| *s >= at).await {
        Ok(now) => *now,
        Err(_) => Stage::Stop,
    }
}

/// Reads `message` frames of `channel` into the cursor and the report until
/// the connection ends; returns why it ended. With `catch_up` (the
/// reconnect's start, monotonic and unix ns), counts replayed messages and
/// notes when the first one published after the start arrives. With
/// `latency` (a bystander's view of the storm), records each message's
/// latency as before or during the storm.
async fn read_messages(
    socket: &mut Socket,
    channel: &str,
    cursor: &mut Cursor,
    report: &mut ClientReport,
    catch_up: Option<(Instant, u64)>,
    latency: Option<watch::Receiver<Stage>>,
) -> String {
    loop {
        let frame = match socket.read_frame().await {
            Ok(frame) => frame,
            Err(error) => return format!("connection lost: {error}"),
        };
        match frame.opcode {
            OpCode::Text => {
                for message in messages_of(&frame.payload) {
                    if message.channel != channel || message.snapshot {
                        continue;
                    }
                    report.messages += 1;
                    match cursor.apply(&message.pos) {
                        Step::Next | Step::New => {}
                        Step::Gap(missing) => {
                            report.gaps += 1;
                            report.missing += missing;
                        }
                        Step::Duplicate => report.duplicates += 1,
                        Step::Malformed => return format!("unreadable pos {:?}", message.pos),
                    }
                    if let (Some(stage), Some(ts)) = (&latency, message.ts) {
                        let micros = unix_now_ns().saturating_sub(ts) / 1_000;
                        match *stage.borrow() {
                            Stage::Live => report.latency_before.push(micros),
                            _ => report.latency_during.push(micros),
                        }
                    }
                    if let (Some((began, began_ns)), Some(ts)) = (catch_up, message.ts) {
                        if ts < began_ns {
                            // Only a recovery replays: after `recovered:false`
                            // an older message is one whose publish reached
                            // the server after the resubscribe (live).
                            if report.recovered == Some(true) {
                                report.replayed += 1;
                            }
                        } else if report.caught_up.is_none() {
                            report.caught_up = Some(began.elapsed());
                        }
                    }
                }
            }
            OpCode::Close => return "closed by the server".to_owned(),
            _ => {}
        }
    }
}

/// One `message` as the storm needs it.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    /// Its channel.
    channel: String,
    /// Its `pos`.
    pos: String,
    /// Marked `"snapshot":true` (not applied to cursors).
    snapshot: bool,
    /// The publisher's unix-ns stamp in `data.ts`, if there is one.
    ts: Option<u64>,
}

/// The `message` objects of a text frame (a JSON-array batch or one object).
fn messages_of(payload: &[u8]) -> Vec<Message> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Vec::new();
    };
    let items = match value {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    items
        .iter()
        .filter(|item| item["type"] == "message")
        .filter_map(|item| {
            Some(Message {
                channel: item["channel"].as_str()?.to_owned(),
                pos: item["pos"].as_str()?.to_owned(),
                snapshot: item["snapshot"] == true,
                ts: item["data"]["ts"].as_u64(),
            })
        })
        .collect()
}

/// A `subscribed` ack.
struct Ack(serde_json::Value);

impl Ack {
    /// The channel's cursor in `positions` (empty if absent).
    fn position(&self, channel: &str) -> &str {
        self.0["positions"][channel].as_str().unwrap_or_default()
    }

    /// `recovered` for the channel (false if absent).
    fn recovered(&self, channel: &str) -> bool {
        self.0["recovered"][channel] == true
    }
}

/// Sends `request` and reads until its ack (or its refusal).
async fn subscribe_and_ack(
    socket: &mut Socket,
    request: &serde_json::Value,
    id: u64,
) -> Result<Ack, String> {
    socket
        .write_frame(Frame::text(Payload::Owned(
            request.to_string().into_bytes(),
        )))
        .await
        .map_err(|e| format!("cannot send the subscribe: {e}"))?;
    for _ in 0..MAX_FRAMES_BEFORE_ACK {
        let frame = socket
            .read_frame()
            .await
            .map_err(|e| format!("connection lost before the subscribe ack: {e}"))?;
        match frame.opcode {
            OpCode::Close => return Err("closed by the server before the ack".to_owned()),
            OpCode::Text => {
                let Ok(json) = serde_json::from_slice::<serde_json::Value>(&frame.payload) else {
                    continue;
                };
                let ours = json["id"].as_u64() == Some(id);
                match json["type"].as_str() {
                    Some("subscribed") if ours => return Ok(Ack(json)),
                    Some("error") if ours => {
                        return Err(format!(
                            "subscribe refused: {}: {}",
                            json["code"].as_str().unwrap_or("?"),
                            json["message"].as_str().unwrap_or("")
                        ));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Err(format!(
        "no subscribe ack within {MAX_FRAMES_BEFORE_ACK} frames"
    ))
}

/// TCP and the WebSocket upgrade with the connection's token.
async fn open(ctx: &StormContext, spec: &ClientSpec) -> Result<Socket, String> {
    super::subscriber::upgrade(&ctx.plan.ws, spec.source_ip, None, &spec.token).await
}

/// Counts of the publisher, for the summary.
fn publish_counts(counters: &PublishCounters) -> (u64, u64) {
    (
        counters.accepted.load(Relaxed),
        counters.failed.load(Relaxed),
    )
}

/// The transport's name, for the summary.
fn via(plan: &Plan) -> &'static str {
    match plan.publish {
        Some(PublishTarget::Kafka { .. }) => "kafka",
        _ => "http",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_from_single_frames_and_batches() {
        let one = br#"{"type":"message","channel":"ch0","pos":"~ab:3","data":{"ts":7,"seq":1}}"#;
        assert_eq!(
            messages_of(one),
            vec![Message {
                channel: "ch0".into(),
                pos: "~ab:3".into(),
                snapshot: false,
                ts: Some(7),
            }]
        );
        let batch = br#"[{"type":"message","channel":"ch0","pos":"t:0:1","data":{}},{"type":"message","channel":"ch1","pos":"t:0:2","snapshot":true,"data":{"ts":9}}]"#;
        let read = messages_of(batch);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].ts, None);
        assert!(read[1].snapshot);
        assert!(messages_of(br#"{"type":"pong","id":1}"#).is_empty());
    }
}
