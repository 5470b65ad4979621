//! Scenario: gapless recovery on ANOTHER replica. Two server replicas are
//! fed the same stream (same topic-qualified positions, as Kafka in
//! broadcast mode). A client on replica A keeps its cursor by the protocol's
//! client rule (the `subscribed` ack's `positions`, then each message's
//! `pos`); its link is held, A crashes while messages keep flowing, and the
//! client reconnects to replica B with `since`. It must end with exactly the
//! channel's stream after its first ack — no gap, no duplicate, in order —
//! and `recovered:true` for every channel.
//!
//! And a reconnect storm on one replica: many clients drop at once, miss
//! more messages together than a turn's replay allowance, and come back at
//! once with their cursors while publishing goes on. Their replays are
//! paced (`core::replay_pacing`) across turns of the real shell; each must
//! still end with exactly its stream, none closed, and the steady
//! subscribers beside them lose nothing (the checker's invariants).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use sim::client::{Delivery, SimClient};
use sim::fake_source::FEED_TOPIC;
use sim::recorder::{Happening, MsgId, Trace};
use sim::run::{FeedEnd, Part, Subscriber};
use sim::seeds::run_seeds;
use sim::world::{Flag, Gate, SERVER, World, channel, partition_of};

use crate::{TEST, policy};

/// Channels published on: 0..=3 (channel 3 shares partition 0 with channel
/// 0, so a channel's offsets have holes the cursor must cope with).
const PUBLISHED: usize = 4;

/// What the roaming client saw, for the checks after the run.
#[derive(Debug, Default)]
struct Outcome {
    /// `positions` of its first ack (on replica A), by channel.
    first_positions: BTreeMap<String, String>,
    /// Messages read from replica A, then from replica B.
    deliveries: Vec<Delivery>,
    /// `recovered` of its ack on replica B.
    recovered: BTreeMap<String, bool>,
}

/// The protocol's client rule: start from the ack's cursor; for each
/// non-snapshot message of the channel, replace (or append) the entry of its
/// `pos`'s stream (everything before the last `:`) by the `pos`.
fn cursor(start: &str, channel: &str, deliveries: &[Delivery]) -> String {
    let mut entries: Vec<String> = start
        .split(',')
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    let stream = |pos: &str| pos.rsplit_once(':').map(|(s, _)| s.to_owned());
    for d in deliveries
        .iter()
        .filter(|d| d.channel == channel && !d.snapshot)
    {
        let here = stream(&d.pos);
        match entries.iter_mut().find(|e| stream(e) == here) {
            Some(entry) => entry.clone_from(&d.pos),
            None => entries.push(d.pos.clone()),
        }
    }
    entries.join(",")
}

/// The `since` of a client that read `deliveries` after an ack whose
/// `positions` were `first_positions`: each channel's [`cursor`].
fn since(
    channels: &[String],
    first_positions: &BTreeMap<String, String>,
    deliveries: &[Delivery],
) -> BTreeMap<String, String> {
    channels
        .iter()
        .map(|ch| {
            let start = first_positions.get(ch).map_or("", String::as_str);
            (ch.clone(), cursor(start, ch, deliveries))
        })
        .collect()
}

/// The offset `cursor` records for `partition` of the fake topic.
fn cursor_offset(cursor: &str, partition: i32) -> Option<i64> {
    let prefix = format!("{FEED_TOPIC}:{partition}:");
    cursor
        .split(',')
        .find_map(|e| e.strip_prefix(&prefix)?.parse().ok())
}

