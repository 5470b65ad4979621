//! The publish path of `WS_PUBLISH_VIA=redis`: `POST /api/publish`
//! `PUBLISH`es each (channel, message) to `WS_REDIS_CHANNEL_PREFIX` +
//! channel, which every replica's Redis source is subscribed to (when its
//! `WS_REDIS_PATTERNS` cover it). One request is one pipeline on one
//! connection, so its messages keep their order. Redis pub/sub keeps
//! nothing: a 200 means Redis took the messages and passed them to the
//! subscribers connected at that moment.

use std::sync::Mutex;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use super::config::RedisConfig;
use crate::source::outcome::{BusRecord, Outcome};

/// The Redis publisher behind `POST /api/publish`.
pub struct RedisPublisher {
    /// Where to connect.
    client: redis::Client,
    /// The URL with its password masked, for error messages.
    display_url: String,
    /// Put before the gateway channel, as the source strips it.
    channel_prefix: String,
    /// The open connection (cheap to clone; requests share it); `None` until
    /// first used and after a failure, so the next publish reconnects.
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPublisher")
            .field("url", &self.display_url)
            .finish_non_exhaustive()
    }
}

impl RedisPublisher {
    /// A publisher for the server of `config`; connects on first use.
    pub fn new(config: &RedisConfig) -> Result<RedisPublisher, redis::RedisError> {
        Ok(RedisPublisher {
            client: redis::Client::open(config.connection.clone())?,
            display_url: config.display_url.clone(),
            channel_prefix: config.channel_prefix.clone(),
            connection: Mutex::new(None),
        })
    }

    /// The Redis channel a gateway channel is published to.
    pub fn redis_channel(&self, channel: &str) -> String {
        format!("{}{channel}", self.channel_prefix)
    }

    /// `PUBLISH`es every record in one pipeline, answered by `deadline`.
    pub async fn publish(&self, records: Vec<BusRecord>, deadline: Instant) -> Vec<Outcome> {
        let outcome = match tokio::time::timeout_at(deadline, self.publish_all(&records)).await {
            Ok(Ok(())) => Outcome::Stored(None),
            Ok(Err(error)) => {
                self.forget_connection();
                Outcome::Failed(format!("redis at {}: {error}", self.display_url))
            }
            Err(_) => {
                self.forget_connection();
                Outcome::TimedOut
            }
        };
        vec![outcome; records.len()]
    }

    async fn publish_all(&self, records: &[BusRecord]) -> redis::RedisResult<()> {
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        for record in records {
            pipe.cmd("PUBLISH")
                .arg(self.redis_channel(&record.channel))
                .arg(&record.payload[..]);
        }
        let _receivers: Vec<i64> = pipe.query_async(&mut connection).await?;
        Ok(())
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let existing = self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(connection) = existing {
            return Ok(connection);
        }
        let connection = self.client.get_multiplexed_async_connection().await?;
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    fn forget_connection(&self) {
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
