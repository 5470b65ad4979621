//! The catalog of every setting: its `WS_*` name, default, meaning and
//! section. `docs/configuration.md` is generated from it
//! (`UPDATE_DOCS=1 cargo test --test configuration_docs`), and tests fail
//! when the two differ or when code reads a `WS_*` name missing here.
//!
//! Adding a variable is one entry in [`SETTINGS`] (then regenerate the doc):
//! the parsing stays where the setting is used (`server.rs`, a source's
//! `config.rs`), this table is what a reader sees.

/// Where a setting belongs, which is the table it is listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// How the binary finds its configuration.
    Startup,
    /// The server: listening, authentication, limits, clients.
    Server,
    /// The Kafka source (`WS_SOURCES=kafka`).
    Kafka,
    /// The Redis pub/sub source (`WS_SOURCES=redis`).
    Redis,
    /// History, snapshots and recovery (stream state).
    History,
}

impl Section {
    /// Every section, in the order of the document.
    pub const ALL: [Section; 5] = [
        Section::Startup,
        Section::Server,
        Section::History,
        Section::Kafka,
        Section::Redis,
    ];

    /// The heading of its table.
    pub fn title(self) -> &'static str {
        match self {
            Section::Startup => "Start-up",
            Section::Server => "Server",
            Section::Kafka => "Kafka source",
            Section::Redis => "Redis source",
            Section::History => "History, snapshots and recovery",
        }
    }

    /// A line under the heading, pointing at the guide where there is one.
    pub fn note(self) -> &'static str {
        match self {
            Section::Startup => "",
            Section::Server => "",
            Section::Kafka => {
                "On with `WS_SOURCES=kafka` (the default). Modes, routing and recipes: [kafka.md](kafka.md)."
            }
            Section::Redis => {
                "On with `redis` in `WS_SOURCES`. Behaviour and the recipe reproducing the old Node gateway: [redis.md](redis.md)."
            }
            Section::History => {
                "On by default. These set every channel's limits; `[[history.rules]]` in the TOML file overrides them per channel pattern (below). Protocol and memory per stored message: [protocol.md](protocol.md#stream-state-positions-recovery-snapshots)."
            }
        }
    }
}

/// One setting as the documentation shows it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable (`<NAME>` marks a family of names).
    pub name: &'static str,
    /// Its table.
    pub section: Section,
    /// The default, as shown (`required`, `unset`, `` `256` ``).
    pub default: &'static str,
    /// What it does and the accepted forms (Markdown, one line).
    pub meaning: &'static str,
}

/// Shorthand for the table below.
const fn s(
    name: &'static str,
    section: Section,
    default: &'static str,
    meaning: &'static str,
) -> Setting {
    Setting {
        name,
        section,
        default,
        meaning,
    }
}

use Section::{History, Kafka, Redis, Server, Startup};

