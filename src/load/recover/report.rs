//! What a `--recover` run reports: the storm's outcome per connection,
//! summed, as text or (`--json`) one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::{ClientReport, publish_counts, via};
use crate::load::LoadArgs;
use crate::load::plan::Plan;
use crate::load::publisher::PublishCounters;
use crate::load::subscriber::ConnectionCounters;

/// The result of one storm.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverSummary {
    /// Always `recover`.
    pub mode: &'static str,
    /// The WebSocket URL.
    pub url: String,
    /// Channels the connections were spread over.
    pub channels: usize,
    /// `--connections`.
    pub requested: usize,
    /// Connections subscribed before the storm.
    pub subscribed: usize,
    /// The storm itself.
    pub storm: StormSummary,
    /// The `--bystanders`, if any.
    pub bystanders: Option<BystanderSummary>,
    /// `http` or `kafka`.
    pub publish_via: &'static str,
    /// Publishes per second, through the whole run.
    pub publish_rate: f64,
    /// Publishes accepted.
    pub published: u64,
    /// Publishes refused or failed.
    pub publish_failed: u64,
    /// With `--server-pid`: the server's RSS in KiB just before the drop,
    /// at its highest while the storm was served, and at the end.
    pub server_rss_kib: Option<[u64; 3]>,
    /// Up to 8 distinct errors.
    pub errors: Vec<String>,
}

/// The reconnect storm's outcome, summed over connections.
#[derive(Debug, Clone, Serialize)]
pub struct StormSummary {
    /// `--offline`, in seconds: how long every connection stayed away.
    pub offline_secs: f64,
    /// Connections that reconnected and got the recover ack.
    pub reconnected: usize,
    /// Of those, acked `"recovered":true`.
    pub recovered_true: usize,
    /// Of those, acked `"recovered":false` (nothing replayed).
    pub recovered_false: usize,
    /// Messages published before the reconnect that arrived after it.
    pub replayed: u64,
    /// The fewest and most a connection had replayed.
    pub replayed_min: u64,
    /// See `replayed_min`.
    pub replayed_max: u64,
    /// Holes in any connection's stream (before or after the storm).
    pub gaps: u64,
    /// Messages missing in those holes.
    pub missing: u64,
    /// Messages a connection got twice.
    pub duplicates: u64,
    /// Reconnected connections that got a message published after their
    /// reconnect began (caught up with the live stream).
    pub caught_up: usize,
    /// Time from the reconnect to catching up, in ms: p50, p99, max.
    pub recover_ms: [f64; 3],
    /// Messages read in all.
    pub messages: u64,
}

/// What the storm did to connections that stayed.
#[derive(Debug, Clone, Serialize)]
pub struct BystanderSummary {
    /// `--bystanders`.
    pub requested: usize,
    /// Subscribed before the storm.
    pub subscribed: usize,
    /// Latency in ms (receive time minus the payload's stamp) before the
    /// drop: p50, p99.
    pub latency_before_ms: [f64; 2],
    /// The same from the drop to the end (the storm and its replays).
    pub latency_during_ms: [f64; 2],
    /// Holes in their streams.
    pub gaps: u64,
    /// Messages they got twice.
    pub duplicates: u64,
}

impl RecoverSummary {
    /// Whether every connection reconnected, recovered and caught up with
    /// no gap and no duplicate.
    pub fn clean(&self) -> bool {
        let storm = &self.storm;
        self.subscribed == self.requested
            && storm.reconnected == self.subscribed
            && storm.recovered_true == storm.reconnected
            && storm.caught_up == storm.reconnected
            && storm.gaps == 0
            && storm.duplicates == 0
            && self
                .bystanders
                .as_ref()
                .is_none_or(|b| b.subscribed == b.requested && b.gaps == 0 && b.duplicates == 0)
    }

