//! Setting up one run the way every scenario does: [`World::builder`] picks
//! the replicas and their configuration, starts them on a seeded simulation,
//! and returns a [`Run`] the scenario adds its hosts to (steady subscribers,
//! its own hosts, the feeder) before [`Run::finish`] runs it and hands back
//! the trace for the checker.
//!
//! ```no_run
//! # use sim::run::*; use sim::world::*; use std::time::Duration;
//! # fn scenario(seed: u64) -> Result<sim::recorder::Trace, String> {
//! let mut run = World::builder().configure(|c| c.core.client_buffer_frames = 32).start(seed);
//! run.subscriber(Subscriber::new("steady", vec![channel(0)]));
//! run.feeder(FeedEnd::default(), |steps| async move {
//!     steps.world.feed.publish(&channel(0), partition_of(0));
//!     Ok(1)
//! });
//! run.finish()
//! # }
//! ```

use std::time::Duration;

use ws_realtime::config::ServerConfig;
use ws_realtime::core::SlowClientPolicy;

use crate::recorder::Trace;
use crate::world::{World, sim_config};

pub use crate::steps::{FeedEnd, Part, Steps, Subscriber};

/// How long a run may last in simulated time unless the scenario says.
const DEFAULT_DURATION: Duration = Duration::from_secs(60);

/// Chooses a run's replicas and their configuration; see [`World::builder`].
#[derive(Clone)]
pub struct WorldBuilder {
    /// One configuration per replica (replica 0 is the sampled one).
    configs: Vec<ServerConfig>,
    /// The simulation's length in simulated time.
    duration: Duration,
    /// Turmoil's bound per stream in segments (and of each listener's
    /// accept queue), if not its default of 64.
    tcp_capacity: Option<usize>,
}

impl World {
    /// A run with one replica on [`sim_config`] for 60 simulated seconds.
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            configs: vec![sim_config()],
            duration: DEFAULT_DURATION,
            tcp_capacity: None,
        }
    }
}

impl WorldBuilder {
    /// `n` replicas fed by one feed (as Kafka in broadcast mode), each with
    /// the configuration so far.
    pub fn replicas(mut self, n: usize) -> Self {
        assert!(n >= 1, "a run has at least one replica");
        let first = self.configs[0].clone();
        self.configs.resize(n, first);
        self
    }

    /// Changes every replica's configuration.
    pub fn configure(mut self, change: impl Fn(&mut ServerConfig)) -> Self {
        self.configs.iter_mut().for_each(change);
        self
    }

    /// Changes replica `index`'s configuration only.
    pub fn configure_replica(
        mut self,
        index: usize,
        change: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        change(&mut self.configs[index]);
        self
    }

    /// The slow-client policy of every replica.
    pub fn policy(self, policy: SlowClientPolicy) -> Self {
        self.configure(|config| config.core.slow_client_policy = policy)
    }

    /// The simulation's length in simulated time.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Turmoil's bound per stream, in segments (one per write), and of each
    /// listener's accept queue: raise it when the modelled send buffer
    /// (`sim::send_buffer`) must be what fills, or many clients connect.
    pub fn tcp_capacity(mut self, segments: usize) -> Self {
        self.tcp_capacity = Some(segments);
        self
    }

    /// Replica 0's configuration, for scenarios that derive timings from it.
    pub fn config(&self) -> &ServerConfig {
        &self.configs[0]
    }

    /// Builds the world for `seed` and starts every replica on it.
    pub fn start(self, seed: u64) -> Run {
        let (world, sources) = World::replicated(seed, self.configs.len());
        let mut builder = world.sim_builder(self.duration);
        if let Some(segments) = self.tcp_capacity {
            builder.tcp_capacity(segments);
        }
        let mut sim = builder.build();
        for (index, (config, source)) in self.configs.into_iter().zip(sources).enumerate() {
            world.start_replica(&mut sim, index, config, source);
        }
        Run {
            steps: Steps::new(world.clone()),
            world,
            sim,
            members: 0,
            leavers: 0,
        }
    }
}

/// One run being set up: the started replicas, the simulation, and the
/// coordination the hosts share.
pub struct Run {
    /// The run's shared state (feed, recorder, metrics of replica 0).
    pub world: World,
    /// The turmoil simulation; scenarios may add hosts to it directly.
    pub sim: turmoil::Sim<'static>,
    /// The gates and flags every host of this run shares.
    pub steps: Steps,
    /// Hosts that arrive at `ready` before the feed starts.
    members: usize,
    /// Hosts that arrive at `left` after the feed is over.
    leavers: usize,
}

impl Run {
    /// Adds a client host `name` running `body`, counted as `part` says so
    /// the feeder waits for it.
    pub fn client<F>(&mut self, name: &str, part: Part, body: impl FnOnce(Steps) -> F)
    where
        F: Future<Output = turmoil::Result> + 'static,
    {
        if matches!(part, Part::Member) {
            self.members += 1;
        }
        if matches!(part, Part::Member | Part::Leaver) {
            self.leavers += 1;
        }
        self.sim.client(name, body(self.steps.clone()));
    }

    /// Adds a steady subscriber (see [`Subscriber`]); a [`Part::Member`].
    pub fn subscriber(&mut self, subscriber: Subscriber) {
        let name = subscriber.name.clone();
        self.client(&name, Part::Member, |steps| steps.steady(subscriber));
    }

    /// Adds the feeder: it waits until every member is ready, sets
    /// `started`, runs `feed` (which returns how many messages it published)
    /// and winds the run down as `end` says (see [`Steps::wind_down`]).
    pub fn feeder<F>(&mut self, end: FeedEnd, feed: impl FnOnce(Steps) -> F + 'static)
    where
        F: Future<Output = turmoil::Result<usize>> + 'static,
    {
        let (members, leavers) = (self.members, self.leavers);
        let steps = self.steps.clone();
        self.sim.client("feeder", async move {
            steps
                .ready
                .wait_for(members, Duration::from_secs(20))
                .await?;
            steps.started.set();
            let sent = feed(steps.clone()).await?;
            steps.wind_down(sent, leavers, end).await
        });
    }

    /// Runs the simulation to its end; the trace for the checker.
    pub fn finish(mut self) -> Result<Trace, String> {
        self.sim
            .run()
            .map_err(|error| format!("simulation failed: {error}"))?;
        Ok(self.world.recorder.trace())
    }

    /// Runs the simulation step by step, calling `before_step` before each
    /// step (e.g. to crash a host once a flag is set); the trace.
    pub fn finish_stepping(
        mut self,
        mut before_step: impl FnMut(&mut turmoil::Sim<'static>),
    ) -> Result<Trace, String> {
        loop {
            before_step(&mut self.sim);
            if self
                .sim
                .step()
                .map_err(|error| format!("simulation failed: {error}"))?
            {
                break;
            }
        }
        Ok(self.world.recorder.trace())
    }
}
