//! The HTTP publish source: `POST /api/publish` with
//! `{"channel":"…","data":<json>}` or `{"channels":[…],"data":<json>}`,
//! guarded by an API key in `X-API-Key` or `Authorization: apikey <key>`.
//! The raw JSON text of `data` is forwarded verbatim: the core embeds it in
//! the `message` frame without re-serializing it.

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::core::Publish;
use crate::source::{PublishSink, SourceContext, SourceFuture};

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
}

/// The `POST /api/publish` endpoint.
#[derive(Debug, Clone)]
pub struct PublishApi {
    /// The key callers must present.
    api_key: String,
    /// Into the core, waiting while it is busy (backpressure on the caller).
    sink: PublishSink,
    /// Largest accepted body.
    max_body_bytes: usize,
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

impl PublishApi {
    /// An endpoint guarded by `api_key`, publishing into `sink`.
    pub fn new(api_key: String, sink: PublishSink, max_body_bytes: usize) -> PublishApi {
        PublishApi {
            api_key,
            sink: sink.for_source("http"),
            max_body_bytes,
        }
    }

    /// Answers one request.
    pub async fn handle(&self, request: hyper::Request<hyper::body::Incoming>) -> PublishResponse {
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
        self.publish(&bytes).await
    }

    /// Publishes a request body (already authorized and size-checked).
    pub async fn publish(&self, body: &[u8]) -> PublishResponse {
        let parsed: PublishBody<'_> = match serde_json::from_slice(body) {
            Ok(parsed) => parsed,
            Err(error) => {
                return PublishResponse::error(
                    400,
                    "bad_request",
                    format!(
                        "expected {{\"channel\":\"…\",\"data\":…}} or {{\"channels\":[…],\"data\":…}}: {error}"
                    ),
                );
            }
        };
        let channels = match (parsed.channel, parsed.channels) {
            (Some(one), None) => vec![one],
            (None, Some(many)) if !many.is_empty() => many,
            _ => {
                return PublishResponse::error(
                    400,
                    "bad_request",
                    "give exactly one of channel or a non-empty channels array",
                );
            }
        };
        if channels.len() > MAX_CHANNELS_PER_PUBLISH {
            return PublishResponse::error(
                400,
                "bad_request",
                format!("at most {MAX_CHANNELS_PER_PUBLISH} channels per request"),
            );
        }
        if let Some(bad) = channels.iter().find(|c| !is_valid_channel(c)) {
            return PublishResponse::error(
                400,
                "invalid_channel",
                format!("channel {bad:?} must be 1–128 characters of A-Z a-z 0-9 _ . : @ # / -"),
            );
        }
        let payload = Bytes::copy_from_slice(parsed.data.get().as_bytes());
        for channel in &channels {
            let publish = Publish {
                channel: channel.clone(),
                pos: None,
                payload: payload.clone(),
            };
            if self.sink.publish_and_wait(publish).await.is_err() {
                return PublishResponse::error(
                    503,
                    "shutting_down",
                    "the server is no longer taking messages",
                );
            }
        }
        PublishResponse {
            status: 200,
            body: serde_json::json!({ "published": channels.len(), "channels": channels })
                .to_string(),
        }
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

/// Channel names as the protocol allows them.
pub fn is_valid_channel(channel: &str) -> bool {
    (1..=128).contains(&channel.len())
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@#/-".contains(&b))
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
        let (sink, rx) = PublishSink::channel(16);
        (PublishApi::new("k".into(), sink, 1024), rx)
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
