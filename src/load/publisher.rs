//! The publisher: an open-loop schedule (publish k is due at
//! `start + k / rate`, whatever the responses do) spread over a few workers,
//! each with its own keep-alive HTTP connection or sharing one Kafka
//! producer. Every payload carries the unix-ns time it was sent, which the
//! subscribers turn into latency.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::load::LoadError;
use crate::load::plan::{Endpoint, PublishTarget};
use crate::load::subscriber::{ConnectionCounters, unix_now_ns};

/// Longest a single publish may take before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the publisher does in one run.
#[derive(Debug, Clone)]
pub struct PublishSchedule {
    /// Channel names; publish k goes to `channels[k % len]`.
    pub channels: Vec<String>,
    /// Subscribers of each channel, so each accepted publish adds the right
    /// number of expected deliveries.
    pub subscribers: Vec<u64>,
    /// Publishes per second.
    pub rate: f64,
    /// Size of each `data` object.
    pub payload_bytes: usize,
    /// When publish 0 is due.
    pub start: Instant,
    /// No publish is due at or after this.
    pub until: Instant,
    /// The measured window in unix ns: publishes stamped inside it count.
    pub window_ns: (u64, u64),
    /// Workers, i.e. publishes in flight at most.
    pub concurrency: usize,
    /// Keys cycled over in a `key` payload field; 0 = none (`--keys`).
    pub keys: usize,
}

/// The publisher's counts.
#[derive(Debug, Default)]
pub struct PublishCounters {
    /// Publishes started.
    pub attempted: AtomicU64,
    /// Publishes the server (or Kafka) accepted, whenever stamped.
    pub accepted: AtomicU64,
    /// Publishes refused or failed.
    pub failed: AtomicU64,
    /// Accepted publishes stamped inside the window.
    pub sent_in_window: AtomicU64,
    /// Σ subscribers of the channel over `sent_in_window`.
    pub expected_in_window: AtomicU64,
    /// Worst delay between a publish's due time and its start, in µs: shows
    /// a publisher (or server) that could not keep the rate.
    pub max_lag_us: AtomicU64,
}

/// One way of delivering a payload to the server.
enum Transport {
    Http(HttpPublisher),
    Kafka {
        producer: FutureProducer,
        topic: Arc<str>,
    },
}

/// Runs the schedule to its end (or `deadline`), counting into `counters`
/// and noting errors in `errors`.
pub async fn run_publisher(
    target: &PublishTarget,
    schedule: Arc<PublishSchedule>,
    counters: Arc<PublishCounters>,
    errors: Arc<ConnectionCounters>,
) -> Result<(), LoadError> {
    let kafka = match target {
        PublishTarget::Kafka { brokers, .. } => Some(kafka_producer(brokers)?),
        PublishTarget::Http { .. } => None,
    };
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..schedule.concurrency {
        let transport = match (target, &kafka) {
            (PublishTarget::Http { endpoint, api_key }, _) => {
                Transport::Http(HttpPublisher::new(endpoint.clone(), api_key.clone()))
            }
            (PublishTarget::Kafka { topic, .. }, Some(producer)) => Transport::Kafka {
                producer: producer.clone(),
                topic: Arc::from(topic.as_str()),
            },
            (PublishTarget::Kafka { .. }, None) => unreachable!("the producer was made above"),
        };
        workers.spawn(publish_worker(
            worker,
            transport,
            schedule.clone(),
            counters.clone(),
            errors.clone(),
        ));
    }
    while workers.join_next().await.is_some() {}
    Ok(())
}

/// Runs the schedule on a thread of its own, with its own single-threaded
/// runtime, so a thousand busy subscribers on the caller's runtime cannot
/// delay a publish past its due time (on one core they did: the publisher
/// reached a quarter of the rate asked). The receiver yields the result.
pub fn spawn_publisher(
    target: PublishTarget,
    schedule: Arc<PublishSchedule>,
    counters: Arc<PublishCounters>,
    errors: Arc<ConnectionCounters>,
) -> Result<oneshot::Receiver<Result<(), LoadError>>, LoadError> {
    let (done_tx, done_rx) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError::invalid(format!("cannot build the publisher's runtime: {e}")))?;
    std::thread::Builder::new()
        .name("publisher".to_owned())
        .spawn(move || {
            let result = runtime.block_on(run_publisher(&target, schedule, counters, errors));
            let _ = done_tx.send(result);
        })
        .map_err(|e| LoadError::invalid(format!("cannot start the publisher thread: {e}")))?;
    Ok(done_rx)
}

fn kafka_producer(brokers: &str) -> Result<FutureProducer, LoadError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Latency is the point: send each message at once, not in batches.
        .set("linger.ms", "0")
        .set("message.timeout.ms", "5000")
        .create()
        .map_err(|e| LoadError::Kafka(e.to_string()))
}

