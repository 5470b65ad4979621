//! librdkafka callbacks: errors become readiness and rate-limited warnings
//! (librdkafka retries a dead broker many times a second, an operator wants
//! one line now and then), and the rebalance callback applies `backfill:N`
//! to newly assigned partitions and, in `broadcast` mode, resumes a
//! partition a rebalance took away where it stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use super::backfill::BackfillProgress;
use crate::source::SourceHealth;

/// How long the rebalance callback waits for a partition's high watermark
/// (it blocks consumption meanwhile; the health monitor retries).
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(2);

/// Emits at most one warning per `every`.
#[derive(Debug)]
pub(crate) struct WarnThrottle {
    /// Minimum spacing between warnings.
    every: Duration,
    /// When the last warning went out.
    last: Mutex<Option<Instant>>,
}

impl WarnThrottle {
    pub(crate) fn new(every: Duration) -> WarnThrottle {
        WarnThrottle {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether a warning may be logged now (and records that it was).
    pub(crate) fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

/// The consumer's callbacks and the state they share with the source.
pub(crate) struct KafkaContext {
    /// Broker errors turn the source not ready right away; the health
    /// monitor turns it ready again once metadata answers.
    health: SourceHealth,
    /// `backfill:N`: newly assigned partitions start N messages before the end.
    backfill: Option<u64>,
    /// Partitions already backfilled, so a later rebalance does not replay
    /// them again.
    backfilled: Mutex<HashSet<(String, i32)>>,
    /// What the backfilled partitions still lack before `/ready`.
    progress: BackfillProgress,
    /// `broadcast` mode only (`None` in `group` mode, which resumes from its
    /// committed offsets): the next offset of each partition a rebalance
    /// revoked. A broadcast group never commits, so without this a
    /// rebalance (a new topic matching a ^regex, a partition added) would
    /// restart the partition at `WS_KAFKA_START`: everything again with
    /// `earliest`, a gap with `latest`.
    resume_at: Option<Mutex<HashMap<(String, i32), i64>>>,
    /// Keeps broker-error warnings to one per interval.
    warn: WarnThrottle,
}

impl KafkaContext {
    pub(crate) fn new(
        health: SourceHealth,
        backfill: Option<u64>,
        progress: BackfillProgress,
        warn_every: Duration,
        resume_revoked: bool,
    ) -> KafkaContext {
        KafkaContext {
            health,
            backfill,
            backfilled: Mutex::new(HashSet::new()),
            progress,
            resume_at: resume_revoked.then(|| Mutex::new(HashMap::new())),
            warn: WarnThrottle::new(warn_every),
        }
    }

    /// Starts newly assigned partitions N records before their end and
    /// records the high watermark each must reach before `/ready`. Asking
    /// the watermark here, before the partition is assigned, makes it the
    /// end as of assignment; a broker that does not answer in time leaves it
    /// to the health monitor.
    fn apply_backfill(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let Some(count) = self.backfill else { return };
        let mut done = self.backfilled.lock().unwrap_or_else(|p| p.into_inner());
        for mut elem in tpl.elements() {
            let key = (elem.topic().to_owned(), elem.partition());
            if done.insert(key) {
                let tail = i64::try_from(count).unwrap_or(i64::MAX);
                if let Err(e) = elem.set_offset(Offset::OffsetTail(tail)) {
                    tracing::warn!(error = %e, "kafka: cannot set the backfill offset");
                }
                let watermarks = consumer
                    .fetch_watermarks(elem.topic(), elem.partition(), WATERMARK_TIMEOUT)
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, topic = elem.topic(), "kafka: backfill watermark not known yet");
                    })
                    .ok();
                self.progress
                    .assigned(elem.topic(), elem.partition(), watermarks);
            }
        }
    }
}

impl KafkaContext {
    /// Records where each partition about to be revoked stopped: the
    /// consumer's position is the offset after the last message this source
    /// took, so nothing taken is read twice and nothing untaken is skipped.
    fn remember_positions(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let Some(resume_at) = &self.resume_at else {
            return;
        };
        let positions = match consumer.position() {
            Ok(positions) => positions,
            Err(e) => {
                tracing::warn!(error = %e, "kafka: positions unknown at rebalance; revoked partitions restart at WS_KAFKA_START");
                return;
            }
        };
        let mut resume_at = resume_at.lock().unwrap_or_else(|p| p.into_inner());
        for elem in revoked.elements() {
            let position = positions
                .find_partition(elem.topic(), elem.partition())
                .map(|found| found.offset());
            if let Some(Offset::Offset(next)) = position {
                resume_at.insert((elem.topic().to_owned(), elem.partition()), next);
            }
        }
    }

    /// Starts each newly assigned partition that a rebalance revoked
    /// earlier where it stopped.
    fn apply_resume(&self, assigned: &mut TopicPartitionList) {
        let Some(resume_at) = &self.resume_at else {
            return;
        };
        let mut resume_at = resume_at.lock().unwrap_or_else(|p| p.into_inner());
        for mut elem in assigned.elements() {
            if let Some(next) = resume_at.remove(&(elem.topic().to_owned(), elem.partition())) {
                if let Err(e) = elem.set_offset(Offset::Offset(next)) {
                    tracing::warn!(error = %e, "kafka: cannot resume a partition where it stopped");
                }
            }
        }
    }
}

/// Errors that mean no broker can be reached (as opposed to one bad message
/// or one request failing).
fn is_connectivity_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::SSL
    )
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // librdkafka logs every failed reconnect; the error callback and the
        // health monitor turn those into throttled warnings instead.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", "{facility}: {message}");
            }
            _ => tracing::debug!(target: "librdkafka", "{facility}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error
            .rdkafka_error_code()
            .is_some_and(|code| matches!(code, RDKafkaErrorCode::FencedInstanceId))
            || reason.contains("FENCED_INSTANCE_ID")
        {
            // Static membership: another consumer joined the group with this
            // replica's group.instance.id, and the broker fenced this one.
            tracing::error!(
                reason,
                "kafka: another replica joined the consumer group with the same WS_SERVER_ID; \
                 this one no longer consumes: every replica needs its own WS_SERVER_ID in group mode"
            );
            self.health.not_ready(
                "fenced: another replica uses the same WS_SERVER_ID (group.instance.id)".to_owned(),
            );
            return;
        }
        let connectivity = error
            .rdkafka_error_code()
            .is_some_and(is_connectivity_error);
        if connectivity {
            self.health
                .not_ready(format!("broker unreachable: {reason}"));
        }
        if self.warn.allow() {
            tracing::warn!(%error, reason, "kafka: client error (librdkafka keeps retrying)");
        } else {
            tracing::debug!(%error, reason, "kafka: client error");
        }
    }

    fn stats(&self, _statistics: Statistics) {
        // Lag is measured by the health monitor, which keeps running while a
        // full sink pauses this consumer (and with it these callbacks).
    }
}

impl ConsumerContext for KafkaContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            base_consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.apply_backfill(base_consumer, tpl);
                self.apply_resume(tpl);
                tracing::info!(partitions = tpl.count(), "kafka: partitions assigned");
                if cooperative {
                    base_consumer.incremental_assign(tpl)
                } else {
                    base_consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = tpl.count(), "kafka: partitions revoked");
                self.remember_positions(base_consumer, tpl);
                for elem in tpl.elements() {
                    self.progress.revoked(elem.topic(), elem.partition());
                }
                if cooperative {
                    base_consumer.incremental_unassign(tpl)
                } else {
                    base_consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?RDKafkaErrorCode::from(other), "kafka: rebalance failed");
                base_consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "kafka: applying the rebalance failed");
        }
    }
}
