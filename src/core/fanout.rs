//! Publishing: a message is encoded once into its final WebSocket frame and
//! every subscriber's queue gets a refcounted clone of the same bytes. With
//! JSON-array batching on, messages wait per connection and leave together.

use std::time::Instant;

use bytes::Bytes;

use super::connection::BatchedMessage;
use super::outbound::FrameKind;
use super::timers::Timer;
use super::{ConnId, Core, Publish, PublishOutcome};
use crate::proto::server;

impl Core {
    pub(super) fn publish(
        &mut self,
        now: Instant,
        publish: Publish,
        ingested: Instant,
    ) -> PublishOutcome {
        // Positioned, encoded once and stored (the ring holds a refcounted
        // clone of the very frame every subscriber gets).
        let (channel_id, encoded) = self.store.publish(now, &publish);
        let mut subscribers = std::mem::take(&mut self.fanout_scratch);
        subscribers.clear();
        if let Some(slab) = self.subscriptions.subscribers(&publish.channel) {
            subscribers.extend(slab.iter().map(|(_, conn)| *conn));
        }
        let batching = self.config.batch_max > 1;
        let mut delivered = 0;
        let mut replaying = Vec::new();
        for &conn in &subscribers {
            if self.replaying(conn, channel_id) {
                // The replay reaches this message in the ring, in order.
                replaying.push(conn);
                continue;
            }
            let queued = if batching {
                self.add_to_batch(
                    now,
                    conn,
                    BatchedMessage {
                        frame: encoded.frame.clone(),
                        header_len: encoded.header_len,
                        ingested,
                    },
                )
            } else {
                self.enqueue_message(now, conn, encoded.frame.clone(), ingested)
            };
            delivered += usize::from(queued);
        }
        self.fanout_scratch = subscribers;
        for conn in replaying {
            self.pump_replays(now, conn);
            delivered += 1;
        }
        PublishOutcome {
            delivered,
            kind: encoded.kind,
        }
    }

    /// Holds a message for the connection's next batch; sends the batch when
    /// it is full.
    fn add_to_batch(&mut self, now: Instant, conn: ConnId, message: BatchedMessage) -> bool {
        let Some(c) = self.conns.get_mut(conn.0) else {
            return false;
        };
        if c.closing.is_some() {
            return false;
        }
        c.batch.push(message);
        if c.batch.len() >= self.config.batch_max {
            self.flush_batch(now, conn);
            // A full batch that overflowed the queue closed the connection:
            // then this message did not get through.
            return self.conns.get(conn.0).is_some_and(|c| c.closing.is_none());
        }
        if c.batch.len() == 1 {
            c.timers
                .set(Timer::BatchFlush, now + self.config.batch_delay);
            self.reschedule(conn);
        }
        true
    }

    /// Sends what is waiting in the connection's batch: a lone message as its
    /// shared frame, several as one JSON array.
    pub(super) fn flush_batch(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn.0) else {
            return;
        };
        c.timers.clear(Timer::BatchFlush);
        let batch = std::mem::take(&mut c.batch);
        let Some(oldest) = batch.iter().map(|m| m.ingested).min() else {
            return;
        };
        let frame = match batch.as_slice() {
            [] => return,
            [single] => single.frame.clone(),
            many => server::batch(many.iter().map(|m| &m.frame[m.header_len..])),
        };
        self.enqueue_message(now, conn, frame, oldest);
        self.reschedule(conn);
    }

    /// Queues a message frame and stamps the queue with its ingest instant.
    pub(super) fn enqueue_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        frame: Bytes,
        ingested: Instant,
    ) -> bool {
        let queued = self.enqueue(now, conn, frame, FrameKind::Message);
        if queued && let Some(c) = self.conns.get_mut(conn.0) {
            c.outbound.note_ingest(ingested);
        }
        queued
    }
}
