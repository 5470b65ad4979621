//! The bodies of the `fuzz/` targets, as plain functions: cargo-fuzz calls
//! them with libFuzzer's inputs, and `tests/fuzz_seeds.rs` replays every
//! committed seed through them on stable Rust. Only built with the `fuzzing`
//! feature.
//!
//! Each function panics on a finding (a broken invariant or a wrong answer)
//! and returns quietly otherwise, including on input it cannot decode.
//!
//! [`op`] is the one operation language for the core, shared by the
//! `core_ops` target and the core's property and state-machine tests.

mod client_frame;
mod client_wire;
mod core_ops;
mod extension_offer;
mod harness;
pub mod op;
mod scenario;
mod source_payload;
mod upgrade;
mod wire;

pub use client_frame::client_frame;
pub use client_wire::client_wire;
pub use core_ops::core_ops;
pub use extension_offer::extension_offer;
pub use source_payload::source_payload;
pub use upgrade::upgrade;

/// A target body: panics on a finding.
pub type TargetBody = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/` and `fuzz/seeds/` name them.
pub const TARGETS: &[(&str, TargetBody)] = &[
    ("client_frame", client_frame),
    ("core_ops", core_ops),
    ("upgrade", upgrade),
    ("source_payload", source_payload),
    ("client_wire", client_wire),
    ("extension_offer", extension_offer),
];
