//! One shared log of everything that happened in a simulation run: what the
//! fake source got the core to take, and what every client sent, was
//! acknowledged and received. The checker reads it after the run; two runs of
//! the same seed must produce the same log.
//!
//! Turmoil runs every host on one thread, so the order records are appended in
//! is a real causal order: a record's `seq` is "happened before" for the
//! checker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Name of a simulated client (its turmoil host name, plus a generation when
/// one host reconnects).
pub type ClientName = String;

/// Identity of one published message: its stream position. The fake source
/// gives every message a unique `(partition, offset)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId {
    /// Kafka-style partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

impl std::fmt::Display for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

impl MsgId {
    /// Parses the `pos` field of a `message` frame
    /// (`"<topic>:<partition>:<offset>"`).
    pub fn parse(pos: &str) -> Option<MsgId> {
        let (stream, offset) = pos.rsplit_once(':')?;
        let (_, partition) = stream.rsplit_once(':')?;
        Some(MsgId {
            partition: partition.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }
}

/// Something that happened, from the point of view of the test harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happening {
    /// The fake source hands a message to the core: the core takes it no
    /// earlier than this.
    Publishing {
        /// The message.
        msg: MsgId,
        /// Its channel.
        channel: String,
    },
    /// The core has taken the message (`publish_and_wait` returned): it took
    /// it no later than this.
    Published {
        /// The message.
        msg: MsgId,
    },
    /// A client starts its handshake asking for these connect-time channels.
    Connecting {
        /// The client.
        client: ClientName,
        /// `?channels=` of the upgrade request.
        channels: Vec<String>,
    },
    /// The server refused the upgrade with this HTTP status (or 0 when the
    /// handshake failed without one).
    Refused {
        /// The client.
        client: ClientName,
        /// The HTTP status.
        status: u16,
    },
    /// The client read its `connected` frame.
    Connected {
        /// The client.
        client: ClientName,
    },
    /// The client wrote a `subscribe` frame.
    SubscribeSent {
        /// The client.
        client: ClientName,
        /// The channels asked for.
        channels: Vec<String>,
    },
    /// The client wrote a `subscribe` frame with `since` cursors: messages
    /// published before it may be replayed to it.
    RecoverSent {
        /// The client.
        client: ClientName,
        /// The channels asked for.
        channels: Vec<String>,
    },
    /// The client wrote an `unsubscribe` frame.
    UnsubscribeSent {
        /// The client.
        client: ClientName,
        /// The channels given up.
        channels: Vec<String>,
    },
    /// The client read a `subscribed` or `unsubscribed` ack; `current` is
    /// the server's view of its subscription set after the request.
    Subscriptions {
        /// The client.
        client: ClientName,
        /// The `current` field of the ack.
        current: Vec<String>,
    },
    /// The client read a `message` frame.
    Received {
        /// The client.
        client: ClientName,
        /// Its `channel` field.
        channel: String,
        /// Its `pos` field.
        msg: MsgId,
    },
    /// The client read an `error` frame.
    ErrorFrame {
        /// The client.
        client: ClientName,
        /// Its `code` field.
        code: String,
    },
    /// The client read a frame the protocol does not describe.
    Unexpected {
        /// The client.
        client: ClientName,
        /// What it was.
        what: String,
    },
    /// The client stops reading its socket (a slow consumer).
    Paused {
        /// The client.
        client: ClientName,
    },
    /// The client reads again.
    Resumed {
        /// The client.
        client: ClientName,
    },
    /// The client's link to the server goes silent from now on (held, or the
    /// client stopped both reading and writing): the server must close it.
    WentSilent {
        /// The client.
        client: ClientName,
    },
    /// The client's link works again.
    Recovered {
        /// The client.
        client: ClientName,
    },
    /// The client closed its connection itself.
    Left {
        /// The client.
        client: ClientName,
    },
    /// The server ended the connection: a close frame with this code, or
    /// `None` when the socket ended without one.
    Closed {
        /// The client.
        client: ClientName,
        /// The close code, if a close frame arrived.
        code: Option<u16>,
    },
    /// A sample of the server's gauges and counters.
    ServerSample(ServerSample),
    /// The scenario stopped publishing and waited long enough that every
    /// healthy subscriber must have everything by now.
    Quiesced,
}

/// The server's figures at one instant, read from its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerSample {
    /// Open connections in the core.
    pub connections: i64,
    /// (connection, channel) pairs in the core.
    pub subscriptions: i64,
    /// Channels with at least one subscriber.
    pub channels: i64,
    /// Connections closed for silence, ever.
    pub heartbeat_failures: u64,
    /// Connections closed as slow consumers, ever.
    pub slow_consumer_disconnects: u64,
    /// Messages dropped under `drop_oldest` or replaced under `conflate`,
    /// ever.
    pub dropped_oldest: u64,
    /// Bytes held in all outbound queues of the core now.
    pub outbound_bytes: i64,
    /// The most bytes one connection's outbound queue ever held.
    pub outbound_peak_bytes: i64,
    /// Bytes written into sockets and not yet read by their clients, over
    /// every socket the server still holds (the send-buffer model).
    pub socket_unread_bytes: u64,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log: the causal order.
    pub seq: u64,
    /// Simulated time since the start of the run.
    pub at: Duration,
    /// What happened.
    pub what: Happening,
}

/// The whole log of one run.
pub type Trace = Vec<Record>;

/// A cheap handle on the run's shared log; every host holds a clone.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// The log. A mutex only because hosts' tasks must be `Send`; turmoil
    /// runs them all on one thread, so it is never contended.
    records: Arc<Mutex<Trace>>,
}

thread_local! {
    /// The newest recorder on this thread, so a failed run's log can be
    /// printed even when the scenario returned early with an error.
    static LATEST: std::cell::RefCell<Option<Recorder>> = const { std::cell::RefCell::new(None) };
}

impl Recorder {
    /// An empty log, remembered as this thread's latest.
    pub fn new() -> Recorder {
        let recorder = Recorder::default();
        LATEST.with(|latest| *latest.borrow_mut() = Some(recorder.clone()));
        recorder
    }

    /// The log of the newest recorder created on this thread, if any.
    pub fn latest_trace() -> Option<Trace> {
        LATEST.with(|latest| latest.borrow().as_ref().map(Recorder::trace))
    }

    /// Appends `what`, stamped with the simulated time.
    pub fn record(&self, what: Happening) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        let mut records = self.lock();
        let seq = records.len() as u64;
        records.push(Record { seq, at, what });
    }

    /// A copy of the log so far.
    pub fn trace(&self) -> Trace {
        self.lock().clone()
    }

    /// How many records so far satisfy `matches`.
    pub fn count(&self, matches: impl Fn(&Happening) -> bool) -> usize {
        self.lock()
            .iter()
            .filter(|record| matches(&record.what))
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Trace> {
        // A panicking host already fails the run; the log itself stays
        // consistent because each push is a single operation.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
