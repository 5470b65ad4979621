//! The JWKS source: fetched from a local HTTP server (127.0.0.1:0), refetched
//! for an unknown `kid` at most once per interval, and keeping its last good
//! key set through outages, garbage and oversized bodies; a JWKS file is
//! reloaded when it changes.

mod auth_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_support::{JwksServer, ed25519_key, jwks, p256_key, rsa_key, spec};
use ws_realtime::auth::{
    AuthConfig, AuthError, AuthKeys, JwksConfig, JwksHandle, JwksLocation, Verifier, mint,
};

const SECRET: &[u8] = b"jwks-test-secret-0123456789abcdef012";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwks_config(location: JwksLocation) -> JwksConfig {
    JwksConfig {
        location,
        refresh_interval: Duration::from_secs(300),
        min_refetch_interval: Duration::from_secs(30),
        timeout: Duration::from_secs(2),
        max_body_bytes: 64 * 1024,
    }
}

/// Every status report, in order (`None` = ready).
type Reports = Arc<Mutex<Vec<Option<String>>>>;

/// A handle on `config` whose status reports are recorded.
fn handle(config: JwksConfig) -> (Arc<JwksHandle>, Reports) {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = reports.clone();
    let handle = JwksHandle::new(
        config,
        Box::new(move |state| seen.lock().unwrap().push(state)),
    );
    (handle, reports)
}

fn verifier(handle: &Arc<JwksHandle>) -> Verifier {
    Verifier::with_keys(
        AuthConfig {
            secret: SECRET.to_vec(),
            audience: None,
            issuer: None,
            leeway_secs: 0,
        },
        AuthKeys {
            jwks: Some(handle.clone()),
            ..AuthKeys::default()
        },
    )
}

