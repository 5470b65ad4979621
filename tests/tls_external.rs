//! The real binary serving `wss://` and `https://` to clients that are not
//! ours: Python `websockets` with an `ssl` context trusting a test CA, and
//! `curl --cacert`. The CA and server certificates are made by `openssl` at
//! run time. Ignored in plain `cargo test` (they need python3 with
//! `websockets`, curl and openssl); `.ci/tls` installs those and runs them.

mod server_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use server_support::{API_KEY, STEP, token, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BINARY: &str = env!("CARGO_BIN_EXE_ws-realtime");
const SECRET_TEXT: &str = "integration-test-secret-0123456789abcdef";

/// The Python with `websockets` (`.ci/tls` sets `TLS_TEST_PYTHON` to its
/// virtualenv's).
fn python() -> String {
    std::env::var("TLS_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs a command to completion, failing the test if it fails.
fn run(command: &mut Command) -> std::process::Output {
    let output = command.output().expect("the tool is installed");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `command` to its end, killing it (and failing) after [`STEP`]: a
/// binary that does not refuse would otherwise serve forever.
fn output_within(mut command: Command) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + STEP;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{command:?} still ran after {STEP:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A CA and server certificates made by the `openssl` command.
struct OpensslPki {
    dir: tempfile::TempDir,
}

impl OpensslPki {
    fn new() -> OpensslPki {
        let pki = OpensslPki {
            dir: tempfile::tempdir().unwrap(),
        };
        run(Command::new("openssl")
            .current_dir(pki.dir.path())
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-keyout", "ca.key", "-out", "ca.pem"])
            .args(["-subj", "/CN=ws-realtime test CA"]));
        pki
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a `localhost` certificate named `name` (`name.pem`,
    /// `name.key`) with an RSA (PKCS#8) or EC (SEC1) key.
    fn issue(&self, name: &str, ec: bool) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        let key = format!("{name}.key");
        if ec {
            run(Command::new("openssl").current_dir(dir).args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &key,
            ]));
        } else {
            run(Command::new("openssl").current_dir(dir).args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-out",
                &key,
            ]));
        }
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let csr = format!("{name}.csr");
        run(Command::new("openssl").current_dir(dir).args([
            "req",
            "-new",
            "-key",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ]));
        let pem = format!("{name}.pem");
        run(Command::new("openssl").current_dir(dir).args([
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            &pem,
        ]));
        (dir.join(pem), dir.join(key))
    }
}

/// The certificate files the server reads, replaced the way a rotation
/// does (copy aside, rename over).
struct Served {
    dir: tempfile::TempDir,
}

impl Served {
    fn new() -> Served {
        Served {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    fn install(&self, (cert, key): &(PathBuf, PathBuf)) {
        self.put(&self.key(), &std::fs::read(key).unwrap());
        self.put(&self.cert(), &std::fs::read(cert).unwrap());
    }

    fn put(&self, target: &Path, bytes: &[u8]) {
        let aside = target.with_extension("new");
        std::fs::write(&aside, bytes).unwrap();
        std::fs::rename(&aside, target).unwrap();
    }
}

/// The server binary, killed when dropped.
struct Server {
    child: Child,
    address: SocketAddr,
    /// Its JSON log lines.
    log: Receiver<serde_json::Value>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(served: &Served) -> Command {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars() {
        if name.starts_with("WS_") || name == "CREDENTIALS_DIRECTORY" {
            command.env_remove(name);
        }
    }
    command
        .env("RUST_LOG", "info")
        .env("WS_AUTH_SECRET", SECRET_TEXT)
        .env("WS_SOURCES", "http")
        .env("WS_API_KEY", API_KEY)
        .env("WS_BIND_ADDRESS", "127.0.0.1:0")
        .env("WS_LOG_FORMAT", "json")
        .env("WS_TLS_CERT_FILE", served.cert())
        .env("WS_TLS_KEY_FILE", served.key());
    command
}

impl Server {
    fn start(served: &Served) -> Server {
        let mut child = binary(served)
            .arg("serve")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let json =
                    serde_json::from_str(&line).unwrap_or(serde_json::json!({ "raw": line }));
                if tx.send(json).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            address: "127.0.0.1:0".parse().unwrap(),
            log,
        };
        let listening = server.wait_log(|line| line["message"] == "listening");
        assert_eq!(listening["tls"], true, "{listening}");
        server.address = listening["address"].as_str().unwrap().parse().unwrap();
        server
    }

    /// The next log line matching `wanted`, within [`STEP`].
    fn wait_log(&self, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + STEP;
        loop {
            let line = self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the expected log line");
            if wanted(&line) {
                return line;
            }
        }
    }

    fn sighup(&self) {
        // SAFETY: kill() only sends a signal to our own child process.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(sent, 0);
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.address.port())
    }
}

/// curl with the test CA and `localhost` resolved to the server.
fn curl(pki: &OpensslPki, server: &Server, extra: &[&str], path: &str) -> (u16, String) {
    let output = run(Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .arg("--cacert")
        .arg(pki.ca())
        .args(["--write-out", "\n%{http_code}"])
        .args(extra)
        .arg(server.url(path)));
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// The Python `websockets` client, subscribed to `lines` over wss://,
/// printing one line per frame it receives.
struct PythonClient {
    child: Child,
    frames: Receiver<serde_json::Value>,
}

impl Drop for PythonClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PYTHON_CLIENT: &str = r#"
import asyncio, ssl, sys
import websockets

async def main(url, cafile):
    context = ssl.create_default_context(cafile=cafile)
    async with websockets.connect(url, ssl=context) as ws:
        async for frame in ws:
            print(frame, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

impl PythonClient {
    fn connect(pki: &OpensslPki, server: &Server) -> PythonClient {
        let url = format!(
            "wss://localhost:{}/ws?token={}&channels=lines",
            server.address.port(),
            token("alice", &[])
        );
        let mut child = Command::new(python())
            .args(["-c", PYTHON_CLIENT, &url])
            .arg(pki.ca())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, frames) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        let client = PythonClient { child, frames };
        let connected = client.next();
        assert_eq!(connected["type"], "connected", "{connected}");
        client
    }

    fn next(&self) -> serde_json::Value {
        self.frames
            .recv_timeout(STEP)
            .expect("the Python client printed a frame")
    }

    /// Publishes over https (curl) until this client prints the message.
    fn receives(&self, pki: &OpensslPki, server: &Server, n: u32) {
        let body = format!(r#"{{"channel":"lines","data":{{"n":{n}}}}}"#);
        let header = format!("x-api-key: {API_KEY}");
        let (status, answer) = curl(
            pki,
            server,
            &[
                "-X",
                "POST",
                "-H",
                &header,
                "-H",
                "content-type: application/json",
                "--data",
                &body,
            ],
            "/api/publish",
        );
        assert_eq!(status, 200, "{answer}");
        loop {
            let frame = self.next();
            if frame["type"] == "message" {
                assert_eq!(frame["data"]["n"], n, "{frame}");
                return;
            }
        }
    }
}

/// The leaf certificate a new TLS connection is shown (a rustls client
/// trusting the openssl CA).
async fn presented(pki: &OpensslPki, address: SocketAddr) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = within(TcpStream::connect(address)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = within(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

async fn until_presented(pki: &OpensslPki, address: SocketAddr, cert: &Path) {
    let expected = CertificateDer::from_pem_file(cert).unwrap();
    // The file watch checks every 5 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    while presented(pki, address).await != expected {
        assert!(Instant::now() < deadline, "the new certificate is served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs python3 with websockets, curl and openssl: run by .ci/tls"]
async fn python_websockets_and_curl_over_tls_with_rotation_and_bad_clients() {
    let pki = OpensslPki::new();
    let first = pki.issue("first", false);
    let served = Served::new();
    served.install(&first);
    let server = Server::start(&served);

    // https for every endpoint, TLS 1.2 and 1.3.
    assert_eq!(
        curl(&pki, &server, &[], "/health"),
        (200, r#"{"status":"alive"}"#.to_owned())
    );
    assert_eq!(curl(&pki, &server, &[], "/ready").0, 200);
    assert!(
        curl(&pki, &server, &[], "/metrics")
            .1
            .contains("websocket_connections_total")
    );
    assert_eq!(
        curl(&pki, &server, &["--tlsv1.2", "--tls-max", "1.2"], "/health").0,
        200
    );
    assert_eq!(curl(&pki, &server, &["--tlsv1.3"], "/health").0, 200);

    // wss with Python websockets, publishing over https.
    let client = PythonClient::connect(&pki, &server);
    client.receives(&pki, &server, 1);

    // Rotation by SIGHUP (to an EC key), the client staying connected.
    let second = pki.issue("second", true);
    served.install(&second);
    server.sighup();
    server.wait_log(|line| line["message"] == "TLS certificate reloaded");
    until_presented(&pki, server.address, &second.0).await;
    client.receives(&pki, &server, 2);

    // Rotation by the files changing alone.
    let third = pki.issue("third", false);
    served.install(&third);
    until_presented(&pki, server.address, &third.0).await;
    client.receives(&pki, &server, 3);

    // A bad certificate at reload: logged, the old one stays.
    served.put(&served.cert(), b"-----BEGIN CERTIFICATE-----\nnonsense\n");
    server.sighup();
    let failed = server.wait_log(|line| {
        line["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("TLS certificate reload failed"))
    });
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("WS_TLS_CERT_FILE"),
        "{failed}"
    );
    assert_eq!(
        presented(&pki, server.address).await,
        CertificateDer::from_pem_file(&third.0).unwrap()
    );
    assert_eq!(curl(&pki, &server, &[], "/health").0, 200);

    // Plain HTTP to the TLS port: a 400 saying why, then closed.
    let plain = run(Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "10",
            "--write-out",
            "\n%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{}/health", server.address.port())));
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert!(plain.ends_with("\n400"), "{plain}");
    assert!(plain.contains("tls_required"), "{plain}");

    // Garbage: closed, without taking the server or the client down.
    for garbage in [
        &b"\x16\x03\x01\x00\x05hello"[..],
        b"\x00\x01\x02 not tls",
        &[0x16; 2048],
    ] {
        let mut tcp = within(TcpStream::connect(server.address)).await.unwrap();
        let _ = tcp.write_all(garbage).await;
        let mut rest = Vec::new();
        let _ = within(tcp.read_to_end(&mut rest)).await;
    }
    client.receives(&pki, &server, 4);
    assert_eq!(curl(&pki, &server, &[], "/health").0, 200);
}

#[test]
#[ignore = "needs openssl: run by .ci/tls"]
fn a_bad_certificate_stops_startup_naming_the_variable() {
    let pki = OpensslPki::new();
    let (cert, _) = pki.issue("good", false);
    let (_, other_key) = pki.issue("other", true);
    let served = Served::new();
    served.install(&(cert, other_key));
    let mut serve = binary(&served);
    serve.arg("serve");
    let output = output_within(serve);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WS_TLS_KEY_FILE"), "{stderr}");

    served.put(&served.cert(), b"not a certificate");
    let mut check = binary(&served);
    check.arg("check-config");
    let output = output_within(check);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WS_TLS_CERT_FILE"), "{stderr}");
}
