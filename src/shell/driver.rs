//! The driver: the one task that owns the [`Core`]. It waits on three inputs
//! (commands from connection tasks and the HTTP handler, messages from the
//! sources, and the core's next deadline), hands each to the core, and then
//! drains the core's outputs in the documented order: frames to the sockets,
//! sockets to drop, events to metrics and logs.
//!
//! It works in turns: a turn takes the inputs waiting, hands them to the
//! core, then drains the core's outputs. Under load a turn takes everything
//! already waiting before draining, so each socket gets one write carrying
//! every message of the turn: the busier it is, the fewer writes per
//! message. A turn takes at most half a client's queue of messages, so a
//! burst (a Kafka fetch after a stall) is written in several turns instead
//! of overflowing every queue at once.
//!
//! A drain writes every socket, which at a thousand subscribers takes
//! milliseconds. Every [`WRITES_PER_LOOK`] writes it lets the other tasks
//! run and takes the source messages that came meanwhile: each is told it
//! is taken (so an HTTP publisher is answered within a fraction of a drain,
//! not after it) and held for the next turn, where every socket gets it in
//! the one write of that turn. Without this, a publisher with a bounded
//! number of requests in flight gets one round of them per drain, and under
//! load its publishes are refused instead of the turns growing.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::{AuthError, Verifier};
use crate::core::{ConnId, ConnMap, Core, Event, Identity, Open, Output, Refusal, Stats, Transmit};
use crate::metrics::Metrics;
use crate::proto::client::RequestId;
use crate::shell::conn_log::{self, ConnLogs};
use crate::shell::link::Link;
use crate::shell::offload;
use crate::shell::workers::RoutedPublishes;
use crate::shell::write::{WriteStart, Written};
use crate::source::Ingest;

/// Most commands taken per round of [`Driver::take_waiting`].
const COMMANDS_PER_ROUND: usize = 256;

/// Most source messages in one turn, whatever the client queues allow.
/// A larger turn means fewer writes per message but not a cheaper
/// delivery: the fan-out fills every subscriber's queue with the whole turn
/// before the writes read it back. At the shared harness's 5 000 msg/s step
/// to 1 000 subscribers, turns of 128 messages (the default queue's half)
/// ran at 190-300 ns of server CPU per delivery from run to run and passed
/// the step 7 times in 11; 64 passed it 12 times in 14 and still carries
/// ~43 frames per write; 32 paid more in writes (BENCHMARKS.md, session 9).
const MAX_MESSAGES_PER_TURN: usize = 64;

/// Most rounds of yielding and taking before a drain.
const TAKE_ROUNDS: usize = 4;

/// Sockets written in a drain between two looks at the source messages.
const WRITES_PER_LOOK: usize = 128;

/// Inputs to the driver.
pub(crate) enum Command {
    /// Admit a connection (the HTTP handler waits for the answer). Boxed: it
    /// is by far the largest command, and every command's size is paid by
    /// each connection's serving task, idle or not.
    Open {
        open: Box<Open>,
        reply: oneshot::Sender<Result<ConnId, Refusal>>,
    },
    /// The admitted connection finished its upgrade: here is its socket.
    Attach { conn: ConnId, link: Arc<Link> },
    /// A complete text message.
    Text { conn: ConnId, payload: Bytes },
    /// A complete binary message.
    Binary { conn: ConnId },
    /// A WebSocket Ping.
    Ping { conn: ConnId, payload: Bytes },
    /// A WebSocket Pong (proof of life).
    Pong { conn: ConnId },
    /// A message over the inbound size limit.
    TooBig { conn: ConnId },
    /// A compressed message that is not valid DEFLATE.
    BadCompressedData { conn: ConnId },
    /// A frame no client may send: close 1002.
    ProtocolError { conn: ConnId },
    /// The client sent a close frame.
    PeerClose { conn: ConnId },
    /// The socket failed (`error`), hit EOF, or never finished upgrading.
    Closed {
        conn: ConnId,
        error: Option<std::io::Error>,
    },
    /// The connection's task handed the rest of a transmit to the kernel.
    WriteComplete { conn: ConnId, written: Written },
    /// Begin the graceful shutdown.
    Shutdown,
}

