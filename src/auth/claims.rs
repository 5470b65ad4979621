//! The claims the server reads from a verified token, and how they become
//! an [`Identity`]: time claims judged against the caller's clock (never the
//! system's), `aud`/`iss` when configured, `sub`, roles and channel patterns.
//! A claim that grants something is never half-read: a wrong type refuses
//! the token.

use serde::Deserialize;
use serde_json::Value;

use super::{AuthConfig, AuthError};
use crate::core::Identity;

/// The claims the server reads, kept as raw JSON so a wrong type becomes a
/// precise [`AuthError::MalformedClaim`] rather than a generic parse error.
#[derive(Deserialize)]
pub(super) struct RawClaims {
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
    #[serde(default)]
    iat: Option<Value>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    iss: Option<Value>,
    #[serde(default)]
    role: Option<Value>,
    #[serde(default)]
    roles: Option<Value>,
    #[serde(default)]
    channels: Option<Value>,
    #[serde(default, rename = "maxRate")]
    max_rate: Option<Value>,
    #[serde(default)]
    delay: Option<Value>,
}

/// Who `claims` name, checked at `now` (Unix seconds) under `cfg`.
pub(super) fn identity_from(
    cfg: &AuthConfig,
    claims: RawClaims,
    now: u64,
) -> Result<Identity, AuthError> {
    let leeway = cfg.leeway_secs;
    let exp = unix_seconds(claims.exp.as_ref(), "exp")?;
    if let Some(exp) = exp
        && now >= exp.saturating_add(leeway)
    {
        return Err(AuthError::Expired { exp });
    }
    for (value, claim) in [(&claims.nbf, "nbf"), (&claims.iat, "iat")] {
        if let Some(not_before) = unix_seconds(value.as_ref(), claim)?
            && now.saturating_add(leeway) < not_before
        {
            return Err(AuthError::NotYetValid { not_before });
        }
    }
    if let Some(expected) = &cfg.audience
        && !audience_names(claims.aud.as_ref(), expected)
    {
        return Err(AuthError::WrongAudience {
            expected: expected.clone(),
        });
    }
    if let Some(expected) = &cfg.issuer
        && claims.iss.as_ref().and_then(Value::as_str) != Some(expected.as_str())
    {
        return Err(AuthError::WrongIssuer {
            expected: expected.clone(),
        });
    }
    let user_id = match claims.sub {
        Some(Value::String(sub)) if !sub.is_empty() => sub,
        _ => return Err(AuthError::MissingSub),
    };
    let mut roles = Vec::new();
    collect_roles(claims.role.as_ref(), "role", &mut roles)?;
    collect_roles(claims.roles.as_ref(), "roles", &mut roles)?;
    // The identity lives as long as the connection: boxed slices keep no
    // spare capacity (a vector grown by pushes holds at least 4 entries,
    // 96 bytes).
    Ok(Identity {
        user_id: user_id.into(),
        roles: roles.into_boxed_slice(),
        channel_patterns: channel_patterns(claims.channels.as_ref())?,
        expires_at_unix_ms: exp.map(|exp| exp.saturating_mul(1000)),
        max_rate: max_rate(claims.max_rate.as_ref())?,
        delay: delay(claims.delay.as_ref())?,
    })
}

/// The longest `delay` claim accepted: a day (a delay must fit the history
/// ring, whose age bound is configured in minutes, not weeks).
const MAX_DELAY_SECS: u64 = 86_400;