/// One run: `roamer` subscribes on A, is cut off, A crashes, and it recovers
/// on B.
fn recover_on_other_replica(seed: u64) -> Result<Trace, String> {
    // Fixed, distinct epochs: two processes, and a deterministic trace.
    let mut run = World::builder()
        .replicas(2)
        .configure_replica(0, |a| a.core.history.epoch = "a1a1a1a1".to_owned())
        .configure_replica(1, |b| b.core.history.epoch = "b2b2b2b2".to_owned())
        .start(seed);
    let (world, sim) = (run.world.clone(), &mut run.sim);

    let channels = vec![channel(0), channel(1)];
    let warm = Flag::default();
    let subscribed = Gate::default();
    let cut = Flag::default();
    let crash = Flag::default();
    let back = Flag::default();
    let done = Flag::default();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    {
        let (world, warm, subscribed) = (world.clone(), warm.clone(), subscribed.clone());
        let (cut, crash, back, done) = (cut.clone(), crash.clone(), back.clone(), done.clone());
        let (channels, outcome) = (channels.clone(), outcome.clone());
        sim.client("roamer", async move {
            let mut rng = world.rng(1);
            warm.wait(Duration::from_secs(20)).await?;
            let mut client =
                SimClient::connect(world.client_of(0, "roamer", &[]), world.recorder.clone())
                    .await?;
            client.wait_connected().await?;
            client.subscribe(&channels).await?;
            client.wait_subscribed(&channels).await?;
            let first_positions = client.state().positions;
            subscribed.arrive();
            cut.wait(Duration::from_secs(20)).await?;
            // The link goes silent (frames in flight stay in flight), then
            // the replica dies with them.
            turmoil::hold(SERVER, "roamer");
            crash.set();
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_500))).await;
            let mut deliveries = client.state().log;
            client.vanish();
            let since = since(&channels, &first_positions, &deliveries);
            let mut client =
                SimClient::connect(world.client_of(1, "roamer.1", &[]), world.recorder.clone())
                    .await?;
            client.wait_connected().await?;
            client.subscribe_since(&channels, &since).await?;
            client.wait_subscribed(&channels).await?;
            back.set();
            done.wait(Duration::from_secs(40)).await?;
            let state = client.state();
            deliveries.extend(state.log);
            *outcome.lock().expect("not poisoned") = Outcome {
                first_positions,
                deliveries,
                recovered: state.recovered,
            };
            client.leave().await;
            Ok(())
        });
    }
    let feeder = world.clone();
    sim.client("feeder", async move {
        let world = feeder;
        let mut rng = world.rng(u64::MAX);
        let mut sent = 0;
        let publish = |rng: &mut rand::rngs::SmallRng| {
            let index = rng.random_range(0..PUBLISHED);
            world.feed.publish(&channel(index), partition_of(index));
        };
        // One message on every channel, so every phase has some of each.
        let round = || {
            for index in 0..PUBLISHED {
                world.feed.publish(&channel(index), partition_of(index));
            }
            PUBLISHED
        };
        // Every channel has a position before the roamer subscribes, so its
        // first cursor already names the Kafka streams.
        for index in (0..PUBLISHED).chain(0..PUBLISHED) {
            world.feed.publish(&channel(index), partition_of(index));
            sent += 1;
        }
        world.wait_taken(sent, Duration::from_secs(10)).await?;
        warm.set();
        subscribed.wait_for(1, Duration::from_secs(20)).await?;
        // Live on A, then through the cut and the crash, then live on B.
        sent += round();
        for _ in 0..rng.random_range(5..30) {
            publish(&mut rng);
            sent += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..80))).await;
        }
        cut.set();
        // Published while the roamer's link is held: only a replay on B
        // can bring these.
        sent += round();
        let limit = tokio::time::Instant::now() + Duration::from_secs(20);
        while !back.is_set() && tokio::time::Instant::now() < limit {
            publish(&mut rng);
            sent += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..80))).await;
        }
        sent += round();
        for _ in 0..rng.random_range(5..30) {
            publish(&mut rng);
            sent += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..60))).await;
        }
        world.wait_taken(sent, Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        world.recorder.record(Happening::Quiesced);
        done.set();
        Ok(())
    });
    let mut crashed = false;
    let trace = run.finish_stepping(|sim| {
        if !crashed && crash.is_set() {
            sim.crash(SERVER);
            crashed = true;
        }
    })?;
    if !crashed {
        return Err("replica A was never crashed".into());
    }
    let outcome = outcome.lock().expect("not poisoned");
    for ch in &channels {
        if outcome.recovered.get(ch) != Some(&true) {
            return Err(format!(
                "{ch}: replica B answered recovered {:?}",
                outcome.recovered
            ));
        }
        let start = outcome
            .first_positions
            .get(ch)
            .ok_or_else(|| format!("{ch}: first ack positions {:?}", outcome.first_positions))?;
        let expected = stream_after(&trace, ch, start);
        same_stream(ch, &expected, &outcome.deliveries)?;
        if expected.is_empty() {
            return Err(format!("{ch}: nothing published after the first ack"));
        }
    }
    Ok(trace)
}

