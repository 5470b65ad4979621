//! Scenario 2: one client stops reading while messages flow.

use std::time::Duration;

use rand::Rng;
use sim::checker::{CheckPolicy, max_delivery_delay};
use sim::client::SimClient;
use sim::recorder::{Happening, Trace};
use sim::seeds::run_seeds;
use sim::world::{Flag, Gate, World, channel, partition_of, sim_config};
use ws_realtime::core::SlowClientPolicy;

use crate::{TEST, policy, sim_error};

/// Healthy clients next to the slow one.
const HEALTHY: usize = 4;

/// Messages published while the slow client is paused: far more than its
/// queue (32 frames) plus what the network buffers (64 segments).
const MESSAGES: usize = 300;

/// The slowest delivery a healthy client may see, in simulated time (a few
/// network latencies of at most 40 ms each, plus the server's work).
const HEALTHY_DELAY_BOUND: Duration = Duration::from_millis(500);

/// One run with the given slow-client policy.
fn slow_consumer(seed: u64, slow_policy: SlowClientPolicy) -> Result<Trace, String> {
    let (world, source) = World::new(seed);
    let mut sim = world.sim(Duration::from_secs(60));
    let mut config = sim_config();
    config.core.slow_client_policy = slow_policy;
    config.core.client_buffer_frames = 32;
    // Long enough for the resumed client to read its backlog and the close.
    config.core.slow_close_grace = Duration::from_secs(3);
    world.start_server(&mut sim, config, source);
    let ready = Gate::default();
    let left = Gate::default();
    let started = Flag::default();
    let over = Flag::default();
    let done = Flag::default();
    let channels = vec![channel(0), channel(1)];
    for i in 0..HEALTHY {
        let name = format!("healthy{i}");
        let (world, ready, left, done) = (world.clone(), ready.clone(), left.clone(), done.clone());
        let channels = channels.clone();
        sim.client(name.clone(), async move {
            let client =
                SimClient::connect(world.client(&name, &channels), world.recorder.clone()).await?;
            client.wait_connected().await?;
            client.wait_subscribed(&channels).await?;
            ready.arrive();
            done.wait(Duration::from_secs(40)).await?;
            client.leave().await;
            left.arrive();
            Ok(())
        });
    }
    {
        let (world, ready, left, done) = (world.clone(), ready.clone(), left.clone(), done.clone());
        let (started, over, channels) = (started.clone(), over.clone(), channels.clone());
        sim.client("slow", async move {
            let client =
                SimClient::connect(world.client("slow", &channels), world.recorder.clone()).await?;
            client.wait_connected().await?;
            client.wait_subscribed(&channels).await?;
            ready.arrive();
            started.wait(Duration::from_secs(20)).await?;
            client.pause();
            over.wait(Duration::from_secs(20)).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.resume();
            match slow_policy {
                SlowClientPolicy::Disconnect => {
                    client
                        .wait_for("slow consumer close", Duration::from_secs(10), |s| {
                            s.closed.is_some()
                        })
                        .await?;
                    let closed = client.state().closed;
                    if closed != Some(Some(1008)) {
                        return Err(
                            format!("slow client ended with {closed:?}, not close 1008").into()
                        );
                    }
                }
                SlowClientPolicy::DropOldest | SlowClientPolicy::Conflate => {
                    done.wait(Duration::from_secs(40)).await?;
                    let state = client.state();
                    if state.closed.is_some() {
                        return Err(format!(
                            "{slow_policy:?} closed the slow client: {:?}",
                            state.closed
                        )
                        .into());
                    }
                    if state.messages >= MESSAGES {
                        return Err("the slow client lost nothing: it was never slow".into());
                    }
                    client.leave().await;
                }
            }
            left.arrive();
            Ok(())
        });
    }
    let feeder = world.clone();
    sim.client("feeder", async move {
        let world = feeder;
        let mut rng = world.rng(u64::MAX);
        ready.wait_for(HEALTHY + 1, Duration::from_secs(20)).await?;
        started.set();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..MESSAGES {
            let index = rng.random_range(0..2);
            world.feed.publish(&channel(index), partition_of(index));
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..6))).await;
        }
        world.wait_taken(MESSAGES, Duration::from_secs(20)).await?;
        over.set();
        tokio::time::sleep(Duration::from_secs(2)).await;
        world.recorder.record(Happening::Quiesced);
        done.set();
        left.wait_for(HEALTHY + 1, Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        world.sample();
        Ok(())
    });
    sim.run().map_err(sim_error)?;
    let trace = world.recorder.trace();
    let delay = max_delivery_delay(&trace, |client| client.starts_with("healthy"))
        .ok_or("healthy clients received nothing")?;
    if delay > HEALTHY_DELAY_BOUND {
        return Err(format!(
            "a healthy client waited {delay:?} for a message (bound {HEALTHY_DELAY_BOUND:?})"
        ));
    }
    let last = world_final_sample(&trace);
    match slow_policy {
        SlowClientPolicy::Disconnect if last.slow_consumer_disconnects != 1 => Err(format!(
            "{} slow-consumer disconnects counted, expected 1",
            last.slow_consumer_disconnects
        )),
        SlowClientPolicy::DropOldest if last.dropped_oldest == 0 => {
            Err("drop_oldest counted no drops".to_owned())
        }
        _ => Ok(trace),
    }
}

fn world_final_sample(trace: &Trace) -> sim::recorder::ServerSample {
    trace
        .iter()
        .rev()
        .find_map(|r| match r.what {
            Happening::ServerSample(sample) => Some(sample),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn slow_client_is_closed_with_1008_and_others_lose_nothing() {
    run_seeds(
        TEST,
        "slow_consumer::slow_client_is_closed_with_1008_and_others_lose_nothing",
        policy(),
        |seed| slow_consumer(seed, SlowClientPolicy::Disconnect),
    );
}

#[test]
fn slow_client_under_drop_oldest_keeps_going_with_counted_drops() {
    run_seeds(
        TEST,
        "slow_consumer::slow_client_under_drop_oldest_keeps_going_with_counted_drops",
        CheckPolicy {
            drop_oldest: true,
            ..policy()
        },
        |seed| slow_consumer(seed, SlowClientPolicy::DropOldest),
    );
}
