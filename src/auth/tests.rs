//! Unit tests of token verification and minting.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

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
            user_id: "alice".into(),
            roles: ["trader".to_owned()].into(),
            channel_patterns: Some(["lines".to_owned(), "trade:*".to_owned()].into()),
            expires_at_unix_ms: Some((NOW + 3600) * 1000),
            max_rate: None,
            delay: None,
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
    assert!(
        matches!(&err, AuthError::AlgorithmNotAllowed { alg, .. } if alg == "none"),
        "{err:?}"
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
    assert_eq!(&*identity.roles, ["admin".to_owned(), "trader".to_owned()]);
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
    let expected: Option<Box<[String]>> = Some(["lines".to_owned(), "trade:*".to_owned()].into());
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
        Some(Box::default())
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
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
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

#[test]
fn delay_claim_takes_seconds_or_a_unit_and_refuses_anything_else() {
    let verifier = Verifier::new(config());
    let delay_of = |claim: &str| {
        verifier
            .verify(
                &payload(&format!(r#"{{"sub":"alice","delay":{claim}}}"#)),
                NOW,
            )
            .map(|identity| identity.delay)
    };
    assert_eq!(delay_of(r#""15m""#), Ok(Some(Duration::from_secs(900))));
    assert_eq!(delay_of("900"), Ok(Some(Duration::from_secs(900))));
    assert_eq!(delay_of(r#""90s""#), Ok(Some(Duration::from_secs(90))));
    assert_eq!(delay_of(r#""1h""#), Ok(Some(Duration::from_secs(3600))));
    assert_eq!(delay_of(r#""120""#), Ok(Some(Duration::from_secs(120))));
    assert_eq!(delay_of("0"), Ok(None), "zero is live");
    assert_eq!(delay_of("null"), Ok(None));
    for bad in [
        r#""soon""#,
        "-5",
        "1.5",
        r#""15 minutes""#,
        r#""2d""#,
        "86401",
        r#""25h""#,
        "true",
    ] {
        let err = delay_of(bad).expect_err(bad);
        assert!(
            matches!(err, AuthError::MalformedClaim { claim: "delay", .. }),
            "{bad}: {err:?}"
        );
        assert_eq!(err.code(), "invalid_token");
    }
}