/// Every setting. Keep each section's entries together; order is the
/// order of the document. One line each, so concurrent additions merge.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    s("WS_CONFIG", Startup, "unset", "the TOML file to read (same as `--config FILE`)"),
    s("RUST_LOG", Startup, "`info`", "log filter, e.g. `ws_realtime=debug`"),
    s("WS_BIND_ADDRESS", Server, "`:8080`", "listen address: `:8080`, `0.0.0.0:8080`, `127.0.0.1:9000`, `[::]:8080`"),
    s("WS_AUTH_SECRET", Server, "required unless a public key or JWKS is set", "HS256 secret (a warning is logged under 32 bytes)"),
    s("WS_AUTH_SECRET_PREVIOUS", Server, "unset", "comma list of former HS256 secrets, accepted for verification only, so a secret rotates without cutting anyone off"),
    s("WS_AUTH_PUBLIC_KEY_FILE", Server, "unset", "a single PEM public key (`BEGIN PUBLIC KEY`: RSA, P-256, P-384 or Ed25519; or `BEGIN RSA PUBLIC KEY`); a bare name is looked up in `$CREDENTIALS_DIRECTORY`; checked at start-up"),
    s("WS_AUTH_JWKS_URL", Server, "unset", "the identity provider's JWKS, fetched over `https://` (plain `http://` only to a loopback address), trusting the system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` to override); a URL that is down at start does not stop the server: `/ready` reports `jwks: cannot load …` until a first key set is loaded (retried from 1 s, doubling), and HS256 tokens keep working"),
    s("WS_AUTH_JWKS_FILE", Server, "unset", "a JWKS document on disk instead (one of the two); checked at start-up, then reloaded when it changes"),
    s("WS_AUTH_JWKS_REFRESH_INTERVAL", Server, "`5m` (URL), `2s` (file)", "how often the URL is fetched again, or the file checked for a change; a fetch that fails, times out, answers garbage or more than 1 MiB is logged and the last good key set stays in use"),
    s("WS_AUTH_JWKS_MIN_REFETCH_INTERVAL", Server, "`30s`", "least time between two immediate refetches caused by unknown `kid`s, so a flood of bogus ids cannot hammer the identity provider"),
    s("WS_AUTH_JWKS_TIMEOUT", Server, "`5s`", "bound on one JWKS fetch, connect to last byte"),
    s("WS_AUTH_REFRESH_LEAD", Server, "`60s`", "how long before a token's `exp` the server sends `refresh_required` ([protocol.md](protocol.md#token-refresh)); `0` never asks"),
    s("WS_AUTH_SECRET_FILE", Server, "unset", "file holding the secret instead; a bare name is looked up in systemd's `$CREDENTIALS_DIRECTORY` (e.g. `auth-secret`)"),
    s("WS_AUTH_AUDIENCE", Server, "unset", "required `aud`, when set"),
    s("WS_AUTH_ISSUER", Server, "unset", "required `iss`, when set"),
    s("WS_AUTH_LEEWAY", Server, "`5s`", "clock skew tolerated on `exp` / `nbf`"),
    s("WS_ALLOWED_ORIGINS", Server, "all", "comma list of allowed `Origin` values (requests without `Origin` are allowed)"),
    s("WS_CLIENT_BUFFER", Server, "`256`", "per-connection outbound queue, in frames"),
    s("WS_CLIENT_BUFFER_BYTES", Server, "`1048576`", "per-connection outbound queue, in bytes"),
    s("WS_SLOW_CLIENT_POLICY", Server, "`disconnect`", "`disconnect` (close 1008), `drop_oldest` or `conflate` (latest value per key; see [Slow clients](protocol.md#slow-clients)); `[[delivery.rules]]` in the TOML file sets it per channel pattern"),
    s("WS_SUBSCRIPTION_MAX_RATE", Server, "`100`", "highest `maxRate` a subscribe may ask for, messages/s per (channel, key)"),
    s("WS_HEARTBEAT_INTERVAL", Server, "`30s`", "WebSocket Ping period"),
    s("WS_CONNECTION_TIMEOUT", Server, "`60s`", "silence after which a connection is closed"),
    s("WS_APP_PING", Server, "`false`", "also send JSON `ping` frames"),
    s("WS_SHUTDOWN_TIMEOUT_SECONDS", Server, "`10`", "upper bound on a graceful shutdown"),
    s("WS_MAX_MESSAGE_BYTES", Server, "`65536`", "largest inbound frame (close 1009 above)"),
    s("WS_MAX_CHANNELS_PER_CONNECTION", Server, "`100`", "channels one connection may hold"),
    s("WS_MAX_CONNECTIONS", Server, "`0` (no limit)", "open connections in all, counted from accept (before the upgrade)"),
    s("WS_MAX_CONNECTIONS_PER_IP", Server, "`0` (no limit)", "open connections per remote address, counted from accept (before the upgrade)"),
    s("WS_RATE_LIMIT", Server, "`50`", "inbound frames per second per connection"),
    s("WS_RATE_BURST", Server, "`100`", "inbound burst per connection"),
    s("WS_BATCH_MAX", Server, "`1` (off)", "JSON-array batching: most messages per frame"),
    s("WS_BATCH_DELAY", Server, "`0ms`", "JSON-array batching: how long to wait for more"),
    s("WS_COMPRESSION", Server, "`on`", "`on` / `off`: negotiate permessage-deflate with clients that offer it ([protocol.md](protocol.md#compression-permessage-deflate))"),
    s("WS_COMPRESSION_MIN_BYTES", Server, "`256`", "messages with a shorter frame payload go uncompressed"),
    s("WS_SOURCES", Server, "`kafka`", "comma list of `kafka`, `redis`, `http`; `http` is also on whenever `WS_API_KEY` is set"),
    s("WS_API_KEY", Server, "unset", "enables `POST /api/publish`"),
    s("WS_MAX_PUBLISH_BYTES", Server, "`1048576`", "largest `/api/publish` (and `/api/publish/batch`) body (413 above)"),
    s("WS_PUBLISH_VIA", Server, "`kafka` when `WS_API_KEY` is set and the Kafka source runs, else `redis` when the Redis source runs, else `local`", "where a publish goes: `local` (this replica only), `kafka` or `redis` (every replica); see [kafka.md](kafka.md#publishing-to-every-replica)"),
    s("WS_PUBLISH_TOPIC", Server, "`ws-realtime-publish`", "the Kafka topic of `WS_PUBLISH_VIA=kafka` (created at start when missing)"),
    s("WS_PUBLISH_TIMEOUT", Server, "`5s`", "longest a publish waits for the bus to store it before answering 503 `publish_unavailable`"),
    s("WS_MAX_PUBLISH_BATCH", Server, "`1000`", "most messages in one `POST /api/publish/batch`"),
    s("WS_ASSESSMENT_CHANNEL", Server, "`assessment:{assessmentId}`", "channel `?assessmentId=X` subscribes to"),
    s("WS_MAX_REQUEST_HEAD_BYTES", Server, "`16384`", "largest request line + headers (1024–1048576); 431 and close above it"),
    s("WS_SOCKET_SEND_BUFFER", Server, "`262144`", "`SO_SNDBUF` of accepted sockets (4096–67108864; `0` = kernel autotuning); part of the per-client memory bound"),
    s("WS_LISTEN_BACKLOG", Server, "the system's `net.core.somaxconn` (4096 if unreadable)", "listen backlog: connections the kernel queues before they are accepted"),
    s("WS_WORKERS", Server, "the CPUs the process may run on (`available_parallelism`)", "worker threads, each with its own core state machine and connections (1–1024; `1` = one driver for everything); sizing: [operations.md](operations.md#workers-and-sizing-a-host)"),
    s("WS_HANDSHAKE_TIMEOUT", Server, "`10s`", "time a client has to send its request headers (and, with TLS, to finish the TLS handshake)"),
    s("WS_TLS_CERT_FILE", Server, "unset", "PEM certificate chain, leaf first: the port serves `wss://` and `https://` instead of `ws://` and `http://` ([operations.md](operations.md#tls)); a bare name is looked up in `$CREDENTIALS_DIRECTORY`"),
    s("WS_TLS_KEY_FILE", Server, "unset", "PEM private key of that certificate (PKCS#8, RSA or EC); set with `WS_TLS_CERT_FILE`, a bare name as above"),
    s("WS_LOG_FORMAT", Server, "`text`", "`text` or `json` (one object per line)"),
    s("WS_UI", Server, "`false` (`true` under `dev`)", "serve the live page at `GET /`; under `serve` it carries no token and asks for one (or reads it from `/#token=<jwt>`, which never leaves the browser)"),
    s("WS_SERVER_ID", Server, "host name", "shown in `connected` frames and logs; in Kafka `group` mode also the static member id (`group.instance.id`), so it must differ per replica"),
    s("WS_HISTORY_SIZE", History, "`1000`", "messages kept per channel; `0` turns history and snapshots off (nothing stored, nothing replayed)"),
    s("WS_HISTORY_TTL", History, "`5m`", "age after which a stored message is dropped; `0` = no age bound"),
    s("WS_HISTORY_CHANNEL_BYTES", History, "`4194304`", "bytes kept per channel (stored frames plus bookkeeping); a single larger message empties the channel's history"),
    s("WS_HISTORY_SNAPSHOT_KEYS", History, "`10000`", "keys kept per channel for snapshots (oldest key evicted first); `0` turns snapshots off"),
    s("WS_HISTORY_SNAPSHOT_FIELD", History, "unset", "top-level JSON field that keys snapshots (e.g. `symbol`); unset: the Kafka record key, else the channel's last message"),
    s("WS_HISTORY_MAX_BYTES", History, "`268435456`", "cap on everything stored across all channels; the oldest entries go first (`websocket_history_bytes`)"),
    s("WS_KAFKA_BROKERS", Kafka, "`localhost:9092`", "bootstrap servers"),
    s("WS_KAFKA_TOPICS", Kafka, "`lines,order_book,analytics`", "comma list of topics; an entry starting with `^` is a regex, e.g. `^market-data\\..*`"),
    s("WS_KAFKA_GROUP_ID", Kafka, "`ws-realtime`", "consumer group id (suffixed per process in `broadcast` mode)"),
    s("WS_KAFKA_MODE", Kafka, "`broadcast`", "`broadcast` (every replica reads everything) or `group` (one shared group, commits after delivery)"),
    s("WS_KAFKA_START", Kafka, "`latest`", "`latest`, `earliest` or `backfill:N` (the last N records of every partition, then live)"),
    s("WS_KAFKA_ROUTES", Kafka, "none", "`topic-pattern=channel-template` entries separated by `;` (templates: `{topic}`, `{key}`, `{topic}:{key}`, a JSON field such as `assessment:{assessmentId}`)"),
    s("WS_KAFKA_FALLBACK_CHANNEL", Kafka, "`{topic}`", "template for records no route can place"),
    s("WS_KAFKA_PROPERTY_<NAME>", Kafka, "none", "any librdkafka property: `WS_KAFKA_PROPERTY_SASL_MECHANISMS=PLAIN` sets `sasl.mechanisms` (lower-cased, `_` becomes `.`); also a `[kafka.properties]` table"),
    s("WS_REDIS_URL", Redis, "`redis://127.0.0.1:6379`", "`redis://[user:password@]host[:port][/db]`; `rediss://…` for TLS. The password never appears in logs or `/ready`."),
    s("WS_REDIS_PATTERNS", Redis, "`channel:trade:*`", "Comma list. Names containing `*`, `?` or `[` are glob patterns (`PSUBSCRIBE`); other names are exact channels (`SUBSCRIBE`)."),
    s("WS_REDIS_CHANNEL_PREFIX", Redis, "`channel:`", "Stripped from the Redis channel name to form the gateway channel (`channel:trade:AAPL` → `trade:AAPL`). A name without the prefix is used as is (`alerts` → `alerts`); a message on the bare prefix (`channel:`) is dropped and counted as `websocket_source_messages_total{source=\"redis\",kind=\"unroutable\"}`."),
];

