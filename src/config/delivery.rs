//! `[[delivery.rules]]` tables in the TOML file: per channel pattern, how a
//! client gets the channel's messages when it cannot keep up
//! (`slow_client_policy`, overriding `WS_SLOW_CLIENT_POLICY`) and how late
//! (`delay`, served from the history ring). Read with the same
//! `[[section.rules]]` reader as channel and history rules.

use std::time::Duration;

use crate::config::{ConfigError, Settings, parse_duration};
use crate::core::{DeliveryRule, SlowClientPolicy};

/// What `WS_SLOW_CLIENT_POLICY` and a rule's `slow_client_policy` accept.
pub(crate) const POLICIES: &str = "disconnect, drop_oldest or conflate";

/// A slow-client policy by its configured name.
pub(crate) fn parse_policy(raw: &str) -> Option<SlowClientPolicy> {
    match raw.trim() {
        "disconnect" => Some(SlowClientPolicy::Disconnect),
        "drop_oldest" => Some(SlowClientPolicy::DropOldest),
        "conflate" => Some(SlowClientPolicy::Conflate),
        _ => None,
    }
}

/// `[[delivery.rules]]`: `pattern` plus `slow_client_policy`. A bad table
/// is a start-up error naming `delivery.rules` and the offending rule.
pub(crate) fn delivery_rules(settings: &Settings) -> Result<Vec<DeliveryRule>, ConfigError> {
    const VARIABLE: &str = "delivery.rules";
    const FORM: &str = "tables with pattern = \"…\" and slow_client_policy = \"disconnect\", \"drop_oldest\" or \"conflate\" and/or delay = \"15m\"";
    let tables = settings.rule_tables("delivery", FORM)?;
    let bad = |detail: String| ConfigError::invalid(VARIABLE, &detail, FORM);
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        for key in table.keys() {
            if !matches!(key.as_str(), "pattern" | "slow_client_policy" | "delay") {
                return Err(bad(format!("unknown field {key} in {table}")));
            }
        }
        let pattern = table
            .get("pattern")
            .and_then(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad(table.to_string()))?;
        let slow_client_policy = match table.get("slow_client_policy") {
            None => None,
            Some(value) => Some(value.as_str().and_then(parse_policy).ok_or_else(|| {
                ConfigError::invalid(
                    "delivery.rules.slow_client_policy",
                    &value.to_string(),
                    POLICIES,
                )
            })?),
        };
        let delay = match table.get("delay") {
            None => None,
            Some(value) => Some(rule_delay(value).ok_or_else(|| {
                ConfigError::invalid(
                    "delivery.rules.delay",
                    &value.to_string(),
                    "a duration such as \"15m\", \"90s\" or a whole number of seconds, at most 24h",
                )
            })?),
        };
        out.push(DeliveryRule {
            pattern: pattern.to_owned(),
            slow_client_policy,
            delay,
        });
    }
    Ok(out)
}

/// A rule's `delay`: whole seconds, or a string with a unit (`"15m"`); at
/// most a day, like the token claim.
fn rule_delay(value: &toml::Value) -> Option<Duration> {
    let delay = match value {
        toml::Value::Integer(secs) => Duration::from_secs(u64::try_from(*secs).ok()?),
        toml::Value::String(text) if text.trim().bytes().all(|b| b.is_ascii_digit()) => {
            Duration::from_secs(text.trim().parse().ok()?)
        }
        toml::Value::String(text) => parse_duration(text)?,
        _ => return None,
    };
    (delay <= Duration::from_secs(86_400)).then_some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Vec<DeliveryRule>, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ws.toml");
        std::fs::write(&path, text).expect("written");
        delivery_rules(&Settings::load(std::iter::empty(), Some(&path)).expect("valid TOML"))
    }

    #[test]
    fn rules_set_the_policy_per_pattern() {
        let rules = from_toml(
            r#"
[[delivery.rules]]
pattern = "quotes:*"
slow_client_policy = "conflate"

[[delivery.rules]]
pattern = "trades:*"
slow_client_policy = "disconnect"
delay = "15m"

[[delivery.rules]]
pattern = "eod:*"
delay = 90
"#,
        )
        .expect("valid");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].delay, None);
        assert_eq!(rules[1].delay, Some(Duration::from_secs(900)));
        assert_eq!(rules[2].delay, Some(Duration::from_secs(90)));
        assert_eq!(rules[2].slow_client_policy, None);
        assert_eq!(rules[0].pattern, "quotes:*");
        assert_eq!(
            rules[0].slow_client_policy,
            Some(SlowClientPolicy::Conflate)
        );
        assert_eq!(
            rules[1].slow_client_policy,
            Some(SlowClientPolicy::Disconnect)
        );
        assert!(from_toml("").expect("none").is_empty());
    }

    #[test]
    fn a_bad_rule_names_the_key_and_the_value() {
        let err = from_toml(
            "[[delivery.rules]]\npattern = \"quotes:*\"\nslow_client_policy = \"merge\"\n",
        )
        .expect_err("bad policy");
        let text = err.to_string();
        assert!(
            text.contains("delivery.rules.slow_client_policy") && text.contains("merge"),
            "{text}"
        );
        let err = from_toml("[[delivery.rules]]\npattern = \"x\"\ndelay = \"soon\"\n")
            .expect_err("bad delay");
        assert!(err.to_string().contains("delivery.rules.delay"), "{err}");
        for bad in [
            "[[delivery.rules]]\npattern = \"x\"\ndelay = -5\n",
            "[[delivery.rules]]\npattern = \"x\"\ndelay = \"48h\"\n",
            "[[delivery.rules]]\nslow_client_policy = \"conflate\"\n",
            "[[delivery.rules]]\npattern = \"x\"\nslow_client_policy = 3\n",
            "[[delivery.rules]]\npattern = \"x\"\npolicy = \"conflate\"\n",
            "[delivery]\nrules = 5\n",
        ] {
            let err = from_toml(bad).expect_err(bad);
            assert!(err.to_string().contains("delivery.rules"), "{err}");
        }
    }
}
