//! Shared helpers of the `redis_*` integration tests: a `redis-server` child
//! on a free loopback port (no persistence, killed on drop), publishing with
//! `redis-cli` and with the client crate, and a Redis source run against a
//! test sink with bounded waits on its readiness and messages.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use ws_realtime::config::Settings;
use ws_realtime::core::Publish;
use ws_realtime::metrics::{Metrics, ReasonLabel};
use ws_realtime::shutdown::{self, ShutdownTrigger};
use ws_realtime::source::redis::{RedisConfig, RedisSource};
use ws_realtime::source::{Ingest, PublishSink, Readiness, Source, SourceContext};

/// How long any one wait in these tests may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// Poll step of the bounded waits.
pub const STEP: Duration = Duration::from_millis(25);

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    /// Working directory of the server, removed on drop.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server with `extra` arguments on a free port. Tests run in
    /// parallel, and a port found free can be taken by another test's
    /// server before this one binds it: then this server exits, and it is
    /// started again on another port.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            if let Some(server) = RedisServer::try_start_on(free_port(), extra) {
                return server;
            }
        }
        panic!("redis-server found no free port in 5 tries");
    }

    /// A server on `port`; `extra` arguments come last and so win (a TLS test
    /// passes `--port 0 --tls-port PORT`, making `port` the TLS port).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        RedisServer::try_start_on(port, extra)
            .unwrap_or_else(|| panic!("redis-server could not listen on port {port}"))
    }

    /// `None` when the server exited before answering (its port was taken).
    fn try_start_on(port: u16, extra: &[&str]) -> Option<RedisServer> {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        let mut server = RedisServer {
            port,
            child,
            _dir: dir,
        };
        server.wait_until_accepting(extra).then_some(server)
    }

    /// Waits until this server (not another test's on the same port: the
    /// answer names the process) answers; false when it exited instead.
    fn wait_until_accepting(&mut self, extra: &[&str]) -> bool {
        let ours = format!("process_id:{}", self.child.id());
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .map(|i| extra[i + 1]);
        // A TLS-only server (`--port 0 --tls-port P`) is pinged over TLS.
        let ca = extra
            .iter()
            .position(|a| *a == "--tls-ca-cert-file")
            .map(|i| extra[i + 1]);
        for _ in 0..(PATIENCE.as_millis() / STEP.as_millis()) {
            let mut cli = Command::new("redis-cli");
            cli.args(["-p", &self.port.to_string()]);
            if let Some(password) = password {
                cli.args(["--no-auth-warning", "-a", password]);
            }
            if let Some(ca) = ca {
                cli.args(["--tls", "--cacert", ca]);
            }
            let out = cli
                .args(["INFO", "server"])
                .output()
                .expect("redis-cli must be installed");
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line.trim() == ours)
            {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(STEP);
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    /// `PUBSUB NUMPAT`: how many pattern subscriptions the server holds.
    pub fn pattern_subscriptions(&self) -> i64 {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "PUBSUB", "NUMPAT"])
            .output()
            .expect("redis-cli must be installed");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(-1)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server abruptly, as a crash or a restart would.
    pub fn kill(mut self) -> u16 {
        self.stop();
        self.port
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `redis-cli -p PORT PUBLISH channel payload`, as an operator would type it;
/// returns how many subscribers Redis delivered it to.
pub fn cli_publish(port: u16, channel: &str, payload: &str) -> i64 {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "PUBLISH", channel, payload])
        .output()
        .expect("redis-cli must be installed");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("PUBLISH answered {:?}", out))
}

/// PUBLISH through the client crate (binary-safe); returns the receiver count.
pub async fn publish(url: &str, channel: &str, payload: &[u8]) -> i64 {
    let client = redis::Client::open(url).expect("valid url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(&mut con)
        .await
        .expect("PUBLISH")
}

/// A running source and what the test observes of it.
pub struct Running {
    pub messages: mpsc::Receiver<Ingest>,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub trigger: ShutdownTrigger,
    pub task: JoinHandle<()>,
}

pub fn start_source(pairs: &[(&str, &str)]) -> Running {
    let mut config = RedisConfig::from_settings(&Settings::from_pairs(pairs.iter().copied()))
        .expect("valid redis settings");
    // Quick retries keep the restart test short; the policy itself is unit-tested.
    config.reconnect_initial = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    let source: Box<dyn Source> = Box::new(RedisSource::new(config));
    assert_eq!(source.name(), "redis");
    let (sink, messages) = PublishSink::channel(64);
    let readiness = Readiness::default();
    let metrics = Arc::new(Metrics::new());
    let (trigger, shutdown) = shutdown::channel();
    let ctx = SourceContext {
        sink,
        health: readiness.register(source.name()),
        shutdown,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(source.run(ctx));
    Running {
        messages,
        readiness,
        metrics,
        trigger,
        task,
    }
}

impl Running {
    /// Waits (bounded) until `/ready` would say what `accept` accepts.
    pub async fn wait_for_readiness(
        &self,
        what: &str,
        accept: impl Fn(&Result<(), Vec<String>>) -> bool,
    ) {
        for _ in 0..(PATIENCE.as_millis() / STEP.as_millis()) {
            if accept(&self.readiness.status()) {
                return;
            }
            tokio::time::sleep(STEP).await;
        }
        panic!("never {what}; readiness is {:?}", self.readiness.status());
    }

    pub async fn wait_until_ready(&self) {
        self.wait_for_readiness("ready", |s| s.is_ok()).await;
    }

    pub async fn next(&mut self) -> Publish {
        tokio::time::timeout(PATIENCE, self.messages.recv())
            .await
            .expect("a message within the patience window")
            .expect("the source is still running")
            .publish
    }

    pub fn gaps(&self) -> u64 {
        self.metrics
            .source_gaps
            .get_or_create(&ReasonLabel {
                reason: "redis".to_owned(),
            })
            .get()
    }

    /// Fires shutdown and checks the source returns.
    pub async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the source stops when shutdown fires")
            .expect("the source task does not panic");
    }
}