async fn publish_worker(
    worker: usize,
    mut transport: Transport,
    schedule: Arc<PublishSchedule>,
    counters: Arc<PublishCounters>,
    errors: Arc<ConnectionCounters>,
) {
    let interval = Duration::from_secs_f64(1.0 / schedule.rate);
    let (window_start, window_end) = schedule.window_ns;
    let mut payload = Vec::with_capacity(schedule.payload_bytes + 128);
    for seq in (worker as u64..).step_by(schedule.concurrency) {
        let due = schedule.start + interval.mul_f64(seq as f64);
        if due >= schedule.until {
            break;
        }
        tokio::time::sleep_until(due).await;
        // A publish that could not even start before the window closed says
        // nothing about the window; stop rather than run on past it.
        if Instant::now() >= schedule.until {
            break;
        }
        let channel_index = (seq % schedule.channels.len() as u64) as usize;
        let channel = &schedule.channels[channel_index];
        if let Transport::Http(http) = &mut transport
            && let Err(error) = http.ready().await
        {
            counters.failed.fetch_add(1, Relaxed);
            errors.note_error(&error);
            continue;
        }
        counters
            .max_lag_us
            .fetch_max(due.elapsed().as_micros() as u64, Relaxed);
        counters.attempted.fetch_add(1, Relaxed);
        let ts = unix_now_ns();
        write_payload(&mut payload, ts, seq, schedule.payload_bytes);
        crate::load::slow_readers::add_key(&mut payload, seq, schedule.keys);
        let sent = match &mut transport {
            Transport::Http(http) => http.publish(channel, &payload).await,
            Transport::Kafka { producer, topic } => {
                let record = FutureRecord::<(), [u8]>::to(topic).payload(&payload);
                producer
                    .send(record, PUBLISH_TIMEOUT)
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| format!("Kafka produce failed: {e}"))
            }
        };
        match sent {
            Ok(()) => {
                counters.accepted.fetch_add(1, Relaxed);
                if (window_start..window_end).contains(&ts) {
                    counters.sent_in_window.fetch_add(1, Relaxed);
                    counters
                        .expected_in_window
                        .fetch_add(schedule.subscribers[channel_index], Relaxed);
                }
            }
            Err(error) => {
                counters.failed.fetch_add(1, Relaxed);
                errors.note_error(&error);
            }
        }
    }
}

/// `{"ts":<ts>,"seq":<seq>,"pad":"xx…"}`, padded to `size` bytes when it
/// is shorter.
pub fn write_payload(out: &mut Vec<u8>, ts: u64, seq: u64, size: usize) {
    out.clear();
    write!(out, "{{\"ts\":{ts},\"seq\":{seq},\"pad\":\"").expect("writing to a Vec cannot fail");
    let pad = size.saturating_sub(out.len() + 2);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
}

/// One keep-alive HTTP/1.1 connection to the publish endpoint.
struct HttpPublisher {
    /// Where to publish.
    endpoint: Endpoint,
    /// Sent as `X-API-Key`.
    api_key: String,
    /// The open connection, reopened after an error.
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpPublisher {
    fn new(endpoint: Endpoint, api_key: String) -> HttpPublisher {
        HttpPublisher {
            endpoint,
            api_key,
            sender: None,
        }
    }

    /// Connects if needed and waits until the connection can take a request,
    /// so the timestamp taken after this excludes connection setup.
    async fn ready(&mut self) -> Result<(), String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let connect = async {
                let stream = tokio::net::TcpStream::connect(self.endpoint.address).await?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(stream)
            };
            let stream = tokio::time::timeout(PUBLISH_TIMEOUT, connect)
                .await
                .map_err(|_| "publish connection timed out".to_owned())?
                .map_err(|e| format!("publish connection to {}: {e}", self.endpoint.address))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("publish connection handshake: {e}"))?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("set just above");
        if let Err(error) = sender.ready().await {
            self.sender = None;
            return Err(format!("publish connection closed: {error}"));
        }
        Ok(())
    }

    /// POSTs `{"channel":…,"data":payload}`; `Ok` on a 2xx answer.
    async fn publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), String> {
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| "publish connection not open".to_owned())?;
        let mut body = Vec::with_capacity(payload.len() + channel.len() + 32);
        body.extend_from_slice(b"{\"channel\":");
        serde_json::to_writer(&mut body, channel).expect("a string always serializes");
        body.extend_from_slice(b",\"data\":");
        body.extend_from_slice(payload);
        body.push(b'}');
        let request = hyper::Request::post(self.endpoint.path_and_query.as_str())
            .header(hyper::header::HOST, self.endpoint.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("x-api-key", self.api_key.as_str())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the publish request: {e}"))?;
        let exchange = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, exchange).await {
            Ok(Ok((status, _))) if status.is_success() => Ok(()),
            Ok(Ok((status, body))) => Err(format!(
                "publish answered HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
            Ok(Err(error)) => {
                self.sender = None;
                Err(format!("publish request failed: {error}"))
            }
            Err(_) => {
                self.sender = None;
                Err("publish request timed out".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::timestamps;

    #[test]
    fn payloads_are_padded_to_the_requested_size_and_carry_the_timestamp() {
        let mut out = Vec::new();
        write_payload(&mut out, 1_763_900_000_123_456_789, 42, 128);
        assert_eq!(out.len(), 128);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["ts"], 1_763_900_000_123_456_789u64);
        assert_eq!(json["seq"], 42);
        assert_eq!(
            timestamps(&out).collect::<Vec<_>>(),
            [1_763_900_000_123_456_789]
        );
    }

    #[test]
    fn a_size_below_the_minimum_gives_the_unpadded_payload() {
        let mut out = Vec::new();
        write_payload(&mut out, 5, 6, 1);
        assert_eq!(out, br#"{"ts":5,"seq":6,"pad":""}"#);
    }
}
