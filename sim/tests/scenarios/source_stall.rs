//! Scenario 6: the source stops delivering for longer than the connection
//! timeout, then resumes.

use std::time::Duration;

use rand::Rng;
use sim::recorder::Trace;
use sim::run::{FeedEnd, Subscriber};
use sim::seeds::run_seeds;
use sim::world::{World, channel, partition_of};

use crate::{TEST, policy};

/// Subscribed clients.
const CLIENTS: usize = 8;

/// Messages before and after the stall.
const BATCH: usize = 100;

fn stall_and_recover(seed: u64) -> Result<Trace, String> {
    let builder = World::builder();
    // Longer than the connection timeout: only heartbeats keep clients alive.
    let stall = builder.config().core.connection_timeout + Duration::from_secs(2);
    let mut run = builder.start(seed);
    for i in 0..CLIENTS {
        run.subscriber(Subscriber::new(format!("c{i}"), vec![channel(i % 3)]).stays_open());
    }
    run.feeder(FeedEnd::default(), move |steps| async move {
        let world = steps.world;
        let mut rng = world.rng(u64::MAX);
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
        Ok(2 * BATCH)
    });
    run.finish()
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
