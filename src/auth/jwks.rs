//! The JWKS key set: fetched from `WS_AUTH_JWKS_URL` (HTTPS, or plain HTTP
//! to a loopback address for tests) or read from `WS_AUTH_JWKS_FILE`, kept
//! in memory, and refreshed in the background (the URL periodically, the
//! file when it changes). A token whose `kid` is unknown triggers one
//! immediate refetch, at most once per `min_refetch_interval`.
//!
//! A fetch that fails, times out, answers garbage or a body over the limit
//! is logged and the last good key set stays in use. Until a first key set
//! is loaded the status callback reports why, which `/ready` shows; HS256
//! tokens keep working meanwhile.

use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::keys::{KeySet, parse_jwks};

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// `WS_AUTH_JWKS_URL`.
    Url(String),
    /// `WS_AUTH_JWKS_FILE`.
    File(PathBuf),
}

/// How the key set is kept fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    /// Where the keys are.
    pub location: JwksLocation,
    /// How often the URL is fetched again (`WS_AUTH_JWKS_REFRESH_INTERVAL`),
    /// or the file checked for a change.
    pub refresh_interval: Duration,
    /// Least time between two refetches caused by unknown `kid`s
    /// (`WS_AUTH_JWKS_MIN_REFETCH_INTERVAL`).
    pub min_refetch_interval: Duration,
    /// Bound on one fetch, connect to last byte (`WS_AUTH_JWKS_TIMEOUT`).
    pub timeout: Duration,
    /// Largest body read; a larger one is refused unread.
    pub max_body_bytes: usize,
}

/// Reports the key set's state: `None` once a key set is loaded, `Some(why)`
/// while none is.
pub type StatusReport = Box<dyn Fn(Option<String>) + Send + Sync>;

/// The shared JWKS: its current key set and what refreshes it.
pub struct JwksHandle {
    /// Settings.
    config: JwksConfig,
    /// The key set in use; swapped whole, so a verification sees one
    /// consistent set and never waits for a fetch.
    keys: RwLock<Arc<KeySet>>,
    /// Serialises fetches, and remembers when the last one started so
    /// unknown-`kid` refetches are rate-limited.
    fetching: tokio::sync::Mutex<FetchState>,
    /// Where the state goes (readiness).
    report: StatusReport,
}

impl std::fmt::Debug for JwksHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksHandle")
            .field("config", &self.config)
            .field("keys", &self.keys().len())
            .finish_non_exhaustive()
    }
}

/// What the fetch lock guards.
#[derive(Debug, Default)]
struct FetchState {
    /// When the last refetch for an unknown `kid` began: only those are
    /// rate-limited (the periodic ones are rare by themselves), so a key
    /// rotated just after a periodic fetch is still picked up at once.
    last_refetch: Option<Instant>,
    /// The file's modification time and length at the last read, so an
    /// unchanged file is not parsed again.
    file_stamp: Option<(SystemTime, u64)>,
    /// Whether a key set was ever loaded.
    loaded: bool,
}

impl JwksHandle {
    /// A handle with no keys yet; `report` hears of every change of state.
    /// Call [`JwksHandle::refresh`] (or spawn [`JwksHandle::run`]) to load.
    pub fn new(config: JwksConfig, report: StatusReport) -> Arc<JwksHandle> {
        report(Some("key set not loaded yet".to_owned()));
        Arc::new(JwksHandle {
            config,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetching: tokio::sync::Mutex::new(FetchState::default()),
            report,
        })
    }

