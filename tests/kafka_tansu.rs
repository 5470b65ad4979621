//! Kafka end to end against a separate broker process: tansu (a
//! Kafka-compatible broker) on a free 127.0.0.1 port with in-memory storage.
//! Produce with rdkafka, receive over WebSocket, in both modes. Run by
//! `.ci/kafka-tansu`, which installs the binary; `TANSU_BIN` overrides where
//! it is found. tansu's high watermark is wrong after batched produces, so
//! nothing here asserts watermarks, lag or tail offsets.

mod kafka_support;
mod server_support;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kafka_support::{
    SECRET, WAIT, apply_pos, committed_offset, connect, connect_bare, next_message, post_json,
    read_is, same_position, start_publishing_server, start_server, subscribe,
};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::time::{Instant, sleep};

/// A tansu broker process, killed when dropped.
struct Tansu {
    child: Child,
    address: SocketAddr,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_bin() -> String {
    std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".to_owned())
}

impl Tansu {
    /// Freezes the broker (SIGSTOP): connections stay open, nothing is
    /// answered, and its in-memory log survives for [`Tansu::resume`].
    fn pause(&self) {
        signal(self.child.id(), libc::SIGSTOP);
    }

    /// Lets a paused broker run again (SIGCONT).
    fn resume(&self) {
        signal(self.child.id(), libc::SIGCONT);
    }

