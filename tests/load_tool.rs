//! The load tool against an in-process server on 127.0.0.1:0 (HTTP publish
//! source with an API key): the binary's JSON summary, an `--idle` run
//! through the library entry point, the slow-reader scenario under
//! `conflate`, a `--recover` reconnect storm, and refusals.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ws_realtime::config::{ServerConfig, Settings};
use ws_realtime::load::{self, LoadArgs, LoadError};
use ws_realtime::shell::ServerHandle;
use ws_realtime::source::build_sources;

const SECRET: &str = "load-tool-test-secret-0123456789abcdef";
const API_KEY: &str = "load-tool-test-key";
/// Upper bound on a whole tool run in these tests (the tool stops by itself
/// well before).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A server configured the way an operator would: `WS_SOURCES=http` and an
/// API key, on a free loopback port.
async fn start_server() -> ServerHandle {
    start_server_with(&[]).await
}

/// [`start_server`] with more settings.
async fn start_server_with(extra: &[(&str, &str)]) -> ServerHandle {
    let mut pairs = vec![
        ("WS_BIND_ADDRESS", "127.0.0.1:0"),
        ("WS_SOURCES", "http"),
        ("WS_API_KEY", API_KEY),
        ("WS_AUTH_SECRET", SECRET),
    ];
    pairs.extend_from_slice(extra);
    let settings = Settings::from_pairs(pairs);
    let config = ServerConfig::from_settings(&settings).expect("the test settings are valid");
    let sources = build_sources(&config, &settings).expect("the http source builds");
    ws_realtime::shell::start(config, sources)
        .await
        .expect("a loopback server starts")
}

