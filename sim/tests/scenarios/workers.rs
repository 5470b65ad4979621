//! Scenario: the fan-out and the graceful shutdown against a server with
//! three workers (`WS_WORKERS=3`), each a task with its own core on the
//! server host, connections handed to them round-robin. Every invariant of
//! the single-core server must hold: every subscriber gets every message of
//! its channels exactly once and in order (whichever worker holds it),
//! nothing reaches a non-subscriber, and every client of every worker gets
//! 1001 within the shutdown timeout.

use sim::seeds::run_seeds;

use crate::fan_out::fan_out_with;
use crate::shutdown::shutdown_under_load_with;
use crate::{TEST, policy};

/// Workers of the simulated server.
const WORKERS: usize = 3;

#[test]
fn three_workers_deliver_every_message_of_a_channel_exactly_once_in_order() {
    run_seeds(
        TEST,
        "workers::three_workers_deliver_every_message_of_a_channel_exactly_once_in_order",
        policy(),
        |seed| fan_out_with(seed, 30, 200, WORKERS),
    );
}

#[test]
fn three_workers_close_every_client_with_1001_on_shutdown() {
    run_seeds(
        TEST,
        "workers::three_workers_close_every_client_with_1001_on_shutdown",
        policy(),
        |seed| shutdown_under_load_with(seed, WORKERS),
    );
}
