//! The steps the scenarios' hosts share: the gates and flags that order a
//! run (everyone ready → feed → quiesce → everyone leaves → last sample), a
//! steady subscriber, connecting with channels, and the feeder's wind-down.
//! The run's order, in one place:
//!
//! 1. members connect and subscribe, then arrive at `ready`;
//! 2. the feeder waits for them, sets `started`, publishes;
//! 3. once the core took everything and it had time to arrive, the feeder
//!    records `Quiesced` (the checker's "owed by now" point) and sets `done`;
//! 4. leavers leave and arrive at `left`; the feeder waits for them and
//!    takes the last server sample (the empty-tables check reads it).

use std::time::Duration;

use crate::client::SimClient;
use crate::recorder::Happening;
use crate::world::{Flag, Gate, World};

/// How long a host waits for the run's `done` before it gives up.
const DONE_WAIT: Duration = Duration::from_secs(40);

/// What a host takes part in, so the feeder knows whom to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Arrives at `ready` before the feed starts and at `left` after it.
    Member,
    /// Arrives at `left` only (it joins during the feed, or does not
    /// subscribe before it).
    Leaver,
    /// Neither: its end is its own (refused, closed mid-run, a crash).
    Bystander,
}

/// The gates and flags of one run, shared by its hosts (cheap to clone).
#[derive(Clone)]
pub struct Steps {
    /// The run's shared state.
    pub world: World,
    /// Members that are connected and subscribed.
    pub ready: Gate,
    /// Leavers that have left.
    pub left: Gate,
    /// Set by the feeder once every member is ready, before it publishes.
    pub started: Flag,
    /// Set by the feeder at the quiesce point: clients leave then.
    pub done: Flag,
}

/// A client that subscribes, reads everything and leaves when the run is
/// done: the scenarios' well-behaved majority.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Its host and trace name.
    pub name: String,
    /// The channels it wants.
    pub channels: Vec<String>,
    /// Subscribe with `?channels=` at connect (else with a `subscribe` frame).
    pub at_connect: bool,
    /// Fail the run if the server closed it before it left.
    pub stays_open: bool,
    /// The replica it connects to.
    pub replica: usize,
}

impl Subscriber {
    /// `name` subscribing to `channels` at connect, on replica 0, allowed to
    /// be closed (the checker still owes it nothing after its close).
    pub fn new(name: impl Into<String>, channels: Vec<String>) -> Subscriber {
        Subscriber {
            name: name.into(),
            channels,
            at_connect: true,
            stays_open: false,
            replica: 0,
        }
    }

    /// Subscribes with a `subscribe` frame after `connected` instead.
    pub fn by_frame(mut self) -> Subscriber {
        self.at_connect = false;
        self
    }

    /// Must still be open when the run is done.
    pub fn stays_open(mut self) -> Subscriber {
        self.stays_open = true;
        self
    }
}

/// How the feeder winds the run down after its last publish; the defaults
/// suit a server on `sim_config`.
#[derive(Debug, Clone, Copy)]
pub struct FeedEnd {
    /// After the core took everything: time for the last deliveries to
    /// cross the network before the quiesce point.
    pub settle: Duration,
    /// How long leavers get to leave.
    pub leave_limit: Duration,
    /// After the last leaver: time for the server to see the closes before
    /// the last sample.
    pub linger: Duration,
}

impl Default for FeedEnd {
    fn default() -> FeedEnd {
        FeedEnd {
            settle: Duration::from_secs(1),
            leave_limit: Duration::from_secs(30),
            linger: Duration::from_millis(500),
        }
    }
}

impl FeedEnd {
    /// The same, with `settle` as the settling time.
    pub fn settle(self, settle: Duration) -> FeedEnd {
        FeedEnd { settle, ..self }
    }
}

impl Steps {
    /// Fresh gates and flags for `world`.
    pub fn new(world: World) -> Steps {
        Steps {
            world,
            ready: Gate::default(),
            left: Gate::default(),
            started: Flag::default(),
            done: Flag::default(),
        }
    }

    /// Connects `name` to replica `replica` with `channels` at connect and
    /// waits for `connected` and the subscription.
    pub async fn connect_subscribed(
        &self,
        replica: usize,
        name: &str,
        channels: &[String],
    ) -> Result<SimClient, Box<dyn std::error::Error>> {
        let options = self.world.client_of(replica, name, channels);
        let client = SimClient::connect(options, self.world.recorder.clone()).await?;
        client.wait_connected().await?;
        client.wait_subscribed(channels).await?;
        Ok(client)
    }

    /// Waits (bounded) for the run's `done`.
    pub async fn wait_done(&self) -> Result<(), String> {
        self.done.wait(DONE_WAIT).await
    }

    /// Leaves and arrives at `left`.
    pub async fn leave(&self, client: SimClient) {
        client.leave().await;
        self.left.arrive();
    }

    /// The steady subscriber's whole life: connect, subscribe, arrive at
    /// `ready`, read until `done`, leave.
    pub async fn steady(self, subscriber: Subscriber) -> turmoil::Result {
        let Subscriber {
            name,
            channels,
            at_connect,
            stays_open,
            replica,
        } = subscriber;
        let at_connect_channels = if at_connect {
            channels.clone()
        } else {
            Vec::new()
        };
        let options = self.world.client_of(replica, &name, &at_connect_channels);
        let mut client = SimClient::connect(options, self.world.recorder.clone()).await?;
        client.wait_connected().await?;
        if !at_connect && !channels.is_empty() {
            client.subscribe(&channels).await?;
        }
        client.wait_subscribed(&channels).await?;
        self.ready.arrive();
        self.wait_done().await?;
        if stays_open && let Some(closed) = client.state().closed {
            return Err(format!("{name} was closed: {closed:?}").into());
        }
        self.leave(client).await;
        Ok(())
    }

    /// The feeder's end after publishing `sent` messages: wait until the
    /// core took them all, settle, record the quiesce point, set `done`,
    /// wait for `leavers` to leave, linger, take the last sample.
    pub async fn wind_down(&self, sent: usize, leavers: usize, end: FeedEnd) -> turmoil::Result {
        self.world.wait_taken(sent, Duration::from_secs(20)).await?;
        tokio::time::sleep(end.settle).await;
        self.world.recorder.record(Happening::Quiesced);
        self.done.set();
        self.left.wait_for(leavers, end.leave_limit).await?;
        tokio::time::sleep(end.linger).await;
        self.world.sample();
        Ok(())
    }
}
