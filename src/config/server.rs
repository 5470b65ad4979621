//! The validated server configuration: every `WS_*` variable of the server
//! issue turned into typed values, with errors that name the variable and the
//! accepted form. Source-specific settings (Kafka, Redis) are read by their
//! sources from the same [`Settings`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::JwksConfig;
use crate::config::auth::asymmetric_keys;
use crate::config::settings::{nonzero_duration, resolve_credential};
use crate::config::{ConfigError, PublishSettings, Settings, delivery, history};
use crate::core::{Access, ChannelRule, CoreConfig, SlowClientPolicy};

/// Default channel an `?assessmentId=X` query subscribes to.
pub const DEFAULT_ASSESSMENT_CHANNEL: &str = "assessment:{assessmentId}";

/// Secrets shorter than this draw a warning (HS256 wants 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Default `WS_MAX_REQUEST_HEAD_BYTES`: a browser's upgrade with a JWT in
/// the query and a few cookies is 2–6 KiB.
pub const DEFAULT_MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Smallest and largest `WS_MAX_REQUEST_HEAD_BYTES` accepted.
const REQUEST_HEAD_RANGE: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024;

/// Default `WS_SOCKET_SEND_BUFFER`; see BENCHMARKS.md for the measurement.
pub const DEFAULT_SOCKET_SEND_BUFFER: usize = 256 * 1024;

/// Listen backlog when `/proc/sys/net/core/somaxconn` cannot be read.
const FALLBACK_BACKLOG: u32 = 4096;

/// The system's cap on listen backlogs (Linux `net.core.somaxconn`): the
/// kernel silently truncates a larger backlog to it, so it is the largest
/// useful default.
pub fn system_somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|raw| raw.trim().parse().ok())
        .filter(|&n: &u32| n > 0)
        .unwrap_or(FALLBACK_BACKLOG)
}

/// `WS_SOCKET_SEND_BUFFER`: 0 (kernel autotuning) or 4 KiB to 64 MiB.
fn send_buffer(settings: &Settings) -> Result<usize, ConfigError> {
    let value = whole(
        settings,
        "WS_SOCKET_SEND_BUFFER",
        DEFAULT_SOCKET_SEND_BUFFER as u64,
    )?;
    if value != 0 && !(4096..=64 << 20).contains(&value) {
        return Err(ConfigError::invalid(
            "WS_SOCKET_SEND_BUFFER",
            &value.to_string(),
            "0 (kernel autotuning) or a byte count from 4096 to 67108864",
        ));
    }
    Ok(value as usize)
}

/// `WS_MAX_REQUEST_HEAD_BYTES`, within [`REQUEST_HEAD_RANGE`].
fn head_bytes(settings: &Settings) -> Result<usize, ConfigError> {
    let value = whole(
        settings,
        "WS_MAX_REQUEST_HEAD_BYTES",
        DEFAULT_MAX_REQUEST_HEAD_BYTES as u64,
    )?;
    usize::try_from(value)
        .ok()
        .filter(|v| REQUEST_HEAD_RANGE.contains(v))
        .ok_or_else(|| {
            ConfigError::invalid(
                "WS_MAX_REQUEST_HEAD_BYTES",
                &value.to_string(),
                "a byte count from 1024 to 1048576",
            )
        })
}

/// A message source named in `WS_SOURCES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// Kafka topics (rdkafka).
    Kafka,
    /// Redis pub/sub.
    Redis,
    /// `POST /api/publish`.
    Http,
}

impl SourceKind {
    /// The name used in `WS_SOURCES`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Kafka => "kafka",
            SourceKind::Redis => "redis",
            SourceKind::Http => "http",
        }
    }
}

/// Log line format (`WS_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// JWT verification settings (`WS_AUTH_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The HS256 secret; empty when only asymmetric keys are configured.
    pub secret: Vec<u8>,
    /// Former HS256 secrets, accepted for verification only
    /// (`WS_AUTH_SECRET_PREVIOUS`), so a secret rotates without cutting
    /// anyone off.
    pub previous_secrets: Vec<Vec<u8>>,
    /// The PEM public key read from `WS_AUTH_PUBLIC_KEY_FILE` (checked at
    /// start-up).
    pub public_key_pem: Option<Vec<u8>>,
    /// The JWKS to fetch (`WS_AUTH_JWKS_URL`) or read (`WS_AUTH_JWKS_FILE`).
    pub jwks: Option<JwksConfig>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Duration,
}

