//! Why a token was refused: one variant per thing a client's developer (or
//! the operator) can act on, each with a stable `error` code for the 401
//! body and the `error` frame that answers a refused `refresh`.

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
    /// The signature does not match any key that may verify it.
    #[error(
        "the token's signature does not match: it was not signed with this server's secret or keys"
    )]
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
    /// `alg:none`, an algorithm the server does not implement, or one no
    /// configured key verifies (HS256 without `WS_AUTH_SECRET`, RS256
    /// without a public key).
    #[error("the token uses algorithm \"{alg}\", but this server accepts only {accepted}")]
    AlgorithmNotAllowed {
        /// The header's `alg`, shortened.
        alg: String,
        /// What the configured keys verify, e.g. `HS256, RS256, ES256`.
        accepted: String,
    },
    /// The header's `alg` is not one the key named by `kid` is for: the
    /// key's type decides, never the header alone.
    #[error(
        "the token's algorithm \"{alg}\" does not match its key \"{kid}\", which verifies only {accepted}"
    )]
    AlgorithmMismatch {
        /// The header's `alg`.
        alg: String,
        /// The key's id.
        kid: String,
        /// What the key verifies.
        accepted: String,
    },
    /// The header's `kid` names no key the server knows, even after
    /// refreshing its key set.
    #[error(
        "the token's key id (`kid`) \"{kid}\" is not in this server's key set; the issuer may have rotated keys the server has not fetched yet, retry shortly"
    )]
    UnknownKey {
        /// The header's `kid`, shortened.
        kid: String,
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
            AuthError::AlgorithmNotAllowed { .. } | AuthError::AlgorithmMismatch { .. } => {
                "algorithm_not_allowed"
            }
            AuthError::UnknownKey { .. } => "unknown_key",
        }
    }
}
