//! The one HTTP client of the integration tests: a hyper HTTP/1.1
//! connection over any stream (loopback TCP or TLS), kept open across
//! requests so a test can also ask after the listener closed (the drain).
//! Every `server_*`, `kafka_*`, `tls` and observability test reaches the
//! server's HTTP endpoints through it; only tests that must send malformed
//! bytes on purpose (`hostile_*`, RFC 6455 conformance) write raw requests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Upper bound on one step of an HTTP exchange (connect, handshake, answer,
/// body). Generous because publishing through Kafka answers only once the
/// broker acknowledged.
pub const HTTP_WAIT: Duration = Duration::from_secs(30);

/// One answer: its status, content type and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The `content-type` header, empty when absent.
    pub content_type: String,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text; panics on invalid UTF-8 (every endpoint answers text).
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }

    /// The body as JSON, `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// An HTTP/1.1 client connection (keep-alive).
pub struct HttpConnection {
    /// The `host` header every request carries.
    host: String,
    /// hyper's request half; its connection task runs on the test runtime.
    sender: SendRequest<Full<Bytes>>,
}

/// Awaits `future` for at most [`HTTP_WAIT`], naming `what` if it hangs.
async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(HTTP_WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {HTTP_WAIT:?}"))
}

impl HttpConnection {
    /// A plain TCP connection to `address`.
    pub async fn open(address: SocketAddr) -> HttpConnection {
        let stream = bounded("connect", TcpStream::connect(address))
            .await
            .expect("connects");
        HttpConnection::over(stream, &address.to_string()).await
    }

    /// A connection over an established `stream` (e.g. a TLS session),
    /// sending `host` as the `host` header.
    pub async fn over<S>(stream: S, host: &str) -> HttpConnection
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = bounded(
            "the HTTP handshake",
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)),
        )
        .await
        .expect("handshake");
        tokio::spawn(connection);
        HttpConnection {
            host: host.to_owned(),
            sender,
        }
    }

    /// Sends one request and reads its whole answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Answer {
        bounded("the connection becoming ready", self.sender.ready())
            .await
            .expect("connection usable");
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("a well-formed request");
        let response = bounded("the answer", self.sender.send_request(request))
            .await
            .expect("a response");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().expect("an ASCII content type").to_owned())
            .unwrap_or_default();
        let body = bounded("the body", response.into_body().collect())
            .await
            .expect("a body")
            .to_bytes()
            .to_vec();
        Answer {
            status,
            content_type,
            body,
        }
    }

    /// `GET path`, with an `accept` header when given.
    pub async fn get(&mut self, path: &str, accept: Option<&str>) -> Answer {
        let headers: Vec<(&str, String)> = accept
            .map(|accept| ("accept", accept.to_owned()))
            .into_iter()
            .collect();
        self.request("GET", path, &headers, b"").await
    }
}

/// One request on a fresh connection to `address`; the status and body.
pub async fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let answer = HttpConnection::open(address)
        .await
        .request(method, path, headers, body)
        .await;
    (answer.status, answer.body)
}

/// `GET path` on a fresh connection to `address`; the status and the body
/// as text.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let answer = HttpConnection::open(address).await.get(path, None).await;
    (answer.status, answer.text())
}

/// `POST path` on a fresh connection with a JSON `body` and, when given, the
/// API key (`x-api-key`); the whole answer.
pub async fn post_json(address: SocketAddr, path: &str, key: Option<&str>, body: &str) -> Answer {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(key) = key {
        headers.push(("x-api-key", key.to_owned()));
    }
    HttpConnection::open(address)
        .await
        .request("POST", path, &headers, body.as_bytes())
        .await
}
