//! Stream positions and cursors (protocol v1, stream state).
//!
//! A message's `pos` is `<stream>:<offset>`: the offset is the decimal after
//! the LAST `:`, and the stream names one totally ordered stream:
//! * `<topic>:<partition>` for Kafka (`"lines:0:1234"`), the same on every
//!   replica;
//! * `~<epoch>` for sequences this gateway process assigned (HTTP, Redis):
//!   `"~9f3a2c1d:17"`; only the process with that epoch can vouch for them.
//!
//! A channel's cursor is a comma list of such positions, at most one per
//! stream: everything of the channel up to and including that offset on that
//! stream has been seen. The empty string is a valid cursor.

use std::fmt::{self, Write as _};

/// Longest cursor accepted, in bytes: far more than any real channel needs
/// (a few partitions), small enough that parsing one costs nothing.
pub const MAX_CURSOR_LEN: usize = 4096;

/// Most entries (streams) one cursor may hold.
pub const MAX_CURSOR_ENTRIES: usize = 256;

/// One totally ordered stream that feeds channels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    /// A Kafka partition.
    Kafka {
        /// The topic (cannot contain `:` or `,`).
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// Per-channel sequences assigned by the gateway process with this epoch.
    Gateway {
        /// The process's random hex id.
        epoch: String,
    },
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Kafka { topic, partition } => write!(f, "{topic}:{partition}"),
            StreamId::Gateway { epoch } => write!(f, "~{epoch}"),
        }
    }
}

/// A parsed cursor: (stream, last offset seen), streams distinct, in the
/// order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The entries.
    pub entries: Vec<(StreamId, u64)>,
}

impl Cursor {
    /// The offset recorded for `stream`, if any.
    pub fn get(&self, stream: &StreamId) -> Option<u64> {
        self.entries
            .iter()
            .find(|(s, _)| s == stream)
            .map(|&(_, o)| o)
    }

    /// Sets `stream` to `offset` (the client rule: replace or append).
    pub fn set(&mut self, stream: &StreamId, offset: u64) {
        match self.entries.iter_mut().find(|(s, _)| s == stream) {
            Some(entry) => entry.1 = offset,
            None => self.entries.push((stream.clone(), offset)),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (stream, offset)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{stream}:{offset}")?;
        }
        Ok(())
    }
}

/// Why a cursor is malformed (answered with `bad_position`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Over [`MAX_CURSOR_LEN`] bytes or [`MAX_CURSOR_ENTRIES`] entries.
    #[error("is too long (at most {MAX_CURSOR_ENTRIES} entries, {MAX_CURSOR_LEN} bytes)")]
    TooLong,
    /// `a,,b` or a trailing comma.
    #[error("has an empty entry; entries are separated by single commas")]
    EmptyEntry,
    /// An entry without `:<offset>`.
    #[error("has an entry \"{0}\" without \":<offset>\"")]
    MissingOffset(String),
    /// The part after the last `:` is not a decimal offset.
    #[error("has an entry \"{0}\" whose offset is not a non-negative decimal number")]
    BadOffset(String),
    /// The stream is neither `<topic>:<partition>` nor `~<epoch>`.
    #[error("has an entry \"{0}\" whose stream is neither <topic>:<partition> nor ~<epoch>")]
    BadStream(String),
    /// The same stream twice.
    #[error("names stream \"{0}\" twice")]
    DuplicateStream(String),
}

/// Parses a cursor (or a single `pos`, which is a one-entry cursor).
pub fn parse(text: &str) -> Result<Cursor, CursorError> {
    if text.len() > MAX_CURSOR_LEN {
        return Err(CursorError::TooLong);
    }
    let mut cursor = Cursor::default();
    if text.is_empty() {
        return Ok(cursor);
    }
    for entry in text.split(',') {
        if cursor.entries.len() == MAX_CURSOR_ENTRIES {
            return Err(CursorError::TooLong);
        }
        let shown = || entry.chars().take(64).collect::<String>();
        if entry.is_empty() {
            return Err(CursorError::EmptyEntry);
        }
        let (stream, offset) = entry
            .rsplit_once(':')
            .ok_or_else(|| CursorError::MissingOffset(shown()))?;
        let offset = decimal(offset).ok_or_else(|| CursorError::BadOffset(shown()))?;
        let stream = parse_stream(stream).ok_or_else(|| CursorError::BadStream(shown()))?;
        if cursor.get(&stream).is_some() {
            return Err(CursorError::DuplicateStream(stream.to_string()));
        }
        cursor.entries.push((stream, offset));
    }
    Ok(cursor)
}

/// Plain ASCII digits only (no sign, no spaces), fitting u64.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_stream(text: &str) -> Option<StreamId> {
    if let Some(epoch) = text.strip_prefix('~') {
        let valid = !epoch.is_empty()
            && epoch.len() <= 32
            && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
        return valid.then(|| StreamId::Gateway {
            epoch: epoch.to_owned(),
        });
    }
    let (topic, partition) = text.rsplit_once(':')?;
    if topic.is_empty() || topic.contains(':') {
        return None;
    }
    let partition = decimal(partition)?;
    Some(StreamId::Kafka {
        topic: topic.to_owned(),
        partition: i32::try_from(partition).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(topic: &str, partition: i32) -> StreamId {
        StreamId::Kafka {
            topic: topic.into(),
            partition,
        }
    }

    #[test]
    fn cursors_round_trip_through_their_text() {
        for text in [
            "",
            "lines:0:1234",
            "~9f3a2c1d:17",
            "lines:0:5,prices:3:0,~ab:2",
        ] {
            let cursor = parse(text).expect("valid");
            assert_eq!(cursor.to_string(), text);
        }
        let cursor = parse("lines:0:5,~ab:2").expect("valid");
        assert_eq!(cursor.get(&kafka("lines", 0)), Some(5));
        assert_eq!(
            cursor.get(&StreamId::Gateway { epoch: "ab".into() }),
            Some(2)
        );
    }

    #[test]
    fn the_client_rule_replaces_or_appends_by_stream() {
        let mut cursor = parse("lines:0:5").expect("valid");
        cursor.set(&kafka("lines", 0), 9);
        cursor.set(&kafka("lines", 1), 3);
        assert_eq!(cursor.to_string(), "lines:0:9,lines:1:3");
    }

    #[test]
    fn malformed_cursors_say_what_is_wrong() {
        assert_eq!(parse("lines:0:1,"), Err(CursorError::EmptyEntry));
        assert_eq!(parse("17"), Err(CursorError::MissingOffset("17".into())));
        assert_eq!(
            parse("lines:0:-1"),
            Err(CursorError::BadOffset("lines:0:-1".into()))
        );
        assert_eq!(parse("0:17"), Err(CursorError::BadStream("0:17".into())));
        assert_eq!(parse("~:17"), Err(CursorError::BadStream("~:17".into())));
        assert_eq!(
            parse("a:0:1,a:0:2"),
            Err(CursorError::DuplicateStream("a:0".into()))
        );
        assert_eq!(parse(&"a:0:1,".repeat(1000)), Err(CursorError::TooLong));
        assert_eq!(
            parse("lines:99999999999:1"),
            Err(CursorError::BadStream("lines:99999999999:1".into()))
        );
    }
}
