//! The small world the core fuzz targets play in: a few users with different
//! rights, a few channels (allowed, restricted, owner-only, invalid), and a
//! configuration drawn from the fuzz input within sane ranges.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use arbitrary::Arbitrary;

use crate::core::{
    Access, ChannelRule, CoreConfig, DeliveryRule, HistoryConfig, HistoryLimits, Identity, Open,
    SlowClientPolicy,
};

/// Channel names the targets pick from: some collide on purpose, some are
/// restricted by the rules of [`channel_rules`], some are invalid.
pub(crate) const CHANNELS: &[&str] = &[
    "lines",
    "order_book",
    "analytics",
    "trade:AAPL",
    "trade:MSFT",
    "user:alice",
    "user:bob",
    "admin:audit",
    "assessment:42",
    "bad channel",
    "",
    "x234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890",
];

/// Picks a channel by a fuzzed index.
pub(crate) fn channel(index: u8) -> &'static str {
    CHANNELS[index as usize % CHANNELS.len()]
}

/// `admin:*` for the admin role, `user:{sub}` for its owner.
pub(crate) fn channel_rules() -> Vec<ChannelRule> {
    vec![
        ChannelRule {
            pattern: "admin:*".to_owned(),
            access: Access::Roles(vec!["admin".to_owned()]),
        },
        ChannelRule {
            pattern: "user:{sub}".to_owned(),
            access: Access::Owner,
        },
    ]
}

/// A fuzzed user: index into a fixed cast, plus an optional expiry.
pub(crate) fn identity(user: u8, expires_in_secs: Option<u8>) -> Identity {
    let (user_id, roles, patterns): (&str, &[&str], Option<&[&str]>) = match user % 4 {
        0 => ("alice", &["trader"], None),
        1 => ("bob", &["admin"], None),
        2 => ("carol", &[], Some(&["trade:*", "lines"])),
        _ => ("dave", &[], Some(&[])),
    };
    Identity {
        user_id: user_id.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        channel_patterns: patterns.map(|p| p.iter().map(|c| (*c).to_owned()).collect()),
        expires_at_unix_ms: expires_in_secs
            .map(|secs| super::harness::START_UNIX_MS + u64::from(secs) * 1000),
        // Entitlement tiers: carol's token narrows maxRate, dave's delays.
        max_rate: (user % 4 == 2).then_some(2),
        delay: (user % 4 == 3).then_some(Duration::from_millis(1500)),
    }
}

/// A connection request from one of four addresses.
pub(crate) fn open(user: u8, address: u8, channels: &[u8], expires_in_secs: Option<u8>) -> Open {
    Open {
        identity: identity(user, expires_in_secs),
        remote: IpAddr::V4(Ipv4Addr::new(10, 0, 0, address % 4)),
        channels: channels
            .iter()
            .take(8)
            .map(|c| channel(*c).to_owned())
            .collect(),
        deflate: None,
    }
}

/// Configuration knobs, each mapped into a range the config loader would
/// accept.
#[derive(Debug, Clone, Arbitrary)]
pub(crate) struct ConfigChoice {
    buffer_frames: u8,
    buffer_bytes: u16,
    drop_oldest: bool,
    grace_ms: u16,
    heartbeat_ms: u16,
    timeout_ms: u16,
    app_ping: bool,
    max_channels: u8,
    max_connections: u8,
    max_per_ip: u8,
    rate: u8,
    burst: u8,
    batch_max: u8,
    batch_delay_ms: u8,
    history_size: u8,
    history_bytes: u16,
    history_age_ms: u16,
}

impl ConfigChoice {
    /// The core configuration these knobs describe.
    pub(crate) fn build(&self) -> CoreConfig {
        CoreConfig {
            server_id: "fuzz".to_owned(),
            client_buffer_frames: 1 + usize::from(self.buffer_frames % 16),
            client_buffer_bytes: 512 + usize::from(self.buffer_bytes % 16_384),
            // Knobs derived from bits the older fields leave unused, so the
            // committed seeds keep parsing: conflate, per-pattern policies
            // and delays, and a low maxRate cap.
            slow_client_policy: match (self.drop_oldest, self.buffer_frames & 0x10 != 0) {
                (true, _) => SlowClientPolicy::DropOldest,
                (false, true) => SlowClientPolicy::Conflate,
                (false, false) => SlowClientPolicy::Disconnect,
            },
            delivery_rules: self.delivery_rules(),
            subscription_max_rate: 1 + u32::from(self.buffer_frames >> 5),
            slow_close_grace: Duration::from_millis(10 + u64::from(self.grace_ms % 5_000)),
            heartbeat_interval: Duration::from_millis(50 + u64::from(self.heartbeat_ms % 10_000)),
            connection_timeout: Duration::from_millis(100 + u64::from(self.timeout_ms % 30_000)),
            app_ping: self.app_ping,
            max_message_bytes: 64 * 1024,
            max_channels_per_connection: 1 + usize::from(self.max_channels % 8),
            max_connections: usize::from(self.max_connections % 7),
            max_connections_per_ip: usize::from(self.max_per_ip % 4),
            rate_limit_per_second: 1 + u32::from(self.rate % 200),
            rate_limit_burst: 1 + u32::from(self.burst % 200),
            batch_max: 1 + usize::from(self.batch_max % 4),
            batch_delay: Duration::from_millis(u64::from(self.batch_delay_ms % 50)),
            channel_rules: channel_rules(),
            compression_min_bytes: 256,
            // Small rings so eviction, gaps and refused recoveries happen.
            history: HistoryConfig {
                defaults: HistoryLimits {
                    messages: usize::from(self.history_size % 9),
                    bytes: 256 + usize::from(self.history_bytes % 8192),
                    max_age: Duration::from_millis(u64::from(self.history_age_ms % 20_000)),
                    snapshot_keys: usize::from(self.history_size % 4),
                    snapshot_field: (self.history_size % 2 == 0).then(|| "symbol".to_owned()),
                },
                rules: Vec::new(),
                max_bytes: 1024 + usize::from(self.history_bytes % 16_384),
                epoch: "0".to_owned(),
            },
            refresh_lead: Duration::from_secs(60),
        }
    }
}

