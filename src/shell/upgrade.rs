//! The upgrade decision: from a `GET /ws` request's path, query and headers to
//! either the connection to open (identity + connect-time channels) or an HTTP
//! refusal with a JSON body. A pure function, so the fuzz targets can drive it
//! with arbitrary input; it never panics.

use std::borrow::Cow;

use crate::auth::Verifier;
use crate::core::{Identity, Refusal};

/// What the upgrade decision needs besides the request.
#[derive(Debug, Clone)]
pub struct UpgradePolicy {
    /// Allowed `Origin` values; `None` allows every origin. Requests without
    /// an `Origin` (non-browser clients) are always allowed: the check exists
    /// to stop other web pages, which cannot omit it.
    pub allowed_origins: Option<Vec<String>>,
    /// Template for `?assessmentId=X`, containing `{assessmentId}`.
    pub assessment_channel: String,
}

/// The headers the decision reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpgradeHeaders<'a> {
    /// `Authorization`, if present (the first, when repeated).
    pub authorization: Option<&'a [u8]>,
    /// `Origin`, if present (the first, when repeated).
    pub origin: Option<&'a [u8]>,
    /// `Authorization` came more than once: which one counts is ambiguous,
    /// so the request is refused rather than one picked.
    pub repeated_authorization: bool,
    /// `Origin` came more than once (no browser does that): refused.
    pub repeated_origin: bool,
}

impl<'a> UpgradeHeaders<'a> {
    /// Picks the relevant headers from an HTTP header map.
    pub fn from_map(headers: &'a hyper::HeaderMap) -> UpgradeHeaders<'a> {
        let mut authorization = headers.get_all(hyper::header::AUTHORIZATION).iter();
        let mut origin = headers.get_all(hyper::header::ORIGIN).iter();
        UpgradeHeaders {
            authorization: authorization.next().map(|v| v.as_bytes()),
            origin: origin.next().map(|v| v.as_bytes()),
            repeated_authorization: authorization.next().is_some(),
            repeated_origin: origin.next().is_some(),
        }
    }
}

/// The 401 for a request carrying more than one credential.
fn ambiguous_credentials(what: &str) -> UpgradeRefusal {
    UpgradeRefusal {
        status: 401,
        error: Cow::Borrowed("ambiguous_credentials"),
        message: format!("{what}: send exactly one token, in Authorization: Bearer or in ?token="),
    }
}

/// An accepted upgrade: who connects and what they asked for at connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The verified identity.
    pub identity: Identity,
    /// Channels from `?channels=` and `?assessmentId=`, in order, without
    /// duplicates; the core checks them like a `subscribe`.
    pub channels: Vec<String>,
}

/// A refused upgrade, answered as HTTP with `{"error":…,"message":…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRefusal {
    /// The HTTP status: 401, 403, 429 or 503.
    pub status: u16,
    /// Stable machine-readable code, e.g. `missing_token`.
    pub error: Cow<'static, str>,
    /// A sentence for humans.
    pub message: String,
}

impl UpgradeRefusal {
    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.error, "message": self.message }).to_string()
    }

    /// The refusal for a connection the core would not admit.
    pub fn from_core(refusal: Refusal) -> UpgradeRefusal {
        let (status, error) = match refusal {
            Refusal::ShuttingDown => (503, "shutting_down"),
            Refusal::TooManyConnections => (429, "too_many_connections"),
            Refusal::TooManyFromAddress => (429, "too_many_connections_from_address"),
        };
        UpgradeRefusal {
            status,
            error: Cow::Borrowed(error),
            message: refusal.to_string(),
        }
    }
}

/// The WebSocket version this server speaks (RFC 6455 §4.4).
pub const WEBSOCKET_VERSION: &str = "13";

/// Why a request that asks for an upgrade is not a valid RFC 6455 opening
/// handshake; answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not HTTP/1.1 or later (§4.1: "The method of the request MUST be GET,
    /// and the HTTP version MUST be at least 1.1").
    OldHttp,
    /// `Sec-WebSocket-Key` missing or not 16 bytes of base64 (§4.1, §4.2.1).
    BadKey,
    /// `Sec-WebSocket-Version` is not 13; the answer carries
    /// `Sec-WebSocket-Version: 13` (§4.4).
    UnsupportedVersion,
}

