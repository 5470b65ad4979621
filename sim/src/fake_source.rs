//! An in-memory [`Source`] whose messages the scenario scripts: the same
//! trait Kafka implements, so the real shell drives it exactly like a broker.
//! It numbers messages like Kafka (`partition:offset`, offsets increasing per
//! partition), so per-partition order can be checked end to end, and records
//! each message once the core has taken it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The Kafka topic the fake feed pretends to read: positions are
/// `feed:<partition>:<offset>`.
pub const FEED_TOPIC: &str = "feed";

use bytes::Bytes;
use tokio::sync::mpsc;
use ws_realtime::core::Publish;
use ws_realtime::proto::position::Position;
use ws_realtime::source::{Source, SourceContext, SourceFuture};

use crate::recorder::{Happening, MsgId, Recorder};

/// What the scenario asks the fake source to do.
#[derive(Debug)]
enum FeedCommand {
    /// Publish one message on `channel` in `partition`.
    Publish {
        /// The gateway channel.
        channel: String,
        /// The partition it belongs to (its offset is assigned here).
        partition: i32,
    },
    /// Report "not ready" and publish nothing until [`FeedCommand::Resume`].
    Stall,
    /// Report ready again.
    Resume,
}

/// The scenario's handle on the fake source(s).
#[derive(Debug, Clone)]
pub struct Feed {
    /// Commands to every running source (one per replica), in order: each
    /// source assigns offsets from the same command sequence, so every
    /// replica sees the same positions, as with Kafka in broadcast mode.
    tx: Vec<mpsc::UnboundedSender<FeedCommand>>,
}

impl Feed {
    /// Publishes one message on `channel` in `partition`.
    pub fn publish(&self, channel: &str, partition: i32) {
        // The source is gone only after the server stopped; a publish then is
        // simply not taken, which the recorder reflects.
        self.send(|| FeedCommand::Publish {
            channel: channel.to_owned(),
            partition,
        });
    }

    /// The upstream stops delivering (the source reports itself not ready).
    pub fn stall(&self) {
        self.send(|| FeedCommand::Stall);
    }

    /// The upstream delivers again.
    pub fn resume(&self) {
        self.send(|| FeedCommand::Resume);
    }

    /// Sends one command to every source; a source whose server is gone
    /// (stopped or crashed) simply does not take it.
    fn send(&self, command: impl Fn() -> FeedCommand) {
        for tx in &self.tx {
            let _ = tx.send(command());
        }
    }
}

/// The source side; hand it to the server once.
#[derive(Debug)]
pub struct FakeSource {
    /// Scripted commands.
    rx: mpsc::UnboundedReceiver<FeedCommand>,
    /// Where taken messages are logged; `None` for replicas whose taking is
    /// not logged (the log holds each message once, see [`fake_sources`]).
    recorder: Option<Recorder>,
}

/// A fake source and the feed that scripts it.
pub fn fake_source(recorder: Recorder) -> (Feed, FakeSource) {
    let (feed, mut sources) = fake_sources(recorder, 1);
    (feed, sources.remove(0))
}

/// `replicas` fake sources fed by one feed: the same messages at the same
/// positions on each. Only the LAST one logs `Publishing`/`Published` (each
/// message must appear once in the log), so scenarios crash or cut off the
/// earlier replicas and keep the last one running.
pub fn fake_sources(recorder: Recorder, replicas: usize) -> (Feed, Vec<FakeSource>) {
    let (tx, sources) = (0..replicas)
        .map(|i| {
            let (tx, rx) = mpsc::unbounded_channel();
            let recorder = (i + 1 == replicas).then(|| recorder.clone());
            (tx, FakeSource { rx, recorder })
        })
        .unzip();
    (Feed { tx }, sources)
}

/// Lets a turmoil host factory (an `Fn`) hand the source to the server on
/// its first start.
pub type SourceSlot = Arc<Mutex<Option<FakeSource>>>;

/// Wraps `source` for a host factory.
pub fn slot(source: FakeSource) -> SourceSlot {
    Arc::new(Mutex::new(Some(source)))
}

impl Source for FakeSource {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            let FakeSource { mut rx, recorder } = *self;
            let SourceContext {
                sink,
                health,
                mut shutdown,
                ..
            } = ctx;
            health.ready();
            let mut next_offset: HashMap<i32, i64> = HashMap::new();
            loop {
                let command = tokio::select! {
                    biased;
                    _ = shutdown.wait() => break,
                    command = rx.recv() => command,
                };
                let Some(command) = command else {
                    // The scenario dropped its feed: nothing more will come,
                    // but a source runs until shutdown.
                    shutdown.wait().await;
                    break;
                };
                match command {
                    FeedCommand::Stall => health.not_ready("upstream stalled"),
                    FeedCommand::Resume => health.ready(),
                    FeedCommand::Publish { channel, partition } => {
                        let offset = next_offset.entry(partition).or_insert(0);
                        let msg = MsgId {
                            partition,
                            offset: *offset,
                        };
                        *offset += 1;
                        let payload = format!(
                            r#"{{"partition":{},"offset":{},"channel":"{channel}"}}"#,
                            msg.partition, msg.offset
                        );
                        let publish = Publish {
                            channel: channel.clone(),
                            pos: Some(Position::Offset {
                                topic: FEED_TOPIC.to_owned(),
                                partition,
                                offset: msg.offset,
                            }),
                            payload: Bytes::from(payload),
                            key: None,
                        };
                        if let Some(recorder) = &recorder {
                            recorder.record(Happening::Publishing { msg, channel });
                        }
                        if sink.publish_and_wait(publish).await.is_err() {
                            break;
                        }
                        if let Some(recorder) = &recorder {
                            recorder.record(Happening::Published { msg });
                        }
                    }
                }
            }
        })
    }
}
