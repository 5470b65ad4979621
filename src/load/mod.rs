//! `ws-realtime-load`: the project's own load tool, for users testing their
//! own deployment.
//!
//! A run has four phases, each bounded in time, so the tool always stops by
//! itself: connect (paced subscribers, each authenticated, subscribed and
//! acked), warmup (publishing, not measured), the measured window, and a
//! grace period for late deliveries. Subscribers count every message whose
//! payload timestamp lies inside the window; the publisher counts how many
//! deliveries those publishes should cause; the difference is loss.
//!
//! * [`args`]: the command line.
//! * [`plan`]: checked targets (loopback only unless `--allow-remote`).
//! * [`subscriber`]: one WebSocket subscriber.
//! * `raw_socket`: the fast readers' minimal WebSocket client.
//! * [`recover`]: `--recover`, the reconnect storm (gapless recovery).
//! * [`publisher`]: the open-loop HTTP or Kafka publisher.
//! * [`stats`]: delivery counters and the latency histogram.
//! * [`server_probe`]: the server's RSS and CPU from /proc.
//! * [`report`]: the summary and the progress line.
//! * [`slow_readers`]: the slow-reader (conflation) scenario.

pub mod args;
pub mod plan;
pub mod publisher;
mod raw_socket;
pub mod recover;
pub mod report;
pub mod server_probe;
pub mod slow_readers;
pub mod stats;
pub mod subscriber;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::auth::{TokenSpec, mint};
pub use args::{LoadArgs, PublishVia};
use plan::{Credentials, Plan, PublishTarget};
use publisher::{PublishCounters, PublishSchedule};
pub use report::Summary;
use report::{ConnectionSummary, DeliverySummary, LatencySummary, PublishSummary, ServerSummary};
use server_probe::ProcessSample;
use slow_readers::{ReaderRole, SlowReaders};
use stats::DeliveryStats;
use subscriber::{ConnectionCounters, SubscriberContext, SubscriberSpec, unix_now_ns};

/// Why a run could not start or produce figures.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag is missing, malformed or inconsistent with another.
    #[error("{0}")]
    InvalidArgument(String),
    /// A target is not on this machine and `--allow-remote` was not given.
    #[error(
        "{flag} points at {address}, which is not a loopback address; pass --allow-remote to load a remote deployment"
    )]
    RemoteTarget {
        /// The flag naming the target.
        flag: String,
        /// Where it resolved to.
        address: SocketAddr,
    },
    /// The Kafka producer could not be created.
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(String),
    /// Not a single subscriber connected.
    #[error("none of the {requested} connections subscribed; errors: {}", errors.join("; "))]
    NoConnections {
        /// `--connections`.
        requested: usize,
        /// Distinct setup errors.
        errors: Vec<String>,
    },
}

impl LoadError {
    pub(crate) fn invalid(message: impl Into<String>) -> LoadError {
        LoadError::InvalidArgument(message.into())
    }
}

/// The phase the progress line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Connect,
    Warmup,
    Window,
    Hold,
    Grace,
}

impl Phase {
    fn name(code: u8) -> &'static str {
        match code {
            0 => "connect",
            1 => "warmup",
            2 => "window",
            3 => "hold",
            _ => "grace",
        }
    }
}

/// Slack on top of the planned phases before the hard deadline cuts
/// everything off: publishes in flight and closing handshakes need a moment.
const DEADLINE_SLACK: Duration = Duration::from_secs(8);

/// With slow readers, how long after the grace they read at full speed
/// before the run ends (within the deadline slack).
const SLOW_CATCH_UP: Duration = Duration::from_secs(2);

