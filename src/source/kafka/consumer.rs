//! The consuming loop: builds the librdkafka consumer for a mode, turns
//! each record into a routed [`Publish`], hands it to the bounded sink
//! (a full sink pauses consumption; librdkafka's own prefetch is capped by
//! `queued.max.messages.kbytes`), and in `group` mode stores the offset only
//! once the core has taken the message. A health monitor beside it asks the
//! brokers for metadata periodically and keeps `/ready` truthful.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::backfill::BackfillProgress;
use super::config::{KafkaConfig, KafkaMode, StartPosition};
use super::context::{KafkaContext, WarnThrottle};
use crate::core::Publish;
use crate::metrics::{Metrics, PartitionLabel, TopicLabel};
use crate::proto::position::Position;
use crate::source::{PublishSink, SinkClosed, SourceContext, SourceHealth};

/// Timings of the source, fixed in production and shortened in tests.
#[derive(Debug, Clone)]
pub struct KafkaTimings {
    /// How often the brokers are asked for metadata to judge readiness.
    pub health_interval: Duration,
    /// Minimum spacing of repeated warnings about the same outage.
    pub warn_interval: Duration,
    /// Suffix making the broadcast group id unique to this process; the
    /// server id when the caller has one.
    pub instance_id: Option<String>,
}

impl Default for KafkaTimings {
    fn default() -> Self {
        KafkaTimings {
            health_interval: Duration::from_secs(5),
            warn_interval: Duration::from_secs(30),
            instance_id: None,
        }
    }
}

type KafkaConsumer = StreamConsumer<KafkaContext>;

/// The librdkafka configuration for `config`: our defaults first, then the
/// operator's pass-through properties, which win.
pub(crate) fn client_config(config: &KafkaConfig, instance_id: Option<&str>) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "ws-realtime")
        // Bounded prefetch: with the bounded sink this caps memory when the
        // core falls behind.
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", "10000")
        // New partitions and newly created topics matching a ^regex are
        // noticed within this interval.
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set("allow.auto.create.topics", "false");
    latency_defaults(&mut client);
    let reset = match config.start {
        StartPosition::Latest => "latest",
        // A tail longer than the partition is out of range; it then starts
        // at the beginning rather than skipping to the end.
        StartPosition::Earliest | StartPosition::Backfill(_) => "earliest",
    };
    client.set("auto.offset.reset", reset);
    match config.mode {
        KafkaMode::Broadcast => {
            let suffix = instance_id.map(str::to_owned).unwrap_or_else(unique_suffix);
            client
                .set("group.id", format!("{}-{suffix}", config.group_id))
                .set("enable.auto.commit", "false")
                // The group has this process as its only member, yet some
                // brokers hold a rejoin (after a new topic matches a ^regex,
                // or a metadata change) until the session timeout nearly
                // runs out: librdkafka's mock cluster, which `dev` and the
                // tests use, waits session − 1 s, which with the default
                // 45 s stalled every message for 44 s.
                .set("session.timeout.ms", BROADCAST_SESSION_TIMEOUT_MS)
                .set("heartbeat.interval.ms", BROADCAST_HEARTBEAT_INTERVAL_MS);
        }
        KafkaMode::Group => {
            client
                .set("group.id", &config.group_id)
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000")
                // Offsets are stored by hand once the core has the message.
                .set("enable.auto.offset.store", "false")
                // A member that dies for good holds its partitions this
                // long (librdkafka's default is 45 s).
                .set("session.timeout.ms", GROUP_SESSION_TIMEOUT_MS);
            if let Some(member) = &config.static_member {
                // Static membership: a restarted replica with the same id
                // takes its partitions back at once, without a rebalance.
                client.set("group.instance.id", member);
            }
        }
    }
    for (name, value) in &config.properties {
        client.set(name, value);
    }
    client
}

/// The `group` mode session timeout: how long the partitions of a replica
/// that died without leaving stay unread (a static member does not leave the
/// group on shutdown either, so this also bounds the stall of a scale-down).
pub(crate) const GROUP_SESSION_TIMEOUT_MS: &str = "10000";

/// The `broadcast` mode session timeout (see `client_config`). Long enough
/// that a broker pause of a few seconds does not end the session (tansu's
/// outage test pauses it ~6 s), short enough to keep a mock rejoin short.
pub(crate) const BROADCAST_SESSION_TIMEOUT_MS: &str = "10000";

