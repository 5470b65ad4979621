//! Token verification: the header picks a key (by `kid`, or by trying the
//! keys of the header's algorithm), the key's type decides whether that
//! algorithm is allowed, jsonwebtoken checks the signature, and
//! [`super::claims`] turns the claims into an [`Identity`].
//!
//! Verification is synchronous and reads only what is already loaded: it
//! never waits for the network. The shell calls [`Verifier::verify_fresh`],
//! which fetches the JWKS again (rate-limited) when a `kid` is unknown.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::claims::{RawClaims, identity_from};
use super::jwks::JwksHandle;
use super::keys::{MAX_KID_CHARS, PublicKey, names};
use super::{AuthError, AuthKeys};
use crate::core::Identity;

/// Longest piece of peer-supplied text (an `alg` name) echoed in an error
/// message, so a hostile header cannot blow up the 401 body or the logs.
const MAX_ECHOED_CHARS: usize = 32;

/// The claim checks every token goes through, whatever key signed it.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The HS256 shared secret (`WS_AUTH_SECRET` or the file it names);
    /// empty when the server takes only asymmetric tokens.
    pub secret: Vec<u8>,
    /// When set, the token's `aud` (a string, or an array containing it)
    /// must name it (`WS_AUTH_AUDIENCE`).
    pub audience: Option<String>,
    /// When set, the token's `iss` must equal it (`WS_AUTH_ISSUER`).
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

/// Verifies tokens against the configured secrets and public keys. Shared by
/// every connection (behind an `Arc`): verifying needs no mutable state, and
/// a JWKS refresh swaps the key set underneath without stopping anyone.
pub struct Verifier {
    /// HS256 keys: the current secret first, then the previous ones
    /// (verify-only, so a secret can be rotated without cutting anyone off).
    secrets: Vec<DecodingKey>,
    /// The `WS_AUTH_PUBLIC_KEY_FILE` key, if any.
    public_key: Option<PublicKey>,
    /// The JWKS (URL or file), if any: its current key set and its refresher.
    jwks: Option<Arc<JwksHandle>>,
    /// The configured `aud`, `iss` and leeway.
    cfg: AuthConfig,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("Verifier")
            .field("secrets", &self.secrets.len())
            .field("public_key", &self.public_key.is_some())
            .field("jwks", &self.jwks.is_some())
            .field("audience", &self.cfg.audience)
            .field("issuer", &self.cfg.issuer)
            .field("leeway_secs", &self.cfg.leeway_secs)
            .finish_non_exhaustive()
    }
}

/// The header fields key selection reads.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    kid: Option<Value>,
}

impl Verifier {
    /// A verifier of HS256 tokens signed with `cfg.secret`.
    pub fn new(cfg: AuthConfig) -> Verifier {
        Verifier::with_keys(cfg, AuthKeys::default())
    }

    /// A verifier of HS256 tokens (`cfg.secret`, then `keys.previous_secrets`)
    /// and of asymmetric tokens signed by `keys.public_key` or the JWKS.
    pub fn with_keys(cfg: AuthConfig, keys: AuthKeys) -> Verifier {
        let secrets = std::iter::once(&cfg.secret)
            .chain(keys.previous_secrets.iter())
            .filter(|secret| !secret.is_empty())
            .map(|secret| DecodingKey::from_secret(secret))
            .collect();
        Verifier {
            secrets,
            public_key: keys.public_key,
            jwks: keys.jwks,
            cfg,
        }
    }

