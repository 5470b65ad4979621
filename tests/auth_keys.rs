//! Asymmetric verification through the public API: RS256, ES256 and EdDSA
//! keys from a JWKS or a PEM file, the key's type deciding the algorithm,
//! and previous HS256 secrets kept for verification only.

mod auth_support;

use std::sync::Arc;
use std::time::Duration;

use auth_support::{ed25519_key, jwks, p256_key, rsa_key, spec};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ws_realtime::auth::{
    AuthConfig, AuthError, AuthKeys, JwksConfig, JwksHandle, JwksLocation, Verifier, mint,
    parse_jwks, parse_public_key_pem,
};

const NOW: u64 = 1_767_225_600;
const SECRET: &[u8] = b"current-secret-0123456789abcdef0123";

fn config(secret: &[u8]) -> AuthConfig {
    AuthConfig {
        secret: secret.to_vec(),
        audience: None,
        issuer: None,
        leeway_secs: 0,
    }
}

/// A verifier holding `document` as its (already loaded) JWKS, from a file.
async fn with_jwks(secret: &[u8], document: &str) -> (Verifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, document).unwrap();
    let handle = JwksHandle::new(
        JwksConfig {
            location: JwksLocation::File(path),
            refresh_interval: Duration::from_secs(60),
            min_refetch_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
        },
        Box::new(|_| {}),
    );
    handle.refresh().await.expect("the JWKS file loads");
    let keys = AuthKeys {
        jwks: Some(handle),
        ..AuthKeys::default()
    };
    (Verifier::with_keys(config(secret), keys), dir)
}

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_from_a_jwks_verify() {
    let (rsa, ec, ed) = (rsa_key("r1"), p256_key("e1"), ed25519_key("d1"));
    let (verifier, _dir) = with_jwks(b"", &jwks(&[&rsa, &ec, &ed])).await;
    for key in [&rsa, &ec, &ed] {
        let identity = verifier
            .verify(&key.token("alice", NOW), NOW)
            .unwrap_or_else(|e| panic!("{:?} token refused: {e}", key.alg));
        assert_eq!(&*identity.user_id, "alice");
        assert_eq!(identity.expires_at_unix_ms, Some((NOW + 3600) * 1000));
    }
}

#[tokio::test]
async fn an_unknown_kid_is_refused_as_unknown_key() {
    let known = p256_key("known");
    let (verifier, _dir) = with_jwks(b"", &jwks(&[&known])).await;
    let stranger = p256_key("stranger");
    let err = verifier
        .verify(&stranger.token("alice", NOW), NOW)
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::UnknownKey {
            kid: "stranger".into()
        }
    );
    assert_eq!(err.code(), "unknown_key");
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_kid_is_a_bad_signature() {
    let known = p256_key("k");
    let (verifier, _dir) = with_jwks(b"", &jwks(&[&known])).await;
    let impostor = p256_key("k");
    let err = verifier
        .verify(&impostor.token("alice", NOW), NOW)
        .unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
}

#[tokio::test]
async fn an_alg_that_does_not_match_the_key_type_is_refused() {
    // The header says ES256, but the key named by `kid` is RSA.
    let rsa = rsa_key("r1");
    let (verifier, _dir) = with_jwks(b"", &jwks(&[&rsa])).await;
    let ec = p256_key("r1");
    let err = verifier.verify(&ec.token("alice", NOW), NOW).unwrap_err();
    assert!(
        matches!(&err, AuthError::AlgorithmMismatch { alg, kid, .. } if alg == "ES256" && kid == "r1"),
        "{err:?}"
    );
    assert_eq!(err.code(), "algorithm_not_allowed");
}

