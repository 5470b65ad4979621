//! HTTP routing on the one port: `/ws` (the upgrade), `/health`, `/healthz`,
//! `/ready`, `/metrics`, `POST /api/publish`, `POST /api/publish/batch`, and
//! the live page at `/` when it is on. Every other answer is a small JSON (or
//! Prometheus text) body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SEC_WEBSOCKET_EXTENSIONS};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Verifier;
use crate::core::Open;
use crate::metrics::Metrics;
use crate::proto::client_frames::FrameReader;
use crate::proto::deflate_offer;
use crate::shell::admission::Admitted;
use crate::shell::connection;
use crate::shell::driver::Command;
use crate::shell::offload;
use crate::shell::ui::LivePage;
use crate::shell::upgrade::{self, UpgradeHeaders, UpgradePolicy, UpgradeRefusal};
use crate::source::Readiness;
use crate::source::http::{PublishApi, PublishKind};

/// The body type of every response.
pub(crate) type Body = Full<Bytes>;

/// What every request handler shares.
pub(crate) struct AppState {
    /// Into the driver.
    pub(crate) commands: mpsc::Sender<Command>,
    /// Checks tokens (shared with the driver, which checks `refresh` ones).
    pub(crate) verifier: Arc<Verifier>,
    /// Origin and assessment-channel settings.
    pub(crate) policy: UpgradePolicy,
    /// `POST /api/publish`, when an API key is configured.
    pub(crate) publish: Option<PublishApi>,
    /// For `/ready` and `/healthz`.
    pub(crate) readiness: Readiness,
    /// For `/metrics` and the connection tasks.
    pub(crate) metrics: Arc<Metrics>,
    /// Inbound frame limit the readers enforce.
    pub(crate) max_message_bytes: usize,
    /// Negotiate permessage-deflate with clients that offer it.
    pub(crate) compression: bool,
    /// The live page at `/`, when `WS_UI` (or `dev`) turned it on.
    pub(crate) ui: Option<LivePage>,
}

