//! The HTTP publish source: `POST /api/publish` with
//! `{"channel":"…","data":<json>}` or `{"channels":[…],"data":<json>}`, and
//! `POST /api/publish/batch` with a JSON array of such messages, guarded by
//! an API key in `X-API-Key` or `Authorization: apikey <key>`. The raw JSON
//! text of `data` is forwarded verbatim: the core embeds it in the
//! `message` frame without re-serializing it. Messages go through the
//! [`Bus`] `WS_PUBLISH_VIA` names, and a 200 is answered only once the bus
//! has stored every one of them.

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::config::PublishSettings;
use crate::proto::channel;
use crate::source::bus::Bus;
use crate::source::outcome::{BusRecord, Outcome};
use crate::source::{SourceContext, SourceFuture};

/// Most channels one publish request may name.
pub const MAX_CHANNELS_PER_PUBLISH: usize = 100;

/// The answer to a publish request: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResponse {
    /// HTTP status: 200, 400, 401, 413 or 503.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

impl PublishResponse {
    fn error(status: u16, error: &str, message: impl Into<String>) -> PublishResponse {
        PublishResponse {
            status,
            body: serde_json::json!({ "error": error, "message": message.into() }).to_string(),
        }
    }

    fn ok(body: serde_json::Value) -> PublishResponse {
        PublishResponse {
            status: 200,
            body: body.to_string(),
        }
    }
}

/// The `POST /api/publish` endpoint.
#[derive(Debug, Clone)]
pub struct PublishApi {
    /// The key callers must present.
    api_key: String,
    /// Where messages go: the core, or Kafka / Redis for every replica.
    bus: Bus,
    /// Largest accepted body.
    max_body_bytes: usize,
    /// How long a request waits for the bus before answering 503.
    timeout: std::time::Duration,
    /// Most messages in one batch.
    max_batch: usize,
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// One validated message of a request.
struct Message {
    /// Its channels, in request order.
    channels: Vec<String>,
    /// Whether it named one `channel` (its `pos` is then a string, not an array).
    single: bool,
    /// The raw `data` text.
    payload: Bytes,
}

/// Which endpoint a body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishKind {
    /// `POST /api/publish`: one message.
    Single,
    /// `POST /api/publish/batch`: an array of messages.
    Batch,
}

impl PublishApi {
    /// An endpoint guarded by `api_key`, publishing through `bus` with the
    /// timeout and batch limit of `settings`.
    pub fn new(
        api_key: String,
        bus: Bus,
        max_body_bytes: usize,
        settings: &PublishSettings,
    ) -> PublishApi {
        PublishApi {
            api_key,
            bus,
            max_body_bytes,
            timeout: settings.timeout,
            max_batch: settings.max_batch,
        }
    }