impl HandshakeError {
    /// The refusal: 400 with a stable code.
    pub fn refusal(self) -> UpgradeRefusal {
        let (error, message) = match self {
            HandshakeError::OldHttp => (
                "bad_upgrade",
                "a WebSocket upgrade needs HTTP/1.1 (RFC 6455 §4.1)",
            ),
            HandshakeError::BadKey => (
                "bad_upgrade",
                "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 §4.1)",
            ),
            HandshakeError::UnsupportedVersion => (
                "unsupported_websocket_version",
                "this server speaks Sec-WebSocket-Version 13 only",
            ),
        };
        UpgradeRefusal {
            status: 400,
            error: Cow::Borrowed(error),
            message: message.to_owned(),
        }
    }
}

/// Checks the parts of an opening handshake the upgrade library does not:
/// the HTTP version, the key's form, and the version (whose refusal must
/// name the supported one). `http_1_1` is whether the request is HTTP/1.1
/// or later.
pub fn check_handshake(
    http_1_1: bool,
    key: Option<&[u8]>,
    version: Option<&[u8]>,
) -> Result<(), HandshakeError> {
    use base64::Engine as _;
    if !http_1_1 {
        return Err(HandshakeError::OldHttp);
    }
    let decoded = key.and_then(|key| {
        base64::engine::general_purpose::STANDARD
            .decode(key.trim_ascii())
            .ok()
    });
    if decoded.is_none_or(|nonce| nonce.len() != 16) {
        return Err(HandshakeError::BadKey);
    }
    if version.map(<[u8]>::trim_ascii) != Some(WEBSOCKET_VERSION.as_bytes()) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    Ok(())
}

/// Decides a `GET /ws` request. `path_and_query` is the request target
/// (`/ws?token=…&channels=a,b`).
pub fn decide(
    path_and_query: &str,
    headers: UpgradeHeaders<'_>,
    verifier: &Verifier,
    policy: &UpgradePolicy,
    now_unix_secs: u64,
) -> Result<UpgradeRequest, UpgradeRefusal> {
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    if headers.repeated_origin {
        return Err(UpgradeRefusal {
            status: 403,
            error: Cow::Borrowed("ambiguous_origin"),
            message: "more than one Origin header".to_owned(),
        });
    }
    if let (Some(allowed), Some(origin)) = (&policy.allowed_origins, headers.origin) {
        let origin = String::from_utf8_lossy(origin);
        if !allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(origin.trim()))
        {
            return Err(UpgradeRefusal {
                status: 403,
                error: Cow::Borrowed("origin_not_allowed"),
                message: format!("origin {:?} is not allowed", truncate(&origin, 200)),
            });
        }
    }

    let mut token_from_query = None;
    let mut query_tokens = 0usize;
    let mut channels: Vec<String> = Vec::new();
    let add_channel = |channel: String, channels: &mut Vec<String>| {
        if !channel.is_empty() && !channels.contains(&channel) {
            channels.push(channel);
        }
    };
    for (key, value) in query_pairs(query) {
        match key.as_ref() {
            "token" => {
                query_tokens += 1;
                token_from_query = Some(value.into_owned());
            }
            "channels" => {
                for channel in value.split(',') {
                    add_channel(channel.trim().to_owned(), &mut channels);
                }
            }
            "assessmentId" if !value.is_empty() => {
                add_channel(
                    policy.assessment_channel.replace("{assessmentId}", &value),
                    &mut channels,
                );
            }
            _ => {}
        }
    }

    // Fail closed: a forged token next to a valid one must not connect as
    // either. Only a Bearer header is a credential here; a Basic header
    // (a site behind HTTP authentication) is not ours to read.
    if headers.repeated_authorization {
        return Err(ambiguous_credentials("more than one Authorization header"));
    }
    let header_token = headers.authorization.and_then(bearer_token);
    if query_tokens > 1 {
        return Err(ambiguous_credentials("more than one token parameter"));
    }
    if header_token.is_some() && query_tokens > 0 {
        return Err(ambiguous_credentials(
            "a token in both the Authorization header and the query",
        ));
    }
    let token = match header_token {
        Some(token) => token.to_owned(),
        None => token_from_query.filter(|t| !t.is_empty()).ok_or_else(|| {
            let missing = crate::auth::AuthError::TokenMissing;
            UpgradeRefusal {
                status: 401,
                error: Cow::Borrowed(missing.code()),
                message: missing.to_string(),
            }
        })?,
    };
    let identity = verifier
        .verify(&token, now_unix_secs)
        .map_err(|e| UpgradeRefusal {
            status: 401,
            error: Cow::Borrowed(e.code()),
            message: e.to_string(),
        })?;
    Ok(UpgradeRequest { identity, channels })
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_token(header: &[u8]) -> Option<&str> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `application/x-www-form-urlencoded` pairs of a query string.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key), percent_decode(value))
    })
}

