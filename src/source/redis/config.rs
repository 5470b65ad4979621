//! Redis source settings: where to connect, what to subscribe to, and how a
//! Redis channel name becomes a gateway channel.
//!
//! `WS_REDIS_URL` (default `redis://127.0.0.1:6379`) accepts user, password,
//! database (`redis://user:secret@host:6379/2`) and TLS (`rediss://`).
//! `WS_REDIS_PATTERNS` (default `channel:trade:*`) is a comma list: names with
//! a glob character (`*`, `?`, `[`) go to `PSUBSCRIBE`, plain names to
//! `SUBSCRIBE`. `WS_REDIS_CHANNEL_PREFIX` (default `channel:`) is stripped
//! from a Redis channel name to form the gateway channel, so
//! `channel:trade:AAPL` is delivered on `trade:AAPL`.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::config::{ConfigError, Settings};

/// The Redis server used when `WS_REDIS_URL` is unset.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// What the old Node gateway subscribed to.
pub const DEFAULT_PATTERNS: &str = "channel:trade:*";
/// What the old Node gateway's publishers put before the gateway channel.
pub const DEFAULT_CHANNEL_PREFIX: &str = "channel:";

/// Everything the Redis source needs to run.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where to connect, with credentials and database, as the client parsed it.
    pub connection: ConnectionInfo,
    /// The URL with its password masked, for logs and `/ready`: credentials
    /// must never reach either.
    pub display_url: String,
    /// Exact Redis channel names, subscribed with `SUBSCRIBE`.
    pub channels: Vec<String>,
    /// Glob patterns, subscribed with `PSUBSCRIBE`.
    pub patterns: Vec<String>,
    /// Stripped from a Redis channel name to form the gateway channel.
    pub channel_prefix: String,
    /// First delay before reconnecting; doubles after each failed attempt.
    pub reconnect_initial: Duration,
    /// Cap on the reconnect delay, so a long outage is still retried often.
    pub reconnect_max: Duration,
    /// How long one connect-and-subscribe attempt may take before it counts
    /// as failed (an unreachable host may otherwise hang in TCP connect).
    pub connect_timeout: Duration,
    /// How often an idle subscription is pinged: a half-open connection
    /// (host gone without a FIN) would otherwise look healthy forever.
    pub ping_interval: Duration,
    /// At most one "still down" warning per this interval during an outage,
    /// so a long outage does not flood the log with one line per retry.
    pub warn_interval: Duration,
}

impl RedisConfig {
    /// Reads `WS_REDIS_URL`, `WS_REDIS_PATTERNS` and `WS_REDIS_CHANNEL_PREFIX`.
    pub fn from_settings(settings: &Settings) -> Result<RedisConfig, ConfigError> {
        let url = settings.string_or("WS_REDIS_URL", DEFAULT_URL);
        let url = url.trim();
        let display_url = mask_password(url);
        let connection = url.into_connection_info().map_err(|e| {
            ConfigError::invalid(
                "WS_REDIS_URL",
                &display_url,
                &format!(
                    "redis://[user:password@]host[:port][/db] or rediss://… ({})",
                    e.detail().unwrap_or_else(|| e.category())
                ),
            )
        })?;
        if !connection.addr().is_supported() {
            return Err(ConfigError::invalid(
                "WS_REDIS_URL",
                &display_url,
                "an address this build supports (redis://, rediss:// or unix://)",
            ));
        }
        if let ConnectionAddr::TcpTls { insecure: true, .. } = connection.addr() {
            return Err(ConfigError::invalid(
                "WS_REDIS_URL",
                &display_url,
                "a rediss:// URL without #insecure: certificates are always verified; \
                 trust a private CA through SSL_CERT_FILE or the system store",
            ));
        }

        let names = settings
            .list("WS_REDIS_PATTERNS")
            .unwrap_or_else(|| vec![DEFAULT_PATTERNS.to_owned()]);
        if names.is_empty() {
            return Err(ConfigError::invalid(
                "WS_REDIS_PATTERNS",
                settings.get("WS_REDIS_PATTERNS").unwrap_or_default(),
                "a comma list of Redis channels or glob patterns, e.g. channel:trade:*",
            ));
        }
        let (patterns, channels) = names.into_iter().partition(|name| is_glob(name));

        // The prefix is not trimmed: an operator may mean a trailing space.
        // An empty value counts as unset, so "no prefix" is spelled by a
        // prefix no channel has; say so in docs/redis.md.
        let channel_prefix = settings.string_or("WS_REDIS_CHANNEL_PREFIX", DEFAULT_CHANNEL_PREFIX);

        Ok(RedisConfig {
            connection,
            display_url,
            channels,
            patterns,
            channel_prefix,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(15),
            warn_interval: Duration::from_secs(30),
        })
    }

