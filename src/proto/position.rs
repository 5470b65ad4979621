//! Where a message sits in its stream: the `pos` of a `message` frame.
//!
//! One type for the whole way from a source to the wire. A source that has
//! offsets (Kafka) sets the position itself; a source without offsets (HTTP,
//! Redis) leaves it to the core, which assigns the channel's next sequence
//! number (see `Publish::pos`). The encoder writes the same value
//! (`server::message`), with this process's epoch beside a sequence.

/// The `pos` of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Kafka `topic:partition:offset`, identical on every replica.
    Offset {
        /// Kafka topic: names the stream together with the partition.
        topic: String,
        /// Kafka partition.
        partition: i32,
        /// Kafka offset within the partition.
        offset: i64,
    },
    /// A per-channel sequence number assigned by the gateway; on the wire
    /// `~<epoch>:<seq>`. The core assigns these itself: a source that passes
    /// one is treated like a source without offsets.
    Sequence(u64),
}