    /// Starts a broker on a free port and waits until it accepts connections.
    async fn start() -> Tansu {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let url = format!("tcp://{address}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tansu binary runs (install it with .ci/kafka-tansu)");
        let tansu = Tansu { child, address };
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(address).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu never listened on {address}"
            );
            sleep(Duration::from_millis(50)).await;
        }
        tansu
    }

    fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                name,
                "--broker",
                &format!("tcp://{}", self.address),
                "--partitions",
                &partitions.to_string(),
            ])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create runs");
        assert!(
            status.success(),
            "tansu topic create {name} failed: {status}"
        );
    }

    fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("message.timeout.ms", "20000")
            .create()
            .expect("a producer")
    }
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &str) -> (i32, i64) {
    let record = FutureRecord::to(topic).key(key).payload(payload);
    let delivery = producer
        .send(record, Duration::from_secs(20))
        .await
        .map_err(|(e, _)| e)
        .expect("tansu acknowledges the message");
    (delivery.partition, delivery.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a tansu broker binary: .ci/run installs it"]
async fn tansu_broadcast_mode_delivers_every_message_to_two_servers() {
    let tansu = Tansu::start().await;
    tansu.create_topic("lines", 3);
    let settings = [("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")];
    let first = start_server(&tansu.bootstrap(), &settings).await;
    let second = start_server(&tansu.bootstrap(), &settings).await;
    let mut first_client = connect(first.address, "channels=lines").await;
    let mut second_client = connect(second.address, "channels=lines").await;
    let producer = tansu.producer();
    let mut produced = BTreeSet::new();
    for i in 0..12 {
        let (p, o) = produce(
            &producer,
            "lines",
            &format!("k{i}"),
            &format!("{{\"i\":{i}}}"),
        )
        .await;
        produced.insert(format!("lines:{p}:{o}"));
    }
    for client in [&mut first_client, &mut second_client] {
        let mut seen = BTreeSet::new();
        for _ in 0..produced.len() {
            let frame = next_message(client).await;
            assert_eq!(frame["channel"], "lines");
            seen.insert(frame["pos"].as_str().expect("pos is a string").to_owned());
        }
        assert_eq!(seen, produced, "each server delivers the whole stream");
    }
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a tansu broker binary: .ci/run installs it"]
async fn tansu_group_mode_delivers_and_resumes_after_the_committed_offset() {
    let tansu = Tansu::start().await;
    tansu.create_topic("orders", 1);
    let settings = [
        ("WS_KAFKA_TOPICS", "orders"),
        ("WS_KAFKA_MODE", "group"),
        ("WS_KAFKA_GROUP_ID", "tansu-e2e"),
        ("WS_KAFKA_START", "earliest"),
    ];
    let producer = tansu.producer();
    let server = start_server(&tansu.bootstrap(), &settings).await;
    let mut client = connect(server.address, "channels=orders").await;
    let (p, o) = produce(&producer, "orders", "a", r#"{"n":0}"#).await;
    let frame = next_message(&mut client).await;
    assert_eq!(frame["pos"], format!("orders:{p}:{o}"));
    assert_eq!(frame["data"], serde_json::json!({"n":0}));
    server.shutdown().await.unwrap();
    assert_eq!(
        committed_offset(&tansu.bootstrap(), "tansu-e2e", "orders"),
        Some(o + 1),
        "the delivered message is committed by shutdown"
    );

    let server = start_server(&tansu.bootstrap(), &settings).await;
    let mut client = connect(server.address, "channels=orders").await;
    let (p, o) = produce(&producer, "orders", "a", r#"{"n":1}"#).await;
    let frame = next_message(&mut client).await;
    assert_eq!(
        frame["pos"],
        format!("orders:{p}:{o}"),
        "resumes after the committed offset"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a tansu broker binary: .ci/run installs it"]
async fn tansu_a_client_recovers_on_the_other_replica_with_nothing_missing() {
    let tansu = Tansu::start().await;
    tansu.create_topic("quotes", 1);
    let settings = [
        ("WS_KAFKA_TOPICS", "quotes"),
        ("WS_KAFKA_START", "earliest"),
    ];
    let a = start_server(&tansu.bootstrap(), &settings).await;
    let b = start_server(&tansu.bootstrap(), &settings).await;
    let mut watcher = connect(b.address, "channels=quotes").await;
    let mut client = connect_bare(a.address).await;
    let ack = subscribe(
        &mut client,
        serde_json::json!({"type":"subscribe","channels":["quotes"],"id":1}),
    )
    .await;
    let mut cursor = ack["positions"]["quotes"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let producer = tansu.producer();
    for i in 0..3 {
        produce(&producer, "quotes", "k", &format!(r#"{{"i":{i}}}"#)).await;
    }
    for _ in 0..3 {
        let m = next_message(&mut client).await;
        apply_pos(&mut cursor, m["pos"].as_str().expect("pos"));
    }
    drop(client);
    for i in 3..6 {
        produce(&producer, "quotes", "k", &format!(r#"{{"i":{i}}}"#)).await;
    }
    assert_eq!(read_is(&mut watcher, 6).await, [0, 1, 2, 3, 4, 5]);
    let mut back = connect_bare(b.address).await;
    let ack = subscribe(
        &mut back,
        serde_json::json!({"type":"subscribe","channels":["quotes"],"since":{"quotes":cursor},"id":2}),
    )
    .await;
    assert_eq!(ack["recovered"]["quotes"], true, "{ack}");
    assert_eq!(read_is(&mut back, 3).await, [3, 4, 5]);
    produce(&producer, "quotes", "k", r#"{"i":6}"#).await;
    assert_eq!(read_is(&mut back, 1).await, [6], "then live, no duplicate");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits");
    // SAFETY: sends a signal to our own child process; no memory is touched.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "signal {signal} to {pid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a tansu broker binary: .ci/run installs it"]
async fn tansu_publish_via_kafka_survives_a_broker_outage_and_loses_nothing_answered_200() {
    let tansu = Tansu::start().await;
    tansu.create_topic("lines", 1);
    // The servers create the publish topic themselves.
    let pairs = [
        ("WS_KAFKA_TOPICS", "lines"),
        ("WS_KAFKA_START", "earliest"),
        ("WS_PUBLISH_TIMEOUT", "2s"),
    ];
    let a = start_publishing_server(&tansu.bootstrap(), &pairs).await;
    let b = start_publishing_server(&tansu.bootstrap(), &pairs).await;
    let mut on_b = connect(b.address, "channels=alerts").await;
    let publish = |n: u32| format!(r#"{{"channel":"alerts","data":{{"n":{n}}}}}"#);

    let mut answered_200 = Vec::new();
    for n in 0..10 {
        let (status, answer) = post_json(a.address, "/api/publish", &publish(n)).await;
        assert_eq!(status, 200, "{answer}");
        answered_200.push((n, answer["pos"].clone()));
    }

    tansu.pause();
    for n in 10..13 {
        let started = Instant::now();
        let (status, answer) = post_json(a.address, "/api/publish", &publish(n)).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"], "publish_unavailable");
        assert!(took < Duration::from_secs(4), "503 after {took:?}");
    }
    tansu.resume();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 13;
    while answered_200.len() < 20 {
        let (status, answer) = post_json(a.address, "/api/publish", &publish(n)).await;
        if status == 200 {
            answered_200.push((n, answer["pos"].clone()));
        } else {
            assert_eq!(status, 503, "{answer}");
            assert!(
                Instant::now() < deadline,
                "publishes never flowed again: {answer}"
            );
            sleep(Duration::from_millis(200)).await;
        }
        n += 1;
    }

    // The client of B stayed connected and got every message answered 200,
    // in order; a 503'd one may show up too (it was not known to be stored).
    let mut missing: Vec<(u32, serde_json::Value)> = answered_200;
    while !missing.is_empty() {
        let frame = next_message(&mut on_b).await;
        let got = frame["data"]["n"].as_u64().unwrap() as u32;
        if got == missing[0].0 {
            assert!(same_position(&frame["pos"], &missing[0].1));
            missing.remove(0);
        } else {
            assert!(
                (10..13).contains(&got) || got > missing[0].0,
                "{got} arrived out of order, before {}",
                missing[0].0
            );
        }
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The `ws-realtime` binary in group mode as a child process, so the test
/// can SIGKILL it like a crashed replica.
struct Replica {
    child: Child,
    address: SocketAddr,
}

impl Replica {
    async fn start(tansu: &Tansu, port: u16) -> Replica {
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        // WS_REALTIME_BIN: run a given build (a shared target directory may
        // hold another checkout's binary).
        let binary = std::env::var("WS_REALTIME_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ws-realtime").to_owned());
        let child = Command::new(binary)
            .env_clear()
            .env("WS_BIND_ADDRESS", address.to_string())
            .env(
                "WS_AUTH_SECRET",
                String::from_utf8(SECRET.to_vec()).unwrap(),
            )
            .env("WS_SOURCES", "kafka")
            .env("WS_KAFKA_BROKERS", tansu.bootstrap())
            .env("WS_KAFKA_TOPICS", "orders")
            .env("WS_KAFKA_MODE", "group")
            .env("WS_KAFKA_GROUP_ID", "tansu-static")
            .env("WS_KAFKA_START", "earliest")
            .env("WS_SERVER_ID", "replica-1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the ws-realtime binary runs");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(address).await.is_err() {
            assert!(Instant::now() < deadline, "the replica never listened");
            sleep(Duration::from_millis(50)).await;
        }
        Replica { child, address }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a tansu broker binary: .ci/run installs it"]
async fn tansu_group_replica_killed_and_restarted_resumes_within_15_s_losing_nothing() {
    let tansu = Tansu::start().await;
    tansu.create_topic("orders", 3);
    let producer = tansu.producer();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();

    let replica = Replica::start(&tansu, port).await;
    let mut client = connect(replica.address, "channels=orders").await;
    produce(&producer, "orders", "k0", r#"{"n":0}"#).await;
    assert_eq!(next_message(&mut client).await["data"]["n"], 0);

    // SIGKILL: no LeaveGroup, no final commit.
    replica.kill();
    drop(client);
    for n in 1..=5 {
        produce(
            &producer,
            "orders",
            &format!("k{n}"),
            &format!(r#"{{"n":{n}}}"#),
        )
        .await;
    }
    let restarted_at = Instant::now();
    let replica = Replica::start(&tansu, port).await;
    let mut client = connect(replica.address, "channels=orders").await;
    // Everything produced while it was dead arrives (at least once: what
    // was delivered but not yet committed before the kill comes again).
    let mut seen = BTreeSet::new();
    while seen.len() < 5 {
        let frame = next_message(&mut client).await;
        let n = frame["data"]["n"].as_u64().unwrap();
        if n > 0 {
            seen.insert(n);
        }
    }
    let resumed = restarted_at.elapsed();
    assert!(
        resumed <= Duration::from_secs(15),
        "the restarted replica resumed after {resumed:?}"
    );
    drop(replica);
}
