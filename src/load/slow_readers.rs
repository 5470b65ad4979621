//! The slow-reader scenario of the load tool (`--slow-readers N
//! --slow-read-rate R --keys K`): of the connections, the first N read at
//! most R frames per second (with a small socket receive buffer, as a phone
//! on a poor link), publishes carry a `key` field cycling over K keys, and
//! at the end each slow reader's last value per key is compared with what a
//! fast reader got last, and every tracked reader checks that no message
//! arrives after a newer one of its key (by the server's `pos`). Under `WS_SLOW_CLIENT_POLICY=disconnect` the slow
//! readers are cut; under `conflate` (with `WS_HISTORY_SNAPSHOT_FIELD=key`)
//! they stay and end with the stream's last value of every key, while the
//! fast readers' latency is reported on its own.
//!
//! When publishing ends the slow readers read at full speed ("the stream
//! pauses, the link catches up"), so what they hold at the end is what the
//! server chose to send them, not what their pacing left unread.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Socket receive buffer of a slow reader, in bytes: small, so the server's
/// queue (not the kernel) holds what the reader is behind on.
pub const SLOW_RECV_BUFFER: u32 = 8 * 1024;

/// What a connection plays in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderRole {
    /// Reads as fast as it can; not tracked.
    Fast,
    /// Reads as fast as it can and tracks its last value per key: the
    /// reference the slow readers are compared with.
    Reference,
    /// Reads at most `--slow-read-rate` frames per second and tracks its
    /// last value per key.
    Slow,
}

/// The last `seq` seen per `key`.
pub type LastValues = HashMap<String, u64>;

/// What a tracked connection saw of each key.
#[derive(Debug, Default, Clone)]
pub struct KeyTrack {
    /// The last `seq` received per key: compared with the reference's.
    pub last: LastValues,
    /// The stream position (the number after the last `:` of `pos`) of the
    /// last message received per key, so a message older than one already
    /// received for its key is seen.
    positions: HashMap<String, u64>,
    /// Messages that arrived after a newer one of their key: the issue's
    /// "never an older value after a newer one", which must stay 0.
    pub out_of_order: u64,
}

/// Shared by the slow readers and the reference of one run.
#[derive(Debug, Default)]
pub struct SlowReaders {
    /// `--slow-readers`.
    pub count: usize,
    /// `--slow-read-rate`, frames per second.
    pub rate: f64,
    /// Set when publishing ends: the slow readers catch up at full speed.
    pub catch_up: AtomicBool,
    /// What each slow reader saw and whether the server cut it.
    slow: Mutex<Vec<(KeyTrack, bool)>>,
    /// What the reference reader saw.
    reference: Mutex<Option<KeyTrack>>,
}

/// The scenario's outcome, in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct SlowReaderSummary {
    /// Slow readers that subscribed.
    pub readers: usize,
    /// Of those, closed by the server (or broken) before the end.
    pub cut: usize,
    /// Of those still connected, how many ended with the reference's last
    /// value for every key.
    pub last_values_correct: usize,
    /// Of those still connected, how many ended with an older value (or
    /// none) for some key.
    pub last_values_wrong: usize,
    /// Keys the reference saw.
    pub keys: usize,
    /// Messages any slow reader or the reference received after a newer
    /// one of the same key (by the server's `pos`); 0 when order per key
    /// held.
    pub out_of_order: u64,
}

impl SlowReaders {
    /// The scenario for `count` slow readers reading `rate` frames/s.
    pub fn new(count: usize, rate: f64) -> SlowReaders {
        SlowReaders {
            count,
            rate,
            ..SlowReaders::default()
        }
    }

    /// The role of connection `index`: the first `count` are slow, the next
    /// one is the reference (when there are slow readers at all).
    pub fn role(&self, index: usize) -> ReaderRole {
        match index.checked_sub(self.count) {
            None => ReaderRole::Slow,
            Some(0) if self.count > 0 => ReaderRole::Reference,
            Some(_) => ReaderRole::Fast,
        }
    }

    /// How long a slow reader waits after each frame now.
    pub fn pause(&self) -> Option<Duration> {
        (!self.catch_up.load(Relaxed)).then(|| Duration::from_secs_f64(1.0 / self.rate))
    }

    /// Files what a tracked connection saw when it ends.
    pub fn finish(&self, role: ReaderRole, track: KeyTrack, cut: bool) {
        match role {
            ReaderRole::Slow => self
                .slow
                .lock()
                .expect("no thread panics while holding it")
                .push((track, cut)),
            ReaderRole::Reference => {
                *self
                    .reference
                    .lock()
                    .expect("no thread panics while holding it") = Some(track);
            }
            ReaderRole::Fast => {}
        }
    }

