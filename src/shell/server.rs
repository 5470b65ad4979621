//! The server's entry point: [`run`] accepts connections from any [`Accept`]
//! (tokio TCP here, turmoil in `sim/`), serves HTTP on each, runs the
//! sources and the driver, and shuts all of it down in order when the
//! [`Shutdown`] signal fires: not ready → stop accepting → close everyone
//! with 1001 → wait for the drain (bounded) → stop the sources.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::auth::{AuthConfig, AuthKeys, JwksHandle, Verifier};
use crate::config::{PublishVia, ServerConfig};
use crate::core::{Core, Router};
use crate::metrics::Metrics;
use crate::shell::admission::{self, Admission, Admitted};
use crate::shell::driver::{self, Command, Driver, Feed};
use crate::shell::http::{self, AppState};
pub use crate::shell::listen::{Accept, ListenOptions, MakeAccept, Ready, ReusePort, TcpAccept};
use crate::shell::tls::{Tls, TlsError};
use crate::shell::ui::LivePage;
use crate::shell::upgrade::UpgradePolicy;
use crate::shell::workers::{self, Spawn, Tasks, Threads, WorkerFuture};
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::source::bus::Bus;
use crate::source::http::PublishApi;
use crate::source::{PublishSink, Readiness, Source, SourceContext};

/// Commands that may wait for the driver before readers pause.
const COMMAND_QUEUE: usize = 4096;

/// Messages that may wait between the sources and the core.
const INGEST_QUEUE: usize = 4096;

/// hyper's smallest read buffer limit (it panics below it): one read chunk.
const HYPER_MIN_BUF: usize = 8192;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Shared state a caller may want to observe while the server runs.
#[derive(Debug, Clone, Default)]
pub struct Observers {
    /// Readiness as `/ready` reports it.
    pub readiness: Readiness,
    /// The metrics `/metrics` reports.
    pub metrics: Arc<Metrics>,
}

/// What serving one accepted connection's HTTP needs.
struct HttpServing {
    /// Shared by every request handler.
    state: Arc<AppState>,
    /// The TLS configuration, when `WS_TLS_*` asks for one.
    tls: Option<Arc<Tls>>,
    /// The connection limits, counted from accept.
    admission: Admission,
    /// `WS_HANDSHAKE_TIMEOUT`.
    handshake_timeout: std::time::Duration,
    /// `WS_MAX_REQUEST_HEAD_BYTES`.
    head_limit: usize,
}

impl HttpServing {
    /// Serves an accepted connection in a task of `set` (or refuses it at
    /// the limits); backs off briefly after a failed accept.
    async fn on_accept<S>(&self, set: &mut JoinSet<()>, accepted: std::io::Result<(S, SocketAddr)>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return;
            }
        };
        let admitted = match self.admission.admit(remote.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                tracing::info!(%remote, %refusal, "connection refused at accept");
                set.spawn(admission::refuse(stream, refusal));
                return;
            }
        };
        let state = self.state.clone();
        let (timeout, head_limit) = (self.handshake_timeout, self.head_limit);
        // Two spawn sites, so a plain connection's task is no bigger for
        // TLS being possible.
        match &self.tls {
            None => {
                set.spawn(serve_http(
                    stream, state, remote, timeout, head_limit, admitted,
                ));
            }
            Some(tls) => {
                let tls = tls.clone();
                set.spawn(async move {
                    if let Some(stream) = tls.handshake(stream, remote, timeout).await {
                        serve_http(stream, state, remote, timeout, head_limit, admitted).await;
                    }
                });
            }
        }
    }
}

/// Runs a server until `shutdown` fires and the drain completes.
pub async fn run<A: Accept>(
    accept: A,
    config: ServerConfig,
    sources: Vec<Box<dyn Source>>,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    run_observed(accept, config, sources, shutdown, Observers::default()).await
}

/// [`run`], reporting readiness and metrics into `observers`.
pub async fn run_observed<A: Accept>(
    accept: A,
    config: ServerConfig,
    sources: Vec<Box<dyn Source>>,
    shutdown: Shutdown,
    observers: Observers,
) -> Result<(), ServerError> {
    let tls = load_tls(&config)?;
    serve(accept, config, tls, sources, shutdown, observers).await;
    Ok(())
}

/// The TLS configuration, when `WS_TLS_*` asks for one.
fn load_tls(config: &ServerConfig) -> Result<Option<Arc<Tls>>, ServerError> {
    Ok(match &config.tls {
        Some(files) => Some(Arc::new(Tls::load(files)?)),
        None => None,
    })
}

