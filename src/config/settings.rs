//! Raw settings: `WS_*` environment variables over an optional TOML file.
//!
//! Every setting has one canonical name, the environment variable. A TOML key
//! maps onto it by joining its table path with `_` and upper-casing:
//! `[kafka] brokers = "…"` is `WS_KAFKA_BROKERS`, top-level `bind_address` is
//! `WS_BIND_ADDRESS`. Keys of `[kafka.properties]` keep their spelling:
//! `"security.protocol"` is `WS_KAFKA_PROPERTY_security.protocol`. Arrays of
//! strings become comma lists. Arrays of tables (channel rules) are read from
//! [`Settings::toml`]. The environment wins over the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// A configuration value that cannot be used, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse.
    #[error("{variable}={value:?} is invalid: expected {expected}")]
    Invalid {
        /// The `WS_*` name.
        variable: String,
        /// What was given.
        value: String,
        /// The accepted form.
        expected: String,
    },
    /// A required value that is absent.
    #[error("{variable} is required: {hint}")]
    Missing {
        /// The `WS_*` name.
        variable: String,
        /// How to provide it.
        hint: String,
    },
    /// The TOML file cannot be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// An `Invalid` error.
    pub fn invalid(variable: &str, value: &str, expected: &str) -> ConfigError {
        ConfigError::Invalid {
            variable: variable.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }
}

/// Merged raw settings, looked up by `WS_*` name.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Canonical name → raw value, environment over file.
    values: BTreeMap<String, String>,
    /// The parsed TOML file, for structured sections such as channel rules.
    toml: Option<toml::Table>,
}

impl Settings {
    /// Merges the `WS_*` entries of `env` over the TOML file at `file`.
    pub fn load(
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        let toml = match file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                Some(
                    Self::parse_toml(&text).map_err(|message| ConfigError::File {
                        path: path.display().to_string(),
                        message,
                    })?,
                )
            }
        };
        let mut values = BTreeMap::new();
        if let Some(table) = &toml {
            flatten("WS", table, &mut values);
        }
        for (name, value) in env {
            if name.starts_with("WS_") {
                values.insert(name, value);
            }
        }
        Ok(Settings { values, toml })
    }

    /// Settings from `(name, value)` pairs only, for tests.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Settings {
        let env = pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned()));
        Settings::load(env, None).expect("no file, so nothing can fail")
    }

    fn parse_toml(text: &str) -> Result<toml::Table, String> {
        text.parse::<toml::Table>().map_err(|e| e.to_string())
    }

    /// The raw value, if set (an empty value counts as unset).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The parsed TOML file, if one was given.
    pub fn toml(&self) -> Option<&toml::Table> {
        self.toml.as_ref()
    }

    /// The tables of an array of tables `[[section.rules]]` (empty when the
    /// file has none); anything but an array of tables is an error naming
    /// `section.rules` and the accepted `form`.
    pub fn rule_tables(&self, section: &str, form: &str) -> Result<Vec<&toml::Table>, ConfigError> {
        let variable = format!("{section}.rules");
        let Some(rules) = self
            .toml()
            .and_then(|t| t.get(section))
            .and_then(|s| s.get("rules"))
        else {
            return Ok(Vec::new());
        };
        let bad = |value: &dyn std::fmt::Display| {
            ConfigError::invalid(&variable, &value.to_string(), form)
        };
        let array = rules.as_array().ok_or_else(|| bad(rules))?;
        array
            .iter()
            .map(|rule| rule.as_table().ok_or_else(|| bad(rule)))
            .collect()
    }

    /// Every `(suffix, value)` whose name starts with `prefix`.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.values
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v.as_str()))
    }

    /// A required string.
    pub fn required(&self, name: &str, hint: &str) -> Result<String, ConfigError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or_else(|| ConfigError::Missing {
                variable: name.to_owned(),
                hint: hint.to_owned(),
            })
    }

    /// A string with a default.
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// Any `FromStr` value with a default; `expected` describes the form.
    pub fn parse_or<T: FromStr>(
        &self,
        name: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|_| ConfigError::invalid(name, raw, expected)),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::invalid(name, &v, "true or false")),
            },
        }
    }

    /// A duration such as `500ms`, `2s`, `1m`, `1h`; a bare number is milliseconds.
    pub fn duration_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => parse_duration(raw).ok_or_else(|| {
                ConfigError::invalid(
                    name,
                    raw,
                    "a duration such as 500ms, 2s, 1m or 1h (a bare number is milliseconds)",
                )
            }),
        }
    }

    /// A comma list with empty entries removed; `None` when unset.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

