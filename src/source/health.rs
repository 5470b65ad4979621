//! Readiness: each source says whether it is connected, and the server says
//! whether it is draining. `/ready` and `/healthz` read it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Shared readiness of the whole server.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Each source's state: `None` = ready, `Some(reason)` = not ready.
    sources: Arc<Mutex<BTreeMap<&'static str, Option<String>>>>,
    /// Set once shutdown begins: a draining server is never ready.
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// Adds a source, initially not ready ("starting").
    pub fn register(&self, name: &'static str) -> SourceHealth {
        self.lock().insert(name, Some("starting".to_owned()));
        SourceHealth {
            name,
            readiness: self.clone(),
        }
    }

    /// Marks the server as draining.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// `Ok` when every source is ready and the server is not draining;
    /// otherwise every reason, e.g. `["kafka: broker unreachable"]`.
    pub fn status(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if self.is_draining() {
            reasons.push("draining".to_owned());
        }
        for (name, state) in self.lock().iter() {
            if let Some(reason) = state {
                reasons.push(format!("{name}: {reason}"));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts), so a poisoned lock is still usable.
        self.sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One source's handle on its readiness entry.
#[derive(Debug, Clone)]
pub struct SourceHealth {
    /// The source's name, the key of its entry.
    name: &'static str,
    /// The shared registry.
    readiness: Readiness,
}

impl SourceHealth {
    /// The source is connected and delivering.
    pub fn ready(&self) {
        self.readiness.lock().insert(self.name, None);
    }

    /// The source is not delivering, and why.
    pub fn not_ready(&self, reason: impl Into<String>) {
        self.readiness.lock().insert(self.name, Some(reason.into()));
    }

    /// Whether this source is currently ready.
    pub fn is_ready(&self) -> bool {
        matches!(self.readiness.lock().get(self.name), Some(None))
    }
}
