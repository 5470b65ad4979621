//! Core benchmarks: serialize-once fan-out (ns per delivery), message
//! encoding, and subscribe/unsubscribe churn.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use ws_realtime::core::{ConnId, Core, CoreConfig, Identity, Open, Output, Publish};
use ws_realtime::proto::position::Position;
use ws_realtime::proto::server::{self, MessagePos};

const PAYLOAD: &[u8] = br#"{"symbol":"AAPL","bid":187.25,"ask":187.27,"last":187.26,"volume":1234567,"timestamp":1705238400000}"#;

fn open(core: &mut Core, now: Instant, user: usize, channels: Vec<String>) -> ConnId {
    let identity = Identity {
        user_id: format!("user{user}"),
        roles: vec![],
        channel_patterns: None,
        expires_at_unix_ms: None,
    };
    core.handle_open(
        now,
        Open {
            identity,
            remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
            channels,
        },
    )
    .expect("no limits configured")
}

/// Writes everything the core has queued, as the shell would.
fn drain(core: &mut Core, now: Instant) {
    loop {
        match core.poll_output() {
            Some(Output::Transmit(transmit)) => {
                black_box(&transmit.frames);
                core.handle_write_complete(now, transmit.conn);
            }
            Some(Output::Disconnect(_) | Output::Event(_) | Output::Verify(_)) => {}
            Some(Output::Timeout(_)) | None => break,
        }
    }
}

fn core_with_subscribers(n: usize, now: Instant) -> Core {
    core_with(n, now, CoreConfig::default())
}

/// `n` subscribers of `lines` on a core built from `config`.
fn core_with(n: usize, now: Instant, config: CoreConfig) -> Core {
    let config = CoreConfig {
        max_connections: 0,
        rate_limit_per_second: 0,
        ..config
    };
    let mut core = Core::new(config, now, 1_705_238_400_000);
    for user in 0..n {
        open(&mut core, now, user, vec!["lines".into()]);
    }
    drain(&mut core, now);
    core
}

fn publish(core: &mut Core, now: Instant, offset: i64) {
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
    black_box(outcome);
}

/// Fan-out with history on (the default, 1 000 per channel) against off:
/// storing is O(1) per message and shares the frame, so the two should be
/// within noise of each other.
fn history(c: &mut Criterion) {
    let mut group = c.benchmark_group("history");
    for n in [10usize, 1_000] {
        let now = Instant::now();
        group.throughput(Throughput::Elements(n as u64));
        for (label, messages) in [("on", 1000), ("off", 0)] {
            let mut config = CoreConfig::default();
            config.history.defaults.messages = messages;
            let mut core = core_with(n, now, config);
            let mut offset = 0;
            let id = format!("publish_and_write_history_{label}");
            group.bench_with_input(BenchmarkId::new(id, n), &n, |b, _| {
                b.iter(|| {
                    offset += 1;
                    publish(&mut core, now, offset);
                    drain(&mut core, now);
                })
            });
        }
    }
    // One reconnecting client recovering 500 missed messages: the replay is
    // the stored frames, fed half a queue at a time as writes complete.
    let now = Instant::now();
    let mut core = core_with(0, now, CoreConfig::default());
    for offset in 1..=500 {
        publish(&mut core, now, offset);
    }
    let subscribe = br#"{"type":"subscribe","channels":["lines"],"since":{"lines":"lines:0:0"}}"#;
    group.throughput(Throughput::Elements(500));
    group.bench_function("recover_500", |b| {
        b.iter(|| {
            let conn = open(&mut core, now, 1, vec![]);
            core.handle_text(now, conn, subscribe);
            drain(&mut core, now);
            core.handle_closed(now, conn);
            drain(&mut core, now);
        })
    });
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out");
    for n in [10usize, 1_000, 10_000] {
        let now = Instant::now();
        group.throughput(Throughput::Elements(n as u64));
        // One message to n subscribers, then the shell writes it to each.
        let mut core = core_with_subscribers(n, now);
        let mut offset = 0;
        group.bench_with_input(BenchmarkId::new("publish_and_write", n), &n, |b, _| {
            b.iter(|| {
                offset += 1;
                publish(&mut core, now, offset);
                drain(&mut core, now);
            })
        });
        // The core's share alone: publishes timed, writes drained between
        // timings every 64 messages (well under the 256-frame bound).
        let mut core = core_with_subscribers(n, now);
        group.bench_with_input(BenchmarkId::new("publish_only", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for i in 0..iters {
                    let start = Instant::now();
                    publish(&mut core, now, i as i64);
                    timed += start.elapsed();
                    if i % 64 == 63 {
                        drain(&mut core, now);
                    }
                }
                drain(&mut core, now);
                timed
            })
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_message");
    let text = b"market closed for the day, reopening at 09:30 local time";
    let binary: Vec<u8> = (0..=255u8).collect();
    group.bench_function("json", |b| {
        b.iter(|| {
            server::message(
                "lines",
                MessagePos::Offset {
                    topic: "lines",
                    partition: 0,
                    offset: 1234,
                },
                black_box(PAYLOAD),
            )
        })
    });
    group.bench_function("text", |b| {
        b.iter(|| {
            server::message(
                "lines",
                MessagePos::Sequence {
                    epoch: "9f3a2c1d",
                    seq: 17,
                },
                black_box(text),
            )
        })
    });
    group.bench_function("binary_256", |b| {
        b.iter(|| {
            server::message(
                "lines",
                MessagePos::Sequence {
                    epoch: "9f3a2c1d",
                    seq: 17,
                },
                black_box(&binary),
            )
        })
    });
    group.finish();
}

fn churn(c: &mut Criterion) {
    let now = Instant::now();
    let mut core = core_with_subscribers(1_000, now);
    let conn = open(&mut core, now, 1_000_000, vec![]);
    drain(&mut core, now);
    c.bench_function("subscribe_unsubscribe_churn", |b| {
        b.iter(|| {
            core.handle_text(
                now,
                conn,
                br#"{"type":"subscribe","channels":["lines","analytics"],"id":1}"#,
            );
            core.handle_text(
                now,
                conn,
                br#"{"type":"unsubscribe","channels":["lines","analytics"],"id":2}"#,
            );
            drain(&mut core, now);
        })
    });
}

criterion_group!(benches, fan_out, history, encoding, churn);
criterion_main!(benches);
