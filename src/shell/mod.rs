//! The thin I/O shell around the core: tokio, hyper 1 and fastwebsockets.
//!
//! * [`server`]: [`run`] over any [`Accept`], and [`start`] for tests.
//! * `driver`: the one task that owns the core.
//! * `connection`: a reader and a writer task per upgraded socket.
//! * `http`: routing of the endpoints on the one port.
//! * [`upgrade`]: the pure upgrade decision (token, origin, query).
//! * [`shutdown`]: the broadcast shutdown signal.

mod connection;
mod driver;
mod http;
pub mod server;
pub mod shutdown;
pub mod upgrade;

pub use server::{
    Accept, Observers, ServerError, ServerHandle, TcpAccept, run, run_observed, start,
};