    /// The gateway channel for a Redis channel name: the prefix stripped, or
    /// the name as is when it lacks the prefix. `None` when nothing would be
    /// left (the name is exactly the prefix), since a channel cannot be empty.
    pub fn gateway_channel<'a>(&self, redis_channel: &'a str) -> Option<&'a str> {
        let channel = redis_channel
            .strip_prefix(self.channel_prefix.as_str())
            .unwrap_or(redis_channel);
        (!channel.is_empty()).then_some(channel)
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn uses_tls(&self) -> bool {
        matches!(self.connection.addr(), ConnectionAddr::TcpTls { .. })
    }
}

/// Redis treats `*`, `?` and `[` as glob characters in `PSUBSCRIBE`.
fn is_glob(name: &str) -> bool {
    name.contains(['*', '?', '['])
}

/// `redis://user:secret@host` → `redis://user:***@host`; URLs without a
/// password are returned unchanged.
fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        // `redis://secret@host`: a lone userinfo is the password in Redis URLs.
        None => "",
    };
    format!("{}{}:***{}", &url[..scheme_end], user, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<RedisConfig, ConfigError> {
        RedisConfig::from_settings(&Settings::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn defaults_reproduce_the_node_gateway() {
        let cfg = config(&[]).unwrap();
        assert_eq!(
            cfg.connection.addr(),
            &ConnectionAddr::Tcp("127.0.0.1".to_owned(), 6379)
        );
        assert_eq!(cfg.patterns, vec!["channel:trade:*"]);
        assert!(cfg.channels.is_empty());
        assert_eq!(
            cfg.gateway_channel("channel:trade:AAPL"),
            Some("trade:AAPL")
        );
        assert!(!cfg.uses_tls());
    }

    #[test]
    fn plain_names_subscribe_and_globs_psubscribe() {
        let cfg = config(&[(
            "WS_REDIS_PATTERNS",
            "channel:trade:*, alerts ,news:?x,book:[ab],lines",
        )])
        .unwrap();
        assert_eq!(
            cfg.patterns,
            vec!["channel:trade:*", "news:?x", "book:[ab]"]
        );
        assert_eq!(cfg.channels, vec!["alerts", "lines"]);
    }

    #[test]
    fn names_without_the_prefix_are_kept_and_a_bare_prefix_is_unroutable() {
        let cfg = config(&[("WS_REDIS_CHANNEL_PREFIX", "md.")]).unwrap();
        assert_eq!(cfg.gateway_channel("md.lines"), Some("lines"));
        assert_eq!(
            cfg.gateway_channel("channel:trade:X"),
            Some("channel:trade:X")
        );
        assert_eq!(cfg.gateway_channel("md."), None);
    }

    #[test]
    fn credentials_database_and_tls_are_taken_from_the_url() {
        let cfg =
            config(&[("WS_REDIS_URL", "rediss://feed:s3cret@cache.internal:6380/3")]).unwrap();
        assert!(cfg.uses_tls());
        let redis = cfg.connection.redis_settings();
        assert_eq!(redis.username(), Some("feed"));
        assert_eq!(redis.password(), Some("s3cret"));
        assert_eq!(redis.db(), 3);
        assert_eq!(cfg.display_url, "rediss://feed:***@cache.internal:6380/3");
    }

    #[test]
    fn a_bad_url_names_the_variable_without_leaking_the_password() {
        let err = config(&[("WS_REDIS_URL", "http://u:hunter2@host")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("WS_REDIS_URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn switching_off_tls_verification_is_refused() {
        let err = config(&[("WS_REDIS_URL", "rediss://127.0.0.1:6380/#insecure")]).unwrap_err();
        assert!(err.to_string().contains("SSL_CERT_FILE"), "{err}");
    }

    #[test]
    fn an_empty_pattern_list_is_a_config_error() {
        let err = config(&[("WS_REDIS_PATTERNS", " , ,")]).unwrap_err();
        assert!(err.to_string().contains("WS_REDIS_PATTERNS"), "{err}");
    }

    #[test]
    fn passwords_are_masked_for_display() {
        assert_eq!(
            mask_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(mask_password("redis://:pw@h/0"), "redis://:***@h/0");
        assert_eq!(mask_password("redis://pw@h"), "redis://:***@h");
        assert_eq!(mask_password("redis://u:p@ss@h:1"), "redis://u:***@h:1");
    }
}
