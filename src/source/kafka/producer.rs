//! The publish producer (`WS_PUBLISH_VIA=kafka`): `POST /api/publish`
//! produces each (channel, message) as one record to the publish topic,
//! key = channel (so one channel's records share a partition and keep their
//! order), the channel also in the `ws-channel` header for other readers.
//! Idempotent, `acks=all`: a record counts as stored only once every
//! in-sync replica has it, and librdkafka's retries never duplicate or
//! reorder it. Every replica consumes the topic in broadcast mode, so the
//! message reaches every replica's subscribers with a Kafka position.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::time::Instant;

use super::config::KafkaConfig;
use super::consumer::latency_defaults;
use super::context::WarnThrottle;
use crate::shutdown::Shutdown;
use crate::source::outcome::{BusRecord, Outcome};

/// The librdkafka producer behind [`KafkaPublisher`].
type PublishProducer = FutureProducer<ProducerContext>;

/// The record header carrying the channel (the key carries it too).
pub const CHANNEL_HEADER: &str = "ws-channel";

/// librdkafka callbacks of the producer: its errors (a broker down) are
/// retried by librdkafka itself; an operator wants one line now and then.
struct ProducerContext {
    /// One warning per interval.
    warn: WarnThrottle,
}

impl ClientContext for ProducerContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", "{facility}: {message}");
            }
            _ => tracing::debug!(target: "librdkafka", "{facility}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.warn.allow() {
            tracing::warn!(%error, reason, "kafka publish: producer error (librdkafka keeps retrying)");
        }
    }
}

/// The producer behind `POST /api/publish`.
pub struct KafkaPublisher {
    /// Idempotent, `acks=all`. Replaced by a new one after a fatal error
    /// (a broker that fences the producer when it bumps its epoch after a
    /// time-out): librdkafka never sends again through a producer in that state.
    producer: RwLock<Arc<PublishProducer>>,
    /// The producer's configuration, to create its replacement.
    producer_config: ClientConfig,
    /// The publish topic (`WS_PUBLISH_TOPIC`).
    topic: String,
    /// The connection settings, for the admin client that creates the topic.
    admin_config: ClientConfig,
    /// Why publishing cannot work (the topic is missing and may not be
    /// created), told to callers in the 503 until it is resolved.
    problem: Mutex<Option<String>>,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The producer's librdkafka configuration: connection settings and the
/// operator's pass-through properties from `config`, then what a stored-or-
/// refused answer needs, which the operator may not weaken.
pub(crate) fn producer_config(config: &KafkaConfig, timeout: Duration) -> ClientConfig {
    let mut client = connection_config(config);
    latency_defaults(&mut client);
    client
        .set("client.id", "ws-realtime-publish")
        // A publish is answered as soon as it is stored: no waiting for a
        // batch to fill (a burst still shares requests while one is in flight).
        .set("linger.ms", "0")
        // librdkafka gives a record up after this, so a 503 answered at the
        // deadline is not followed by a late retry for long.
        .set(
            "message.timeout.ms",
            timeout.as_millis().clamp(1, i32::MAX as u128).to_string(),
        )
        .set("enable.idempotence", "true")
        .set("acks", "all");
    client
}

/// Brokers and the operator's `WS_KAFKA_PROPERTY_*` (SASL, TLS, …).
fn connection_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (name, value) in &config.properties {
        // Consumer-only properties would draw a librdkafka warning per client.
        if !is_consumer_only(name) {
            client.set(name, value);
        }
    }
    client
}

fn is_consumer_only(name: &str) -> bool {
    name.starts_with("fetch.")
        || name.starts_with("group.")
        || name.starts_with("queued.")
        || name.starts_with("auto.")
        || name.starts_with("enable.auto.")
        || matches!(
            name,
            "session.timeout.ms"
                | "heartbeat.interval.ms"
                | "max.poll.interval.ms"
                | "partition.assignment.strategy"
                | "isolation.level"
                | "check.crcs"
        )
}

/// Errors after which the broker no longer accepts this producer's id or
/// epoch (a broker that fences an idempotent producer when it bumps its
/// epoch after a time-out, as tansu does): every later record would fail.
fn is_identity_lost(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
    )
}

