//! Invariant 5: every message published while a client was certainly
//! subscribed reached it: all of them if it stayed healthy to the quiesce
//! point, none missing before its last delivery otherwise (its queue is
//! FIFO). Under `drop_oldest` a paused client's losses are allowed up to the
//! server's drop counter.

use std::collections::HashMap;
use std::time::Duration;

use super::deliveries::Walk;
use super::{CheckPolicy, Violations};
use crate::recorder::{MsgId, ServerSample};

/// Checks what each client was owed against what it got.
pub(super) fn check(
    walk: &mut Walk,
    policy: CheckPolicy,
    samples: &[(Duration, ServerSample)],
    violations: &mut Violations,
) {
    let mut violate = |invariant: &'static str, detail: String| violations.push(invariant, detail);
    let Walk {
        published,
        clients,
        quiesced,
        summary,
    } = walk;
    let quiesced = *quiesced;
    let mut by_channel: HashMap<&str, Vec<(u64, u64, MsgId)>> = HashMap::new();
    for (msg, origin) in published.iter() {
        by_channel
            .entry(origin.channel.as_str())
            .or_default()
            .push((origin.sent, origin.taken, *msg));
    }
    let mut lossy_missing = 0u64;
    for (name, view) in clients.iter_mut() {
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
}