/// A bare name (no `/`) is a systemd credential when a credentials directory exists.
pub(crate) fn resolve_credential(file: &Path, credentials_dir: Option<&Path>) -> PathBuf {
    let bare = file.components().count() == 1 && !file.is_absolute();
    match credentials_dir {
        Some(dir) if bare => dir.join(file),
        _ => file.to_path_buf(),
    }
}

/// A duration setting that must be above zero (a zero timer would spin or
/// never fire).
pub(crate) fn nonzero_duration(
    settings: &Settings,
    name: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let value = settings.duration_or(name, default)?;
    if value.is_zero() {
        return Err(ConfigError::invalid(
            name,
            "0",
            "a duration above zero, such as 500ms or 30s",
        ));
    }
    Ok(value)
}

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h`, or a bare number of milliseconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: f64 = number.parse().ok()?;
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    let millis = match unit.trim() {
        "" | "ms" => number,
        "s" => number * 1_000.0,
        "m" => number * 60_000.0,
        "h" => number * 3_600_000.0,
        _ => return None,
    };
    Some(Duration::from_micros((millis * 1_000.0).round() as u64))
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let name = if prefix == "WS_KAFKA_PROPERTIES" {
            format!("WS_KAFKA_PROPERTY_{key}")
        } else {
            format!(
                "{prefix}_{}",
                key.to_ascii_uppercase().replace(['-', '.'], "_")
            )
        };
        match value {
            toml::Value::Table(inner) => flatten(&name, inner, out),
            toml::Value::String(s) => {
                out.insert(name, s.clone());
            }
            toml::Value::Array(items) if items.iter().all(|i| !i.is_table()) => {
                let joined: Vec<String> = items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect();
                out.insert(name, joined.join(","));
            }
            toml::Value::Array(_) => {} // arrays of tables: read through `toml()`
            other => {
                out.insert(name, other.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_wins_over_file_and_file_keys_map_to_ws_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws.toml");
        std::fs::write(
            &path,
            "bind_address = \"127.0.0.1:1\"\nclient_buffer = 7\n[kafka]\nbrokers = \"b:9092\"\ntopics = [\"a\", \"^b\\\\..*\"]\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n",
        )
        .unwrap();
        let env = vec![("WS_BIND_ADDRESS".to_owned(), "127.0.0.1:2".to_owned())];
        let s = Settings::load(env, Some(&path)).unwrap();
        assert_eq!(s.get("WS_BIND_ADDRESS"), Some("127.0.0.1:2"));
        assert_eq!(s.get("WS_CLIENT_BUFFER"), Some("7"));
        assert_eq!(s.get("WS_KAFKA_BROKERS"), Some("b:9092"));
        assert_eq!(s.list("WS_KAFKA_TOPICS").unwrap(), vec!["a", "^b\\..*"]);
        let props: Vec<_> = s.with_prefix("WS_KAFKA_PROPERTY_").collect();
        assert_eq!(props, vec![("security.protocol", "SSL")]);
    }

    #[test]
    fn invalid_value_names_the_variable() {
        let s = Settings::from_pairs([("WS_CLIENT_BUFFER", "lots")]);
        let err = s
            .parse_or::<usize>("WS_CLIENT_BUFFER", 256, "a whole number")
            .unwrap_err();
        assert!(err.to_string().contains("WS_CLIENT_BUFFER"), "{err}");
    }

    #[test]
    fn durations_take_units_and_bare_numbers_are_milliseconds() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2 days"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