#[tokio::test]
async fn keys_fetched_from_the_url_verify_tokens_and_report_ready() {
    let key = rsa_key("r1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let (handle, reports) = handle(jwks_config(JwksLocation::Url(server.url())));
    assert_eq!(handle.refresh().await, Ok(1));
    let identity = verifier(&handle).verify(&key.token("alice", now()), now());
    assert_eq!(
        identity.map(|i| i.user_id.into_string()),
        Ok("alice".to_owned())
    );
    assert_eq!(
        reports.lock().unwrap().last(),
        Some(&None),
        "ready once loaded"
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_and_then_verifies() {
    let old = p256_key("2025");
    let server = JwksServer::start(jwks(&[&old])).await;
    let (handle, _) = handle(jwks_config(JwksLocation::Url(server.url())));
    handle.refresh().await.unwrap();
    let verifier = verifier(&handle);
    assert_eq!(server.hits(), 1);

    // The issuer rotates: the new key is published, and a token under it
    // arrives before the periodic refresh.
    let new = ed25519_key("2026");
    server.set_body(jwks(&[&old, &new]));
    let token = new.token("alice", now());
    assert!(matches!(
        verifier.verify(&token, now()),
        Err(AuthError::UnknownKey { .. })
    ));
    let identity = verifier.verify_fresh(&token, now()).await;
    assert_eq!(
        identity.map(|i| i.user_id.into_string()),
        Ok("alice".to_owned())
    );
    assert_eq!(server.hits(), 2, "exactly one refetch");
}

#[tokio::test]
async fn a_flood_of_bogus_kids_fetches_at_most_once_per_interval() {
    let server = JwksServer::start(jwks(&[&p256_key("real")])).await;
    let (handle, _) = handle(jwks_config(JwksLocation::Url(server.url())));
    handle.refresh().await.unwrap();
    let verifier = Arc::new(verifier(&handle));
    let mut floods = tokio::task::JoinSet::new();
    for i in 0..200 {
        let verifier = verifier.clone();
        floods.spawn(async move {
            let bogus = p256_key(&format!("bogus-{i}")).token("mallory", now());
            verifier.verify_fresh(&bogus, now()).await
        });
    }
    while let Some(result) = floods.join_next().await {
        let err = result.unwrap().unwrap_err();
        assert_eq!(err.code(), "unknown_key");
    }
    // The initial load, and the first bogus kid's refetch: 30 s must pass
    // before another.
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_url_that_is_down_reports_why_and_hs256_still_works() {
    // A port nobody listens on.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{address}/jwks.json");
    let (handle, reports) = handle(jwks_config(JwksLocation::Url(url)));
    let err = handle.refresh().await.unwrap_err();
    assert!(err.contains("connect"), "{err}");
    let last = reports.lock().unwrap().last().cloned().flatten();
    assert!(
        last.as_deref()
            .is_some_and(|why| why.contains("cannot load") && why.contains(&address.to_string())),
        "{last:?}"
    );
    let verifier = verifier(&handle);
    let hs = mint(SECRET, &spec("alice", 60), now());
    assert_eq!(
        verifier.verify(&hs, now()).map(|i| i.user_id.into_string()),
        Ok("alice".to_owned())
    );
}

#[tokio::test]
async fn garbage_keeps_the_last_good_key_set() {
    let key = rsa_key("r1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let (handle, reports) = handle(jwks_config(JwksLocation::Url(server.url())));
    handle.refresh().await.unwrap();
    for garbage in [
        &b"<html>502 Bad Gateway</html>"[..],
        b"{\"keys\":[]}",
        b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}",
    ] {
        server.set_body(garbage);
        assert!(handle.refresh().await.is_err());
        let still = verifier(&handle).verify(&key.token("alice", now()), now());
        assert!(still.is_ok(), "the last good set stays: {still:?}");
    }
    assert_eq!(
        reports.lock().unwrap().last(),
        Some(&None),
        "a failed refresh after a good load does not make the server unready"
    );
}

#[tokio::test]
async fn a_ten_megabyte_body_is_refused_unread_and_the_last_good_set_stays() {
    let key = p256_key("e1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let (handle, _) = handle(jwks_config(JwksLocation::Url(server.url())));
    handle.refresh().await.unwrap();
    let huge = {
        let mut body = b"{\"keys\":[".to_vec();
        body.resize(10 * 1024 * 1024, b' ');
        body
    };
    server.set_body(huge);
    for declared in [true, false] {
        server.declare_length(declared);
        let err = handle.refresh().await.unwrap_err();
        assert!(err.contains("larger than"), "declared={declared}: {err}");
        assert!(
            verifier(&handle)
                .verify(&key.token("a", now()), now())
                .is_ok()
        );
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = jwks_config(JwksLocation::Url(url));
    config.timeout = Duration::from_millis(300);
    let (handle, _) = handle(config);
    let started = std::time::Instant::now();
    let err = handle.refresh().await.unwrap_err();
    assert!(err.contains("within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.abort();
}

#[tokio::test]
async fn a_jwks_file_is_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let first = p256_key("first");
    std::fs::write(&path, jwks(&[&first])).unwrap();
    let mut config = jwks_config(JwksLocation::File(path.clone()));
    config.refresh_interval = Duration::from_millis(50);
    let (handle, _) = handle(config);
    let verifier = verifier(&handle);
    let task = tokio::spawn(handle.clone().run());

    let second = ed25519_key("second");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Wait for the first load, then replace the file.
    while verifier.verify(&first.token("a", now()), now()).is_err() {
        assert!(std::time::Instant::now() < deadline, "first load");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A different length, so the change shows even on coarse mtimes.
    std::fs::write(&path, jwks(&[&second])).unwrap();
    while verifier.verify(&second.token("a", now()), now()).is_err() {
        assert!(std::time::Instant::now() < deadline, "reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        verifier.verify(&first.token("a", now()), now()),
        Err(AuthError::UnknownKey { .. })
    ));
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn an_idp_down_at_start_is_retried_soon_not_after_the_full_interval() {
    let key = p256_key("e1");
    // Reserve a port, then serve on it only later.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = probe.local_addr().unwrap();
    drop(probe);
    let (handle, reports) = handle(jwks_config(JwksLocation::Url(format!(
        "http://{address}/.well-known/jwks.json"
    ))));
    let task = tokio::spawn(handle.clone().run());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(handle.keys().is_empty());
    // The IdP comes up.
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let body = jwks(&[&key]);
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        }
    });
    // Well within the 300 s refresh interval.
    for _ in 0..200 {
        if !handle.keys().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(handle.keys().len(), 1, "picked up by the retry");
    assert_eq!(reports.lock().unwrap().last(), Some(&None));
    task.abort();
    server.abort();
}
