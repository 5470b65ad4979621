//! Publishing: a message is encoded once into its final WebSocket frame and
//! every subscriber's queue gets a refcounted clone of the same bytes. With
//! JSON-array batching on, messages wait per connection and leave together.
//! A `maxRate` subscription passes its messages through its throttle first.

use std::time::Instant;

use super::conflation::Delivery;
use super::connection::BatchedMessage;
use super::throttle::{Held, Offer};
use super::timers::Timer;
use super::{ConnId, Core, Event, Publish, PublishOutcome, Routed, SlowClientPolicy};
use crate::proto::server;

impl Core {
    /// Positions, encodes and keys (unless `routed` brings the frame, the
    /// sequence and the key), stores and fans out one message.
    pub(super) fn publish(
        &mut self,
        now: Instant,
        publish: &Publish,
        routed: Option<&Routed>,
        ingested: Instant,
    ) -> PublishOutcome {
        // Positioned, encoded once and stored (the ring holds a refcounted
        // clone of the very frame every subscriber gets).
        let config = &self.config;
        let published = self
            .store
            .publish(now, publish, routed, self.throttled > 0, |ch| {
                super::conflation::policy_for(config, ch)
            });
        let (channel_id, encoded, hash) = (published.channel, published.encoded, published.hash);
        // One delivery for every subscriber that is not rate limited.
        let live = Delivery::live(published.policy, hash);
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
            if self.throttled > 0
                && let Some(c) = self.conns.get_mut(conn)
                && let Some(throttle) = c
                    .throttles
                    .iter_mut()
                    .find(|t| t.channel == publish.channel)
            {
                let held = Held {
                    seq: self.throttle_seq,
                    frame: encoded.frame.clone(),
                    header_len: encoded.header_len,
                    ingested,
                    tag: hash.expect("keys are worked out while any subscription is throttled"),
                    delivery: live,
                };
                self.throttle_seq += 1;
                match throttle.offer(now, held, self.config.client_buffer_frames) {
                    Offer::Send(held) => {
                        delivered += usize::from(self.deliver(now, conn, held));
                    }
                    Offer::Held { due, replaced } => {
                        if replaced {
                            self.events
                                .push_back(Event::MessagesConflated { conn, count: 1 });
                        }
                        if c.timers.get(Timer::Throttle).is_none_or(|at| due < at) {
                            c.timers.set(Timer::Throttle, due);
                            self.reschedule(conn);
                        }
                        delivered += 1;
                    }
                }
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
                        delivery: live,
                    },
                )
            } else {
                self.enqueue_message(now, conn, &encoded.frame, ingested, live)
            };
            delivered += usize::from(queued);
        }
        self.fanout_scratch = subscribers;
        for conn in replaying {
            self.pump_replays(now, conn);
            delivered += 1;
        }
        self.compression.forget_last();
        PublishOutcome {
            delivered,
            kind: encoded.kind,
        }
    }

    /// Sends a message a throttle let through (or released), batching it
    /// like any other.
    pub(super) fn deliver(&mut self, now: Instant, conn: ConnId, held: Held) -> bool {
        if self.config.batch_max > 1 {
            self.add_to_batch(
                now,
                conn,
                BatchedMessage {
                    frame: held.frame,
                    header_len: held.header_len,
                    ingested: held.ingested,
                    delivery: held.delivery,
                },
            )
        } else {
            self.enqueue_message(now, conn, &held.frame, held.ingested, held.delivery)
        }
    }

    /// The `Throttle` timer: sends every held value whose interval is over,
    /// in the order they arrived, and re-arms for the next one.
    pub(super) fn release_throttled(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let mut due = Vec::new();
        for throttle in &mut c.throttles {
            throttle.take_due(now, &mut due);
        }
        if let Some(next) = c.throttles.iter().filter_map(|t| t.next_due()).min() {
            c.timers.set(Timer::Throttle, next);
        }
        due.sort_unstable_by_key(|held| held.seq);
        for held in due {
            self.deliver(now, conn, held);
        }
        self.reschedule(conn);
    }

    /// Holds a message for the connection's next batch; sends the batch when
    /// it is full.
    fn add_to_batch(&mut self, now: Instant, conn: ConnId, message: BatchedMessage) -> bool {
        let Some(c) = self.conns.get_mut(conn) else {
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
            return self.conns.get(conn).is_some_and(|c| c.closing.is_none());
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
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.timers.clear(Timer::BatchFlush);
        let batch = std::mem::take(&mut c.batch);
        let Some(oldest) = batch.iter().map(|m| m.ingested).min() else {
            return;
        };
        let conflating = batch
            .iter()
            .any(|m| m.delivery.policy == SlowClientPolicy::Conflate);
        if batch.len() > 1 && conflating && c.outbound.behind() {
            // The socket is behind: one array would be a frame no newer value
            // can replace, so with a conflating channel in it the messages
            // queue one by one.
            for message in batch {
                self.enqueue_message(
                    now,
                    conn,
                    &message.frame,
                    message.ingested,
                    message.delivery,
                );
            }
            self.reschedule(conn);
            return;
        }
        let (frame, delivery) = match batch.as_slice() {
            [] => return,
            [single] => (single.frame.clone(), single.delivery),
            many => {
                // An array holds several keys: a barrier, under its channels'
                // policy when they share one, else the server-wide one.
                let first = many[0].delivery.policy;
                let policy = if many.iter().all(|m| m.delivery.policy == first) {
                    first
                } else {
                    self.config.slow_client_policy
                };
                (
                    server::batch(many.iter().map(|m| &m.frame[m.header_len..])),
                    Delivery::barrier(policy),
                )
            }
        };
        self.enqueue_message(now, conn, &frame, oldest, delivery);
        self.reschedule(conn);
    }

    /// Sends the pending JSON-array batch ahead of an answer that changes the
    /// connection's channels (`subscribed`, `unsubscribed`): every message
    /// fanned out before a request reaches the client before its answer.
    /// Otherwise messages of a channel would follow the `unsubscribed` that
    /// removed it, and after a resubscribe with `history` or `since` they
    /// would land behind the replay, older values after newer ones.
    /// Returns false if the connection is closing (flushing overflowed its
    /// queue): the answer is then not sent.
    pub(super) fn flush_batch_before_answer(&mut self, now: Instant, conn: ConnId) -> bool {
        let Some(c) = self.conns.get(conn) else {
            return false;
        };
        if !c.batch.is_empty() {
            self.flush_batch(now, conn);
        }
        self.conns.get(conn).is_some_and(|c| c.closing.is_none())
    }
}
