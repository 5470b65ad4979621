//! The simulation scenarios, one module per property. Every run of every
//! scenario is also checked against all the invariants of
//! `sim::checker` (see `sim::seeds::run_seeds`). A scenario sets up its run
//! with `World::builder()` and the shared steps of `sim::run`: steady
//! subscribers, its own hosts (counted as members, leavers or bystanders),
//! and a feeder whose wind-down (quiesce, everyone leaves, last sample) is
//! the same everywhere.

use std::time::Duration;

use sim::checker::CheckPolicy;
use sim::world::sim_config;
use ws_realtime::core::Core;

mod bad_clients;
mod churn;
mod determinism;
mod fan_out;
mod held_link;
mod never_readers;
mod recovery;
mod shutdown;
mod slow_consumer;
mod slow_link_conflation;
mod source_stall;
mod token_refresh;
mod workers;

/// This test binary's name, for replay commands.
const TEST: &str = "scenarios";

/// The checker's policy for the default simulated server (`sim_config`):
/// a silent client must be gone within connection timeout (3 s) +
/// heartbeat interval (1 s) + a sample period and network slack.
fn policy() -> CheckPolicy {
    CheckPolicy {
        drop_oldest: false,
        silence_bound: Duration::from_millis(4_500),
        expect_empty_at_end: true,
        outbound_bound: Core::outbound_bound_bytes(&sim_config().core),
    }
}