/// Runs the server until `shutdown` fires and the drain completes. With
/// `WS_WORKERS` > 1 the workers are tasks of this runtime and `accept`'s
/// connections are handed to them round-robin (the simulation and tests;
/// production uses [`run_workers`]).
async fn serve<A: Accept>(
    accept: A,
    config: ServerConfig,
    tls: Option<Arc<Tls>>,
    sources: Vec<Box<dyn Source>>,
    shutdown: Shutdown,
    observers: Observers,
) {
    if config.workers <= 1 {
        let listeners = vec![Ready(accept)];
        serve_workers(listeners, &Tasks, config, tls, sources, shutdown, observers).await;
        return;
    }
    let (accepts, distributor) = workers::distribute(accept, config.workers);
    let distributor = tokio::spawn(distributor);
    let listeners = accepts.into_iter().map(Ready).collect();
    serve_workers(listeners, &Tasks, config, tls, sources, shutdown, observers).await;
    distributor.abort();
}

/// Production with `WS_WORKERS` workers: one `SO_REUSEPORT` listener and
/// one OS thread (with its own current-thread runtime, core and
/// connections) per worker; the sources and the router run on the calling
/// runtime. One worker is [`run`] on a plain listener.
pub async fn run_workers(
    config: ServerConfig,
    sources: Vec<Box<dyn Source>>,
    shutdown: Shutdown,
    observers: Observers,
) -> Result<(), ServerError> {
    let tls = load_tls(&config)?;
    let options = ListenOptions::from(&config);
    let bind_error = |source| ServerError::Bind {
        address: config.bind_address,
        source,
    };
    if config.workers <= 1 {
        let accept = TcpAccept::listen(config.bind_address, &options)
            .await
            .map_err(bind_error)?;
        let listeners = vec![Ready(accept)];
        serve_workers(listeners, &Tasks, config, tls, sources, shutdown, observers).await;
        return Ok(());
    }
    let listeners =
        ReusePort::bind(config.bind_address, &options, config.workers).map_err(bind_error)?;
    serve_workers(
        listeners, &Threads, config, tls, sources, shutdown, observers,
    )
    .await;
    Ok(())
}

/// Runs one worker per listener until `shutdown` fires and every worker
/// has drained: the sources (and, with several workers, the router that
/// hands their messages to every worker) run here, each worker where
/// `spawner` puts it. One worker reads the sources' queue itself, as the
/// single-driver server always has.
#[allow(clippy::too_many_arguments)]
async fn serve_workers<L: MakeAccept, S: Spawn>(
    listeners: Vec<L>,
    spawner: &S,
    config: ServerConfig,
    tls: Option<Arc<Tls>>,
    sources: Vec<Box<dyn Source>>,
    mut shutdown: Shutdown,
    observers: Observers,
) {
    let Observers { readiness, metrics } = observers;
    let start = tokio::time::Instant::now().into_std();
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (sink, ingest_rx) = PublishSink::channel(INGEST_QUEUE);
    let verifier = Arc::new(verifier(&config, &readiness));

    // The bus of POST /api/publish, before the sources move into their tasks.
    let bus = publish_bus(&config, &sources, &sink);

    // Sources stop after the drain, so what they send meanwhile still flows.
    let (source_trigger, source_shutdown) = shutdown::channel();
    let mut source_tasks = JoinSet::new();
    for source in sources {
        let name = source.name();
        let ctx = SourceContext {
            sink: sink.for_source(name),
            health: readiness.register(name),
            shutdown: source_shutdown.clone(),
            metrics: metrics.clone(),
        };
        tracing::info!(source = name, "starting source");
        source_tasks.spawn(source.run(ctx));
    }
    drop(sink);

    if let Some(tls) = &tls {
        tls.spawn_watcher(source_shutdown.clone());
    }
    if let Some(Ok(address)) = listeners.first().map(MakeAccept::local_addr) {
        let tls = tls.is_some();
        let workers = listeners.len();
        tracing::info!(%address, tls, workers, server_id = %config.core.server_id, "listening");
    }
    let admission = Admission::new(
        config.core.max_connections,
        config.core.max_connections_per_ip,
    );
    let messages_per_turn = driver::messages_per_turn(config.core.client_buffer_frames);

    // One worker reads the sources' queue; several get routed publishes.
    let count = listeners.len();
    let mut direct = Some(ingest_rx);
    let mut routed = Vec::new();
    let mut router = None;
    if count > 1 {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::channel(ROUTED_QUEUE)).unzip();
        routed = receivers;
        router = Some(tokio::spawn(workers::route(
            direct.take().expect("taken once"),
            senders,
            Router::new(&config.core),
            metrics.clone(),
            messages_per_turn,
        )));
    }
    let mut routed = routed.into_iter();

    let (stop_trigger, stop) = shutdown::channel();
    let mut drained = Vec::with_capacity(count);
    let mut ended = Vec::with_capacity(count);
    for (index, listener) in listeners.into_iter().enumerate() {
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (drained_tx, drained_rx) = watch::channel(false);
        let driver = Driver::new(
            Core::new(config.core.clone(), start, unix_ms),
            metrics.clone(),
            drained_tx,
            config.core.client_buffer_frames,
        )
        .with_verifier(verifier.clone());
        let state = Arc::new(AppState {
            commands: commands.clone(),
            verifier: verifier.clone(),
            policy: UpgradePolicy {
                allowed_origins: config.allowed_origins.clone(),
                assessment_channel: config.assessment_channel.clone(),
            },
            publish: config.api_key.clone().map(|key| {
                PublishApi::new(key, bus.clone(), config.max_publish_bytes, &config.publish)
            }),
            readiness: readiness.clone(),
            metrics: metrics.clone(),
            max_message_bytes: config.core.max_message_bytes,
            compression: config.compression,
            ui: config.ui.then(|| LivePage::new(config.ui_token.as_deref())),
        });
        let serving = HttpServing {
            state,
            tls: tls.clone(),
            admission: admission.clone(),
            handshake_timeout: config.handshake_timeout,
            head_limit: config.max_request_head_bytes,
        };
        let (report, reported) = oneshot::channel();
        drained.push(reported);
        let life = WorkerLife {
            index,
            commands,
            drained: drained_rx,
            shutdown: shutdown.clone(),
            stop: stop.clone(),
            report,
            shutdown_timeout: config.shutdown_timeout,
        };
        let future: WorkerFuture = match direct.take() {
            Some(ingest) => Box::pin(worker(listener, serving, driver, command_rx, ingest, life)),
            None => {
                let feed = routed.next().expect("one routed feed per worker");
                let driver = driver.into_worker(index);
                Box::pin(worker(listener, serving, driver, command_rx, feed, life))
            }
        };
        ended.push(spawner.spawn(index, future));
    }
    drop(bus);

    shutdown.wait().await;
    tracing::info!("shutting down: draining connections");
    readiness.set_draining();
    // Each worker gives up on its drain at the timeout by itself.
    for reported in drained {
        let _ = reported.await;
    }
    source_trigger.trigger();
    let stop_sources = async { while source_tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_timeout, stop_sources)
        .await
        .is_err()
    {
        tracing::warn!("sources did not stop in time");
    }
    source_tasks.abort_all();
    stop_trigger.trigger();
    for worker in ended {
        worker.await;
    }
    if let Some(router) = router {
        router.abort();
        let _ = router.await;
    }
    tracing::info!("shut down");
}