/// The certificate and key files of `wss://`/`https://` (`WS_TLS_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`WS_TLS_CERT_FILE`).
    pub cert_file: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`WS_TLS_KEY_FILE`).
    pub key_file: PathBuf,
    /// How often the files are checked for a change, so a rotated
    /// certificate is picked up without a SIGHUP (not a variable: tests
    /// shorten it).
    pub watch_interval: Duration,
}

/// How often the TLS files are checked for a change by default.
pub const TLS_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Everything the shell needs to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (`WS_BIND_ADDRESS`).
    pub bind_address: SocketAddr,
    /// Token verification.
    pub auth: AuthSettings,
    /// Allowed `Origin` values; `None` allows every origin
    /// (`WS_ALLOWED_ORIGINS`).
    pub allowed_origins: Option<Vec<String>>,
    /// The core's policies.
    pub core: CoreConfig,
    /// Upper bound on a graceful shutdown (`WS_SHUTDOWN_TIMEOUT_SECONDS`).
    pub shutdown_timeout: Duration,
    /// Enabled sources (`WS_SOURCES`, plus `http` when an API key is set).
    pub sources: Vec<SourceKind>,
    /// Key guarding `POST /api/publish` (`WS_API_KEY`); the endpoint is off
    /// without one.
    pub api_key: Option<String>,
    /// Largest accepted `/api/publish` body (`WS_MAX_PUBLISH_BYTES`).
    pub max_publish_bytes: usize,
    /// Where publishes go and how long they wait for it (`WS_PUBLISH_*`).
    pub publish: PublishSettings,
    /// Template deriving the channel of `?assessmentId=X`
    /// (`WS_ASSESSMENT_CHANNEL`).
    pub assessment_channel: String,
    /// How long a client may take to send its request headers
    /// (`WS_HANDSHAKE_TIMEOUT`), so half-open connections cannot pile up.
    pub handshake_timeout: Duration,
    /// Log line format (`WS_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Whether permessage-deflate is negotiated with clients that offer it
    /// (`WS_COMPRESSION`, on by default).
    pub compression: bool,
    /// Largest request head (request line + headers) accepted before the
    /// upgrade (`WS_MAX_REQUEST_HEAD_BYTES`); above it the answer is 431 and
    /// the connection closes. Bounds what an unauthenticated client can pin.
    pub max_request_head_bytes: usize,
    /// `SO_SNDBUF` of every accepted socket (`WS_SOCKET_SEND_BUFFER`); 0
    /// leaves the kernel's autotuning on. Explicit, because an autotuned
    /// buffer of a client that never reads grows to several MiB of host
    /// memory that the per-client queue bound does not see.
    pub socket_send_buffer: usize,
    /// The listen backlog (`WS_LISTEN_BACKLOG`), so a reconnect storm after
    /// a failover is queued by the kernel instead of refused.
    pub listen_backlog: u32,
    /// Worker threads (`WS_WORKERS`): each owns a core state machine, its
    /// connections and a current-thread runtime, so fan-out uses every core;
    /// 1 is the single-driver server.
    pub workers: usize,
    /// Serve TLS on the port with these files; plain TCP when `None`.
    pub tls: Option<TlsFiles>,
    /// Serve the live page at `/` (`WS_UI`; always on under `dev`).
    pub ui: bool,
    /// The token the live page connects with, written into it. Only `dev`
    /// sets it (never the environment), so a production page carries no
    /// credential and asks for one instead.
    pub ui_token: Option<String>,
}