    /// Answers one request.
    pub async fn handle(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
        kind: PublishKind,
    ) -> PublishResponse {
        if !self.authorized(request.headers()) {
            return PublishResponse::error(
                401,
                "unauthorized",
                "a valid API key is required in X-API-Key or Authorization: apikey <key>",
            );
        }
        let declared = request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_body_bytes as u64) {
            return self.too_large();
        }
        let body = http_body_util::Limited::new(request.into_body(), self.max_body_bytes);
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return self.too_large();
            }
            Err(error) => {
                return PublishResponse::error(
                    400,
                    "bad_request",
                    format!("cannot read the body: {error}"),
                );
            }
        };
        match kind {
            PublishKind::Single => self.publish(&bytes).await,
            PublishKind::Batch => self.publish_batch(&bytes).await,
        }
    }

    /// Publishes a request body (already authorized and size-checked).
    pub async fn publish(&self, body: &[u8]) -> PublishResponse {
        let message = match parse_message(body) {
            Ok(message) => message,
            Err(response) => return response,
        };
        let outcomes = self.send(std::slice::from_ref(&message)).await;
        if let Some(failure) = self.failure(&outcomes, 1, |_| 0) {
            return failure;
        }
        let mut answer = serde_json::json!({
            "published": message.channels.len(),
            "channels": message.channels,
        });
        if let Some(pos) = positions(&message, &outcomes) {
            answer["pos"] = pos;
        }
        PublishResponse::ok(answer)
    }

    /// Publishes a batch body: a JSON array of up to `max_batch` messages,
    /// all validated before any is sent, answered once all are stored.
    pub async fn publish_batch(&self, body: &[u8]) -> PublishResponse {
        let items: Vec<&RawValue> = match serde_json::from_slice(body) {
            Ok(items) => items,
            Err(error) => {
                return PublishResponse::error(
                    400,
                    "bad_request",
                    format!(
                        "expected a JSON array of {{\"channel\":\"…\",\"data\":…}} messages: {error}"
                    ),
                );
            }
        };
        if items.is_empty() {
            return PublishResponse::error(400, "bad_request", "the batch is empty");
        }
        if items.len() > self.max_batch {
            return PublishResponse::error(
                400,
                "too_many_messages",
                format!(
                    "{} messages; a batch holds at most {} (WS_MAX_PUBLISH_BATCH)",
                    items.len(),
                    self.max_batch
                ),
            );
        }
        let mut messages = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match parse_message(item.get().as_bytes()) {
                Ok(message) => messages.push(message),
                Err(response) => return at_index(response, index),
            }
        }
        let outcomes = self.send(&messages).await;
        // Outcome k belongs to the message whose channels cover it.
        let owners: Vec<usize> = messages
            .iter()
            .enumerate()
            .flat_map(|(i, m)| std::iter::repeat_n(i, m.channels.len()))
            .collect();
        if let Some(failure) = self.failure(&outcomes, messages.len(), |k| owners[k]) {
            return failure;
        }
        let mut offset = 0;
        let results: Vec<serde_json::Value> = messages
            .iter()
            .map(|message| {
                let mine = &outcomes[offset..offset + message.channels.len()];
                offset += message.channels.len();
                let mut result = serde_json::json!({ "channels": message.channels });
                if let Some(pos) = positions(message, mine) {
                    result["pos"] = pos;
                }
                result
            })
            .collect();
        PublishResponse::ok(serde_json::json!({
            "published": outcomes.len(),
            "messages": results,
        }))
    }

    /// One record per (message, channel), in request order, through the bus.
    async fn send(&self, messages: &[Message]) -> Vec<Outcome> {
        let records = messages
            .iter()
            .flat_map(|m| {
                m.channels.iter().map(|channel| BusRecord {
                    channel: channel.clone(),
                    payload: m.payload.clone(),
                })
            })
            .collect();
        self.bus
            .publish(records, Instant::now() + self.timeout)
            .await
    }

    /// The 503 for outcomes that are not all stored; `owner(k)` is the
    /// message index of outcome `k`.
    fn failure(
        &self,
        outcomes: &[Outcome],
        messages: usize,
        owner: impl Fn(usize) -> usize,
    ) -> Option<PublishResponse> {
        let mut failed: Vec<usize> = Vec::new();
        let mut reason = None;
        for (k, outcome) in outcomes.iter().enumerate() {
            let why = match outcome {
                Outcome::Stored(_) => continue,
                Outcome::Failed(why) => why.clone(),
                Outcome::TimedOut => format!(
                    "the {} bus did not confirm the message within {:?} (WS_PUBLISH_TIMEOUT); \
                     it is not known to be stored",
                    self.bus.name(),
                    self.timeout
                ),
            };
            reason.get_or_insert(why);
            let message = owner(k);
            if failed.last() != Some(&message) {
                failed.push(message);
            }
        }
        let reason = reason?;
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Stored(_)))
            .count();
        let error = match self.bus {
            Bus::Local(_) => "shutting_down",
            _ => "publish_unavailable",
        };
        let mut body = serde_json::json!({ "error": error, "message": reason, "stored": stored });
        if messages > 1 {
            body["failed"] = serde_json::json!(failed);
        }
        Some(PublishResponse {
            status: 503,
            body: body.to_string(),
        })
    }

    fn too_large(&self) -> PublishResponse {
        PublishResponse::error(
            413,
            "payload_too_large",
            format!("the body is over {} bytes", self.max_body_bytes),
        )
    }

    fn authorized(&self, headers: &hyper::HeaderMap) -> bool {
        let from_header = headers.get("x-api-key").map(|v| v.as_bytes());
        let from_authorization = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("apikey"))
            .map(|(_, key)| key.trim().as_bytes());
        [from_header, from_authorization]
            .into_iter()
            .flatten()
            .any(|given| constant_time_eq(given, self.api_key.as_bytes()))
    }
}