/// Answers one request from `remote`.
pub(crate) async fn route(
    request: Request<Incoming>,
    state: Arc<AppState>,
    remote: SocketAddr,
    admitted: Arc<Admitted>,
) -> Response<Body> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::GET, "/ws") => upgrade(request, state, remote, admitted).await,
        (&Method::GET, "/") if state.ui.is_some() => {
            state.ui.as_ref().expect("checked by the guard").response()
        }
        (&Method::GET, "/health") => json(StatusCode::OK, r#"{"status":"alive"}"#.to_owned()),
        (&Method::GET, "/healthz") => match state.readiness.status() {
            Ok(()) => json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
            Err(reasons) => not_ready(reasons),
        },
        (&Method::GET, "/ready") => match state.readiness.status() {
            Ok(()) => json(StatusCode::OK, r#"{"status":"ready"}"#.to_owned()),
            Err(reasons) => not_ready(reasons),
        },
        (&Method::GET, "/metrics") => Response::builder()
            .status(StatusCode::OK)
            .header(
                hyper::header::CONTENT_TYPE,
                Metrics::content_type(
                    request
                        .headers()
                        .get(hyper::header::ACCEPT)
                        .and_then(|v| v.to_str().ok()),
                ),
            )
            .body(Full::new(Bytes::from(state.metrics.encode())))
            .expect("static headers are valid"),
        (&Method::POST, "/api/publish" | "/api/publish/batch") => match &state.publish {
            Some(api) => {
                let kind = if path == "/api/publish" {
                    PublishKind::Single
                } else {
                    PublishKind::Batch
                };
                let answer = api.handle(request, kind).await;
                json(
                    StatusCode::from_u16(answer.status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    answer.body,
                )
            }
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "POST /api/publish is off: set WS_API_KEY to enable it",
            ),
        },
        (
            _,
            "/ws" | "/health" | "/healthz" | "/ready" | "/metrics" | "/api/publish"
            | "/api/publish/batch",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed here",
        ),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

/// `GET /ws`: decide, ask the core to admit, answer 101, attach the socket.
async fn upgrade(
    mut request: Request<Incoming>,
    state: Arc<AppState>,
    remote: SocketAddr,
    admitted: Arc<Admitted>,
) -> Response<Body> {
    if state.readiness.is_draining() {
        return refuse(&UpgradeRefusal::from_core(
            crate::core::Refusal::ShuttingDown,
        ));
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/ws", |p| p.as_str())
        .to_owned();
    let now_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Owned copies, so the decision (signature work) can run off the
    // runtime's workers.
    let header = |name| request.headers().get(name).map(|v| v.as_bytes().to_vec());
    let authorization = header(hyper::header::AUTHORIZATION);
    let origin = header(hyper::header::ORIGIN);
    let repeated = |name| request.headers().get_all(name).iter().nth(1).is_some();
    let repeated_authorization = repeated(hyper::header::AUTHORIZATION);
    let repeated_origin = repeated(hyper::header::ORIGIN);
    let decide = || {
        let (state, path_and_query) = (state.clone(), path_and_query.clone());
        let (authorization, origin) = (authorization.clone(), origin.clone());
        offload::off_the_workers(move || {
            let headers = UpgradeHeaders {
                authorization: authorization.as_deref(),
                origin: origin.as_deref(),
                repeated_authorization,
                repeated_origin,
            };
            upgrade::decide(
                &path_and_query,
                headers,
                &state.verifier,
                &state.policy,
                now_unix_secs,
            )
        })
    };
    let mut decided = decide().await;
    // A key the JWKS does not hold yet: the issuer may have rotated. Fetch
    // again (rate-limited inside) and decide once more.
    if matches!(&decided, Err(refusal) if refusal.error == "unknown_key")
        && state.verifier.refetch_for_unknown_kid().await
    {
        decided = decide().await;
    }
    let accepted = match decided {
        Ok(accepted) => accepted,
        Err(refusal) => {
            tracing::info!(%remote, status = refusal.status, error = %refusal.error, "upgrade refused");
            return refuse(&refusal);
        }
    };
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        return error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "GET /ws must be a WebSocket upgrade request",
        );
    }
    let headers = request.headers();
    let handshake = upgrade::check_handshake(
        request.version() >= hyper::Version::HTTP_11,
        headers
            .get(hyper::header::SEC_WEBSOCKET_KEY)
            .map(|v| v.as_bytes()),
        headers
            .get(hyper::header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes()),
    );
    if let Err(invalid) = handshake {
        tracing::info!(%remote, error = ?invalid, "malformed upgrade refused");
        let mut response = refuse(&invalid.refusal());
        if invalid == upgrade::HandshakeError::UnsupportedVersion {
            response.headers_mut().insert(
                hyper::header::SEC_WEBSOCKET_VERSION,
                hyper::header::HeaderValue::from_static(upgrade::WEBSOCKET_VERSION),
            );
        }
        return response;
    }
    let deflate = state
        .compression
        .then(|| {
            let offers = request.headers().get_all(SEC_WEBSOCKET_EXTENSIONS);
            deflate_offer::negotiate(offers.iter().map(|value| value.as_bytes()))
        })
        .flatten();
    let (mut response, upgrade_future) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(pair) => pair,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_upgrade", &e.to_string()),
    };
    if let Some(deflate) = deflate {
        let agreed = HeaderValue::from_str(&deflate.response_header())
            .expect("the negotiated extension header is ASCII");
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_EXTENSIONS, agreed);
    }
    let (reply, answer) = oneshot::channel();
    let open = Open {
        identity: accepted.identity,
        remote: remote.ip(),
        channels: accepted.channels,
        deflate,
    };
    if state
        .commands
        .send(Command::Open {
            open: Box::new(open),
            reply,
        })
        .await
        .is_err()
    {
        return refuse(&UpgradeRefusal::from_core(
            crate::core::Refusal::ShuttingDown,
        ));
    }
    let conn = match answer.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(refusal)) => return refuse(&UpgradeRefusal::from_core(refusal)),
        Err(_) => {
            return refuse(&UpgradeRefusal::from_core(
                crate::core::Refusal::ShuttingDown,
            ));
        }
    };
    tokio::spawn(async move {
        match upgrade_future.await {
            Ok(ws) => {
                let stream: TokioIo<hyper::upgrade::Upgraded> = ws.into_inner();
                let (commands, max) = (state.commands.clone(), state.max_message_bytes);
                let reader = FrameReader::new(max).with_deflate(deflate.is_some());
                connection::start(stream.into_inner(), conn, commands, reader, admitted).await;
            }
            Err(error) => {
                tracing::debug!(%remote, %error, "upgrade did not complete");
                let closed = Command::Closed { conn, error: None };
                let _ = state.commands.send(closed).await;
            }
        }
    });
    response.map(|_| Full::new(Bytes::new()))
}

fn refuse(refusal: &UpgradeRefusal) -> Response<Body> {
    json(
        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        refusal.body(),
    )
}

fn not_ready(reasons: Vec<String>) -> Response<Body> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({ "status": "not_ready", "reasons": reasons }).to_string(),
    )
}

fn error(status: StatusCode, error: &str, message: &str) -> Response<Body> {
    json(
        status,
        serde_json::json!({ "error": error, "message": message }).to_string(),
    )
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}
