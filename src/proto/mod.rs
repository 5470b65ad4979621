//! Protocol v1: client-frame decoding and server-frame encoding.
//!
//! * [`ws_frame`]: WebSocket frame headers for unmasked server frames, and a
//!   decoder for them (tests, simulations and fuzzers read what the core wrote).
//! * [`channel`]: which channel names are valid.
//! * [`client`]: JSON frames a client sends (`subscribe`, `unsubscribe`, …).
//! * [`server`]: JSON frames the server sends (`connected`, `message`, …).

pub mod channel;
pub mod client;
pub mod server;
pub mod ws_frame;
