//! The Redis pub/sub source: holds `SUBSCRIBE`/`PSUBSCRIBE` on one Redis
//! connection and forwards every message to the core, channel name mapped
//! (`channel:trade:AAPL` → `trade:AAPL`), payload bytes untouched (the core
//! decides JSON / text / binary), no position (the core assigns
//! the channel's next sequence) since pub/sub has no offsets.
//!
//! Redis pub/sub is fire-and-forget: what is published while the gateway is
//! not subscribed is lost. So when the connection drops the source marks
//! itself not ready, reconnects with capped exponential backoff, subscribes
//! again, and then reports the outage as one gap (metric
//! `websocket_source_gaps_total{reason="redis"}` and a warning with its
//! duration). Connected WebSocket clients are served throughout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{PubSub, PubSubSink, PubSubStream};

use crate::core::Publish;
use crate::metrics::{Metrics, ReasonLabel};
use crate::shutdown::Shutdown;
use crate::source::{PublishSink, Source, SourceContext, SourceFuture};

mod config;
mod outage;
pub mod publisher;

pub use config::{DEFAULT_CHANNEL_PREFIX, DEFAULT_PATTERNS, DEFAULT_URL, RedisConfig};
use outage::{Backoff, Outage};

/// The source's name in logs, metrics and `/ready`.
const NAME: &str = "redis";

/// The Redis pub/sub [`Source`].
#[derive(Debug)]
pub struct RedisSource {
    /// What to connect to and subscribe to.
    config: RedisConfig,
    /// `WS_PUBLISH_VIA=redis`: the publisher `POST /api/publish` uses.
    publisher: Option<Arc<publisher::RedisPublisher>>,
}

impl RedisSource {
    /// A source that will connect when run.
    pub fn new(config: RedisConfig) -> RedisSource {
        RedisSource {
            config,
            publisher: None,
        }
    }

    /// The same source, also the bus of `POST /api/publish`.
    pub fn with_publisher(mut self) -> Result<RedisSource, redis::RedisError> {
        self.publisher = Some(Arc::new(publisher::RedisPublisher::new(&self.config)?));
        Ok(self)
    }
}

impl Source for RedisSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(run(self.config, ctx))
    }

    fn bus(&self) -> Option<crate::source::bus::Bus> {
        self.publisher.clone().map(crate::source::bus::Bus::Redis)
    }
}

/// Why a subscription stopped delivering.
enum Ended {
    /// Shutdown fired: stop for good.
    Shutdown,
    /// The core no longer takes messages: nothing left to do.
    SinkClosed,
    /// The connection failed; reconnect.
    Lost(String),
}

