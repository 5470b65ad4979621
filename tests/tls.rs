//! `wss://` and `https://` on the one port (`WS_TLS_CERT_FILE`,
//! `WS_TLS_KEY_FILE`) with a real TLS client (tokio-rustls) and certificates
//! generated here by a test CA (rcgen): no key is checked in.

mod server_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName};
use server_support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use ws_realtime::config::{ServerConfig, TlsFiles};
use ws_realtime::shell::{ServerError, ServerHandle};

/// A test CA that issues `localhost` server certificates.
struct TestCa {
    /// The CA's certificate and key, to sign with.
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA's certificate, for the client's trust store.
    cert: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ws-realtime test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A new `localhost` certificate and its key, as PEM.
    fn issue(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn connector(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// The certificate files of one server, in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(pair: &(String, String)) -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        files.write(pair);
        files
    }

    fn tls(&self, watch_interval: Duration) -> TlsFiles {
        TlsFiles {
            cert_file: self.dir.path().join("cert.pem"),
            key_file: self.dir.path().join("key.pem"),
            watch_interval,
        }
    }

    /// Replaces both files the way a rotation does: write aside, rename.
    fn write(&self, (cert, key): &(String, String)) {
        let put = |name: &str, text: &str| {
            let aside = self.dir.path().join(format!("{name}.new"));
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, self.dir.path().join(name)).unwrap();
        };
        put("key.pem", key);
        put("cert.pem", cert);
    }
}

fn tls_config(files: &Files, watch_interval: Duration) -> ServerConfig {
    let mut config = config();
    config.tls = Some(files.tls(watch_interval));
    config
}

/// A TLS connection to `address` trusting only `ca`.
async fn tls_connect(ca: &TestCa, address: SocketAddr) -> TlsStream<TcpStream> {
    tls_connect_with(ca, address, rustls::ALL_VERSIONS).await
}