fn publish_args(address: SocketAddr) -> Vec<String> {
    [
        "--url",
        &format!("ws://{address}/ws"),
        "--connections",
        "20",
        "--channel-count",
        "2",
        "--secret",
        SECRET,
        "--publish-url",
        &format!("http://{address}/api/publish"),
        "--api-key",
        API_KEY,
        "--publish-rate",
        "50/s",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--grace",
        "5s",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn assert_percentiles_ordered(latency: &serde_json::Value) {
    let values: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|key| {
            latency[key]
                .as_u64()
                .unwrap_or_else(|| panic!("latency_us.{key} is a number: {latency}"))
        })
        .collect();
    assert!(
        values.windows(2).all(|pair| pair[0] <= pair[1]),
        "percentiles are ordered: {latency}"
    );
    assert!(values[4] > 0, "a delivery takes some time: {latency}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_json_summary_reports_every_expected_delivery_and_ordered_latency() {
    let server = start_server().await;
    let mut args = publish_args(server.address);
    args.extend(["--json", "--quiet", "--server-pid"].map(str::to_owned));
    args.push(std::process::id().to_string());
    let output = tokio::time::timeout(
        RUN_LIMIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-realtime-load"))
            .args(&args)
            .output(),
    )
    .await
    .expect("the tool stops by itself")
    .expect("the tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("--json prints one JSON object");

    assert_eq!(summary["mode"], "publish", "{summary}");
    assert_eq!(summary["channels"], 2, "{summary}");
    assert_eq!(summary["connections"]["ok"], 20, "{summary}");
    assert_eq!(summary["connections"]["failed"], 0, "{summary}");
    assert_eq!(summary["connections"]["dropped"], 0, "{summary}");
    let sent = summary["publish"]["sent"]
        .as_u64()
        .expect("sent is a number");
    assert!(sent > 0, "publishes landed in the window: {summary}");
    assert_eq!(summary["publish"]["failed"], 0, "{summary}");
    // 50/s over 0.5 s warmup + 2 s window.
    assert_eq!(summary["publish"]["scheduled"], 125, "{summary}");
    assert!(
        summary["publish"]["attempted"].as_u64() <= Some(125),
        "no publish starts after the window: {summary}"
    );
    let deliveries = &summary["deliveries"];
    // Each publish goes to one of 2 channels with 10 subscribers each.
    assert_eq!(
        deliveries["expected"].as_u64(),
        Some(sent * 10),
        "{summary}"
    );
    assert_eq!(deliveries["received"], deliveries["expected"], "{summary}");
    assert_eq!(deliveries["lost"], 0, "{summary}");
    assert_eq!(deliveries["duplicates"], 0, "{summary}");
    assert_percentiles_ordered(&summary["latency_us"]);
    assert!(
        summary["server"]["rss_kib_before"].as_u64() > Some(0),
        "the server pid was sampled: {summary}"
    );
    assert!(
        summary["errors"].as_array().is_some_and(|e| e.is_empty()),
        "{summary}"
    );

    server.shutdown().await.expect("the server shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_under_conflate_stay_connected_and_end_with_every_keys_last_value() {
    let server = start_server_with(&[
        ("WS_SLOW_CLIENT_POLICY", "conflate"),
        ("WS_HISTORY_SNAPSHOT_FIELD", "key"),
    ])
    .await;
    let mut flags = publish_args(server.address);
    // One channel: 2 slow readers, the reference and 9 fast readers.
    let channels = flags
        .iter()
        .position(|flag| flag == "--channel-count")
        .expect("publish_args names a channel count");
    flags[channels + 1] = "1".to_owned();
    let connections = flags
        .iter()
        .position(|flag| flag == "--connections")
        .expect("publish_args names a connection count");
    flags[connections + 1] = "12".to_owned();
    // 200/s against 10 frames/s: the slow readers fall past the queue bound.
    let rate = flags
        .iter()
        .position(|flag| flag == "--publish-rate")
        .expect("publish_args names a rate");
    flags[rate + 1] = "200/s".to_owned();
    flags.extend(
        [
            "--slow-readers",
            "2",
            "--slow-read-rate",
            "10",
            "--keys",
            "10",
            "--quiet",
        ]
        .map(str::to_owned),
    );
    let args =
        LoadArgs::try_parse_from(std::iter::once("ws-realtime-load".to_owned()).chain(flags))
            .expect("the flags parse");
    let summary = tokio::time::timeout(RUN_LIMIT, load::run(&args))
        .await
        .expect("the tool stops by itself")
        .expect("the run succeeds");

    let slow = summary.slow_readers.expect("--slow-readers was given");
    assert_eq!((slow.readers, slow.cut), (2, 0), "{slow:?}");
    assert_eq!(slow.keys, 10, "{slow:?}");
    assert_eq!(slow.last_values_correct, 2, "{slow:?}");
    assert_eq!(slow.out_of_order, 0, "{slow:?}");
    // The fast readers (and the reference) are owed every message.
    let deliveries = summary.deliveries.expect("a publish run");
    assert!(deliveries.expected > 0, "{deliveries:?}");
    assert_eq!(deliveries.lost, 0, "{deliveries:?}");
    assert_eq!(summary.connections.dropped, 0);

    server.shutdown().await.expect("the server shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_run_holds_every_connection_and_reports_no_deliveries() {
    let server = start_server().await;
    let address = server.address;
    let args = LoadArgs::try_parse_from([
        "ws-realtime-load".to_owned(),
        "--url".to_owned(),
        format!("ws://{address}/ws"),
        "--connections".to_owned(),
        "20".to_owned(),
        "--channels".to_owned(),
        "lines,books".to_owned(),
        "--secret".to_owned(),
        SECRET.to_owned(),
        "--idle".to_owned(),
        "--duration".to_owned(),
        "1s".to_owned(),
        "--quiet".to_owned(),
        "--server-pid".to_owned(),
        std::process::id().to_string(),
    ])
    .expect("the flags parse");
    let summary = tokio::time::timeout(RUN_LIMIT, load::run(&args))
        .await
        .expect("the tool stops by itself")
        .expect("the idle run succeeds");

    assert_eq!(summary.mode, "idle");
    assert_eq!(summary.connections.ok, 20);
    assert_eq!(summary.connections.failed, 0);
    assert_eq!(summary.connections.dropped, 0);
    assert!(summary.publish.is_none() && summary.deliveries.is_none());
    assert!(summary.latency_us.is_none());
    let server_figures = summary.server.as_ref().expect("--server-pid was given");
    assert!(server_figures.rss_kib_before > 0 && server_figures.rss_kib_after > 0);
    assert!(server_figures.cpu_ns_per_delivery.is_none());
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&summary).expect("serializes"))
            .expect("the JSON parses");
    assert_eq!(json["connections"]["ok"], 20);

    server.shutdown().await.expect("the server shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_refused_at_the_upgrade_are_reported_with_their_status() {
    let server = start_server().await;
    let address = server.address;
    let args = LoadArgs::try_parse_from([
        "ws-realtime-load".to_owned(),
        "--url".to_owned(),
        format!("ws://{address}/ws"),
        "--connections".to_owned(),
        "3".to_owned(),
        "--token".to_owned(),
        "not-a-jwt".to_owned(),
        "--idle".to_owned(),
        "--duration".to_owned(),
        "1s".to_owned(),
        "--quiet".to_owned(),
    ])
    .expect("the flags parse");
    let outcome = tokio::time::timeout(RUN_LIMIT, load::run(&args))
        .await
        .expect("the tool stops by itself");
    match outcome {
        Err(LoadError::NoConnections { requested, errors }) => {
            assert_eq!(requested, 3);
            assert!(
                errors.iter().any(|e| e.contains("HTTP 401")),
                "the refusal names its status: {errors:?}"
            );
        }
        other => panic!("expected every connection to be refused, got {other:?}"),
    }
    server.shutdown().await.expect("the server shuts down");
}

#[test]
fn binary_refuses_a_remote_target_without_allow_remote() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ws-realtime-load"))
        .args([
            "--url",
            "ws://192.0.2.10:8080/ws",
            "--token",
            "t",
            "--idle",
            "--duration",
            "1s",
        ])
        .output()
        .expect("the tool runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}

#[test]
fn help_explains_the_open_file_limit_and_several_processes() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ws-realtime-load"))
        .arg("--help")
        .output()
        .expect("the tool runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        help.contains("19 000") && help.contains("several processes"),
        "{help}"
    );
    assert!(help.contains("--source-ips"), "{help}");
}

/// A small reconnect storm: 20 connections on 2 channels, away for 1 s at
/// 100 publishes/s.
fn storm_args(address: SocketAddr) -> LoadArgs {
    LoadArgs::try_parse_from([
        "ws-realtime-load".to_owned(),
        "--url".to_owned(),
        format!("ws://{address}/ws"),
        "--connections".to_owned(),
        "20".to_owned(),
        "--channel-count".to_owned(),
        "2".to_owned(),
        "--secret".to_owned(),
        SECRET.to_owned(),
        "--publish-url".to_owned(),
        format!("http://{address}/api/publish"),
        "--api-key".to_owned(),
        API_KEY.to_owned(),
        "--publish-rate".to_owned(),
        "100/s".to_owned(),
        "--recover".to_owned(),
        "--warmup".to_owned(),
        "1s".to_owned(),
        "--offline".to_owned(),
        "1s".to_owned(),
        "--duration".to_owned(),
        "1s".to_owned(),
        "--grace".to_owned(),
        "1s".to_owned(),
        "--bystanders".to_owned(),
        "4".to_owned(),
        "--quiet".to_owned(),
        "--server-pid".to_owned(),
        std::process::id().to_string(),
    ])
    .expect("the flags parse")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_storm_replays_what_every_connection_missed_with_no_gap_or_duplicate() {
    let server = start_server().await;
    let summary = tokio::time::timeout(RUN_LIMIT, load::recover::run(&storm_args(server.address)))
        .await
        .expect("the tool stops by itself")
        .expect("the storm runs");
    let storm = &summary.storm;
    assert_eq!(summary.mode, "recover");
    assert_eq!(summary.subscribed, 20, "{summary:?}");
    assert_eq!(storm.reconnected, 20, "{summary:?}");
    assert_eq!(storm.recovered_true, 20, "{summary:?}");
    assert_eq!((storm.gaps, storm.duplicates), (0, 0), "{summary:?}");
    assert_eq!(storm.caught_up, 20, "{summary:?}");
    // ~50 publishes per channel while away (100/s over 2 channels for 1 s).
    assert!(storm.replayed_min >= 20, "{summary:?}");
    let [p50, p99, max] = storm.recover_ms;
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{summary:?}");
    assert!(summary.server_rss_kib.is_some(), "--server-pid was given");
    let bystanders = summary.bystanders.as_ref().expect("--bystanders 4");
    assert_eq!(bystanders.subscribed, 4, "{summary:?}");
    assert_eq!(
        (bystanders.gaps, bystanders.duplicates),
        (0, 0),
        "{summary:?}"
    );
    assert!(
        bystanders.latency_before_ms[0] > 0.0 && bystanders.latency_during_ms[0] > 0.0,
        "bystanders measured latency before and during the storm: {summary:?}"
    );
    assert!(summary.clean(), "{}", summary.to_text());
    server.shutdown().await.expect("the server shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_storm_reports_recovered_false_when_the_server_keeps_no_history() {
    let server = start_server_with(&[("WS_HISTORY_SIZE", "0")]).await;
    let summary = tokio::time::timeout(RUN_LIMIT, load::recover::run(&storm_args(server.address)))
        .await
        .expect("the tool stops by itself")
        .expect("the storm runs");
    let storm = &summary.storm;
    assert_eq!(storm.reconnected, 20, "{summary:?}");
    assert_eq!(storm.recovered_false, 20, "{summary:?}");
    assert_eq!(storm.replayed, 0, "nothing is replayed: {summary:?}");
    // Nothing replayed is no gap: the stream restarts at the ack's cursor.
    assert_eq!((storm.gaps, storm.duplicates), (0, 0), "{summary:?}");
    assert!(!summary.clean(), "{}", summary.to_text());
    assert!(summary.to_text().contains("NOT clean"));
    server.shutdown().await.expect("the server shuts down");
}
