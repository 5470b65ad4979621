//! An embedded Kafka for `ws-realtime dev` and the tests: librdkafka's mock
//! cluster, a real Kafka-protocol listener on 127.0.0.1, owned by a producer
//! client that also feeds it. The real Kafka source consumes from it exactly
//! as it would from a production cluster, and `kcat -P -b ADDR -t lines`
//! can produce into it.

use std::time::Duration;

use rdkafka::client::Client;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::future_producer::FutureProducerContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// The mock cluster could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedKafkaError {
    /// librdkafka refused to create the client or the cluster.
    #[error("cannot start the embedded Kafka: {0}")]
    Start(String),
    /// A topic could not be created.
    #[error("cannot create topic {topic}: {message}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        message: String,
    },
    /// A message could not be produced.
    #[error("cannot produce to {topic}: {message}")]
    Produce {
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        message: String,
    },
}

/// A running mock cluster with one broker (id 1); dropped, it stops.
pub struct EmbeddedKafka {
    /// Owns the mock cluster (created through `test.mock.num.brokers`, so it
    /// lives exactly as long as this client) and produces into it.
    producer: FutureProducer,
    /// `127.0.0.1:PORT`, what consumers and kcat connect to.
    bootstrap: String,
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

/// The id librdkafka gives the mock's only broker.
const BROKER_ID: i32 = 1;

impl EmbeddedKafka {
    /// Starts a one-broker mock cluster and creates `topics` (name,
    /// partitions). Consumer groups get their first assignment at once
    /// instead of after the broker's usual 3 s initial rebalance delay.
    pub fn start(topics: &[(&str, i32)]) -> Result<EmbeddedKafka, EmbeddedKafkaError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .set("client.id", "ws-realtime-embedded")
            // The dev feed's records leave at once: `dev` shows live data.
            .set("linger.ms", "0")
            .create()
            .map_err(|e| EmbeddedKafkaError::Start(e.to_string()))?;
        let bootstrap = {
            let cluster = mock_cluster(producer.client())?;
            cluster.bootstrap_servers()
        };
        // SAFETY: the handle belongs to the client `producer` owns, which is
        // alive for the whole call; librdkafka only sets a delay in it.
        unsafe {
            let handle =
                rdkafka::bindings::rd_kafka_handle_mock_cluster(producer.client().native_ptr());
            if handle.is_null() {
                return Err(EmbeddedKafkaError::Start(
                    "no mock cluster on the client".into(),
                ));
            }
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(handle, 0);
        }
        let kafka = EmbeddedKafka {
            producer,
            bootstrap,
        };
        for (topic, partitions) in topics {
            kafka.create_topic(topic, *partitions)?;
        }
        Ok(kafka)
    }

    /// The bootstrap address (`127.0.0.1:PORT`).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (the mock does not implement the admin API's
    /// create_topics; this calls the mock directly).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), EmbeddedKafkaError> {
        mock_cluster(self.producer.client())?
            .create_topic(topic, partitions, 1)
            .map_err(|e| EmbeddedKafkaError::CreateTopic {
                topic: topic.to_owned(),
                message: e.to_string(),
            })
    }

    /// Stops the broker accepting connections (for outage tests).
    pub fn broker_down(&self) -> Result<(), EmbeddedKafkaError> {
        mock_cluster(self.producer.client())?
            .broker_down(BROKER_ID)
            .map_err(|e| EmbeddedKafkaError::Start(e.to_string()))
    }

    /// Lets the broker accept connections again.
    pub fn broker_up(&self) -> Result<(), EmbeddedKafkaError> {
        mock_cluster(self.producer.client())?
            .broker_up(BROKER_ID)
            .map_err(|e| EmbeddedKafkaError::Start(e.to_string()))
    }

    /// Produces one message and waits for the broker's acknowledgement;
    /// returns its (partition, offset).
    pub async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(i32, i64), EmbeddedKafkaError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        let delivery = self
            .producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| EmbeddedKafkaError::Produce {
                topic: topic.to_owned(),
                message: e.to_string(),
            })?;
        Ok((delivery.partition, delivery.offset))
    }

    /// Produces into a given partition and waits for the acknowledgement.
    pub async fn produce_to_partition(
        &self,
        topic: &str,
        partition: i32,
        payload: &[u8],
    ) -> Result<i64, EmbeddedKafkaError> {
        let record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(payload)
            .partition(partition);
        let delivery = self
            .producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| EmbeddedKafkaError::Produce {
                topic: topic.to_owned(),
                message: e.to_string(),
            })?;
        Ok(delivery.offset)
    }

    /// Starts recording the requests the broker receives, for
    /// measurements such as the idle fetch rate.
    pub fn track_requests(&self) -> Result<(), EmbeddedKafkaError> {
        let handle = self.native_cluster()?;
        // SAFETY: the handle is owned by `self.producer`, alive for the call.
        unsafe { rdkafka::bindings::rd_kafka_mock_start_request_tracking(handle) };
        Ok(())
    }

    /// How many requests with `api_key` (1 = Fetch, 0 = Produce) the broker
    /// received since tracking started or since the last call, which clears
    /// the record.
    pub fn take_request_count(&self, api_key: i16) -> Result<usize, EmbeddedKafkaError> {
        let handle = self.native_cluster()?;
        // SAFETY: the handle is alive for the call; the array librdkafka
        // returns holds `count` valid requests and is freed exactly once.
        unsafe {
            let mut count = 0_usize;
            let requests = rdkafka::bindings::rd_kafka_mock_get_requests(handle, &mut count);
            let mut matching = 0;
            if !requests.is_null() {
                for i in 0..count {
                    if rdkafka::bindings::rd_kafka_mock_request_api_key(*requests.add(i)) == api_key
                    {
                        matching += 1;
                    }
                }
                rdkafka::bindings::rd_kafka_mock_request_destroy_array(requests, count);
            }
            rdkafka::bindings::rd_kafka_mock_clear_requests(handle);
            Ok(matching)
        }
    }

    fn native_cluster(
        &self,
    ) -> Result<*mut rdkafka::bindings::rd_kafka_mock_cluster_t, EmbeddedKafkaError> {
        // SAFETY: reads the mock cluster pointer of the client `self` owns.
        let handle = unsafe {
            rdkafka::bindings::rd_kafka_handle_mock_cluster(self.producer.client().native_ptr())
        };
        if handle.is_null() {
            return Err(EmbeddedKafkaError::Start(
                "no mock cluster on the client".into(),
            ));
        }
        Ok(handle)
    }

    /// Waits (bounded) until everything queued has been acknowledged.
    pub fn flush(&self) {
        if let Err(e) = self.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(error = %e, "embedded kafka: flush failed");
        }
    }
}

fn mock_cluster(
    client: &Client<FutureProducerContext<DefaultClientContext>>,
) -> Result<MockCluster<'_, FutureProducerContext<DefaultClientContext>>, EmbeddedKafkaError> {
    client
        .mock_cluster()
        .ok_or_else(|| EmbeddedKafkaError::Start("no mock cluster on the client".into()))
}
