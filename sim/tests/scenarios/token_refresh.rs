//! Scenario: tokens expire during a run. One client's link is held across
//! the moment the server asks for a fresh token; once released it reads
//! `refresh_required`, answers with a new token, gets `refreshed`, and
//! stays connected past its first token's `exp` without losing a message.
//! Another client never refreshes and is closed with 1008 at its `exp`.

use std::time::Duration;

use rand::Rng;
use sim::client::SimClient;
use sim::recorder::{Happening, Trace};
use sim::run::{FeedEnd, Part};
use sim::seeds::run_seeds;
use sim::world::{SERVER, World, channel, partition_of, token_expiring};
use ws_realtime::metrics::ReasonLabel;

use crate::{TEST, policy};

/// Lifetime of the first tokens, in (wall-clock) seconds.
const FIRST_TOKEN_SECS: u64 = 8;

/// How long before `exp` the server asks.
const LEAD: Duration = Duration::from_secs(3);

fn token_refresh(seed: u64) -> Result<Trace, String> {
    let mut run = World::builder()
        .configure(|config| config.core.refresh_lead = LEAD)
        .start(seed);
    let channels = vec![channel(0), channel(1)];
    {
        let channels = channels.clone();
        run.client("refresher", Part::Member, |steps| async move {
            let (world, ready, left) = (&steps.world, &steps.ready, &steps.left);
            let mut options = world.client("refresher", &channels);
            options.token = token_expiring("refresher", FIRST_TOKEN_SECS);
            let client = SimClient::connect(options, world.recorder.clone()).await?;
            client.wait_connected().await?;
            client.wait_subscribed(&channels).await?;
            ready.arrive();
            // Hold the link across the moment the server asks (about
            // FIRST_TOKEN_SECS - LEAD in): its `refresh_required` waits in
            // the network.
            tokio::time::sleep(FIRST_TOKEN_SECS_DURATION - LEAD - Duration::from_millis(700)).await;
            world.recorder.record(Happening::WentSilent {
                client: "refresher".into(),
            });
            turmoil::hold(SERVER, "refresher");
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            turmoil::release(SERVER, "refresher");
            world.recorder.record(Happening::Recovered {
                client: "refresher".into(),
            });
            client
                .wait_for("refresh_required", Duration::from_secs(5), |s| {
                    s.refresh_asked > 0
                })
                .await?;
            let fresh = token_expiring("refresher", 3600);
            let frame = serde_json::json!({"type":"refresh","token":fresh,"id":1}).to_string();
            client.send_text(&frame).await?;
            client
                .wait_for("refreshed", Duration::from_secs(5), |s| s.refreshed > 0)
                .await?;
            steps.wait_done().await?;
            let state = client.state();
            if let Some(closed) = state.closed {
                return Err(format!("the refreshed client was closed ({closed:?})").into());
            }
            if !state.errors.is_empty() {
                return Err(format!("the refresh drew errors: {:?}", state.errors).into());
            }
            client.leave().await;
            left.arrive();
            Ok(())
        });
    }
    {
        let channels = channels.clone();
        run.client("expirer", Part::Member, |steps| async move {
            let (world, ready, left) = (&steps.world, &steps.ready, &steps.left);
            let mut options = world.client("expirer", &channels);
            options.token = token_expiring("expirer", FIRST_TOKEN_SECS);
            let client = SimClient::connect(options, world.recorder.clone()).await?;
            client.wait_connected().await?;
            client.wait_subscribed(&channels).await?;
            ready.arrive();
            client
                .wait_for(
                    "close at exp",
                    Duration::from_secs(FIRST_TOKEN_SECS + 5),
                    |s| s.closed.is_some(),
                )
                .await?;
            let state = client.state();
            if state.closed != Some(Some(1008)) || state.refresh_asked != 1 {
                return Err(
                    format!("expected one refresh_required then 1008, got {state:?}").into(),
                );
            }
            left.arrive();
            Ok(())
        });
    }
    run.feeder(
        FeedEnd::default().settle(Duration::from_secs(2)),
        |steps| async move {
            let world = steps.world;
            let mut rng = world.rng(u64::MAX);
            // Publish past the first tokens' expiry.
            let end =
                tokio::time::Instant::now() + FIRST_TOKEN_SECS_DURATION + Duration::from_secs(3);
            let mut sent = 0;
            while tokio::time::Instant::now() < end {
                let index = rng.random_range(0..2);
                world.feed.publish(&channel(index), partition_of(index));
                sent += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(60..120))).await;
            }
            Ok(sent)
        },
    );
    let world = run.world.clone();
    let trace = run.finish()?;
    let expired = world
        .metrics
        .connections_closed
        .get_or_create(&ReasonLabel {
            reason: "token_expired".to_owned(),
        })
        .get();
    if expired != 1 {
        return Err(format!(
            "{expired} connections closed for token expiry, expected 1"
        ));
    }
    Ok(trace)
}

const FIRST_TOKEN_SECS_DURATION: Duration = Duration::from_secs(FIRST_TOKEN_SECS);

#[test]
fn tokens_expire_and_are_refreshed_under_a_held_link() {
    run_seeds(
        TEST,
        "token_refresh::tokens_expire_and_are_refreshed_under_a_held_link",
        policy(),
        token_refresh,
    );
}
