//! A synthetic market feed for `ws-realtime dev`: random-walk prices for a
//! few symbols on `lines`, order-book snapshots on `order_book`, and figures
//! on `analytics`, a few messages per second each.
//!
//! [`MarketFeed`] is a plain generator (no I/O, no clock) so the embedded
//! Kafka of `dev` can produce its messages into topics; [`DevFeedSource`]
//! publishes them straight into the core.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::core::Publish;
use crate::source::{Source, SourceContext, SourceFuture};

/// Channels (and Kafka topics) the feed writes.
pub const FEED_TOPICS: [&str; 3] = ["lines", "order_book", "analytics"];

/// How often [`DevFeedSource`] asks the generator for messages.
pub const TICK: Duration = Duration::from_millis(500);

/// One generated message.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedMessage {
    /// The topic, which is also the gateway channel: `lines`, `order_book`, `analytics`.
    pub topic: &'static str,
    /// The message key: the symbol.
    pub key: String,
    /// The JSON payload, with a `timestamp` in Unix milliseconds.
    pub json: String,
}

/// The random-walk state of one instrument.
#[derive(Debug, Clone)]
struct Instrument {
    /// Ticker, the message key.
    symbol: &'static str,
    /// Current mid price.
    price: f64,
    /// Session volume so far, for `analytics`.
    volume: u64,
    /// Session open, for the change figure in `analytics`.
    open: f64,
}

/// The generator. Deterministic for a given seed and sequence of `now`s.
#[derive(Debug, Clone)]
pub struct MarketFeed {
    /// The instruments whose prices walk.
    instruments: Vec<Instrument>,
    /// xorshift64* state: no dependency and reproducible for tests.
    rng: u64,
    /// How many times [`MarketFeed::next_messages`] ran; picks which
    /// instrument gets an order book and when analytics are due.
    ticks: u64,
}

impl MarketFeed {
    /// A feed over a few well-known symbols; `seed` fixes the walk.
    pub fn new(seed: u64) -> MarketFeed {
        let instruments = [
            ("AAPL", 189.5),
            ("MSFT", 411.2),
            ("BTC-USD", 64_250.0),
            ("EUR-USD", 1.0842),
        ]
        .into_iter()
        .map(|(symbol, price)| Instrument {
            symbol,
            price,
            volume: 0,
            open: price,
        })
        .collect();
        MarketFeed {
            instruments,
            // xorshift needs a non-zero state.
            rng: seed | 1,
            ticks: 0,
        }
    }

    /// The messages of one tick at `now_unix_ms`: a price line per symbol,
    /// one order-book snapshot (rotating symbol), and every second tick an
    /// analytics figure per symbol.
    pub fn next_messages(&mut self, now_unix_ms: u64) -> Vec<FeedMessage> {
        self.ticks += 1;
        let mut out = Vec::with_capacity(self.instruments.len() * 2 + 1);
        for i in 0..self.instruments.len() {
            let step = (self.unit() - 0.5) * 0.004;
            let size = 1 + (self.unit() * 500.0) as u64;
            let instrument = &mut self.instruments[i];
            instrument.price = (instrument.price * (1.0 + step)).max(0.0001);
            instrument.volume += size;
            let json = serde_json::json!({
                "symbol": instrument.symbol,
                "price": round(instrument.price, 4),
                "size": size,
                "timestamp": now_unix_ms,
            });
            out.push(FeedMessage {
                topic: "lines",
                key: instrument.symbol.to_owned(),
                json: json.to_string(),
            });
        }

        let which = (self.ticks as usize) % self.instruments.len();
        let mid = self.instruments[which].price;
        let tick = mid * 0.0001;
        let mut bids = Vec::new();
        let mut asks = Vec::new();
        for level in 1..=5 {
            let level_f = f64::from(level);
            bids.push(serde_json::json!([
                round(mid - tick * level_f, 4),
                1 + (self.unit() * 1000.0) as u64
            ]));
            asks.push(serde_json::json!([
                round(mid + tick * level_f, 4),
                1 + (self.unit() * 1000.0) as u64
            ]));
        }
        let symbol = self.instruments[which].symbol;
        out.push(FeedMessage {
            topic: "order_book",
            key: symbol.to_owned(),
            json: serde_json::json!({ "symbol": symbol, "bids": bids, "asks": asks, "timestamp": now_unix_ms })
                .to_string(),
        });

        if self.ticks % 2 == 0 {
            for instrument in &self.instruments {
                let change = (instrument.price - instrument.open) / instrument.open * 100.0;
                out.push(FeedMessage {
                    topic: "analytics",
                    key: instrument.symbol.to_owned(),
                    json: serde_json::json!({
                        "symbol": instrument.symbol,
                        "changePercent": round(change, 3),
                        "volume": instrument.volume,
                        "timestamp": now_unix_ms,
                    })
                    .to_string(),
                });
            }
        }
        out
    }