/// The messages published on `ch` after the cursor `start` (its entry for
/// the channel's partition; all of them when it has none, as the cursor of
/// a channel nothing was published on yet), in stream order: what a client
/// that subscribed with `start` as its ack's cursor must end with.
fn stream_after(trace: &Trace, ch: &str, start: &str) -> Vec<MsgId> {
    let partition = partition_of(ch[2..].parse().expect("chN"));
    let start = cursor_offset(start, partition).unwrap_or(-1);
    trace
        .iter()
        .filter_map(|r| match &r.what {
            Happening::Publishing { msg, channel } if channel == ch && msg.offset > start => {
                Some(*msg)
            }
            _ => None,
        })
        .collect()
}

/// Fails unless the messages of `ch` in `deliveries` are exactly `expected`.
fn same_stream(ch: &str, expected: &[MsgId], deliveries: &[Delivery]) -> Result<(), String> {
    let got: Vec<MsgId> = deliveries
        .iter()
        .filter(|d| d.channel == ch && !d.snapshot)
        .map(|d| MsgId::parse(&d.pos).ok_or_else(|| format!("bad pos {}", d.pos)))
        .collect::<Result<_, _>>()?;
    if got != expected {
        let show = |v: &[MsgId]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        return Err(format!(
            "{ch}: the client's stream differs from the channel's\n  expected {:?}\n  got      {:?}",
            show(expected),
            show(&got)
        ));
    }
    Ok(())
}

#[test]
fn client_recovers_exactly_the_stream_on_another_replica_after_a_crash() {
    let mut policy = policy();
    // Replica A crashes with the roamer's first connection in its tables.
    policy.expect_empty_at_end = false;
    run_seeds(
        TEST,
        "recovery::client_recovers_exactly_the_stream_on_another_replica_after_a_crash",
        policy,
        recover_on_other_replica,
    );
}

/// Clients in the reconnect storm.
const STORMERS: usize = 12;

/// Messages published while they are away: 12 × 120 = 1 440 replayed
/// frames, nearly three turns' allowance of 512.
const MISSED: usize = 120;

/// The channel's history ring: about what is published before they are
/// back (~25 live, then the missed ones), so the live messages during the
/// replays evict from it.
const RING: usize = 160;

/// What one storm client saw, for the checks after the run.
#[derive(Debug)]
struct StormOutcome {
    name: String,
    /// `positions` of its first ack.
    first_positions: BTreeMap<String, String>,
    /// Messages read on its first connection, then on its second.
    deliveries: Vec<Delivery>,
    /// `recovered` of its second ack.
    recovered: BTreeMap<String, bool>,
    /// How its second connection ended, if it did before it left.
    closed: Option<Option<u16>>,
}