    /// The key set in use.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Loads the key set now. On failure the previous set stays in use and
    /// the reason is returned (and logged).
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut state = self.fetching.lock().await;
        self.refresh_locked(&mut state, false).await
    }

    /// Refetches because a token named an unknown `kid`, unless a fetch
    /// began less than `min_refetch_interval` ago. True if it fetched a
    /// usable set.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        let mut state = self.fetching.lock().await;
        if state
            .last_refetch
            .is_some_and(|at| at.elapsed() < self.config.min_refetch_interval)
        {
            return false;
        }
        state.last_refetch = Some(Instant::now());
        self.refresh_locked(&mut state, true).await.is_ok()
    }

    /// Loads at once, then keeps the set fresh until the handle is dropped.
    /// Until a first set is loaded it retries sooner (1 s, doubling up to
    /// the refresh interval), so an IdP that was down at start is picked up
    /// soon after it recovers.
    pub async fn run(self: Arc<Self>) {
        let weak: Weak<JwksHandle> = Arc::downgrade(&self);
        let interval = self.config.refresh_interval;
        let mut retry = Duration::from_secs(1).min(interval);
        let mut loaded = self.refresh().await.is_ok();
        drop(self);
        loop {
            let wait = if loaded { interval } else { retry };
            retry = (retry * 2).min(interval);
            tokio::time::sleep(wait).await;
            let Some(this) = weak.upgrade() else {
                return;
            };
            loaded |= this.refresh().await.is_ok();
        }
    }

    async fn refresh_locked(&self, state: &mut FetchState, forced: bool) -> Result<usize, String> {
        let loaded = match &self.config.location {
            JwksLocation::Url(url) => fetch(url, &self.config).await,
            JwksLocation::File(path) => {
                let stamp = std::fs::metadata(path)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())));
                if !forced && state.loaded && stamp.is_some() && stamp == state.file_stamp {
                    return Ok(self.keys().len());
                }
                let read = read_file(path, self.config.max_body_bytes);
                if read.is_ok() {
                    state.file_stamp = stamp;
                }
                read
            }
        };
        let parsed = loaded.and_then(|body| parse_jwks(&body).map_err(|e| e.to_string()));
        let source = self.describe();
        match parsed {
            Ok(set) => {
                let count = set.len();
                *self
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(set);
                if !state.loaded {
                    tracing::info!(source, keys = count, "JWKS loaded");
                } else {
                    tracing::debug!(source, keys = count, "JWKS refreshed");
                }
                state.loaded = true;
                (self.report)(None);
                Ok(count)
            }
            Err(why) => {
                if state.loaded {
                    let kept = self.keys().len();
                    tracing::warn!(source, error = %why, kept, "JWKS refresh failed; the last good key set stays in use");
                } else {
                    tracing::warn!(source, error = %why, "JWKS not loaded; tokens signed by its keys are refused until it is");
                    (self.report)(Some(format!("cannot load {source}: {why}")));
                }
                Err(why)
            }
        }
    }

    fn describe(&self) -> String {
        match &self.config.location {
            JwksLocation::Url(url) => url.clone(),
            JwksLocation::File(path) => path.display().to_string(),
        }
    }
}

/// Reads a JWKS file, refusing one over `max` bytes.
fn read_file(path: &std::path::Path, max: usize) -> Result<Bytes, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    if body.len() > max {
        return Err(format!("the file is larger than {max} bytes"));
    }
    Ok(Bytes::from(body))
}

/// Checks a JWKS URL at start-up: `https://`, or `http://` to a loopback
/// address (tests, a sidecar); `Err` says what is wrong.
pub fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    let host = uri.host().ok_or("the URL has no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => {
            Err("plain http:// is allowed only to a loopback address; use https://".to_owned())
        }
        _ => Err("the URL must start with https://".to_owned()),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One GET of the JWKS URL, bounded in time and size.
async fn fetch(url: &str, config: &JwksConfig) -> Result<Bytes, String> {
    let uri = check_url(url)?;
    match tokio::time::timeout(config.timeout, get(&uri, config.max_body_bytes)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no complete answer within {:?}", config.timeout)),
    }
}

async fn get(uri: &Uri, max: usize) -> Result<Bytes, String> {
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or("the URL has no host")?
        .trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let authority = uri.authority().map_or(host, |a| a.as_str()).to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("bad host name: {e}"))?;
        let tls = tls_connector()?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(tls, request, max).await
    } else {
        exchange(tcp, request, max).await
    }
}

/// Sends `request` over `io` and reads at most `max` bytes of a 200 answer.
async fn exchange<T>(
    io: T,
    request: hyper::Request<Empty<Bytes>>,
    max: usize,
) -> Result<Bytes, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driving = tokio::spawn(async move {
        let _ = connection.await;
    });
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(format!("answered HTTP {}", response.status().as_u16()));
        }
        let declared = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max as u64) {
            return Err(format!("the body is larger than {max} bytes"));
        }
        Limited::new(response.into_body(), max)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("the body is larger than {max} bytes")
                } else {
                    format!("reading the body: {e}")
                }
            })
    }
    .await;
    driving.abort();
    answer
}

/// A TLS connector trusting the system's root certificates (which
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` can point elsewhere).
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static CONNECTOR: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted root certificates found on this system".to_owned());
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}