/// Connects, subscribes and forwards until shutdown, reconnecting after
/// every failure; never returns early because Redis is down.
async fn run(config: RedisConfig, ctx: SourceContext) {
    let mut shutdown = ctx.shutdown.clone();
    let client = match redis::Client::open(config.connection.clone()) {
        Ok(client) => client,
        Err(e) => {
            // `from_settings` validated the address, so this is unexpected;
            // report it where an operator looks, and do not crash the server.
            tracing::error!(source = NAME, url = %config.display_url, error = %e, "redis: cannot create client");
            ctx.health
                .not_ready(format!("invalid client configuration: {e}"));
            return;
        }
    };
    tracing::info!(
        source = NAME,
        url = %config.display_url,
        channels = ?config.channels,
        patterns = ?config.patterns,
        prefix = %config.channel_prefix,
        "redis: starting"
    );
    let mut backoff = Backoff::new(config.reconnect_initial, config.reconnect_max);
    let mut outage = Outage::begin(Instant::now(), false);
    ctx.health
        .not_ready(format!("connecting to {}", config.display_url));

    loop {
        let attempt = tokio::select! {
            _ = shutdown.wait() => return,
            attempt = tokio::time::timeout(config.connect_timeout, connect(&client, &config)) => attempt,
        };
        let failure = match attempt {
            Ok(Ok(pubsub)) => {
                ctx.health.ready();
                report_recovery(&outage, &config, &ctx.metrics);
                let subscribed_at = Instant::now();
                let (sink, stream) = pubsub.split();
                match deliver(&config, &ctx, &mut shutdown, sink, stream).await {
                    Ended::Shutdown | Ended::SinkClosed => return,
                    Ended::Lost(reason) => {
                        tracing::warn!(
                            source = NAME,
                            url = %config.display_url,
                            reason = %reason,
                            "redis: subscription lost; reconnecting (messages published meanwhile are lost)"
                        );
                        outage = Outage::begin(Instant::now(), true);
                        ctx.health.not_ready(format!(
                            "connection to {} lost: {reason}",
                            config.display_url
                        ));
                        // A subscription that held was healthy: its loss is
                        // news, so retry at once. One dropped right after
                        // subscribing (a client-eviction rule, a flapping
                        // proxy) must not spin: keep backing off.
                        if subscribed_at.elapsed() >= config.reconnect_max {
                            backoff.reset();
                        } else {
                            tokio::select! {
                                _ = shutdown.wait() => return,
                                _ = tokio::time::sleep(backoff.next_delay()) => {}
                            }
                        }
                        continue;
                    }
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", config.connect_timeout),
        };

        ctx.health.not_ready(format!(
            "cannot connect to {}: {failure}",
            config.display_url
        ));
        let now = Instant::now();
        if outage.attempt_failed(now, config.warn_interval) {
            tracing::warn!(
                source = NAME,
                url = %config.display_url,
                error = %failure,
                attempts = outage.failed_attempts(),
                down_for_ms = outage.duration(now).as_millis() as u64,
                "redis: unreachable; retrying with backoff"
            );
        } else {
            tracing::debug!(source = NAME, error = %failure, "redis: connection attempt failed");
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Opens a pub/sub connection and subscribes to every configured channel
/// and pattern; returns once Redis has confirmed the subscriptions, so a
/// message published after this returns is delivered.
async fn connect(client: &redis::Client, config: &RedisConfig) -> redis::RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    if !config.channels.is_empty() {
        pubsub.subscribe(&config.channels).await?;
    }
    if !config.patterns.is_empty() {
        pubsub.psubscribe(&config.patterns).await?;
    }
    Ok(pubsub)
}

/// Forwards messages until the connection fails, the core goes away or
/// shutdown fires. Pings the server when idle, so a silently dead
/// connection is noticed within two ping intervals.
async fn deliver(
    config: &RedisConfig,
    ctx: &SourceContext,
    shutdown: &mut Shutdown,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
) -> Ended {
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick of an interval is immediate; the connection was just
    // proven by the subscribe replies.
    ping.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ended::Shutdown,
            message = stream.next() => {
                let Some(message) = message else {
                    return Ended::Lost("connection closed".to_owned());
                };
                let Some(publish) = to_publish(config, &message, &ctx.metrics) else {
                    continue;
                };
                if let Some(ended) = forward(&ctx.sink, shutdown, publish).await {
                    return ended;
                }
                ping.reset();
            }
            _ = ping.tick() => {
                let answer = tokio::time::timeout(config.ping_interval, sink.ping::<redis::Value>()).await;
                match answer {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::Lost(format!("ping failed: {e}")),
                    Err(_) => return Ended::Lost(format!("no ping answer within {:?}", config.ping_interval)),
                }
            }
        }
    }
}

/// Hands one message to the core, waiting while its queue is full; `Some`
/// when the source must stop.
async fn forward(sink: &PublishSink, shutdown: &mut Shutdown, publish: Publish) -> Option<Ended> {
    tokio::select! {
        // Losing the one message in flight is fine: the server is stopping.
        _ = shutdown.wait() => Some(Ended::Shutdown),
        sent = sink.publish(publish) => match sent {
            Ok(()) => None,
            Err(_) => Some(Ended::SinkClosed),
        },
    }
}

/// The [`Publish`] for one Redis message, or `None` (counted as
/// `kind="unroutable"`) when its channel name cannot become a gateway channel.
fn to_publish(config: &RedisConfig, message: &redis::Msg, metrics: &Metrics) -> Option<Publish> {
    let name: Vec<u8> = message.get_channel().unwrap_or_default();
    let Ok(redis_channel) = std::str::from_utf8(&name) else {
        metrics.record_source_message(NAME, "unroutable");
        tracing::debug!(
            source = NAME,
            "redis: dropped a message on a non-UTF-8 channel name"
        );
        return None;
    };
    let Some(channel) = config.gateway_channel(redis_channel) else {
        metrics.record_source_message(NAME, "unroutable");
        tracing::debug!(
            source = NAME,
            channel = redis_channel,
            "redis: dropped a message on the bare prefix channel"
        );
        return None;
    };
    // The payload kind is counted by the driver once the core has classified it.
    Some(Publish {
        channel: channel.to_owned(),
        pos: None,
        payload: Bytes::copy_from_slice(message.get_payload_bytes()),
        key: None,
    })
}

/// Counts and logs the outage that just ended, if it was a gap in delivery.
fn report_recovery(outage: &Outage, config: &RedisConfig, metrics: &Arc<Metrics>) {
    let down_for = outage.duration(Instant::now());
    if outage.is_gap() {
        metrics
            .source_gaps
            .get_or_create(&ReasonLabel {
                reason: NAME.to_owned(),
            })
            .inc();
        tracing::warn!(
            source = NAME,
            url = %config.display_url,
            gap_ms = down_for.as_millis() as u64,
            failed_attempts = outage.failed_attempts(),
            "redis: subscribed again after a gap of {}; messages published during it were lost",
            human(down_for)
        );
    } else {
        tracing::info!(source = NAME, url = %config.display_url, "redis: subscribed");
    }
}

/// `1.234s` style, for log lines read by people.
fn human(duration: Duration) -> String {
    format!("{:.3}s", duration.as_secs_f64())
}
