//! Prometheus metrics. The core emits [`Event`]s and the shell turns them into
//! these counters; sources report their own figures. Every update is an atomic
//! operation: no lock is taken per delivered message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::{CloseReason, DropReason, Event, Stats};

/// Every `reason` of `websocket_connections_closed_total`, exposed at zero.
const CLOSE_REASONS: [CloseReason; 11] = [
    CloseReason::ClientClosed,
    CloseReason::ConnectionLost,
    CloseReason::SlowConsumer,
    CloseReason::HeartbeatTimeout,
    CloseReason::TokenExpired,
    CloseReason::RateLimitExceeded,
    CloseReason::FrameTooBig,
    CloseReason::Shutdown,
    CloseReason::BadCompressedData,
    CloseReason::ProtocolError,
    CloseReason::InvalidUtf8,
];

/// Every `reason` of `websocket_messages_dropped_total`, exposed at zero.
const DROP_REASONS: [DropReason; 3] = [
    DropReason::DropOldest,
    DropReason::SlowConsumerClosed,
    DropReason::DelayOverrun,
];

/// The `reason` label of a drop.
fn drop_reason_label(reason: DropReason) -> &'static str {
    match reason {
        DropReason::DropOldest => "drop_oldest",
        DropReason::SlowConsumerClosed => "slow_consumer_closed",
        DropReason::DelayOverrun => "delay_overrun",
    }
}

/// Label set with one `reason`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (a stable snake_case word).
    pub reason: String,
}

/// Label set with one `topic`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// The Kafka topic.
    pub topic: String,
}

/// Label set for per-partition figures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// The Kafka topic.
    pub topic: String,
    /// The partition number.
    pub partition: String,
}

/// Label set of the build-info gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    /// The crate version.
    pub version: String,
}

/// Label set with one `source` and one `kind`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceKindLabel {
    /// The source (`kafka`, `redis`, `http`, `dev`).
    pub source: String,
    /// What happened (payload kind, routing fallback, …).
    pub kind: String,
}

/// Label set with one `worker` (its index, from 0).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    /// The worker's index.
    pub worker: String,
}

