//! Key pairs generated at test time (nothing private is checked in), the
//! JWKS and PEM documents that publish their public halves, tokens signed
//! with them, and a tiny JWKS server on 127.0.0.1:0 whose answer a test can
//! change and whose requests it can count.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ws_realtime::auth::{TokenSpec, mint_signed};

/// A signing key as an identity provider holds it.
#[derive(Clone)]
pub struct TestKey {
    /// Signs tokens.
    pub encoding: EncodingKey,
    /// The algorithm it signs with.
    pub alg: Algorithm,
    /// Its key id.
    pub kid: String,
    /// Its public half as a JWK (with `kid` and `alg`).
    pub jwk: serde_json::Value,
    /// Its public half as a `BEGIN PUBLIC KEY` PEM.
    pub public_pem: String,
}

impl TestKey {
    /// A token for `sub` (valid an hour), signed with this key, its header
    /// naming the key's id.
    pub fn token(&self, sub: &str, now: u64) -> String {
        self.token_for(&spec(sub, 3600), now)
    }

    /// A token for `spec`, signed with this key and naming its id.
    pub fn token_for(&self, spec: &TokenSpec, now: u64) -> String {
        mint_signed(&self.encoding, self.alg, Some(&self.kid), spec, now).expect("the key signs")
    }

    /// The same key under another id.
    pub fn with_kid(&self, kid: &str) -> TestKey {
        let mut key = self.clone();
        key.kid = kid.to_owned();
        key.jwk["kid"] = kid.into();
        key
    }
}

/// A token spec for `sub`, valid `ttl_secs`.
pub fn spec(sub: &str, ttl_secs: u64) -> TokenSpec {
    TokenSpec {
        sub: sub.to_owned(),
        ttl: Duration::from_secs(ttl_secs),
        roles: Vec::new(),
        channels: None,
        audience: None,
        issuer: None,
    }
}

fn jwk_of(encoding: &EncodingKey, alg: Algorithm, kid: &str) -> serde_json::Value {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(encoding, alg).expect("public half"))
        .expect("a JWK serialises");
    jwk["kid"] = kid.into();
    jwk
}

/// An RSA-2048 key (RS256), generated once per test binary: generation is
/// the slow part, and one key serves every test (renamed with `with_kid`).
pub fn rsa_key(kid: &str) -> TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA keygen");
        let der = private.to_pkcs1_der().expect("PKCS#1");
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM");
        TestKey {
            jwk: jwk_of(&encoding, Algorithm::RS256, "rsa"),
            encoding,
            alg: Algorithm::RS256,
            kid: "rsa".to_owned(),
            public_pem,
        }
    })
    .with_kid(kid)
}

/// A fresh P-256 key (ES256).
pub fn p256_key(kid: &str) -> TestKey {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = secret.to_pkcs8_der().expect("PKCS#8");
    let encoding = EncodingKey::from_ec_der(der.as_bytes());
    let public_pem = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("SPKI PEM");
    TestKey {
        jwk: jwk_of(&encoding, Algorithm::ES256, kid),
        encoding,
        alg: Algorithm::ES256,
        kid: kid.to_owned(),
        public_pem,
    }
}

/// A fresh Ed25519 key (EdDSA).
pub fn ed25519_key(kid: &str) -> TestKey {
    let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let der = signing.to_pkcs8_der().expect("PKCS#8");
    let encoding = EncodingKey::from_ed_der(der.as_bytes());
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("SPKI PEM");
    // Built by hand: jsonwebtoken derives the public half only from the
    // 48-byte PKCS#8 v1 form, and ed25519-dalek writes v2 (with the public key).
    let x =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    TestKey {
        jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"}),
        encoding,
        alg: Algorithm::EdDSA,
        kid: kid.to_owned(),
        public_pem,
    }
}

/// `{"keys":[…]}` of `keys`.
pub fn jwks(keys: &[&TestKey]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
        .to_string()
}

/// A JWKS endpoint on 127.0.0.1:0 answering every request with the current
/// body (HTTP 200), counting requests.
pub struct JwksServer {
    /// Where it listens.
    pub address: SocketAddr,
    /// What it answers.
    body: Arc<Mutex<Vec<u8>>>,
    /// Requests served.
    hits: Arc<AtomicUsize>,
    /// Whether the answer declares its length (otherwise it runs to EOF,
    /// so only a bounded read protects the client).
    declare_length: Arc<std::sync::atomic::AtomicBool>,
    /// The accept loop, stopped on drop.
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving `body`.
    pub async fn start(body: impl Into<Vec<u8>>) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body.into()));
        let hits = Arc::new(AtomicUsize::new(0));
        let declare_length = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (served, counted, declared) = (body.clone(), hits.clone(), declare_length.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                let declare = declared.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let length = if declare {
                        format!("content-length: {}\r\n", body.len())
                    } else {
                        String::new()
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{length}connection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        JwksServer {
            address,
            body,
            hits,
            declare_length,
            task,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.address)
    }

    /// Answers `body` from now on.
    pub fn set_body(&self, body: impl Into<Vec<u8>>) {
        *self.body.lock().unwrap() = body.into();
    }

    /// Whether answers carry `content-length`.
    pub fn declare_length(&self, declare: bool) {
        self.declare_length.store(declare, Ordering::SeqCst);
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
