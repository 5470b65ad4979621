//! Verification keys and the algorithms each may verify. A key's type
//! decides its algorithms (RSA: RS256/384/512 and PS256/384/512; P-256:
//! ES256; P-384: ES384; Ed25519: EdDSA), narrowed to the JWK's `alg` when it
//! names one. A token's header only chooses among those, so an HS256 token
//! can never be checked against a public key's bytes, and `alg:none` has no
//! key at all.
//!
//! Keys come from a JWKS document ([`parse_jwks`]: a URL or a file) or a
//! single PEM public key ([`parse_public_key_pem`]).

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use spki::der::Decode as _;

/// Longest key id kept or echoed: ids are short opaque strings, and one
/// from a hostile header must not blow up a 401 body or a log line.
pub(super) const MAX_KID_CHARS: usize = 64;

/// Most keys taken from one JWKS document; an IdP publishes a handful (the
/// current key and the next or previous one).
const MAX_KEYS: usize = 64;

const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// One public key and what it may verify.
#[derive(Clone, Debug)]
pub struct PublicKey {
    /// The key's id (`kid`), when it has one.
    pub kid: Option<String>,
    /// The key, prepared for jsonwebtoken.
    pub(super) key: DecodingKey,
    /// The algorithms this key verifies, from its type (and its JWK `alg`).
    pub(super) algorithms: Vec<Algorithm>,
}

impl PublicKey {
    /// Whether it verifies `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// Its algorithms, for messages: `RS256, RS384, …`.
    pub fn algorithm_names(&self) -> String {
        names(&self.algorithms)
    }
}

/// `RS256, ES256` for messages.
pub(super) fn names(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|alg| format!("{alg:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A set of public keys, looked up by `kid`; keys without one are tried
/// by algorithm.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    /// Keys that have a `kid`.
    by_kid: HashMap<String, PublicKey>,
    /// Keys without a `kid` (a PEM file, a JWKS entry without one).
    anonymous: Vec<PublicKey>,
}

impl KeySet {
    /// A set of `keys`; a repeated `kid` keeps the first.
    pub fn new(keys: Vec<PublicKey>) -> KeySet {
        let mut set = KeySet::default();
        for key in keys {
            match &key.kid {
                Some(kid) => {
                    set.by_kid.entry(kid.clone()).or_insert(key);
                }
                None => set.anonymous.push(key),
            }
        }
        set
    }

    /// The key with id `kid`.
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.by_kid.get(kid)
    }

    /// Every key, those with an id first (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.by_kid.values().chain(self.anonymous.iter())
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a key document was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not JSON, or not `{"keys":[…]}`.
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    /// A JWKS with no key this server can use.
    #[error("the JWKS holds no usable signing key ({0})")]
    NoUsableKey(String),
    /// A PEM file that is not a public key of a supported type.
    #[error("not a PEM public key this server can use: {0}")]
    BadPem(String),
}

/// The signing keys of a JWKS document (`{"keys":[…]}`). Entries this
/// server cannot use (encryption keys, symmetric `oct` keys, which have no
/// place in a public document, unknown types or curves) are skipped; a
/// document with none left is an error, so a broken document never
/// replaces a good key set.
pub fn parse_jwks(body: &[u8]) -> Result<KeySet, KeyError> {
    let document: Value =
        serde_json::from_slice(body).map_err(|e| KeyError::NotJwks(format!("not JSON: {e}")))?;
    let Some(Value::Array(entries)) = document.get("keys") else {
        return Err(KeyError::NotJwks("it has no \"keys\" array".to_owned()));
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for entry in entries.iter().take(MAX_KEYS) {
        match key_of(entry) {
            Ok(key) => keys.push(key),
            Err(why) => skipped.push(why),
        }
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            "it is empty".to_owned()
        } else {
            skipped.join("; ")
        };
        return Err(KeyError::NoUsableKey(why));
    }
    Ok(KeySet::new(keys))
}