/// Decodes `%XX` and `+`; invalid escapes stay as they are and invalid UTF-8
/// is replaced, so any input decodes to something.
fn percent_decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['%', '+']) {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

fn truncate(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthConfig, TokenSpec, mint};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn verifier() -> Verifier {
        Verifier::new(AuthConfig {
            secret: SECRET.to_vec(),
            audience: None,
            issuer: None,
            leeway_secs: 5,
        })
    }

    fn policy(origins: Option<&[&str]>) -> UpgradePolicy {
        UpgradePolicy {
            allowed_origins: origins.map(|o| o.iter().map(|s| s.to_string()).collect()),
            assessment_channel: "assessment:{assessmentId}".to_owned(),
        }
    }

    fn token(ttl_secs: u64) -> String {
        let spec = TokenSpec {
            sub: "alice".into(),
            ttl: std::time::Duration::from_secs(ttl_secs),
            roles: vec!["trader".into()],
            channels: None,
            audience: None,
            issuer: None,
        };
        mint(SECRET, &spec, NOW)
    }

    #[test]
    fn token_from_the_query_and_channels_and_assessment_are_read() {
        let path = format!(
            "/ws?token={}&channels=lines,%20order_book,lines&assessmentId=a%2F1",
            token(60)
        );
        let request = decide(
            &path,
            UpgradeHeaders::default(),
            &verifier(),
            &policy(None),
            NOW,
        )
        .unwrap();
        assert_eq!(&*request.identity.user_id, "alice");
        assert_eq!(
            request.channels,
            vec!["lines", "order_book", "assessment:a/1"]
        );
    }

    #[test]
    fn a_bearer_header_is_read() {
        let header = format!("Bearer {}", token(60));
        let headers = UpgradeHeaders {
            authorization: Some(header.as_bytes()),
            ..UpgradeHeaders::default()
        };
        let request = decide("/ws", headers, &verifier(), &policy(None), NOW).unwrap();
        assert_eq!(&*request.identity.user_id, "alice");
    }

    #[test]
    fn a_header_token_next_to_a_query_token_is_refused_as_ambiguous() {
        let header = format!("Bearer {}", token(60));
        let headers = UpgradeHeaders {
            authorization: Some(header.as_bytes()),
            ..UpgradeHeaders::default()
        };
        for target in [
            "/ws?token=forged".to_owned(),
            format!("/ws?token={}", token(60)),
        ] {
            let refused = decide(&target, headers, &verifier(), &policy(None), NOW).unwrap_err();
            assert_eq!(
                (refused.status, refused.error.as_ref()),
                (401, "ambiguous_credentials")
            );
        }
    }

    #[test]
    fn two_query_tokens_or_two_authorization_headers_are_ambiguous() {
        let valid = token(60);
        for target in [
            format!("/ws?token=forged&token={valid}"),
            format!("/ws?token={valid}&token={valid}"),
        ] {
            let refused = decide(
                &target,
                UpgradeHeaders::default(),
                &verifier(),
                &policy(None),
                NOW,
            )
            .unwrap_err();
            assert_eq!(refused.error, "ambiguous_credentials", "{target}");
        }
        let header = format!("Bearer {valid}");
        let headers = UpgradeHeaders {
            authorization: Some(header.as_bytes()),
            repeated_authorization: true,
            ..UpgradeHeaders::default()
        };
        let refused = decide("/ws", headers, &verifier(), &policy(None), NOW).unwrap_err();
        assert_eq!(
            (refused.status, refused.error.as_ref()),
            (401, "ambiguous_credentials")
        );
    }

    #[test]
    fn a_basic_header_does_not_count_as_a_second_credential() {
        let headers = UpgradeHeaders {
            authorization: Some(b"Basic dXNlcjpwYXNz"),
            ..UpgradeHeaders::default()
        };
        let target = format!("/ws?token={}", token(60));
        assert!(decide(&target, headers, &verifier(), &policy(None), NOW).is_ok());
    }

    #[test]
    fn two_origin_headers_are_403_even_when_the_first_is_allowed() {
        let path = format!("/ws?token={}", token(60));
        let headers = UpgradeHeaders {
            origin: Some(b"https://app.example"),
            repeated_origin: true,
            ..UpgradeHeaders::default()
        };
        for origins in [Some(&["https://app.example"][..]), None] {
            let refused = decide(&path, headers, &verifier(), &policy(origins), NOW).unwrap_err();
            assert_eq!(
                (refused.status, refused.error.as_ref()),
                (403, "ambiguous_origin")
            );
        }
    }

    #[test]
    fn missing_invalid_and_expired_tokens_are_401() {
        let v = verifier();
        let p = policy(None);
        let missing = decide("/ws", UpgradeHeaders::default(), &v, &p, NOW).unwrap_err();
        assert_eq!(
            (missing.status, missing.error.as_ref()),
            (401, "token_missing")
        );
        let invalid = decide("/ws?token=abc", UpgradeHeaders::default(), &v, &p, NOW).unwrap_err();
        assert_eq!(invalid.status, 401);
        let path = format!("/ws?token={}", token(1));
        let expired = decide(&path, UpgradeHeaders::default(), &v, &p, NOW + 3600).unwrap_err();
        assert_eq!(
            (expired.status, expired.error.as_ref()),
            (401, "token_expired")
        );
        let body: serde_json::Value = serde_json::from_str(&expired.body()).unwrap();
        assert_eq!(body["error"], "token_expired");
        assert!(body["message"].as_str().unwrap().contains("expired"));
    }

    #[test]
    fn foreign_origins_are_403_and_listed_or_absent_origins_pass() {
        let v = verifier();
        let p = policy(Some(&["https://app.example"]));
        let path = format!("/ws?token={}", token(60));
        let foreign = UpgradeHeaders {
            origin: Some(b"https://evil.example"),
            ..UpgradeHeaders::default()
        };
        assert_eq!(decide(&path, foreign, &v, &p, NOW).unwrap_err().status, 403);
        let listed = UpgradeHeaders {
            origin: Some(b"https://app.example"),
            ..UpgradeHeaders::default()
        };
        assert!(decide(&path, listed, &v, &p, NOW).is_ok());
        assert!(decide(&path, UpgradeHeaders::default(), &v, &p, NOW).is_ok());
    }

    #[test]
    fn opening_handshakes_are_checked_against_rfc_6455() {
        let key = Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]);
        let v13 = Some(&b"13"[..]);
        assert_eq!(check_handshake(true, key, v13), Ok(()));
        assert_eq!(
            check_handshake(false, key, v13),
            Err(HandshakeError::OldHttp)
        );
        for bad in [
            &b"not base64!"[..],
            b"c2hvcnQ=",
            b"",
            b"dGhlIHNhbXBsZSBub25jZQ==AA==",
        ] {
            assert_eq!(
                check_handshake(true, Some(bad), v13),
                Err(HandshakeError::BadKey)
            );
        }
        assert_eq!(
            check_handshake(true, None, v13),
            Err(HandshakeError::BadKey)
        );
        for version in [Some(&b"8"[..]), Some(b"14"), None] {
            assert_eq!(
                check_handshake(true, key, version),
                Err(HandshakeError::UnsupportedVersion)
            );
        }
    }

    #[test]
    fn core_refusals_map_to_429_and_503() {
        assert_eq!(UpgradeRefusal::from_core(Refusal::ShuttingDown).status, 503);
        assert_eq!(
            UpgradeRefusal::from_core(Refusal::TooManyConnections).status,
            429
        );
        assert_eq!(
            UpgradeRefusal::from_core(Refusal::TooManyFromAddress).status,
            429
        );
    }

    #[test]
    fn arbitrary_queries_decode_without_panicking() {
        for query in [
            "%",
            "%%",
            "%e2%82",
            "a=%zz&&=&token",
            "channels=%ff%fe,,",
            "+&+=+",
        ] {
            let _ = query_pairs(query).count();
            let _ = decide(
                &format!("/ws?{query}"),
                UpgradeHeaders::default(),
                &verifier(),
                &policy(None),
                NOW,
            );
        }
        let pairs: Vec<_> = query_pairs("a=b%20c+d&e").collect();
        assert_eq!(pairs[0].0, "a");
        assert_eq!(pairs[0].1, "b c d");
        assert_eq!(pairs[1].0, "e");
    }
}
