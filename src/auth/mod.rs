//! JWT authentication: turns the token a client presents at `GET /ws` (or in
//! a `refresh` frame) into the [`Identity`] the core works with, and mints
//! tokens for `ws-realtime token`, `ws-realtime dev` and tests.
//!
//! Keys: the HS256 secret (`WS_AUTH_SECRET`) and previous secrets kept for
//! verification only (`WS_AUTH_SECRET_PREVIOUS`); a single PEM public key
//! (`WS_AUTH_PUBLIC_KEY_FILE`); a JWKS from a URL or a file. A key's type
//! decides which algorithms it verifies, never the token's header alone, so
//! `alg: none` and HS/RS confusion are refused before any signature work.
//! Time claims (`exp`, `nbf`, `iat`) are checked against the `now` the
//! caller passes, never against the system clock, so simulations stay
//! deterministic; jsonwebtoken's own clock-based checks are switched off.
//!
//! Files: [`error`] (why a token is refused), [`keys`] (key material and
//! the algorithms each key allows), [`jwks`] (fetching and refreshing a key
//! set), `verify` (choosing the key and checking the signature), `claims`
//! (claims to identity), `mint` (making tokens).

use std::sync::Arc;

mod claims;
pub mod error;
pub mod jwks;
pub mod keys;
mod mint;
mod verify;

pub use error::AuthError;
pub use jwks::{JwksConfig, JwksHandle, JwksLocation};
pub use keys::{KeyError, KeySet, PublicKey, parse_jwks, parse_public_key_pem};
pub use mint::{TokenSpec, mint, mint_signed};
pub use verify::{AuthConfig, Verifier};

#[allow(unused_imports)]
use crate::core::Identity;

/// The keys a [`Verifier`] holds besides the current HS256 secret.
#[derive(Debug, Default)]
pub struct AuthKeys {
    /// Former HS256 secrets, accepted for verification only.
    pub previous_secrets: Vec<Vec<u8>>,
    /// The single PEM public key, if configured.
    pub public_key: Option<PublicKey>,
    /// The JWKS, if configured (its refresher is the caller's to spawn).
    pub jwks: Option<Arc<JwksHandle>>,
}

#[cfg(test)]
mod tests;
