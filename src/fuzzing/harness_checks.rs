//! The per-frame checks the harness runs on what a client receives: stream
//! order and close codes.

use std::collections::BTreeSet;

use serde_json::Value;

use super::ConnModel;
use crate::core::{CloseReason, ConnId, CoreConfig};

/// Messages of one channel reach a client in stream order: Kafka offsets
/// never go back within a partition, assigned sequences always go up. On a
/// conflating channel the order holds per key: a key's newest value takes
/// the place of its oldest queued one, so it may pass an older value of
/// another key (docs/protocol.md, slow clients), never one of its own.
pub(super) fn check_order(
    conn: ConnId,
    model: &mut ConnModel,
    channel: &str,
    message: &Value,
    config: &CoreConfig,
    source_disordered: &BTreeSet<(String, i64)>,
) {
    let pos = message["pos"]
        .as_str()
        .unwrap_or_else(|| panic!("message without a string pos: {message}"));
    // `<topic>:<partition>:<offset>` (Kafka) or `~<epoch>:<seq>` (assigned).
    let (stream, offset) = pos.rsplit_once(':').expect("pos is <stream>:<offset>");
    let (partition, position, strictly) = match stream.strip_prefix('~') {
        Some(_) => (
            None,
            offset.parse::<i128>().expect("numeric sequence"),
            true,
        ),
        None => {
            let (_, partition) = stream.rsplit_once(':').expect("<topic>:<partition>");
            (
                Some(partition.parse::<i64>().expect("numeric partition")),
                offset.parse::<i128>().expect("numeric offset"),
                false,
            )
        }
    };
    if partition.is_some_and(|p| source_disordered.contains(&(channel.to_owned(), p)))
        || model.resubscribed.contains(channel)
    {
        return;
    }
    let message_key = (crate::core::policy_for(config, channel)
        == crate::core::SlowClientPolicy::Conflate)
        .then(|| order_key(config, message));
    let key = (channel.to_owned(), partition, message_key);
    if let Some(last) = model.last_pos.insert(key, position) {
        let in_order = if strictly {
            position > last
        } else {
            position >= last
        };
        assert!(
            in_order,
            "{conn} got {channel:?} pos {pos} after {last}: {message}"
        );
    }
}

/// The key a message conflates by, as the core works it out: the configured
/// field of its JSON data (a string, or a number or boolean as written),
/// else the record key, which the fuzzed publishes never have.
fn order_key(config: &CoreConfig, message: &Value) -> String {
    let field = config.history.defaults.snapshot_field.as_deref();
    match field.and_then(|field| message.get("data")?.as_object()?.get(field)) {
        Some(Value::String(text)) => text.clone(),
        Some(value @ (Value::Number(_) | Value::Bool(_))) => value.to_string(),
        _ => String::new(),
    }
}

/// The close frame's code must match the documented code of the reason.
pub(super) fn check_close_code(conn: ConnId, model: &ConnModel) {
    let (Some(code), Some(reason)) = (model.close_code, model.close_reason) else {
        return;
    };
    let expected = match reason {
        CloseReason::Shutdown => 1001,
        CloseReason::FrameTooBig => 1009,
        CloseReason::BadCompressedData => 1007,
        CloseReason::ProtocolError => 1002,
        CloseReason::InvalidUtf8 => 1007,
        CloseReason::SlowConsumer | CloseReason::TokenExpired | CloseReason::RateLimitExceeded => {
            1008
        }
        CloseReason::ClientClosed | CloseReason::ConnectionLost | CloseReason::HeartbeatTimeout => {
            return;
        }
    };
    assert_eq!(code, expected, "close code of {conn} closed for {reason:?}");
}
