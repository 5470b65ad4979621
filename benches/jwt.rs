//! How long verifying one typical client token takes: the work done once per
//! `GET /ws` before the upgrade (and once per `refresh`). HS256 with the
//! shared secret, and RS256 / ES256 / EdDSA with keys from a JWKS, as an
//! identity provider signs them (keys generated here, nothing checked in).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use ws_realtime::auth::{
    AuthConfig, AuthKeys, JwksConfig, JwksHandle, JwksLocation, TokenSpec, Verifier, mint,
    mint_signed,
};

const SECRET: &[u8] = b"bench-secret-of-a-realistic-length-32+";
const NOW: u64 = 1_767_225_600;

fn spec() -> TokenSpec {
    TokenSpec {
        sub: "trader-4711".to_owned(),
        ttl: Duration::from_secs(3600),
        roles: vec!["trader".to_owned(), "analyst".to_owned()],
        channels: Some(vec![
            "lines".to_owned(),
            "order_book".to_owned(),
            "trade:*".to_owned(),
        ]),
        audience: Some("ws-realtime".to_owned()),
        issuer: Some("auth.internal".to_owned()),
    }
}

fn auth_config() -> AuthConfig {
    AuthConfig {
        secret: SECRET.to_vec(),
        audience: Some("ws-realtime".to_owned()),
        issuer: Some("auth.internal".to_owned()),
        leeway_secs: 30,
    }
}

fn verify_typical_token(c: &mut Criterion) {
    let token = mint(SECRET, &spec(), NOW);
    let verifier = Verifier::new(auth_config());
    verifier
        .verify(&token, NOW)
        .expect("the bench token is valid at NOW");

    c.bench_function("jwt_verify_typical_token", |b| {
        b.iter(|| verifier.verify(black_box(&token), black_box(NOW)))
    });
}

/// The signing keys of a pretend identity provider: (key, algorithm, kid, public JWK).
fn provider_keys() -> Vec<(EncodingKey, Algorithm, &'static str, serde_json::Value)> {
    let mut rng = rand::rngs::OsRng;
    let rsa = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA keygen");
    let rsa = EncodingKey::from_rsa_der(rsa.to_pkcs1_der().expect("PKCS#1").as_bytes());
    let ec = p256::SecretKey::random(&mut rng);
    let ec = EncodingKey::from_ec_der(ec.to_pkcs8_der().expect("PKCS#8").as_bytes());
    let ed = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let ed_x =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ed.verifying_key().as_bytes());
    let ed = EncodingKey::from_ed_der(ed.to_pkcs8_der().expect("PKCS#8").as_bytes());
    let jwk = |key: &EncodingKey, alg, kid: &str| {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg).expect("public half"))
            .expect("serialises");
        jwk["kid"] = kid.into();
        jwk
    };
    vec![
        (
            rsa.clone(),
            Algorithm::RS256,
            "rsa",
            jwk(&rsa, Algorithm::RS256, "rsa"),
        ),
        (
            ec.clone(),
            Algorithm::ES256,
            "ec",
            jwk(&ec, Algorithm::ES256, "ec"),
        ),
        (
            ed,
            Algorithm::EdDSA,
            "ed",
            serde_json::json!({"kty":"OKP","crv":"Ed25519","x":ed_x,"kid":"ed"}),
        ),
    ]
}

fn verify_asymmetric_tokens(c: &mut Criterion) {
    let keys = provider_keys();
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("jwks.json");
    let document =
        serde_json::json!({"keys": keys.iter().map(|k| k.3.clone()).collect::<Vec<_>>()});
    std::fs::write(&path, document.to_string()).expect("written");
    let handle: Arc<JwksHandle> = JwksHandle::new(
        JwksConfig {
            location: JwksLocation::File(path),
            refresh_interval: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
        },
        Box::new(|_| {}),
    );
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(handle.refresh())
        .expect("the JWKS loads");
    let verifier = Verifier::with_keys(
        auth_config(),
        AuthKeys {
            jwks: Some(handle),
            ..AuthKeys::default()
        },
    );
    for (key, alg, kid, _) in &keys {
        let token = mint_signed(key, *alg, Some(kid), &spec(), NOW).expect("signs");
        verifier
            .verify(&token, NOW)
            .expect("the bench token is valid at NOW");
        let name = format!("jwt_verify_{alg:?}_from_jwks").to_lowercase();
        c.bench_function(&name, |b| {
            b.iter(|| verifier.verify(black_box(&token), black_box(NOW)))
        });
    }
}

criterion_group!(benches, verify_typical_token, verify_asymmetric_tokens);
criterion_main!(benches);