impl ServerConfig {
    /// Reads and validates every server setting.
    pub fn from_settings(settings: &Settings) -> Result<ServerConfig, ConfigError> {
        let bind_address = match settings.get("WS_BIND_ADDRESS") {
            None => parse_bind_address(":8080").expect("the default is well formed"),
            Some(raw) => parse_bind_address(raw).ok_or_else(|| {
                ConfigError::invalid(
                    "WS_BIND_ADDRESS",
                    raw,
                    "an address such as :8080, 0.0.0.0:8080, 127.0.0.1:9000 or [::]:8080",
                )
            })?,
        };
        let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY");
        let keys = asymmetric_keys(settings, credentials_dir.as_deref().map(Path::new))?;
        let secret = if keys.public_key_pem.is_some() || keys.jwks.is_some() {
            read_secret(settings, credentials_dir.clone()).or_else(|err| match err {
                ConfigError::Missing { .. } => Ok(Vec::new()),
                other => Err(other),
            })?
        } else {
            read_secret(settings, credentials_dir)?
        };
        let auth = AuthSettings {
            secret,
            previous_secrets: settings
                .list("WS_AUTH_SECRET_PREVIOUS")
                .unwrap_or_default()
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            public_key_pem: keys.public_key_pem,
            jwks: keys.jwks,
            audience: settings.get("WS_AUTH_AUDIENCE").map(str::to_owned),
            issuer: settings.get("WS_AUTH_ISSUER").map(str::to_owned),
            leeway: settings.duration_or("WS_AUTH_LEEWAY", Duration::from_secs(5))?,
        };
        let api_key = settings.get("WS_API_KEY").map(str::to_owned);
        let sources = parse_sources(settings, api_key.is_some())?;
        let publish = PublishSettings::from_settings(settings, &sources, api_key.is_some())?;
        let assessment_channel =
            settings.string_or("WS_ASSESSMENT_CHANNEL", DEFAULT_ASSESSMENT_CHANNEL);
        if !assessment_channel.contains("{assessmentId}") {
            return Err(ConfigError::invalid(
                "WS_ASSESSMENT_CHANNEL",
                &assessment_channel,
                "a channel template containing {assessmentId}, e.g. assessment:{assessmentId}",
            ));
        }
        let log_format = match settings.get("WS_LOG_FORMAT").map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::invalid("WS_LOG_FORMAT", other, "text or json"));
            }
        };
        Ok(ServerConfig {
            bind_address,
            auth,
            allowed_origins: settings
                .list("WS_ALLOWED_ORIGINS")
                .filter(|o| !o.is_empty() && !o.iter().any(|x| x == "*")),
            core: core_config(settings)?,
            shutdown_timeout: Duration::from_secs(positive(
                settings,
                "WS_SHUTDOWN_TIMEOUT_SECONDS",
                10,
            )?),
            sources,
            api_key,
            max_publish_bytes: positive(settings, "WS_MAX_PUBLISH_BYTES", 1024 * 1024)? as usize,
            publish,
            assessment_channel,
            handshake_timeout: settings
                .duration_or("WS_HANDSHAKE_TIMEOUT", Duration::from_secs(10))?,
            log_format,
            compression: settings.bool_or("WS_COMPRESSION", true)?,
            max_request_head_bytes: head_bytes(settings)?,
            socket_send_buffer: send_buffer(settings)?,
            listen_backlog: positive_u32(settings, "WS_LISTEN_BACKLOG", system_somaxconn())?,
            workers: workers(settings)?,
            tls: tls_files(settings, std::env::var_os("CREDENTIALS_DIRECTORY"))?,
            ui: settings.bool_or("WS_UI", false)?,
            ui_token: None,
        })
    }

    /// Settings that are valid one by one but work against each other:
    /// `check-config` prints them and `serve` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if (self.core.client_buffer_frames as u64) < u64::from(self.core.rate_limit_burst) {
            warnings.push(format!(
                "WS_CLIENT_BUFFER ({}) is smaller than WS_RATE_BURST ({}): a client may send more \
                 requests in one burst than its queue holds messages; its answers have their own \
                 bound, but a burst of messages published meanwhile closes it as a slow consumer",
                self.core.client_buffer_frames, self.core.rate_limit_burst
            ));
        }
        if !self.auth.secret.is_empty() && self.auth.secret.len() < MIN_SECRET_BYTES {
            warnings.push(format!(
                "WS_AUTH_SECRET is {} bytes, shorter than {MIN_SECRET_BYTES}; use a longer random secret",
                self.auth.secret.len()
            ));
        }
        warnings
    }

    /// A configuration for tests and the dev server: `secret`, everything
    /// else at its default, listening on `127.0.0.1:0`.
    pub fn for_testing(secret: &[u8]) -> ServerConfig {
        ServerConfig {
            bind_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            auth: AuthSettings {
                secret: secret.to_vec(),
                previous_secrets: Vec::new(),
                public_key_pem: None,
                jwks: None,
                audience: None,
                issuer: None,
                leeway: Duration::from_secs(5),
            },
            allowed_origins: None,
            core: CoreConfig {
                // Each test server is its own process as far as recovery goes.
                history: crate::core::HistoryConfig {
                    epoch: history::random_epoch(),
                    ..Default::default()
                },
                ..CoreConfig::default()
            },
            shutdown_timeout: Duration::from_secs(10),
            sources: Vec::new(),
            api_key: None,
            max_publish_bytes: 1024 * 1024,
            publish: PublishSettings::default(),
            assessment_channel: DEFAULT_ASSESSMENT_CHANNEL.to_owned(),
            handshake_timeout: Duration::from_secs(10),
            log_format: LogFormat::Text,
            compression: true,
            max_request_head_bytes: DEFAULT_MAX_REQUEST_HEAD_BYTES,
            socket_send_buffer: DEFAULT_SOCKET_SEND_BUFFER,
            listen_backlog: system_somaxconn(),
            workers: 1,
            tls: None,
            ui: false,
            ui_token: None,
        }
    }
}

