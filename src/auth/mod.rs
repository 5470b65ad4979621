//! JWT authentication: turns the token a client presents at `GET /ws` into the
//! [`Identity`] the core works with, and mints tokens for `ws-realtime token`,
//! `ws-realtime dev` and tests.
//!
//! Only HS256 is accepted: the algorithm is pinned by the server, so `alg:
//! none` and every other algorithm are refused before any signature work.
//! Time claims (`exp`, `nbf`, `iat`) are checked against the `now` the caller
//! passes, never against the system clock, so simulations stay
//! deterministic; jsonwebtoken's own clock-based checks are switched off.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::Identity;

/// The only algorithm a token may be signed with.
const PINNED_ALGORITHM: &str = "HS256";

/// Longest piece of peer-supplied text (an `alg` name) echoed in an error
/// message, so a hostile header cannot blow up the 401 body or the logs.
const MAX_ECHOED_CHARS: usize = 32;

/// What the server needs to verify tokens.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The HS256 shared secret (`WS_AUTH_SECRET` or the file it names).
    pub secret: Vec<u8>,
    /// When set, the token's `aud` (a string, or an array containing it)
    /// must name it (`WS_AUTH_AUDIENCE`).
    pub audience: Option<String>,
    /// When set, the token's `iss` must equal it (`WS_AUTH_ISSUER`).
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

/// Why a token was refused. `Display` is a sentence the client's developer
/// can act on; it becomes the `message` of the 401 body, and
/// [`AuthError::code`] its `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in `Authorization` nor in `?token=`.
    #[error(
        "no token was sent: pass a JWT as `Authorization: Bearer <token>` or as the `token` query parameter"
    )]
    TokenMissing,
    /// Not three base64url segments of JSON, or otherwise unparseable.
    #[error("the token is not a well-formed JWT ({detail})")]
    Malformed {
        /// What was wrong with it.
        detail: &'static str,
    },
    /// The signature does not match the server's secret.
    #[error("the token's signature does not match: it was not signed with this server's secret")]
    BadSignature,
    /// A claim the server reads has the wrong JSON type.
    #[error("the token's `{claim}` claim is malformed: {expected}")]
    MalformedClaim {
        /// The claim's name.
        claim: &'static str,
        /// The form the server accepts.
        expected: &'static str,
    },
    /// `exp` (plus leeway) is not after `now`.
    #[error("the token expired at {exp} (Unix seconds); request a new token")]
    Expired {
        /// The token's `exp`.
        exp: u64,
    },
    /// `nbf` or `iat` (minus leeway) is after `now`.
    #[error(
        "the token is not valid before {not_before} (Unix seconds); check the issuer's clock or wait"
    )]
    NotYetValid {
        /// The token's `nbf` (or `iat` when that is the later one in the future).
        not_before: u64,
    },
    /// `aud` missing or not naming this server's audience.
    #[error("the token's audience (`aud`) must include \"{expected}\"")]
    WrongAudience {
        /// The configured audience.
        expected: String,
    },
    /// `iss` missing or not this server's issuer.
    #[error("the token's issuer (`iss`) must be \"{expected}\"")]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
    },
    /// No non-empty string `sub` claim.
    #[error("the token has no `sub` claim: it must carry the user id as a non-empty string")]
    MissingSub,
    /// Signed (or "unsigned") with anything but HS256.
    #[error("the token uses algorithm \"{alg}\", but this server accepts only HS256")]
    AlgorithmNotAllowed {
        /// The header's `alg`, shortened.
        alg: String,
    },
}

impl AuthError {
    /// The stable `error` string of the 401 body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::TokenMissing => "token_missing",
            AuthError::Malformed { .. }
            | AuthError::BadSignature
            | AuthError::MalformedClaim { .. } => "invalid_token",
            AuthError::Expired { .. } => "token_expired",
            AuthError::NotYetValid { .. } => "token_not_yet_valid",
            AuthError::WrongAudience { .. } => "wrong_audience",
            AuthError::WrongIssuer { .. } => "wrong_issuer",
            AuthError::MissingSub => "missing_sub",
            AuthError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
        }
    }
}

/// Verifies tokens against one configuration. Cheap to share by reference
/// across connections: verifying needs no mutable state.
pub struct Verifier {
    /// The HS256 key, prepared once rather than per token.
    key: DecodingKey,
    /// jsonwebtoken's checks reduced to the signature and the pinned
    /// algorithm; every claim check happens here, against the caller's clock.
    validation: Validation,
    /// The configured `aud`, `iss` and leeway.
    cfg: AuthConfig,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("Verifier")
            .field("audience", &self.cfg.audience)
            .field("issuer", &self.cfg.issuer)
            .field("leeway_secs", &self.cfg.leeway_secs)
            .finish_non_exhaustive()
    }
}