async fn tls_connect_with(
    ca: &TestCa,
    address: SocketAddr,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsStream<TcpStream> {
    let tcp = within(TcpStream::connect(address)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    within(ca.connector(versions).connect(name, tcp))
        .await
        .expect("the TLS handshake succeeds")
}

/// The leaf certificate a new connection is shown.
async fn presented(ca: &TestCa, address: SocketAddr) -> CertificateDer<'static> {
    let stream = tls_connect(ca, address).await;
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn leaf(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// One HTTP/1.1 request over any stream (a TLS session, or plain TCP where
/// the test expects the server to serve it); the status and body.
async fn request<S>(
    stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let answer = HttpConnection::over(stream, "localhost")
        .await
        .request(method, path, headers, body.as_bytes())
        .await;
    (answer.status, answer.text())
}

/// Publishes `data` on `channel` with `POST /api/publish` over https.
async fn publish(ca: &TestCa, address: SocketAddr, channel: &str, data: &str) {
    let body = format!(r#"{{"channel":"{channel}","data":{data}}}"#);
    let headers = [
        ("x-api-key", API_KEY.to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    let stream = tls_connect(ca, address).await;
    let (status, answer) = request(stream, "POST", "/api/publish", &headers, &body).await;
    assert_eq!(status, 200, "{answer}");
}

type WssClient = WebSocketStream<TlsStream<TcpStream>>;

/// A `wss://` client subscribed to `channel`.
async fn wss_subscribe(ca: &TestCa, address: SocketAddr, channel: &str) -> WssClient {
    let stream = tls_connect(ca, address).await;
    let url = format!(
        "wss://localhost:{}/ws?token={}&channels={channel}",
        address.port(),
        token("alice", &[])
    );
    let (mut client, _) = within(tokio_tungstenite::client_async(url, stream))
        .await
        .expect("the upgrade succeeds");
    let connected = next_text(&mut client).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    client
}

async fn next_text(client: &mut WssClient) -> serde_json::Value {
    loop {
        match within(client.next()).await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Publishes until `client` receives `data` on `channel` (the subscription
/// may land a moment after `connected`).
async fn receives(ca: &TestCa, address: SocketAddr, client: &mut WssClient, channel: &str) {
    let data = format!(r#"{{"n":{}}}"#, rand_u32());
    publish(ca, address, channel, &data).await;
    loop {
        let frame = next_text(client).await;
        if frame["type"] == "message" {
            assert_eq!(frame["channel"], channel, "{frame}");
            assert_eq!(
                frame["data"],
                serde_json::from_str::<serde_json::Value>(&data).unwrap()
            );
            return;
        }
    }
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// Waits until new connections are shown `expected`.
async fn until_presented(ca: &TestCa, address: SocketAddr, expected: &CertificateDer<'static>) {
    within(async {
        while presented(ca, address).await != *expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn started(config: ServerConfig) -> ServerHandle {
    start(config).await
}

#[tokio::test]
async fn a_wss_client_receives_what_is_published_over_https() {
    let ca = TestCa::new();
    let files = Files::new(&ca.issue());
    let server = started(tls_config(&files, Duration::from_secs(3600))).await;
    let mut client = wss_subscribe(&ca, server.address, "lines").await;
    receives(&ca, server.address, &mut client, "lines").await;
    for path in ["/health", "/ready", "/metrics"] {
        let stream = tls_connect(&ca, server.address).await;
        let (status, _) = request(stream, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
    }
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served() {
    let ca = TestCa::new();
    let files = Files::new(&ca.issue());
    let server = started(tls_config(&files, Duration::from_secs(3600))).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let stream = tls_connect_with(&ca, server.address, &[version]).await;
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
        let (status, body) = request(stream, "GET", "/health", &[], "").await;
        assert_eq!((status, body.as_str()), (200, r#"{"status":"alive"}"#));
    }
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn changed_files_are_picked_up_without_dropping_open_connections() {
    let ca = TestCa::new();
    let first = ca.issue();
    let files = Files::new(&first);
    let server = started(tls_config(&files, Duration::from_millis(50))).await;
    let mut client = wss_subscribe(&ca, server.address, "lines").await;
    assert_eq!(presented(&ca, server.address).await, leaf(&first.0));

    let second = ca.issue();
    files.write(&second);
    until_presented(&ca, server.address, &leaf(&second.0)).await;
    receives(&ca, server.address, &mut client, "lines").await;

    // A bad certificate is refused and the good one stays in use.
    files.write(&("garbage".to_owned(), second.1.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(presented(&ca, server.address).await, leaf(&second.0));
    receives(&ca, server.address, &mut client, "lines").await;

    let third = ca.issue();
    files.write(&third);
    until_presented(&ca, server.address, &leaf(&third.0)).await;
    receives(&ca, server.address, &mut client, "lines").await;
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let ca = TestCa::new();
    let first = ca.issue();
    let files = Files::new(&first);
    // The file watch is too slow to be what reloads here.
    let server = started(tls_config(&files, Duration::from_secs(3600))).await;
    let mut client = wss_subscribe(&ca, server.address, "lines").await;
    // Serving a connection means the accept loop runs, so the SIGHUP
    // handler is installed: the signal cannot kill the test process.
    assert_eq!(presented(&ca, server.address).await, leaf(&first.0));

    let second = ca.issue();
    files.write(&second);
    // SAFETY: kill(2) on our own pid with a handled signal.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    until_presented(&ca, server.address, &leaf(&second.0)).await;
    receives(&ca, server.address, &mut client, "lines").await;
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn an_unusable_certificate_at_start_names_its_variable() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue();
    let files = Files::new(&("no certificate here".to_owned(), key.clone()));
    let error = ws_realtime::shell::start(tls_config(&files, Duration::from_secs(1)), Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(error, ServerError::Tls(_)), "{error:?}");
    assert!(error.to_string().contains("WS_TLS_CERT_FILE"), "{error}");

    let (_, other_key) = ca.issue();
    files.write(&(cert, other_key));
    let error = ws_realtime::shell::start(tls_config(&files, Duration::from_secs(1)), Vec::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("WS_TLS_KEY_FILE"), "{error}");
}

#[tokio::test]
async fn plain_http_and_garbage_are_closed_and_a_good_client_is_unaffected() {
    let ca = TestCa::new();
    let files = Files::new(&ca.issue());
    let server = started(tls_config(&files, Duration::from_secs(3600))).await;
    let mut client = wss_subscribe(&ca, server.address, "lines").await;

    // Plain HTTP: a 400 that says why, then the connection closes.
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let (status, body) = request(tcp, "GET", "/health", &[], "").await;
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "tls_required");

    // Not TLS at all, and a TLS record header followed by nonsense.
    let garbage: [&[u8]; 3] = [
        b"\x00\xff\x13garbage garbage",
        b"\x16\x03\x01\x00\x100123456789abcdef",
        &[0x16; 4096],
    ];
    for bytes in garbage {
        let mut tcp = TcpStream::connect(server.address).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let mut rest = Vec::new();
        // Closed (FIN, or a reset if rustls stopped reading): never hangs.
        let _ = within(tcp.read_to_end(&mut rest)).await;
        assert!(
            rest.is_empty() || rest[0] == 0x15,
            "nothing but an alert: {rest:?}"
        );
    }

    receives(&ca, server.address, &mut client, "lines").await;
    let fresh = tls_connect(&ca, server.address).await;
    assert_eq!(request(fresh, "GET", "/health", &[], "").await.0, 200);
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped_after_the_handshake_timeout() {
    let ca = TestCa::new();
    let files = Files::new(&ca.issue());
    let mut config = tls_config(&files, Duration::from_secs(3600));
    config.handshake_timeout = Duration::from_millis(200);
    let server = started(config).await;
    for opening in [&b""[..], b"\x16", b"\x16\x03\x01\x02\x00"] {
        let mut tcp = TcpStream::connect(server.address).await.unwrap();
        tcp.write_all(opening).await.unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let _ = within(tcp.read_to_end(&mut rest)).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(rest.is_empty(), "{rest:?}");
    }
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_plain_server_is_untouched_by_the_tls_code() {
    // No WS_TLS_*: plain HTTP on the port, and a TLS client is refused.
    let ca = TestCa::new();
    let server = started(config()).await;
    let tcp = TcpStream::connect(server.address).await.unwrap();
    assert_eq!(request(tcp, "GET", "/health", &[], "").await.0, 200);
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let handshake = within(ca.connector(rustls::ALL_VERSIONS).connect(name, tcp)).await;
    assert!(handshake.is_err());
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_large_message_to_a_slow_reader_arrives_whole() {
    // More than the kernel takes at once: the write is finished by the
    // connection's task through TLS. (That a write also flushes what rustls
    // kept is pinned deterministically by a unit test in `shell::tls`.)
    // Above what loopback's send and receive buffers hold together, below
    // the client's 16 MiB frame limit.
    const SIZE: usize = 14 * 1024 * 1024;
    let ca = TestCa::new();
    let files = Files::new(&ca.issue());
    let mut config = tls_config(&files, Duration::from_secs(3600));
    config.max_publish_bytes = 16 * 1024 * 1024;
    config.core.client_buffer_bytes = 32 * 1024 * 1024;
    let server = started(config).await;
    // A small receive window, so the server's writes stall and the last
    // bytes are written while the kernel is full.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let tcp = within(socket.connect(server.address)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = within(ca.connector(rustls::ALL_VERSIONS).connect(name, tcp))
        .await
        .unwrap();
    let url = format!(
        "wss://localhost/ws?token={}&channels=lines",
        token("bob", &[])
    );
    let (mut client, _) = within(tokio_tungstenite::client_async(url, stream))
        .await
        .unwrap();
    assert_eq!(next_text(&mut client).await["type"], "connected");
    receives(&ca, server.address, &mut client, "lines").await;
    let big = format!("\"{}\"", "x".repeat(SIZE));
    publish(&ca, server.address, "lines", &big).await;
    // Not reading for a while lets every buffer on the way fill up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frame = next_text(&mut client).await;
    assert_eq!(frame["type"], "message");
    assert_eq!(frame["data"].as_str().unwrap().len(), SIZE);
    within(server.shutdown()).await.unwrap();
}

/// Runs `command` to its end, killing it (and failing) after `limit`: a
/// binary that does not refuse would otherwise serve forever.
fn output_within(mut command: std::process::Command, limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{command:?} still ran after {limit:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_binary_refuses_to_start_with_an_unusable_certificate_naming_the_variable() {
    let ca = TestCa::new();
    let (cert, _) = ca.issue();
    let (_, other_key) = ca.issue();
    let files = Files::new(&(cert, other_key));
    let tls = files.tls(Duration::from_secs(1));
    for command in ["serve", "check-config"] {
        let mut binary = std::process::Command::new(env!("CARGO_BIN_EXE_ws-realtime"));
        for (name, _) in std::env::vars() {
            if name.starts_with("WS_") || name == "CREDENTIALS_DIRECTORY" {
                binary.env_remove(name);
            }
        }
        binary
            .arg(command)
            .env("WS_AUTH_SECRET", "integration-test-secret-0123456789abcdef")
            .env("WS_SOURCES", "http")
            .env("WS_API_KEY", API_KEY)
            .env("WS_BIND_ADDRESS", "127.0.0.1:0")
            .env("WS_TLS_CERT_FILE", &tls.cert_file)
            .env("WS_TLS_KEY_FILE", &tls.key_file);
        let output = output_within(binary, STEP);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("WS_TLS_KEY_FILE") && stderr.contains("not the key"),
            "{command}: {stderr}"
        );
    }
}