/// The core's policies from `WS_*` variables and the TOML channel rules.
fn core_config(settings: &Settings) -> Result<CoreConfig, ConfigError> {
    let defaults = CoreConfig::default();
    let slow_client_policy = match settings.get("WS_SLOW_CLIENT_POLICY") {
        None => SlowClientPolicy::Disconnect,
        Some(raw) => delivery::parse_policy(raw).ok_or_else(|| {
            ConfigError::invalid("WS_SLOW_CLIENT_POLICY", raw.trim(), delivery::POLICIES)
        })?,
    };
    let heartbeat_interval = nonzero_duration(
        settings,
        "WS_HEARTBEAT_INTERVAL",
        defaults.heartbeat_interval,
    )?;
    let connection_timeout = nonzero_duration(
        settings,
        "WS_CONNECTION_TIMEOUT",
        defaults.connection_timeout,
    )?;
    Ok(CoreConfig {
        server_id: settings
            .get("WS_SERVER_ID")
            .map(str::to_owned)
            .unwrap_or_else(host_name),
        client_buffer_frames: positive(
            settings,
            "WS_CLIENT_BUFFER",
            defaults.client_buffer_frames as u64,
        )? as usize,
        client_buffer_bytes: positive(
            settings,
            "WS_CLIENT_BUFFER_BYTES",
            defaults.client_buffer_bytes as u64,
        )? as usize,
        slow_client_policy,
        delivery_rules: delivery::delivery_rules(settings)?,
        subscription_max_rate: u32::try_from(positive(
            settings,
            "WS_SUBSCRIPTION_MAX_RATE",
            u64::from(defaults.subscription_max_rate),
        )?)
        .unwrap_or(u32::MAX),
        slow_close_grace: defaults.slow_close_grace,
        heartbeat_interval,
        connection_timeout,
        app_ping: settings.bool_or("WS_APP_PING", defaults.app_ping)?,
        max_message_bytes: positive(
            settings,
            "WS_MAX_MESSAGE_BYTES",
            defaults.max_message_bytes as u64,
        )? as usize,
        max_channels_per_connection: positive(
            settings,
            "WS_MAX_CHANNELS_PER_CONNECTION",
            defaults.max_channels_per_connection as u64,
        )? as usize,
        max_connections: whole(settings, "WS_MAX_CONNECTIONS", 0)? as usize,
        max_connections_per_ip: whole(settings, "WS_MAX_CONNECTIONS_PER_IP", 0)? as usize,
        rate_limit_per_second: positive_u32(
            settings,
            "WS_RATE_LIMIT",
            defaults.rate_limit_per_second,
        )?,
        rate_limit_burst: positive_u32(settings, "WS_RATE_BURST", defaults.rate_limit_burst)?,
        batch_max: positive(settings, "WS_BATCH_MAX", defaults.batch_max as u64)? as usize,
        batch_delay: settings.duration_or("WS_BATCH_DELAY", defaults.batch_delay)?,
        channel_rules: channel_rules(settings)?,
        compression_min_bytes: whole(
            settings,
            "WS_COMPRESSION_MIN_BYTES",
            defaults.compression_min_bytes as u64,
        )? as usize,
        history: history::history(settings)?,
        refresh_lead: settings.duration_or("WS_AUTH_REFRESH_LEAD", defaults.refresh_lead)?,
    })
}

