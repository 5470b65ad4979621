//! Deterministic simulations of the whole ws-realtime server under turmoil:
//! the real shell and core on a simulated network, real WebSocket clients on
//! their own hosts, an in-memory source, and one checker of the invariants
//! run at the end of every run.
//!
//! * [`world`]: one run's simulation, server host and shared helpers.
//! * [`accept`]: the server's `Accept` over turmoil listeners.
//! * [`client`]: a real fastwebsockets client on a turmoil host.
//! * [`fake_source`]: the scripted in-memory `Source` (one feed can drive
//!   several replicas).
//! * [`recorder`] and [`checker`]: the run's log and its invariants.
//! * [`send_buffer`]: the kernel's send buffer (`SO_SNDBUF`) in bytes,
//!   which turmoil's segment-counted TCP does not model.
//! * [`seeds`]: which seeds run, and replaying a failure.
//! * [`run`]: `World::builder()`, the one way a scenario sets up its run.
//! * [`steps`]: what the scenarios' hosts share (steady subscribers, the
//!   feeder's wind-down, the run's gates).

pub mod accept;
pub mod checker;
pub mod client;
pub mod fake_source;
pub mod recorder;
pub mod run;
pub mod seeds;
pub mod send_buffer;
pub mod steps;
pub mod world;