/// Where the driver's messages come from: the sources' queue itself (one
/// worker), or the routed publishes the router hands every worker.
pub(crate) trait Feed: Send + 'static {
    /// What one receive yields.
    type Item: Send;
    /// The next item; `None` once every sender is gone.
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + Send;
    /// An item already waiting.
    fn try_recv(&mut self) -> Option<Self::Item>;
    /// Hands `item` to the driver's core; returns how many messages it held.
    fn take(driver: &mut Driver, item: Self::Item) -> usize;
    /// Takes `item` while a drain writes: its sources hear it is taken now,
    /// the core gets it first thing next turn (see [`Driver::hold`]).
    fn hold(driver: &mut Driver, item: Self::Item);
}

impl Feed for mpsc::Receiver<Ingest> {
    type Item = Ingest;

    async fn recv(&mut self) -> Option<Ingest> {
        mpsc::Receiver::recv(self).await
    }

    fn try_recv(&mut self) -> Option<Ingest> {
        mpsc::Receiver::try_recv(self).ok()
    }

    #[inline]
    fn take(driver: &mut Driver, item: Ingest) -> usize {
        driver.on_ingest(item);
        1
    }

    fn hold(driver: &mut Driver, item: Ingest) {
        driver.hold(Held::Ingest(item));
    }
}

impl Feed for mpsc::Receiver<Arc<RoutedPublishes>> {
    type Item = Arc<RoutedPublishes>;

    async fn recv(&mut self) -> Option<Arc<RoutedPublishes>> {
        mpsc::Receiver::recv(self).await
    }

    fn try_recv(&mut self) -> Option<Arc<RoutedPublishes>> {
        mpsc::Receiver::try_recv(self).ok()
    }

    fn take(driver: &mut Driver, item: Arc<RoutedPublishes>) -> usize {
        driver.on_routed(&item)
    }

    fn hold(driver: &mut Driver, item: Arc<RoutedPublishes>) {
        driver.hold(Held::Routed(item));
    }
}

/// A source message (or a worker's routed publishes) taken while a drain wrote,
/// waiting for the next turn.
enum Held {
    /// From the sources' queue (one worker).
    Ingest(Ingest),
    /// From the router (several workers).
    Routed(Arc<RoutedPublishes>),
}

/// How a driver reports its core's gauges.
enum StatsReport {
    /// The only core: its counts are the totals.
    Whole,
    /// One worker of several: it adds its changes to the totals.
    Worker {
        /// What it reported last.
        before: Stats,
        /// Whether it reports history (every worker holds the same).
        history: bool,
        /// Its own connection gauge, to see the spread over workers.
        connections: prometheus_client::metrics::gauge::Gauge,
    },
}

/// The driver's view of one live connection. Dropping it closes the socket.
struct Slot {
    /// The socket, once the upgrade completed.
    link: Option<Arc<Link>>,
    /// A transmit the core sent before the socket was attached (the acks of
    /// a connect-time subscription); written at attach.
    parked: Option<Box<Transmit>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            link.close();
        }
    }
}

/// The driver task's state.
pub(crate) struct Driver {
    /// The state machine; nothing else touches it.
    core: Core,
    /// Live connections by core handle.
    slots: ConnMap<Slot>,
    /// Rate-limit throttles of the connections' log lines.
    logs: ConnLogs,
    /// Counters and gauges for `/metrics`.
    metrics: Arc<Metrics>,
    /// Set true once shutdown began and the core holds no connection.
    drained: watch::Sender<bool>,
    /// Whether `handle_shutdown` has been called.
    shutting_down: bool,
    /// Messages dropped since start, for the periodic stats line (the
    /// metric is a labelled family, awkward to total).
    dropped: u64,
    /// Most source messages taken before a drain: half a client's queue, so
    /// one turn can never overflow a healthy client's queue by itself.
    messages_per_turn: usize,
    /// Messages taken while the last drain wrote, in arrival order: already
    /// told they are taken, handed to the core first thing next turn (and
    /// counted in its messages), so each socket still gets one write per turn.
    held: Vec<Held>,
    /// Verifies `refresh` tokens in tasks of their own, so the driver never
    /// waits for crypto or a key fetch; `None` refuses every refresh.
    verifier: Option<Arc<Verifier>>,
    /// Where those tasks send their answers.
    verified_tx: mpsc::UnboundedSender<Verified>,
    /// The answers, taken by [`Driver::run`]. Unbounded but small: the core
    /// lets each connection have one token in verification at a time.
    verified_rx: Option<mpsc::UnboundedReceiver<Verified>>,
    /// The core's next deadline, as the last drain reported it
    /// ([`Output::Timeout`]); `None` when it has none, or once served.
    deadline: Option<Instant>,
    /// Whether its core's counts are the totals or one worker's share.
    report: StatsReport,
}