fn reconnect_storm(seed: u64) -> Result<Trace, String> {
    // A ring that is full by the time they are back, so every live message
    // during the replays evicts one: a replay waiting for its turn at the
    // ring's head would be overtaken (and its client closed as slow).
    let mut run = World::builder()
        .configure(|c| c.core.history.defaults.messages = RING)
        .start(seed);
    let channels = vec![channel(0)];
    for i in 0..2 {
        run.subscriber(Subscriber::new(format!("steady{i}"), channels.clone()).stays_open());
    }
    let gone = Gate::default();
    let back = Flag::default();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    for i in 0..STORMERS {
        let name = format!("stormer{i}");
        let (channels, gone, back, outcomes) = (
            channels.clone(),
            gone.clone(),
            back.clone(),
            outcomes.clone(),
        );
        run.client(&name.clone(), Part::Member, |steps| async move {
            let client = steps.connect_subscribed(0, &name, &[]).await?;
            let mut client = client;
            client.subscribe(&channels).await?;
            client.wait_subscribed(&channels).await?;
            let first_positions = client.state().positions;
            steps.ready.arrive();
            steps.started.wait(Duration::from_secs(20)).await?;
            // Live traffic first, then everyone drops at once.
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            let mut deliveries = client.state().log;
            client.vanish();
            gone.arrive();
            back.wait(Duration::from_secs(20)).await?;
            let since = since(&channels, &first_positions, &deliveries);
            let again = format!("{name}.1");
            let mut client = SimClient::connect(
                steps.world.client(&again, &[]),
                steps.world.recorder.clone(),
            )
            .await?;
            client.wait_connected().await?;
            client.subscribe_since(&channels, &since).await?;
            client.wait_subscribed(&channels).await?;
            steps.wait_done().await?;
            let state = client.state();
            deliveries.extend(state.log);
            outcomes.lock().expect("not poisoned").push(StormOutcome {
                name,
                first_positions,
                deliveries,
                recovered: state.recovered,
                closed: state.closed,
            });
            steps.leave(client).await;
            Ok(())
        });
    }
    run.feeder(
        FeedEnd::default().settle(Duration::from_secs(2)),
        move |steps| async move {
            let world = steps.world;
            let mut rng = world.rng(u64::MAX);
            let mut sent = 0;
            let publish = |sent: &mut usize| {
                world.feed.publish(&channel(0), partition_of(0));
                *sent += 1;
            };
            // Live while everyone is connected, until they have all gone.
            let limit = tokio::time::Instant::now() + Duration::from_secs(10);
            while gone.count() < STORMERS && tokio::time::Instant::now() < limit {
                publish(&mut sent);
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..60))).await;
            }
            // What they miss: a burst, then everyone comes back at once.
            for _ in 0..MISSED {
                publish(&mut sent);
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..6))).await;
            }
            world.wait_taken(sent, Duration::from_secs(10)).await?;
            back.set();
            // Live messages keep coming during the replays: the seam.
            for _ in 0..rng.random_range(40..80) {
                publish(&mut sent);
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
            }
            Ok(sent)
        },
    );
    let trace = run.finish()?;
    let outcomes = outcomes.lock().expect("not poisoned");
    if outcomes.len() != STORMERS {
        return Err(format!(
            "{} of {STORMERS} storm clients finished",
            outcomes.len()
        ));
    }
    let ch = &channels[0];
    for outcome in outcomes.iter() {
        let name = &outcome.name;
        if outcome.recovered.get(ch) != Some(&true) {
            return Err(format!("{name}: recovered {:?}", outcome.recovered));
        }
        if let Some(closed) = outcome.closed {
            return Err(format!(
                "{name}: closed by the server ({closed:?}) while recovering"
            ));
        }
        let start = outcome
            .first_positions
            .get(ch)
            .ok_or_else(|| format!("{name}: first ack positions {:?}", outcome.first_positions))?;
        let expected = stream_after(&trace, ch, start);
        if expected.len() < MISSED {
            return Err(format!(
                "{name}: only {} messages after its first ack",
                expected.len()
            ));
        }
        same_stream(ch, &expected, &outcome.deliveries).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(trace)
}

#[test]
fn a_reconnect_storm_is_replayed_across_turns_and_every_client_gets_exactly_its_stream() {
    run_seeds(
        TEST,
        "recovery::a_reconnect_storm_is_replayed_across_turns_and_every_client_gets_exactly_its_stream",
        policy(),
        reconnect_storm,
    );
}