/// Hand-outs of routed publishes that may wait for one worker.
const ROUTED_QUEUE: usize = 64;

/// What a worker needs for its shutdown, besides its listener and driver.
struct WorkerLife {
    /// Its index, for logs.
    index: usize,
    /// Into its driver.
    commands: mpsc::Sender<Command>,
    /// Turns true once its core has closed every connection.
    drained: watch::Receiver<bool>,
    /// The graceful shutdown.
    shutdown: Shutdown,
    /// Fires after the sources have stopped: the worker ends.
    stop: Shutdown,
    /// Told once this worker has drained (or given up on it).
    report: oneshot::Sender<()>,
    /// `WS_SHUTDOWN_TIMEOUT_SECONDS`.
    shutdown_timeout: Duration,
}

/// One worker: its driver, and the accept loop of its listener until the
/// shutdown has drained its connections; then it waits for `stop`.
async fn worker<L: MakeAccept, F: Feed>(
    listener: L,
    serving: HttpServing,
    driver: Driver,
    command_rx: mpsc::Receiver<Command>,
    feed: F,
    life: WorkerLife,
) where
    F::Item: 'static,
{
    let WorkerLife {
        index,
        commands,
        mut drained,
        mut shutdown,
        mut stop,
        report,
        shutdown_timeout,
    } = life;
    let mut accept = match listener.make() {
        Ok(accept) => accept,
        Err(error) => {
            tracing::error!(worker = index, %error, "cannot listen; this worker takes no connections");
            let _ = report.send(());
            return;
        }
    };
    let driver = tokio::spawn(driver.run(command_rx, feed));
    let mut http_connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => break,
            accepted = accept.accept() => serving.on_accept(&mut http_connections, accepted).await,
            Some(_) = http_connections.join_next(), if !http_connections.is_empty() => {}
        }
    }

    let _ = commands.send(Command::Shutdown).await;
    // Accepting goes on while the connections drain, so a new upgrade gets
    // 503 shutting_down (and probes their answers) instead of a refused
    // TCP connection.
    // Mapped to (), so the watch's read guard never lives across an await.
    let drain = async {
        let _ = drained.wait_for(|done| *done).await.map(|_| ());
    };
    tokio::pin!(drain);
    let give_up = tokio::time::sleep(shutdown_timeout);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            biased;
            () = &mut drain => break,
            () = &mut give_up => {
                tracing::warn!(timeout = ?shutdown_timeout, worker = index, "drain timed out; dropping the remaining connections");
                break;
            }
            accepted = accept.accept() => serving.on_accept(&mut http_connections, accepted).await,
            Some(_) = http_connections.join_next(), if !http_connections.is_empty() => {}
        }
    }
    drop(accept);
    let _ = report.send(());
    loop {
        tokio::select! {
            () = stop.wait() => break,
            Some(_) = http_connections.join_next(), if !http_connections.is_empty() => {}
        }
    }
    http_connections.abort_all();
    driver.abort();
    let _ = driver.await;
}