    /// The outcome, once every connection has ended.
    pub fn summary(&self) -> SlowReaderSummary {
        let slow = self.slow.lock().expect("no thread panics while holding it");
        let reference = self
            .reference
            .lock()
            .expect("no thread panics while holding it")
            .clone()
            .unwrap_or_default();
        let cut = slow.iter().filter(|(_, cut)| *cut).count();
        let correct = slow
            .iter()
            .filter(|(track, cut)| {
                !cut && !reference.last.is_empty() && track.last == reference.last
            })
            .count();
        SlowReaderSummary {
            readers: slow.len(),
            cut,
            last_values_correct: correct,
            last_values_wrong: slow.len() - cut - correct,
            keys: reference.last.len(),
            out_of_order: reference.out_of_order
                + slow
                    .iter()
                    .map(|(track, _)| track.out_of_order)
                    .sum::<u64>(),
        }
    }
}

/// Notes the `(key, seq)` of every message in a text frame (one message, or
/// a JSON array of them) into `track`, and whether it came after a newer
/// message of its key.
pub fn track(frame: &[u8], track: &mut KeyTrack) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(frame) else {
        return;
    };
    let messages = match &value {
        serde_json::Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    for message in messages {
        let data = &message["data"];
        let Some(key) = data["key"].as_str() else {
            continue;
        };
        if let Some(position) = message["pos"].as_str().and_then(stream_position) {
            let before = track.positions.insert(key.to_owned(), position);
            if before.is_some_and(|before| before >= position) {
                track.out_of_order += 1;
            }
        }
        if let Some(seq) = data["seq"].as_u64() {
            track.last.insert(key.to_owned(), seq);
        }
    }
}

/// The order of a message in its stream: the number after the last `:` of
/// its `pos` (`~epoch:seq` for HTTP and Redis, `partition:offset` within a
/// Kafka partition, where one key stays).
fn stream_position(pos: &str) -> Option<u64> {
    pos.rsplit(':').next()?.parse().ok()
}

/// Puts `"key":"k<seq % keys>"` first in a payload `publisher::write_payload`
/// wrote (`{"ts":…`), so the server can key snapshots and conflation by it.
pub fn add_key(payload: &mut Vec<u8>, seq: u64, keys: usize) {
    if keys == 0 || payload.first() != Some(&b'{') {
        return;
    }
    let key = format!("{{\"key\":\"k{}\",", seq % keys as u64);
    payload.splice(0..1, key.into_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_n_are_slow_and_the_next_one_is_the_reference() {
        let readers = SlowReaders::new(2, 50.0);
        assert_eq!(readers.role(0), ReaderRole::Slow);
        assert_eq!(readers.role(1), ReaderRole::Slow);
        assert_eq!(readers.role(2), ReaderRole::Reference);
        assert_eq!(readers.role(3), ReaderRole::Fast);
        assert_eq!(SlowReaders::new(0, 50.0).role(0), ReaderRole::Fast);
    }

    #[test]
    fn keys_go_first_and_tracking_keeps_the_last_seq_per_key() {
        let mut payload = br#"{"ts":1,"seq":7,"pad":""}"#.to_vec();
        add_key(&mut payload, 7, 3);
        assert_eq!(payload, br#"{"key":"k1","ts":1,"seq":7,"pad":""}"#);
        let mut seen = KeyTrack::default();
        let frame = format!(
            r#"{{"type":"message","channel":"ch0","pos":"~a:1","data":{}}}"#,
            String::from_utf8(payload).unwrap()
        );
        track(frame.as_bytes(), &mut seen);
        track(
            br#"[{"type":"message","data":{"key":"k1","seq":10}},{"type":"message","data":{"key":"k2","seq":11}}]"#,
            &mut seen,
        );
        assert_eq!(
            seen.last,
            HashMap::from([("k1".into(), 10), ("k2".into(), 11)])
        );
        assert_eq!(seen.out_of_order, 0);
    }

    #[test]
    fn an_older_position_after_a_newer_one_of_the_same_key_is_out_of_order() {
        let mut seen = KeyTrack::default();
        for (pos, key) in [
            ("~e:5", "k1"),
            ("~e:3", "k2"),
            ("~e:4", "k1"),
            ("~e:9", "k2"),
        ] {
            let frame =
                format!(r#"{{"type":"message","pos":"{pos}","data":{{"key":"{key}","seq":1}}}}"#);
            track(frame.as_bytes(), &mut seen);
        }
        assert_eq!(seen.out_of_order, 1);
        assert_eq!(stream_position("orders:2:1234"), Some(1234));
    }

    #[test]
    fn a_slow_reader_is_correct_only_with_every_last_value() {
        let readers = SlowReaders::new(3, 50.0);
        let tracked = |last: LastValues| KeyTrack {
            last,
            ..KeyTrack::default()
        };
        let reference = HashMap::from([("k0".to_owned(), 9), ("k1".to_owned(), 8)]);
        readers.finish(ReaderRole::Reference, tracked(reference.clone()), false);
        readers.finish(ReaderRole::Slow, tracked(reference.clone()), false);
        readers.finish(
            ReaderRole::Slow,
            tracked(HashMap::from([("k0".to_owned(), 9)])),
            false,
        );
        readers.finish(ReaderRole::Slow, KeyTrack::default(), true);
        let summary = readers.summary();
        assert_eq!(
            (
                summary.readers,
                summary.cut,
                summary.last_values_correct,
                summary.last_values_wrong
            ),
            (3, 1, 1, 1)
        );
    }
}