/// The `broadcast` mode heartbeat: under a third of its session timeout,
/// as Kafka advises, so one lost heartbeat does not end the session.
pub(crate) const BROADCAST_HEARTBEAT_INTERVAL_MS: &str = "3000";

/// Longest a fetch waits on an idle partition. librdkafka's default (500 ms)
/// is invisible on a broker that answers as soon as data arrives, but some
/// Kafka-protocol brokers (tansu, librdkafka's mock cluster) hold every fetch
/// for the full wait, and a record landing meanwhile waits with it. 5 ms
/// bounds that added latency; the cost is up to 200 empty fetch requests
/// per second per broker connection while idle.
pub(crate) const FETCH_WAIT_MAX_MS: &str = "5";

/// Low-latency settings shared by the consumer and the publish producer.
pub(crate) fn latency_defaults(client: &mut ClientConfig) {
    client
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        // Small requests must not wait for the peer's delayed ACK.
        .set("socket.nagle.disable", "true");
}

/// A suffix unique to this consumer so every replica (and every source in
/// one process) has its own broadcast group: process id, start time, and a
/// counter.
fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}-{:x}-{sequence}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

/// Runs the source until shutdown.
pub(crate) async fn run(config: KafkaConfig, timings: KafkaTimings, ctx: SourceContext) {
    let SourceContext {
        sink,
        health,
        mut shutdown,
        metrics,
    } = ctx;
    health.not_ready("connecting to the Kafka brokers");
    let backfill = match config.start {
        StartPosition::Backfill(n) => Some(n),
        _ => None,
    };
    let progress = BackfillProgress::new(backfill.is_some());
    let context = KafkaContext::new(
        health.clone(),
        backfill,
        progress.clone(),
        timings.warn_interval,
        matches!(config.mode, KafkaMode::Broadcast),
    );
    let created: Result<KafkaConsumer, _> =
        client_config(&config, timings.instance_id.as_deref()).create_with_context(context);
    let consumer = match created {
        Ok(c) => Arc::new(c),
        Err(e) => {
            return idle_until_shutdown(
                &health,
                &mut shutdown,
                format!("invalid Kafka configuration: {e}"),
            )
            .await;
        }
    };
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topics) {
        return idle_until_shutdown(&health, &mut shutdown, format!("cannot subscribe: {e}")).await;
    }
    tracing::info!(brokers = %config.brokers, topics = ?config.topics, mode = ?config.mode, "kafka: consuming");
    let monitor = tokio::spawn(monitor_health(
        consumer.clone(),
        health.clone(),
        metrics.clone(),
        config.topics.clone(),
        progress.clone(),
        timings.health_interval,
        shutdown.clone(),
    ));
    let mut delivery = Delivery {
        sink,
        metrics,
        mode: config.mode,
        processed: HashMap::new(),
        stored: HashMap::new(),
    };
    let record_warn = WarnThrottle::new(timings.warn_interval);
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            received = consumer.recv() => received,
        };
        let record = match received {
            Ok(message) => Record::from_message(&message),
            Err(e) => {
                // Partition EOFs, unknown topics, fetch errors: librdkafka
                // carries on by itself; one warning per interval is enough.
                if record_warn.allow() {
                    tracing::warn!(error = %e, "kafka: consumer error");
                }
                continue;
            }
        };
        let publish = record.to_publish(&config, &delivery.metrics);
        // The record that completes a partition's backfill is only counted
        // once the core holds it (and so, FIFO, all before it): `/ready`
        // must not promise history the core does not have yet.
        let completes = progress.completes(&record.topic, record.partition, record.offset);
        let outcome = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            outcome = delivery.deliver(publish, &record, completes) => outcome,
        };
        match outcome {
            Ok(()) => {
                progress.taken(&record.topic, record.partition, record.offset);
                if delivery.mode == KafkaMode::Group
                    && let Err(e) =
                        consumer.store_offset(&record.topic, record.partition, record.offset)
                {
                    tracing::warn!(error = %e, topic = %record.topic, "kafka: cannot store the offset");
                }
            }
            Err(SinkClosed) => break,
        }
    }
    monitor.abort();
    let _ = monitor.await;
    health.not_ready("stopped");
    let stored = std::mem::take(&mut delivery.stored);
    let mode = config.mode;
    // Committing and closing block on the brokers, so off the runtime.
    let closing = tokio::task::spawn_blocking(move || {
        if mode == KafkaMode::Group {
            commit_stored(&consumer, &stored);
        }
        consumer.unsubscribe();
        close(consumer);
    });
    if let Err(e) = closing.await {
        tracing::warn!(error = %e, "kafka: closing the consumer failed");
    }
    tracing::info!("kafka: stopped");
}

