//! Fuzz target 6: arbitrary bytes as a client's `Sec-WebSocket-Extensions`
//! header values (one per line) through the permessage-deflate negotiation.
//! It must never panic, must only ever accept a permessage-deflate offer,
//! and what it answers must itself negotiate to the same agreement (the
//! answer is well formed and says exactly what was agreed).

use crate::proto::deflate_offer::{Deflate, negotiate};

/// Fuzz target body: the input split into header values at `\n`.
pub fn extension_offer(data: &[u8]) {
    let Some(agreed) = negotiate(data.split(|b| *b == b'\n')) else {
        return;
    };
    assert!(
        (8..=15).contains(&agreed.server_max_window_bits),
        "agreed a window the RFC does not allow: {agreed:?}"
    );
    let lower = String::from_utf8_lossy(data).to_ascii_lowercase();
    assert!(
        lower.contains("permessage-deflate"),
        "accepted without a permessage-deflate offer"
    );
    let answer = agreed.response_header();
    assert!(answer.contains("server_no_context_takeover"), "{answer}");
    assert!(answer.contains("client_no_context_takeover"), "{answer}");
    let again: Option<Deflate> = negotiate([answer.as_bytes()]);
    assert_eq!(
        again,
        Some(agreed),
        "the answer {answer:?} reads back differently"
    );
}
