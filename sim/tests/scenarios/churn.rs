//! Scenario 4: clients connect, subscribe, unsubscribe and leave at random
//! while messages flow.

use std::time::Duration;

use rand::Rng;
use sim::client::SimClient;
use sim::recorder::Trace;
use sim::run::{FeedEnd, Part};
use sim::seeds::run_seeds;
use sim::world::{World, channel, partition_of};

use crate::{TEST, policy};

/// Client hosts; each connects several times in a row.
const HOSTS: usize = 16;

/// Connections per host.
const GENERATIONS: usize = 3;

/// Channels in play.
const CHANNELS: usize = 6;

/// Messages published while the clients churn.
const MESSAGES: usize = 400;

/// One churn run. Every connection but a host's last ends by closing or by
/// vanishing (socket dropped, no close frame); the last ones stay until
/// publishing is over and then close, so at the end nobody is left.
pub(crate) fn churn(seed: u64) -> Result<Trace, String> {
    let mut run = World::builder().start(seed);
    for host in 0..HOSTS {
        run.client(&format!("w{host}"), Part::Leaver, |steps| async move {
            let world = &steps.world;
            let mut rng = world.rng(1000 + host as u64);
            for generation in 0..GENERATIONS {
                let name = format!("w{host}.{generation}");
                let mut current: Vec<String> = Vec::new();
                for _ in 0..rng.random_range(0..3) {
                    let name = channel(rng.random_range(0..CHANNELS));
                    if !current.contains(&name) {
                        current.push(name);
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
                let options = world.client(&name, &current);
                let mut client = SimClient::connect(options, world.recorder.clone()).await?;
                client.wait_connected().await?;
                for _ in 0..rng.random_range(2..8) {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(10..300))).await;
                    let target = channel(rng.random_range(0..CHANNELS));
                    if current.contains(&target) {
                        current.retain(|c| *c != target);
                        client.unsubscribe(&[target]).await?;
                    } else {
                        current.push(target.clone());
                        client.subscribe(&[target]).await?;
                    }
                }
                let last = generation + 1 == GENERATIONS;
                if last {
                    steps.wait_done().await?;
                    client.leave().await;
                } else if rng.random_bool(0.3) {
                    client.vanish();
                } else {
                    client.leave().await;
                }
            }
            steps.left.arrive();
            Ok(())
        });
    }
    run.feeder(FeedEnd::default(), |steps| async move {
        let world = steps.world;
        let mut rng = world.rng(u64::MAX);
        for _ in 0..MESSAGES {
            let index = rng.random_range(0..CHANNELS);
            world.feed.publish(&channel(index), partition_of(index));
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..12))).await;
        }
        Ok(MESSAGES)
    });
    run.finish()
}

#[test]
fn churning_clients_never_get_unsubscribed_messages_and_leave_the_core_empty() {
    run_seeds(
        TEST,
        "churn::churning_clients_never_get_unsubscribed_messages_and_leave_the_core_empty",
        policy(),
        churn,
    );
}
