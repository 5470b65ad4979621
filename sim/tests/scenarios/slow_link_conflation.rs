//! Scenario: a client on a slow link (it reads in short bursts with long
//! stalls, so the server's writes back up) under the `conflate` policy
//! while messages flow on two channels. It must stay connected, get each
//! channel's values in stream order, and end with each channel's last
//! message (a channel without a key conflates to its last message); the
//! healthy clients next to it lose nothing (the checker's invariants).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use sim::checker::CheckPolicy;
use sim::client::SimClient;
use sim::recorder::{Happening, Trace};
use sim::seeds::run_seeds;
use sim::world::{Flag, Gate, World, channel, partition_of, sim_config};
use ws_realtime::core::SlowClientPolicy;

use crate::{TEST, policy};

/// Turns a turmoil failure into the scenario's error.
fn sim_error(error: Box<dyn std::error::Error>) -> String {
    format!("simulation failed: {error}")
}

/// Healthy clients next to the slow one.
const HEALTHY: usize = 2;

/// Messages published: many times the slow client's queue (8 frames) plus
/// what the simulated network buffers. Small, so 60 seeds stay cheap.
const MESSAGES: usize = 400;

/// The `pos` of the last message per channel in `log`, checking on the way
/// that each channel's offsets only grow (stream order).
fn last_per_channel(
    name: &str,
    log: &[sim::client::Delivery],
) -> Result<BTreeMap<String, u64>, String> {
    let mut last = BTreeMap::new();
    for delivery in log {
        let offset: u64 = delivery
            .pos
            .rsplit(':')
            .next()
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| format!("{name}: unreadable pos {}", delivery.pos))?;
        if let Some(before) = last.insert(delivery.channel.clone(), offset)
            && before >= offset
        {
            return Err(format!(
                "{name}: {} went from {before} to {offset}",
                delivery.channel
            ));
        }
    }
    Ok(last)
}

/// One run.
fn slow_link_conflation(seed: u64) -> Result<Trace, String> {
    let (world, source) = World::new(seed);
    let mut sim = world.sim(Duration::from_secs(60));
    let mut config = sim_config();
    config.core.slow_client_policy = SlowClientPolicy::Conflate;
    config.core.client_buffer_frames = 8;
    world.start_server(&mut sim, config, source);
    let ready = Gate::default();
    let left = Gate::default();
    let started = Flag::default();
    let over = Flag::default();
    let done = Flag::default();
    let lasts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let channels = vec![channel(0), channel(1)];
    for i in 0..HEALTHY {
        let name = format!("healthy{i}");
        let (world, ready, left, done) = (world.clone(), ready.clone(), left.clone(), done.clone());
        let (channels, lasts) = (channels.clone(), lasts.clone());
        sim.client(name.clone(), async move {
            let client =
                SimClient::connect(world.client(&name, &channels), world.recorder.clone()).await?;
            client.wait_connected().await?;
            client.wait_subscribed(&channels).await?;
            ready.arrive();
            done.wait(Duration::from_secs(40)).await?;
            let last = last_per_channel(&name, &client.state().log)?;
            lasts.lock().expect("not poisoned").push(last);
            client.leave().await;
            left.arrive();
            Ok(())
        });
    }
    {
        let (world, ready, left, done) = (world.clone(), ready.clone(), left.clone(), done.clone());
        let (started, over, channels, lasts) = (
            started.clone(),
            over.clone(),
            channels.clone(),
            lasts.clone(),
        );
        sim.client("slow", async move {
            let client =
                SimClient::connect(world.client("slow", &channels), world.recorder.clone()).await?;
            client.wait_connected().await?;
            client.wait_subscribed(&channels).await?;
            ready.arrive();
            started.wait(Duration::from_secs(20)).await?;
            let mut rng = world.rng(7);
            // The slow link: long stalls, short bursts of reading.
            while !over.is_set() {
                client.pause();
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..400))).await;
                client.resume();
                tokio::time::sleep(Duration::from_millis(rng.random_range(2..10))).await;
            }
            // The stream paused: the link catches up.
            done.wait(Duration::from_secs(40)).await?;
            let state = client.state();
            if state.closed.is_some() {
                return Err(format!("conflate closed the slow client: {:?}", state.closed).into());
            }
            if state.messages >= MESSAGES {
                return Err("the slow client lost nothing: it was never slow".into());
            }
            let last = last_per_channel("slow", &state.log)?;
            lasts.lock().expect("not poisoned").push(last);
            client.leave().await;
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
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..4))).await;
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
    // Eventual correctness: the slow client ends where the healthy ones do.
    let lasts = lasts.lock().expect("not poisoned").clone();
    let Some(first) = lasts.first() else {
        return Err("no client reported its last messages".into());
    };
    if lasts.len() != HEALTHY + 1 || lasts.iter().any(|last| last != first) {
        return Err(format!("last message per channel differs: {lasts:?}"));
    }
    Ok(world.recorder.trace())
}

#[test]
fn a_client_on_a_slow_link_under_conflate_stays_and_ends_with_the_last_values() {
    run_seeds(
        TEST,
        "slow_link_conflation::a_client_on_a_slow_link_under_conflate_stays_and_ends_with_the_last_values",
        // Its skipped messages are conflated, counted like drops.
        CheckPolicy {
            drop_oldest: true,
            ..policy()
        },
        slow_link_conflation,
    );
}
