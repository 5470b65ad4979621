//! Core benchmarks: serialize-once fan-out (ns per delivery), message
//! encoding, subscribe/unsubscribe churn, and permessage-deflate (bytes on
//! the wire per order book; fan-out with every subscriber on deflate, plain,
//! and a per-connection-compression baseline).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use ws_realtime::core::{
    ConnId, Core, CoreConfig, Identity, Open, Output, Publish, SlowClientPolicy,
};
use ws_realtime::proto::deflate::Deflater;
use ws_realtime::proto::deflate_offer::Deflate;
use ws_realtime::proto::position::Position;
use ws_realtime::proto::server;
use ws_realtime::proto::ws_frame;
use ws_realtime::source::dev_feed::MarketFeed;

const PAYLOAD: &[u8] = br#"{"symbol":"AAPL","bid":187.25,"ask":187.27,"last":187.26,"volume":1234567,"timestamp":1705238400000}"#;

fn open(core: &mut Core, now: Instant, user: usize, channels: Vec<String>) -> ConnId {
    let identity = Identity {
        user_id: format!("user{user}").into(),
        roles: Box::default(),
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
            channels,
            deflate: None,
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

/// Fan-out to 1 000 subscribers that all keep up, under `disconnect` and
/// under `conflate` (keyed by a JSON field, as a conflating deployment
/// would be): conflation must cost nothing for clients that keep up, so the
/// two should be within 5 % of each other.
fn conflation(c: &mut Criterion) {
    let mut group = c.benchmark_group("conflation");
    let n = 1_000usize;
    group.throughput(Throughput::Elements(n as u64));
    for (label, policy) in [
        ("disconnect", SlowClientPolicy::Disconnect),
        ("conflate", SlowClientPolicy::Conflate),
    ] {
        let now = Instant::now();
        let mut config = CoreConfig {
            slow_client_policy: policy,
            ..CoreConfig::default()
        };
        config.history.defaults.snapshot_field = Some("symbol".into());
        let mut core = core_with(n, now, config);
        let mut offset = 0;
        group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
            b.iter(|| {
                offset += 1;
                publish(&mut core, now, offset);
                drain(&mut core, now);
            })
        });
    }
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

/// JSON-array batching (`WS_BATCH_MAX`): each subscriber's array is built
/// for it, copying every batched message's JSON once per subscriber, where
/// unbatched fan-out shares one frame. Ten messages to `n` subscribers,
/// batched ten to an array against sent one by one; throughput is per
/// delivery (message × subscriber). `array_of_10` is the copy alone.
fn batching(c: &mut Criterion) {
    const MESSAGES: i64 = 10;
    let mut group = c.benchmark_group("batching");
    for n in [100usize, 1_000] {
        let now = Instant::now();
        group.throughput(Throughput::Elements(n as u64 * MESSAGES as u64));
        for (name, batch_max) in [("one_by_one", 1usize), ("arrays_of_10", 10)] {
            let config = CoreConfig {
                batch_max,
                batch_delay: Duration::from_millis(50),
                ..CoreConfig::default()
            };
            let mut core = core_with(n, now, config);
            let mut offset = 0;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    for _ in 0..MESSAGES {
                        offset += 1;
                        publish(&mut core, now, offset);
                    }
                    drain(&mut core, now);
                })
            });
        }
    }
    group.finish();
    let messages: Vec<_> = (0..10)
        .map(|offset| {
            let pos = Position::Offset {
                topic: "lines".into(),
                partition: 0,
                offset,
            };
            server::message("lines", &pos, "0", PAYLOAD)
        })
        .collect();
    c.bench_function("batching/array_of_10", |b| {
        b.iter(|| {
            black_box(server::batch(
                messages.iter().map(|m| &m.frame[m.header_len..]),
            ))
        })
    });
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_message");
    let text = b"market closed for the day, reopening at 09:30 local time";
    let binary: Vec<u8> = (0..=255u8).collect();
    let kafka = Position::Offset {
        topic: "lines".into(),
        partition: 0,
        offset: 1234,
    };
    group.bench_function("json", |b| {
        b.iter(|| server::message("lines", &kafka, "9f3a2c1d", black_box(PAYLOAD)))
    });
    group.bench_function("text", |b| {
        b.iter(|| {
            server::message(
                "lines",
                &Position::Sequence(17),
                "9f3a2c1d",
                black_box(text),
            )
        })
    });
    group.bench_function("binary_256", |b| {
        b.iter(|| {
            server::message(
                "lines",
                &Position::Sequence(17),
                "9f3a2c1d",
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

/// The dev feed's `order_book` payloads (5 levels a side), in feed order.
fn dev_feed_order_books(count: usize) -> Vec<Bytes> {
    let mut feed = MarketFeed::new(7);
    let mut books = Vec::with_capacity(count);
    let mut now = 1_705_238_400_000;
    while books.len() < count {
        now += 500;
        books.extend(
            feed.next_messages(now)
                .into_iter()
                .filter(|m| m.topic == "order_book")
                .map(|m| Bytes::from(m.json)),
        );
    }
    books
}

/// A deeper book (50 levels a side), as depth snapshots usually are.
fn deep_order_book(seed: usize) -> Bytes {
    let side: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "[{:.4},{}]",
                187.25 + (i + seed) as f64 * 0.01,
                100 + (i * 37 + seed) % 900
            )
        })
        .collect();
    let json = format!(
        r#"{{"symbol":"AAPL","bids":[{}],"asks":[{}],"timestamp":{}}}"#,
        side.join(","),
        side.join(","),
        1_705_238_400_000u64 + seed as u64
    );
    Bytes::from(json)
}

/// Bytes on the wire per delivered `order_book` message frame, plain and
/// compressed: printed once (a size, not a time), then the compression
/// itself timed.
fn deflate_sizes(c: &mut Criterion) {
    let mut deflater = Deflater::default();
    for (name, books) in [
        ("dev_feed_order_book", dev_feed_order_books(200)),
        (
            "order_book_50_levels",
            (0..200).map(deep_order_book).collect(),
        ),
    ] {
        let (mut plain, mut compressed) = (0usize, 0usize);
        for (i, book) in books.iter().enumerate() {
            let encoded = server::message("order_book", &Position::Sequence(i as u64), "0", book);
            plain += encoded.frame.len();
            compressed += deflater
                .text_frame(&encoded.frame[encoded.header_len..])
                .len();
        }
        println!(
            "deflate/{name}: {} bytes plain, {} bytes compressed per message frame ({:.2}x)",
            plain / books.len(),
            compressed / books.len(),
            plain as f64 / compressed as f64
        );
        let sample = server::message("order_book", &Position::Sequence(1), "0", &books[0]);
        c.bench_function(&format!("deflate/compress_once/{name}"), |b| {
            b.iter(|| deflater.text_frame(black_box(&sample.frame[sample.header_len..])))
        });
    }
}

/// How the subscribers of one fan-out take permessage-deflate.
#[derive(Clone, Copy)]
enum Mode {
    /// None negotiated it.
    Plain,
    /// All did: the core compresses each message once.
    SharedDeflate,
    /// Baseline: what compressing for each subscriber costs (as servers
    /// with a per-connection window do), timed as the plain fan-out plus
    /// one compression per delivery. A floor for them: a context-takeover
    /// compressor per connection also costs its memory and cache misses.
    PerConnection,
}

fn core_with_mode(n: usize, now: Instant, mode: Mode) -> Core {
    let config = CoreConfig {
        max_connections: 0,
        rate_limit_per_second: 0,
        ..CoreConfig::default()
    };
    let deflate = matches!(mode, Mode::SharedDeflate).then_some(Deflate {
        server_max_window_bits: 15,
    });
    let mut core = Core::new(config, now, 1_705_238_400_000);
    for user in 0..n {
        let identity = Identity {
            user_id: format!("user{user}").into(),
            roles: Box::default(),
            channel_patterns: None,
            expires_at_unix_ms: None,
            max_rate: None,
            delay: None,
        };
        let open = Open {
            identity,
            remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
            channels: vec!["order_book".into()],
            deflate,
        };
        core.handle_open(now, open).expect("no limits configured");
    }
    drain(&mut core, now);
    core
}

/// One order book to 1 000 subscribers and its writes, per mode: the time
/// per element is the CPU per delivery.
fn deflate_fan_out(c: &mut Criterion) {
    let n = 1_000;
    let mut group = c.benchmark_group("deflate_fan_out");
    group.throughput(Throughput::Elements(n as u64));
    for (name, books) in [
        ("dev_feed_order_book", dev_feed_order_books(64)),
        (
            "order_book_50_levels",
            (0..64).map(deep_order_book).collect(),
        ),
    ] {
        for (mode_name, mode) in [
            ("plain", Mode::Plain),
            ("shared_deflate", Mode::SharedDeflate),
            ("per_connection_baseline", Mode::PerConnection),
        ] {
            let now = Instant::now();
            let mut core = core_with_mode(n, now, mode);
            let mut deflater = Deflater::default();
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(mode_name, name), |b| {
                b.iter(|| {
                    i += 1;
                    core.handle_publish(
                        now,
                        Publish {
                            channel: "order_book".into(),
                            pos: None,
                            payload: books[i % books.len()].clone(),
                            key: None,
                        },
                    );
                    loop {
                        match core.poll_output() {
                            Some(Output::Transmit(transmit)) => {
                                if let Mode::PerConnection = mode {
                                    for frame in &transmit.frames {
                                        let payload =
                                            ws_frame::decode(frame).expect("a frame").payload;
                                        black_box(deflater.text_frame(payload));
                                    }
                                }
                                black_box(&transmit.frames);
                                core.handle_write_complete(now, transmit.conn);
                            }
                            Some(Output::Disconnect(_) | Output::Event(_) | Output::Verify(_)) => {}
                            Some(Output::Timeout(_)) | None => break,
                        }
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    fan_out,
    batching,
    history,
    conflation,
    encoding,
    churn,
    deflate_sizes,
    deflate_fan_out
);
criterion_main!(benches);
