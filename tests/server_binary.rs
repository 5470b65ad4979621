//! The real binary: SIGTERM → clients get 1001 and the process exits 0;
//! configuration errors name the variable; `check-config`; `token`.

mod server_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use server_support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_ws-realtime");
const SECRET_TEXT: &str = "integration-test-secret-0123456789abcdef";

/// The binary with a clean `WS_*` environment.
fn binary() -> Command {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars() {
        if name.starts_with("WS_") || name == "CREDENTIALS_DIRECTORY" {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

/// Kills the child if a test fails half-way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut child = KillOnDrop(
        binary()
            .arg("serve")
            .env("WS_AUTH_SECRET", SECRET_TEXT)
            .env("WS_SOURCES", "http")
            .env("WS_API_KEY", API_KEY)
            .env("WS_BIND_ADDRESS", "127.0.0.1:0")
            .env("WS_LOG_FORMAT", "json")
            .env("WS_SHUTDOWN_TIMEOUT_SECONDS", "5")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the binary starts"),
    );
    // Every log line is JSON; the "listening" line names the bound address.
    let stderr = child.0.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + STEP;
    let address = loop {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server logs its address");
        let json: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is JSON ({e}): {line}"));
        if json["message"] == "listening" {
            break json["address"].as_str().unwrap().parse().unwrap();
        }
    };

    let mut client = connect(address, "alice", "").await;
    // SAFETY: kill() only sends a signal to our own child process.
    let sent = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    assert_eq!(close_code(&mut client).await, Some(1001));

    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server exits after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));

    // Every remaining log line is JSON too, and the connection lines carry
    // the connection id and user.
    // The process has exited, so the reader thread reaches EOF and hangs up.
    let mut rest = Vec::new();
    for _ in 0..100_000 {
        match lines_rx.recv_timeout(STEP) {
            Ok(line) => rest.push(
                serde_json::from_str::<serde_json::Value>(&line)
                    .unwrap_or_else(|e| panic!("log line is JSON ({e}): {line}")),
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("stderr did not end"),
        }
    }
    let opened = rest
        .iter()
        .find(|l| l["message"] == "connection opened")
        .expect("a connection opened line");
    assert_eq!(opened["user"], "alice");
    assert!(opened["connection_id"].is_string(), "{opened}");
    assert!(
        rest.iter()
            .any(|l| l["message"] == "connection closed" && l["reason"] == "shutdown")
    );
}

#[test]
fn bad_client_buffer_stops_startup_naming_the_variable() {
    let output = binary()
        .arg("serve")
        .env("WS_AUTH_SECRET", SECRET_TEXT)
        .env("WS_SOURCES", "http")
        .env("WS_API_KEY", API_KEY)
        .env("WS_CLIENT_BUFFER", "lots")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WS_CLIENT_BUFFER"), "{stderr}");
}

#[test]
fn missing_secret_stops_startup_naming_the_variable() {
    let output = binary()
        .env("WS_SOURCES", "http")
        .env("WS_API_KEY", API_KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WS_AUTH_SECRET"), "{stderr}");
}

#[test]
fn check_config_exits_0_when_valid_and_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ws.toml");
    std::fs::write(
        &file,
        "bind_address = \"127.0.0.1:9000\"\nsources = [\"http\"]\n[[channels.rules]]\npattern = \"admin-*\"\nroles = [\"admin\"]\n",
    )
    .unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET_TEXT).unwrap();
    let ok = binary()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("WS_AUTH_SECRET_FILE", &secret)
        .env("WS_API_KEY", API_KEY)
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("127.0.0.1:9000"));

    let bad = binary()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("WS_AUTH_SECRET_FILE", &secret)
        .env("WS_API_KEY", API_KEY)
        .env("WS_HEARTBEAT_INTERVAL", "soon")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("WS_HEARTBEAT_INTERVAL"));
}

#[tokio::test]
async fn token_command_prints_a_token_the_server_accepts() {
    let output = binary()
        .args([
            "token",
            "--secret",
            SECRET_TEXT,
            "--sub",
            "carol",
            "--ttl",
            "1h",
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let server = start(config()).await;
    let mut client = try_connect(server.address, &format!("token={token}"))
        .await
        .unwrap();
    let connected = next_json(&mut client).await;
    assert_eq!(connected["userId"], "carol");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn dev_prints_a_connect_command_that_shows_market_data() {
    let mut child = KillOnDrop(
        binary()
            .arg("dev")
            .env("WS_BIND_ADDRESS", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + STEP;
    let url = loop {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("dev prints a websocat command");
        if let Some(rest) = line.trim().strip_prefix("websocat '") {
            break rest.trim_end_matches('\'').to_owned();
        }
    };
    let (mut client, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    assert_eq!(next_json(&mut client).await["type"], "connected");
    let message = loop {
        let frame = next_json(&mut client).await;
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!(message["channel"], "lines");
    assert!(message["data"]["price"].is_number(), "{message}");
    assert!(message["data"]["timestamp"].is_u64(), "{message}");
}