/// One received record, owned, so nothing borrows the consumer across an await.
struct Record {
    /// Routing input, the processed-counter label and the offset's topic.
    topic: String,
    /// Half of `pos`, and where the offset is stored.
    partition: i32,
    /// The other half of `pos`.
    offset: i64,
    /// Routing input for `{key}` templates.
    key: Option<Vec<u8>>,
    /// Forwarded as it is; the core decides JSON, text or binary.
    payload: Bytes,
}

impl Record {
    fn from_message<M: Message>(message: &M) -> Record {
        Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            // A tombstone (no payload) arrives as an empty text payload.
            payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        }
    }

    fn to_publish(&self, config: &KafkaConfig, metrics: &Metrics) -> Publish {
        let routed = config
            .router
            .route(&self.topic, self.key.as_deref(), &self.payload);
        if routed.fell_back {
            metrics.record_source_message("kafka", "routing_fallback");
        }
        Publish {
            channel: routed.channel,
            pos: Some(Position::Offset {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: self.offset,
            }),
            payload: self.payload.clone(),
            key: self.key.clone().map(Bytes::from),
        }
    }
}

/// Hands records to the sink and counts them.
struct Delivery {
    /// The bounded queue into the core.
    sink: PublishSink,
    /// Counters.
    metrics: Arc<Metrics>,
    /// In `group` mode delivery waits until the core has the message.
    mode: KafkaMode,
    /// Per-topic counters, cached so the hot path allocates no label.
    processed: HashMap<String, Counter>,
    /// The last offset taken by the core per partition, committed at shutdown.
    stored: HashMap<(String, i32), i64>,
}

impl Delivery {
    /// Hands `publish` over; with `wait`, returns only once the core has it.
    async fn deliver(
        &mut self,
        publish: Publish,
        record: &Record,
        wait: bool,
    ) -> Result<(), SinkClosed> {
        match self.mode {
            KafkaMode::Broadcast if wait => self.sink.publish_and_wait(publish).await?,
            KafkaMode::Broadcast => self.sink.publish(publish).await?,
            KafkaMode::Group => {
                self.sink.publish_and_wait(publish).await?;
                self.stored
                    .insert((record.topic.clone(), record.partition), record.offset);
            }
        }
        let counter = match self.processed.get(&record.topic) {
            Some(counter) => counter,
            None => {
                let counter = self
                    .metrics
                    .kafka_messages_processed
                    .get_or_create(&TopicLabel {
                        topic: record.topic.clone(),
                    })
                    .clone();
                self.processed
                    .entry(record.topic.clone())
                    .or_insert(counter)
            }
        };
        counter.inc();
        Ok(())
    }
}

/// Drops the last handle, which closes the consumer: it leaves the group
/// at once, so a successor gets the partitions without waiting out the
/// session timeout. A metadata request still in flight holds a handle for
/// at most its timeout.
fn close(mut consumer: Arc<KafkaConsumer>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Arc::try_unwrap(consumer) {
            Ok(last) => return drop(last),
            Err(shared) if Instant::now() < deadline => {
                consumer = shared;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                tracing::warn!("kafka: consumer still in use; it closes when released");
                return;
            }
        }
    }
}

/// Commits, synchronously, the offsets after the last messages the core took.
fn commit_stored(consumer: &KafkaConsumer, stored: &HashMap<(String, i32), i64>) {
    if stored.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in stored {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1)) {
            tracing::warn!(error = %e, "kafka: cannot build the final commit");
        }
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => tracing::info!(partitions = stored.len(), "kafka: offsets committed"),
        Err(e) => tracing::warn!(error = %e, "kafka: final commit failed"),
    }
}

