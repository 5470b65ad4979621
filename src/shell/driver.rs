//! The driver: the one task that owns the [`Core`]. It waits on three inputs
//! (commands from connection tasks and the HTTP handler, messages from the
//! sources, and the core's next deadline), hands each to the core, and then
//! drains the core's outputs in the documented order: frames to the writer
//! tasks, sockets to drop, events to metrics and logs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{CloseReason, ConnId, Core, Event, Open, Refusal, Transmit};
use crate::metrics::Metrics;
use crate::source::Ingest;

/// Identifies one connection for its whole life: a [`ConnId`] is reused
/// after the core forgets it, so commands from a dead connection's tasks
/// carry the serial too and are ignored once it no longer matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnKey {
    /// The core's handle.
    pub(crate) conn: ConnId,
    /// Unique per connection for the life of the process.
    pub(crate) serial: u64,
}

/// What a connection's tasks need from the driver once it is admitted.
#[derive(Debug)]
pub(crate) struct Attachment {
    /// Which connection this is.
    pub(crate) key: ConnKey,
    /// The core's frames for this socket; created at open time so frames the
    /// core queues before the upgrade completes wait here.
    pub(crate) outbound: mpsc::UnboundedReceiver<Transmit>,
    /// Resolves when the driver drops the connection: the socket must close.
    pub(crate) kill: oneshot::Receiver<()>,
}

/// Inputs to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Admit a connection (the HTTP handler waits for the answer).
    Open {
        open: Open,
        reply: oneshot::Sender<Result<Attachment, Refusal>>,
    },
    /// A complete text message.
    Text { key: ConnKey, payload: Bytes },
    /// A complete binary message.
    Binary { key: ConnKey },
    /// A WebSocket Ping.
    Ping { key: ConnKey, payload: Bytes },
    /// A WebSocket Pong (proof of life).
    Pong { key: ConnKey },
    /// A message over the inbound size limit.
    TooBig { key: ConnKey },
    /// The client sent a close frame.
    PeerClose { key: ConnKey },
    /// The socket failed, hit EOF, or never finished upgrading.
    Closed { key: ConnKey },
    /// The writer handed the last transmit to the kernel.
    WriteComplete { key: ConnKey },
    /// Begin the graceful shutdown.
    Shutdown,
}

/// The driver's view of one live connection.
#[derive(Debug)]
struct Slot {
    /// Guards against stale commands after the id is reused.
    serial: u64,
    /// Where this connection's frames go.
    outbound: mpsc::UnboundedSender<Transmit>,
    /// Dropped to tell the connection's tasks to close the socket.
    _kill: oneshot::Sender<()>,
    /// For log lines about this connection.
    connection_id: String,
    /// For log lines about this connection.
    user_id: String,
}

/// The driver task's state.
pub(crate) struct Driver {
    /// The state machine; nothing else touches it.
    core: Core,
    /// Live connections by core handle.
    slots: HashMap<ConnId, Slot>,
    /// Next [`ConnKey::serial`].
    next_serial: u64,
    /// Counters and gauges for `/metrics`.
    metrics: Arc<Metrics>,
    /// Set true once shutdown began and the core holds no connection.
    drained: watch::Sender<bool>,
    /// Whether `handle_shutdown` has been called.
    shutting_down: bool,
    /// Messages dropped since start, for the periodic stats line (the
    /// metric is a labelled family, awkward to total).
    dropped: u64,
}

