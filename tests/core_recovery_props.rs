//! The recovery property: for any interleaving of publishes (on a channel
//! fed by two Kafka partitions and this process's own sequences), reads,
//! disconnects, slow-consumer closes and recover-subscribes, a client that
//! is told `recovered:true` has seen exactly the channel's stream (no
//! duplicate, no gap, in order), and `recovered:false` comes exactly when
//! the ring (bounded by count) no longer holds every message it missed.

mod core_support;

use core_support::*;
use proptest::prelude::*;
use ws_realtime::fuzzing::op::CursorChoice;
use ws_realtime::proto::cursor::{self, Cursor};

/// Operations of the shared language (`ws_realtime::fuzzing::op`) this
/// property needs, all about the one client and its channel, applied by the
/// shared harness (`Harness::apply`): a publish from
/// Kafka partition 0 or 1 (offset step) or this process's own sequence; the
/// socket taking one transmit (`WriteComplete`, whatever its index: the client
/// reads what the server wrote, other connections' transmits are dropped);
/// the connection dying (`SocketClosed`: what was not read is lost); a new
/// connection recovering (`Recover`, with the client's own cursor by the
/// client rule, whatever `since` the operation carries).
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, 1u32..4).prop_map(|(source, step)| Op::Publish {
            channel: 0,
            offset: (source < 2).then_some((source, step)),
            payload: PayloadChoice::Filler { size: 0, binary: false },
        }),
        6 => Just(Op::WriteComplete { conn: 0 }),
        1 => Just(Op::SocketClosed { conn: 0 }),
        2 => Just(Op::Recover { conn: 0, channel: 0, since: None, snapshot: false, history: None }),
    ]
}

struct Client {
    /// The open connection, if any.
    conn: Option<ConnId>,
    /// Its cursor (the client rule).
    cursor: Cursor,
    /// How many messages of the stream it has, in order.
    have: usize,
}

struct World {
    h: Harness,
    ring: usize,
    /// Every message of the channel, as (pos, data).
    stream: Vec<(String, u64)>,
    client: Client,
}

impl World {
    /// `Op::Publish` on the channel, its payload the message's number in
    /// the stream.
    fn publish(&mut self, offset: Option<(u8, u32)>) {
        let n = self.stream.len() as u64;
        let channel = self.h.cast.channel("ch");
        self.h.apply(Op::Publish {
            channel,
            offset,
            payload: PayloadChoice::Raw(n.to_string().into_bytes()),
        });
        let shown = match offset {
            Some((partition, _)) => {
                let partition = partition % 4;
                let offset = self.h.offsets[usize::from(partition)];
                format!("{TOPIC}:{partition}:{offset}")
            }
            None => String::new(),
        };
        self.stream.push((shown, n));
    }

    /// Reads up to `transmits` transmits for the client (others are dropped).
    fn read(&mut self, transmits: u8) -> Result<Vec<Value>, TestCaseError> {
        let mut got = Vec::new();
        for _ in 0..transmits {
            let Some(t) = self.h.next_transmit() else {
                break;
            };
            let mine = Some(t.conn) == self.client.conn;
            for r in decode_all(&t.frames) {
                if let (true, Received::Json(v)) = (mine, r) {
                    got.push(v);
                }
            }
            self.h.write_complete(t.conn);
        }
        Ok(got)
    }

    fn apply_frames(&mut self, frames: Vec<Value>) -> Result<(), TestCaseError> {
        for v in frames {
            match v["type"].as_str() {
                Some("message") => {
                    let n = v["data"].as_u64().expect("numbered");
                    prop_assert_eq!(
                        n as usize,
                        self.client.have,
                        "message {} after {} of the stream",
                        n,
                        self.client.have
                    );
                    let expected = &self.stream[n as usize].0;
                    let pos = v["pos"].as_str().expect("pos");
                    if !expected.is_empty() {
                        prop_assert_eq!(pos, expected.as_str());
                    }
                    let parsed = cursor::parse(pos).expect("pos parses");
                    let (stream, offset) = &parsed.entries[0];
                    self.client.cursor.set(stream, *offset);
                    self.client.have += 1;
                }
                Some("subscribed") => {}
                other => prop_assert!(false, "unexpected frame {:?}: {}", other, v),
            }
        }
        Ok(())
    }