fn create_producer(config: &ClientConfig) -> Result<PublishProducer, ProducerError> {
    config
        .create_with_context(ProducerContext {
            warn: WarnThrottle::new(Duration::from_secs(30)),
        })
        .map_err(|e| ProducerError(e.to_string()))
}

/// The producer could not be created (a bad pass-through property).
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka publish producer: {0}")]
pub struct ProducerError(String);

impl KafkaPublisher {
    /// A producer for `topic` on the cluster of `config`, waiting at most
    /// `timeout` for each record's acknowledgement.
    pub fn new(
        config: &KafkaConfig,
        topic: &str,
        timeout: Duration,
    ) -> Result<KafkaPublisher, ProducerError> {
        let client_config = producer_config(config, timeout);
        let producer = create_producer(&client_config)?;
        Ok(KafkaPublisher {
            producer: RwLock::new(Arc::new(producer)),
            producer_config: client_config,
            topic: topic.to_owned(),
            admin_config: connection_config(config),
            problem: Mutex::new(None),
        })
    }

    /// The publish topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Enqueues every record in order (so one channel's records reach the
    /// partition in publish order), then waits for each acknowledgement
    /// until `deadline`.
    pub async fn publish(&self, records: Vec<BusRecord>, deadline: Instant) -> Vec<Outcome> {
        let problem = self.problem().map(|p| format!("{p}; "));
        let mut producer = self.current();
        if producer.client().fatal_error().is_some() {
            producer = self.replace(&producer);
        }
        let mut pending = Vec::with_capacity(records.len());
        for record in &records {
            pending.push(self.enqueue(&producer, record, deadline).await);
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        let mut identity_lost = false;
        for enqueued in pending {
            let outcome = match enqueued {
                Err(reason) => Outcome::Failed(reason),
                Ok(delivery) => match tokio::time::timeout_at(deadline, delivery).await {
                    Ok(Ok(Ok(delivery))) => Outcome::Stored(Some(format!(
                        "{}:{}:{}",
                        self.topic, delivery.partition, delivery.offset
                    ))),
                    Ok(Ok(Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                        _,
                    )))) => self.timed_out(problem.as_deref()),
                    Ok(Ok(Err((error, _)))) => {
                        identity_lost |= error.rdkafka_error_code().is_some_and(is_identity_lost);
                        Outcome::Failed(format!(
                            "{}the broker refused the record: {error}",
                            problem.as_deref().unwrap_or("")
                        ))
                    }
                    Ok(Err(_canceled)) => {
                        Outcome::Failed("the producer was closed before an answer".into())
                    }
                    Err(_elapsed) => self.timed_out(problem.as_deref()),
                },
            };
            outcomes.push(outcome);
        }
        if identity_lost || producer.client().fatal_error().is_some() {
            self.replace(&producer);
        }
        outcomes
    }

    /// The producer in use.
    fn current(&self) -> Arc<PublishProducer> {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces `failed` (unless another request already did) with a new
    /// producer and returns the one now in use. The records it held were
    /// answered 503: not known to be stored.
    fn replace(&self, failed: &Arc<PublishProducer>) -> Arc<PublishProducer> {
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&current, failed) {
            let reason = failed
                .client()
                .fatal_error()
                .map(|(code, text)| format!("{code}: {text}"))
                .unwrap_or_else(|| "the broker fenced its producer id".to_owned());
            match create_producer(&self.producer_config) {
                Ok(fresh) => {
                    tracing::warn!(%reason, "kafka publish: the producer failed for good; using a new one");
                    let old = std::mem::replace(&mut *current, Arc::new(fresh));
                    // Dropping a producer waits for its threads: not on the runtime.
                    std::thread::spawn(move || drop(old));
                }
                Err(e) => {
                    tracing::error!(%reason, error = %e, "kafka publish: cannot replace the failed producer")
                }
            }
        }
        current.clone()
    }

    /// No acknowledgement in time: a plain time-out, unless a known
    /// problem (the topic cannot be created) explains it.
    fn timed_out(&self, problem: Option<&str>) -> Outcome {
        match problem {
            Some(problem) => Outcome::Failed(format!("{problem}no acknowledgement in time")),
            None => Outcome::TimedOut,
        }
    }

    /// Hands one record to librdkafka; waits (until `deadline`) only while
    /// its local queue is full.
    async fn enqueue(
        &self,
        producer: &PublishProducer,
        record: &BusRecord,
        deadline: Instant,
    ) -> Result<rdkafka::producer::DeliveryFuture, String> {
        loop {
            let headers = OwnedHeaders::new().insert(Header {
                key: CHANNEL_HEADER,
                value: Some(record.channel.as_bytes()),
            });
            let future_record = FutureRecord::to(&self.topic)
                .key(record.channel.as_bytes())
                .payload(&record.payload[..])
                .headers(headers);
            match producer.send_result(future_record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(format!("cannot queue the record: {error}")),
            }
        }
    }

    /// Why publishing cannot work right now, if known.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }

    /// Makes sure the publish topic exists: asks for its metadata (which
    /// creates it on a broker that auto-creates topics), else creates it with
    /// the broker's default partitions and replication. Retries while the
    /// brokers are unreachable, until shutdown; a refusal (not authorized,
    /// a policy) is logged as an error naming `WS_PUBLISH_TOPIC` and kept
    /// for the 503 answers, and is retried every `retry_max`.
    pub async fn ensure_topic(self: Arc<Self>, mut shutdown: Shutdown, retry_max: Duration) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.ensure_once().await {
                Ok(()) => {
                    if self.problem().is_some() {
                        tracing::info!(topic = %self.topic, "kafka publish: topic available");
                    }
                    self.set_problem(None);
                    return;
                }
                Err(problem) => {
                    if self.problem().as_deref() != Some(problem.as_str()) {
                        tracing::error!(topic = %self.topic, "kafka publish: {problem}");
                    }
                    self.set_problem(Some(problem));
                }
            }
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(retry_max);
        }
    }

    async fn ensure_once(self: &Arc<Self>) -> Result<(), String> {
        if self.topic_exists().await? {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self
            .admin_config
            .create()
            .map_err(|e| format!("cannot create an admin client: {e}"))?;
        // -1: the broker's default partition count and replication factor.
        let new_topic = NewTopic::new(&self.topic, -1, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
        let created = admin.create_topics([&new_topic], &options).await;
        let refusal = match created.as_deref() {
            Ok([Ok(_)]) | Ok([Err((_, RDKafkaErrorCode::TopicAlreadyExists))]) => None,
            Ok([Err((_, code))]) => Some(format!("{code}")),
            Ok(_) => Some("an unexpected answer".to_owned()),
            Err(e) => Some(e.to_string()),
        };
        // Created or not, the topic is usable once its metadata shows it
        // (a broker may also have created it on the metadata request).
        for _ in 0..10 {
            if self.topic_exists().await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "the publish topic {:?} (WS_PUBLISH_TOPIC) is missing and cannot be created ({}); \
             create it, or let this server create topics",
            self.topic,
            refusal.unwrap_or_else(|| "not visible after creation".into())
        ))
    }

    /// Whether the brokers list the topic with partitions; an error when no
    /// broker answers.
    async fn topic_exists(self: &Arc<Self>) -> Result<bool, String> {
        let this = self.clone();
        // The metadata call blocks (bounded by its timeout): off the runtime.
        let answer = tokio::task::spawn_blocking(move || {
            let metadata = this
                .current()
                .client()
                .fetch_metadata(Some(&this.topic), Duration::from_secs(5))?;
            Ok::<_, KafkaError>(metadata.topics().iter().any(|t| {
                t.name() == this.topic && t.error().is_none() && !t.partitions().is_empty()
            }))
        })
        .await;
        match answer {
            Ok(Ok(exists)) => Ok(exists),
            Ok(Err(e)) => Err(format!("brokers unreachable: {e}")),
            Err(e) => Err(format!("metadata request failed: {e}")),
        }
    }

    /// Waits (bounded) for records still in flight, at shutdown.
    pub fn flush(&self) {
        if let Err(e) = self.current().flush(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "kafka publish: flush at shutdown failed");
        }
    }
}
