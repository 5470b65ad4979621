//! The thin I/O shell around the core: tokio, hyper 1 and fastwebsockets.
//!
//! * [`server`]: [`run`] over any [`Accept`], and [`start`] for tests.
//! * `admission`: connection limits counted from accept.
//! * `listen`: the [`Accept`] trait, the TCP listener, `SO_REUSEPORT`
//!   sockets per worker.
//! * `driver`: the task that owns a core (one per worker).
//! * [`workers`]: several workers (`WS_WORKERS`): threads or tasks, the
//!   router handing every worker each message once, connection spreading.
//! * `write`: writing one transmit, resumable where the socket filled up.
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
mod conn_log;
mod connection;
mod driver;
mod http;
mod link;
mod listen;
mod offload;
mod rewind;
pub mod server;
mod socket;
pub mod tls;
mod ui;
pub mod upgrade;
pub mod workers;
mod write;

#[doc(hidden)]
pub use connection::serving_future_size;
pub use server::{
    Accept, ListenOptions, MakeAccept, Observers, Ready, ReusePort, ServerError, ServerHandle,
    TcpAccept, run, run_observed, run_workers, start,
};
