//! The per-frame checks the harness runs on what a client receives: which
//! channels it is subscribed to, stream order and close codes.

use std::collections::BTreeSet;

use serde_json::Value;

use super::ConnModel;
use crate::core::{CloseReason, ConnId, CoreConfig};

/// Follows the subscriptions as the client sees them, from the
/// `subscribed`, `unsubscribed` and `refreshed` frames (see
/// `ConnModel::acked`): a channel a `subscribed` frame names that the
/// client did not hold starts a new subscription, which may replay history
/// from before what the last one saw, so its order is checked afresh; one it
/// held goes on, checked as before. A `maxRate` makes the order per key.
pub(super) fn track_subscriptions(model: &mut ConnModel, kind: &str, frame: &Value) {
    let names = |field: &str| -> Vec<String> {
        frame[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some(c.as_str()?.to_owned()))
            .collect()
    };
    match kind {
        "subscribed" => {
            for channel in names("channels") {
                if model.acked.insert(channel.clone()) {
                    model.last_pos.retain(|(c, _, _), _| *c != channel);
                    model.rate_limited.remove(&channel);
                }
            }
        }
        "unsubscribed" => {
            for channel in names("channels") {
                model.acked.remove(&channel);
                model.last_pos.retain(|(c, _, _), _| *c != channel);
                model.rate_limited.remove(&channel);
            }
        }
        _ => {}
    }
    if let Some(rates) = frame["maxRate"].as_object() {
        model.rate_limited.extend(rates.keys().cloned());
    }
}

/// Messages of one channel reach a client in stream order and each once:
/// Kafka offsets always go up within a partition (unless the source itself
/// repeated or reordered them), assigned sequences always go up. The order
/// holds per key on a conflating channel (a key's newest value takes the
/// place of its oldest queued one, so it may pass an older value of another
/// key: docs/protocol.md, slow clients) and on a rate-limited subscription
/// (a key's held value leaves at the end of its interval, after newer
/// values of other keys that were sent at once), never within a key.
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
    let partition = match stream.strip_prefix('~') {
        Some(_) => None,
        None => {
            let (_, partition) = stream.rsplit_once(':').expect("<topic>:<partition>");
            Some(partition.parse::<i64>().expect("numeric partition"))
        }
    };
    let position = offset.parse::<i128>().expect("numeric offset");
    if partition.is_some_and(|p| source_disordered.contains(&(channel.to_owned(), p))) {
        return;
    }
    let per_key = crate::core::policy_for(config, channel)
        == crate::core::SlowClientPolicy::Conflate
        || model.rate_limited.contains(channel);
    let message_key = per_key.then(|| order_key(config, message));
    let key = (channel.to_owned(), partition, message_key);
    if let Some(last) = model.last_pos.insert(key, position) {
        assert!(
            position > last,
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
