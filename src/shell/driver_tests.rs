//! Unit tests of `driver.rs`, in a file of their own so the
//! module holds only its logic.
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::core::{CoreConfig, Identity, Publish};

/// A backlog that never lets the driver's input empty (a Kafka consumer
/// catching up) must not hold back the core's deadlines: a silent
/// connection is closed for its silence while the backlog is still
/// being taken. The select alone prefers input and would never get there.
#[tokio::test(start_paused = true)]
async fn deadlines_are_served_while_the_input_never_empties() {
    let config = CoreConfig {
        heartbeat_interval: Duration::from_secs(1),
        connection_timeout: Duration::from_secs(2),
        ..CoreConfig::default()
    };
    let core = Core::new(config, now(), 0);
    let metrics = Arc::new(Metrics::new());
    let (drained, _) = watch::channel(false);
    let driver = Driver::new(core, metrics.clone(), drained, 256);
    let (commands, command_rx) = mpsc::channel(16);
    const BACKLOG: usize = 50_000;
    let (backlog, ingest_rx) = mpsc::channel(BACKLOG);
    for _ in 0..BACKLOG {
        let ingest = Ingest {
            publish: Publish {
                channel: "nobody-listens".to_owned(),
                pos: None,
                payload: Bytes::from_static(b"{}"),
                key: None,
            },
            taken: None,
            received_at: now(),
            source: "test",
        };
        backlog.try_send(ingest).expect("room for the backlog");
    }
    let (reply, answer) = oneshot::channel();
    let open = Open {
        identity: Identity::unrestricted("silent"),
        remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
        channels: Vec::new(),
        deflate: None,
    };
    let open = Command::Open {
        open: Box::new(open),
        reply,
    };
    commands.send(open).await.unwrap();
    let task = tokio::spawn(driver.run(command_rx, ingest_rx));
    assert!(answer.await.unwrap().is_ok(), "the connection is admitted");

    // The driver yields between its input rounds; each time, a fifth of
    // a second passes. Ten seconds in, the backlog is far from taken.
    for _ in 0..50 {
        tokio::time::advance(Duration::from_millis(200)).await;
        tokio::task::yield_now().await;
    }
    assert!(backlog.capacity() < BACKLOG / 2, "the backlog still waits");
    let encoded = metrics.encode();
    assert!(
        encoded.contains("websocket_heartbeat_failures_total 1"),
        "the silent connection was not closed: {encoded}"
    );
    task.abort();
}

/// A message that arrives while a drain writes is taken (its source
/// told at once, so an HTTP publisher is answered) and held for the
/// next turn, which hands it to the core ahead of anything newer.
#[tokio::test]
async fn a_message_arriving_during_a_drain_is_answered_and_held_for_the_next_turn() {
    let core = Core::new(CoreConfig::default(), now(), 0);
    let (drained, _) = watch::channel(false);
    let mut driver = Driver::new(core, Arc::new(Metrics::new()), drained, 256);
    // More subscribers than one look's worth of writes (their sockets
    // are never attached, so the transmits are parked: still counted).
    let mut conns = Vec::new();
    for user in 0..WRITES_PER_LOOK + 10 {
        let (reply, answer) = oneshot::channel();
        let open = Open {
            identity: Identity::unrestricted(&format!("user{user}")),
            remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
            channels: vec!["lines".to_owned()],
            deflate: None,
        };
        driver.on_command(Command::Open {
            open: Box::new(open),
            reply,
        });
        conns.push(answer.await.unwrap().expect("admitted"));
    }
    let (ingest_tx, mut ingest) = mpsc::channel(4);
    driver.drain(&mut ingest).await;
    // The acks were parked; as if each socket had written them.
    for &conn in &conns {
        let slot = driver.slots.get_mut(&conn).expect("open");
        assert!(slot.parked.take().is_some());
        driver.core.handle_write_complete(now(), conn);
    }
    let message = |taken| Ingest {
        publish: Publish {
            channel: "lines".to_owned(),
            pos: None,
            payload: Bytes::from_static(b"{}"),
            key: None,
        },
        taken: Some(taken),
        received_at: now(),
        source: "test",
    };
    let (first_taken, mut first_answer) = oneshot::channel();
    driver.on_ingest(message(first_taken));
    assert!(
        first_answer.try_recv().is_ok(),
        "the turn's message is taken"
    );
    // The second comes after the turn took its input: only a look
    // during the drain can see it.
    let (second_taken, mut second_answer) = oneshot::channel();
    ingest_tx.try_send(message(second_taken)).unwrap();
    driver.drain(&mut ingest).await;
    assert!(
        second_answer.try_recv().is_ok(),
        "the publisher was answered during the drain"
    );
    assert_eq!(driver.held.len(), 1, "held for the next turn");
    assert!(ingest.try_recv().is_err(), "taken off the queue");
    assert_eq!(driver.publish_held(), 1);
    assert!(driver.held.is_empty());
}

/// A turn takes half a client's queue, so one turn never overflows a healthy
/// queue, but never more than [`MAX_MESSAGES_PER_TURN`], past which a
/// larger turn cost more per delivery (BENCHMARKS.md, session 9).
#[test]
fn a_turn_takes_half_a_queue_up_to_the_measured_cap() {
    assert_eq!(messages_per_turn(1), 1);
    assert_eq!(messages_per_turn(64), 32);
    assert_eq!(
        messages_per_turn(256),
        64,
        "the default queue of 256 frames"
    );
    assert_eq!(messages_per_turn(100_000), MAX_MESSAGES_PER_TURN);
}