/// The claims the server reads, kept as raw JSON so a wrong type becomes a
/// precise [`AuthError::MalformedClaim`] rather than a generic parse error.
#[derive(Deserialize)]
struct RawClaims {
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
}

/// Only the header field the algorithm pin needs.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
}

impl Verifier {
    /// A verifier for `cfg`.
    pub fn new(cfg: AuthConfig) -> Verifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Verifier {
            key: DecodingKey::from_secret(&cfg.secret),
            validation,
            cfg,
        }
    }

    /// Checks `token` (without any `Bearer ` prefix) at `now_unix_secs` and
    /// returns who it names.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::TokenMissing);
        }
        check_algorithm(token)?;
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(from_jsonwebtoken)?;
        self.identity_from(data.claims, now_unix_secs)
    }

    fn identity_from(&self, claims: RawClaims, now: u64) -> Result<Identity, AuthError> {
        let leeway = self.cfg.leeway_secs;
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
        if let Some(expected) = &self.cfg.audience
            && !audience_names(claims.aud.as_ref(), expected)
        {
            return Err(AuthError::WrongAudience {
                expected: expected.clone(),
            });
        }
        if let Some(expected) = &self.cfg.issuer
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
        Ok(Identity {
            user_id,
            roles,
            channel_patterns: channel_patterns(claims.channels.as_ref())?,
            expires_at_unix_ms: exp.map(|exp| exp.saturating_mul(1000)),
            max_rate: max_rate(claims.max_rate.as_ref())?,
        })
    }
}

/// Refuses any token whose header does not say HS256, before jsonwebtoken
/// sees it: its `Algorithm` type cannot even represent `none`, which would
/// otherwise surface as a vague JSON error instead of a clear refusal.
fn check_algorithm(token: &str) -> Result<(), AuthError> {
    let encoded_header = token.split('.').next().unwrap_or_default();
    let header_json = URL_SAFE_NO_PAD
        .decode(encoded_header)
        .map_err(|_| AuthError::Malformed {
            detail: "its header is not base64url",
        })?;
    let header: RawHeader =
        serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed {
            detail: "its header is not a JSON object",
        })?;
    match header.alg {
        Some(Value::String(alg)) if alg == PINNED_ALGORITHM => Ok(()),
        Some(Value::String(alg)) => Err(AuthError::AlgorithmNotAllowed {
            alg: alg.chars().take(MAX_ECHOED_CHARS).collect(),
        }),
        Some(other) => Err(AuthError::AlgorithmNotAllowed {
            alg: other.to_string().chars().take(MAX_ECHOED_CHARS).collect(),
        }),
        None => Err(AuthError::Malformed {
            detail: "its header has no `alg`",
        }),
    }
}

/// Maps what can still go wrong after the algorithm pin: shape, signature,
/// payload encoding.
fn from_jsonwebtoken(err: jsonwebtoken::errors::Error) -> AuthError {
    match err.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAllowed {
                alg: "unknown".to_owned(),
            }
        }
        ErrorKind::Base64(_) => AuthError::Malformed {
            detail: "a segment is not base64url",
        },
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::Malformed {
            detail: "its header or payload is not the expected JSON object",
        },
        _ => AuthError::Malformed {
            detail: "it must be three base64url segments separated by dots",
        },
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
/// The `maxRate` claim: a whole number of messages per second, at least 1.
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

fn channel_patterns(value: Option<&Value>) -> Result<Option<Vec<String>>, AuthError> {
    let malformed = AuthError::MalformedClaim {
        claim: "channels",
        expected: "an array of channel patterns or a comma-separated string",
    };
    let patterns = match value {
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
    Ok(Some(patterns))
}

/// What to put in a token made by [`mint`].
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The user id (`sub`).
    pub sub: String,
    /// Lifetime: `exp` is `now + ttl`, in whole seconds.
    pub ttl: Duration,
    /// The `roles` claim; omitted when empty.
    pub roles: Vec<String>,
    /// The `channels` claim; omitted when `None` (unrestricted).
    pub channels: Option<Vec<String>>,
    /// The `aud` claim, when set.
    pub audience: Option<String>,
    /// The `iss` claim, when set.
    pub issuer: Option<String>,
}

/// The claims [`mint`] writes, in the shape [`Verifier::verify`] reads.
#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// An HS256 token for `spec`, issued at `now_unix_secs`.
pub fn mint(secret: &[u8], spec: &TokenSpec, now_unix_secs: u64) -> String {
    let claims = MintedClaims {
        sub: &spec.sub,
        iat: now_unix_secs,
        exp: now_unix_secs.saturating_add(spec.ttl.as_secs()),
        roles: &spec.roles,
        channels: spec.channels.as_deref(),
        aud: spec.audience.as_deref(),
        iss: spec.issuer.as_deref(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HMAC signs with a key of any length and these claims always serialize")
}

#[cfg(test)]
mod tests;
