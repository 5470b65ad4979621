//! The invariants every simulation run must keep, checked over the run's
//! [`Trace`] after the run, whatever the scenario:
//!
//! 1. every message a client received was published, on the channel it says;
//! 2. nothing is delivered to a non-subscriber;
//! 3. no client gets a message twice;
//! 4. each client sees every partition's offsets in increasing order;
//! 5. every message published while a client was subscribed reaches it
//!    exactly once: all of them if the client stayed healthy to the end, and
//!    without gaps before its last message if it left or was closed (its
//!    queue is FIFO); a paused client under `drop_oldest` may miss at most
//!    what the server counted as dropped;
//! 6. every client that went silent is closed by the server within the bound;
//! 7. when every client has gone, the core's tables are empty;
//! 8. every frame the server sends is one protocol v1 describes;
//! 9. no connection's outbound queue ever held more than the per-client
//!    bound, and at the end nothing is held in queues or socket buffers.
//!
//! Sequence numbers give a causal order, so "published while subscribed" has
//! a precise meaning: after the client read the ack that added the channel,
//! and before it wrote the request that removed it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::recorder::{ClientName, Happening, MsgId, Record, ServerSample};

/// What the scenario promises about its run, so the checker knows which
/// losses are allowed and which deadlines apply.
#[derive(Debug, Clone, Copy)]
pub struct CheckPolicy {
    /// The server ran with `drop_oldest`: paused clients may lose messages,
    /// up to the server's drop counter.
    pub drop_oldest: bool,
    /// A silent client must be closed by the server within this long
    /// (connection timeout + heartbeat interval + the sampling period).
    pub silence_bound: Duration,
    /// Every client leaves before the end, so the core's tables must be
    /// empty in the last sample.
    pub expect_empty_at_end: bool,
    /// The most bytes one connection's outbound queue may hold
    /// (`Core::outbound_bound_bytes` of the server's configuration).
    pub outbound_bound: usize,
}

/// One broken invariant, with enough detail to find it in the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (a short stable name).
    pub invariant: &'static str,
    /// What exactly.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// Counts for the run's log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages the core took.
    pub published: usize,
    /// Messages clients received.
    pub received: usize,
    /// Messages that were required somewhere (sum over clients).
    pub required: usize,
    /// Clients that connected.
    pub clients: usize,
}

/// Where a message came from and when the core took it: no earlier than
/// `sent`, no later than `taken`.
#[derive(Debug, Clone)]
struct Published {
    /// Causal position of the source handing it to the core.
    sent: u64,
    /// Causal position of the source learning the core took it; `u64::MAX`
    /// until then (or forever, if the server stopped first).
    taken: u64,
    /// Its channel.
    channel: String,
}

/// What the checker knows about one client while it walks the trace.
#[derive(Debug, Default)]
struct ClientView {
    /// The server's subscription set as the client last learned it (stream
    /// order: acks and messages share one FIFO queue).
    current: BTreeSet<String>,
    /// Per channel: intervals `[intent, removal ack]` in which the server may
    /// have had the client subscribed; outside them a delivery is wrong.
    may: BTreeMap<String, Vec<(u64, u64)>>,
    /// Per channel: the open "may" interval's start.
    may_open: BTreeMap<String, u64>,
    /// Per channel: intervals `[add ack, removal request]` in which the
    /// client was certainly subscribed; publications inside are owed to it.
    must: BTreeMap<String, Vec<(u64, u64)>>,
    /// Per channel: the open "must" interval's start.
    must_open: BTreeMap<String, u64>,
    /// Per channel: the latest subscribe and unsubscribe requests sent, so a
    /// removal ack followed by a pending re-subscribe keeps the channel
    /// possible from the re-subscribe on.
    last_requests: BTreeMap<String, (u64, u64)>,
    /// Per channel: the first unsubscribe request sent since the channel was
    /// last known absent. The server may act on it any time after, so an ack
    /// that adds the channel later proves nothing about what follows.
    unsubscribe_pending: BTreeMap<String, u64>,
    /// Everything received, for duplicates and completeness.
    received: HashSet<MsgId>,
    /// Highest offset seen per partition, for ordering.
    last_offset: HashMap<i32, i64>,
    /// Causal position of the latest-published message received.
    last_received_pub: Option<u64>,
    /// When the client stopped being a healthy reader (left, closed, paused
    /// and never resumed, silent and never recovered), if it did.
    unhealthy_since: Option<u64>,
    /// Whether it was ever paused (its losses may be `drop_oldest` drops).
    was_paused: bool,
    /// When it connected, if it did.
    connected: bool,
    /// When it ended (left or closed).
    ended: bool,
}

impl ClientView {
    fn open_may(&mut self, channel: &str, seq: u64) {
        self.may_open.entry(channel.to_owned()).or_insert(seq);
    }

