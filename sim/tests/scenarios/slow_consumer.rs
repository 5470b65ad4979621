//! Scenario 2: one client stops reading while messages flow.

use std::time::Duration;

use rand::Rng;
use sim::checker::{CheckPolicy, max_delivery_delay};
use sim::recorder::{Happening, Trace};
use sim::run::{FeedEnd, Part, Subscriber};
use sim::seeds::run_seeds;
use sim::world::{Flag, World, channel, partition_of};
use ws_realtime::core::SlowClientPolicy;

use crate::{TEST, policy};

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
    let mut run = World::builder()
        .policy(slow_policy)
        .configure(|config| {
            config.core.client_buffer_frames = 32;
            // Long enough for the resumed client to read its backlog and the close.
            config.core.slow_close_grace = Duration::from_secs(3);
        })
        .start(seed);
    let over = Flag::default();
    let channels = vec![channel(0), channel(1)];
    for i in 0..HEALTHY {
        run.subscriber(Subscriber::new(format!("healthy{i}"), channels.clone()));
    }
    let slow_over = over.clone();
    run.client("slow", Part::Member, |steps| async move {
        let client = steps.connect_subscribed(0, "slow", &channels).await?;
        steps.ready.arrive();
        steps.started.wait(Duration::from_secs(20)).await?;
        client.pause();
        slow_over.wait(Duration::from_secs(20)).await?;
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
                    return Err(format!("slow client ended with {closed:?}, not close 1008").into());
                }
            }
            SlowClientPolicy::DropOldest | SlowClientPolicy::Conflate => {
                steps.wait_done().await?;
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
        steps.left.arrive();
        Ok(())
    });
    run.feeder(
        FeedEnd::default().settle(Duration::from_secs(2)),
        |steps| async move {
            let world = steps.world;
            let mut rng = world.rng(u64::MAX);
            tokio::time::sleep(Duration::from_millis(50)).await;
            for _ in 0..MESSAGES {
                let index = rng.random_range(0..2);
                world.feed.publish(&channel(index), partition_of(index));
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..6))).await;
            }
            world.wait_taken(MESSAGES, Duration::from_secs(20)).await?;
            over.set();
            Ok(MESSAGES)
        },
    );
    let trace = run.finish()?;
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