async fn idle_until_shutdown(
    health: &SourceHealth,
    shutdown: &mut crate::shutdown::Shutdown,
    reason: String,
) {
    tracing::error!("kafka: {reason}");
    health.not_ready(reason);
    shutdown.wait().await;
}

/// Asks the brokers for metadata every `interval`: unreachable brokers or
/// missing topics make the source not ready (with a throttled warning);
/// a healthy answer makes it ready again. It also measures the lag of every
/// assigned partition (high watermark minus the consumer's position), which
/// must keep working while a full sink pauses the consuming loop. With
/// `backfill:N` the source stays not ready until `progress` is complete.
async fn monitor_health(
    consumer: Arc<KafkaConsumer>,
    health: SourceHealth,
    metrics: Arc<Metrics>,
    topics: Vec<String>,
    progress: BackfillProgress,
    interval: Duration,
    mut shutdown: crate::shutdown::Shutdown,
) {
    let patterns: Vec<(String, Option<regex::Regex>)> = topics
        .into_iter()
        .map(|t| {
            let regex = t
                .starts_with('^')
                .then(|| regex::Regex::new(&t).ok())
                .flatten();
            (t, regex)
        })
        .collect();
    let mut last_problem: Option<String> = None;
    let mut last_warned: Option<Instant> = None;
    let warn_every = Duration::from_secs(30).max(interval);
    loop {
        let client = consumer.clone();
        let timeout = interval.max(Duration::from_secs(2));
        let unknown = progress.clone();
        let answer = tokio::task::spawn_blocking(move || {
            // Watermarks the rebalance callback could not get in time.
            for (topic, partition) in unknown.unknown_targets() {
                if let Ok(watermarks) = client.fetch_watermarks(&topic, partition, timeout) {
                    unknown.set_target(&topic, partition, watermarks);
                }
            }
            let existing = client.fetch_metadata(None, timeout).map(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                    .map(|t| t.name().to_owned())
                    .collect::<Vec<_>>()
            })?;
            Ok::<_, rdkafka::error::KafkaError>((existing, partition_lags(&client, timeout)))
        })
        .await;
        let problem = match answer {
            Ok(Ok((existing, lags))) => {
                for (topic, partition, lag) in lags {
                    metrics
                        .kafka_consumer_lag
                        .get_or_create(&PartitionLabel {
                            topic,
                            partition: partition.to_string(),
                        })
                        .set(lag);
                }
                missing_topics(&patterns, &existing).or_else(|| progress.reason())
            }
            Ok(Err(e)) => Some(format!("broker unreachable: {e}")),
            Err(e) => Some(format!("metadata request failed: {e}")),
        };
        match &problem {
            None => {
                if last_problem
                    .as_ref()
                    .is_some_and(|p| p.starts_with("backfill"))
                {
                    tracing::info!("kafka: backfill complete");
                } else if last_problem.is_some() {
                    tracing::info!("kafka: brokers reachable and topics present again");
                }
                health.ready();
            }
            // Backfilling is progress, not a fault: logged, not warned.
            Some(reason) if reason.starts_with("backfill") => {
                if last_problem.as_ref() != Some(reason) {
                    tracing::debug!(reason = %reason, "kafka: not ready while backfilling");
                }
                health.not_ready(reason.clone());
            }
            Some(reason) => {
                let due = last_warned.is_none_or(|at| at.elapsed() >= warn_every);
                if due || last_problem.as_ref() != Some(reason) {
                    tracing::warn!(reason = %reason, "kafka: not ready; still retrying");
                    last_warned = Some(Instant::now());
                }
                health.not_ready(reason.clone());
            }
        }
        last_problem = problem;
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = progress.wait_done() => {}
        }
    }
}

/// (topic, partition, lag) of every assigned partition whose position is
/// known: the high watermark minus the next offset this consumer will read.
fn partition_lags(consumer: &KafkaConsumer, timeout: Duration) -> Vec<(String, i32, i64)> {
    let Ok(positions) = consumer.position() else {
        return Vec::new();
    };
    positions
        .elements()
        .iter()
        .filter_map(|elem| {
            let Offset::Offset(position) = elem.offset() else {
                return None;
            };
            let (_, high) = consumer
                .fetch_watermarks(elem.topic(), elem.partition(), timeout)
                .ok()?;
            Some((
                elem.topic().to_owned(),
                elem.partition(),
                (high - position).max(0),
            ))
        })
        .collect()
}