/// `:8080` (every IPv4 address), `0.0.0.0:8080`, `127.0.0.1:9000`, `[::]:8080`.
pub fn parse_bind_address(raw: &str) -> Option<SocketAddr> {
    let raw = raw.trim();
    if let Some(port) = raw.strip_prefix(':') {
        let port: u16 = port.parse().ok()?;
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    raw.parse().ok()
}

/// `WS_SOURCES` (default `kafka`), with `http` added whenever an API key is set.
fn parse_sources(settings: &Settings, has_api_key: bool) -> Result<Vec<SourceKind>, ConfigError> {
    let names = settings
        .list("WS_SOURCES")
        .unwrap_or_else(|| vec!["kafka".to_owned()]);
    let mut sources = Vec::new();
    for name in &names {
        let kind = match name.to_ascii_lowercase().as_str() {
            "kafka" => SourceKind::Kafka,
            "redis" => SourceKind::Redis,
            "http" => SourceKind::Http,
            _ => {
                return Err(ConfigError::invalid(
                    "WS_SOURCES",
                    &names.join(","),
                    "a comma list of kafka, redis and http",
                ));
            }
        };
        if !sources.contains(&kind) {
            sources.push(kind);
        }
    }
    if has_api_key && !sources.contains(&SourceKind::Http) {
        sources.push(SourceKind::Http);
    }
    if sources.contains(&SourceKind::Http) && !has_api_key {
        return Err(ConfigError::Missing {
            variable: "WS_API_KEY".to_owned(),
            hint: "WS_SOURCES includes http, which needs an API key to guard POST /api/publish"
                .to_owned(),
        });
    }
    Ok(sources)
}

/// The HS256 secret from `WS_AUTH_SECRET` or the file `WS_AUTH_SECRET_FILE`
/// names; a bare file name is looked up in systemd's `$CREDENTIALS_DIRECTORY`.
fn read_secret(
    settings: &Settings,
    credentials_dir: Option<std::ffi::OsString>,
) -> Result<Vec<u8>, ConfigError> {
    if let Some(secret) = settings.get("WS_AUTH_SECRET") {
        return Ok(secret.as_bytes().to_vec());
    }
    let Some(file) = settings.get("WS_AUTH_SECRET_FILE") else {
        return Err(ConfigError::Missing {
            variable: "WS_AUTH_SECRET".to_owned(),
            hint: "set WS_AUTH_SECRET to the HS256 secret, or WS_AUTH_SECRET_FILE to a file holding it (or configure WS_AUTH_PUBLIC_KEY_FILE, WS_AUTH_JWKS_URL or WS_AUTH_JWKS_FILE for asymmetric tokens)".to_owned(),
        });
    };
    let path = resolve_credential(
        Path::new(file.trim()),
        credentials_dir.as_deref().map(Path::new),
    );
    let raw = std::fs::read(&path).map_err(|e| {
        ConfigError::invalid(
            "WS_AUTH_SECRET_FILE",
            file,
            &format!(
                "a readable file holding the secret ({}: {e})",
                path.display()
            ),
        )
    })?;
    // Files usually end with a newline that is not part of the secret.
    let secret = raw.trim_ascii_end().to_vec();
    if secret.is_empty() {
        return Err(ConfigError::invalid(
            "WS_AUTH_SECRET_FILE",
            file,
            "a file holding a non-empty secret",
        ));
    }
    Ok(secret)
}

/// `WS_TLS_CERT_FILE` and `WS_TLS_KEY_FILE`: both or neither. Bare names
/// are systemd credentials, like `WS_AUTH_SECRET_FILE`. Their contents are
/// checked when the server starts (`shell::tls`), not here: the shell owns
/// rustls.
fn tls_files(
    settings: &Settings,
    credentials_dir: Option<std::ffi::OsString>,
) -> Result<Option<TlsFiles>, ConfigError> {
    const CERT: &str = "WS_TLS_CERT_FILE";
    const KEY: &str = "WS_TLS_KEY_FILE";
    let resolve = |raw: &str| {
        resolve_credential(
            Path::new(raw.trim()),
            credentials_dir.as_deref().map(Path::new),
        )
    };
    match (settings.get(CERT), settings.get(KEY)) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert_file: resolve(cert),
            key_file: resolve(key),
            watch_interval: TLS_WATCH_INTERVAL,
        })),
        (Some(_), None) => Err(ConfigError::Missing {
            variable: KEY.to_owned(),
            hint: format!("{CERT} is set, so TLS needs the PEM private key of that certificate"),
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            variable: CERT.to_owned(),
            hint: format!("{KEY} is set, so TLS needs the PEM certificate chain for that key"),
        }),
    }
}

