//! Scenario 6: the source stops delivering for longer than the connection
//! timeout, then resumes.

use std::time::Duration;

use rand::Rng;
use sim::client::SimClient;
use sim::recorder::{Happening, Trace};
use sim::seeds::run_seeds;
use sim::world::{Flag, Gate, World, channel, partition_of, sim_config};

use crate::{TEST, policy, sim_error};

/// Subscribed clients.
const CLIENTS: usize = 8;

/// Messages before and after the stall.
const BATCH: usize = 100;

fn stall_and_recover(seed: u64) -> Result<Trace, String> {
    let (world, source) = World::new(seed);
    let mut sim = world.sim(Duration::from_secs(60));
    let config = sim_config();
    // Longer than the connection timeout: only heartbeats keep clients alive.
    let stall = config.core.connection_timeout + Duration::from_secs(2);
    world.start_server(&mut sim, config, source);
    let ready = Gate::default();
    let left = Gate::default();
    let done = Flag::default();
    for i in 0..CLIENTS {
        let name = format!("c{i}");
        let (world, ready, left, done) = (world.clone(), ready.clone(), left.clone(), done.clone());
        let channels = vec![channel(i % 3)];
        sim.client(name.clone(), async move {
            let client =
                SimClient::connect(world.client(&name, &channels), world.recorder.clone()).await?;
            client.wait_connected().await?;
            client.wait_subscribed(&channels).await?;
            ready.arrive();
            done.wait(Duration::from_secs(40)).await?;
            if let Some(closed) = client.state().closed {
                return Err(format!("{name} was closed during the stall: {closed:?}").into());
            }
            client.leave().await;
            left.arrive();
            Ok(())
        });
    }
    let feeder = world.clone();
    sim.client("feeder", async move {
        let world = feeder;
        let mut rng = world.rng(u64::MAX);
        ready.wait_for(CLIENTS, Duration::from_secs(20)).await?;
        for batch in 0..2 {
            for _ in 0..BATCH {
                let index = rng.random_range(0..3);
                world.feed.publish(&channel(index), partition_of(index));
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..8))).await;
            }
            world
                .wait_taken((batch + 1) * BATCH, Duration::from_secs(20))
                .await?;
            if batch == 0 {
                world.feed.stall();
                tokio::time::sleep(Duration::from_millis(100)).await;
                if world.readiness.status().is_ok() {
                    return Err("a stalled source still reports ready".into());
                }
                tokio::time::sleep(stall).await;
                world.feed.resume();
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Err(reasons) = world.readiness.status() {
                    return Err(format!("not ready after the source resumed: {reasons:?}").into());
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        world.recorder.record(Happening::Quiesced);
        done.set();
        left.wait_for(CLIENTS, Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        world.sample();
        Ok(())
    });
    sim.run().map_err(sim_error)?;
    Ok(world.recorder.trace())
}

#[test]
fn clients_stay_connected_through_a_source_stall_and_resume_receiving() {
    run_seeds(
        TEST,
        "source_stall::clients_stay_connected_through_a_source_stall_and_resume_receiving",
        policy(),
        stall_and_recover,
    );
}