/// Parses and validates one message.
fn parse_message(body: &[u8]) -> Result<Message, PublishResponse> {
    let parsed: PublishBody<'_> = serde_json::from_slice(body).map_err(|error| {
        PublishResponse::error(
            400,
            "bad_request",
            format!(
                "expected {{\"channel\":\"…\",\"data\":…}} or {{\"channels\":[…],\"data\":…}}: {error}"
            ),
        )
    })?;
    let (channels, single) = match (parsed.channel, parsed.channels) {
        (Some(one), None) => (vec![one], true),
        (None, Some(many)) if !many.is_empty() => (many, false),
        _ => {
            return Err(PublishResponse::error(
                400,
                "bad_request",
                "give exactly one of channel or a non-empty channels array",
            ));
        }
    };
    if channels.len() > MAX_CHANNELS_PER_PUBLISH {
        return Err(PublishResponse::error(
            400,
            "bad_request",
            format!("at most {MAX_CHANNELS_PER_PUBLISH} channels per message"),
        ));
    }
    for name in &channels {
        if let Err(error) = channel::validate(name) {
            return Err(PublishResponse::error(
                400,
                "invalid_channel",
                channel::refusal_message(name, error),
            ));
        }
    }
    Ok(Message {
        channels,
        single,
        payload: Bytes::copy_from_slice(parsed.data.get().as_bytes()),
    })
}

/// A batch element's error: the message says which element, and `index` names it.
fn at_index(response: PublishResponse, index: usize) -> PublishResponse {
    let mut body: serde_json::Value =
        serde_json::from_str(&response.body).expect("error bodies are JSON");
    let message = body["message"].as_str().unwrap_or_default().to_owned();
    body["message"] = format!("message {index}: {message}").into();
    body["index"] = index.into();
    PublishResponse {
        status: response.status,
        body: body.to_string(),
    }
}

/// The positions the bus assigned to `message`'s records: a string for a
/// `channel` message, an array parallel to `channels` otherwise; `None`
/// when the bus assigns none (local, Redis).
fn positions(message: &Message, outcomes: &[Outcome]) -> Option<serde_json::Value> {
    let pos: Vec<Option<&String>> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Stored(pos) => pos.as_ref(),
            _ => None,
        })
        .collect();
    if pos.iter().all(Option::is_none) {
        return None;
    }
    Some(if message.single {
        serde_json::json!(pos[0])
    } else {
        serde_json::json!(pos)
    })
}

/// The HTTP publish source's entry in `/ready`: requests arrive through the
/// HTTP server, so it is ready as soon as the server runs.
#[derive(Debug, Default)]
pub struct HttpSource;

impl crate::source::Source for HttpSource {
    fn name(&self) -> &'static str {
        "http"
    }

    fn run(self: Box<Self>, mut ctx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            ctx.health.ready();
            ctx.shutdown.wait().await;
        })
    }
}