/// Serves HTTP/1.1 on one connection (plain or after its TLS handshake):
/// the endpoints, and the WebSocket upgrade.
async fn serve_http<S>(
    stream: S,
    state: Arc<AppState>,
    remote: SocketAddr,
    timeout: Duration,
    head_limit: usize,
    admitted: Arc<Admitted>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let (state, admitted) = (state.clone(), admitted.clone());
        async move {
            Ok::<_, std::convert::Infallible>(http::route(request, state, remote, admitted).await)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        // 431 and close above the limit; the read buffer stops growing
        // there too.
        .max_header_size(head_limit)
        .max_buf_size(head_limit.max(HYPER_MIN_BUF) + HYPER_MIN_BUF)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(error) = served {
        tracing::debug!(%remote, %error, "http connection ended with an error");
    }
}

/// The bus `WS_PUBLISH_VIA` names, from the source that carries it; this
/// replica's core for `local`.
fn publish_bus(config: &ServerConfig, sources: &[Box<dyn Source>], sink: &PublishSink) -> Bus {
    let local = || Bus::Local(sink.for_source("http"));
    if config.publish.via == PublishVia::Local {
        return local();
    }
    match sources.iter().find_map(|s| s.bus()) {
        Some(bus) => {
            tracing::info!(via = bus.name(), "publishing through the bus");
            bus
        }
        None => {
            // build_sources always gives the bus to its source; only a
            // hand-built source list can miss it.
            tracing::error!(
                via = config.publish.via.as_str(),
                "WS_PUBLISH_VIA names a bus no source carries; publishing locally"
            );
            local()
        }
    }
}

/// A server running in the background, for tests and the dev command.
#[derive(Debug)]
pub struct ServerHandle {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its readiness and metrics.
    pub observers: Observers,
    /// Fires the graceful shutdown.
    pub trigger: ShutdownTrigger,
    /// The server task; resolves after the shutdown completes.
    pub task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl ServerHandle {
    /// Shuts the server down and waits for it.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.trigger.trigger();
        self.task.await.expect("the server task does not panic")
    }
}

/// Binds `config.bind_address` over TCP and runs the server in a task. A
/// TLS certificate that cannot be used is an error here, not in the task.
pub async fn start(
    config: ServerConfig,
    sources: Vec<Box<dyn Source>>,
) -> Result<ServerHandle, ServerError> {
    let tls = load_tls(&config)?;
    let accept = TcpAccept::listen(config.bind_address, &ListenOptions::from(&config))
        .await
        .map_err(|source| ServerError::Bind {
            address: config.bind_address,
            source,
        })?;
    let address = accept.local_addr().map_err(|source| ServerError::Bind {
        address: config.bind_address,
        source,
    })?;
    let (trigger, shutdown) = shutdown::channel();
    let observers = Observers::default();
    let serving = serve(accept, config, tls, sources, shutdown, observers.clone());
    let task = tokio::spawn(async move {
        serving.await;
        Ok(())
    });
    Ok(ServerHandle {
        address,
        observers,
        trigger,
        task,
    })
}

/// The token verifier for `config`: secrets, the PEM key, and the JWKS,
/// whose refresher starts here and reports to `/ready` as `jwks`.
fn verifier(config: &ServerConfig, readiness: &Readiness) -> Verifier {
    let auth = &config.auth;
    let public_key = auth.public_key_pem.as_deref().map(|pem| {
        crate::auth::parse_public_key_pem(pem)
            .expect("the configuration checked WS_AUTH_PUBLIC_KEY_FILE at start-up")
    });
    let jwks = auth.jwks.clone().map(|jwks_config| {
        let health = readiness.register("jwks");
        let handle = JwksHandle::new(
            jwks_config,
            Box::new(move |state: Option<String>| match state {
                None => health.ready(),
                Some(why) => health.not_ready(why),
            }),
        );
        tokio::spawn(handle.clone().run());
        handle
    });
    Verifier::with_keys(
        AuthConfig {
            secret: auth.secret.clone(),
            audience: auth.audience.clone(),
            issuer: auth.issuer.clone(),
            leeway_secs: auth.leeway.as_secs(),
        },
        AuthKeys {
            previous_secrets: auth.previous_secrets.clone(),
            public_key,
            jwks,
        },
    )
}
