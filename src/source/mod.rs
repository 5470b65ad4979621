//! Where messages come from: Kafka, Redis pub/sub, the HTTP publish API and
//! the dev feed all implement [`Source`] and feed one [`PublishSink`]; the
//! shell's driver hands what arrives to the core.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::core::Publish;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

mod build;
pub mod bus;
pub mod dev_feed;
pub mod embedded;
pub mod health;
pub mod http;
pub mod kafka;
pub mod outcome;
pub mod redis;

pub use build::build_sources;
pub use health::{Readiness, SourceHealth};

/// A boxed future a source runs as.
pub type SourceFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A producer of [`Publish`]es. The shell spawns [`Source::run`] once and
/// waits for it to return after shutdown fires.
pub trait Source: Send + 'static {
    /// Short name for logs, metrics and readiness: `kafka`, `redis`, `http`, `dev`.
    fn name(&self) -> &'static str;

    /// Runs until `ctx.shutdown` fires: feeds `ctx.sink`, reports health
    /// through `ctx.health`, never panics on bad input and never returns
    /// early because a broker is down (it retries and says so).
    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture;

    /// The bus `POST /api/publish` goes through when this source is the one
    /// `WS_PUBLISH_VIA` names (Kafka, Redis); the shell asks before `run`.
    fn bus(&self) -> Option<bus::Bus> {
        None
    }
}

/// What a running source is given.
pub struct SourceContext {
    /// Where its messages go.
    pub sink: PublishSink,
    /// Its entry in `/ready`.
    pub health: SourceHealth,
    /// Fires when the server drains.
    pub shutdown: Shutdown,
    /// Counters it reports (messages processed, payload kinds, lag, gaps).
    pub metrics: Arc<Metrics>,
}

/// One message on its way from a source to the core.
#[derive(Debug)]
pub struct Ingest {
    /// The message.
    pub publish: Publish,
    /// Told once the driver has taken the message (for Kafka group commits
    /// and the HTTP answer): the core has it, or, if it came while a drain
    /// was writing, the driver holds it in memory for its next turn, as the
    /// core holds queued frames.
    pub taken: Option<oneshot::Sender<()>>,
    /// When the source received it, for the publish-to-send histogram.
    pub received_at: Instant,
    /// The source's name (`kafka`, `http`, …), for per-source metrics;
    /// set by [`PublishSink::for_source`].
    pub source: &'static str,
}

/// The sources' side of the bounded queue into the core. Bounded so that a
/// core that cannot keep up pauses consumption instead of growing memory.
#[derive(Debug, Clone)]
pub struct PublishSink {
    tx: mpsc::Sender<Ingest>,
    /// Stamped on every [`Ingest`] so the driver can count per source.
    source: &'static str,
}

/// The core has stopped taking messages (the server is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is no longer taking messages")]
pub struct SinkClosed;

impl PublishSink {
    /// A sink and the receiver the driver reads; `capacity` bounds what may
    /// wait between the sources and the core.
    pub fn channel(capacity: usize) -> (PublishSink, mpsc::Receiver<Ingest>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            PublishSink {
                tx,
                source: "unknown",
            },
            rx,
        )
    }

    /// The same queue, stamping `source` on what it carries; the shell gives
    /// each source its own.
    pub fn for_source(&self, source: &'static str) -> PublishSink {
        PublishSink {
            tx: self.tx.clone(),
            source,
        }
    }

    /// Queues `publish`, waiting while the queue is full (backpressure).
    pub async fn publish(&self, publish: Publish) -> Result<(), SinkClosed> {
        let ingest = Ingest {
            publish,
            taken: None,
            received_at: Instant::now(),
            source: self.source,
        };
        self.tx.send(ingest).await.map_err(|_| SinkClosed)
    }

    /// Queues `publish` and returns once the core has taken it, so a caller
    /// may commit its offset.
    pub async fn publish_and_wait(&self, publish: Publish) -> Result<(), SinkClosed> {
        let (taken, done) = oneshot::channel();
        let ingest = Ingest {
            publish,
            taken: Some(taken),
            received_at: Instant::now(),
            source: self.source,
        };
        self.tx.send(ingest).await.map_err(|_| SinkClosed)?;
        done.await.map_err(|_| SinkClosed)
    }
}
