//! Fixed-iteration fan-out driver for `valgrind --tool=callgrind`
//! (`benches/callgrind.sh`): instruction counts are deterministic where
//! wall-clock numbers on a shared machine are not.
//!
//! `callgrind_fanout [PUBLISHES] [PER_TURN] [WORKERS]` opens 1 000 subscribers
//! to one channel, then publishes PUBLISHES messages, draining every output
//! after each PER_TURN of them (default 1) as the shell's driver does after each
//! turn: under load a turn takes many messages, and each socket gets them in
//! one transmit. The script runs it twice with different counts and divides
//! the difference by the extra deliveries, so set-up cost cancels.
//! `CALLGRIND_POLICY=conflate` (or `drop_oldest`) runs it under that
//! slow-client policy, with every subscriber keeping up, and snapshots keyed
//! by `symbol` so the message key is worked out under every policy alike.
//!
//! With WORKERS > 1 the subscribers are spread over that many cores (as
//! `WS_WORKERS` spreads connections) and each message goes the way the
//! workers' server sends it: routed and encoded once (`Router`), shared
//! behind one `Arc`, and handed to every core (`handle_publish_routed`).
//! Everything runs on one thread, so the count is the total work of all
//! workers per delivery; WORKERS = 1 is the single-driver path.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use bytes::Bytes;

use std::sync::Arc;

use ws_realtime::core::{
    Core, CoreConfig, HistoryConfig, HistoryLimits, Identity, Open, Output, Publish, Router,
    SlowClientPolicy,
};
use ws_realtime::proto::position::Position;

const PAYLOAD: &[u8] = br#"{"symbol":"AAPL","bid":187.25,"ask":187.27,"last":187.26,"volume":1234567,"timestamp":1705238400000}"#;

/// Subscribers, as in `fan_out/publish_and_write/1000` (benches/core.rs).
const SUBSCRIBERS: usize = 1_000;

/// Takes every output, in the core's order, as the shell's driver does.
fn drain(core: &mut Core, now: Instant) {
    loop {
        match core.poll_output() {
            Some(Output::Transmit(transmit)) => {
                black_box(&transmit.frames);
                core.handle_write_complete(now, transmit.conn);
            }
            Some(Output::Disconnect(conn)) => {
                black_box(conn);
            }
            Some(Output::Event(event)) => {
                black_box(event);
            }
            Some(Output::Verify(request)) => {
                black_box(request);
            }
            Some(Output::Timeout(at)) => {
                black_box(at);
                break;
            }
            None => break,
        }
    }
}

/// A publish of offset `offset` on the channel every subscriber has.
fn publish(offset: i64) -> Publish {
    Publish {
        channel: "lines".into(),
        pos: Some(Position::Offset {
            topic: "lines".to_owned(),
            partition: 0,
            offset,
        }),
        payload: Bytes::from_static(PAYLOAD),
        key: None,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the numbers are the publish count,
    // the messages per turn and the number of workers.
    let mut numbers = std::env::args().skip(1).filter_map(|arg| arg.parse().ok());
    let publishes: i64 = numbers.next().unwrap_or(100);
    let per_turn: i64 = numbers.next().unwrap_or(1).max(1);
    let workers = usize::try_from(numbers.next().unwrap_or(1))
        .unwrap_or(1)
        .max(1);
    let now = Instant::now();
    let slow_client_policy = match std::env::var("CALLGRIND_POLICY").as_deref() {
        Ok("conflate") => SlowClientPolicy::Conflate,
        Ok("drop_oldest") => SlowClientPolicy::DropOldest,
        _ => SlowClientPolicy::Disconnect,
    };
    let config = CoreConfig {
        max_connections: 0,
        rate_limit_per_second: 0,
        slow_client_policy,
        history: HistoryConfig {
            defaults: HistoryLimits {
                snapshot_field: Some("symbol".to_owned()),
                ..HistoryLimits::default()
            },
            ..HistoryConfig::default()
        },
        ..CoreConfig::default()
    };
    let mut cores: Vec<Core> = (0..workers)
        .map(|_| Core::new(config.clone(), now, 1_705_238_400_000))
        .collect();
    for user in 0..SUBSCRIBERS {
        let identity = Identity {
            user_id: format!("user{user}").into(),
            roles: Box::default(),
            channel_patterns: None,
            expires_at_unix_ms: None,
            max_rate: None,
            delay: None,
        };
        // Round-robin, as connections spread over the workers.
        cores[user % workers]
            .handle_open(
                now,
                Open {
                    identity,
                    remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    channels: vec!["lines".into()],
                    deflate: None,
                },
            )
            .expect("no limits configured");
    }
    for core in &mut cores {
        drain(core, now);
    }
    let mut delivered = 0;
    let turn_ends = |offset: i64| offset % per_turn == 0 || offset == publishes;
    if workers == 1 {
        let core = &mut cores[0];
        for offset in 1..=publishes {
            delivered += core.handle_publish(now, publish(offset)).delivered;
            if turn_ends(offset) {
                drain(core, now);
            }
        }
    } else {
        let mut router = Router::new(&config);
        for offset in 1..=publishes {
            let routed = Arc::new(router.route(publish(offset)));
            for core in &mut cores {
                let shared = Arc::clone(&routed);
                delivered += core.handle_publish_routed(now, &shared, now).delivered;
                if turn_ends(offset) {
                    drain(core, now);
                }
            }
        }
    }
    assert_eq!(delivered, SUBSCRIBERS * publishes as usize);
    println!("delivered {delivered} over {workers} workers");
}