    fn end_all_must(&mut self, seq: u64) {
        for (channel, start) in std::mem::take(&mut self.must_open) {
            self.must.entry(channel).or_default().push((start, seq));
        }
    }
}

/// Checks every invariant over `trace`; returns the counts, or every
/// violation found.
pub fn check(trace: &[Record], policy: CheckPolicy) -> Result<Summary, Vec<Violation>> {
    let mut violations = Vec::new();
    let mut violate = |invariant: &'static str, detail: String| {
        if violations.len() < 50 {
            violations.push(Violation { invariant, detail });
        }
    };
    let mut published: HashMap<MsgId, Published> = HashMap::new();
    let mut clients: BTreeMap<ClientName, ClientView> = BTreeMap::new();
    let mut quiesced: Option<u64> = None;
    let mut summary = Summary::default();

    for record in trace {
        let seq = record.seq;
        match &record.what {
            Happening::Publishing { msg, channel } => {
                let previous = published.insert(
                    *msg,
                    Published {
                        sent: seq,
                        taken: u64::MAX,
                        channel: channel.clone(),
                    },
                );
                if previous.is_some() {
                    violate("unique_positions", format!("{msg} was published twice"));
                }
            }
            Happening::Published { msg } => {
                summary.published += 1;
                match published.get_mut(msg) {
                    Some(origin) => origin.taken = seq,
                    None => violate("unique_positions", format!("{msg} taken, never sent")),
                }
            }
            Happening::Connecting { client, channels } => {
                let view = clients.entry(client.clone()).or_default();
                for channel in channels {
                    view.open_may(channel, seq);
                }
            }
            Happening::Connected { client } => {
                summary.clients += 1;
                let view = clients.entry(client.clone()).or_default();
                view.connected = true;
            }
            Happening::SubscribeSent { client, channels } => {
                let view = clients.entry(client.clone()).or_default();
                for channel in channels {
                    view.open_may(channel, seq);
                    view.last_requests.entry(channel.clone()).or_default().0 = seq;
                }
            }
            Happening::RecoverSent { client, channels } => {
                // A recover replays messages taken before the request, so
                // its "may" interval starts at the beginning of the run; the
                // scenario itself checks the replay is exactly the stream.
                let view = clients.entry(client.clone()).or_default();
                for channel in channels {
                    view.open_may(channel, 0);
                    view.last_requests.entry(channel.clone()).or_default().0 = seq;
                }
            }
            Happening::UnsubscribeSent { client, channels } => {
                let view = clients.entry(client.clone()).or_default();
                for channel in channels {
                    if let Some(start) = view.must_open.remove(channel) {
                        view.must
                            .entry(channel.clone())
                            .or_default()
                            .push((start, seq));
                    }
                    view.unsubscribe_pending
                        .entry(channel.clone())
                        .or_insert(seq);
                    view.last_requests.entry(channel.clone()).or_default().1 = seq;
                }
            }
            Happening::Subscriptions { client, current } => {
                let view = clients.entry(client.clone()).or_default();
                let now: BTreeSet<String> = current.iter().cloned().collect();
                let added: Vec<String> = now.difference(&view.current).cloned().collect();
                for added in &added {
                    if !view.unsubscribe_pending.contains_key(added) {
                        view.must_open.entry(added.clone()).or_insert(seq);
                    }
                    // The ack may come for a channel the client did not ask
                    // for in this run's records (e.g. `assessmentId`); its
                    // "may" interval starts no later than the ack.
                    view.open_may(added, seq);
                }
                let removed: Vec<String> = view.current.difference(&now).cloned().collect();
                for removed in &removed {
                    view.unsubscribe_pending.remove(removed);
                    if let Some(start) = view.must_open.remove(removed) {
                        view.must
                            .entry(removed.clone())
                            .or_default()
                            .push((start, seq));
                    }
                    if let Some(start) = view.may_open.remove(removed) {
                        view.may
                            .entry(removed.clone())
                            .or_default()
                            .push((start, seq));
                    }
                    if let Some(&(subscribe, unsubscribe)) = view.last_requests.get(removed)
                        && subscribe > unsubscribe
                    {
                        view.may_open.insert(removed.clone(), subscribe);
                    }
                }
                view.current = now;
            }
            Happening::Received {
                client,
                channel,
                msg,
            } => {
                summary.received += 1;
                let view = clients.entry(client.clone()).or_default();
                let Some(origin) = published.get(msg) else {
                    violate(
                        "no_phantom_messages",
                        format!("{client} received {msg} on {channel}, never published"),
                    );
                    continue;
                };
                if origin.channel != *channel {
                    violate(
                        "no_phantom_messages",
                        format!(
                            "{client} received {msg} on {channel}, published on {}",
                            origin.channel
                        ),
                    );
                }
                if !view.current.contains(channel) {
                    violate(
                        "no_delivery_to_non_subscriber",
                        format!("{client} received {msg} on {channel} while not subscribed to it"),
                    );
                }
                // Taken after the intent and before the removal ack: since
                // the take lies in [sent, taken], it must be that
                // taken > intent and sent < removal ack.
                let in_may = view
                    .may
                    .get(channel)
                    .into_iter()
                    .flatten()
                    .any(|&(start, end)| start < origin.taken && origin.sent < end)
                    || view
                        .may_open
                        .get(channel)
                        .is_some_and(|&start| start < origin.taken);
                if !in_may {
                    violate(
                        "no_delivery_to_non_subscriber",
                        format!(
                            "{client} received {msg} on {channel}, published when it was not subscribed"
                        ),
                    );
                }
                if !view.received.insert(*msg) {
                    violate("no_duplicates", format!("{client} received {msg} twice"));
                }
                let last = view.last_offset.entry(msg.partition).or_insert(i64::MIN);
                if msg.offset <= *last {
                    violate(
                        "per_partition_order",
                        format!(
                            "{client} received {msg} after offset {} of partition {}",
                            *last, msg.partition
                        ),
                    );
                }
                *last = (*last).max(msg.offset);
                view.last_received_pub = view.last_received_pub.max(Some(origin.sent));
            }
            Happening::Paused { client } => {
                let view = clients.entry(client.clone()).or_default();
                view.was_paused = true;
                view.unhealthy_since.get_or_insert(seq);
            }
            Happening::WentSilent { client } => {
                let view = clients.entry(client.clone()).or_default();
                view.unhealthy_since.get_or_insert(seq);
            }
            Happening::Resumed { client } | Happening::Recovered { client } => {
                let view = clients.entry(client.clone()).or_default();
                if !view.ended {
                    view.unhealthy_since = None;
                }
            }
            Happening::Left { client } | Happening::Closed { client, .. } => {
                let view = clients.entry(client.clone()).or_default();
                if !view.ended {
                    view.ended = true;
                    view.unhealthy_since.get_or_insert(seq);
                    view.end_all_must(seq);
                }
            }
            Happening::Refused { client, .. } => {
                let view = clients.entry(client.clone()).or_default();
                view.ended = true;
                view.may_open.clear();
            }
            Happening::Quiesced => {
                quiesced.get_or_insert(seq);
            }
            Happening::Unexpected { client, what } => {
                violate("well_formed_server_frames", format!("{client} read {what}"));
            }
            Happening::ErrorFrame { .. } | Happening::ServerSample(_) => {}
        }
    }

    // Completeness: what each client was owed against what it got.
    let mut by_channel: HashMap<&str, Vec<(u64, u64, MsgId)>> = HashMap::new();
    for (msg, origin) in &published {
        by_channel
            .entry(origin.channel.as_str())
            .or_default()
            .push((origin.sent, origin.taken, *msg));
    }
    let mut lossy_missing = 0u64;
    for (name, view) in &mut clients {
        let end = u64::MAX;
        view.end_all_must(end);
        let healthy_at_quiesce = match (quiesced, view.unhealthy_since) {
            (Some(_), None) => true,
            (Some(q), Some(since)) => since > q,
            (None, _) => false,
        };
        let lossy = policy.drop_oldest && view.was_paused;
        let mut missing = Vec::new();
        for (channel, intervals) in &view.must {
            for &(start, stop) in intervals {
                for &(sent, taken, msg) in by_channel.get(channel.as_str()).into_iter().flatten() {
                    // Owed only if certainly taken after the add ack and
                    // before the removal request.
                    if sent <= start || taken >= stop {
                        continue;
                    }
                    summary.required += 1;
                    if view.received.contains(&msg) {
                        continue;
                    }
                    let owed_now = if healthy_at_quiesce {
                        taken < quiesced.expect("healthy_at_quiesce implies a quiesce record")
                    } else {
                        // FIFO queue: taken before a message it did receive.
                        view.last_received_pub.is_some_and(|last| taken < last)
                    };
                    if owed_now {
                        missing.push(msg);
                    }
                }
            }
        }
        if missing.is_empty() {
            continue;
        }
        if lossy {
            lossy_missing += missing.len() as u64;
            continue;
        }
        missing.sort();
        violate(
            "every_subscribed_message_delivered",
            format!(
                "{name} is missing {} message(s) it was subscribed for, first {}",
                missing.len(),
                missing[0]
            ),
        );
    }

    let samples: Vec<(Duration, ServerSample)> = trace
        .iter()
        .filter_map(|record| match &record.what {
            Happening::ServerSample(sample) => Some((record.at, *sample)),
            _ => None,
        })
        .collect();
    if lossy_missing > 0 {
        let counted = samples
            .last()
            .map_or(0, |(_, sample)| sample.dropped_oldest);
        if lossy_missing > counted {
            violate(
                "drops_are_counted",
                format!(
                    "paused clients missed {lossy_missing} messages, the server counted {counted} drops"
                ),
            );
        }
    }

    check_silent_clients_closed(trace, policy, &samples, &mut violate);
    if let Some((at, sample)) = samples
        .iter()
        .find(|(_, sample)| sample.outbound_peak_bytes > policy.outbound_bound as i64)
    {
        violate(
            "outbound_within_bound",
            format!(
                "a connection's queue held {} bytes by {at:?}, bound {}",
                sample.outbound_peak_bytes, policy.outbound_bound
            ),
        );
    }
    if policy.expect_empty_at_end {
        check_tables_empty(trace, &samples, &mut violate);
    }

    if violations.is_empty() {
        Ok(summary)
    } else {
        Err(violations)
    }
}

