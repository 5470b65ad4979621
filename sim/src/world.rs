//! One simulated world per run: the turmoil simulation with its seed, the
//! real server on host `server` (fed by the fake source) and optionally more
//! replicas fed by the same feed, the shared recorder, and small
//! coordination helpers the scenarios' hosts share.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use ws_realtime::config::ServerConfig;
use ws_realtime::core::SlowClientPolicy;
use ws_realtime::metrics::{Metrics, ReasonLabel};
use ws_realtime::shell::{Observers, run_observed};
use ws_realtime::shutdown::{self, Shutdown, ShutdownTrigger};
use ws_realtime::source::{Readiness, Source};

use crate::accept::TurmoilAccept;
use crate::client::ClientOptions;
use crate::fake_source::{FakeSource, Feed, fake_sources, slot};
use crate::recorder::{Happening, Recorder, ServerSample};
use crate::send_buffer::SendBuffers;

/// The server's turmoil host name.
pub const SERVER: &str = "server";

/// The turmoil host name of server replica `index`: [`SERVER`] for 0 (the
/// one whose metrics are sampled), `server<index>` for the others.
pub fn replica_host(index: usize) -> String {
    if index == 0 {
        SERVER.to_owned()
    } else {
        format!("{SERVER}{index}")
    }
}

/// The port the server listens on.
pub const PORT: u16 = 9000;

/// The HS256 secret the simulated server verifies tokens with.
pub const SECRET: &[u8] = b"simulation-secret-simulation-secret";

/// How often the server host samples its metrics into the trace.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// Channel `index` of the scenarios' channel set.
pub fn channel(index: usize) -> String {
    format!("ch{index}")
}

/// The partition channel `index` is published in: several channels share a
/// partition, so per-partition order spans channels.
pub fn partition_of(index: usize) -> i32 {
    i32::try_from(index % 3).expect("index % 3 fits")
}

/// A token for `sub`, valid long past any simulated run.
pub fn token(sub: &str) -> String {
    sign(sub, SECRET)
}

/// A token for `sub` that expires `secs` from now (wall clock, which the
/// server's core anchors its simulated clock to).
pub fn token_expiring(sub: &str, secs: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs();
    let claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + secs});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("HS256 signing of a JSON object cannot fail")
}

/// A well-formed token signed with the wrong secret.
pub fn forged_token(sub: &str) -> String {
    sign(sub, b"not-the-server-secret-not-the-server")
}

fn sign(sub: &str, secret: &[u8]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs();
    let claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + 365 * 24 * 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of a JSON object cannot fail")
}

/// The server configuration the scenarios start from: short timers, so
/// heartbeats and timeouts happen within a few simulated seconds.
pub fn sim_config() -> ServerConfig {
    let mut config = ServerConfig::for_testing(SECRET);
    config.core.server_id = "sim".to_owned();
    config.core.heartbeat_interval = Duration::from_secs(1);
    config.core.connection_timeout = Duration::from_secs(3);
    config.core.slow_close_grace = Duration::from_secs(1);
    config.core.client_buffer_frames = 64;
    config.core.slow_client_policy = SlowClientPolicy::Disconnect;
    config.shutdown_timeout = Duration::from_secs(3);
    config.handshake_timeout = Duration::from_secs(5);
    config
}

/// A counter hosts raise and wait on (e.g. "clients ready").
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// How many have arrived.
    count: Arc<AtomicUsize>,
}

