//! Scenario 3: a client's link is held (nothing flows either way) for a
//! while, longer or shorter than the connection timeout (3 s).

use std::time::Duration;

use rand::Rng;
use sim::client::SimClient;
use sim::recorder::{Happening, Trace};
use sim::seeds::run_seeds;
use sim::world::{Flag, Gate, SERVER, World, channel, partition_of, sim_config};

use crate::{TEST, policy, sim_error};

/// Clients whose links stay up.
const STEADY: usize = 3;

/// One run: the client `held` loses its link for `hold`.
fn held_link(seed: u64, hold: Duration) -> Result<Trace, String> {
    let (world, source) = World::new(seed);
    let mut sim = world.sim(Duration::from_secs(60));
    let config = sim_config();
    let timeout = config.core.connection_timeout;
    world.start_server(&mut sim, config, source);
    let ready = Gate::default();
    let left = Gate::default();
    let started = Flag::default();
    let done = Flag::default();
    let channels = vec![channel(0), channel(1)];
    for i in 0..STEADY {
        let name = format!("steady{i}");
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
        let (started, channels) = (started.clone(), channels.clone());
        sim.client("held", async move {
            let client =
                SimClient::connect(world.client("held", &channels), world.recorder.clone()).await?;
            client.wait_connected().await?;
            client.wait_subscribed(&channels).await?;
            ready.arrive();
            started.wait(Duration::from_secs(20)).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            world.recorder.record(Happening::WentSilent {
                client: "held".into(),
            });
            turmoil::hold(SERVER, "held");
            tokio::time::sleep(hold).await;
            turmoil::release(SERVER, "held");
            world.recorder.record(Happening::Recovered {
                client: "held".into(),
            });
            if hold > timeout {
                client
                    .wait_for("close after the held link", Duration::from_secs(10), |s| {
                        s.closed.is_some()
                    })
                    .await?;
            } else {
                done.wait(Duration::from_secs(40)).await?;
                if let Some(closed) = client.state().closed {
                    return Err(
                        format!("a {hold:?} hold closed the connection ({closed:?})").into(),
                    );
                }
                client.leave().await;
            }
            left.arrive();
            Ok(())
        });
    }
    let feeder = world.clone();
    sim.client("feeder", async move {
        let world = feeder;
        let mut rng = world.rng(u64::MAX);
        ready.wait_for(STEADY + 1, Duration::from_secs(20)).await?;
        started.set();
        // Publish through the hold and a little past it.
        let end = tokio::time::Instant::now() + hold + Duration::from_secs(1);
        let mut sent = 0;
        while tokio::time::Instant::now() < end {
            let index = rng.random_range(0..2);
            world.feed.publish(&channel(index), partition_of(index));
            sent += 1;
            // Slow enough that the held socket's buffers (64 segments) and
            // queue (64 frames) do not fill: the heartbeat timeout must be
            // what closes it, not the slow-consumer policy.
            tokio::time::sleep(Duration::from_millis(rng.random_range(60..120))).await;
        }
        world.wait_taken(sent, Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        world.recorder.record(Happening::Quiesced);
        done.set();
        left.wait_for(STEADY + 1, Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        world.sample();
        Ok(())
    });
    sim.run().map_err(sim_error)?;
    let failures = world.metrics.heartbeat_failures.get();
    let expected = u64::from(hold > timeout);
    if failures != expected {
        return Err(format!(
            "{failures} heartbeat failures counted, expected {expected}"
        ));
    }
    Ok(world.recorder.trace())
}

#[test]
fn link_held_past_the_timeout_is_closed_by_the_server() {
    run_seeds(
        TEST,
        "held_link::link_held_past_the_timeout_is_closed_by_the_server",
        policy(),
        |seed| held_link(seed, Duration::from_secs(6)),
    );
}

#[test]
fn link_held_briefly_survives_and_loses_nothing() {
    run_seeds(
        TEST,
        "held_link::link_held_briefly_survives_and_loses_nothing",
        policy(),
        |seed| held_link(seed, Duration::from_millis(1_000)),
    );
}
