//! permessage-deflate with real clients: Python `websockets` and Node's
//! `ws` (which browsers match: both offer `permessage-deflate;
//! client_max_window_bits` by default) receive the same fan-out, compressed
//! and uncompressed messages alike, and their compressed requests are
//! answered. Ignored in plain `cargo test` (needs python3 with websockets
//! and node with ws); `.ci/deflate` installs them and runs it.

mod server_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use server_support::*;

/// A client process and the lines it prints, read on a thread so every
/// wait is bounded.
struct ClientProcess {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ClientProcess {
    fn spawn(name: &'static str, mut command: Command) -> ClientProcess {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ClientProcess { name, child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{} printed a line in time", self.name))
    }

    /// Lines until one starts with `prefix`; returns the rest of it.
    fn until(&self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// The `data` of the next `message` frames.
    fn messages(&self, count: usize) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while out.len() < count {
            let frame: serde_json::Value = serde_json::from_str(&self.until("FRAME")).unwrap();
            if frame["type"] == "message" {
                out.push(frame["data"].clone());
            }
        }
        out
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn order_book(levels: usize, seq: usize) -> serde_json::Value {
    let side: Vec<_> = (0..levels)
        .map(|i| serde_json::json!([100.0 + (i + seq) as f64 * 0.5, 10 + i]))
        .collect();
    serde_json::json!({"symbol": "ETH-USD", "seq": seq, "bids": side, "asks": side})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with websockets and node with ws: run by .ci/deflate"]
async fn python_websockets_and_node_ws_receive_compressed_and_plain_messages() {
    let (server, sink) = start_with_sink(config()).await;
    let url = |sub: &str| {
        format!(
            "ws://{}/ws?token={}&channels=book",
            server.address,
            token(sub, &[])
        )
    };
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/deflate_clients");
    let python = std::env::var("DEFLATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut py = Command::new(python);
    py.arg(format!("{here}/python_client.py"))
        .arg(url("py"))
        .arg("4");
    let mut node = Command::new("node");
    node.arg(format!("{here}/node_client.js"))
        .arg(url("node"))
        .arg("4");
    let clients = [
        ClientProcess::spawn("python websockets", py),
        ClientProcess::spawn("node ws", node),
    ];
    for client in &clients {
        assert_eq!(
            client.until("EXT"),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "{}",
            client.name
        );
        // Their compressed subscribe request was inflated and answered.
        client.until("READY");
    }
    let metrics = server.observers.metrics.encode();
    assert!(
        metrics.contains("websocket_connections_deflate 2"),
        "{metrics}"
    );

    // Big order books go compressed, the small tick under
    // WS_COMPRESSION_MIN_BYTES goes plain, from the same fan-out.
    let published = [
        order_book(30, 1),
        serde_json::json!({"tick": 2}),
        order_book(60, 3),
        order_book(30, 4),
    ];
    for payload in &published {
        sink.publish(ws_realtime::core::Publish {
            channel: "book".to_owned(),
            pos: None,
            payload: bytes::Bytes::from(payload.to_string()),
            key: None,
        })
        .await
        .unwrap();
    }
    for client in &clients {
        assert_eq!(client.messages(4), published, "{}", client.name);
    }
    let metrics = server.observers.metrics.encode();
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let sent = counter("websocket_bytes_sent_total");
    let uncompressed = counter("websocket_bytes_uncompressed_total");
    assert!(
        uncompressed > sent * 2,
        "sent {sent}, uncompressed {uncompressed}"
    );
    drop(clients);
    server.shutdown().await.unwrap();
}
