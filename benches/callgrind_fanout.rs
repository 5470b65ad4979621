//! Fixed-iteration fan-out driver for `valgrind --tool=callgrind`
//! (`benches/callgrind.sh`): instruction counts are deterministic where
//! wall-clock numbers on a shared machine are not.
//!
//! `callgrind_fanout [PUBLISHES] [BATCH]` opens 1 000 subscribers to one
//! channel, then publishes PUBLISHES messages, draining every output after
//! each BATCH of them (default 1) as the shell's driver does after each turn:
//! under load a turn takes many messages, and each socket gets them in one
//! transmit. The script runs it twice with different counts and divides the
//! difference by the extra deliveries, so set-up cost cancels.
//! `CALLGRIND_POLICY=conflate` (or `drop_oldest`) runs it under that
//! slow-client policy, with every subscriber keeping up, and snapshots keyed
//! by `symbol` so the message key is worked out under every policy alike.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use bytes::Bytes;

use ws_realtime::core::{
    Core, CoreConfig, HistoryConfig, HistoryLimits, Identity, Open, Output, Publish,
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

fn main() {
    // `cargo bench` passes `--bench`; the first number is the publish
    // count, the second the messages per turn.
    let mut numbers = std::env::args().skip(1).filter_map(|arg| arg.parse().ok());
    let publishes: i64 = numbers.next().unwrap_or(100);
    let batch: i64 = numbers.next().unwrap_or(1).max(1);
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
    let mut core = Core::new(config, now, 1_705_238_400_000);
    for user in 0..SUBSCRIBERS {
        let identity = Identity {
            user_id: format!("user{user}"),
            roles: vec![],
            channel_patterns: None,
            expires_at_unix_ms: None,
            max_rate: None,
            delay: None,
        };
        core.handle_open(
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
    drain(&mut core, now);
    let mut delivered = 0;
    for offset in 1..=publishes {
        let outcome = core.handle_publish(
            now,
            Publish {
                channel: "lines".into(),
                pos: Some(Position::Offset {
                    topic: "lines".to_owned(),
                    partition: 0,
                    offset,
                }),
                payload: Bytes::from_static(PAYLOAD),
                key: None,
            },
        );
        delivered += outcome.delivered;
        if offset % batch == 0 || offset == publishes {
            drain(&mut core, now);
        }
    }
    assert_eq!(delivered, SUBSCRIBERS * publishes as usize);
    println!("delivered {delivered}");
}
