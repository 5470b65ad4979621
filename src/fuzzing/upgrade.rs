//! Fuzz target 3: the upgrade decision. Arbitrary request targets, headers
//! and tokens (raw strings, hand-assembled headers and payloads, validly
//! minted tokens with bytes flipped) go through
//! [`crate::shell::upgrade::decide`] and authentication: nothing may panic,
//! every refusal is a documented status and code with a JSON body and a
//! bounded message, an accepted request names its user and clean channels,
//! and an untouched minted token always comes back as exactly the identity it
//! was minted for, whether sent as a header or in the query.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::{AuthConfig, TokenSpec, Verifier, mint};
use crate::core::Identity;
use crate::shell::upgrade::{UpgradeHeaders, UpgradePolicy, decide};

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
    "ambiguous_credentials",
];

/// Longest acceptable 401 message: it is sent to the client and logged.
const MAX_MESSAGE_BYTES: usize = 300;

/// Longest acceptable refusal message of the whole decision (the 403 quotes
/// the origin, shortened to 200 characters but escaped).
const MAX_REFUSAL_MESSAGE_BYTES: usize = 4096;

#[derive(Debug, Arbitrary)]
struct UpgradeInput {
    require_audience: bool,
    require_issuer: bool,
    leeway_secs: u8,
    /// Seconds from minting to verifying; may be negative (clock skew).
    verify_at: i16,
    token: TokenChoice,
    request: RequestChoice,
}

/// How the token and the rest of the request reach `decide`.
#[derive(Debug, Arbitrary)]
enum RequestChoice {
    /// Only the verifier, as before any HTTP is involved.
    TokenOnly,
    /// The token in `Authorization`, or in `?token=`, with connect-time
    /// channels and an origin.
    Shaped {
        in_header: bool,
        scheme: u8,
        channels: Vec<String>,
        assessment_id: Option<String>,
        origin: Option<u8>,
        restrict_origins: bool,
    },
    /// Anything at all as the target and headers (the token unused).
    Raw {
        target: String,
        authorization: Option<Vec<u8>>,
        origin: Option<Vec<u8>>,
        restrict_origins: bool,
    },
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
        let token = String::from_utf8_lossy(token);
        let verified = check(&verifier, &token, NOW);
        let header = format!("Bearer {token}");
        let by_header = UpgradeHeaders {
            authorization: Some(header.as_bytes()),
            ..UpgradeHeaders::default()
        };
        let target = format!("/ws?channels=lines&token={}", percent_encode(&token));
        for (target, headers) in [
            ("/ws", by_header),
            (target.as_str(), UpgradeHeaders::default()),
        ] {
            let decided = check_decision(target, headers, &verifier, &policy(false), NOW);
            // decide trims the header; the query keeps the token as sent.
            if headers.authorization.is_none() || token.trim() == token {
                assert_eq!(decided.map(|(identity, _)| identity), verified, "{target}");
            }
        }
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
    let (token, minted) = match input.token {
        TokenChoice::Raw(token) => (token, None),
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
            (token, None)
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
                Ok(mutated) if mutated != token => (mutated, None),
                Ok(_) => {
                    let expected = expected_identity(&spec, &window, now);
                    (token, Some(expected))
                }
                Err(_) => return,
            }
        }
    };
    match input.request {
        RequestChoice::TokenOnly => {
            let verified = check(&verifier, &token, now);
            if let Some(expected) = minted {
                assert_eq!(verified, expected, "minted token verdict at {now}");
            }
        }
        RequestChoice::Shaped {
            in_header,
            scheme,
            channels,
            assessment_id,
            origin,
            restrict_origins,
        } => {
            let scheme = ["Bearer", "bearer", "BEARER", "Basic"][usize::from(scheme % 4)];
            let mut target = "/ws?".to_owned();
            if !in_header {
                target.push_str(&format!("token={}&", percent_encode(&token)));
            }
            target.push_str(&format!("channels={}", percent_encode(&channels.join(","))));
            if let Some(id) = &assessment_id {
                target.push_str(&format!("&assessmentId={}", percent_encode(id)));
            }
            let authorization = in_header.then(|| format!("{scheme} {token}"));
            let origin =
                origin.map(|o| ["https://app.example", "https://evil.example"][usize::from(o % 2)]);
            let headers = UpgradeHeaders {
                authorization: authorization.as_deref().map(str::as_bytes),
                origin: origin.map(str::as_bytes),
                ..UpgradeHeaders::default()
            };
            let policy = policy(restrict_origins);
            let decision = check_decision(&target, headers, &verifier, &policy, now);
            let origin_refused = restrict_origins && origin == Some("https://evil.example");
            let token_usable = !in_header || scheme != "Basic";
            if let (Some(expected), false, true) = (minted, origin_refused, token_usable) {
                let accepted = decision.as_ref().map(|(identity, _)| identity.clone());
                assert_eq!(accepted, expected, "minted token through decide at {now}");
                if let Some((_, got)) = &decision {
                    let mut wanted: Vec<String> = Vec::new();
                    let assessment = assessment_id
                        .filter(|id| !id.is_empty())
                        .map(|id| format!("assessment:{id}"));
                    let listed = channels.join(",");
                    let listed = listed.split(',').map(|c| c.trim().to_owned());
                    for channel in listed.chain(assessment) {
                        if !channel.is_empty() && !wanted.contains(&channel) {
                            wanted.push(channel);
                        }
                    }
                    assert_eq!(got, &wanted, "connect-time channels of {target}");
                }
            }
            if origin_refused {
                assert!(decision.is_none(), "origin {origin:?} let through");
            }
        }
        RequestChoice::Raw {
            target,
            authorization,
            origin,
            restrict_origins,
        } => {
            let headers = UpgradeHeaders {
                authorization: authorization.as_deref(),
                origin: origin.as_deref(),
                ..UpgradeHeaders::default()
            };
            check_decision(&target, headers, &verifier, &policy(restrict_origins), now);
        }
    }
}

