//! `backfill:N` progress: which assigned partitions the core has not yet been
//! handed up to the high watermark seen at assignment. `/ready` stays false
//! (and says which partitions) until none is left, so a fresh replica holds
//! the history a reconnecting client needs before it takes traffic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Shared by the rebalance callback (which registers partitions), the
/// consuming loop (which reports deliveries) and the health monitor (which
/// turns the remainder into a `/ready` reason).
#[derive(Debug, Clone, Default)]
pub(crate) struct BackfillProgress {
    /// The state; `None` when the source does not backfill (`latest`,
    /// `earliest`), which never holds readiness back.
    state: Option<Arc<Mutex<State>>>,
    /// Wakes the health monitor when the last partition catches up, so ready
    /// flips now rather than at its next interval.
    done: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    /// No partition has been assigned yet: nothing can have been backfilled.
    assigned: bool,
    /// Partitions still catching up: (topic, partition) → (target, next).
    /// The target is the high watermark at assignment (`None` while the
    /// brokers have not answered it); `next` the offset after the last record
    /// the core took, for the reason text.
    pending: BTreeMap<(String, i32), (Option<i64>, Option<i64>)>,
}

impl BackfillProgress {
    /// Progress tracking when `enabled` (the source starts with `backfill:N`).
    pub(crate) fn new(enabled: bool) -> BackfillProgress {
        BackfillProgress {
            state: enabled.then(Default::default),
            done: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        // Single-field updates: a poisoned lock is still consistent.
        self.state
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A partition newly assigned and backfilled, with its (low, high)
    /// watermarks when the brokers answered: an empty one is caught up.
    pub(crate) fn assigned(&self, topic: &str, partition: i32, watermarks: Option<(i64, i64)>) {
        let Some(mut state) = self.lock() else { return };
        state.assigned = true;
        match watermarks {
            Some((low, high)) if high <= low => {}
            Some((_, high)) => {
                state
                    .pending
                    .insert((topic.to_owned(), partition), (Some(high), None));
            }
            None => {
                state
                    .pending
                    .insert((topic.to_owned(), partition), (None, None));
            }
        }
        drop(state);
        self.notify_if_done();
    }

    /// Partitions still waiting for their high watermark.
    pub(crate) fn unknown_targets(&self) -> Vec<(String, i32)> {
        self.lock().map_or_else(Vec::new, |state| {
            state
                .pending
                .iter()
                .filter(|(_, (target, _))| target.is_none())
                .map(|(key, _)| key.clone())
                .collect()
        })
    }

    /// The high watermark of a partition registered without one.
    pub(crate) fn set_target(&self, topic: &str, partition: i32, (low, high): (i64, i64)) {
        let Some(mut state) = self.lock() else { return };
        let key = (topic.to_owned(), partition);
        if high <= low {
            state.pending.remove(&key);
        } else if let Some(entry) = state.pending.get_mut(&key) {
            entry.0 = Some(high);
        }
        drop(state);
        self.notify_if_done();
    }

    /// A revoked partition is another consumer's business now.
    pub(crate) fn revoked(&self, topic: &str, partition: i32) {
        let Some(mut state) = self.lock() else { return };
        state.pending.remove(&(topic.to_owned(), partition));
        drop(state);
        self.notify_if_done();
    }

    /// Whether the record at `offset` completes its partition's backfill:
    /// the loop then waits until the core has taken it before reporting it.
    pub(crate) fn completes(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.lock().is_some_and(|state| {
            matches!(
                state.pending.get(&(topic.to_owned(), partition)),
                Some((Some(target), _)) if offset + 1 >= *target
            )
        })
    }

    /// The core has taken the record at `offset` (and, the queue being FIFO,
    /// every record before it).
    pub(crate) fn taken(&self, topic: &str, partition: i32, offset: i64) {
        let Some(mut state) = self.lock() else { return };
        let key = (topic.to_owned(), partition);
        let Some(entry) = state.pending.get_mut(&key) else {
            return;
        };
        entry.1 = Some(offset + 1);
        if entry.0.is_some_and(|target| offset + 1 >= target) {
            state.pending.remove(&key);
            drop(state);
            self.notify_if_done();
        }
    }

    /// Why the source is not ready yet, or `None` once backfilled.
    pub(crate) fn reason(&self) -> Option<String> {
        let state = self.lock()?;
        if !state.assigned {
            return Some("backfill: waiting for partition assignment".to_owned());
        }
        if state.pending.is_empty() {
            return None;
        }
        let shown: Vec<String> = state
            .pending
            .iter()
            .take(5)
            .map(|((topic, partition), (target, next))| {
                let next = next.map_or_else(|| "-".to_owned(), |n| n.to_string());
                let target = target.map_or_else(|| "?".to_owned(), |t| t.to_string());
                format!("{topic}:{partition} at {next} of {target}")
            })
            .collect();
        let more = state.pending.len().saturating_sub(shown.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        Some(format!(
            "backfill: {} partition(s) not caught up ({}{more})",
            state.pending.len(),
            shown.join(", ")
        ))
    }

    /// Resolves when the last pending partition has caught up.
    pub(crate) async fn wait_done(&self) {
        self.done.notified().await;
    }

    fn notify_if_done(&self) {
        if self.reason().is_none() {
            self.done.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_and_earliest_never_hold_readiness_back() {
        let progress = BackfillProgress::new(false);
        progress.assigned("lines", 0, Some((0, 10)));
        assert_eq!(progress.reason(), None);
        assert!(!progress.completes("lines", 0, 9));
    }

    #[test]
    fn not_ready_until_every_partition_reaches_its_assignment_watermark() {
        let progress = BackfillProgress::new(true);
        assert_eq!(
            progress.reason().as_deref(),
            Some("backfill: waiting for partition assignment")
        );
        progress.assigned("lines", 0, Some((0, 3)));
        progress.assigned("lines", 1, Some((5, 5)));
        progress.assigned("lines", 2, None);
        assert_eq!(
            progress.reason().as_deref(),
            Some("backfill: 2 partition(s) not caught up (lines:0 at - of 3, lines:2 at - of ?)")
        );
        assert!(!progress.completes("lines", 0, 1));
        progress.taken("lines", 0, 1);
        assert!(progress.completes("lines", 0, 2));
        progress.taken("lines", 0, 2);
        assert_eq!(progress.unknown_targets(), [("lines".to_owned(), 2)]);
        progress.set_target("lines", 2, (0, 4));
        assert_eq!(
            progress.reason().as_deref(),
            Some("backfill: 1 partition(s) not caught up (lines:2 at - of 4)")
        );
        progress.revoked("lines", 2);
        assert_eq!(progress.reason(), None);
    }
}
