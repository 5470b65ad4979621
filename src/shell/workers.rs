//! Several workers (`WS_WORKERS` > 1): each worker owns a core, a driver
//! and its own connections, and runs as an OS thread with a current-thread
//! runtime ([`Threads`], production) or as a task on the caller's runtime
//! ([`Tasks`]: the simulation, which runs every host on one thread, and the
//! loopback tests). Nothing on the per-message path is shared between
//! workers but the hand-off itself.
//!
//! * The router task takes what the sources send, positions and encodes
//!   each message once ([`Router`]) and hands every worker the same
//!   `RoutedPublishes`: one `Arc` per hand-out per worker, the frame bytes
//!   built once. Every worker gets every hand-out in the same order, so
//!   per-channel order (and every `~epoch:seq` position) is the same on
//!   every worker.
//! * A message whose source waits for it to be taken (Kafka group mode
//!   commits after that) is answered when the last worker has taken its
//!   routed publishes, never before.
//! * [`distribute`] spreads connections from one [`Accept`] over the workers
//!   round-robin (turmoil and tests, where every worker shares a runtime);
//!   production binds one `SO_REUSEPORT` listener per worker instead, so a
//!   socket lives on the runtime that accepted it (see `docs/operations.md`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::core::{Routed, Router};
use crate::metrics::Metrics;
use crate::shell::listen::Accept;
use crate::source::Ingest;

/// A worker's whole life as a future (its accept loop, driver and drain).
pub type WorkerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs worker futures somewhere; [`Spawn::spawn`] returns a future that
/// resolves once the worker has ended.
pub trait Spawn: Send + Sync + 'static {
    /// Starts worker `index`.
    fn spawn(&self, index: usize, worker: WorkerFuture) -> WorkerFuture;
}

/// Production: each worker an OS thread with a current-thread runtime of its
/// own, so its connections, timers and core never leave that thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads;

impl Spawn for Threads {
    fn spawn(&self, index: usize, worker: WorkerFuture) -> WorkerFuture {
        let (done, ended) = oneshot::channel::<()>();
        let started = std::thread::Builder::new()
            .name(format!("ws-worker-{index}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(worker),
                    Err(error) => tracing::error!(worker = index, %error, "cannot build a runtime"),
                }
                let _ = done.send(());
            });
        if let Err(error) = started {
            tracing::error!(worker = index, %error, "cannot start a worker thread");
        }
        Box::pin(async move {
            let _ = ended.await;
        })
    }
}

/// Simulation and tests: each worker a task on the current runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tasks;

impl Spawn for Tasks {
    fn spawn(&self, _index: usize, worker: WorkerFuture) -> WorkerFuture {
        let task = tokio::spawn(worker);
        Box::pin(async move {
            let _ = task.await;
        })
    }
}

/// One message of a `RoutedPublishes`.
#[derive(Debug)]
pub(crate) struct RoutedIngest {
    /// Positioned and encoded once.
    pub(crate) routed: Routed,
    /// When the source received it, for the publish-to-send histogram.
    pub(crate) received_at: Instant,
}

/// What the router hands every worker at once: the publishes it took
/// together, positioned and encoded, shared.
#[derive(Debug)]
pub(crate) struct RoutedPublishes {
    /// The messages, in the order the sources sent them.
    pub(crate) messages: Vec<RoutedIngest>,
    /// Takers (the workers, and the router itself while it hands them
    /// out) that have not taken it yet: the last one answers `waiting`.
    pending: AtomicUsize,
    /// Sources waiting until every worker has taken their message (Kafka
    /// group mode commits only then); empty otherwise.
    waiting: Mutex<Vec<oneshot::Sender<()>>>,
}

impl RoutedPublishes {
    /// One taker is done with them; the last tells the waiting sources.
    pub(crate) fn taken_by_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waiting = std::mem::take(
                &mut *self
                    .waiting
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for taken in waiting {
                let _ = taken.send(());
            }
        }
    }
}

/// The router task: takes what the sources send, up to `most` messages at
/// a time, routes each once and hands them to every worker together. A worker
/// whose queue is full holds the router back (and through it the sources),
/// as one driver's full queue does. Ends when every source and publish
/// handler is gone.
pub(crate) async fn route(
    mut ingest: mpsc::Receiver<Ingest>,
    workers: Vec<mpsc::Sender<Arc<RoutedPublishes>>>,
    mut router: Router,
    metrics: Arc<Metrics>,
    most: usize,
) {
    while let Some(first) = ingest.recv().await {
        // Let the other publishers queue theirs, so hand-outs grow with load.
        tokio::task::yield_now().await;
        let mut messages = Vec::with_capacity(most.min(ingest.len() + 1));
        let mut waiting = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let Ingest {
                publish,
                taken,
                received_at,
                source,
            } = message;
            let routed = router.route(publish);
            metrics.record_source_message(source, routed.encoded.kind.as_str());
            messages.push(RoutedIngest {
                routed,
                received_at,
            });
            waiting.extend(taken);
            if messages.len() < most {
                next = ingest.try_recv().ok();
            }
        }
        let shared = Arc::new(RoutedPublishes {
            messages,
            pending: AtomicUsize::new(workers.len() + 1),
            waiting: Mutex::new(waiting),
        });
        for worker in &workers {
            if worker.send(shared.clone()).await.is_err() {
                // That worker has ended (shut down): it has nobody to
                // deliver to, so it does not hold the commit back.
                shared.taken_by_one();
            }
        }
        shared.taken_by_one();
    }
}

