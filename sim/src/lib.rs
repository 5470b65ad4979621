//! Deterministic simulations of the whole ws-realtime server under turmoil:
//! the real shell and core on a simulated network, real WebSocket clients on
//! their own hosts, an in-memory source, and one checker of the invariants
//! run at the end of every run.

pub mod checker;
pub mod client;
pub mod fake_source;
pub mod recorder;
