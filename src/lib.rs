//! ws-realtime: live market data from Kafka, Redis pub/sub and an HTTP publish
//! API, delivered to authenticated WebSocket clients.
//!
//! * [`auth`]: JWT verification and minting.
//! * [`core`]: the sans-IO state machine (all policy).
//! * [`proto`]: client-frame decoding and server-frame encoding.
//! * [`shell`]: tokio + hyper + fastwebsockets around the core.
//! * [`source`]: Kafka, Redis, HTTP publish and the dev feed.
//! * [`config`]: `WS_*` variables and the TOML file.
//! * [`shutdown`]: the one broadcast shutdown signal sources and shell share.
//! * [`load`]: the `ws-realtime-load` load tool.
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod config;
pub mod core;
pub mod dev;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod load;
pub mod metrics;
pub mod proto;
pub mod shell;
pub mod shutdown;
pub mod source;
