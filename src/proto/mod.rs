//! Protocol v1: client-frame decoding and server-frame encoding.
