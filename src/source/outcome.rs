//! What a publish hands to a bus and what it gets back: one record per
//! (message, channel), one [`Outcome`] per record. Shared by the bus
//! dispatch and the producers behind it.

use bytes::Bytes;

/// One message for one channel.
#[derive(Debug, Clone)]
pub struct BusRecord {
    /// The gateway channel.
    pub channel: String,
    /// The payload, forwarded as it is.
    pub payload: Bytes,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The bus has it (Kafka: acknowledged by all in-sync replicas);
    /// with its position when the bus assigns one (`topic:partition:offset`).
    Stored(Option<String>),
    /// The bus refused it or could not be reached; the reason.
    Failed(String),
    /// No answer before the deadline: not known to be stored (it may
    /// still be, so a retry may deliver it twice).
    TimedOut,
}
