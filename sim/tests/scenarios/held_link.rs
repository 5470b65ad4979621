//! Scenario 3: a client's link is held (nothing flows either way) for a
//! while, longer or shorter than the connection timeout (3 s).

use std::time::Duration;

use rand::Rng;
use sim::recorder::{Happening, Trace};
use sim::run::{FeedEnd, Part, Subscriber};
use sim::seeds::run_seeds;
use sim::world::{SERVER, World, channel, partition_of};

use crate::{TEST, policy};

/// Clients whose links stay up.
const STEADY: usize = 3;

/// One run: the client `held` loses its link for `hold`.
fn held_link(seed: u64, hold: Duration) -> Result<Trace, String> {
    let builder = World::builder();
    let timeout = builder.config().core.connection_timeout;
    let mut run = builder.start(seed);
    let channels = vec![channel(0), channel(1)];
    for i in 0..STEADY {
        run.subscriber(Subscriber::new(format!("steady{i}"), channels.clone()));
    }
    run.client("held", Part::Member, |steps| async move {
        let client = steps.connect_subscribed(0, "held", &channels).await?;
        steps.ready.arrive();
        steps.started.wait(Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        steps.world.recorder.record(Happening::WentSilent {
            client: "held".into(),
        });
        turmoil::hold(SERVER, "held");
        tokio::time::sleep(hold).await;
        turmoil::release(SERVER, "held");
        steps.world.recorder.record(Happening::Recovered {
            client: "held".into(),
        });
        if hold > timeout {
            client
                .wait_for("close after the held link", Duration::from_secs(10), |s| {
                    s.closed.is_some()
                })
                .await?;
        } else {
            steps.wait_done().await?;
            if let Some(closed) = client.state().closed {
                return Err(format!("a {hold:?} hold closed the connection ({closed:?})").into());
            }
            client.leave().await;
        }
        steps.left.arrive();
        Ok(())
    });
    run.feeder(
        FeedEnd::default().settle(Duration::from_secs(2)),
        move |steps| async move {
            let world = steps.world;
            let mut rng = world.rng(u64::MAX);
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
            Ok(sent)
        },
    );
    let world = run.world.clone();
    let trace = run.finish()?;
    let failures = world.metrics.heartbeat_failures.get();
    let expected = u64::from(hold > timeout);
    if failures != expected {
        return Err(format!(
            "{failures} heartbeat failures counted, expected {expected}"
        ));
    }
    Ok(trace)
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