impl ConfigChoice {
    /// Per-pattern slow-client policies and a delay, from the high bits of
    /// `buffer_bytes`.
    fn delivery_rules(&self) -> Vec<DeliveryRule> {
        let bits = self.buffer_bytes >> 14;
        let policy = [
            SlowClientPolicy::Conflate,
            SlowClientPolicy::Disconnect,
            SlowClientPolicy::DropOldest,
        ];
        let mut rules = Vec::new();
        if bits & 1 != 0 {
            rules.push(DeliveryRule {
                pattern: "trade:*".to_owned(),
                slow_client_policy: Some(policy[usize::from(self.grace_ms % 3)]),
                delay: None,
            });
        }
        if bits & 2 != 0 {
            rules.push(DeliveryRule {
                pattern: "lines".to_owned(),
                slow_client_policy: Some(policy[usize::from(self.timeout_ms % 3)]),
                delay: (self.heartbeat_ms % 2 == 0).then_some(Duration::from_millis(700)),
            });
        }
        rules
    }
}

/// A fuzz-chosen payload for a publish.
#[derive(Debug, Clone, Arbitrary)]
pub enum PayloadChoice {
    /// A small JSON object, as a market feed sends.
    Quote {
        /// Price in cents.
        price: i32,
        /// Symbol index.
        symbol: u8,
    },
    /// Any JSON value, through `serde_json`.
    Json(ArbitraryJson),
    /// Raw bytes: JSON, text or binary, whatever they happen to be.
    Raw(Vec<u8>),
    /// A payload of about `size` bytes, JSON or binary (generated tests
    /// that stamp their own sequence number into it; not drawn by the
    /// fuzzer, so committed seeds decode as before).
    #[arbitrary(skip)]
    Filler {
        /// Roughly how many bytes.
        size: u16,
        /// Binary (not UTF-8) rather than a JSON object.
        binary: bool,
    },
}

impl PayloadChoice {
    /// The payload bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            PayloadChoice::Quote { price, symbol } => format!(
                r#"{{"symbol":"{}","price":{}.{:02},"ts":1767225600000}}"#,
                ["AAPL", "MSFT", "GOOG"][*symbol as usize % 3],
                price / 100,
                (price % 100).unsigned_abs()
            )
            .into_bytes(),
            PayloadChoice::Json(json) => json.to_value(0).to_string().into_bytes(),
            PayloadChoice::Raw(bytes) => bytes.clone(),
            PayloadChoice::Filler { size, binary: true } => vec![0xff; usize::from(*size)],
            PayloadChoice::Filler {
                size,
                binary: false,
            } => format!(r#"{{"pad":"{}"}}"#, "x".repeat(usize::from(*size))).into_bytes(),
        }
    }
}

/// A JSON value shaped by the fuzzer (strings with escapes, nesting, floats).
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbitraryJson {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (non-finite ones become `null`, as `serde_json` does).
    Float(f64),
    /// A string, any Unicode.
    Str(String),
    /// An array.
    Array(Vec<ArbitraryJson>),
    /// An object.
    Object(Vec<(String, ArbitraryJson)>),
}

/// Nesting kept well under `serde_json`'s parse limit of 128, so the payload
/// stays JSON and the embedding path is the one exercised.
const MAX_JSON_DEPTH: usize = 32;

impl ArbitraryJson {
    fn to_value(&self, depth: usize) -> serde_json::Value {
        use serde_json::Value;
        if depth >= MAX_JSON_DEPTH {
            return Value::Null;
        }
        match self {
            ArbitraryJson::Null => Value::Null,
            ArbitraryJson::Bool(b) => Value::Bool(*b),
            ArbitraryJson::Int(i) => Value::from(*i),
            ArbitraryJson::Float(f) => Value::from(*f),
            ArbitraryJson::Str(s) => Value::from(s.as_str()),
            ArbitraryJson::Array(items) => items.iter().map(|v| v.to_value(depth + 1)).collect(),
            ArbitraryJson::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value(depth + 1)))
                    .collect(),
            ),
        }
    }
}
