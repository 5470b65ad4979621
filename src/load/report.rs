//! What a run reports: the summary (as text or JSON) and the progress line.

use std::fmt::Write as _;

use serde::Serialize;

use crate::load::slow_readers::SlowReaderSummary;
use crate::load::stats::Snapshot;

/// The result of one run; `--json` prints it as one object.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `publish` or `idle`.
    pub mode: &'static str,
    /// The WebSocket URL measured.
    pub url: String,
    /// Channels the connections were spread over.
    pub channels: usize,
    /// Length of the measured window (or the hold), in seconds.
    pub window_secs: f64,
    /// Connection outcomes.
    pub connections: ConnectionSummary,
    /// The publisher's counts; absent for `--idle`.
    pub publish: Option<PublishSummary>,
    /// Deliveries of the messages published in the window; absent for
    /// `--idle`.
    pub deliveries: Option<DeliverySummary>,
    /// Latency of those deliveries in µs; absent for `--idle`.
    pub latency_us: Option<LatencySummary>,
    /// Server memory and CPU, with `--server-pid`.
    pub server: Option<ServerSummary>,
    /// This tool's own CPU time during the window divided by the window
    /// (1.0 = one core busy): near its core count, the tool itself limits the
    /// figures.
    pub tool_cpu_util: Option<f64>,
    /// Up to 8 distinct errors (failed setups, drops, failed publishes).
    pub errors: Vec<String>,
    /// The slow-reader scenario's outcome, with `--slow-readers`.
    pub slow_readers: Option<SlowReaderSummary>,
}

/// Connection outcomes.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionSummary {
    /// `--connections`.
    pub requested: usize,
    /// Subscribed (ack received).
    pub ok: usize,
    /// Failed to connect, upgrade or subscribe.
    pub failed: usize,
    /// Closed by the server or broken before the run ended.
    pub dropped: u64,
    /// Time until every attempt had finished, in seconds.
    pub connect_secs: f64,
    /// p99 of one connection's setup time, in ms.
    pub setup_p99_ms: f64,
}

/// The publisher's counts.
#[derive(Debug, Clone, Serialize)]
pub struct PublishSummary {
    /// `http` or `kafka`.
    pub via: &'static str,
    /// Target publishes per second.
    pub rate: f64,
    /// Size of each `data` object.
    pub payload_bytes: usize,
    /// Publishes due over the whole run (warmup included): rate × (warmup
    /// + duration).
    pub scheduled: u64,
    /// Publishes started; fewer than `scheduled` when the publisher (or the
    /// server answering it) could not keep the rate.
    pub attempted: u64,
    /// Publishes accepted over the whole run.
    pub accepted: u64,
    /// Publishes refused or failed.
    pub failed: u64,
    /// Accepted publishes stamped inside the window.
    pub sent: u64,
    /// Worst lateness of a publish against its schedule, in ms.
    pub max_lag_ms: f64,
}

/// Deliveries of the window's publishes.
#[derive(Debug, Clone, Serialize)]
pub struct DeliverySummary {
    /// Σ over accepted window publishes of the subscribers of its channel.
    pub expected: u64,
    /// Deliveries received of those publishes.
    pub received: u64,
    /// `expected − received` when positive.
    pub lost: u64,
    /// `received − expected` when positive.
    pub duplicates: u64,
    /// Messages that arrived while the window was open, per second.
    pub per_sec: f64,
}

/// Latency percentiles in µs (bucket upper edges, < 1 % above the truth).
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest (exact).
    pub max: u64,
    /// Mean.
    pub mean: u64,
}

impl LatencySummary {
    /// Percentiles of a latency histogram in ns.
    pub fn from_ns(latency: &Snapshot) -> LatencySummary {
        let us = |ns: u64| ns / 1_000;
        LatencySummary {
            p50: us(latency.quantile(0.50)),
            p90: us(latency.quantile(0.90)),
            p99: us(latency.quantile(0.99)),
            p999: us(latency.quantile(0.999)),
            max: us(latency.max()),
            mean: us(latency.mean()),
        }
    }
}

/// The server's memory and CPU from /proc.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSummary {
    /// The pid sampled (with its descendants).
    pub pid: u32,
    /// VmRSS before the first connection, in KiB.
    pub rss_kib_before: u64,
    /// VmRSS at the end of the window (or hold), in KiB.
    pub rss_kib_after: u64,
    /// (after − before) / connections ok, in bytes.
    pub rss_per_conn_bytes: u64,
    /// Server CPU time during the window (or hold), in seconds.
    pub cpu_secs: f64,
    /// That CPU time divided by the messages that arrived in the window;
    /// absent for `--idle`.
    pub cpu_ns_per_delivery: Option<u64>,
}

