//! Fuzz target 2: arbitrary sequences of everything a shell can tell the
//! core (opens, client frames of every kind, publishes, time passing, writes
//! completing or stalling, closes, shutdown), with the harness checking the
//! core's invariants after every step and a clean drain at the end.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use serde_json::json;

use super::harness::Harness;
use super::op::{CursorChoice, Op, recover_frame};
use super::scenario::{self, ConfigChoice, PayloadChoice};
use crate::core::{ConnId, CoreConfig, Publish, SlowClientPolicy};
use crate::proto::position::Position;

/// Operations per input; keeps one run short so the fuzzer explores widely.
const MAX_OPS: usize = 256;

/// Fuzz target body: decodes a configuration and a sequence of operations
/// from `data` and runs them against one core. Input starting with `#` is a
/// readable script (see [`parse_script`]), which is how the hand-written
/// seeds are kept; anything else is decoded with `arbitrary`.
pub fn core_ops(data: &[u8]) {
    let (config, ops) = match data.strip_prefix(b"#") {
        Some(script) => parse_script(script),
        None => {
            let mut input = Unstructured::new(data);
            let Ok(config) = ConfigChoice::arbitrary(&mut input) else {
                return;
            };
            let mut ops = Vec::new();
            while ops.len() < MAX_OPS && !input.is_empty() {
                match Op::arbitrary(&mut input) {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            (config.build(), ops)
        }
    };
    let mut harness = Harness::new(config);
    let mut next_offset = [0_i64; 4];
    for op in ops.into_iter().take(MAX_OPS) {
        run(&mut harness, op, &mut next_offset);
    }
    harness.finish();
}

/// Reads a script: `config key=value ...` lines tune the default
/// configuration (with the fuzz channel rules): `buffer`, `bytes`,
/// `drop_oldest`, `grace`, `heartbeat`, `timeout` (milliseconds),
/// `app_ping`, `max_channels`, `max_conns`, `per_ip`, `rate`, `burst`,
/// `batch`, `batch_delay`, `history` (messages per channel), `history_bytes`
/// (the global cap). Then one operation per line, connections by index
/// among those held, channels and users by name:
///
/// ```text
/// open alice 0 lines exp=30         (user, address, channels, token expiry in s)
/// sub 0 order_book                   unsub 0 lines
/// text 0 {"type":"ping","id":7}      binary 0 | wsping 0 | activity 0
/// toobig 0 | close 0 | drop 0        (frame too big, peer close, socket died)
/// publish lines {"price":1}          burst lines 40
/// publishat lines 2:1041 {"p":1}     (a Kafka partition:offset)
/// recover 0 lines ~0:3,t:2:1041      (subscribe with `since`)
/// history 0 lines 5 | snapshot 0 lines
/// write 0 | writeall | advance 5000 | shutdown
/// ```
///
/// Unknown lines are skipped, so mutated scripts still run.
fn parse_script(script: &[u8]) -> (CoreConfig, Vec<Op>) {
    let script = String::from_utf8_lossy(script);
    let mut config = CoreConfig {
        server_id: "fuzz".to_owned(),
        channel_rules: scenario::channel_rules(),
        ..CoreConfig::default()
    };
    for line in script.lines() {
        if let Some(settings) = line.trim_start().strip_prefix("config") {
            settings
                .split_whitespace()
                .for_each(|kv| configure(&mut config, kv));
        }
    }
    let ops = script
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let mut args = rest.split_whitespace();
            let number = || {
                rest.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u16>().ok())
            };
            let conn = || number().map_or(0, |n| n as u8);
            let channels = |skip: usize| -> Vec<u8> {
                rest.split_whitespace()
                    .skip(skip)
                    .map(channel_index)
                    .collect()
            };
            Some(match word {
                "open" => Op::Open {
                    user: user_index(args.next().unwrap_or("alice")),
                    address: args.next().and_then(|a| a.parse().ok()).unwrap_or(0),
                    channels: rest
                        .split_whitespace()
                        .skip(2)
                        .filter(|arg| !arg.starts_with("exp="))
                        .map(channel_index)
                        .collect(),
                    expires_in_secs: rest
                        .split_whitespace()
                        .find_map(|arg| arg.strip_prefix("exp=")?.parse().ok()),
                },
                "sub" => Op::Subscribe {
                    conn: conn(),
                    id: Some(1),
                    channels: channels(1),
                },
                "unsub" => Op::Unsubscribe {
                    conn: conn(),
                    id: Some(2),
                    channels: channels(1),
                },
                "text" => Op::Text {
                    conn: conn(),
                    bytes: rest
                        .split_once(' ')
                        .map_or("", |(_, frame)| frame)
                        .as_bytes()
                        .to_vec(),
                },
                "binary" => Op::Binary { conn: conn() },
                "wsping" => Op::WsPing {
                    conn: conn(),
                    payload: b"hb".to_vec(),
                },
                "activity" => Op::Activity { conn: conn() },
                "toobig" => Op::FrameTooBig { conn: conn() },
                "close" => Op::PeerClose { conn: conn() },
                "drop" => Op::SocketClosed { conn: conn() },
                "publish" => {
                    let (channel, payload) = rest.split_once(' ').unwrap_or((rest, ""));
                    Op::Publish {
                        channel: channel_index(channel),
                        offset: None,
                        payload: PayloadChoice::Raw(payload.as_bytes().to_vec()),
                    }
                }
                "publishat" => {
                    let mut words = rest.splitn(3, ' ');
                    let channel = channel_index(words.next().unwrap_or_default());
                    let (partition, offset) = words
                        .next()
                        .and_then(|pos| pos.split_once(':'))
                        .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
                        .unwrap_or((0, 0));
                    Op::PublishAt {
                        channel,
                        partition,
                        offset,
                        payload: words.next().unwrap_or_default().as_bytes().to_vec(),
                    }
                }
                "burst" => Op::PublishBurst {
                    channel: channel_index(args.next().unwrap_or("lines")),
                    count: args.next().and_then(|n| n.parse().ok()).unwrap_or(10),
                },
                "recover" | "history" | "snapshot" => {
                    let channel = channel_index(args.nth(1).unwrap_or("lines"));
                    let third = args.next().unwrap_or_default();
                    Op::Recover {
                        conn: conn(),
                        channel,
                        since: (word == "recover").then(|| CursorChoice::Raw(third.to_owned())),
                        snapshot: word == "snapshot",
                        history: (word == "history").then(|| third.parse().unwrap_or(3)),
                    }
                }
                "write" => Op::WriteComplete { conn: conn() },
                "writeall" => Op::WriteAll,
                "advance" => Op::Advance {
                    millis: number().unwrap_or(1000),
                },
                "shutdown" => Op::Shutdown,
                _ => return None,
            })
        })
        .collect();
    (config, ops)
}