    /// Checks `token` (without any `Bearer ` prefix) at `now_unix_secs` with
    /// the keys loaded now, and returns who it names.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::TokenMissing);
        }
        let (alg, kid) = read_header(token)?;
        let claims = self.check_signature(token, alg, kid.as_deref())?;
        identity_from(&self.cfg, claims, now_unix_secs)
    }

    /// [`Verifier::verify`], but a `kid` the JWKS does not hold first makes
    /// it fetch the JWKS again (at most once per its minimum interval, so a
    /// flood of bogus ids cannot hammer the issuer) and retries once.
    pub async fn verify_fresh(
        &self,
        token: &str,
        now_unix_secs: u64,
    ) -> Result<Identity, AuthError> {
        match self.verify(token, now_unix_secs) {
            Err(AuthError::UnknownKey { .. }) if self.jwks.is_some() => {
                let jwks = self.jwks.as_ref().expect("checked just above");
                // Another caller may have fetched meanwhile: retry either way.
                jwks.refetch_for_unknown_kid().await;
                self.verify(token, now_unix_secs)
            }
            verified => verified,
        }
    }

    /// Fetches the JWKS again because a token named an unknown `kid`, unless
    /// that happened less than its minimum interval ago. True if a usable
    /// key set was fetched (then verifying again may succeed).
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        match &self.jwks {
            Some(jwks) => jwks.refetch_for_unknown_kid().await,
            None => false,
        }
    }

    /// The algorithms some configured key verifies, for messages.
    fn accepted(&self) -> String {
        let mut algorithms = Vec::new();
        if !self.secrets.is_empty() {
            algorithms.push(Algorithm::HS256);
        }
        let jwks = self.jwks.as_ref().map(|jwks| jwks.keys());
        let keys = self
            .public_key
            .iter()
            .chain(jwks.iter().flat_map(|set| set.iter()));
        for key in keys {
            for alg in &key.algorithms {
                if !algorithms.contains(alg) {
                    algorithms.push(*alg);
                }
            }
        }
        if algorithms.is_empty() {
            "tokens signed by keys it has not loaded yet".to_owned()
        } else {
            names(&algorithms)
        }
    }

    /// Verifies the signature with the key the header may use, and decodes
    /// the claims.
    fn check_signature(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<RawClaims, AuthError> {
        let not_allowed = || AuthError::AlgorithmNotAllowed {
            alg: format!("{alg:?}"),
            accepted: self.accepted(),
        };
        if alg == Algorithm::HS256 {
            // Only the configured secrets: never a public key's bytes.
            if self.secrets.is_empty() {
                return Err(not_allowed());
            }
            return first_verified(token, alg, self.secrets.iter());
        }
        if matches!(alg, Algorithm::HS384 | Algorithm::HS512) {
            return Err(not_allowed());
        }
        let jwks = self.jwks.as_ref().map(|jwks| jwks.keys());
        if let (Some(kid), Some(set)) = (kid, jwks.as_ref()) {
            let Some(key) = set.get(kid) else {
                return Err(AuthError::UnknownKey {
                    kid: kid.chars().take(MAX_KID_CHARS).collect(),
                });
            };
            if !key.allows(alg) {
                return Err(AuthError::AlgorithmMismatch {
                    alg: format!("{alg:?}"),
                    kid: kid.to_owned(),
                    accepted: key.algorithm_names(),
                });
            }
            return first_verified(token, alg, std::iter::once(&key.key));
        }
        // No `kid` (or no JWKS to look it up in): every key of that algorithm.
        let candidates: Vec<&DecodingKey> = self
            .public_key
            .iter()
            .chain(jwks.iter().flat_map(|set| set.iter()))
            .filter(|key| key.allows(alg))
            .map(|key| &key.key)
            .collect();
        if candidates.is_empty() {
            return Err(not_allowed());
        }
        first_verified(token, alg, candidates.into_iter())
    }
}

/// The claims of `token` if one of `keys` verifies its signature under
/// `alg`; the first error that is not a signature mismatch otherwise.
fn first_verified<'a>(
    token: &str,
    alg: Algorithm,
    keys: impl Iterator<Item = &'a DecodingKey>,
) -> Result<RawClaims, AuthError> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    for key in keys {
        match jsonwebtoken::decode::<RawClaims>(token, key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(err) => match from_jsonwebtoken(err) {
                AuthError::BadSignature => {}
                other => return Err(other),
            },
        }
    }
    Err(AuthError::BadSignature)
}

/// The header's algorithm and key id. `none`, a missing `alg` and names
/// jsonwebtoken does not implement are refused here, before any signature
/// work: its `Algorithm` type cannot even represent `none`, which would
/// otherwise surface as a vague JSON error instead of a clear refusal.
fn read_header(token: &str) -> Result<(Algorithm, Option<String>), AuthError> {
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
    let refused = |alg: String| AuthError::AlgorithmNotAllowed {
        alg: alg.chars().take(MAX_ECHOED_CHARS).collect(),
        accepted: "HS256, RS/PS256/384/512, ES256/384 or EdDSA".to_owned(),
    };
    let alg = match header.alg {
        Some(Value::String(alg)) => match alg.parse::<Algorithm>() {
            Ok(parsed) if format!("{parsed:?}") == alg => parsed,
            _ => return Err(refused(alg)),
        },
        Some(other) => return Err(refused(other.to_string())),
        None => {
            return Err(AuthError::Malformed {
                detail: "its header has no `alg`",
            });
        }
    };
    let kid = match header.kid {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid),
        Some(_) => {
            return Err(AuthError::Malformed {
                detail: "its header's `kid` is not a string",
            });
        }
    };
    Ok((alg, kid))
}

/// Maps what can still go wrong after key selection: shape, signature,
/// payload encoding.
fn from_jsonwebtoken(err: jsonwebtoken::errors::Error) -> AuthError {
    match err.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAllowed {
                alg: "unknown".to_owned(),
                accepted: "the algorithms of its keys".to_owned(),
            }
        }
        ErrorKind::Base64(_) => AuthError::Malformed {
            detail: "a segment is not base64url",
        },
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::Malformed {
            detail: "its header or payload is not the expected JSON object",
        },
        // A key that cannot verify (a malformed JWK modulus, a PEM point off
        // the curve) proves nothing about the token: its signature does not
        // verify with this server's keys.
        ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => AuthError::BadSignature,
        _ => AuthError::Malformed {
            detail: "it must be three base64url segments separated by dots",
        },
    }
}
