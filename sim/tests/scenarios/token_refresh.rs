//! Scenario: tokens expire during a run. One client's link is held across
//! the moment the server asks for a fresh token; once released it reads
//! `refresh_required`, answers with a new token, gets `refreshed`, and
//! stays connected past its first token's `exp` without losing a message.
//! Another client never refreshes and is closed with 1008 at its `exp`.

use std::time::Duration;

use rand::Rng;
use sim::client::SimClient;
use sim::recorder::{Happening, Trace};
use sim::seeds::run_seeds;
use sim::world::{Flag, Gate, SERVER, World, channel, partition_of, sim_config, token_expiring};
use ws_realtime::metrics::ReasonLabel;

use crate::{TEST, policy, sim_error};

/// Lifetime of the first tokens, in (wall-clock) seconds.
const FIRST_TOKEN_SECS: u64 = 8;

/// How long before `exp` the server asks.
const LEAD: Duration = Duration::from_secs(3);

fn token_refresh(seed: u64) -> Result<Trace, String> {
    let (world, source) = World::new(seed);
    let mut sim = world.sim(Duration::from_secs(60));
    let mut config = sim_config();
    config.core.refresh_lead = LEAD;
    world.start_server(&mut sim, config, source);
    let ready = Gate::default();
    let left = Gate::default();
    let done = Flag::default();
    let channels = vec![channel(0), channel(1)];
    {
        let (world, ready, left, done) = (world.clone(), ready.clone(), left.clone(), done.clone());
        let channels = channels.clone();
        sim.client("refresher", async move {
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
            done.wait(Duration::from_secs(40)).await?;
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
        let (world, ready, left) = (world.clone(), ready.clone(), left.clone());
        let channels = channels.clone();
        sim.client("expirer", async move {
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
    let feeder = world.clone();
    sim.client("feeder", async move {
        let world = feeder;
        let mut rng = world.rng(u64::MAX);
        ready.wait_for(2, Duration::from_secs(20)).await?;
        // Publish past the first tokens' expiry.
        let end = tokio::time::Instant::now() + FIRST_TOKEN_SECS_DURATION + Duration::from_secs(3);
        let mut sent = 0;
        while tokio::time::Instant::now() < end {
            let index = rng.random_range(0..2);
            world.feed.publish(&channel(index), partition_of(index));
            sent += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(60..120))).await;
        }
        world.wait_taken(sent, Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        world.recorder.record(Happening::Quiesced);
        done.set();
        left.wait_for(2, Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        world.sample();
        Ok(())
    });
    sim.run().map_err(sim_error)?;
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
    Ok(world.recorder.trace())
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
