//! Invariants 1–4 and 8, checked delivery by delivery in one walk over the
//! trace: no phantom messages, nothing to a non-subscriber, no duplicates,
//! per-partition order, only protocol v1 frames. The walk also records, per
//! client, the intervals in which it may and must have been subscribed,
//! which the completeness check then reads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{Summary, Violations};
use crate::recorder::{ClientName, Happening, MsgId, Record};

/// Where a message came from and when the core took it: no earlier than
/// `sent`, no later than `taken`.
#[derive(Debug, Clone)]
pub(super) struct Published {
    /// Causal position of the source handing it to the core.
    pub(super) sent: u64,
    /// Causal position of the source learning the core took it; `u64::MAX`
    /// until then (or forever, if the server stopped first).
    pub(super) taken: u64,
    /// Its channel.
    pub(super) channel: String,
}

/// What the checker knows about one client while it walks the trace.
#[derive(Debug, Default)]
pub(super) struct ClientView {
    /// The server's subscription set as the client last learned it (stream
    /// order: acks and messages share one FIFO queue).
    pub(super) current: BTreeSet<String>,
    /// Per channel: intervals `[intent, removal ack]` in which the server may
    /// have had the client subscribed; outside them a delivery is wrong.
    pub(super) may: BTreeMap<String, Vec<(u64, u64)>>,
    /// Per channel: the open "may" interval's start.
    pub(super) may_open: BTreeMap<String, u64>,
    /// Per channel: intervals `[add ack, removal request]` in which the
    /// client was certainly subscribed; publications inside are owed to it.
    pub(super) must: BTreeMap<String, Vec<(u64, u64)>>,
    /// Per channel: the open "must" interval's start.
    pub(super) must_open: BTreeMap<String, u64>,
    /// Per channel: the latest subscribe and unsubscribe requests sent, so a
    /// removal ack followed by a pending re-subscribe keeps the channel
    /// possible from the re-subscribe on.
    pub(super) last_requests: BTreeMap<String, (u64, u64)>,
    /// Per channel: the first unsubscribe request sent since the channel was
    /// last known absent. The server may act on it any time after, so an ack
    /// that adds the channel later proves nothing about what follows.
    pub(super) unsubscribe_pending: BTreeMap<String, u64>,
    /// Everything received, for duplicates and completeness.
    pub(super) received: HashSet<MsgId>,
    /// Highest offset seen per partition, for ordering.
    pub(super) last_offset: HashMap<i32, i64>,
    /// Causal position of the latest-published message received.
    pub(super) last_received_pub: Option<u64>,
    /// When the client stopped being a healthy reader (left, closed, paused
    /// and never resumed, silent and never recovered), if it did.
    pub(super) unhealthy_since: Option<u64>,
    /// Whether it was ever paused (its losses may be `drop_oldest` drops).
    pub(super) was_paused: bool,
    /// When it connected, if it did.
    pub(super) connected: bool,
    /// When it ended (left or closed).
    pub(super) ended: bool,
}

impl ClientView {
    /// Opens a "may" interval for `channel` at `seq` unless one is open.
    fn open_may(&mut self, channel: &str, seq: u64) {
        self.may_open.entry(channel.to_owned()).or_insert(seq);
    }

    /// Closes every open "must" interval at `seq`.
    pub(super) fn end_all_must(&mut self, seq: u64) {
        for (channel, start) in std::mem::take(&mut self.must_open) {
            self.must.entry(channel).or_default().push((start, seq));
        }
    }
}

/// What the walk over the trace learned.
#[derive(Debug)]
pub(super) struct Walk {
    /// Every message sent by the source, by id.
    pub(super) published: HashMap<MsgId, Published>,
    /// Every client's view, by name.
    pub(super) clients: BTreeMap<ClientName, ClientView>,
    /// Causal position of the scenario's quiesce point, if it had one.
    pub(super) quiesced: Option<u64>,
    /// Counts so far.
    pub(super) summary: Summary,
}

/// Walks `trace`, checking every delivery; returns what completeness needs.
pub(super) fn walk(trace: &[Record], violations: &mut Violations) -> Walk {
    let mut violate = |invariant: &'static str, detail: String| violations.push(invariant, detail);
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
    Walk {
        published,
        clients,
        quiesced,
        summary,
    }
}