    /// A uniform number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let bits = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        bits as f64 / (1u64 << 53) as f64
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// Publishes a [`MarketFeed`] straight into the core every [`TICK`].
#[derive(Debug)]
pub struct DevFeedSource {
    /// The generator.
    feed: MarketFeed,
}

impl DevFeedSource {
    /// A source over a feed seeded from the clock.
    pub fn new() -> DevFeedSource {
        DevFeedSource {
            feed: MarketFeed::new(unix_ms()),
        }
    }
}

impl Default for DevFeedSource {
    fn default() -> Self {
        DevFeedSource::new()
    }
}

impl Source for DevFeedSource {
    fn name(&self) -> &'static str {
        "dev"
    }

    fn run(self: Box<Self>, mut ctx: SourceContext) -> SourceFuture {
        let mut feed = self.feed;
        Box::pin(async move {
            ctx.health.ready();
            let mut interval = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    () = ctx.shutdown.wait() => return,
                    _ = interval.tick() => {}
                }
                for message in feed.next_messages(unix_ms()) {
                    let publish = Publish {
                        channel: message.topic.to_owned(),
                        pos: None,
                        payload: Bytes::from(message.json),
                        key: None,
                    };
                    if ctx.sink.publish(publish).await.is_err() {
                        return;
                    }
                }
            }
        })
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tick_has_lines_and_a_book_and_every_other_tick_analytics() {
        let mut feed = MarketFeed::new(7);
        let first = feed.next_messages(1_000);
        let second = feed.next_messages(1_500);
        let count = |msgs: &[FeedMessage], topic| msgs.iter().filter(|m| m.topic == topic).count();
        assert_eq!(count(&first, "lines"), 4);
        assert_eq!(count(&first, "order_book"), 1);
        assert_eq!(count(&first, "analytics"), 0);
        assert_eq!(count(&second, "analytics"), 4);
        for message in first.iter().chain(&second) {
            let json: serde_json::Value = serde_json::from_str(&message.json).unwrap();
            assert!(json["timestamp"].is_u64(), "{}", message.json);
            assert_eq!(json["symbol"], message.key.as_str());
            assert!(FEED_TOPICS.contains(&message.topic));
        }
    }

    #[test]
    fn prices_walk_and_stay_positive() {
        let mut feed = MarketFeed::new(42);
        let price = |msgs: &[FeedMessage]| -> f64 {
            let line = msgs
                .iter()
                .find(|m| m.topic == "lines" && m.key == "AAPL")
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&line.json).unwrap()["price"]
                .as_f64()
                .unwrap()
        };
        let start = price(&feed.next_messages(0));
        let mut moved = false;
        for t in 1..200 {
            let now = price(&feed.next_messages(t));
            assert!(now > 0.0);
            moved |= now != start;
        }
        assert!(moved);
    }

    #[test]
    fn the_same_seed_gives_the_same_feed() {
        assert_eq!(
            MarketFeed::new(3).next_messages(5),
            MarketFeed::new(3).next_messages(5)
        );
    }
}
