//! Scenario 1: fan-out to 50 clients over several channels.

use std::time::Duration;

use rand::Rng;
use sim::recorder::{Happening, Trace};
use sim::run::{FeedEnd, Subscriber};
use sim::seeds::run_seeds;
use sim::world::{World, channel, partition_of};

use crate::{TEST, policy};

/// Channels the fan-out publishes on.
const CHANNELS: usize = 5;

/// Runs one fan-out: `clients` clients (every tenth subscribed to nothing,
/// half subscribing at connect and half with a `subscribe` frame), then
/// `messages` messages on random channels, then everyone leaves.
pub(crate) fn fan_out(seed: u64, clients: usize, messages: usize) -> Result<Trace, String> {
    let mut run = World::builder().start(seed);
    for i in 0..clients {
        let mut rng = run.world.rng(i as u64);
        let mut wanted: Vec<String> = Vec::new();
        if i % 10 != 0 {
            for _ in 0..rng.random_range(1..=3) {
                let name = channel(rng.random_range(0..CHANNELS));
                if !wanted.contains(&name) {
                    wanted.push(name);
                }
            }
        }
        let subscriber = Subscriber::new(format!("c{i}"), wanted);
        run.subscriber(if rng.random_bool(0.5) {
            subscriber
        } else {
            subscriber.by_frame()
        });
    }
    // Every message is taken; a few network latencies deliver it.
    let end = FeedEnd {
        settle: Duration::from_millis(500),
        leave_limit: Duration::from_secs(20),
        linger: Duration::from_millis(300),
    };
    run.feeder(end, move |steps| async move {
        let world = steps.world;
        let mut rng = world.rng(u64::MAX);
        for _ in 0..messages {
            let index = rng.random_range(0..CHANNELS);
            world.feed.publish(&channel(index), partition_of(index));
            if rng.random_bool(0.2) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
            }
        }
        Ok(messages)
    });
    let trace = run.finish()?;
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
