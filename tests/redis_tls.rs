//! `rediss://`: the Redis source over TLS, verifying the server certificate
//! against a private CA given through `SSL_CERT_FILE`. A test binary of its
//! own because it sets that process-wide variable.
//!
//! Needs `redis-server` (Debian's is built with TLS) and the `openssl` tool
//! to make the certificates; ignored by default, run by `.ci/redis`.

mod redis_support;

use std::path::Path;
use std::process::Command;

use redis_support::*;
use ws_realtime::config::Settings;
use ws_realtime::source::redis::RedisConfig;

/// A CA, a server certificate for `localhost` / `127.0.0.1` signed by it, and
/// an unrelated CA (`other-ca.crt`) that signed nothing.
fn make_certificates(dir: &Path) {
    let openssl = |args: &str| {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .expect("the openssl tool must be installed");
        assert!(out.status.success(), "openssl {args}: {out:?}");
    };
    const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {EC_KEY} -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca"
    ));
    openssl(&format!(
        "req -x509 {EC_KEY} -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=other-ca"
    ));
    openssl(&format!(
        "req {EC_KEY} -keyout server.key -out server.csr -subj /CN=localhost"
    ));
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write extensions");
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
         -out server.crt -days 2 -extfile server.ext",
    );
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server) and openssl; .ci/run installs them"]
async fn redis_over_tls_verifies_the_server_and_delivers() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certificates(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let (ca, cert, key) = (file("ca.crt"), file("server.crt"), file("server.key"));
    // SAFETY: this binary's only test sets it before starting any task or
    // thread of its own; the variable is read when a TLS connection is made.
    unsafe { std::env::set_var("SSL_CERT_FILE", &ca) };

    let port = free_port();
    let tls_port = port.to_string();
    let redis = RedisServer::start_on(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
    );

    let url = format!("rediss://localhost:{port}");
    let config =
        RedisConfig::from_settings(&Settings::from_pairs([("WS_REDIS_URL", url.as_str())]))
            .expect("rediss:// is a valid URL");
    assert!(config.uses_tls());

    let mut source = start_source(&[("WS_REDIS_URL", &url)]);
    source.wait_until_ready().await;
    assert_eq!(
        publish(&url, "channel:trade:AAPL", b"{\"tls\":true}").await,
        1
    );
    let got = source.next().await;
    assert_eq!(got.channel, "trade:AAPL");
    assert_eq!(&got.payload[..], b"{\"tls\":true}");
    source.stop().await;

    // Trusting only a CA that did not sign the server's certificate: refused.
    // SAFETY: as above; the previous source has stopped.
    unsafe { std::env::set_var("SSL_CERT_FILE", file("other-ca.crt")) };
    let untrusted = start_source(&[("WS_REDIS_URL", &url)]);
    untrusted
        .wait_for_readiness("not ready against an untrusted certificate", |s| {
            s.as_ref()
                .err()
                .is_some_and(|r| r.iter().any(|r| r.starts_with("redis: cannot connect")))
        })
        .await;
    untrusted.stop().await;
    drop(redis);
}