/// The prose before the tables.
const INTRO: &str = "\
Settings come from `WS_*` environment variables and an optional TOML file
(`--config FILE` or `WS_CONFIG`); the environment wins. A TOML key maps onto
its variable by table path: `bind_address` is `WS_BIND_ADDRESS`, `[kafka]
brokers` is `WS_KAFKA_BROKERS`; arrays become comma lists. An invalid value
stops start-up with exit status 2 and a message naming the variable and the
accepted form; `ws-realtime check-config` runs the same validation without
starting. Durations take units (`500ms`, `2s`, `1m`, `1h`); a bare number is
milliseconds.
";

/// The prose after the tables: the TOML file and the channel rules, which
/// have no variable.
const TOML_FILE: &str = r#"## TOML file and channel rules

```toml
bind_address = "0.0.0.0:8080"
sources = ["kafka", "http"]
client_buffer = 512
slow_client_policy = "drop_oldest"
heartbeat_interval = "20s"

[kafka]
brokers = "kafka-1:9092,kafka-2:9092"
topics = ["lines", "order_book", "^market-data\\..*"]

[kafka.properties]
"security.protocol" = "SASL_SSL"

# Channel rules: the first matching pattern wins; channels no rule matches
# are open to every authenticated client. `*` is a trailing wildcard.
[[channels.rules]]
pattern = "admin-*"
roles = ["admin"]          # only tokens holding one of these roles

[[channels.rules]]
pattern = "user:{sub}"
owner = true               # only the user the channel names: alice → user:alice

[[channels.rules]]
pattern = "positions:{sub}"
owner = true

# History per channel pattern (first match wins); unset fields take the
# WS_HISTORY_* values: size, channel_bytes, ttl, snapshot_keys, snapshot_field.
[[history.rules]]
pattern = "quotes:*"
size = 5000
ttl = "1m"
snapshot_field = "symbol"

[[history.rules]]
pattern = "ticks:*"
size = 0                   # history off: nothing stored or replayed

# Delivery per channel pattern (first match wins): slow_client_policy
# overrides WS_SLOW_CLIENT_POLICY (disconnect, drop_oldest or conflate).
[[delivery.rules]]
pattern = "quotes:*"
slow_client_policy = "conflate"   # a slow client gets the latest value per key

[[delivery.rules]]
pattern = "trades:*"
slow_client_policy = "disconnect" # every trade matters: cut rather than skip
```

