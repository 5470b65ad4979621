//! The command line of `ws-realtime-load`.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::config::settings::parse_duration;

/// Connections beyond which one process runs out of file descriptors on a
/// machine whose hard `RLIMIT_NOFILE` is 20 000.
pub const ONE_PROCESS_CONNECTIONS: usize = 19_000;

const AFTER_HELP: &str = "\
Phases: connect (paced by --connect-rate; each connection authenticates,
subscribes and waits for the `subscribed` ack), warmup (publishing, not
measured), the measured window (--duration), then up to --grace for late
deliveries. The tool stops by itself after that.

Latency is the receive time minus the unix-ns timestamp the publisher puts in
each payload ({\"ts\":…,\"seq\":…,\"pad\":\"…\"}), so publisher, server and
subscribers must share one clock: run the tool on one host, or on hosts kept
in sync by NTP/PTP (then the skew is part of the figures).

Connection counts: each connection is one open file here and on the server.
On hosts whose hard open-file limit is 20 000, one process holds at most
about 19 000 connections; run several processes (each with a share of the
connections and no publisher but one) to go further. One source IP has about
28 000 ephemeral ports per destination; --source-ips 127.0.0.1-127.0.0.20
spreads connections over several loopback addresses so a bigger host can go
past that.

Only loopback targets are allowed unless --allow-remote is given.";

/// How messages are published during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishVia {
    /// `POST --publish-url` with `X-API-Key: --api-key`.
    Http,
    /// Produce to Kafka `--topic` on `--brokers`; the channel is the topic
    /// (the server's default routing).
    Kafka,
}

/// Load test of a ws-realtime deployment: many subscribers, a paced
/// publisher, and end-to-end latency from a timestamp in every payload.
#[derive(Debug, Clone, Parser)]
#[command(name = "ws-realtime-load", version, after_help = AFTER_HELP)]
pub struct LoadArgs {
    /// The server's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.
    #[arg(long)]
    pub url: String,

    /// Subscriber connections to open (about 19 000 per process at most
    /// where the open-file hard limit is 20 000; see below).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,

    /// Connection attempts per second, e.g. 500 or 500/s.
    #[arg(long, default_value = "1000", value_parser = parse_rate)]
    pub connect_rate: f64,

    /// Channels to use: connection i subscribes to channel i % n of this
    /// list, and publish k goes to channel k % n.
    #[arg(long, value_delimiter = ',', conflicts_with = "channel_count")]
    pub channels: Vec<String>,

    /// Use channels ch0 … ch{K-1} (connection i subscribes to ch{i % K}).
    #[arg(long)]
    pub channel_count: Option<usize>,

    /// One token for every connection.
    #[arg(long, conflicts_with = "secret")]
    pub token: Option<String>,

    /// The server's HS256 secret: mint a token per connection (sub
    /// `load-{i}`).
    #[arg(long, env = "WS_LOAD_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Publishes per second over the whole run, open loop (scheduled by the
    /// clock, not by responses), e.g. 100 or 100/s.
    #[arg(long, default_value = "100", value_parser = parse_rate)]
    pub publish_rate: f64,

    /// How to publish.
    #[arg(long, value_enum, default_value_t = PublishVia::Http)]
    pub publish_via: PublishVia,

    /// The publish endpoint, e.g. http://127.0.0.1:8080/api/publish.
    #[arg(long)]
    pub publish_url: Option<String>,

    /// The server's publish API key (sent as X-API-Key).
    #[arg(long, env = "WS_LOAD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Kafka bootstrap servers, for --publish-via kafka.
    #[arg(long)]
    pub brokers: Option<String>,

    /// Kafka topic, for --publish-via kafka.
    #[arg(long)]
    pub topic: Option<String>,

    /// Publishes in flight at most (HTTP keep-alive connections or Kafka
    /// sends awaiting their delivery report).
    #[arg(long, default_value_t = 16)]
    pub publish_concurrency: usize,

    /// Size in bytes of each published `data` object, padded with "pad".
    #[arg(long, default_value_t = 128)]
    pub payload_bytes: usize,

    /// Length of the measured window (with --idle: how long to hold).
    #[arg(long, default_value = "10s", value_parser = parse_span)]
    pub duration: Duration,

    /// Publishing before the window opens, not measured.
    #[arg(long, default_value = "2s", value_parser = parse_span)]
    pub warmup: Duration,

    /// How long to wait after the window for late deliveries.
    #[arg(long, default_value = "2s", value_parser = parse_span)]
    pub grace: Duration,

    /// Per connection: TCP connect, upgrade, subscribe and its ack.
    #[arg(long, default_value = "10s", value_parser = parse_span)]
    pub connect_timeout: Duration,

    /// Source addresses for the subscribers, as A-B (a range of IPv4
    /// addresses) or A,B,…; connection i binds to entry i % n.
    #[arg(long)]
    pub source_ips: Option<String>,

    /// Connect, subscribe, hold for --duration and report (memory); no
    /// publishing.
    #[arg(long)]
    pub idle: bool,

    /// Reconnect storm: every connection keeps its channel's cursor, all
    /// drop at once after --warmup, stay away for --offline while
    /// publishing goes on, reconnect at once with `since`, and check that
    /// nothing is missing or doubled; then --duration more of publishing.
    #[arg(long, conflicts_with = "idle")]
    pub recover: bool,

    /// With --recover: this many more connections that stay connected
    /// through the storm on the same channels, to show what the storm does
    /// to everyone else's latency (p50/p99 before the drop and from it on).
    #[arg(long, default_value_t = 0)]
    pub bystanders: usize,

    /// With --recover: how long every connection stays away.
    #[arg(long, default_value = "2s", value_parser = parse_span)]
    pub offline: Duration,

    /// The server's process id: read its VmRSS and CPU time from /proc
    /// (with its descendants) to report RSS per connection and CPU ns per
    /// delivery. Same host only.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Worker threads of the tool (default: the CPUs it may run on).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Allow targets outside 127.0.0.0/8 and ::1 (your own deployment).
    #[arg(long)]
    pub allow_remote: bool,

    /// Of the connections, the first N read at most --slow-read-rate frames
    /// per second (conflation scenario; see docs/load-tool.md).
    #[arg(long, default_value_t = 0)]
    pub slow_readers: usize,

    /// Frames per second a slow reader reads at most.
    #[arg(long, default_value = "50", value_parser = parse_rate)]
    pub slow_read_rate: f64,

    /// Put "key":"k<seq % K>" in every payload (key the server by it with
    /// WS_HISTORY_SNAPSHOT_FIELD=key); 0 = no key.
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
}

impl LoadArgs {
    /// The channel names of this run: `--channels`, else `ch0…` from
    /// `--channel-count`, else the Kafka topic, else `ch0`.
    pub fn channel_names(&self) -> Vec<String> {
        if !self.channels.is_empty() {
            return self.channels.clone();
        }
        if let Some(count) = self.channel_count {
            return (0..count).map(|i| format!("ch{i}")).collect();
        }
        if self.publish_via == PublishVia::Kafka
            && let Some(topic) = &self.topic
        {
            return vec![topic.clone()];
        }
        vec!["ch0".to_owned()]
    }
}

/// `500`, `500/s` or `500.5/s`: a positive rate per second.
fn parse_rate(raw: &str) -> Result<f64, String> {
    let number = raw.trim().trim_end_matches("/s").trim();
    match number.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{raw:?} is not a positive rate such as 100 or 100/s"
        )),
    }
}

/// `10s`, `500ms`, `1m`, or a bare number of seconds.
fn parse_span(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok(Duration::from_secs_f64(seconds));
        }
    }
    parse_duration(raw).ok_or_else(|| format!("{raw:?} is not a duration such as 10s or 500ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_accept_a_per_second_suffix() {
        assert_eq!(parse_rate("100/s"), Ok(100.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn bare_durations_are_seconds() {
        assert_eq!(parse_span("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_span("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_span("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_span("soon").is_err());
    }

    #[test]
    fn channel_count_names_channels_ch0_to_ch_k_minus_1() {
        let args = LoadArgs::try_parse_from([
            "load",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--channel-count",
            "3",
        ])
        .unwrap();
        assert_eq!(args.channel_names(), ["ch0", "ch1", "ch2"]);
        let args = LoadArgs::try_parse_from([
            "load",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--channels",
            "lines,books",
        ])
        .unwrap();
        assert_eq!(args.channel_names(), ["lines", "books"]);
    }
}
