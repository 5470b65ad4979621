//! The one operation language for driving the core: everything a shell can
//! tell it (opens, client frames of every kind, publishes, time passing,
//! writes starting, completing or stalling, closes, shutdown). The
//! `core_ops` fuzz target decodes it with `arbitrary` (or reads it from a
//! script), and the property and state-machine tests
//! (`tests/core_props.rs`, `tests/core_recovery_props.rs`,
//! `tests/core_state_machine.rs`) generate the same enum with proptest
//! strategies, so one vocabulary covers every harness.
//!
//! Indices are the language's only names: a connection is an index into
//! the harness's connections (modulo their count: the fuzz harness counts
//! those it holds, the state-machine model every one it opened), a channel
//! or user an index into the harness's own cast (the fuzz targets use
//! `scenario`'s channels and users; each test its own small set).

use arbitrary::Arbitrary;

pub use super::scenario::{ArbitraryJson, PayloadChoice};

/// One thing the shell does.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// A client connects (after a successful upgrade).
    Open {
        /// Which user of the harness's cast.
        user: u8,
        /// Which of a few remote addresses it comes from.
        address: u8,
        /// Channels asked for at connect (`?channels=`), by index.
        channels: Vec<u8>,
        /// Its token expires this many seconds after the start, if at all.
        expires_in_secs: Option<u8>,
    },
    /// A `subscribe` frame.
    Subscribe {
        /// Which held connection.
        conn: u8,
        /// The request id, if any.
        id: Option<u16>,
        /// The channels, by index.
        channels: Vec<u8>,
    },
    /// An `unsubscribe` frame.
    Unsubscribe {
        /// Which held connection.
        conn: u8,
        /// The request id, if any.
        id: Option<u16>,
        /// The channels, by index.
        channels: Vec<u8>,
    },
    /// The older gateways' `{"action":"subscribe","symbols":[…]}`.
    LegacySubscribe {
        /// Which held connection.
        conn: u8,
        /// The symbols, by index into the harness's symbols (or channels).
        symbols: Vec<u8>,
    },
    /// An application-level `ping` frame.
    JsonPing {
        /// Which held connection.
        conn: u8,
        /// The request id, if any.
        id: Option<u16>,
    },
    /// An application-level `pong` frame.
    JsonPong {
        /// Which held connection.
        conn: u8,
    },
    /// A text frame with any bytes (mostly not a valid request).
    Text {
        /// Which held connection.
        conn: u8,
        /// The frame's payload.
        bytes: Vec<u8>,
    },
    /// A binary frame (protocol v1 has none from clients).
    Binary {
        /// Which held connection.
        conn: u8,
    },
    /// A WebSocket Ping frame.
    WsPing {
        /// Which held connection.
        conn: u8,
        /// Its payload (at most 125 bytes are used).
        payload: Vec<u8>,
    },
    /// Inbound bytes that are not yet a whole frame (liveness only).
    Activity {
        /// Which held connection.
        conn: u8,
    },
    /// An inbound frame over the size limit.
    FrameTooBig {
        /// Which held connection.
        conn: u8,
    },
    /// The client sends a close frame.
    PeerClose {
        /// Which held connection.
        conn: u8,
    },
    /// The socket fails or reaches EOF without a close frame.
    SocketClosed {
        /// Which held connection.
        conn: u8,
    },
    /// A source publishes one message.
    Publish {
        /// The channel, by index.
        channel: u8,
        /// A Kafka position: the partition and how far past the partition's
        /// last offset; `None` for a source without positions.
        offset: Option<(u8, u32)>,
        /// The payload.
        payload: PayloadChoice,
    },
    /// A Kafka message at an explicit position (scripts only: arbitrary
    /// inputs get increasing offsets from `Publish`).
    #[arbitrary(skip)]
    PublishAt {
        /// The channel, by index.
        channel: u8,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Many small messages on one channel at once.
    PublishBurst {
        /// The channel, by index.
        channel: u8,
        /// How many (modulo 64).
        count: u8,
    },
    /// A subscribe asking for stream state: `since` a cursor, `snapshot`
    /// or `history`.
    Recover {
        /// Which held connection.
        conn: u8,
        /// The channel, by index.
        channel: u8,
        /// The cursor to recover from, if any.
        since: Option<CursorChoice>,
        /// Whether it asks for the latest value per key.
        snapshot: bool,
        /// How many past messages it asks for, if any.
        history: Option<u8>,
    },
    /// The socket of a connection that is writing takes everything.
    WriteComplete {
        /// Which connection (the fuzz harness counts only those with a
        /// write in flight).
        conn: u8,
    },
    /// Every socket takes what was written to it.
    WriteAll,
    /// The shell takes the core's outputs now, starting the writes (which
    /// complete with `WriteComplete`). Harnesses that take outputs after
    /// every operation have nothing more to do for it.
    #[arbitrary(skip)]
    Poll,
    /// Time passes.
    Advance {
        /// How long, in milliseconds.
        millis: u16,
    },
    /// The server starts draining.
    Shutdown,
}

/// A `since` cursor: mostly well-formed ones near what the core hands out
/// (own sequences, the fuzz topic's partitions, another epoch), sometimes
/// arbitrary text.
#[derive(Debug, Clone, Arbitrary)]
pub enum CursorChoice {
    /// Entries built from parts.
    Entries(Vec<CursorEntry>),
    /// Any text, as a client might send.
    Raw(String),
}

/// One entry of a built cursor.
#[derive(Debug, Clone, Arbitrary)]
pub enum CursorEntry {
    /// This process's sequence (`~0:n`).
    Own(u8),
    /// Another process's sequence.
    Foreign(u8),
    /// A Kafka position of the fuzz topic.
    Kafka(u8, u16),
}

/// The `subscribe` frame an [`Op::Recover`] sends for channel `name`: one
/// translation for every harness that drives the core with `Op`.
pub fn recover_frame(
    name: &str,
    since: Option<&CursorChoice>,
    snapshot: bool,
    history: Option<u8>,
) -> String {
    let mut frame = serde_json::json!({"type": "subscribe", "channels": [name], "id": 3});
    if let Some(since) = since {
        frame["since"] = serde_json::json!({ name: since.text() });
    }
    if snapshot {
        frame["snapshot"] = true.into();
    }
    if let Some(n) = history {
        frame["history"] = n.into();
    }
    frame.to_string()
}

impl CursorChoice {
    /// The cursor as a client sends it.
    pub fn text(&self) -> String {
        match self {
            CursorChoice::Raw(text) => text.clone(),
            CursorChoice::Entries(entries) => entries
                .iter()
                .take(6)
                .map(|e| match e {
                    CursorEntry::Own(n) => format!("~0:{n}"),
                    CursorEntry::Foreign(n) => format!("~beef:{n}"),
                    CursorEntry::Kafka(p, o) => format!("t:{}:{o}", p % 4),
                })
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}
