//! Invariants 6, 7 and 9, over time rather than per delivery: a client that
//! went silent is closed by the server in time, no connection's queue passes
//! its bound, and when everyone has gone the core's tables, queues and
//! socket buffers are empty.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{CheckPolicy, Violations};
use crate::recorder::{Happening, Record, ServerSample};

/// Invariant 9: no sample shows a connection's outbound queue over the
/// per-client bound.
pub(super) fn check_outbound_within_bound(
    policy: CheckPolicy,
    samples: &[(Duration, ServerSample)],
    violations: &mut Violations,
) {
    if let Some((at, sample)) = samples
        .iter()
        .find(|(_, sample)| sample.outbound_peak_bytes > policy.outbound_bound as i64)
    {
        violations.push(
            "outbound_within_bound",
            format!(
                "a connection's queue held {} bytes by {at:?}, bound {}",
                sample.outbound_peak_bytes, policy.outbound_bound
            ),
        );
    }
}

/// Invariant 6: a client silent for longer than the bound has been closed by
/// the server (heartbeat failure or slow consumer) by the first sample after
/// its deadline.
pub(super) fn check_silent_clients_closed(
    trace: &[Record],
    policy: CheckPolicy,
    samples: &[(Duration, ServerSample)],
    violations: &mut Violations,
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
            violations.push(
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
pub(super) fn check_tables_empty(
    trace: &[Record],
    samples: &[(Duration, ServerSample)],
    violations: &mut Violations,
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
        violations.push(
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
                violations.push(
                    "tables_empty_at_end",
                    format!("everyone left but the core still holds {sample:?}"),
                );
            }
        }
        _ => violations.push(
            "tables_empty_at_end",
            "no server sample after the last client left".to_owned(),
        ),
    }
}
