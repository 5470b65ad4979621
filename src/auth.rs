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
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-test-secret-that-is-32-bytes-long!";
    const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn config() -> AuthConfig {
        AuthConfig {
            secret: SECRET.to_vec(),
            audience: None,
            issuer: None,
            leeway_secs: 0,
        }
    }

    fn spec(sub: &str) -> TokenSpec {
        TokenSpec {
            sub: sub.to_owned(),
            ttl: Duration::from_secs(3600),
            roles: Vec::new(),
            channels: None,
            audience: None,
            issuer: None,
        }
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// A token with exactly this header and payload, signed HS256 with
    /// `secret` whatever the header claims.
    fn signed(header: &str, payload: &str, secret: &[u8]) -> String {
        let message = format!("{}.{}", b64(header), b64(payload));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .expect("HMAC accepts any key");
        format!("{message}.{signature}")
    }

    fn payload(claims: &str) -> String {
        signed(r#"{"alg":"HS256","typ":"JWT"}"#, claims, SECRET)
    }

    #[test]
    fn valid_token_yields_its_identity() {
        let mut spec = spec("alice");
        spec.roles = vec!["trader".to_owned()];
        spec.channels = Some(vec!["lines".to_owned(), "trade:*".to_owned()]);
        let token = mint(SECRET, &spec, NOW);
        let identity = Verifier::new(config()).verify(&token, NOW).unwrap();
        assert_eq!(
            identity,
            Identity {
                user_id: "alice".to_owned(),
                roles: vec!["trader".to_owned()],
                channel_patterns: Some(vec!["lines".to_owned(), "trade:*".to_owned()]),
                expires_at_unix_ms: Some((NOW + 3600) * 1000),
            }
        );
    }

    #[test]
    fn empty_token_is_missing() {
        let err = Verifier::new(config()).verify("", NOW).unwrap_err();
        assert_eq!(err, AuthError::TokenMissing);
        assert_eq!(err.code(), "token_missing");
    }

    #[test]
    fn expired_token_is_refused() {
        let token = mint(SECRET, &spec("alice"), NOW);
        let err = Verifier::new(config())
            .verify(&token, NOW + 3600)
            .unwrap_err();
        assert_eq!(err, AuthError::Expired { exp: NOW + 3600 });
        assert_eq!(err.code(), "token_expired");
        assert!(Verifier::new(config()).verify(&token, NOW + 3599).is_ok());
    }

    #[test]
    fn expiry_is_judged_by_the_given_clock_not_the_system_clock() {
        // Issued and expired decades ago by the system clock, yet valid at
        // the `now` the caller passes.
        let token = mint(SECRET, &spec("alice"), 1_000);
        assert!(Verifier::new(config()).verify(&token, 1_000).is_ok());
    }

    #[test]
    fn token_without_exp_never_expires() {
        let token = payload(r#"{"sub":"alice"}"#);
        let identity = Verifier::new(config()).verify(&token, u64::MAX).unwrap();
        assert_eq!(identity.expires_at_unix_ms, None);
    }

    #[test]
    fn token_before_nbf_is_not_yet_valid() {
        let token = payload(&format!(r#"{{"sub":"alice","nbf":{}}}"#, NOW + 10));
        let err = Verifier::new(config()).verify(&token, NOW).unwrap_err();
        assert_eq!(
            err,
            AuthError::NotYetValid {
                not_before: NOW + 10
            }
        );
        assert_eq!(err.code(), "token_not_yet_valid");
        assert!(Verifier::new(config()).verify(&token, NOW + 10).is_ok());
    }

    #[test]
    fn token_issued_in_the_future_is_not_yet_valid() {
        let token = mint(SECRET, &spec("alice"), NOW + 60);
        let err = Verifier::new(config()).verify(&token, NOW).unwrap_err();
        assert_eq!(err.code(), "token_not_yet_valid");
    }

    #[test]
    fn leeway_tolerates_clock_skew_on_exp_and_nbf() {
        let verifier = Verifier::new(AuthConfig {
            leeway_secs: 30,
            ..config()
        });
        let expired = mint(SECRET, &spec("alice"), NOW);
        assert!(verifier.verify(&expired, NOW + 3600 + 29).is_ok());
        assert_eq!(
            verifier
                .verify(&expired, NOW + 3600 + 30)
                .unwrap_err()
                .code(),
            "token_expired"
        );
        let early = payload(&format!(r#"{{"sub":"alice","nbf":{}}}"#, NOW + 30));
        assert!(verifier.verify(&early, NOW).is_ok());
        assert_eq!(
            verifier.verify(&early, NOW - 1).unwrap_err().code(),
            "token_not_yet_valid"
        );
    }

    #[test]
    fn wrong_signature_is_refused() {
        let token = mint(b"some-other-secret-entirely-32-bytes", &spec("alice"), NOW);
        let err = Verifier::new(config()).verify(&token, NOW).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        assert_eq!(err.code(), "invalid_token");
    }

    #[test]
    fn tampered_payload_is_refused() {
        let token = mint(SECRET, &spec("alice"), NOW);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&format!(r#"{{"sub":"admin","exp":{}}}"#, NOW + 3600)),
            parts[2]
        );
        let err = Verifier::new(config()).verify(&forged, NOW).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
    }

    #[test]
    fn alg_none_is_refused() {
        let token = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"sub":"alice"}"#)
        );
        let err = Verifier::new(config()).verify(&token, NOW).unwrap_err();
        assert_eq!(
            err,
            AuthError::AlgorithmNotAllowed {
                alg: "none".to_owned()
            }
        );
        assert_eq!(err.code(), "algorithm_not_allowed");
    }

    #[test]
    fn hs512_token_is_refused_even_with_the_right_secret() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "alice"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let err = Verifier::new(config()).verify(&token, NOW).unwrap_err();
        assert_eq!(err.code(), "algorithm_not_allowed");
        assert!(err.to_string().contains("HS512"), "{err}");
    }

    #[test]
    fn header_claiming_hs256_with_duplicate_alg_none_is_refused() {
        let token = signed(
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"{"sub":"alice"}"#,
            SECRET,
        );
        assert!(Verifier::new(config()).verify(&token, NOW).is_err());
    }

    #[test]
    fn missing_or_empty_sub_is_refused() {
        let verifier = Verifier::new(config());
        for claims in [r#"{"exp":9999999999}"#, r#"{"sub":""}"#, r#"{"sub":42}"#] {
            let err = verifier.verify(&payload(claims), NOW).unwrap_err();
            assert_eq!(err, AuthError::MissingSub, "{claims}");
            assert_eq!(err.code(), "missing_sub");
        }
    }

    #[test]
    fn audience_is_checked_when_configured() {
        let verifier = Verifier::new(AuthConfig {
            audience: Some("ws-realtime".to_owned()),
            ..config()
        });
        let mut good = spec("alice");
        good.audience = Some("ws-realtime".to_owned());
        assert!(verifier.verify(&mint(SECRET, &good, NOW), NOW).is_ok());
        let in_array = payload(r#"{"sub":"alice","aud":["billing","ws-realtime"]}"#);
        assert!(verifier.verify(&in_array, NOW).is_ok());

        let mut wrong = spec("alice");
        wrong.audience = Some("billing".to_owned());
        let err = verifier
            .verify(&mint(SECRET, &wrong, NOW), NOW)
            .unwrap_err();
        assert_eq!(err.code(), "wrong_audience");
        let missing = verifier.verify(&mint(SECRET, &spec("alice"), NOW), NOW);
        assert_eq!(missing.unwrap_err().code(), "wrong_audience");
    }

    #[test]
    fn audience_is_ignored_when_not_configured() {
        let mut other = spec("alice");
        other.audience = Some("billing".to_owned());
        let token = mint(SECRET, &other, NOW);
        assert!(Verifier::new(config()).verify(&token, NOW).is_ok());
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let verifier = Verifier::new(AuthConfig {
            issuer: Some("auth.example".to_owned()),
            ..config()
        });
        let mut good = spec("alice");
        good.issuer = Some("auth.example".to_owned());
        assert!(verifier.verify(&mint(SECRET, &good, NOW), NOW).is_ok());
        let mut wrong = spec("alice");
        wrong.issuer = Some("elsewhere".to_owned());
        let err = verifier
            .verify(&mint(SECRET, &wrong, NOW), NOW)
            .unwrap_err();
        assert_eq!(
            err,
            AuthError::WrongIssuer {
                expected: "auth.example".to_owned()
            }
        );
        assert_eq!(err.code(), "wrong_issuer");
        let missing = verifier.verify(&mint(SECRET, &spec("alice"), NOW), NOW);
        assert_eq!(missing.unwrap_err().code(), "wrong_issuer");
    }

    #[test]
    fn role_and_roles_claims_are_merged_without_duplicates() {
        let token = payload(r#"{"sub":"alice","role":"admin","roles":["trader","admin"]}"#);
        let identity = Verifier::new(config()).verify(&token, NOW).unwrap();
        assert_eq!(
            identity.roles,
            vec!["admin".to_owned(), "trader".to_owned()]
        );
    }

    #[test]
    fn token_without_roles_has_none() {
        let identity = Verifier::new(config())
            .verify(&payload(r#"{"sub":"alice"}"#), NOW)
            .unwrap();
        assert!(identity.roles.is_empty());
        assert_eq!(identity.channel_patterns, None);
    }

    #[test]
    fn non_string_role_refuses_the_token() {
        let err = Verifier::new(config())
            .verify(&payload(r#"{"sub":"alice","roles":["trader",7]}"#), NOW)
            .unwrap_err();
        assert_eq!(
            err,
            AuthError::MalformedClaim {
                claim: "roles",
                expected: "a string or an array of strings"
            }
        );
        assert_eq!(err.code(), "invalid_token");
    }

    #[test]
    fn channels_claim_accepts_an_array_or_a_comma_string() {
        let verifier = Verifier::new(config());
        let array = payload(r#"{"sub":"alice","channels":["lines","trade:*"]}"#);
        let list = payload(r#"{"sub":"alice","channels":"lines, trade:*,"}"#);
        let expected = Some(vec!["lines".to_owned(), "trade:*".to_owned()]);
        assert_eq!(
            verifier.verify(&array, NOW).unwrap().channel_patterns,
            expected
        );
        assert_eq!(
            verifier.verify(&list, NOW).unwrap().channel_patterns,
            expected
        );
        let empty = payload(r#"{"sub":"alice","channels":[]}"#);
        assert_eq!(
            verifier.verify(&empty, NOW).unwrap().channel_patterns,
            Some(vec![])
        );
        let bad = payload(r#"{"sub":"alice","channels":{"lines":true}}"#);
        assert_eq!(
            verifier.verify(&bad, NOW).unwrap_err().code(),
            "invalid_token"
        );
    }

    #[test]
    fn fractional_exp_is_truncated_and_string_exp_is_malformed() {
        let verifier = Verifier::new(config());
        let fractional = payload(&format!(r#"{{"sub":"alice","exp":{}.75}}"#, NOW + 5));
        let identity = verifier.verify(&fractional, NOW).unwrap();
        assert_eq!(identity.expires_at_unix_ms, Some((NOW + 5) * 1000));
        let text = payload(r#"{"sub":"alice","exp":"tomorrow"}"#);
        assert_eq!(
            verifier.verify(&text, NOW).unwrap_err(),
            AuthError::MalformedClaim {
                claim: "exp",
                expected: "a number of seconds since the Unix epoch"
            }
        );
        let negative = payload(r#"{"sub":"alice","exp":-1}"#);
        assert_eq!(
            verifier.verify(&negative, NOW).unwrap_err().code(),
            "invalid_token"
        );
    }

    #[test]
    fn malformed_tokens_are_invalid_not_panics() {
        let verifier = Verifier::new(config());
        let header = b64(r#"{"alg":"HS256"}"#);
        for token in [
            "garbage",
            "a.b",
            "a.b.c.d",
            "...",
            "%%%.%%%.%%%",
            &header,
            &format!("{header}.{}.", b64("[1,2]")),
            &format!("{header}.!!!.sig"),
            &format!("{}.e30.", b64("null")),
            &format!("{}.e30.", b64(r#"{"alg":5}"#)),
            &format!("{}.e30.", b64(r#"{"typ":"JWT"}"#)),
            &payload("not json"),
            &payload(r#"["sub","alice"]"#),
        ] {
            let err = verifier.verify(token, NOW).unwrap_err();
            assert!(
                matches!(err.code(), "invalid_token" | "algorithm_not_allowed"),
                "{token}: {err:?}"
            );
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn echoed_algorithm_name_is_shortened() {
        let long = "X".repeat(10_000);
        let token = format!("{}.e30.", b64(&format!(r#"{{"alg":"{long}"}}"#)));
        let err = Verifier::new(config()).verify(&token, NOW).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn minted_token_omits_absent_optional_claims() {
        let token = mint(SECRET, &spec("bob"), NOW);
        let claims = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"sub": "bob", "iat": NOW, "exp": NOW + 3600})
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let verifier = Verifier::new(config());
        let shown = format!("{verifier:?}");
        assert!(!shown.contains("a-test-secret"), "{shown}");
    }
}