/// Runs a load test as `args` describe and returns its summary.
pub async fn run(args: &LoadArgs) -> Result<Summary, LoadError> {
    let plan = Plan::from_args(args).await?;
    let connections = plan.connections;
    let connect_spread = Duration::from_secs_f64(connections as f64 / args.connect_rate);
    let connect_budget = connect_spread + args.connect_timeout + Duration::from_secs(1);
    let run_start = Instant::now();
    let deadline =
        run_start + connect_budget + args.warmup + args.duration + args.grace + DEADLINE_SLACK;

    let stats = Arc::new(DeliveryStats::default());
    let counters = Arc::new(ConnectionCounters::default());
    if args.slow_readers >= connections {
        return Err(LoadError::invalid(
            "--slow-readers must leave at least one connection reading at full speed",
        ));
    }
    let slow = (args.slow_readers > 0)
        .then(|| Arc::new(SlowReaders::new(args.slow_readers, args.slow_read_rate)));
    let context = Arc::new(SubscriberContext {
        endpoint: plan.ws.clone(),
        stats: stats.clone(),
        connections: counters.clone(),
        slow: slow.clone(),
        connect_timeout: args.connect_timeout,
        deadline,
    });
    // Slow readers count apart, so the figures (loss, latency) are the
    // fast readers'.
    let slow_context = Arc::new(SubscriberContext {
        endpoint: plan.ws.clone(),
        stats: Arc::new(DeliveryStats::default()),
        connections: counters.clone(),
        slow: slow.clone(),
        connect_timeout: args.connect_timeout,
        deadline,
    });
    let phase = Arc::new(AtomicU8::new(Phase::Connect as u8));
    let progress = (!args.quiet).then(|| {
        tokio::spawn(show_progress(
            stats.clone(),
            counters.clone(),
            phase.clone(),
            connections,
            run_start,
            deadline,
        ))
    });
    let before = args.server_pid.and_then(server_probe::sample);

    // Connect: paced attempts; the outcomes arrive on `setup_rx`.
    let (setup_tx, mut setup_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subscribers = JoinSet::new();
    let token_ttl = deadline.duration_since(run_start) + Duration::from_secs(3600);
    let issued_at = unix_now_ns() / 1_000_000_000;
    for index in 0..connections {
        tokio::time::sleep_until(
            run_start + connect_spread.mul_f64(index as f64 / connections as f64),
        )
        .await;
        let channel_index = index % plan.channels.len();
        let token = match &plan.credentials {
            Credentials::Token(token) => token.clone(),
            Credentials::Secret(secret) => mint(
                secret,
                &TokenSpec {
                    sub: format!("load-{index}"),
                    ttl: token_ttl,
                    roles: Vec::new(),
                    channels: None,
                    audience: None,
                    issuer: None,
                },
                issued_at,
            ),
        };
        let role = slow
            .as_ref()
            .map_or(ReaderRole::Fast, |slow| slow.role(index));
        let spec = SubscriberSpec {
            index,
            token,
            channel: plan.channels[channel_index].clone(),
            channel_index,
            source_ip: (!plan.source_ips.is_empty())
                .then(|| plan.source_ips[index % plan.source_ips.len()]),
            role,
        };
        subscribers.spawn(subscriber::run_subscriber(
            if role == ReaderRole::Slow {
                slow_context.clone()
            } else {
                context.clone()
            },
            spec,
            setup_tx.clone(),
            stop_rx.clone(),
        ));
    }
    drop(setup_tx);
    let mut subscribed = vec![0u64; plan.channels.len()];
    let mut setup_times = Vec::with_capacity(connections);
    let mut failed = 0;
    let mut slow_ok = 0;
    let connect_deadline = run_start + connect_budget;
    while let Ok(Some(outcome)) = tokio::time::timeout_at(connect_deadline, setup_rx.recv()).await {
        setup_times.push(outcome.elapsed);
        match outcome.result {
            // Slow readers are not owed every message.
            Ok(_) if outcome.slow => slow_ok += 1,
            Ok(channel_index) => subscribed[channel_index] += 1,
            Err(_) => failed += 1,
        }
        if setup_times.len() == connections {
            break;
        }
    }
    let connect_secs = run_start.elapsed().as_secs_f64();
    let ok: u64 = subscribed.iter().sum::<u64>() + slow_ok;
    if ok == 0 {
        stop(stop_tx, subscribers, progress).await;
        return Err(LoadError::NoConnections {
            requested: connections,
            errors: counters.error_sample(),
        });
    }

    let publish_counters = Arc::new(PublishCounters::default());
    let window_start;
    let window_end;
    let window_start_sample;
    if let Some(target) = &plan.publish {
        phase.store(Phase::Warmup as u8, Relaxed);
        let warmup_start = Instant::now();
        let now_ns = unix_now_ns();
        let window_start_ns = now_ns + args.warmup.as_nanos() as u64;
        let window_end_ns = window_start_ns + args.duration.as_nanos() as u64;
        stats.set_window(window_start_ns, window_end_ns);
        window_start = warmup_start + args.warmup;
        window_end = window_start + args.duration;
        let schedule = Arc::new(PublishSchedule {
            channels: plan.channels.clone(),
            subscribers: subscribed.clone(),
            rate: args.publish_rate,
            payload_bytes: args.payload_bytes,
            start: warmup_start,
            until: window_end,
            window_ns: (window_start_ns, window_end_ns),
            concurrency: args.publish_concurrency,
            keys: args.keys,
        });
        let publisher = match publisher::spawn_publisher(
            target.clone(),
            schedule,
            publish_counters.clone(),
            counters.clone(),
        ) {
            Ok(publisher) => publisher,
            Err(error) => {
                stop(stop_tx, subscribers, progress).await;
                return Err(error);
            }
        };
        tokio::time::sleep_until(window_start).await;
        phase.store(Phase::Window as u8, Relaxed);
        window_start_sample = args.server_pid.and_then(server_probe::sample);
        let tool_start = server_probe::sample(std::process::id());
        tokio::time::sleep_until(window_end).await;
        phase.store(Phase::Grace as u8, Relaxed);
        if let Some(slow) = &slow {
            slow.catch_up.store(true, Relaxed);
        }
        let after = args.server_pid.and_then(server_probe::sample);
        let tool_end = server_probe::sample(std::process::id());
        let published = tokio::time::timeout_at(deadline, publisher).await;
        let publish_result = match published {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(LoadError::invalid(
                "the publisher thread ended without a result",
            )),
            Err(_) => Ok(()),
        };
        if let Err(error) = publish_result {
            stop(stop_tx, subscribers, progress).await;
            return Err(error);
        }
        let grace_end = (window_end + args.grace).min(deadline);
        let expected = publish_counters.expected_in_window.load(Relaxed);
        while Instant::now() < grace_end && stats.in_window() < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if slow.is_some() {
            // The slow readers catch up on what the server kept for them.
            tokio::time::sleep_until((Instant::now() + SLOW_CATCH_UP).min(deadline)).await;
        }
        stop(stop_tx, subscribers, progress).await;
        let mut summary = summarize(
            args,
            &plan,
            &stats,
            &counters,
            Some(&publish_counters),
            setup_times,
            failed,
            ok,
            connect_secs,
            [before, window_start_sample, after],
            [tool_start, tool_end],
        );
        summary.slow_readers = slow.map(|slow| slow.summary());
        return Ok(summary);
    }

    // --idle: hold the connections, then measure.
    phase.store(Phase::Hold as u8, Relaxed);
    window_start = Instant::now();
    window_end = window_start + args.duration;
    let now_ns = unix_now_ns();
    stats.set_window(now_ns, now_ns + args.duration.as_nanos() as u64);
    window_start_sample = args.server_pid.and_then(server_probe::sample);
    let tool_start = server_probe::sample(std::process::id());
    tokio::time::sleep_until(window_end).await;
    let after = args.server_pid.and_then(server_probe::sample);
    let tool_end = server_probe::sample(std::process::id());
    stop(stop_tx, subscribers, progress).await;
    Ok(summarize(
        args,
        &plan,
        &stats,
        &counters,
        None,
        setup_times,
        failed,
        ok,
        connect_secs,
        [before, window_start_sample, after],
        [tool_start, tool_end],
    ))
}

/// Tells every subscriber to close, waits briefly for their goodbyes, and
/// aborts what is left.
async fn stop(
    stop_tx: watch::Sender<bool>,
    mut subscribers: JoinSet<()>,
    progress: Option<tokio::task::JoinHandle<()>>,
) {
    if let Some(progress) = progress {
        progress.abort();
    }
    let _ = stop_tx.send(true);
    let closing = async { while subscribers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), closing)
        .await
        .is_err()
    {
        subscribers.abort_all();
        while subscribers.join_next().await.is_some() {}
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    args: &LoadArgs,
    plan: &Plan,
    stats: &DeliveryStats,
    counters: &ConnectionCounters,
    publish: Option<&PublishCounters>,
    mut setup_times: Vec<Duration>,
    failed: usize,
    ok: u64,
    connect_secs: f64,
    [before, window_start, after]: [Option<ProcessSample>; 3],
    [tool_start, tool_end]: [Option<ProcessSample>; 2],
) -> Summary {
    setup_times.sort_unstable();
    let setup_p99 = setup_times
        .get((setup_times.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    let totals = stats.totals();
    let window_secs = args.duration.as_secs_f64();
    let publish_summary = publish.map(|p| PublishSummary {
        via: match plan.publish {
            Some(PublishTarget::Kafka { .. }) => "kafka",
            _ => "http",
        },
        rate: args.publish_rate,
        payload_bytes: args.payload_bytes,
        scheduled: ((args.warmup + args.duration).as_secs_f64() * args.publish_rate).ceil() as u64,
        attempted: p.attempted.load(Relaxed),
        accepted: p.accepted.load(Relaxed),
        failed: p.failed.load(Relaxed),
        sent: p.sent_in_window.load(Relaxed),
        max_lag_ms: p.max_lag_us.load(Relaxed) as f64 / 1_000.0,
    });
    let deliveries = publish.map(|p| {
        let expected = p.expected_in_window.load(Relaxed);
        DeliverySummary {
            expected,
            received: totals.in_window,
            lost: expected.saturating_sub(totals.in_window),
            duplicates: totals.in_window.saturating_sub(expected),
            per_sec: totals.arrived_in_window as f64 / window_secs,
        }
    });
    let server = match (args.server_pid, before, after) {
        (Some(pid), Some(before), Some(after)) => {
            let cpu_start = window_start.unwrap_or(before).cpu_ns;
            let cpu_ns = after.cpu_ns.saturating_sub(cpu_start);
            Some(ServerSummary {
                pid,
                rss_kib_before: before.rss_kib,
                rss_kib_after: after.rss_kib,
                rss_per_conn_bytes: after.rss_kib.saturating_sub(before.rss_kib) * 1024 / ok.max(1),
                cpu_secs: cpu_ns as f64 / 1e9,
                cpu_ns_per_delivery: publish
                    .map(|_| cpu_ns.checked_div(totals.arrived_in_window).unwrap_or(0)),
            })
        }
        _ => None,
    };
    Summary {
        mode: if publish.is_some() { "publish" } else { "idle" },
        url: args.url.clone(),
        channels: plan.channels.len(),
        window_secs,
        connections: ConnectionSummary {
            requested: plan.connections,
            ok: ok as usize,
            failed,
            dropped: counters.dropped.load(Relaxed),
            connect_secs,
            setup_p99_ms: setup_p99.as_secs_f64() * 1_000.0,
        },
        publish: publish_summary,
        deliveries,
        latency_us: publish.map(|_| LatencySummary::from_ns(&totals.latency)),
        server,
        tool_cpu_util: tool_start
            .zip(tool_end)
            .map(|(start, end)| end.cpu_ns.saturating_sub(start.cpu_ns) as f64 / 1e9 / window_secs),
        errors: counters.error_sample(),
        slow_readers: None,
    }
}

/// Prints the progress line every second until aborted or the deadline.
async fn show_progress(
    stats: Arc<DeliveryStats>,
    counters: Arc<ConnectionCounters>,
    phase: Arc<AtomicU8>,
    requested: usize,
    run_start: Instant,
    deadline: Instant,
) {
    let mut ticks =
        tokio::time::interval_at(run_start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_messages = 0;
    while Instant::now() < deadline {
        ticks.tick().await;
        let totals = stats.totals();
        let rate = totals.messages - last_messages;
        last_messages = totals.messages;
        let p99 = (totals.latency.count() > 0).then(|| totals.latency.quantile(0.99));
        eprintln!(
            "{}",
            report::progress_line(
                run_start.elapsed().as_secs_f64(),
                Phase::name(phase.load(Relaxed)),
                counters.open.load(Relaxed),
                requested,
                rate,
                p99,
            )
        );
    }
}

/// Raises this process's open-file soft limit to the hard limit (each
/// connection is one file) and returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // rlim_t is u64 on 64-bit Linux but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    let current = limit.rlim_cur as u64;
    current
}