/// An [`Accept`] fed by [`distribute`].
#[derive(Debug)]
pub struct ChannelAccept<S> {
    /// Connections handed to this worker.
    streams: mpsc::Receiver<(S, SocketAddr)>,
    /// The address of the listener behind [`distribute`].
    local: SocketAddr,
}

impl<S> Accept for ChannelAccept<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Stream = S;

    async fn accept(&mut self) -> std::io::Result<(S, SocketAddr)> {
        match self.streams.recv().await {
            Some(accepted) => Ok(accepted),
            // The distributor stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Connections that may wait for a worker to take them from the
/// distributor.
const HANDOFF_QUEUE: usize = 1024;

/// One [`ChannelAccept`] per worker, and the task that accepts from
/// `accept` and hands the connections to them round-robin.
pub fn distribute<A: Accept>(
    mut accept: A,
    workers: usize,
) -> (
    Vec<ChannelAccept<A::Stream>>,
    impl Future<Output = ()> + Send,
) {
    let local = accept
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (senders, accepts): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| {
            let (tx, streams) = mpsc::channel(HANDOFF_QUEUE);
            (tx, ChannelAccept { streams, local })
        })
        .unzip();
    let task = async move {
        let mut next = 0;
        loop {
            match accept.accept().await {
                Ok(accepted) => {
                    if senders[next].send(accepted).await.is_err() {
                        // Workers stop accepting only at the very end.
                        return;
                    }
                    next = (next + 1) % senders.len();
                }
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    };
    (accepts, task)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::Publish;
    use crate::source::PublishSink;

    fn router_with_epoch(epoch: &str) -> Router {
        let mut config = crate::core::CoreConfig::default();
        config.history.epoch = epoch.to_owned();
        Router::new(&config)
    }

    fn publish(channel: &str) -> Publish {
        Publish {
            channel: channel.to_owned(),
            pos: None,
            payload: Bytes::from_static(br#"{"p":1}"#),
            key: None,
        }
    }

    /// Kafka group mode commits once its source hears "taken": that must
    /// wait for the last worker, not the first.
    #[tokio::test]
    async fn a_waiting_source_hears_taken_only_after_every_worker_took_its_message() {
        let (sink, ingest) = PublishSink::channel(16);
        let (senders, mut receivers): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::channel(4)).unzip();
        let metrics = Arc::new(Metrics::new());
        let router = tokio::spawn(route(ingest, senders, router_with_epoch("e1"), metrics, 8));
        let waiting = tokio::spawn(async move { sink.publish_and_wait(publish("a")).await });
        let mut handed = Vec::new();
        for receiver in &mut receivers {
            handed.push(
                receiver
                    .recv()
                    .await
                    .expect("every worker gets the publishes"),
            );
        }
        assert!(
            Arc::ptr_eq(&handed[0], &handed[2]),
            "one shared hand-out, not a copy per worker"
        );
        handed[0].taken_by_one();
        handed[1].taken_by_one();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "two of three workers took it");
        handed[2].taken_by_one();
        assert_eq!(waiting.await.unwrap(), Ok(()));
        router.abort();
    }

    #[tokio::test]
    async fn the_router_positions_each_channel_in_order_once_for_all_workers() {
        let (sink, ingest) = PublishSink::channel(16);
        let (sender, mut receiver) = mpsc::channel(4);
        let metrics = Arc::new(Metrics::new());
        let router = tokio::spawn(route(
            ingest,
            vec![sender],
            router_with_epoch("e1"),
            metrics,
            8,
        ));
        for channel in ["a", "b", "a"] {
            sink.publish(publish(channel)).await.unwrap();
        }
        let mut positions = Vec::new();
        while positions.len() < 3 {
            let routed = receiver.recv().await.unwrap();
            for message in &routed.messages {
                let json = String::from_utf8(message.routed.encoded.json().to_vec()).unwrap();
                positions.push((message.routed.sequence, json));
            }
            routed.taken_by_one();
        }
        assert_eq!(
            positions.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            vec![Some(1), Some(1), Some(2)]
        );
        assert!(
            positions[2].1.contains(r#""pos":"~e1:2""#),
            "{}",
            positions[2].1
        );
        router.abort();
    }
}