    /// The summary as text.
    pub fn to_text(&self) -> String {
        let s = &self.storm;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "recover storm on {} ({} channel(s)): {}/{} subscribed, all dropped for {:.1} s while \
             publishing {:.0}/s via {}",
            self.url,
            self.channels,
            self.subscribed,
            self.requested,
            s.offline_secs,
            self.publish_rate,
            self.publish_via
        );
        let _ = writeln!(
            out,
            "reconnected {}: recovered true {}, false {}; caught up {}",
            s.reconnected, s.recovered_true, s.recovered_false, s.caught_up
        );
        let _ = writeln!(
            out,
            "replayed {} messages ({}–{} per connection); gaps {} ({} missing), duplicates {}",
            s.replayed, s.replayed_min, s.replayed_max, s.gaps, s.missing, s.duplicates
        );
        let [p50, p99, max] = s.recover_ms;
        let _ = writeln!(
            out,
            "time to recover: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
        );
        let _ = writeln!(
            out,
            "published {} ({} failed); {} messages read",
            self.published, self.publish_failed, s.messages
        );
        if let Some(b) = &self.bystanders {
            let _ = writeln!(
                out,
                "bystanders {}/{}: latency p50/p99 {:.1}/{:.1} ms before the drop, {:.1}/{:.1} ms \
                 from it on; gaps {}, duplicates {}",
                b.subscribed,
                b.requested,
                b.latency_before_ms[0],
                b.latency_before_ms[1],
                b.latency_during_ms[0],
                b.latency_during_ms[1],
                b.gaps,
                b.duplicates
            );
        }
        if let Some([before, peak, after]) = self.server_rss_kib {
            let _ = writeln!(
                out,
                "server RSS: {before} KiB before the drop, {peak} KiB at most during the storm, \
                 {after} KiB after"
            );
        }
        for error in &self.errors {
            let _ = writeln!(out, "error: {error}");
        }
        let _ = writeln!(
            out,
            "{}",
            if self.clean() {
                "result: every connection recovered with no gap and no duplicate"
            } else {
                "result: NOT clean (see the counts above)"
            }
        );
        out
    }
}

/// Sums the connections' reports.
pub(super) fn summarize(
    args: &LoadArgs,
    plan: &Plan,
    reports: &[ClientReport],
    publish: &PublishCounters,
    errors: &ConnectionCounters,
    [before, peak, after]: [Option<u64>; 3],
) -> RecoverSummary {
    let (bystanders, reports): (Vec<ClientReport>, Vec<ClientReport>) =
        reports.iter().cloned().partition(|r| r.bystander);
    let reports = &reports;
    let reconnected: Vec<&ClientReport> = reports.iter().filter(|r| r.reconnected).collect();
    let mut times: Vec<Duration> = reconnected.iter().filter_map(|r| r.caught_up).collect();
    times.sort_unstable();
    let quantile = |q: f64| -> f64 {
        if times.is_empty() {
            return 0.0;
        }
        let index = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
        times[index].as_secs_f64() * 1_000.0
    };
    let replayed = reconnected.iter().map(|r| r.replayed);
    let (published, publish_failed) = publish_counts(publish);
    RecoverSummary {
        mode: "recover",
        url: args.url.clone(),
        channels: plan.channels.len(),
        requested: plan.connections,
        subscribed: reports.iter().filter(|r| r.subscribed).count(),
        storm: StormSummary {
            offline_secs: args.offline.as_secs_f64(),
            reconnected: reconnected.len(),
            recovered_true: reconnected
                .iter()
                .filter(|r| r.recovered == Some(true))
                .count(),
            recovered_false: reconnected
                .iter()
                .filter(|r| r.recovered == Some(false))
                .count(),
            replayed: replayed.clone().sum(),
            replayed_min: replayed.clone().min().unwrap_or(0),
            replayed_max: replayed.max().unwrap_or(0),
            gaps: reports.iter().map(|r| r.gaps).sum(),
            missing: reports.iter().map(|r| r.missing).sum(),
            duplicates: reports.iter().map(|r| r.duplicates).sum(),
            caught_up: times.len(),
            recover_ms: [quantile(0.5), quantile(0.99), quantile(1.0)],
            messages: reports.iter().map(|r| r.messages).sum(),
        },
        bystanders: (args.bystanders > 0).then(|| {
            let mut before: Vec<u64> = bystanders
                .iter()
                .flat_map(|b| b.latency_before.clone())
                .collect();
            let mut during: Vec<u64> = bystanders
                .iter()
                .flat_map(|b| b.latency_during.clone())
                .collect();
            BystanderSummary {
                requested: args.bystanders,
                subscribed: bystanders.iter().filter(|b| b.subscribed).count(),
                latency_before_ms: [
                    micros_quantile(&mut before, 0.5),
                    micros_quantile(&mut before, 0.99),
                ],
                latency_during_ms: [
                    micros_quantile(&mut during, 0.5),
                    micros_quantile(&mut during, 0.99),
                ],
                gaps: bystanders.iter().map(|b| b.gaps).sum(),
                duplicates: bystanders.iter().map(|b| b.duplicates).sum(),
            }
        }),
        publish_via: via(plan),
        publish_rate: args.publish_rate,
        published,
        publish_failed,
        server_rss_kib: before.zip(peak).zip(after).map(|((b, p), a)| [b, p, a]),
        errors: errors.error_sample(),
    }
}

/// The `q` quantile of `samples` (µs) in ms; 0 when there are none.
fn micros_quantile(samples: &mut [u64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[index] as f64 / 1_000.0
}