/// Applies one `key=value` of a script's `config` line; bad ones are
/// ignored, and values stay in the ranges [`ConfigChoice`] uses.
fn configure(config: &mut CoreConfig, setting: &str) {
    let (key, value) = setting.split_once('=').unwrap_or((setting, "1"));
    let Ok(n) = value.parse::<u16>() else {
        return;
    };
    let n = n.max(1);
    let millis = Duration::from_millis(u64::from(n));
    match key {
        "buffer" => config.client_buffer_frames = usize::from(n),
        "bytes" => config.client_buffer_bytes = usize::from(n).max(512),
        "drop_oldest" => config.slow_client_policy = SlowClientPolicy::DropOldest,
        "conflate" => config.slow_client_policy = SlowClientPolicy::Conflate,
        "max_rate" => config.subscription_max_rate = u32::from(n),
        "grace" => config.slow_close_grace = millis,
        "heartbeat" => config.heartbeat_interval = millis.max(Duration::from_millis(50)),
        "timeout" => config.connection_timeout = millis.max(Duration::from_millis(100)),
        "app_ping" => config.app_ping = true,
        "max_channels" => config.max_channels_per_connection = usize::from(n),
        "max_conns" => config.max_connections = usize::from(n),
        "per_ip" => config.max_connections_per_ip = usize::from(n),
        "rate" => config.rate_limit_per_second = u32::from(n),
        "burst" => config.rate_limit_burst = u32::from(n),
        "batch" => config.batch_max = usize::from(n),
        "batch_delay" => config.batch_delay = millis,
        "history" => config.history.defaults.messages = usize::from(n),
        "history_bytes" => config.history.max_bytes = usize::from(n),
        _ => {}
    }
}

/// A user name of the script, as the index [`scenario::identity`] takes.
fn user_index(name: &str) -> u8 {
    match name {
        "bob" => 1,
        "carol" => 2,
        "dave" => 3,
        _ => 0,
    }
}

/// A channel name of the script, as an index into [`scenario::CHANNELS`];
/// names not in the table become the invalid `bad channel`.
fn channel_index(name: &str) -> u8 {
    let index = scenario::CHANNELS
        .iter()
        .position(|known| *known == name)
        .or_else(|| {
            scenario::CHANNELS
                .iter()
                .position(|known| *known == "bad channel")
        })
        .expect("the table has an invalid channel");
    u8::try_from(index).expect("the channel table is small")
}