/// The outcome of verifying a `refresh` token.
struct Verified {
    /// The connection that asked.
    conn: ConnId,
    /// The request's id.
    id: Option<RequestId>,
    /// The identity, or why not.
    result: Result<Identity, AuthError>,
}

/// How often the driver logs a stats line.
const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Driver {
    /// A driver around `core`; `drained` turns true once a shutdown has
    /// closed every connection.
    pub(crate) fn new(
        core: Core,
        metrics: Arc<Metrics>,
        drained: watch::Sender<bool>,
        client_buffer_frames: usize,
    ) -> Driver {
        let (verified_tx, verified_rx) = mpsc::unbounded_channel();
        Driver {
            verifier: None,
            verified_tx,
            verified_rx: Some(verified_rx),
            messages_per_turn: messages_per_turn(client_buffer_frames),
            held: Vec::new(),
            core,
            slots: ConnMap::default(),
            logs: ConnLogs::default(),
            metrics,
            drained,
            shutting_down: false,
            dropped: 0,
            deadline: None,
            report: StatsReport::Whole,
        }
    }

    /// Makes this driver worker `index` of several: it reports its share
    /// of the gauges (history only from worker 0, since every worker holds
    /// the same).
    pub(crate) fn into_worker(mut self, index: usize) -> Driver {
        self.report = StatsReport::Worker {
            before: Stats::default(),
            history: index == 0,
            connections: self.metrics.worker_connections(index),
        };
        self
    }

    /// Lets `refresh` frames be verified with `verifier`.
    pub(crate) fn with_verifier(mut self, verifier: Arc<Verifier>) -> Driver {
        self.verifier = Some(verifier);
        self
    }

    /// Runs until both input channels are closed.
    pub(crate) async fn run<F: Feed>(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut ingest: F,
    ) {
        let mut ingest_open = true;
        let mut verified = self
            .verified_rx
            .take()
            .expect("run is called once, and only run takes the receiver");
        let mut stats_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + STATS_INTERVAL, STATS_INTERVAL);
        loop {
            // Messages held by the last drain go first: they came before
            // anything the select can take now.
            let held = self.publish_held();
            let deadline = self.deadline.map(tokio::time::Instant::from_std);
            let sleep = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => {
                        self.on_command(command);
                        self.take_waiting(&mut commands, &mut ingest, held).await;
                    }
                    None => break,
                },
                // A full turn held already: the ready branch drains it first.
                message = ingest.recv(), if ingest_open && held < self.messages_per_turn => match message {
                    Some(message) => {
                        let taken = F::take(&mut self, message);
                        self.take_waiting(&mut commands, &mut ingest, held + taken).await;
                    }
                    None => ingest_open = false,
                },
                () = sleep => {
                    self.serve_deadline(now());
                }
                Some(answer) = verified.recv() => self.on_verified(answer),
                _ = stats_timer.tick() => self.log_stats(),
                // The held messages are in the core: drain without waiting.
                () = std::future::ready(()), if held > 0 => {
                    self.take_waiting(&mut commands, &mut ingest, held).await;
                }
            }
            // The select prefers input, so under a steady stream of it the
            // timer branch is never reached: due deadlines (heartbeats,
            // silence, token expiry, JSON-array batch flushes) are served here too.
            let now = now();
            if self.deadline.is_some_and(|at| at <= now) {
                self.serve_deadline(now);
            }
            self.drain(&mut ingest).await;
        }
    }

    /// Hands the messages held by the last drain to the core, in order;
    /// returns how many there were.
    fn publish_held(&mut self) -> usize {
        let held = std::mem::take(&mut self.held);
        let mut count = 0;
        for item in held {
            count += match item {
                Held::Ingest(message) => {
                    self.on_ingest(message);
                    1
                }
                Held::Routed(routed) => self.publish_routed(&routed),
            };
        }
        count
    }

    /// Lets the tasks that are ready run first (the HTTP handlers of other
    /// publishes, the readers of other sockets), then takes everything they
    /// queued. Without the yield, tokio runs the driver the moment the first
    /// input wakes it, and every publish costs a write per socket.
    ///
    /// While messages keep coming it yields again (a few rounds at most), so
    /// the publishers' HTTP answers leave before the fan-out's writes rather
    /// than after them, and publishes that arrive meanwhile join the turn:
    /// the turns grow with the load, up to `messages_per_turn` messages
    /// (`taken` of them already are).
    async fn take_waiting<F: Feed>(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        ingest: &mut F,
        mut taken: usize,
    ) {
        for _ in 0..TAKE_ROUNDS {
            tokio::task::yield_now().await;
            for _ in 0..COMMANDS_PER_ROUND {
                let Ok(command) = commands.try_recv() else {
                    break;
                };
                self.on_command(command);
            }
            let before = taken;
            while taken < self.messages_per_turn {
                let Some(message) = ingest.try_recv() else {
                    break;
                };
                taken += F::take(self, message);
            }
            if taken == before || taken >= self.messages_per_turn {
                break;
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Open { open, reply } => {
                let remote = open.remote;
                match self.core.handle_open(now, *open) {
                    Ok(conn) => {
                        self.slots.insert(
                            conn,
                            Slot {
                                link: None,
                                parked: None,
                            },
                        );
                        if reply.send(Ok(conn)).is_err() {
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
            Command::Text { conn, payload } => {
                if self.is_live(conn) {
                    self.metrics.messages_received.inc();
                    self.core.handle_text(now, conn, &payload);
                }
            }
            Command::Binary { conn } => {
                if self.is_live(conn) {
                    self.metrics.messages_received.inc();
                    self.core.handle_binary(now, conn);
                }
            }
            Command::Ping { conn, payload } => {
                if self.is_live(conn) {
                    self.metrics.messages_received.inc();
                    self.core.handle_ping(now, conn, &payload);
                }
            }
            Command::Pong { conn } => {
                if self.is_live(conn) {
                    self.metrics.messages_received.inc();
                    self.core.handle_activity(now, conn);
                }
            }
            Command::TooBig { conn } => {
                if self.is_live(conn) {
                    self.core.handle_frame_too_big(now, conn);
                }
            }
            Command::BadCompressedData { conn } => {
                if self.is_live(conn) {
                    self.core.handle_bad_compressed_data(now, conn);
                }
            }
            Command::ProtocolError { conn } => {
                if self.is_live(conn) {
                    self.core.handle_protocol_violation(now, conn);
                }
            }
            Command::PeerClose { conn } => {
                if self.is_live(conn) {
                    self.metrics.messages_received.inc();
                    self.core.handle_peer_close(now, conn);
                }
            }
            Command::Attach { conn, link } => {
                let Some(slot) = self.slots.get_mut(&conn) else {
                    // Dropped while upgrading (a shutdown, say).
                    link.close();
                    return;
                };
                slot.link = Some(link.clone());
                if let Some(transmit) = slot.parked.take() {
                    self.write(now, &link, *transmit);
                }
            }
            Command::Closed { conn, error } => {
                if self.is_live(conn) {
                    if let Some(error) = error {
                        tracing::debug!(conn = %conn, connection_id = conn_log::connection_id(&self.core, conn), user = conn_log::user(&self.core, conn), %error, "socket ended");
                    }
                    self.slots.remove(&conn);
                    self.core.handle_closed(now, conn);
                }
            }
            Command::WriteComplete { conn, written } => {
                written.record(&self.metrics);
                if self.is_live(conn) {
                    self.core.handle_write_complete(now, conn);
                }
            }
        }
    }

    /// Hands a verified (or refused) `refresh` token back to the core.
    fn on_verified(&mut self, answer: Verified) {
        let Verified { conn, id, result } = answer;
        if !self.is_live(conn) {
            return;
        }
        let now = now();
        match result {
            Ok(identity) => self.core.handle_refresh_verified(now, conn, id, identity),
            Err(error) => {
                tracing::info!(conn = %conn, connection_id = conn_log::connection_id(&self.core, conn), user = conn_log::user(&self.core, conn), error = error.code(), "refresh refused");
                self.core
                    .handle_refresh_rejected(now, conn, id, error.code(), &error.to_string());
            }
        }
    }

    /// Starts verifying a `refresh` token in a task of its own.
    fn verify_refresh(&mut self, request: crate::core::VerifyRequest) {
        let conn = request.conn;
        if !self.is_live(conn) {
            return;
        }
        let answers = self.verified_tx.clone();
        let Some(verifier) = self.verifier.clone() else {
            let result = Err(AuthError::AlgorithmNotAllowed {
                alg: "any".to_owned(),
                accepted: "no token at all: refresh is not configured".to_owned(),
            });
            let _ = answers.send(Verified {
                conn,
                id: request.id,
                result,
            });
            return;
        };
        tokio::spawn(async move {
            let now_unix_secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let (checker, token) = (verifier.clone(), request.token.clone());
            let mut result =
                offload::off_the_workers(move || checker.verify(&token, now_unix_secs)).await;
            // An unknown key may be a rotation: fetch the JWKS again
            // (rate-limited inside) and check once more.
            if matches!(result, Err(AuthError::UnknownKey { .. }))
                && verifier.refetch_for_unknown_kid().await
            {
                let token = request.token.clone();
                result =
                    offload::off_the_workers(move || verifier.verify(&token, now_unix_secs)).await;
            }
            let _ = answers.send(Verified {
                conn,
                id: request.id,
                result,
            });
        });
    }

    /// Takes a message while a drain writes: tells its source it is taken
    /// and holds it for the next turn.
    fn hold(&mut self, mut item: Held) {
        match &mut item {
            Held::Ingest(message) => {
                if let Some(taken) = message.taken.take() {
                    let _ = taken.send(());
                }
            }
            Held::Routed(routed) => routed.taken_by_one(),
        }
        self.held.push(item);
    }

    fn on_ingest(&mut self, message: Ingest) {
        let Ingest {
            publish,
            taken,
            received_at,
            source,
        } = message;
        let outcome = self
            .core
            .handle_publish_ingested(now(), publish, received_at);
        if let Some(taken) = taken {
            let _ = taken.send(());
        }
        self.metrics
            .record_source_message(source, outcome.kind.as_str());
    }

    /// Hands routed publishes to the core, then tells the router this worker
    /// has taken them; returns how many messages they held.
    fn on_routed(&mut self, routed: &RoutedPublishes) -> usize {
        let count = self.publish_routed(routed);
        routed.taken_by_one();
        count
    }

    /// Hands routed publishes' messages to the core; returns how many.
    fn publish_routed(&mut self, routed: &RoutedPublishes) -> usize {
        let now = now();
        for message in &routed.messages {
            self.core
                .handle_publish_routed(now, &message.routed, message.received_at);
        }
        routed.messages.len()
    }

    /// Whether `conn` still has its slot: commands from a dead connection's
    /// tasks carry an older generation of the id and find none.
    fn is_live(&self, conn: ConnId) -> bool {
        self.slots.get(&conn).is_some()
    }

    /// Writes `transmit` into its socket, or parks it until the socket is
    /// attached. A write that completes at once is reported to the core
    /// right away, so the next transmit can follow in the same drain.
    fn write(&mut self, now: Instant, link: &Link, transmit: Transmit) {
        let conn = transmit.conn;
        match link.start_write(transmit) {
            WriteStart::Done(written) => {
                written.record(&self.metrics);
                self.core.handle_write_complete(now, conn);
            }
            WriteStart::HandedOver => {}
            WriteStart::Failed(error) => {
                tracing::debug!(conn = %conn, connection_id = conn_log::connection_id(&self.core, conn), user = conn_log::user(&self.core, conn), %error, "write failed");
                self.slots.remove(&conn);
                self.core.handle_closed(now, conn);
            }
        }
    }

    /// Tells the core its deadline has passed. The next deadline is known
    /// again after the drain that follows.
    fn serve_deadline(&mut self, now: Instant) {
        self.deadline = None;
        self.core.handle_timeout(now);
    }

    /// Drains every output of the core, in the order it gives them: frames
    /// to write, sockets to drop, events, and last its next deadline. Every
    /// [`WRITES_PER_LOOK`] writes it yields and holds the source messages
    /// that came meanwhile (see [`Driver::hold`]), up to a turn's worth.
    async fn drain<F: Feed>(&mut self, ingest: &mut F) {
        let mut now = now();
        let mut writes = 0;
        // A deadline the inputs of this turn made due already (a JSON-array
        // batch flush with no delay) is served at once, but only once per drain,
        // so a timer that keeps coming due cannot hold the driver here.
        let mut served_due = false;
        loop {
            match self.core.poll_output() {
                Some(Output::Transmit(transmit)) => {
                    let Some(slot) = self.slots.get_mut(&transmit.conn) else {
                        // The core queued for a connection whose socket is gone
                        // (the slot was dropped without the core being told).
                        self.core.handle_closed(now, transmit.conn);
                        continue;
                    };
                    match slot.link.clone() {
                        Some(link) => self.write(now, &link, transmit),
                        None => slot.parked = Some(Box::new(transmit)),
                    }
                    writes += 1;
                    if writes % WRITES_PER_LOOK == 0 && self.held.len() < self.messages_per_turn {
                        // Lets the publishers' tasks read their requests,
                        // and answer the ones held at the last look.
                        tokio::task::yield_now().await;
                        while self.held.len() < self.messages_per_turn {
                            let Some(item) = ingest.try_recv() else {
                                break;
                            };
                            F::hold(self, item);
                        }
                        now = self::now();
                    }
                }
                Some(Output::Disconnect(conn)) => {
                    // Dropping the slot tells the connection's task to close the socket.
                    self.slots.remove(&conn);
                }
                Some(Output::Event(event)) => {
                    self.metrics.record_event(&event);
                    if let Event::MessagesDropped { count, .. } = &event {
                        self.dropped += count;
                    }
                    self.logs.record(&self.core, &event, now);
                }
                Some(Output::Verify(request)) => self.verify_refresh(request),
                Some(Output::Timeout(at)) if at <= now && !served_due => {
                    served_due = true;
                    self.serve_deadline(now);
                }
                Some(Output::Timeout(at)) => {
                    self.deadline = Some(at);
                    break;
                }
                None => {
                    self.deadline = None;
                    break;
                }
            }
        }
        match &mut self.report {
            StatsReport::Whole => self.metrics.record_stats(self.core.stats()),
            StatsReport::Worker {
                before,
                history,
                connections,
            } => {
                let stats = self.core.stats();
                if stats != *before {
                    self.metrics.record_worker_stats(before, &stats, *history);
                    connections.set(stats.connections as i64);
                    *before = stats;
                }
            }
        }
        // The highest of every worker's peak (each worker sees its own).
        let peak = self.core.outbound_peak_bytes() as i64;
        if peak > self.metrics.outbound_peak_bytes.get() {
            self.metrics.outbound_peak_bytes.set(peak);
        }
        if self.shutting_down && self.core.is_drained() {
            self.drained.send_replace(true);
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
}

/// Most source messages taken before a drain for a client queue of
/// `client_buffer_frames`: half of it, so one turn can never overflow a
/// healthy client's queue by itself (the router hands out publishes by the
/// same bound).
pub(crate) fn messages_per_turn(client_buffer_frames: usize) -> usize {
    (client_buffer_frames / 2).clamp(1, MAX_MESSAGES_PER_TURN)
}

/// The driver's clock: tokio's, so turmoil's simulated time drives it too.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
