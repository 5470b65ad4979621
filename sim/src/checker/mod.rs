//! The invariants every simulation run must keep, checked over the run's
//! [`Trace`](crate::recorder::Trace) after the run, whatever the scenario:
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
//!
//! One file per invariant family:
//!
//! * `deliveries`: one walk over the trace that checks each delivery as it
//!   happens (1–4, 8) and records each client's subscription intervals;
//! * `completeness`: what each client was owed against what it got (5);
//! * `liveness`: silent clients closed in time, empty tables at the end,
//!   queues within their bound (6, 7, 9).

use std::collections::HashMap;
use std::time::Duration;

use crate::recorder::{Happening, MsgId, Record, ServerSample};

mod completeness;
mod deliveries;
mod liveness;

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

/// The violations found so far, capped so a badly broken run stays readable.
#[derive(Debug, Default)]
struct Violations(Vec<Violation>);

impl Violations {
    /// At most this many are kept.
    const CAP: usize = 50;

    /// Records one broken invariant.
    fn push(&mut self, invariant: &'static str, detail: String) {
        if self.0.len() < Self::CAP {
            self.0.push(Violation { invariant, detail });
        }
    }
}

/// Checks every invariant over `trace`; returns the counts, or every
/// violation found.
pub fn check(trace: &[Record], policy: CheckPolicy) -> Result<Summary, Vec<Violation>> {
    let mut violations = Violations::default();
    let mut walk = deliveries::walk(trace, &mut violations);
    let samples: Vec<(Duration, ServerSample)> = trace
        .iter()
        .filter_map(|record| match &record.what {
            Happening::ServerSample(sample) => Some((record.at, *sample)),
            _ => None,
        })
        .collect();
    completeness::check(&mut walk, policy, &samples, &mut violations);
    liveness::check_silent_clients_closed(trace, policy, &samples, &mut violations);
    liveness::check_outbound_within_bound(policy, &samples, &mut violations);
    if policy.expect_empty_at_end {
        liveness::check_tables_empty(trace, &samples, &mut violations);
    }
    if violations.0.is_empty() {
        Ok(walk.summary)
    } else {
        Err(violations.0)
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

#[cfg(test)]
mod tests;
