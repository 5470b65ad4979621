//! Scenario 7: malformed frames, oversized frames, bad tokens and floods,
//! next to well-behaved clients that must not notice.

use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::OpCode;
use rand::Rng;
use sim::checker::max_delivery_delay;
use sim::client::{ClientError, SimClient};
use sim::recorder::Trace;
use sim::run::{FeedEnd, Part, Subscriber};
use sim::seeds::run_seeds;
use sim::world::{World, channel, forged_token, partition_of};
use ws_realtime::metrics::ReasonLabel;

use crate::{TEST, policy};

/// Well-behaved clients.
const GOOD: usize = 4;

/// Largest inbound frame the simulated server accepts.
const MAX_FRAME: usize = 4096;

/// The slowest delivery a good client may see, in simulated time.
const GOOD_DELAY_BOUND: Duration = Duration::from_millis(500);

fn bad_clients(seed: u64) -> Result<Trace, String> {
    let mut run = World::builder()
        .configure(|config| config.core.max_message_bytes = MAX_FRAME)
        .start(seed);
    let channels = vec![channel(0), channel(1)];
    for i in 0..GOOD {
        run.subscriber(Subscriber::new(format!("good{i}"), channels.clone()).stays_open());
    }
    run.client("malformed", Part::Leaver, |steps| async move {
        let world = &steps.world;
        let mut client =
            SimClient::connect(world.client("malformed", &[]), world.recorder.clone()).await?;
        client.wait_connected().await?;
        steps.started.wait(Duration::from_secs(20)).await?;
        client.send_text("this is not json").await?;
        client.send_text(r#"{"type":"bogus","id":7}"#).await?;
        client
            .send_frame(OpCode::Binary, Bytes::from_static(b"\x00\x01"))
            .await?;
        // (Text that is not UTF-8 is no longer answered: RFC 6455 §8.1
        // closes it with 1007; tests/rfc6455_conformance.rs covers it.)
        client.subscribe(&["not a channel!".to_owned()]).await?;
        let expected = [
            "bad_frame",
            "unknown_type",
            "binary_not_supported",
            "invalid_channel",
        ];
        client
            .wait_for("error frames", Duration::from_secs(5), |s| {
                s.errors.len() >= 4
            })
            .await?;
        let errors = client.state().errors;
        for code in expected {
            if !errors.iter().any(|e| e == code) {
                return Err(format!("no {code} error frame; got {errors:?}").into());
            }
        }
        steps.wait_done().await?;
        if let Some(closed) = client.state().closed {
            return Err(format!("malformed frames closed the connection: {closed:?}").into());
        }
        client.leave().await;
        steps.left.arrive();
        Ok(())
    });
    run.client("flooder", Part::Leaver, |steps| async move {
        let world = &steps.world;
        let client =
            SimClient::connect(world.client("flooder", &[]), world.recorder.clone()).await?;
        client.wait_connected().await?;
        steps.started.wait(Duration::from_secs(20)).await?;
        for id in 0..600 {
            let ping = format!(r#"{{"type":"ping","id":{id}}}"#);
            if client.state().closed.is_some() || client.send_text(&ping).await.is_err() {
                break;
            }
        }
        client
            .wait_for("the rate limit", Duration::from_secs(5), |s| {
                s.closed.is_some() || s.errors.iter().any(|e| e == "rate_limited")
            })
            .await?;
        let state = client.state();
        // 1008 when the close frame arrives; like the oversized frame,
        // it may be lost to a reset (the flood is still unread).
        if !matches!(state.closed, None | Some(Some(1008) | None)) {
            return Err(format!("flooder closed with {:?}, not 1008", state.closed).into());
        }
        if state.closed.is_none() {
            client.leave().await;
        }
        steps.left.arrive();
        Ok(())
    });
    run.client("oversized", Part::Bystander, |steps| async move {
        let world = &steps.world;
        let client =
            SimClient::connect(world.client("oversized", &[]), world.recorder.clone()).await?;
        client.wait_connected().await?;
        steps.started.wait(Duration::from_secs(20)).await?;
        let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(MAX_FRAME));
        client.send_text(&huge).await?;
        client
            .wait_for("the 1009 close", Duration::from_secs(5), |s| {
                s.closed.is_some()
            })
            .await?;
        // The server drains the rest of the oversized frame before it
        // drops the socket, so the client always reads the 1009 close.
        let closed = client.state().closed;
        if closed != Some(Some(1009)) {
            return Err(format!("oversized frame ended with {closed:?}, not 1009").into());
        }
        Ok(())
    });
    for (name, token) in [
        ("forged", forged_token("forged")),
        ("tokenless", String::new()),
    ] {
        run.client(name, Part::Bystander, |steps| async move {
            let world = &steps.world;
            steps.started.wait(Duration::from_secs(20)).await?;
            let mut options = world.client(name, &[channel(0)]);
            options.token = token;
            match SimClient::connect(options, world.recorder.clone()).await {
                Err(ClientError::Refused(401)) => Ok(()),
                Err(other) => Err(format!("{name}: expected HTTP 401, got {other}").into()),
                Ok(_) => Err(format!("{name}: a bad token was let in").into()),
            }
        });
    }
    run.feeder(FeedEnd::default(), |steps| async move {
        let world = steps.world;
        let mut rng = world.rng(u64::MAX);
        let messages = 200;
        for _ in 0..messages {
            let index = rng.random_range(0..2);
            world.feed.publish(&channel(index), partition_of(index));
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..10))).await;
        }
        Ok(messages)
    });
    let world = run.world.clone();
    let trace = run.finish()?;
    let too_big = world
        .metrics
        .connections_closed
        .get_or_create(&ReasonLabel {
            reason: "frame_too_big".to_owned(),
        })
        .get();
    if too_big != 1 {
        return Err(format!(
            "{too_big} connections closed as frame_too_big, expected 1"
        ));
    }
    let rate_closes = world
        .metrics
        .connections_closed
        .get_or_create(&ReasonLabel {
            reason: "rate_limit_exceeded".to_owned(),
        })
        .get();
    // The flood's answers can overflow its own queue before the rate limit
    // trips: a slow-consumer close handles the flood just as well.
    let handled = rate_closes
        + world.metrics.rate_limited.get()
        + world.metrics.slow_consumer_disconnects.get();
    if handled == 0 {
        return Err("the flood was neither rate limited nor closed".to_owned());
    }
    let delay = max_delivery_delay(&trace, |client| client.starts_with("good"))
        .ok_or("good clients received nothing")?;
    if delay > GOOD_DELAY_BOUND {
        return Err(format!(
            "a good client waited {delay:?} for a message (bound {GOOD_DELAY_BOUND:?})"
        ));
    }
    Ok(trace)
}

#[test]
fn bad_clients_are_answered_or_closed_and_good_clients_are_unaffected() {
    run_seeds(
        TEST,
        "bad_clients::bad_clients_are_answered_or_closed_and_good_clients_are_unaffected",
        policy(),
        bad_clients,
    );
}