/// Every metric the server exposes at `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    registry: Registry,
    /// Active connections (named as the old service's dashboards expect).
    pub connections: Gauge,
    /// Connections ever opened.
    pub connections_opened: Counter,
    /// Connections closed, by reason.
    pub connections_closed: Family<ReasonLabel, Counter>,
    /// Frames handed to sockets.
    pub messages_sent: Counter,
    /// Frames read from clients.
    pub messages_received: Counter,
    /// Bytes handed to sockets.
    pub bytes_sent: Counter,
    /// Kafka messages taken by the core, per topic.
    pub kafka_messages_processed: Family<TopicLabel, Counter>,
    /// Kafka consumer lag per partition.
    pub kafka_consumer_lag: Family<PartitionLabel, Gauge>,
    /// Connections closed for silence.
    pub heartbeat_failures: Counter,
    /// How long connections lasted.
    pub connection_duration: Histogram,
    /// Connections closed as slow consumers.
    pub slow_consumer_disconnects: Counter,
    /// Messages that did not reach a subscriber, by reason.
    pub messages_dropped: Family<ReasonLabel, Counter>,
    /// Messages replaced by a newer value of their (channel, key) before a
    /// client got them (`conflate` policy, `maxRate`).
    pub messages_conflated: Counter,
    /// Client frames rejected by the rate limit.
    pub rate_limited: Counter,
    /// (connection, channel) subscriptions.
    pub subscriptions: Gauge,
    /// Channels with at least one subscriber.
    pub channels: Gauge,
    /// Messages held in history rings.
    pub history_messages: Gauge,
    /// Keys held in snapshot maps.
    pub history_snapshot_keys: Gauge,
    /// Bytes stream state accounts (bounded by `WS_HISTORY_MAX_BYTES`).
    pub history_bytes: Gauge,
    /// Stored messages and snapshot entries evicted by any bound.
    pub history_evictions: Counter,
    /// Time from a message's ingest to its frame being written.
    pub publish_to_send: Histogram,
    /// Messages by source and payload kind / routing outcome.
    pub source_messages: Family<SourceKindLabel, Counter>,
    /// Source outages (gaps in delivery), by source.
    pub source_gaps: Family<ReasonLabel, Counter>,
    /// Bytes handed to sockets, counting compressed messages at their plain
    /// size: with `bytes_sent`, what permessage-deflate saves.
    pub bytes_uncompressed: Counter,
    /// Open connections that negotiated permessage-deflate.
    pub deflate_connections: Gauge,
    /// Open connections per worker (`WS_WORKERS` > 1), to see how evenly
    /// accepted connections spread over the workers.
    pub worker_connections: Family<WorkerLabel, Gauge>,
    /// Bytes held in all connections' outbound queues (queued + being
    /// written): the process's part of what slow clients cost.
    pub outbound_bytes: Gauge,
    /// The most bytes one connection's outbound queue has held since start
    /// (stays within the per-client bound of docs/protocol.md).
    pub outbound_peak_bytes: Gauge,
    /// The core's saved-bytes total as last seen, so each stats update adds
    /// only what is new to `bytes_uncompressed`.
    compression_saved_seen: AtomicU64,
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            messages_sent: Counter::default(),
            messages_received: Counter::default(),
            bytes_sent: Counter::default(),
            kafka_messages_processed: Family::default(),
            kafka_consumer_lag: Family::default(),
            heartbeat_failures: Counter::default(),
            connection_duration: Histogram::new(exponential_buckets(0.1, 4.0, 12)),
            slow_consumer_disconnects: Counter::default(),
            messages_dropped: Family::default(),
            messages_conflated: Counter::default(),
            rate_limited: Counter::default(),
            subscriptions: Gauge::default(),
            channels: Gauge::default(),
            history_messages: Gauge::default(),
            history_snapshot_keys: Gauge::default(),
            history_bytes: Gauge::default(),
            history_evictions: Counter::default(),
            publish_to_send: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            source_messages: Family::default(),
            source_gaps: Family::default(),
            bytes_uncompressed: Counter::default(),
            deflate_connections: Gauge::default(),
            worker_connections: Family::default(),
            outbound_bytes: Gauge::default(),
            outbound_peak_bytes: Gauge::default(),
            compression_saved_seen: AtomicU64::new(0),
            registry: Registry::default(),
        };
        // A labelled family is not exposed until it has a series: create the
        // known reasons at zero so dashboards and alerts see them from the start.
        for reason in CLOSE_REASONS {
            let _ = metrics.connections_closed.get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            });
        }
        for reason in DROP_REASONS {
            let _ = metrics.messages_dropped.get_or_create(&ReasonLabel {
                reason: drop_reason_label(reason).to_owned(),
            });
        }
        // Counters are registered without `_total`: the encoder appends it.
        registry.register(
            "websocket_connections_total",
            "Active WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "websocket_worker_connections",
            "Active WebSocket connections per worker thread (WS_WORKERS > 1)",
            metrics.worker_connections.clone(),
        );
        registry.register(
            "websocket_connections_opened",
            "WebSocket connections opened",
            metrics.connections_opened.clone(),
        );
        registry.register(
            "websocket_connections_closed",
            "WebSocket connections closed, by reason",
            metrics.connections_closed.clone(),
        );
        registry.register(
            "websocket_messages_sent",
            "Frames written to clients",
            metrics.messages_sent.clone(),
        );
        registry.register(
            "websocket_messages_received",
            "Frames received from clients",
            metrics.messages_received.clone(),
        );
        registry.register(
            "websocket_bytes_sent",
            "Bytes written to clients",
            metrics.bytes_sent.clone(),
        );
        registry.register(
            "websocket_bytes_uncompressed",
            "Bytes written to clients, compressed messages counted at their plain size",
            metrics.bytes_uncompressed.clone(),
        );
        registry.register(
            "websocket_connections_deflate",
            "Active WebSocket connections that negotiated permessage-deflate",
            metrics.deflate_connections.clone(),
        );
        registry.register(
            "websocket_kafka_messages_processed",
            "Kafka messages taken by the core, per topic",
            metrics.kafka_messages_processed.clone(),
        );
        registry.register(
            "websocket_kafka_consumer_lag",
            "Kafka consumer lag in messages, per partition",
            metrics.kafka_consumer_lag.clone(),
        );
        registry.register(
            "websocket_heartbeat_failures",
            "Connections closed because they were silent past the timeout",
            metrics.heartbeat_failures.clone(),
        );
        registry.register(
            "websocket_connection_duration_seconds",
            "How long WebSocket connections lasted",
            metrics.connection_duration.clone(),
        );
        registry.register(
            "websocket_slow_consumer_disconnects",
            "Connections closed because their outbound queue overflowed",
            metrics.slow_consumer_disconnects.clone(),
        );
        registry.register(
            "websocket_messages_dropped",
            "Messages that did not reach a subscriber, by reason",
            metrics.messages_dropped.clone(),
        );
        registry.register(
            "websocket_messages_conflated",
            "Messages replaced by a newer value of their key before a slow or rate-limited client got them",
            metrics.messages_conflated.clone(),
        );
        registry.register(
            "websocket_rate_limited",
            "Client frames rejected by the inbound rate limit",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "websocket_subscriptions",
            "Active (connection, channel) subscriptions",
            metrics.subscriptions.clone(),
        );
        registry.register(
            "websocket_channels",
            "Channels with at least one subscriber",
            metrics.channels.clone(),
        );
        registry.register(
            "websocket_history_messages",
            "Messages held in per-channel history rings",
            metrics.history_messages.clone(),
        );
        registry.register(
            "websocket_history_snapshot_keys",
            "Keys held in per-channel snapshot maps",
            metrics.history_snapshot_keys.clone(),
        );
        registry.register(
            "websocket_history_bytes",
            "Bytes held by history and snapshots (frames plus bookkeeping), capped by WS_HISTORY_MAX_BYTES",
            metrics.history_bytes.clone(),
        );
        registry.register(
            "websocket_outbound_bytes",
            "Bytes held in all connections' outbound queues (queued or being written)",
            metrics.outbound_bytes.clone(),
        );
        registry.register(
            "websocket_outbound_peak_bytes",
            "The most bytes one connection's outbound queue has held since start",
            metrics.outbound_peak_bytes.clone(),
        );
        registry.register(
            "websocket_history_evictions",
            "Stored messages and snapshot entries evicted by the count, byte or age bounds",
            metrics.history_evictions.clone(),
        );
        registry.register(
            "websocket_publish_to_send_seconds",
            "Time from a message's ingest to its frame being written to a socket",
            metrics.publish_to_send.clone(),
        );
        registry.register(
            "websocket_source_messages",
            "Messages from sources, by source and payload kind or routing outcome",
            metrics.source_messages.clone(),
        );
        registry.register(
            "websocket_source_gaps",
            "Source outages during which messages may have been missed, by source",
            metrics.source_gaps.clone(),
        );
        // A gauge fixed at 1 (as `prometheus_build_info` is) rather than an
        // OpenMetrics `info`, which the classic text parser rejects.
        let build_info = Family::<BuildLabel, Gauge>::default();
        build_info
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "websocket_build_info",
            "Build information: always 1, the version in its label",
            build_info,
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Turns one core event into counter updates.
    pub fn record_event(&self, event: &Event) {
        match event {
            Event::Opened { .. } => {
                self.connections_opened.inc();
            }
            Event::Closed {
                reason, duration, ..
            } => {
                self.connections_closed
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str().to_owned(),
                    })
                    .inc();
                self.connection_duration.observe(duration.as_secs_f64());
            }
            Event::MessagesDropped { count, reason, .. } => {
                self.messages_dropped
                    .get_or_create(&ReasonLabel {
                        reason: drop_reason_label(*reason).to_owned(),
                    })
                    .inc_by(*count);
            }
            Event::MessagesConflated { count, .. } => {
                self.messages_conflated.inc_by(*count);
            }
            Event::SlowConsumer { .. } => {
                self.slow_consumer_disconnects.inc();
            }
            Event::HeartbeatFailure { .. } => {
                self.heartbeat_failures.inc();
            }
            Event::RateLimited { .. } => {
                self.rate_limited.inc();
            }
            Event::Subscribed { .. } | Event::Unsubscribed { .. } | Event::FrameRejected { .. } => {
            }
        }
    }

    /// Copies the core's table sizes into the gauges.
    pub fn record_stats(&self, stats: Stats) {
        self.connections.set(stats.connections as i64);
        self.subscriptions.set(stats.subscriptions as i64);
        self.channels.set(stats.channels as i64);
        self.deflate_connections
            .set(stats.deflate_connections as i64);
        let seen = self
            .compression_saved_seen
            .swap(stats.compression_saved_bytes, Ordering::Relaxed);
        self.bytes_uncompressed
            .inc_by(stats.compression_saved_bytes.saturating_sub(seen));
        self.history_messages.set(stats.history.messages as i64);
        self.history_snapshot_keys
            .set(stats.history.snapshot_keys as i64);
        self.history_bytes.set(stats.history.bytes as i64);
        self.outbound_bytes.set(stats.outbound_bytes as i64);
        let evicted = stats.history.evictions;
        self.history_evictions
            .inc_by(evicted.saturating_sub(self.history_evictions.get()));
    }

    /// One worker's share of the gauges when several cores run
    /// (`WS_WORKERS` > 1): each adds the change since its last report
    /// (`before`), so the totals are the sums over the workers. History is
    /// reported by one worker only (`history`): every worker holds the same
    /// history, so a sum would count it once per worker.
    pub fn record_worker_stats(&self, before: &Stats, stats: &Stats, history: bool) {
        let change = |gauge: &Gauge, before: usize, now: usize| {
            if now != before {
                gauge.inc_by(now as i64 - before as i64);
            }
        };
        change(&self.connections, before.connections, stats.connections);
        change(
            &self.subscriptions,
            before.subscriptions,
            stats.subscriptions,
        );
        change(&self.channels, before.channels, stats.channels);
        change(
            &self.deflate_connections,
            before.deflate_connections,
            stats.deflate_connections,
        );
        change(
            &self.outbound_bytes,
            before.outbound_bytes,
            stats.outbound_bytes,
        );
        self.bytes_uncompressed.inc_by(
            stats
                .compression_saved_bytes
                .saturating_sub(before.compression_saved_bytes),
        );
        if history {
            self.history_messages.set(stats.history.messages as i64);
            self.history_snapshot_keys
                .set(stats.history.snapshot_keys as i64);
            self.history_bytes.set(stats.history.bytes as i64);
            self.history_evictions.inc_by(
                stats
                    .history
                    .evictions
                    .saturating_sub(before.history.evictions),
            );
        }
    }

    /// The gauge of worker `index`'s open connections.
    pub fn worker_connections(&self, index: usize) -> Gauge {
        self.worker_connections
            .get_or_create(&WorkerLabel {
                worker: index.to_string(),
            })
            .clone()
    }

    /// Counts one write of `frames` frames and `bytes` bytes to a socket.
    pub fn record_write(&self, frames: usize, bytes: usize) {
        self.messages_sent.inc_by(frames as u64);
        self.bytes_sent.inc_by(bytes as u64);
        self.bytes_uncompressed.inc_by(bytes as u64);
    }

    /// Counts one message from `source` by `kind` (payload kind or routing outcome).
    pub fn record_source_message(&self, source: &str, kind: &str) {
        self.source_messages
            .get_or_create(&SourceKindLabel {
                source: source.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Observes the time from ingest to write.
    pub fn record_publish_to_send(&self, elapsed: Duration) {
        self.publish_to_send.observe(elapsed.as_secs_f64());
    }

    /// The content type of [`Metrics::encode`]'s output for a scraper that
    /// sent `accept`: OpenMetrics when asked for (Prometheus asks), else the
    /// classic text format, which the same text also satisfies.
    pub fn content_type(accept: Option<&str>) -> &'static str {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