A token's own `channels` claim narrows further: it may subscribe only to
channels matching one of its patterns.
"#;

/// `docs/configuration.md`, generated from [`SETTINGS`].
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration\n\n\
         <!-- Generated from src/config/catalog.rs: edit there, then run\n     \
         UPDATE_DOCS=1 cargo test --test configuration_docs -->\n\n",
    );
    out.push_str(INTRO);
    for section in Section::ALL {
        out.push_str(&format!("\n## {}\n\n", section.title()));
        if !section.note().is_empty() {
            out.push_str(section.note());
            out.push_str("\n\n");
        }
        out.push_str("| variable | default | meaning |\n|---|---|---|\n");
        for setting in SETTINGS.iter().filter(|s| s.section == section) {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                setting.name, setting.default, setting.meaning
            ));
        }
    }
    out.push('\n');
    out.push_str(TOML_FILE);
    out
}

/// Whether `name` (a `WS_*` name as code spells it; a trailing `_` marks a
/// prefix) is in the catalog.
pub fn knows(name: &str) -> bool {
    SETTINGS
        .iter()
        .any(|setting| match setting.name.strip_suffix("<NAME>") {
            Some(family) => name.starts_with(family) || family.starts_with(name),
            None => setting.name == name || (name.ends_with('_') && setting.name.starts_with(name)),
        })
}
