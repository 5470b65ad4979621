//! Scenario 5: graceful shutdown while messages flow.

use std::time::Duration;

use rand::Rng;
use sim::recorder::Trace;
use sim::run::Part;
use sim::seeds::run_seeds;
use sim::world::{Gate, World, channel, partition_of};

use crate::{TEST, policy};

/// Connected clients when the shutdown starts.
const CLIENTS: usize = 12;

fn shutdown_under_load(seed: u64) -> Result<Trace, String> {
    let builder = World::builder();
    let shutdown_timeout = builder.config().shutdown_timeout;
    let mut run = builder.start(seed);
    // Clients end with the server's 1001 close, not by leaving: they arrive
    // at `closed` instead of `left`.
    let closed = Gate::default();
    for i in 0..CLIENTS {
        let name = format!("c{i}");
        let closed = closed.clone();
        let channels = vec![channel(i % 3), channel(3)];
        run.client(&name.clone(), Part::Member, |steps| async move {
            let client = steps.connect_subscribed(0, &name, &channels).await?;
            steps.ready.arrive();
            client
                .wait_for("the shutdown close", Duration::from_secs(30), |s| {
                    s.closed.is_some()
                })
                .await?;
            let code = client.state().closed;
            if code != Some(Some(1001)) {
                return Err(format!("{name} ended with {code:?}, not close 1001").into());
            }
            closed.arrive();
            Ok(())
        });
    }
    run.client("feeder", Part::Bystander, |steps| async move {
        let world = steps.world;
        let mut rng = world.rng(u64::MAX);
        steps
            .ready
            .wait_for(CLIENTS, Duration::from_secs(20))
            .await?;
        let mut sent = 0;
        let shutdown_after = rng.random_range(100..300);
        while sent < shutdown_after + 100 {
            if sent == shutdown_after {
                let triggered = turmoil::sim_elapsed().unwrap_or_default();
                world.shutdown();
                tokio::time::sleep(Duration::from_millis(20)).await;
                if world.readiness.status().is_ok() {
                    return Err("a draining server still reports ready".into());
                }
                let feeder = world.clone();
                tokio::spawn(async move {
                    // Keep publishing into the drain, as a live feed would.
                    for _ in 0..100 {
                        feeder.feed.publish(&channel(0), partition_of(0));
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                });
                let finished = wait_finished(&world, Duration::from_secs(30)).await?;
                let took = finished.saturating_sub(triggered);
                if took > shutdown_timeout {
                    return Err(format!(
                        "the server took {took:?} to shut down (timeout {shutdown_timeout:?})"
                    )
                    .into());
                }
                break;
            }
            let index = rng.random_range(0..4);
            world.feed.publish(&channel(index), partition_of(index));
            sent += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..6))).await;
        }
        closed.wait_for(CLIENTS, Duration::from_secs(30)).await?;
        world.sample();
        Ok(())
    });
    run.finish()
}

/// Waits until the server's `run` has returned; the simulated time it did.
async fn wait_finished(world: &World, limit: Duration) -> Result<Duration, String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(at) = *world.server_finished.lock().expect("not poisoned") {
            return Ok(at);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the server did not finish within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn shutdown_closes_every_client_with_1001_within_the_timeout() {
    run_seeds(
        TEST,
        "shutdown::shutdown_closes_every_client_with_1001_within_the_timeout",
        policy(),
        shutdown_under_load,
    );
}