/// The configured topics (or patterns) the cluster does not have.
fn missing_topics(
    patterns: &[(String, Option<regex::Regex>)],
    existing: &[String],
) -> Option<String> {
    let missing: Vec<&str> = patterns
        .iter()
        .filter(|(name, regex)| match regex {
            Some(regex) => !existing.iter().any(|t| regex.is_match(t)),
            None => !existing.iter().any(|t| t == name),
        })
        .map(|(name, _)| name.as_str())
        .collect();
    (!missing.is_empty()).then(|| format!("topic missing: {}", missing.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn config(pairs: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig::from_settings(&Settings::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn broadcast_mode_uses_a_group_of_its_own_and_never_commits() {
        let config = config(&[("WS_KAFKA_GROUP_ID", "gw")]);
        let first = client_config(&config, None);
        let second = client_config(&config, None);
        let group = first.get("group.id").unwrap();
        assert!(group.starts_with("gw-"), "{group}");
        assert_ne!(
            Some(group),
            second.get("group.id"),
            "each process its own group"
        );
        assert_eq!(first.get("enable.auto.commit"), Some("false"));
        assert_eq!(first.get("session.timeout.ms"), Some("10000"));
        assert_eq!(first.get("heartbeat.interval.ms"), Some("3000"));
        let named = client_config(&config, Some("replica-7"));
        assert_eq!(named.get("group.id"), Some("gw-replica-7"));
    }

    #[test]
    fn group_mode_shares_the_group_and_stores_offsets_by_hand() {
        let config = config(&[("WS_KAFKA_MODE", "group"), ("WS_KAFKA_GROUP_ID", "gw")]);
        let client = client_config(&config, None);
        assert_eq!(client.get("group.id"), Some("gw"));
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("enable.auto.commit"), Some("true"));
        assert_eq!(client.get("session.timeout.ms"), Some("10000"));
        assert_eq!(client.get("group.instance.id"), None);
        let mut config = config;
        config.static_member = Some("replica-2".into());
        let client = client_config(&config, None);
        assert_eq!(client.get("group.instance.id"), Some("replica-2"));
        let broadcast = client_config(
            &super::super::KafkaConfig {
                mode: KafkaMode::Broadcast,
                ..config
            },
            None,
        );
        assert_eq!(
            broadcast.get("group.instance.id"),
            None,
            "broadcast groups have one member"
        );
    }

    #[test]
    fn fetches_wait_briefly_so_records_are_not_held_by_the_broker() {
        let client = client_config(&config(&[]), None);
        assert_eq!(client.get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(client.get("socket.nagle.disable"), Some("true"));
        let overridden = client_config(
            &config(&[("WS_KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "100")]),
            None,
        );
        assert_eq!(overridden.get("fetch.wait.max.ms"), Some("100"));
    }

    #[test]
    fn start_position_sets_the_reset_policy_and_properties_override_ours() {
        let latest = client_config(&config(&[]), None);
        assert_eq!(latest.get("auto.offset.reset"), Some("latest"));
        let backfill = client_config(&config(&[("WS_KAFKA_START", "backfill:5")]), None);
        assert_eq!(backfill.get("auto.offset.reset"), Some("earliest"));
        let overridden = client_config(
            &config(&[("WS_KAFKA_PROPERTY_QUEUED_MAX_MESSAGES_KBYTES", "1024")]),
            None,
        );
        assert_eq!(overridden.get("queued.max.messages.kbytes"), Some("1024"));
    }

    #[test]
    fn missing_topics_names_absent_topics_and_patterns_matching_nothing() {
        let patterns = vec![
            ("lines".to_owned(), None),
            ("gone".to_owned(), None),
            (
                r"^md\..*".to_owned(),
                Some(regex::Regex::new(r"^md\..*").unwrap()),
            ),
            (
                r"^none\..*".to_owned(),
                Some(regex::Regex::new(r"^none\..*").unwrap()),
            ),
        ];
        let existing = vec!["lines".to_owned(), "md.eod".to_owned()];
        assert_eq!(
            missing_topics(&patterns, &existing).as_deref(),
            Some(r"topic missing: gone, ^none\..*")
        );
        assert_eq!(missing_topics(&patterns[..1], &existing), None);
    }
}