/// How often the driver logs a stats line.
const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Driver {
    /// A driver around `core`; `drained` turns true once a shutdown has
    /// closed every connection.
    pub(crate) fn new(core: Core, metrics: Arc<Metrics>, drained: watch::Sender<bool>) -> Driver {
        Driver {
            core,
            slots: HashMap::new(),
            next_serial: 0,
            metrics,
            drained,
            shutting_down: false,
            dropped: 0,
        }
    }

    /// Runs until both input channels are closed.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut ingest: mpsc::Receiver<Ingest>,
    ) {
        let mut ingest_open = true;
        let mut stats_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + STATS_INTERVAL, STATS_INTERVAL);
        loop {
            let deadline = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            let sleep = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                message = ingest.recv(), if ingest_open => match message {
                    Some(message) => self.on_ingest(message),
                    None => ingest_open = false,
                },
                () = sleep => {
                    let now = now();
                    self.core.handle_timeout(now);
                }
                _ = stats_timer.tick() => {
                    self.log_stats();
                    continue;
                }
            }
            self.drain();
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Open { open, reply } => {
                let remote = open.remote;
                match self.core.handle_open(now, open) {
                    Ok(conn) => {
                        let (tx, outbound) = mpsc::unbounded_channel();
                        let (kill_tx, kill) = oneshot::channel();
                        self.next_serial += 1;
                        let key = ConnKey {
                            conn,
                            serial: self.next_serial,
                        };
                        self.slots.insert(
                            conn,
                            Slot {
                                serial: key.serial,
                                outbound: tx,
                                _kill: kill_tx,
                                connection_id: String::new(),
                                user_id: String::new(),
                            },
                        );
                        if reply
                            .send(Ok(Attachment {
                                key,
                                outbound,
                                kill,
                            }))
                            .is_err()
                        {
                            // The HTTP handler is gone: the client will never
                            // upgrade, so the core must forget it.
                            self.slots.remove(&conn);
                            self.core.handle_closed(now, conn);
                        }
                    }
                    Err(refusal) => {
                        tracing::info!(%remote, %refusal, "connection refused");
                        let _ = reply.send(Err(refusal));
                    }
                }
            }
            Command::Shutdown => {
                if !self.shutting_down {
                    self.shutting_down = true;
                    self.core.handle_shutdown(now);
                }
            }
            Command::Text { key, payload } => {
                if self.is_live(key) {
                    self.metrics.messages_received.inc();
                    self.core.handle_text(now, key.conn, &payload);
                }
            }
            Command::Binary { key } => {
                if self.is_live(key) {
                    self.metrics.messages_received.inc();
                    self.core.handle_binary(now, key.conn);
                }
            }
            Command::Ping { key, payload } => {
                if self.is_live(key) {
                    self.metrics.messages_received.inc();
                    self.core.handle_ping(now, key.conn, &payload);
                }
            }
            Command::Pong { key } => {
                if self.is_live(key) {
                    self.metrics.messages_received.inc();
                    self.core.handle_activity(now, key.conn);
                }
            }
            Command::TooBig { key } => {
                if self.is_live(key) {
                    self.core.handle_frame_too_big(now, key.conn);
                }
            }
            Command::PeerClose { key } => {
                if self.is_live(key) {
                    self.metrics.messages_received.inc();
                    self.core.handle_peer_close(now, key.conn);
                }
            }
            Command::Closed { key } => {
                if self.is_live(key) {
                    self.slots.remove(&key.conn);
                    self.core.handle_closed(now, key.conn);
                }
            }
            Command::WriteComplete { key } => {
                if self.is_live(key) {
                    self.core.handle_write_complete(now, key.conn);
                }
            }
        }
    }

    fn on_ingest(&mut self, message: Ingest) {
        let Ingest {
            publish,
            taken,
            received_at,
            source,
        } = message;
        let outcome = self.core.handle_publish(now(), publish);
        if let Some(taken) = taken {
            let _ = taken.send(());
        }
        self.metrics
            .record_source_message(source, outcome.kind.as_str());
        if outcome.delivered > 0 {
            // The frames are handed to the writers in the drain that follows;
            // this is the ingest → hand-off latency, the part the server adds.
            self.metrics.record_publish_to_send(received_at.elapsed());
        }
    }

    fn is_live(&self, key: ConnKey) -> bool {
        self.slots
            .get(&key.conn)
            .is_some_and(|s| s.serial == key.serial)
    }

    /// Drains every output of the core, in the documented order.
    fn drain(&mut self) {
        while let Some(transmit) = self.core.poll_transmit() {
            let conn = transmit.conn;
            let delivered = self
                .slots
                .get(&conn)
                .is_some_and(|slot| slot.outbound.send(transmit).is_ok());
            if !delivered {
                // The writer is gone (its socket failed); the reader reports
                // `Closed` too, but tell the core now so it stops queueing.
                if self.slots.remove(&conn).is_some() {
                    self.core.handle_closed(now(), conn);
                }
            }
        }
        while let Some(conn) = self.core.poll_disconnect() {
            // Dropping the slot drops its kill sender: the tasks close the socket.
            self.slots.remove(&conn);
        }
        while let Some(event) = self.core.poll_event() {
            self.metrics.record_event(&event);
            if let Event::MessagesDropped { count, .. } = &event {
                self.dropped += count;
            }
            self.log(&event);
        }
        self.metrics.record_stats(self.core.stats());
        if self.shutting_down && self.core.is_drained() {
            self.drained.send_replace(true);
        }
    }

    fn log(&mut self, event: &Event) {
        match event {
            Event::Opened {
                conn,
                connection_id,
                user_id,
            } => {
                if let Some(slot) = self.slots.get_mut(conn) {
                    slot.connection_id.clone_from(connection_id);
                    slot.user_id.clone_from(user_id);
                }
                tracing::info!(conn = %conn, connection_id, user = user_id, "connection opened");
            }
            Event::Closed {
                conn,
                user_id,
                reason,
                duration,
            } => {
                let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                let reason = reason.as_str();
                if matches!(
                    event,
                    Event::Closed {
                        reason: CloseReason::SlowConsumer | CloseReason::RateLimitExceeded,
                        ..
                    }
                ) {
                    tracing::warn!(conn = %conn, user = user_id, reason, duration_ms, "connection closed");
                } else {
                    tracing::info!(conn = %conn, user = user_id, reason, duration_ms, "connection closed");
                }
            }
            Event::Subscribed { conn, channels } => {
                tracing::debug!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), ?channels, "subscribed");
            }
            Event::Unsubscribed { conn, channels } => {
                tracing::debug!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), ?channels, "unsubscribed");
            }
            Event::MessagesDropped {
                conn,
                count,
                reason,
            } => {
                tracing::debug!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), count, ?reason, "messages dropped");
            }
            Event::SlowConsumer { conn } => {
                tracing::warn!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), "slow consumer: closing with 1008");
            }
            Event::HeartbeatFailure { conn } => {
                tracing::info!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), "silent past the connection timeout: closing");
            }
            Event::RateLimited { conn } => {
                tracing::warn!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), "inbound rate limit hit");
            }
            Event::FrameRejected { conn, code } => {
                tracing::debug!(conn = %conn, connection_id = self.connection_id(*conn), user = self.user_id(*conn), code = code.as_str(), "client frame rejected");
            }
        }
    }

    fn log_stats(&self) {
        let stats = self.core.stats();
        tracing::info!(
            connections = stats.connections,
            subscriptions = stats.subscriptions,
            channels = stats.channels,
            messages_in = self.metrics.messages_received.get(),
            messages_out = self.metrics.messages_sent.get(),
            dropped = self.dropped,
            "stats"
        );
    }

    fn connection_id(&self, conn: ConnId) -> &str {
        self.slots
            .get(&conn)
            .map_or("", |s| s.connection_id.as_str())
    }

    fn user_id(&self, conn: ConnId) -> &str {
        self.slots.get(&conn).map_or("", |s| s.user_id.as_str())
    }
}

/// The driver's clock: tokio's, so turmoil's simulated time drives it too.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