/// One JWK as a [`PublicKey`], or why it is skipped.
fn key_of(entry: &Value) -> Result<PublicKey, String> {
    let jwk: Jwk =
        serde_json::from_value(entry.clone()).map_err(|e| format!("an entry is not a JWK: {e}"))?;
    let kid = jwk
        .common
        .key_id
        .as_deref()
        .map(|kid| kid.chars().take(MAX_KID_CHARS).collect::<String>());
    let named = kid.as_deref().unwrap_or("(no kid)");
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err(format!("{named}: an encryption key"));
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return Err(format!("{named}: an unsupported EC curve")),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKeyPair(_) => {
            return Err(format!("{named}: an unsupported OKP curve"));
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(format!(
                "{named}: a symmetric key, which a JWKS must not publish"
            ));
        }
        _ => return Err(format!("{named}: an unsupported key type")),
    };
    let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(named_alg) => {
            let alg = algorithm_of(named_alg)
                .filter(|alg| by_type.contains(alg))
                .ok_or_else(|| format!("{named}: its \"alg\" does not fit its key type"))?;
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{named}: {e}"))?;
    Ok(PublicKey {
        kid,
        key,
        algorithms,
    })
}

/// The signing algorithm a JWK's `alg` names (not the encryption ones).
fn algorithm_of(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// OIDs of the key types a PEM public key may hold.
mod oid {
    use spki::ObjectIdentifier;

    pub(super) const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    pub(super) const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    pub(super) const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    pub(super) const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
    pub(super) const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
}

/// A single public key in PEM: `BEGIN PUBLIC KEY` (SPKI: RSA, P-256,
/// P-384 or Ed25519) or `BEGIN RSA PUBLIC KEY` (PKCS#1). It has no `kid`,
/// so it verifies every token of its algorithms that a JWKS does not claim.
pub fn parse_public_key_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
    let bad = |why: &str| KeyError::BadPem(why.to_owned());
    let text = std::str::from_utf8(pem).map_err(|_| bad("the file is not text"))?;
    let (label, der) = pem_rfc7468::decode_vec(text.trim().as_bytes())
        .map_err(|e| KeyError::BadPem(format!("not PEM ({e})")))?;
    let anonymous = |key, algorithms: &[Algorithm]| PublicKey {
        kid: None,
        key,
        algorithms: algorithms.to_vec(),
    };
    match label {
        "RSA PUBLIC KEY" => Ok(anonymous(DecodingKey::from_rsa_der(&der), RSA_ALGORITHMS)),
        "PUBLIC KEY" => {
            let spki = spki::SubjectPublicKeyInfoRef::from_der(&der)
                .map_err(|e| KeyError::BadPem(format!("not a SubjectPublicKeyInfo ({e})")))?;
            let bits = spki
                .subject_public_key
                .as_bytes()
                .ok_or_else(|| bad("its key bits are not whole bytes"))?;
            let algorithm = spki.algorithm.oid;
            if algorithm == oid::RSA {
                Ok(anonymous(DecodingKey::from_rsa_der(bits), RSA_ALGORITHMS))
            } else if algorithm == oid::ED25519 {
                Ok(anonymous(
                    DecodingKey::from_ed_der(bits),
                    &[Algorithm::EdDSA],
                ))
            } else if algorithm == oid::EC {
                let curve = spki
                    .algorithm
                    .parameters_oid()
                    .map_err(|_| bad("an EC key without a named curve"))?;
                let alg = if curve == oid::P256 {
                    Algorithm::ES256
                } else if curve == oid::P384 {
                    Algorithm::ES384
                } else {
                    return Err(bad("an EC key on a curve other than P-256 or P-384"));
                };
                Ok(anonymous(DecodingKey::from_ec_der(bits), &[alg]))
            } else {
                Err(KeyError::BadPem(format!(
                    "a key of type {algorithm}, not RSA, EC or Ed25519"
                )))
            }
        }
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => Err(bad(
            "it is a private key; give the server only the public key",
        )),
        other => Err(KeyError::BadPem(format!(
            "a \"{}\" block, not a PUBLIC KEY",
            other.chars().take(40).collect::<String>()
        ))),
    }
}