/// `[[channels.rules]]` tables: `pattern` plus `roles = [...]` or `owner = true`.
fn channel_rules(settings: &Settings) -> Result<Vec<ChannelRule>, ConfigError> {
    const VARIABLE: &str = "channels.rules";
    const FORM: &str = "tables with pattern = \"…\" and either roles = [\"…\"] or owner = true";
    let tables = settings.rule_tables("channels", FORM)?;
    let bad = |detail: String| ConfigError::invalid(VARIABLE, &detail, FORM);
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let rule = table;
        let pattern = table
            .get("pattern")
            .and_then(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad(rule.to_string()))?;
        let owner = table
            .get("owner")
            .and_then(|o| o.as_bool())
            .unwrap_or(false);
        let roles = match table.get("roles") {
            None => None,
            Some(value) => {
                let list = value.as_array().ok_or_else(|| bad(rule.to_string()))?;
                let roles: Option<Vec<String>> =
                    list.iter().map(|r| r.as_str().map(str::to_owned)).collect();
                Some(roles.ok_or_else(|| bad(rule.to_string()))?)
            }
        };
        let access = match (owner, roles) {
            (true, None) => {
                if !pattern.contains("{sub}") {
                    return Err(ConfigError::invalid(
                        VARIABLE,
                        pattern,
                        "an owner rule's pattern containing {sub}, e.g. user:{sub}",
                    ));
                }
                Access::Owner
            }
            (false, Some(roles)) if !roles.is_empty() => Access::Roles(roles),
            (false, None) => Access::Authenticated,
            _ => return Err(bad(rule.to_string())),
        };
        out.push(ChannelRule {
            pattern: pattern.to_owned(),
            access,
        });
    }
    Ok(out)
}

/// A whole number ≥ 1.
fn positive(settings: &Settings, name: &str, default: u64) -> Result<u64, ConfigError> {
    let value = whole(settings, name, default)?;
    if value == 0 {
        return Err(ConfigError::invalid(
            name,
            "0",
            "a whole number of at least 1",
        ));
    }
    Ok(value)
}

/// A whole number ≥ 0.
fn whole(settings: &Settings, name: &str, default: u64) -> Result<u64, ConfigError> {
    settings.parse_or(name, default, "a whole number such as 256")
}

fn positive_u32(settings: &Settings, name: &str, default: u32) -> Result<u32, ConfigError> {
    let value = positive(settings, name, u64::from(default))?;
    u32::try_from(value).map_err(|_| {
        ConfigError::invalid(name, &value.to_string(), "a whole number below 4294967296")
    })
}

/// Most workers accepted: far above any host's cores, low enough that a
/// typo (`WS_WORKERS=40000`) is an error instead of 40 000 threads.
pub const MAX_WORKERS: u64 = 1024;

/// The CPUs this process may run on (its affinity mask and cgroup quota),
/// the default of `WS_WORKERS`.
pub fn available_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// `WS_WORKERS`: 1 to [`MAX_WORKERS`], by default [`available_workers`].
fn workers(settings: &Settings) -> Result<usize, ConfigError> {
    let value = positive(settings, "WS_WORKERS", available_workers() as u64)?;
    if value > MAX_WORKERS {
        return Err(ConfigError::invalid(
            "WS_WORKERS",
            &value.to_string(),
            "a whole number from 1 to 1024 (usually the number of cores)",
        ));
    }
    Ok(value as usize)
}

/// The machine's host name, the default server id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ws-realtime".to_owned())
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
