//! Fuzz target 3: the upgrade decision. Arbitrary tokens (raw strings,
//! hand-assembled headers and payloads, and validly minted tokens with bytes
//! flipped) go through authentication: nothing may panic, every refusal is a
//! documented code with a bounded message, and an untouched minted token
//! always comes back as exactly the identity it was minted for.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::{AuthConfig, TokenSpec, Verifier, mint};
use crate::core::Identity;

/// The shared secret of every fuzzed verifier.
const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-sec";

/// The fuzzed clock's origin (2026-01-01T00:00:00Z).
const NOW: u64 = 1_767_225_600;

/// Every `error` a 401 body may carry.
const AUTH_CODES: &[&str] = &[
    "token_missing",
    "invalid_token",
    "token_expired",
    "token_not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "missing_sub",
    "algorithm_not_allowed",
];

/// Longest acceptable 401 message: it is sent to the client and logged.
const MAX_MESSAGE_BYTES: usize = 300;

#[derive(Debug, Arbitrary)]
struct UpgradeInput {
    require_audience: bool,
    require_issuer: bool,
    leeway_secs: u8,
    /// Seconds from minting to verifying; may be negative (clock skew).
    verify_at: i16,
    token: TokenChoice,
}

/// What the verifier was configured to demand.
struct Window {
    leeway_secs: u64,
    require_audience: bool,
    require_issuer: bool,
}

#[derive(Debug, Arbitrary)]
enum TokenChoice {
    /// Anything a client might paste.
    Raw(String),
    /// `base64url(header).base64url(payload).signature`, signed or not.
    Assembled {
        header: String,
        payload: String,
        signature: String,
    },
    /// A real token, maybe with some bytes changed.
    Minted {
        sub: String,
        ttl_secs: u16,
        roles: Vec<String>,
        channels: Option<Vec<String>>,
        with_audience: bool,
        with_issuer: bool,
        flips: Vec<(u16, u8)>,
    },
}

/// Fuzz target body. Input starting with `T` is a literal token verified at
/// [`NOW`] by a verifier that requires audience `ws-realtime` and issuer
/// `auth.fuzz` (how the hand-written seeds are kept); anything else is
/// decoded with `arbitrary`.
pub fn upgrade(data: &[u8]) {
    if let Some(token) = data.strip_prefix(b"T") {
        let verifier = Verifier::new(AuthConfig {
            secret: SECRET.to_vec(),
            audience: Some("ws-realtime".to_owned()),
            issuer: Some("auth.fuzz".to_owned()),
            leeway_secs: 30,
        });
        check(&verifier, &String::from_utf8_lossy(token), NOW);
        return;
    }
    let mut input = Unstructured::new(data);
    let Ok(input) = UpgradeInput::arbitrary(&mut input) else {
        return;
    };
    let verifier = Verifier::new(AuthConfig {
        secret: SECRET.to_vec(),
        audience: input.require_audience.then(|| "ws-realtime".to_owned()),
        issuer: input.require_issuer.then(|| "auth.fuzz".to_owned()),
        leeway_secs: u64::from(input.leeway_secs),
    });
    let now = NOW.saturating_add_signed(i64::from(input.verify_at));
    let window = Window {
        leeway_secs: u64::from(input.leeway_secs),
        require_audience: input.require_audience,
        require_issuer: input.require_issuer,
    };
    match input.token {
        TokenChoice::Raw(token) => {
            check(&verifier, &token, now);
        }
        TokenChoice::Assembled {
            header,
            payload,
            signature,
        } => {
            let token = format!(
                "{}.{}.{signature}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload)
            );
            check(&verifier, &token, now);
        }
        TokenChoice::Minted {
            sub,
            ttl_secs,
            roles,
            channels,
            with_audience,
            with_issuer,
            flips,
        } => {
            let spec = TokenSpec {
                sub,
                ttl: Duration::from_secs(u64::from(ttl_secs)),
                roles,
                channels,
                audience: with_audience.then(|| "ws-realtime".to_owned()),
                issuer: with_issuer.then(|| "auth.fuzz".to_owned()),
            };
            let token = mint(SECRET, &spec, NOW);
            let mut mutated = token.clone().into_bytes();
            for (at, byte) in &flips {
                if !mutated.is_empty() {
                    let at = usize::from(*at) % mutated.len();
                    mutated[at] = *byte;
                }
            }
            match String::from_utf8(mutated) {
                Ok(mutated) if mutated != token => {
                    check(&verifier, &mutated, now);
                }
                Ok(_) => check_round_trip(&verifier, &token, &spec, &window, now),
                Err(_) => {}
            }
        }
    }
}

/// Refusals are documented and bounded; acceptances name a user.
fn check(verifier: &Verifier, token: &str, now: u64) -> Option<Identity> {
    match verifier.verify(token, now) {
        Ok(identity) => {
            assert!(!identity.user_id.is_empty(), "accepted a token without sub");
            Some(identity)
        }
        Err(err) => {
            assert!(
                AUTH_CODES.contains(&err.code()),
                "undocumented {}",
                err.code()
            );
            let message = err.to_string();
            assert!(!message.is_empty(), "empty message for {}", err.code());
            assert!(
                message.len() <= MAX_MESSAGE_BYTES,
                "{}-byte message: {message}",
                message.len()
            );
            None
        }
    }
}

/// An untouched minted token is accepted exactly when its time window and
/// the configured audience and issuer allow it, with the identity minted.
fn check_round_trip(verifier: &Verifier, token: &str, spec: &TokenSpec, input: &Window, now: u64) {
    let leeway = input.leeway_secs;
    let exp = NOW + spec.ttl.as_secs();
    let should_accept = !spec.sub.is_empty()
        && now < exp + leeway
        && NOW <= now + leeway
        && (!input.require_audience || spec.audience.is_some())
        && (!input.require_issuer || spec.issuer.is_some());
    let verified = check(verifier, token, now);
    assert_eq!(
        verified.is_some(),
        should_accept,
        "minted token verdict at {now} for {spec:?}"
    );
    if let Some(identity) = verified {
        let mut roles: Vec<String> = Vec::new();
        for role in &spec.roles {
            if !role.is_empty() && !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        let patterns = spec.channels.as_ref().map(|channels| {
            channels
                .iter()
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        });
        assert_eq!(
            identity,
            Identity {
                user_id: spec.sub.clone(),
                roles,
                channel_patterns: patterns,
                expires_at_unix_ms: Some(exp * 1000),
            }
        );
    }
}