/// The policy of a fuzzed server: every origin, or only one.
fn policy(restrict_origins: bool) -> UpgradePolicy {
    UpgradePolicy {
        allowed_origins: restrict_origins.then(|| vec!["https://app.example".to_owned()]),
        assessment_channel: "assessment:{assessmentId}".to_owned(),
    }
}

/// Runs `decide`: a refusal has a documented status, a code, a JSON body
/// and a bounded message; an acceptance has clean, distinct channels.
fn check_decision(
    target: &str,
    headers: UpgradeHeaders<'_>,
    verifier: &Verifier,
    policy: &UpgradePolicy,
    now: u64,
) -> Option<(Identity, Vec<String>)> {
    match decide(target, headers, verifier, policy, now) {
        Ok(request) => {
            assert!(!request.identity.user_id.is_empty(), "accepted without sub");
            for (i, channel) in request.channels.iter().enumerate() {
                assert!(!channel.is_empty(), "empty connect-time channel");
                assert!(
                    !request.channels[..i].contains(channel),
                    "duplicate connect-time channel {channel:?}"
                );
            }
            Some((request.identity, request.channels))
        }
        Err(refusal) => {
            assert!(
                matches!(refusal.status, 401 | 403),
                "status {} before any core check",
                refusal.status
            );
            if refusal.status == 401 {
                assert!(
                    AUTH_CODES.contains(&refusal.error.as_ref()),
                    "{}",
                    refusal.error
                );
            }
            assert!(!refusal.message.is_empty(), "refusal without a message");
            assert!(
                refusal.message.len() <= MAX_REFUSAL_MESSAGE_BYTES,
                "{}-byte refusal message",
                refusal.message.len()
            );
            let body: serde_json::Value =
                serde_json::from_str(&refusal.body()).expect("refusal body is JSON");
            assert_eq!(body["error"], refusal.error.as_ref());
            assert_eq!(body["message"], refusal.message.as_str());
            None
        }
    }
}

/// `%XX` for everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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

/// What verifying an untouched minted token must give: the minted identity
/// exactly when its time window and the configured audience and issuer
/// allow it, nothing otherwise.
fn expected_identity(spec: &TokenSpec, window: &Window, now: u64) -> Option<Identity> {
    let leeway = window.leeway_secs;
    let exp = NOW + spec.ttl.as_secs();
    let accepted = !spec.sub.is_empty()
        && now < exp + leeway
        && NOW <= now + leeway
        && (!window.require_audience || spec.audience.is_some())
        && (!window.require_issuer || spec.issuer.is_some());
    if !accepted {
        return None;
    }
    let mut roles: Vec<String> = Vec::new();
    for role in &spec.roles {
        if !role.is_empty() && !roles.contains(role) {
            roles.push(role.clone());
        }
    }
    let channel_patterns = spec.channels.as_ref().map(|channels| {
        channels
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    });
    Some(Identity {
        user_id: spec.sub.as_str().into(),
        roles: roles.into(),
        channel_patterns: channel_patterns.map(Vec::into_boxed_slice),
        expires_at_unix_ms: Some(exp * 1000),
        max_rate: None,
        delay: None,
    })
}