#[tokio::test]
async fn a_jwk_alg_narrows_what_its_key_verifies() {
    // An RSA key published for RS256 only: a PS256 token under it is refused.
    let rsa = rsa_key("r1");
    let mut jwk = rsa.clone();
    jwk.jwk["alg"] = "RS256".into();
    let (verifier, _dir) = with_jwks(b"", &jwks(&[&jwk])).await;
    let ps256 = ws_realtime::auth::mint_signed(
        &rsa.encoding,
        Algorithm::PS256,
        Some("r1"),
        &spec("alice", 60),
        NOW,
    )
    .unwrap();
    let err = verifier.verify(&ps256, NOW).unwrap_err();
    assert!(
        matches!(err, AuthError::AlgorithmMismatch { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_bytes_is_refused() {
    // The classic confusion: an attacker signs HS256 with the public key,
    // hoping the server uses that key as an HMAC secret.
    let rsa = rsa_key("r1");
    let (verifier, _dir) = with_jwks(SECRET, &jwks(&[&rsa])).await;
    let forged = jsonwebtoken::encode(
        &Header {
            kid: Some("r1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &serde_json::json!({"sub": "mallory", "exp": NOW + 60}),
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&forged, NOW).unwrap_err(),
        AuthError::BadSignature
    );

    // Without any HS256 secret configured, HS256 is not accepted at all.
    let (asymmetric_only, _dir) = with_jwks(b"", &jwks(&[&rsa])).await;
    let err = asymmetric_only.verify(&forged, NOW).unwrap_err();
    assert!(
        matches!(err, AuthError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn alg_none_is_refused_even_with_a_known_kid() {
    let rsa = rsa_key("r1");
    let (verifier, _dir) = with_jwks(SECRET, &jwks(&[&rsa])).await;
    let token = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","kid":"r1"}"#),
        b64(&format!(r#"{{"sub":"mallory","exp":{}}}"#, NOW + 60))
    );
    let err = verifier.verify(&token, NOW).unwrap_err();
    assert!(
        matches!(&err, AuthError::AlgorithmNotAllowed { alg, .. } if alg == "none"),
        "{err:?}"
    );
}

#[tokio::test]
async fn hs256_keeps_working_beside_a_jwks() {
    let (verifier, _dir) = with_jwks(SECRET, &jwks(&[&p256_key("e1")])).await;
    let token = mint(SECRET, &spec("alice", 60), NOW);
    assert_eq!(&*verifier.verify(&token, NOW).unwrap().user_id, "alice");
}

#[test]
fn a_pem_public_key_verifies_tokens_of_its_type_only() {
    for key in [rsa_key("x"), p256_key("x"), ed25519_key("x")] {
        let public_key = parse_public_key_pem(key.public_pem.as_bytes()).expect("PEM parses");
        let verifier = Verifier::with_keys(
            config(b""),
            AuthKeys {
                public_key: Some(public_key),
                ..AuthKeys::default()
            },
        );
        // The PEM key has no id: the token's `kid` does not matter.
        let identity = verifier.verify(&key.token("bob", NOW), NOW);
        assert_eq!(
            identity.map(|i| i.user_id.into_string()),
            Ok("bob".to_owned()),
            "{:?}",
            key.alg
        );
        // A token of another key type is refused by algorithm.
        let other = if key.alg == Algorithm::ES256 {
            ed25519_key("y")
        } else {
            p256_key("y")
        };
        let err = verifier.verify(&other.token("bob", NOW), NOW).unwrap_err();
        assert!(
            matches!(err, AuthError::AlgorithmNotAllowed { .. }),
            "{err:?}"
        );
    }
}

#[test]
fn a_private_key_or_garbage_is_not_a_public_key() {
    let private =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
    let err = parse_public_key_pem(private.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
    assert!(parse_public_key_pem(b"hello").is_err());
    assert!(parse_public_key_pem(&[0xff, 0xfe]).is_err());
}

#[test]
fn previous_secrets_verify_but_the_current_one_comes_first() {
    let old = b"old-secret-0123456789abcdef0123456789";
    let verifier = Verifier::with_keys(
        config(SECRET),
        AuthKeys {
            previous_secrets: vec![old.to_vec()],
            ..AuthKeys::default()
        },
    );
    let under_old = mint(old, &spec("alice", 60), NOW);
    let under_new = mint(SECRET, &spec("alice", 60), NOW);
    assert!(verifier.verify(&under_old, NOW).is_ok());
    assert!(verifier.verify(&under_new, NOW).is_ok());
    let stranger = mint(
        b"never-configured-secret-0123456789",
        &spec("alice", 60),
        NOW,
    );
    assert_eq!(
        verifier.verify(&stranger, NOW).unwrap_err(),
        AuthError::BadSignature
    );
    // Without the previous secret, the old token is refused.
    let strict = Verifier::new(config(SECRET));
    assert_eq!(
        strict.verify(&under_old, NOW).unwrap_err(),
        AuthError::BadSignature
    );
}

#[test]
fn jwks_documents_skip_unusable_keys_and_refuse_when_none_is_left() {
    let ec = p256_key("e1");
    let mixed = serde_json::json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "shared"},
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc"},
        {"kty": "weird", "kid": "w"},
        ec.jwk,
    ]});
    let set = parse_jwks(mixed.to_string().as_bytes()).expect("one usable key");
    assert_eq!(set.len(), 1);
    assert!(set.get("e1").is_some());
    assert!(
        set.get("shared").is_none(),
        "a symmetric key in a JWKS is never used"
    );

    for garbage in [
        &b"<html>down for maintenance</html>"[..],
        b"{}",
        b"{\"keys\":{}}",
        b"{\"keys\":[]}",
        b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
    ] {
        assert!(
            parse_jwks(garbage).is_err(),
            "{}",
            String::from_utf8_lossy(garbage)
        );
    }
}

#[test]
fn verifier_is_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Arc<Verifier>>();
}