/// The `delay` claim: how late this user gets every channel's messages, as
/// whole seconds (`900`) or a string with a unit (`"15m"`, `"90s"`, `"1h"`,
/// `"900"`), from 0 (live) to a day.
fn delay(value: Option<&Value>) -> Result<Option<std::time::Duration>, AuthError> {
    let malformed = AuthError::MalformedClaim {
        claim: "delay",
        expected: "a delay such as \"15m\", \"90s\", \"1h\" or a whole number of seconds, from 0 to 24h",
    };
    let secs = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(text)) => {
            let text = text.trim();
            let (number, unit) = text.split_at(
                text.find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(text.len()),
            );
            let scale = match unit {
                "" | "s" => Some(1),
                "m" => Some(60),
                "h" => Some(3600),
                _ => None,
            };
            number
                .parse::<u64>()
                .ok()
                .zip(scale)
                .and_then(|(n, scale)| n.checked_mul(scale))
        }
        Some(_) => None,
    };
    match secs {
        Some(0) => Ok(None),
        Some(secs) if secs <= MAX_DELAY_SECS => Ok(Some(std::time::Duration::from_secs(secs))),
        _ => Err(malformed),
    }
}

/// The `maxRate` claim: a whole number of messages per second, at least 1
/// (an entitlement tier narrowing `WS_SUBSCRIPTION_MAX_RATE` for this user).
fn max_rate(value: Option<&Value>) -> Result<Option<u32>, AuthError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|rate| *rate >= 1)
            .map(|rate| Some(u32::try_from(rate).unwrap_or(u32::MAX)))
            .ok_or(AuthError::MalformedClaim {
                claim: "maxRate",
                expected: "a whole number of messages per second, at least 1",
            }),
    }
}

/// A NumericDate claim in whole seconds. Fractions are allowed by RFC 7519
/// and truncated; negative, non-numeric or absurd values are malformed.
fn unix_seconds(value: Option<&Value>, claim: &'static str) -> Result<Option<u64>, AuthError> {
    let malformed = AuthError::MalformedClaim {
        claim,
        expected: "a number of seconds since the Unix epoch",
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(secs) = n.as_u64() {
                Ok(Some(secs))
            } else {
                match n.as_f64() {
                    // u64::MAX as f64 rounds up, so `<` keeps the cast exact-or-saturating.
                    Some(secs) if secs >= 0.0 && secs < u64::MAX as f64 => Ok(Some(secs as u64)),
                    _ => Err(malformed),
                }
            }
        }
        Some(_) => Err(malformed),
    }
}

/// Whether `aud` (a string or an array of strings) names `expected`.
fn audience_names(aud: Option<&Value>, expected: &str) -> bool {
    match aud {
        Some(Value::String(aud)) => aud == expected,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(expected)),
        _ => false,
    }
}

/// Adds the roles of a `role` or `roles` claim (a string or an array of
/// strings) to `roles`, without duplicates. A claim that grants permissions
/// is never half-read: any non-string entry refuses the token.
fn collect_roles(
    value: Option<&Value>,
    claim: &'static str,
    roles: &mut Vec<String>,
) -> Result<(), AuthError> {
    let malformed = AuthError::MalformedClaim {
        claim,
        expected: "a string or an array of strings",
    };
    let mut add = |role: &str| {
        if !role.is_empty() && !roles.iter().any(|known| known == role) {
            roles.push(role.to_owned());
        }
    };
    match value {
        None | Some(Value::Null) => {}
        Some(Value::String(role)) => add(role),
        Some(Value::Array(items)) => {
            for item in items {
                add(item.as_str().ok_or_else(|| malformed.clone())?);
            }
        }
        Some(_) => return Err(malformed),
    }
    Ok(())
}

/// The `channels` claim: an array of patterns or a comma-separated string.
/// Absent means unrestricted; present but empty allows no channel at all.
fn channel_patterns(value: Option<&Value>) -> Result<Option<Box<[String]>>, AuthError> {
    let malformed = AuthError::MalformedClaim {
        claim: "channels",
        expected: "an array of channel patterns or a comma-separated string",
    };
    let patterns: Vec<String> = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|pattern| !pattern.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(|s| s.trim().to_owned()))
            .collect::<Option<Vec<String>>>()
            .ok_or(malformed)?
            .into_iter()
            .filter(|pattern| !pattern.is_empty())
            .collect(),
        Some(_) => return Err(malformed),
    };
    Ok(Some(patterns.into_boxed_slice()))
}
