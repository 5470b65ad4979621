//! Kafka end to end against a separate broker process: tansu (a
//! Kafka-compatible broker) on a free 127.0.0.1 port with in-memory storage.
//! Produce with rdkafka, receive over WebSocket, in both modes. Run by
//! `.ci/kafka-tansu`, which installs the binary; `TANSU_BIN` overrides where
//! it is found. tansu's high watermark is wrong after batched produces, so
//! nothing here asserts watermarks, lag or tail offsets.

mod kafka_support;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kafka_support::{
    WAIT, apply_pos, committed_offset, connect, connect_bare, next_message, read_is, start_server,
    subscribe,
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
