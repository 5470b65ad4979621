//! Everything the core's policies can be tuned with. Built by `crate::config`
//! from `WS_*` variables and the TOML file; plain data, no parsing here.

use std::time::Duration;

/// What to do when a connection's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowClientPolicy {
    /// Close the connection with 1008 "slow consumer" (the default).
    #[default]
    Disconnect,
    /// Drop the oldest queued messages and count them; the client goes on.
    DropOldest,
    /// Replace a queued message by the newest one of the same (channel, key),
    /// in place, so the client gets the latest value of every key it is
    /// behind on; disconnect only when even that does not fit.
    Conflate,
}

/// Who may subscribe to the channels a [`ChannelRule`] matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated client.
    Authenticated,
    /// Only clients holding one of these roles.
    Roles(Vec<String>),
    /// Only the user the channel names: the rule's pattern contains `{sub}`,
    /// e.g. `user:{sub}` admits user `alice` to `user:alice` only.
    Owner,
}

/// A configured restriction: channels matching `pattern` (`*` as a trailing
/// wildcard, or `{sub}` for owner rules) are open to `access` only. The first
/// matching rule wins; channels no rule matches are open to every client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRule {
    /// The channel pattern.
    pub pattern: String,
    /// Who may subscribe.
    pub access: Access,
}

/// Per-pattern delivery settings (`[[delivery.rules]]` in the TOML file):
/// for the channels `pattern` matches (`*` as a trailing wildcard), the
/// first matching rule wins; unset fields and channels no rule matches take
/// the server-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRule {
    /// The channel pattern.
    pub pattern: String,
    /// What a full queue does with this channel's messages, instead of
    /// `WS_SLOW_CLIENT_POLICY` (e.g. conflate prices, disconnect on trades).
    pub slow_client_policy: Option<SlowClientPolicy>,
    /// How late every subscriber gets this channel's messages, served from
    /// its history ring (delayed quotes); a token's `delay` claim may ask
    /// more for its user, never less.
    pub delay: Option<Duration>,
}

/// How much stream state the core keeps for the channels one rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per channel; 0 turns history (and snapshots) off for
    /// the channel: today's behaviour, nothing stored (`WS_HISTORY_SIZE`).
    pub messages: usize,
    /// Bytes of stored frames kept per channel (`WS_HISTORY_CHANNEL_BYTES`).
    pub bytes: usize,
    /// Age after which a stored message is dropped; zero keeps messages
    /// until the other bounds push them out (`WS_HISTORY_TTL`).
    pub max_age: Duration,
    /// Keys kept per channel in the latest-per-key snapshot map; 0 turns
    /// snapshots off (`WS_HISTORY_SNAPSHOT_KEYS`).
    pub snapshot_keys: usize,
    /// The top-level JSON field of a payload that keys snapshots (e.g.
    /// `symbol`); without it the Kafka record key is used, else the channel
    /// snapshots its last message (`WS_HISTORY_SNAPSHOT_FIELD`).
    pub snapshot_field: Option<String>,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            messages: 1000,
            bytes: 4 * 1024 * 1024,
            max_age: Duration::from_secs(300),
            snapshot_keys: 10_000,
            snapshot_field: None,
        }
    }
}

impl HistoryLimits {
    /// Whether anything is stored at all.
    pub fn enabled(&self) -> bool {
        self.messages > 0 && self.bytes > 0
    }
}

/// [`HistoryLimits`] for the channels `pattern` matches (`*` as a trailing
/// wildcard); the first matching rule wins, other channels get the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    /// The channel pattern.
    pub pattern: String,
    /// The limits for it.
    pub limits: HistoryLimits,
}

/// Stream state: per-channel history rings and snapshot maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Limits for channels no rule matches (`WS_HISTORY_*`).
    pub defaults: HistoryLimits,
    /// Per-pattern limits (`[[history.rules]]` in the TOML file).
    pub rules: Vec<HistoryRule>,
    /// Cap on everything stored across channels, stored frames plus their
    /// bookkeeping; the oldest entries go first (`WS_HISTORY_MAX_BYTES`).
    pub max_bytes: usize,
    /// This process's epoch: names the stream of the sequences it assigns
    /// (`~<epoch>:<seq>`). It must differ between processes, so the shell
    /// sets a random one; alphanumeric, at most 32 characters.
    pub epoch: String,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            defaults: HistoryLimits::default(),
            rules: Vec::new(),
            max_bytes: 256 * 1024 * 1024,
            epoch: "0".to_owned(),
        }
    }
}

