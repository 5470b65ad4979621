//! Stream-state settings: `WS_HISTORY_*` (defaults for every channel and the
//! global byte cap) and `[[history.rules]]` tables in the TOML file
//! (per-pattern limits; `size = 0` turns history off for a pattern).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{ConfigError, Settings, parse_duration};
use crate::core::{HistoryConfig, HistoryLimits, HistoryRule};

/// The history settings, validated.
pub(crate) fn history(settings: &Settings) -> Result<HistoryConfig, ConfigError> {
    let base = HistoryConfig::default();
    let d = &base.defaults;
    let number = |name: &str, default: usize| -> Result<usize, ConfigError> {
        settings.parse_or(name, default, "a whole number such as 1000")
    };
    let defaults = HistoryLimits {
        messages: number("WS_HISTORY_SIZE", d.messages)?,
        bytes: number("WS_HISTORY_CHANNEL_BYTES", d.bytes)?,
        max_age: settings.duration_or("WS_HISTORY_TTL", d.max_age)?,
        snapshot_keys: number("WS_HISTORY_SNAPSHOT_KEYS", d.snapshot_keys)?,
        snapshot_field: settings
            .get("WS_HISTORY_SNAPSHOT_FIELD")
            .map(|f| f.trim().to_owned()),
    };
    if defaults.messages > 0 && defaults.bytes == 0 {
        return Err(ConfigError::invalid(
            "WS_HISTORY_CHANNEL_BYTES",
            "0",
            "a whole number of at least 1 while WS_HISTORY_SIZE is not 0",
        ));
    }
    let max_bytes = number("WS_HISTORY_MAX_BYTES", base.max_bytes)?;
    if max_bytes == 0 {
        return Err(ConfigError::invalid(
            "WS_HISTORY_MAX_BYTES",
            "0",
            "a whole number of at least 1 (set WS_HISTORY_SIZE=0 to turn history off)",
        ));
    }
    Ok(HistoryConfig {
        rules: rules(settings, &defaults)?,
        defaults,
        max_bytes,
        epoch: random_epoch(),
    })
}

/// `[[history.rules]]`: `pattern` plus any of `size`, `channel_bytes`,
/// `ttl`, `snapshot_keys`, `snapshot_field`; unset fields take the defaults.
fn rules(settings: &Settings, defaults: &HistoryLimits) -> Result<Vec<HistoryRule>, ConfigError> {
    const VARIABLE: &str = "history.rules";
    const FORM: &str = "tables with pattern = \"…\" and optional size, channel_bytes, ttl = \"5m\", snapshot_keys, snapshot_field";
    let tables = settings.rule_tables("history", FORM)?;
    let bad = |detail: String| ConfigError::invalid(VARIABLE, &detail, FORM);
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let rule = table;
        for key in table.keys() {
            if !matches!(
                key.as_str(),
                "pattern" | "size" | "channel_bytes" | "ttl" | "snapshot_keys" | "snapshot_field"
            ) {
                return Err(bad(format!("unknown field {key} in {rule}")));
            }
        }
        let pattern = table
            .get("pattern")
            .and_then(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad(rule.to_string()))?;
        let whole = |field: &str, default: usize| -> Result<usize, ConfigError> {
            match table.get(field) {
                None => Ok(default),
                Some(v) => v
                    .as_integer()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| bad(rule.to_string())),
            }
        };
        let max_age = match table.get("ttl") {
            None => defaults.max_age,
            Some(v) => v
                .as_str()
                .and_then(parse_duration)
                .ok_or_else(|| bad(rule.to_string()))?,
        };
        let snapshot_field = match table.get("snapshot_field") {
            None => defaults.snapshot_field.clone(),
            Some(v) => Some(v.as_str().ok_or_else(|| bad(rule.to_string()))?.to_owned()),
        };
        let limits = HistoryLimits {
            messages: whole("size", defaults.messages)?,
            bytes: whole("channel_bytes", defaults.bytes)?,
            max_age,
            snapshot_keys: whole("snapshot_keys", defaults.snapshot_keys)?,
            snapshot_field,
        };
        out.push(HistoryRule {
            pattern: pattern.to_owned(),
            limits,
        });
    }
    Ok(out)
}

/// A per-process epoch: process id, start time and a counter, hex. It only
/// has to differ between processes (and between servers one test process
/// starts).
pub(crate) fn random_epoch() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    let mixed = (nanos as u64)
        ^ (u64::from(std::process::id()) << 40)
        ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_right(8);
    // Fixed width: frame lengths (and so byte counts) must not depend on
    // which epoch a run drew.
    format!("{mixed:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_on_by_default_and_variables_change_it() {
        let config = history(&Settings::from_pairs([])).expect("valid");
        assert_eq!(config.defaults.messages, 1000);
        assert_eq!(config.defaults.max_age, Duration::from_secs(300));
        let config = history(&Settings::from_pairs([
            ("WS_HISTORY_SIZE", "0"),
            ("WS_HISTORY_MAX_BYTES", "1000000"),
            ("WS_HISTORY_SNAPSHOT_FIELD", "symbol"),
        ]))
        .expect("valid");
        assert!(!config.defaults.enabled());
        assert_eq!(config.max_bytes, 1_000_000);
        assert_eq!(config.defaults.snapshot_field.as_deref(), Some("symbol"));
    }

    #[test]
    fn bad_history_settings_name_the_variable() {
        for (name, value) in [
            ("WS_HISTORY_SIZE", "lots"),
            ("WS_HISTORY_MAX_BYTES", "0"),
            ("WS_HISTORY_TTL", "soon"),
        ] {
            let err = history(&Settings::from_pairs([(name, value)])).expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_epoch_is_short_hex() {
        let a = random_epoch();
        assert!(!a.is_empty() && a.bytes().all(|b| b.is_ascii_hexdigit()) && a.len() <= 32);
    }
}