fn run(harness: &mut Harness, op: Op, next_offset: &mut [i64; 4]) {
    match op {
        Op::Open {
            user,
            address,
            channels,
            expires_in_secs,
        } => {
            let _ = harness.open(scenario::open(user, address, &channels, expires_in_secs));
        }
        Op::Subscribe { conn, id, channels } => {
            with_conn(harness, conn, |h, c| {
                h.text(c, &request("subscribe", id, &channels));
            });
        }
        Op::Recover {
            conn,
            channel,
            since,
            snapshot,
            history,
        } => {
            let name = scenario::channel(channel);
            let frame = recover_frame(name, since.as_ref(), snapshot, history);
            with_conn(harness, conn, |h, c| h.text(c, frame.as_bytes()));
        }
        Op::Unsubscribe { conn, id, channels } => {
            with_conn(harness, conn, |h, c| {
                h.text(c, &request("unsubscribe", id, &channels));
            });
        }
        Op::LegacySubscribe { conn, symbols } => {
            let symbols: Vec<&str> = symbols
                .iter()
                .take(4)
                .map(|s| ["aapl", "MSFT", "bad sym", ""][*s as usize % 4])
                .collect();
            let frame = json!({"action": "subscribe", "symbols": symbols}).to_string();
            with_conn(harness, conn, |h, c| h.text(c, frame.as_bytes()));
        }
        Op::JsonPing { conn, id } => {
            let mut frame = json!({"type": "ping"});
            if let Some(id) = id {
                frame["id"] = id.into();
            }
            let frame = frame.to_string();
            with_conn(harness, conn, |h, c| h.text(c, frame.as_bytes()));
        }
        Op::JsonPong { conn } => with_conn(harness, conn, |h, c| h.text(c, br#"{"type":"pong"}"#)),
        Op::Text { conn, bytes } => with_conn(harness, conn, |h, c| h.text(c, &bytes)),
        Op::Binary { conn } => with_conn(harness, conn, Harness::binary),
        Op::WsPing { conn, payload } => {
            let payload = &payload[..payload.len().min(125)];
            with_conn(harness, conn, |h, c| h.ping(c, payload));
        }
        Op::Activity { conn } => with_conn(harness, conn, Harness::activity),
        Op::FrameTooBig { conn } => with_conn(harness, conn, Harness::frame_too_big),
        Op::PeerClose { conn } => with_conn(harness, conn, Harness::peer_close),
        Op::SocketClosed { conn } => with_conn(harness, conn, Harness::socket_closed),
        Op::Publish {
            channel,
            offset,
            payload,
        } => {
            let pos = match offset {
                Some((partition, step)) => {
                    let partition = partition % 4;
                    let slot = &mut next_offset[partition as usize];
                    *slot += i64::from(step % 1_000);
                    Some(Position::Offset {
                        topic: "t".to_owned(),
                        partition: i32::from(partition),
                        offset: *slot,
                    })
                }
                None => None,
            };
            harness.publish(Publish {
                channel: scenario::channel(channel).to_owned(),
                pos,
                payload: Bytes::from(payload.bytes()),
                key: None,
            });
        }
        Op::PublishAt {
            channel,
            partition,
            offset,
            payload,
        } => {
            harness.publish(Publish {
                channel: scenario::channel(channel).to_owned(),
                pos: Some(Position::Offset {
                    topic: "t".to_owned(),
                    partition,
                    offset,
                }),
                payload: Bytes::from(payload),
                key: None,
            });
        }
        Op::PublishBurst { channel, count } => {
            for i in 0..(count % 64) {
                harness.publish(Publish {
                    channel: scenario::channel(channel).to_owned(),
                    pos: None,
                    payload: Bytes::from(format!(r#"{{"seq":{i}}}"#)),
                    key: None,
                });
            }
        }
        Op::WriteComplete { conn } => {
            let writing = harness.writing_conns();
            if !writing.is_empty() {
                harness.write_complete(writing[conn as usize % writing.len()]);
            }
        }
        Op::WriteAll => harness.flush(4),
        // The harness takes the core's outputs after every operation.
        Op::Poll => {}
        Op::Advance { millis } => harness.advance(Duration::from_millis(u64::from(millis))),
        Op::Shutdown => harness.shutdown(),
    }
}

/// Runs `f` on the held connection `index` points at, if there is one.
fn with_conn(harness: &mut Harness, index: u8, f: impl FnOnce(&mut Harness, ConnId)) {
    let conns = harness.live_conns();
    if !conns.is_empty() {
        f(harness, conns[index as usize % conns.len()]);
    }
}

/// A protocol v1 subscribe or unsubscribe frame.
fn request(kind: &str, id: Option<u16>, channels: &[u8]) -> Vec<u8> {
    let channels: Vec<&str> = channels
        .iter()
        .take(8)
        .map(|c| scenario::channel(*c))
        .collect();
    let mut frame = json!({"type": kind, "channels": channels});
    if let Some(id) = id {
        frame["id"] = id.into();
        // A third of the subscribes with an id ask for a per-key rate.
        if kind == "subscribe" && id % 3 == 2 {
            frame["maxRate"] = (1 + id % 7).into();
        }
    }
    frame.to_string().into_bytes()
}
