//! How long verifying one typical client token takes: the work done once per
//! `GET /ws` before the upgrade.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ws_realtime::auth::{AuthConfig, TokenSpec, Verifier, mint};

const SECRET: &[u8] = b"bench-secret-of-a-realistic-length-32+";
const NOW: u64 = 1_767_225_600;

fn verify_typical_token(c: &mut Criterion) {
    let spec = TokenSpec {
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
    };
    let token = mint(SECRET, &spec, NOW);
    let verifier = Verifier::new(AuthConfig {
        secret: SECRET.to_vec(),
        audience: Some("ws-realtime".to_owned()),
        issuer: Some("auth.internal".to_owned()),
        leeway_secs: 30,
    });
    verifier
        .verify(&token, NOW)
        .expect("the bench token is valid at NOW");

    c.bench_function("jwt_verify_typical_token", |b| {
        b.iter(|| verifier.verify(black_box(&token), black_box(NOW)))
    });
}

criterion_group!(benches, verify_typical_token);
criterion_main!(benches);
