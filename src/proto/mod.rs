//! Protocol v1: client-frame decoding and server-frame encoding.
//!
//! * [`ws_frame`]: WebSocket frame headers for unmasked server frames, and a
//!   decoder for them (tests, simulations and fuzzers read what the core wrote).
//! * [`client_frames`]: reading the masked frames a client sends, holding
//!   no buffer between frames.
//! * [`deflate_offer`]: negotiating permessage-deflate from a client's offers.
//! * [`deflate`]: compressing server messages once, inflating client ones
//!   with a bounded output.
//! * [`channel`]: which channel names are valid.
//! * [`codes`]: error codes, close codes and payload kinds.
//! * [`cursor`]: stream positions and the cursors built from them.
//! * [`position`]: the `pos` of a message.
//! * [`client`]: JSON frames a client sends (`subscribe`, `unsubscribe`, …).
//! * [`server`]: JSON frames the server sends (`connected`, `message`, …).

pub mod channel;
pub mod client;
pub mod client_frames;
pub mod codes;
pub mod cursor;
pub mod deflate;
pub mod deflate_offer;
pub mod position;
pub mod server;
pub mod ws_frame;
