//! Several workers (`WS_WORKERS` > 1) over loopback: connections spread
//! over the workers, every message reaches every worker's subscribers once,
//! in order and with the same positions, and the global parts (limits,
//! metrics totals, shutdown) stay global.

mod server_support;

use std::time::Duration;

use bytes::Bytes;
use server_support::*;
use ws_realtime::core::Publish;

/// Waits until `check` holds (bounded by [`STEP`]).
async fn eventually(what: &str, check: impl Fn() -> bool) {
    within(async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(check(), "{what}");
}

fn workers_config(workers: usize) -> ws_realtime::config::ServerConfig {
    let mut config = config();
    config.workers = workers;
    config
}

#[tokio::test]
async fn every_worker_delivers_each_message_once_in_order_with_the_same_positions() {
    let (server, sink) = start_with_sink(workers_config(3)).await;
    let mut clients = Vec::new();
    for i in 0..9 {
        clients.push(connect(server.address, &format!("user{i}"), "&channels=lines").await);
    }
    for client in &mut clients {
        let ack = next_json(client).await;
        assert_eq!(ack["type"], "subscribed", "{ack}");
    }
    let metrics = server.observers.metrics.clone();
    eventually("nine connections in all", || metrics.connections.get() == 9).await;
    // Round-robin over three workers: three each.
    for worker in 0..3 {
        assert_eq!(
            metrics.worker_connections(worker).get(),
            3,
            "worker {worker}"
        );
    }

    const MESSAGES: usize = 40;
    for seq in 0..MESSAGES {
        let publish = Publish {
            channel: "lines".to_owned(),
            pos: None,
            payload: Bytes::from(format!(r#"{{"seq":{seq}}}"#)),
            key: None,
        };
        within(sink.publish(publish)).await.unwrap();
    }
    let mut first_positions: Option<Vec<String>> = None;
    for client in &mut clients {
        let mut positions = Vec::new();
        for seq in 0..MESSAGES {
            let message = next_json(client).await;
            assert_eq!(message["type"], "message", "{message}");
            assert_eq!(message["data"]["seq"], seq, "in order: {message}");
            positions.push(message["pos"].as_str().unwrap().to_owned());
        }
        // Positions are the channel's own sequence 1..=40 on every worker.
        assert!(positions[0].ends_with(":1"), "{positions:?}");
        assert!(positions[MESSAGES - 1].ends_with(":40"), "{positions:?}");
        match &first_positions {
            None => first_positions = Some(positions),
            Some(first) => assert_eq!(first, &positions, "the same positions on every worker"),
        }
    }
    eventually("every delivery counted once", || {
        metrics.messages_sent.get() >= (9 * MESSAGES) as u64
    })
    .await;

    // Every worker keeps the history: a client recovers from the same
    // cursor whichever worker it lands on (three new ones: one each).
    let cursor = first_positions.expect("nine clients")[9].clone();
    for i in 0..3 {
        let mut late = connect(server.address, &format!("late{i}"), "").await;
        let subscribe = serde_json::json!({
            "type": "subscribe", "channels": ["lines"], "since": {"lines": cursor}, "id": 1
        });
        use futures_util::SinkExt;
        within(late.send(tokio_tungstenite::tungstenite::Message::Text(
            subscribe.to_string().into(),
        )))
        .await
        .unwrap();
        let ack = next_json(&mut late).await;
        assert_eq!(ack["recovered"]["lines"], true, "{ack}");
        for seq in 10..MESSAGES {
            let message = next_json(&mut late).await;
            assert_eq!(message["data"]["seq"], seq, "replayed in order: {message}");
        }
    }
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn connection_limits_hold_across_workers() {
    let mut config = workers_config(3);
    config.core.max_connections = 4;
    let server = start(config).await;
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(connect(server.address, &format!("user{i}"), "").await);
    }
    // Each worker alone holds at most two: only the shared count refuses.
    let (status, body) =
        refusal(try_connect(server.address, &format!("token={}", token("user4", &[]))).await);
    assert_eq!(status, 429, "{body}");
    drop(clients.pop());
    let metrics = server.observers.metrics.clone();
    eventually("the closed one is gone", || metrics.connections.get() == 3).await;
    let mut again = None;
    for _ in 0..50 {
        match try_connect(server.address, &format!("token={}", token("user5", &[]))).await {
            Ok(client) => {
                again = Some(client);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(again.is_some(), "a freed slot is taken again");
    within(server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_every_client_of_every_worker_with_1001() {
    let server = start(workers_config(3)).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(connect(server.address, &format!("user{i}"), "").await);
    }
    let address = server.address;
    let readiness = server.observers.readiness.clone();
    let metrics = server.observers.metrics.clone();
    let stopping = tokio::spawn(server.shutdown());
    for client in &mut clients {
        assert_eq!(close_code(client).await, Some(1001));
    }
    within(stopping).await.unwrap().unwrap();
    assert!(readiness.status().is_err(), "not ready once draining");
    assert_eq!(
        metrics.connections.get(),
        0,
        "every worker's count went back"
    );
    assert!(try_connect(address, "").await.is_err(), "nothing listens");
}

/// The production path: one `SO_REUSEPORT` listener and one OS thread per
/// worker (`run_workers`), publishing over HTTP through any worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_on_a_shared_port_serve_and_shut_down() {
    // A free port: run_workers binds it itself, every worker's socket to it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut config = workers_config(2);
    config.bind_address = address;
    let (trigger, shutdown) = ws_realtime::shutdown::channel();
    let observers = ws_realtime::shell::Observers::default();
    let metrics = observers.metrics.clone();
    let server = tokio::spawn(ws_realtime::shell::run_workers(
        config,
        Vec::new(),
        shutdown,
        observers,
    ));
    let mut clients = Vec::new();
    for attempt in 0..200 {
        match try_connect(
            address,
            &format!("token={}&channels=lines", token("t", &[])),
        )
        .await
        {
            Ok(client) => clients.push(client),
            Err(_) if clients.is_empty() && attempt < 100 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("connect: {error}"),
        }
        if clients.len() == 16 {
            break;
        }
    }
    for client in &mut clients {
        assert_eq!(next_json(client).await["type"], "connected");
        assert_eq!(next_json(client).await["type"], "subscribed");
    }
    eventually("sixteen connections in all", || {
        metrics.connections.get() == 16
    })
    .await;
    let (a, b) = (
        metrics.worker_connections(0).get(),
        metrics.worker_connections(1).get(),
    );
    assert_eq!(a + b, 16, "every connection is on a worker");
    // Each publish is answered by whichever worker's thread took the
    // request, and reaches the subscribers of both.
    for seq in 0..5 {
        let body = format!(r#"{{"channel":"lines","data":{{"seq":{seq}}}}}"#);
        let (status, answer) = post_publish(address, Some(API_KEY), &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    for client in &mut clients {
        for seq in 0..5 {
            let message = next_json(client).await;
            assert_eq!(message["data"]["seq"], seq, "{message}");
        }
    }
    trigger.trigger();
    for client in &mut clients {
        assert_eq!(close_code(client).await, Some(1001));
    }
    within(server).await.unwrap().unwrap();
    assert_eq!(metrics.connections.get(), 0);
}