impl Summary {
    /// The summary as readable text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let c = &self.connections;
        let _ = writeln!(
            out,
            "ws-realtime-load: {} run against {}",
            self.mode, self.url
        );
        let _ = writeln!(
            out,
            "  connections   {} ok, {} failed, {} dropped of {} (connected in {:.2} s, setup p99 {:.1} ms), {} channel(s)",
            c.ok, c.failed, c.dropped, c.requested, c.connect_secs, c.setup_p99_ms, self.channels
        );
        if let Some(p) = &self.publish {
            let _ = writeln!(
                out,
                "  publishing    {} at {}/s, {} B: {} of {} due started, {} accepted, {} failed, {} in the {:.1} s window, max lag {:.1} ms",
                p.via,
                p.rate,
                p.payload_bytes,
                p.attempted,
                p.scheduled,
                p.accepted,
                p.failed,
                p.sent,
                self.window_secs,
                p.max_lag_ms
            );
        }
        if let Some(d) = &self.deliveries {
            let _ = writeln!(
                out,
                "  deliveries    {} of {} expected, {} lost, {} duplicates, {:.0}/s",
                d.received, d.expected, d.lost, d.duplicates, d.per_sec
            );
        }
        if let Some(l) = &self.latency_us {
            let ms = |us: u64| us as f64 / 1_000.0;
            let _ = writeln!(
                out,
                "  latency (ms)  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                ms(l.max),
                ms(l.mean)
            );
        }
        if let Some(s) = &self.server {
            let _ = write!(
                out,
                "  server pid {}  RSS {:.1} → {:.1} MiB, {} B per connection, CPU {:.2} s",
                s.pid,
                s.rss_kib_before as f64 / 1024.0,
                s.rss_kib_after as f64 / 1024.0,
                s.rss_per_conn_bytes,
                s.cpu_secs
            );
            if let Some(ns) = s.cpu_ns_per_delivery {
                let _ = write!(out, ", {ns} ns per delivery");
            }
            out.push('\n');
        }
        if let Some(util) = self.tool_cpu_util {
            let _ = writeln!(
                out,
                "  this tool used {util:.2} CPU cores during the window"
            );
        }
        if let Some(s) = &self.slow_readers {
            let _ = writeln!(
                out,
                "  slow readers  {} of {} cut by the server; of the others {} ended with the last value of all {} keys, {} did not; {} messages after a newer one of their key (figures above are the fast readers')",
                s.cut,
                s.readers,
                s.last_values_correct,
                s.keys,
                s.last_values_wrong,
                s.out_of_order
            );
        }
        for error in &self.errors {
            let _ = writeln!(out, "  error: {error}");
        }
        out
    }
}

/// The once-a-second status line on stderr.
pub fn progress_line(
    elapsed_secs: f64,
    phase: &str,
    open: usize,
    requested: usize,
    deliveries_per_sec: u64,
    p99_ns: Option<u64>,
) -> String {
    let mut line = format!(
        "[{elapsed_secs:6.1}s] {phase:<7} connections {open}/{requested}  deliveries/s {deliveries_per_sec}"
    );
    if let Some(p99) = p99_ns {
        let _ = write!(line, "  p99 {:.2} ms", p99 as f64 / 1e6);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::Histogram;

    #[test]
    fn latency_percentiles_are_converted_to_microseconds_and_ordered() {
        let histogram = Histogram::default();
        for ms in 1..=1_000u64 {
            histogram.record(ms * 1_000_000);
        }
        let latency = LatencySummary::from_ns(&histogram.snapshot());
        assert!(latency.p50 <= latency.p90 && latency.p90 <= latency.p99);
        assert!(latency.p99 <= latency.p999 && latency.p999 <= latency.max);
        assert_eq!(latency.max, 1_000_000);
        assert!(latency.p50.abs_diff(500_000) < 5_000, "{}", latency.p50);
    }

    #[test]
    fn the_progress_line_shows_connections_rate_and_p99() {
        let line = progress_line(3.0, "window", 19, 20, 1500, Some(2_500_000));
        assert!(line.contains("connections 19/20"), "{line}");
        assert!(line.contains("deliveries/s 1500"), "{line}");
        assert!(line.contains("p99 2.50 ms"), "{line}");
    }
}