/// Compares without an early exit, so timing does not reveal the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> (
        PublishApi,
        tokio::sync::mpsc::Receiver<crate::source::Ingest>,
    ) {
        let (sink, rx) = crate::source::PublishSink::channel(16);
        let settings = PublishSettings {
            max_batch: 3,
            ..PublishSettings::default()
        };
        (
            PublishApi::new(
                "k".into(),
                Bus::Local(sink.for_source("http")),
                1024,
                &settings,
            ),
            rx,
        )
    }

    #[tokio::test]
    async fn data_is_forwarded_verbatim_to_every_channel() {
        let (api, mut rx) = api();
        let taker = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(ingest) = rx.recv().await {
                let _ = ingest.taken.map(|t| t.send(()));
                got.push((
                    ingest.publish.channel,
                    ingest.publish.payload,
                    ingest.source,
                ));
                if got.len() == 2 {
                    break;
                }
            }
            got
        });
        let response = api
            .publish(br#"{"channels":["a","b"],"data":{ "price" : 1.50 }}"#)
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(
            response.body.contains(r#""published":2"#),
            "{}",
            response.body
        );
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), taker)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got[0].0, "a");
        assert_eq!(got[1].0, "b");
        assert_eq!(&got[0].1[..], br#"{ "price" : 1.50 }"#);
        assert_eq!(got[0].2, "http");
    }

    #[tokio::test]
    async fn bad_bodies_are_400_with_a_json_error() {
        let (api, _rx) = api();
        for body in [
            &br#"{"channel":"a"}"#[..],
            br#"{"data":1}"#,
            br#"{"channel":"a","channels":["b"],"data":1}"#,
            br#"{"channel":"has space","data":1}"#,
            br#"not json"#,
        ] {
            let response = api.publish(body).await;
            assert_eq!(response.status, 400, "{}", String::from_utf8_lossy(body));
            let json: serde_json::Value = serde_json::from_str(&response.body).unwrap();
            assert!(json["error"].is_string() && json["message"].is_string());
        }
    }

    /// Takes `n` messages off the core's queue, acknowledging each.
    fn take(
        mut rx: tokio::sync::mpsc::Receiver<crate::source::Ingest>,
        n: usize,
    ) -> tokio::task::JoinHandle<Vec<(String, Bytes)>> {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < n {
                let Some(ingest) = rx.recv().await else { break };
                let _ = ingest.taken.map(|t| t.send(()));
                got.push((ingest.publish.channel, ingest.publish.payload));
            }
            got
        })
    }

    #[tokio::test]
    async fn a_batch_publishes_every_message_in_order_and_answers_per_message() {
        let (api, rx) = api();
        let taker = take(rx, 3);
        let response = api
            .publish_batch(br#"[{"channel":"a","data":1},{"channels":["b","a"],"data":{"x":2}}]"#)
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
        let json: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(json["published"], 3);
        assert_eq!(
            json["messages"][1]["channels"],
            serde_json::json!(["b", "a"])
        );
        assert!(
            json["messages"][0].get("pos").is_none(),
            "local publishes have no bus position"
        );
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), taker)
            .await
            .unwrap()
            .unwrap();
        let order: Vec<(&str, &[u8])> = got.iter().map(|(c, p)| (c.as_str(), &p[..])).collect();
        assert_eq!(
            order,
            [("a", &b"1"[..]), ("b", br#"{"x":2}"#), ("a", br#"{"x":2}"#)]
        );
    }

    #[tokio::test]
    async fn bad_batches_are_refused_whole_with_a_json_error_naming_the_problem() {
        let (api, mut rx) = api();
        for (body, code, needle) in [
            (&b"not json"[..], "bad_request", "JSON array"),
            (br#"{"channel":"a","data":1}"#, "bad_request", "JSON array"),
            (br#"[]"#, "bad_request", "empty"),
            (
                br#"[{"channel":"a","data":1},{"channel":"a","data":2},{"channel":"a","data":3},{"channel":"a","data":4}]"#,
                "too_many_messages",
                "WS_MAX_PUBLISH_BATCH",
            ),
            (
                br#"[{"channel":"a","data":1},{"channel":"bad channel","data":2}]"#,
                "invalid_channel",
                "message 1",
            ),
            (br#"[{"channel":"a","data":1},{"data":2}]"#, "bad_request", "message 1"),
        ] {
            let response = api.publish_batch(body).await;
            assert_eq!(response.status, 400, "{}", String::from_utf8_lossy(body));
            let json: serde_json::Value = serde_json::from_str(&response.body).unwrap();
            assert_eq!(json["error"], code, "{}", response.body);
            assert!(
                json["message"].as_str().unwrap().contains(needle),
                "{}",
                response.body
            );
        }
        assert!(
            rx.try_recv().is_err(),
            "nothing of a refused batch is published"
        );
    }

    #[tokio::test]
    async fn a_publish_the_core_does_not_take_in_time_is_503_not_200() {
        let (sink, _rx) = crate::source::PublishSink::channel(16);
        let settings = PublishSettings {
            timeout: std::time::Duration::from_millis(50),
            ..PublishSettings::default()
        };
        let api = PublishApi::new("k".into(), Bus::Local(sink), 1024, &settings);
        let response = api.publish(br#"{"channel":"a","data":1}"#).await;
        assert_eq!(response.status, 503, "{}", response.body);
        assert!(
            response.body.contains("WS_PUBLISH_TIMEOUT"),
            "{}",
            response.body
        );
    }

    #[test]
    fn api_key_is_accepted_from_either_header() {
        let (api, _rx) = api();
        let mut headers = hyper::HeaderMap::new();
        assert!(!api.authorized(&headers));
        headers.insert("x-api-key", "k".parse().unwrap());
        assert!(api.authorized(&headers));
        let mut headers = hyper::HeaderMap::new();
        headers.insert("authorization", "ApiKey k".parse().unwrap());
        assert!(api.authorized(&headers));
        headers.insert("authorization", "apikey wrong".parse().unwrap());
        assert!(!api.authorized(&headers));
    }
}