impl Gate {
    /// One more has arrived.
    pub fn arrive(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// How many have arrived.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits (bounded, in simulated time) until `n` have arrived.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.count() < n {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "gate: {} of {n} arrived within {limit:?}",
                    self.count()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// A one-way flag hosts set and wait on (e.g. "publishing is over").
#[derive(Debug, Clone, Default)]
pub struct Flag {
    /// Whether it is set.
    set: Arc<AtomicBool>,
}

impl Flag {
    /// Sets it.
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Waits (bounded, in simulated time) until it is set.
    pub async fn wait(&self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.is_set() {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("flag not set within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// Everything one run shares between its hosts.
#[derive(Clone)]
pub struct World {
    /// The run's seed (turmoil's network and the scenario's own choices).
    pub seed: u64,
    /// The run's log.
    pub recorder: Recorder,
    /// Scripts the fake source.
    pub feed: Feed,
    /// The server's metrics, read for samples.
    pub metrics: Arc<Metrics>,
    /// The server's readiness, as `/ready` reports it.
    pub readiness: Readiness,
    /// Fires the server's graceful shutdown.
    trigger: Arc<ShutdownTrigger>,
    /// The server's side of the shutdown signal.
    shutdown: Shutdown,
    /// Simulated time at which the server's `run` returned, if it has.
    pub server_finished: Arc<Mutex<Option<Duration>>>,
    /// Every server socket's send buffer, in bytes (turmoil counts
    /// segments); its limit is the server's `socket_send_buffer`.
    pub send_buffers: SendBuffers,
}

impl World {
    /// A fresh world for `seed`, and the source to hand to the server. New
    /// scenarios use [`World::builder`], which also starts the server.
    pub fn new(seed: u64) -> (World, FakeSource) {
        let (world, mut sources) = World::replicated(seed, 1);
        (world, sources.remove(0))
    }

    /// A fresh world whose one feed drives `replicas` sources (the same
    /// messages at the same positions, as Kafka in broadcast mode), one per
    /// server replica: hand source `i` to [`World::start_replica`] `i`. Only
    /// the last replica's source logs what it takes (see
    /// [`crate::fake_source::fake_sources`]).
    pub fn replicated(seed: u64, replicas: usize) -> (World, Vec<FakeSource>) {
        let recorder = Recorder::new();
        let (feed, sources) = fake_sources(recorder.clone(), replicas);
        let (trigger, shutdown) = shutdown::channel();
        let world = World {
            seed,
            recorder,
            feed,
            metrics: Arc::new(Metrics::new()),
            readiness: Readiness::default(),
            trigger: Arc::new(trigger),
            shutdown,
            server_finished: Arc::new(Mutex::new(None)),
            send_buffers: SendBuffers::default(),
        };
        (world, sources)
    }

    /// The scenario's own random choices, derived from the seed.
    pub fn rng(&self, stream: u64) -> SmallRng {
        SmallRng::seed_from_u64(self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A turmoil simulation seeded with the run's seed.
    pub fn sim(&self, duration: Duration) -> turmoil::Sim<'static> {
        self.sim_builder(duration).build()
    }

    /// The builder [`World::sim`] builds, for a scenario that changes a
    /// network setting (e.g. `tcp_capacity`: turmoil bounds a stream by
    /// segments, 64 by default, and its listeners' accept queues too).
    pub fn sim_builder(&self, duration: Duration) -> turmoil::Builder {
        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(self.seed)
            .simulation_duration(duration)
            .tick_duration(Duration::from_millis(2))
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(40))
            // A fixed epoch: wall-clock timestamps are part of the trace's
            // inputs, so they must not depend on when the test runs.
            .epoch(UNIX_EPOCH + Duration::from_secs(1_780_000_000));
        builder
    }

    /// Runs the real server on host [`SERVER`] with `config` and the fake
    /// source, sampling its metrics into the trace every [`SAMPLE_PERIOD`].
    pub fn start_server(
        &self,
        sim: &mut turmoil::Sim<'static>,
        config: ServerConfig,
        source: FakeSource,
    ) {
        self.start_replica(sim, 0, config, source);
    }

    /// Runs server replica `index` on host [`replica_host`]`(index)`. Replica
    /// 0 is [`World::start_server`]'s server; the others have their own
    /// metrics and readiness (not sampled) and share the shutdown signal.
    pub fn start_replica(
        &self,
        sim: &mut turmoil::Sim<'static>,
        index: usize,
        config: ServerConfig,
        source: FakeSource,
    ) {
        let source = slot(source);
        self.send_buffers.set_limit(config.socket_send_buffer);
        let world = self.clone();
        sim.host(replica_host(index), move || {
            let mut world = world.clone();
            let config = config.clone();
            let source = source.lock().expect("not poisoned").take();
            async move {
                let accept = TurmoilAccept::bind(PORT, world.send_buffers.clone()).await?;
                if index == 0 {
                    let sampler = world.clone();
                    tokio::spawn(async move {
                        // Bounded: a run never lasts longer than this many periods.
                        for _ in 0..1200 {
                            sampler.sample();
                            tokio::time::sleep(SAMPLE_PERIOD).await;
                        }
                    });
                } else {
                    world.metrics = Arc::new(Metrics::new());
                    world.readiness = Readiness::default();
                }
                let sources: Vec<Box<dyn Source>> = source
                    .into_iter()
                    .map(|source| Box::new(source) as Box<dyn Source>)
                    .collect();
                let observers = Observers {
                    readiness: world.readiness.clone(),
                    metrics: world.metrics.clone(),
                };
                run_observed(accept, config, sources, world.shutdown.clone(), observers).await?;
                if index == 0 {
                    *world.server_finished.lock().expect("not poisoned") = turmoil::sim_elapsed();
                    world.sample();
                }
                Ok(())
            }
        });
    }

    /// Records the server's figures now.
    pub fn sample(&self) {
        let dropped_oldest = self
            .metrics
            .messages_dropped
            .get_or_create(&ReasonLabel {
                reason: "drop_oldest".to_owned(),
            })
            .get()
            // Conflated messages are skipped values of a slow client, as
            // drops are: the checker allows a paused client either.
            + self.metrics.messages_conflated.get();
        let sample = ServerSample {
            connections: self.metrics.connections.get(),
            subscriptions: self.metrics.subscriptions.get(),
            channels: self.metrics.channels.get(),
            heartbeat_failures: self.metrics.heartbeat_failures.get(),
            slow_consumer_disconnects: self.metrics.slow_consumer_disconnects.get(),
            dropped_oldest,
            outbound_bytes: self.metrics.outbound_bytes.get(),
            outbound_peak_bytes: self.metrics.outbound_peak_bytes.get(),
            socket_unread_bytes: self.send_buffers.unread_total(),
        };
        self.recorder.record(Happening::ServerSample(sample));
    }

    /// Starts the server's graceful shutdown.
    pub fn shutdown(&self) {
        self.trigger.trigger();
    }

    /// Connect options for a client named `name` with a valid token.
    pub fn client(&self, name: &str, channels: &[String]) -> ClientOptions {
        self.client_of(0, name, channels)
    }

    /// Connect options for a client of replica `index`.
    pub fn client_of(&self, index: usize, name: &str, channels: &[String]) -> ClientOptions {
        ClientOptions {
            name: name.to_owned(),
            server: replica_host(index),
            port: PORT,
            token: token(name),
            channels: channels.to_vec(),
            send_buffers: self.send_buffers.clone(),
        }
    }

    /// How many messages the core has taken so far.
    pub fn taken(&self) -> usize {
        self.recorder
            .count(|what| matches!(what, Happening::Published { .. }))
    }

    /// Waits (bounded) until the core has taken `n` messages.
    pub async fn wait_taken(&self, n: usize, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.taken() < n {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the core took {} of {n} messages within {limit:?}",
                    self.taken()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}
