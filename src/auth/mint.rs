//! Minting tokens: for `ws-realtime token`, `ws-realtime dev`, the load
//! tool and tests. HS256 with the server's secret, or any algorithm with a
//! caller's key (tests sign as an identity provider would).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

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
    mint_signed(
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
        None,
        spec,
        now_unix_secs,
    )
    .expect("HMAC signs with a key of any length and these claims always serialize")
}

/// A token for `spec` signed with `key` under `alg`, its header naming
/// `kid` when given: what an identity provider issues (tests, benches).
pub fn mint_signed(
    key: &EncodingKey,
    alg: Algorithm,
    kid: Option<&str>,
    spec: &TokenSpec,
    now_unix_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = MintedClaims {
        sub: &spec.sub,
        iat: now_unix_secs,
        exp: now_unix_secs.saturating_add(spec.ttl.as_secs()),
        roles: &spec.roles,
        channels: spec.channels.as_deref(),
        aud: spec.audience.as_deref(),
        iss: spec.issuer.as_deref(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key)
}