    fn closed(&self) -> bool {
        self.client
            .conn
            .is_none_or(|c| self.h.core.inspect(c).is_none_or(|i| i.closing))
    }

    fn recover(&mut self) -> Result<(), TestCaseError> {
        if let Some(conn) = self.client.conn.take() {
            self.h.socket_closed(conn);
        }
        // Whatever is left for other connections is dropped unread.
        self.read(50)?;
        let conn = self.h.open("u");
        self.h.drain(conn);
        self.client.conn = Some(conn);
        let missed = self.stream.len() - self.client.have;
        let since = self.client.cursor.to_string();
        let (index, channel) = (self.h.cast.conn(conn), self.h.cast.channel("ch"));
        self.h.apply(Op::Recover {
            conn: index,
            channel,
            since: Some(CursorChoice::Raw(since.clone())),
            snapshot: false,
            history: None,
        });
        let first = self.h.next_transmit().expect("the ack");
        prop_assert_eq!(first.conn, conn);
        let mut frames: Vec<Value> = decode_all(&first.frames)
            .into_iter()
            .filter_map(|r| match r {
                Received::Json(v) => Some(v),
                _ => None,
            })
            .collect();
        self.h.write_complete(conn);
        let ack = frames.remove(0);
        prop_assert_eq!(&ack["type"], "subscribed");
        let recovered = ack["recovered"]["ch"].as_bool().expect("recovered");
        prop_assert_eq!(
            recovered,
            missed <= self.ring,
            "missed {} with a ring of {} (cursor {})",
            missed,
            self.ring,
            since
        );
        self.client.cursor =
            cursor::parse(ack["positions"]["ch"].as_str().expect("positions")).expect("cursor");
        if !recovered {
            prop_assert!(frames.is_empty(), "nothing replayed: {:?}", frames);
            self.client.have = self.stream.len();
        }
        self.apply_frames(frames)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn recovered_means_exactly_the_stream_and_false_means_the_ring_lost_it(
        ring in 1usize..12,
        buffer in 2usize..10,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let config = CoreConfig {
            client_buffer_frames: buffer,
            history: HistoryConfig {
                defaults: HistoryLimits { messages: ring, ..HistoryLimits::default() },
                ..HistoryConfig::default()
            },
            ..CoreConfig::default()
        };
        let mut h = Harness::new(config);
        let conn = h.open("u");
        h.drain(conn);
        h.text(conn, json!({"type":"subscribe","channels":["ch"]}));
        let ack = h.json(conn);
        let cursor = cursor::parse(ack[0]["positions"]["ch"].as_str().expect("positions"))
            .expect("cursor");
        let mut world = World {
            h,
            ring,
            stream: Vec::new(),
            client: Client { conn: Some(conn), cursor, have: 0 },
        };
        for op in ops {
            match op {
                Op::Publish { offset, .. } => world.publish(offset),
                Op::WriteComplete { .. } => {
                    let frames = world.read(1)?;
                    world.apply_frames(frames)?;
                }
                Op::SocketClosed { .. } => {
                    if let Some(conn) = world.client.conn.take() {
                        world.h.socket_closed(conn);
                    }
                }
                Op::Recover { .. } => world.recover()?,
                // Never drawn by `op`.
                _ => {}
            }
            if world.closed() {
                // Closed as a slow consumer: the client notices and recovers.
                let frames = world.read(50)?;
                let frames = frames.into_iter().filter(|f| f["type"] == "message").collect();
                world.apply_frames(frames)?;
                world.recover()?;
            }
        }
        // Caught up in the end.
        if world.client.conn.is_some() {
            for _ in 0..200 {
                let frames = world.read(1)?;
                world.apply_frames(frames)?;
                if world.closed() {
                    break;
                }
            }
            if !world.closed() {
                prop_assert_eq!(world.client.have, world.stream.len(), "caught up");
            }
        }
    }
}
