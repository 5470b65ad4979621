//! The thin I/O shell around the core: tokio, hyper 1 and fastwebsockets.
//!
//! * [`server`]: [`run`] over any [`Accept`], and [`start`] for tests.
//! * `admission`: connection limits counted from accept.
//! * `driver`: the one task that owns the core.
//! * `batch`: writing one transmit, resumable where the socket filled up.
//! * `link`: what the driver and a connection's task share (the socket and
//!   a write handed over).
//! * `connection`: the task that reads each upgraded socket.
//! * `socket`: the readiness-driven socket both share.
//! * `conn_log`: log lines about connections, with their identity.
//! * `http`: routing of the endpoints on the one port.
//! * `ui`: the live page at `/`, embedded.
//! * [`upgrade`]: the pure upgrade decision (token, origin, query).
//! * [`tls`]: `wss://`/`https://` on the same port, reloadable certificates.
//! * `rewind`: the first byte on the TLS port, given back or refused.

mod admission;
mod batch;
mod conn_log;
mod connection;
mod driver;
mod http;
mod link;
mod offload;
mod rewind;
pub mod server;
mod socket;
pub mod tls;
mod ui;
pub mod upgrade;

#[doc(hidden)]
pub use connection::serving_future_size;
pub use server::{
    Accept, ListenOptions, Observers, ServerError, ServerHandle, TcpAccept, run, run_observed,
    start,
};
