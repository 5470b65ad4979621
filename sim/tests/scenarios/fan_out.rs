//! Scenario 1: fan-out to 50 clients over several channels.

use std::time::Duration;

use rand::Rng;
use sim::client::SimClient;
use sim::recorder::{Happening, Trace};
use sim::seeds::run_seeds;
use sim::world::{Flag, Gate, World, channel, partition_of, sim_config};
use ws_realtime::config::ServerConfig;

use crate::{TEST, policy, sim_error};

/// Channels the fan-out publishes on.
const CHANNELS: usize = 5;

/// Runs one fan-out: `clients` clients (every tenth subscribed to nothing,
/// half subscribing at connect and half with a `subscribe` frame), then
/// `messages` messages on random channels, then everyone leaves.
pub(crate) fn fan_out(seed: u64, clients: usize, messages: usize) -> Result<Trace, String> {
    fan_out_with(seed, clients, messages, sim_config())
}

/// [`fan_out`] against a server configured by `config`.
pub(crate) fn fan_out_with(
    seed: u64,
    clients: usize,
    messages: usize,
    config: ServerConfig,
) -> Result<Trace, String> {
    let (world, source) = World::new(seed);
    let mut sim = world.sim(Duration::from_secs(60));
    world.start_server(&mut sim, config, source);
    let ready = Gate::default();
    let left = Gate::default();
    let done = Flag::default();
    for i in 0..clients {
        let mut rng = world.rng(i as u64);
        let mut wanted: Vec<String> = Vec::new();
        if i % 10 != 0 {
            for _ in 0..rng.random_range(1..=3) {
                let name = channel(rng.random_range(0..CHANNELS));
                if !wanted.contains(&name) {
                    wanted.push(name);
                }
            }
        }
        let at_connect = rng.random_bool(0.5);
        let name = format!("c{i}");
        let (world, ready, left, done) = (world.clone(), ready.clone(), left.clone(), done.clone());
        sim.client(name.clone(), async move {
            let connect_channels = if at_connect {
                wanted.clone()
            } else {
                Vec::new()
            };
            let options = world.client(&name, &connect_channels);
            let mut client = SimClient::connect(options, world.recorder.clone()).await?;
            client.wait_connected().await?;
            if !at_connect && !wanted.is_empty() {
                client.subscribe(&wanted).await?;
            }
            client.wait_subscribed(&wanted).await?;
            ready.arrive();
            done.wait(Duration::from_secs(40)).await?;
            client.leave().await;
            left.arrive();
            Ok(())
        });
    }
    let feeder = world.clone();
    sim.client("feeder", async move {
        let world = feeder;
        ready.wait_for(clients, Duration::from_secs(20)).await?;
        let mut rng = world.rng(u64::MAX);
        for _ in 0..messages {
            let index = rng.random_range(0..CHANNELS);
            world.feed.publish(&channel(index), partition_of(index));
            if rng.random_bool(0.2) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
            }
        }
        world.wait_taken(messages, Duration::from_secs(20)).await?;
        // Every message is taken; a few network latencies deliver it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        world.recorder.record(Happening::Quiesced);
        done.set();
        left.wait_for(clients, Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        world.sample();
        Ok(())
    });
    sim.run().map_err(sim_error)?;
    let trace = world.recorder.trace();
    let received = trace
        .iter()
        .filter(|r| matches!(r.what, Happening::Received { .. }))
        .count();
    if received == 0 {
        return Err("no client received anything".to_owned());
    }
    Ok(trace)
}

#[test]
fn every_subscriber_gets_every_message_of_its_channels_exactly_once_in_order() {
    run_seeds(
        TEST,
        "fan_out::every_subscriber_gets_every_message_of_its_channels_exactly_once_in_order",
        policy(),
        |seed| fan_out(seed, 50, 300),
    );
}