/// The core's policies.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Shown as `serverId` in `connected` frames.
    pub server_id: String,
    /// Outbound queue bound in frames (`WS_CLIENT_BUFFER`).
    pub client_buffer_frames: usize,
    /// Outbound queue bound in bytes (`WS_CLIENT_BUFFER_BYTES`).
    pub client_buffer_bytes: usize,
    /// What a full queue does (`WS_SLOW_CLIENT_POLICY`), for channels no
    /// [`DeliveryRule`] sets it for.
    pub slow_client_policy: SlowClientPolicy,
    /// Per-pattern delivery settings (`[[delivery.rules]]`, TOML only).
    pub delivery_rules: Vec<DeliveryRule>,
    /// How long a slow consumer's socket gets to take its close frame before
    /// the TCP connection is dropped.
    pub slow_close_grace: Duration,
    /// WebSocket Ping period (`WS_HEARTBEAT_INTERVAL`).
    pub heartbeat_interval: Duration,
    /// Silence after which a connection is closed (`WS_CONNECTION_TIMEOUT`).
    pub connection_timeout: Duration,
    /// Also send JSON `ping` frames (`WS_APP_PING`).
    pub app_ping: bool,
    /// Largest inbound frame (`WS_MAX_MESSAGE_BYTES`); the shell enforces it
    /// while reading and reports oversize frames to the core.
    pub max_message_bytes: usize,
    /// Channels one connection may hold (`WS_MAX_CHANNELS_PER_CONNECTION`).
    pub max_channels_per_connection: usize,
    /// Open connections in all; 0 = unlimited (`WS_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Open connections per remote address; 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// Inbound frames per second per connection (`WS_RATE_LIMIT`); 0 turns
    /// the limit off.
    pub rate_limit_per_second: u32,
    /// Token bucket size (`WS_RATE_BURST`).
    pub rate_limit_burst: u32,
    /// JSON-array batching: most messages per frame; 1 = off (`WS_BATCH_MAX`).
    pub batch_max: usize,
    /// JSON-array batching: how long to wait for more (`WS_BATCH_DELAY`).
    pub batch_delay: Duration,
    /// Role- and owner-restricted channel patterns (TOML only).
    pub channel_rules: Vec<ChannelRule>,
    /// Messages with a shorter JSON payload are sent uncompressed even to
    /// connections that negotiated permessage-deflate
    /// (`WS_COMPRESSION_MIN_BYTES`).
    pub compression_min_bytes: usize,
    /// History, snapshots and recovery.
    pub history: HistoryConfig,
    /// Highest `maxRate` a subscribe may ask for, in messages per second per
    /// (channel, key) (`WS_SUBSCRIPTION_MAX_RATE`); asking more gets this.
    pub subscription_max_rate: u32,
    /// How long before a token's `exp` the server sends `refresh_required`
    /// (`WS_AUTH_REFRESH_LEAD`); zero never asks.
    pub refresh_lead: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            server_id: "ws-realtime".to_owned(),
            client_buffer_frames: 256,
            client_buffer_bytes: 1024 * 1024,
            slow_client_policy: SlowClientPolicy::Disconnect,
            delivery_rules: Vec::new(),
            slow_close_grace: Duration::from_secs(3),
            heartbeat_interval: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(60),
            app_ping: false,
            max_message_bytes: 64 * 1024,
            max_channels_per_connection: 100,
            max_connections: 0,
            max_connections_per_ip: 0,
            rate_limit_per_second: 50,
            rate_limit_burst: 100,
            batch_max: 1,
            batch_delay: Duration::ZERO,
            channel_rules: Vec::new(),
            compression_min_bytes: 256,
            history: HistoryConfig::default(),
            subscription_max_rate: 100,
            refresh_lead: Duration::from_secs(60),
        }
    }
}