/// The longest time from a message being handed to the core to its
/// arrival, over the clients `include` selects; `None` if none arrived.
pub fn max_delivery_delay(trace: &[Record], include: impl Fn(&str) -> bool) -> Option<Duration> {
    let mut handed: HashMap<MsgId, Duration> = HashMap::new();
    let mut worst = None;
    for record in trace {
        match &record.what {
            Happening::Publishing { msg, .. } => {
                handed.insert(*msg, record.at);
            }
            Happening::Received { client, msg, .. } if include(client) => {
                if let Some(start) = handed.get(msg) {
                    let delay = record.at.saturating_sub(*start);
                    worst = worst.max(Some(delay));
                }
            }
            _ => {}
        }
    }
    worst
}

/// Invariant 6: a client silent for longer than the bound has been closed by
/// the server (heartbeat failure or slow consumer) by the first sample after
/// its deadline.
fn check_silent_clients_closed(
    trace: &[Record],
    policy: CheckPolicy,
    samples: &[(Duration, ServerSample)],
    violate: &mut impl FnMut(&'static str, String),
) {
    let mut silent_since: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut deadlines: Vec<(Duration, &str)> = Vec::new();
    for record in trace {
        match &record.what {
            Happening::WentSilent { client } => {
                silent_since.insert(client, record.at);
            }
            Happening::Recovered { client } => {
                if let Some(since) = silent_since.remove(client.as_str())
                    && record.at > since + policy.silence_bound
                {
                    deadlines.push((since + policy.silence_bound, client));
                }
            }
            _ => {}
        }
    }
    for (client, since) in silent_since {
        deadlines.push((since + policy.silence_bound, client));
    }
    deadlines.sort();
    for (index, &(deadline, client)) in deadlines.iter().enumerate() {
        let Some((at, sample)) = samples.iter().find(|(at, _)| *at >= deadline) else {
            continue;
        };
        let due = deadlines[..=index].len() as u64;
        // A silent socket's buffers may fill first: a slow-consumer close
        // is just as timely.
        let server_closes = sample.heartbeat_failures + sample.slow_consumer_disconnects;
        if server_closes < due {
            violate(
                "silent_clients_closed_in_time",
                format!(
                    "{client} silent since {:?} was not closed by {:?} ({server_closes} server closes counted, {due} due)",
                    deadline - policy.silence_bound,
                    at
                ),
            );
        }
    }
}

/// Invariant 7: after every client has gone, the last sample shows empty
/// tables.
fn check_tables_empty(
    trace: &[Record],
    samples: &[(Duration, ServerSample)],
    violate: &mut impl FnMut(&'static str, String),
) {
    let mut open: BTreeSet<&str> = BTreeSet::new();
    let mut last_end = None;
    for record in trace {
        match &record.what {
            Happening::Connected { client } => {
                open.insert(client);
            }
            Happening::Left { client } | Happening::Closed { client, .. } => {
                open.remove(client.as_str());
                last_end = Some(record.at);
            }
            _ => {}
        }
    }
    if !open.is_empty() {
        violate(
            "tables_empty_at_end",
            format!("clients still connected at the end: {open:?}"),
        );
        return;
    }
    match samples.last() {
        Some((at, sample)) if last_end.is_none_or(|end| *at > end) => {
            if sample.connections != 0
                || sample.subscriptions != 0
                || sample.channels != 0
                || sample.outbound_bytes != 0
                || sample.socket_unread_bytes != 0
            {
                violate(
                    "tables_empty_at_end",
                    format!("everyone left but the core still holds {sample:?}"),
                );
            }
        }
        _ => violate(
            "tables_empty_at_end",
            "no server sample after the last client left".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests;
