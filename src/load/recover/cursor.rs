//! A channel's cursor as the protocol's client rule keeps it
//! (docs/protocol.md, "Client rule"), and the continuity check the storm
//! makes with it: each stream's next position must be the last one plus 1.

use std::fmt;

/// A comma list of `<stream>:<offset>` entries, at most one per stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// (stream, last offset seen), in the order the entries first appeared.
    entries: Vec<(String, u64)>,
}

/// What applying one message's `pos` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The stream's next offset.
    Next,
    /// The first message of a stream the cursor did not name.
    New,
    /// Past the next offset: this many messages are missing before it.
    Gap(u64),
    /// At or before an offset already seen.
    Duplicate,
    /// Not `<stream>:<offset>`.
    Malformed,
}

impl Cursor {
    /// Parses an ack's cursor; entries that do not parse are left out (the
    /// server's cursors always parse).
    pub fn parse(raw: &str) -> Cursor {
        let entries = raw
            .split(',')
            .filter_map(split_pos)
            .map(|(stream, offset)| (stream.to_owned(), offset))
            .collect();
        Cursor { entries }
    }

    /// Applies one message's `pos` by the client rule and says how it
    /// relates to what was seen before. A duplicate does not move the cursor.
    pub fn apply(&mut self, pos: &str) -> Step {
        let Some((stream, offset)) = split_pos(pos) else {
            return Step::Malformed;
        };
        let Some(entry) = self.entries.iter_mut().find(|(s, _)| s == stream) else {
            self.entries.push((stream.to_owned(), offset));
            return Step::New;
        };
        let last = entry.1;
        if offset <= last {
            return Step::Duplicate;
        }
        entry.1 = offset;
        if offset == last + 1 {
            Step::Next
        } else {
            Step::Gap(offset - last - 1)
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (stream, offset)) in self.entries.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{stream}:{offset}")?;
        }
        Ok(())
    }
}

/// `<stream>:<offset>`, split at the last `:`.
fn split_pos(pos: &str) -> Option<(&str, u64)> {
    let (stream, offset) = pos.trim().rsplit_once(':')?;
    if stream.is_empty() {
        return None;
    }
    Some((stream, offset.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_rule_replaces_a_streams_entry_or_appends_one() {
        let mut cursor = Cursor::parse("~ab:0");
        assert_eq!(cursor.apply("~ab:1"), Step::Next);
        assert_eq!(cursor.apply("lines:0:41"), Step::New);
        assert_eq!(cursor.apply("~ab:2"), Step::Next);
        assert_eq!(cursor.to_string(), "~ab:2,lines:0:41");
        assert_eq!(Cursor::parse(&cursor.to_string()), cursor);
    }

    #[test]
    fn jumps_are_gaps_and_steps_back_are_duplicates() {
        let mut cursor = Cursor::parse("lines:0:10,lines:1:5");
        assert_eq!(cursor.apply("lines:1:8"), Step::Gap(2));
        assert_eq!(cursor.apply("lines:1:8"), Step::Duplicate);
        assert_eq!(cursor.apply("lines:0:3"), Step::Duplicate);
        assert_eq!(cursor.apply("lines:0:11"), Step::Next);
        assert_eq!(cursor.apply("nonsense"), Step::Malformed);
        assert_eq!(cursor.to_string(), "lines:0:11,lines:1:8");
    }

    #[test]
    fn the_empty_cursor_is_valid() {
        assert_eq!(Cursor::parse("").to_string(), "");
    }
}
