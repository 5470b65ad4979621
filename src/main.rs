//! The `ws-realtime` binary: `serve` (default), `dev`, `token`, `check-config`.

mod cli;

use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command};
use ws_realtime::config::{LogFormat, ServerConfig, Settings};
use ws_realtime::shell::{ListenOptions, TcpAccept, run, run_workers};
use ws_realtime::shutdown::{self, ShutdownTrigger};
use ws_realtime::source::{Source, build_sources};

/// Exit status for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    keep_small_frees_coalescing();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Dev => dev(),
        Command::Token {
            secret,
            sub,
            ttl,
            roles,
            channels,
            aud,
            iss,
        } => {
            let spec = ws_realtime::auth::TokenSpec {
                sub,
                ttl,
                roles,
                channels,
                audience: aud,
                issuer: iss,
            };
            println!(
                "{}",
                ws_realtime::auth::mint(secret.as_bytes(), &spec, unix_secs())
            );
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => match load(config.as_deref()) {
            Ok((config, settings)) => match build_sources(&config, &settings) {
                Ok(sources) => {
                    for warning in config.warnings() {
                        eprintln!("ws-realtime: warning: {warning}");
                    }
                    let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
                    println!(
                        "configuration is valid: listening on {}, sources: {}",
                        config.bind_address,
                        names.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => config_error(&error),
            },
            Err(error) => config_error(&error),
        },
    }
}

fn load(file: Option<&Path>) -> Result<(ServerConfig, Settings), Box<dyn std::error::Error>> {
    let settings = Settings::load(std::env::vars(), file)?;
    let config = ServerConfig::from_settings(&settings)?;
    // The certificate and key are checked here too, so `check-config` (and
    // a start with a bad file) fails with the variable's name at once.
    if let Some(files) = &config.tls {
        ws_realtime::shell::tls::Tls::load(files)?;
    }
    Ok((config, settings))
}

fn config_error(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("ws-realtime: invalid configuration: {error}");
    ExitCode::from(EXIT_CONFIG)
}

fn serve(file: Option<&Path>) -> ExitCode {
    let (config, settings) = match load(file) {
        Ok(loaded) => loaded,
        Err(error) => return config_error(&error),
    };
    init_logging(config.log_format);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let sources = match build_sources(&config, &settings) {
        Ok(sources) => sources,
        Err(error) => return config_error(&error),
    };
    raise_open_files_limit();
    if config.workers > 1 {
        return serve_workers(config, sources);
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime can be built");
    runtime.block_on(async move {
        let (trigger, shutdown) = shutdown::channel();
        trigger_on_signal(trigger);
        let accept =
            match TcpAccept::listen(config.bind_address, &ListenOptions::from(&config)).await {
                Ok(accept) => accept,
                Err(error) => {
                    tracing::error!(address = %config.bind_address, %error, "cannot listen");
                    return ExitCode::FAILURE;
                }
            };
        match run(accept, config, sources, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// `serve` with `WS_WORKERS` > 1: the workers are threads of their own;
/// this runtime runs the sources and the router, one thread is plenty.
fn serve_workers(config: ServerConfig, sources: Vec<Box<dyn Source>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    runtime.block_on(async move {
        let (trigger, shutdown) = shutdown::channel();
        trigger_on_signal(trigger);
        let observers = ws_realtime::shell::Observers::default();
        match run_workers(config, sources, shutdown, observers).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

fn dev() -> ExitCode {
    let config = match ws_realtime::dev::dev_config(std::env::vars()) {
        Ok(config) => config,
        Err(error) => return config_error(&error),
    };
    init_logging(config.log_format);
    raise_open_files_limit();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime can be built");
    runtime.block_on(async move {
        let (trigger, shutdown) = shutdown::channel();
        trigger_on_signal(trigger);
        match ws_realtime::dev::run_dev(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "dev server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Fires the shutdown on SIGTERM or SIGINT; a second signal exits at once.
/// The handlers are installed here and now, before the server listens: a
/// signal that came before a spawned task first ran would meet the default
/// action instead (the process killed, no 1001 to anyone), which a loaded
/// machine showed as a client connected and then cut without a close frame.
fn trigger_on_signal(trigger: ShutdownTrigger) {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = signal(SignalKind::terminate())
        .and_then(|terminate| Ok((terminate, signal(SignalKind::interrupt())?)));
    let (mut terminate, mut interrupt) = match signals {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM and SIGINT");
            return;
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
        trigger.trigger();
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!("second signal: exiting without waiting for the drain");
        std::process::exit(1);
    });
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Turns off glibc's fastbins (`M_MXFAST` 0) unless the operator tunes
/// malloc through `GLIBC_TUNABLES`. A freed block of up to 128 bytes in a
/// fastbin is never merged with its free neighbours, and every connection's
/// handshake frees many (hyper's request state, the first frames, the
/// leftovers of tokio's 128-byte-aligned allocations) between blocks that
/// stay: at 10 000 idle connections they were ~13 000 holes that newer
/// blocks could not use. Merged at once, the same connections take ~145 B
/// less RSS each (1 983 → 1 839 B, BENCHMARKS.md "Idle memory, wave 3").
/// glibc's per-thread cache still serves small allocations first, so the
/// hot path keeps its fast frees.
fn keep_small_frees_coalescing() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called first
        // thing in main, before any thread exists.
        unsafe { libc::mallopt(libc::M_MXFAST, 0) };
    }
}

/// Raises the soft open-files limit to the hard one: every client is a file
/// descriptor, and the usual soft default (1024) caps connections far below
/// what the server can hold.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!("cannot read the open-files limit");
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    tracing::info!(
        open_files = limit.rlim_cur,
        "connection capacity (open-files limit)"
    );
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
