//! The thin I/O shell around the core: tokio, hyper 1 and fastwebsockets.

pub mod shutdown;
