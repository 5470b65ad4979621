//! Delivery counters and the latency histogram the subscribers feed.
//!
//! Thousands of connection tasks on a few worker threads record every
//! delivered message, so the hot path must neither lock nor bounce one cache
//! line between cores: counters and histograms are sharded, each worker
//! thread picks one shard for its lifetime, and everything is a relaxed
//! atomic add. Readers (progress line, summary) merge the shards.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Values below this are counted exactly, one bucket each.
const LINEAR_LIMIT: u64 = 256;
/// Sub-buckets per power of two above [`LINEAR_LIMIT`]: 128 keeps the
/// relative error of a reported percentile under 0.8 %.
const SUB_BUCKET_BITS: u32 = 7;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Buckets needed to cover every `u64`: the linear range plus 128 sub-buckets
/// for each power of two from 2^8 to 2^63.
const BUCKETS: usize = LINEAR_LIMIT as usize + (64 - 8) * SUB_BUCKETS as usize;
/// Shards of counters; more than the worker threads of any sane run.
const SHARDS: usize = 16;

/// The bucket holding `value`.
fn bucket_of(value: u64) -> usize {
    if value < LINEAR_LIMIT {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= 8
    let shift = exponent - SUB_BUCKET_BITS;
    let sub = (value >> shift) - SUB_BUCKETS; // 0..128
    LINEAR_LIMIT as usize + (exponent as usize - 8) * SUB_BUCKETS as usize + sub as usize
}

/// The smallest and largest value that land in `bucket`.
fn bucket_range(bucket: usize) -> (u64, u64) {
    if bucket < LINEAR_LIMIT as usize {
        return (bucket as u64, bucket as u64);
    }
    let offset = bucket - LINEAR_LIMIT as usize;
    let exponent = (offset / SUB_BUCKETS as usize) as u32 + 8;
    let sub = (offset % SUB_BUCKETS as usize) as u64 + SUB_BUCKETS;
    let shift = exponent - SUB_BUCKET_BITS;
    let low = sub << shift;
    (low, low + ((1u64 << shift) - 1))
}

/// A log-linear histogram of `u64` values (nanoseconds here), safe to record
/// into from many threads.
#[derive(Debug)]
pub struct Histogram {
    /// One counter per bucket; see [`bucket_of`].
    counts: Box<[AtomicU64]>,
    /// Number of recorded values, for the mean and for percentile ranks.
    total: AtomicU64,
    /// Sum of recorded values, for the mean.
    sum: AtomicU64,
    /// Largest recorded value, exact (buckets only bound it).
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Counts one value.
    pub fn record(&self, value: u64) {
        self.counts[bucket_of(value)].fetch_add(1, Relaxed);
        self.add_totals(1, value, value);
    }

    /// Counts one value in its bucket only; the caller adds it to the
    /// totals later with [`Histogram::add_totals`] (a [`Tally`] does, once
    /// per read instead of three atomics per message).
    fn record_bucket(&self, value: u64) {
        self.counts[bucket_of(value)].fetch_add(1, Relaxed);
    }

    /// Adds `count` values summing to `sum`, the largest `max`, to the totals.
    fn add_totals(&self, count: u64, sum: u64, max: u64) {
        self.total.fetch_add(count, Relaxed);
        self.sum.fetch_add(sum, Relaxed);
        self.max.fetch_max(max, Relaxed);
    }

    /// A plain copy, merged with the other shards' copies by [`Snapshot::merge`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            total: self.total.load(Relaxed),
            sum: self.sum.load(Relaxed),
            max: self.max.load(Relaxed),
        }
    }
}

/// A histogram frozen for reading.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Per-bucket counts.
    counts: Vec<u64>,
    /// Values recorded.
    total: u64,
    /// Sum of the values recorded.
    sum: u64,
    /// Largest value recorded.
    max: u64,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl Snapshot {
    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Snapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest value recorded (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean of the recorded values, or 0 when there are none.
    pub fn mean(&self) -> u64 {
        self.sum.checked_div(self.total).unwrap_or(0)
    }

    /// The value below or at which `quantile` (0..=1) of the recorded values
    /// lie, as the upper edge of its bucket (never above the exact maximum),
    /// or 0 when nothing was recorded.
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_range(bucket).1.min(self.max);
            }
        }
        self.max
    }
}

/// One worker thread's share of the counters, on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Every `"ts":` seen, whenever it was published: drives deliveries/s.
    messages: AtomicU64,
    /// Messages published inside the measured window: compared to the
    /// expected deliveries.
    in_window: AtomicU64,
    /// Messages that arrived while the window was open, whatever their
    /// publish time: the throughput actually achieved.
    arrived_in_window: AtomicU64,
    /// Latency of the in-window messages.
    latency: Histogram,
}

/// Every subscriber's deliveries, merged on demand.
#[derive(Debug)]
pub struct DeliveryStats {
    /// Per-thread shards; see the module comment.
    shards: Box<[Shard]>,
    /// Unix ns at which the measured window opens; `u64::MAX` until the
    /// publisher fixes it, so nothing counts before then.
    window_start_ns: AtomicU64,
    /// Unix ns at which the measured window closes.
    window_end_ns: AtomicU64,
}

impl Default for DeliveryStats {
    fn default() -> DeliveryStats {
        DeliveryStats {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            window_start_ns: AtomicU64::new(u64::MAX),
            window_end_ns: AtomicU64::new(u64::MAX),
        }
    }
}

/// Totals merged over the shards.
#[derive(Debug, Clone, Default)]
pub struct DeliveryTotals {
    /// Every timestamped message received.
    pub messages: u64,
    /// Messages published inside the window and received.
    pub in_window: u64,
    /// Messages received while the window was open.
    pub arrived_in_window: u64,
    /// Latency of the in-window messages, in ns.
    pub latency: Snapshot,
}

impl DeliveryStats {
    /// Fixes the measured window, in unix ns.
    pub fn set_window(&self, start_ns: u64, end_ns: u64) {
        self.window_end_ns.store(end_ns, Relaxed);
        self.window_start_ns.store(start_ns, Relaxed);
    }

    /// Counts every message in one received frame: each `"ts":<digits>` is
    /// one delivery (a frame may batch several), received at `now_ns`.
    /// Returns how many it found.
    pub fn record_frame(&self, frame: &[u8], now_ns: u64) -> usize {
        let mut tally = self.tally(now_ns);
        tally.frame(frame)
    }

    /// A tally of the frames of one read, all received at `now_ns`: the
    /// fast readers' way of counting, with one atomic per message (its
    /// latency bucket) and the counters added once when the tally drops.
    pub fn tally(&self, now_ns: u64) -> Tally<'_> {
        let window = (
            self.window_start_ns.load(Relaxed),
            self.window_end_ns.load(Relaxed),
        );
        Tally {
            shard: &self.shards[shard_index()],
            window,
            now_ns,
            messages: 0,
            in_window: 0,
            latency_sum: 0,
            latency_max: 0,
        }
    }

    /// The counters so far.
    pub fn totals(&self) -> DeliveryTotals {
        let mut totals = DeliveryTotals::default();
        for shard in self.shards.iter() {
            totals.messages += shard.messages.load(Relaxed);
            totals.in_window += shard.in_window.load(Relaxed);
            totals.arrived_in_window += shard.arrived_in_window.load(Relaxed);
            totals.latency.merge(&shard.latency.snapshot());
        }
        totals
    }

    /// Messages received so far, cheaper than [`DeliveryStats::totals`].
    pub fn messages(&self) -> u64 {
        self.shards.iter().map(|s| s.messages.load(Relaxed)).sum()
    }

    /// In-window messages received so far.
    pub fn in_window(&self) -> u64 {
        self.shards.iter().map(|s| s.in_window.load(Relaxed)).sum()
    }
}

/// The deliveries of one read (see [`DeliveryStats::tally`]), added to this
/// thread's shard when dropped.
#[derive(Debug)]
pub struct Tally<'a> {
    /// Where the counts go.
    shard: &'a Shard,
    /// The measured window, read once per tally rather than per message.
    window: (u64, u64),
    /// When the read returned: the receive time of every frame in it.
    now_ns: u64,
    /// Timestamped messages seen.
    messages: u64,
    /// Of those, published inside the window (their latency is recorded).
    in_window: u64,
    /// Sum of the in-window latencies, for the histogram's mean.
    latency_sum: u64,
    /// Largest in-window latency, for the histogram's exact maximum.
    latency_max: u64,
}

impl Tally<'_> {
    /// Counts the messages of one frame; returns how many it found.
    pub fn frame(&mut self, frame: &[u8]) -> usize {
        let (start, end) = self.window;
        let mut found = 0;
        for ts in timestamps(frame) {
            found += 1;
            if (start..end).contains(&ts) {
                let latency = self.now_ns.saturating_sub(ts);
                self.shard.latency.record_bucket(latency);
                self.in_window += 1;
                self.latency_sum += latency;
                self.latency_max = self.latency_max.max(latency);
            }
        }
        self.messages += found as u64;
        found
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if self.messages == 0 {
            return;
        }
        let shard = self.shard;
        shard.messages.fetch_add(self.messages, Relaxed);
        if (self.window.0..self.window.1).contains(&self.now_ns) {
            shard.arrived_in_window.fetch_add(self.messages, Relaxed);
        }
        if self.in_window > 0 {
            shard.in_window.fetch_add(self.in_window, Relaxed);
            shard
                .latency
                .add_totals(self.in_window, self.latency_sum, self.latency_max);
        }
    }
}

/// This thread's shard, assigned round-robin on first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|shard| {
        if shard.get() == usize::MAX {
            shard.set(NEXT.fetch_add(1, Relaxed) % SHARDS);
        }
        shard.get()
    })
}

/// The searcher for `"ts":`, built once: building one per frame (what
/// `memmem::find` does) cost more than the search itself.
fn ts_key_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"ts\":"));
    &FINDER
}

/// The values of every `"ts":<digits>` in `frame`. The key is matched
/// exactly, so `"timestamp":` and padding never count.
pub fn timestamps(frame: &[u8]) -> impl Iterator<Item = u64> + '_ {
    const KEY_LEN: usize = b"\"ts\":".len();
    let mut rest = frame;
    std::iter::from_fn(move || {
        loop {
            // memchr's SIMD search, then the digits by hand: this runs for
            // every delivery, millions a second, so it neither validates
            // UTF-8 nor goes through `str::parse`.
            let at = ts_key_finder().find(rest)?;
            rest = &rest[at + KEY_LEN..];
            let digits = rest
                .iter()
                .take(20)
                .take_while(|b| b.is_ascii_digit())
                .count();
            let value = rest[..digits].iter().try_fold(0u64, |value, digit| {
                value
                    .checked_mul(10)
                    .and_then(|value| value.checked_add(u64::from(digit - b'0')))
            });
            rest = &rest[digits..];
            if digits > 0
                && let Some(value) = value
            {
                return Some(value);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_range_holds_it() {
        let mut value = 0u64;
        for _ in 0..20_000 {
            let (low, high) = bucket_range(bucket_of(value));
            assert!(
                low <= value && value <= high,
                "{value} not in {low}..={high}"
            );
            value = value.saturating_add(value / 37 + 1);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bucket_width_stays_under_one_percent_of_its_values() {
        for bucket in LINEAR_LIMIT as usize..BUCKETS {
            let (low, high) = bucket_range(bucket);
            assert!((high - low) as f64 / low as f64 <= 1.0 / 128.0 + 1e-12);
        }
    }

    #[test]
    fn quantiles_of_a_uniform_sample_are_within_bucket_error() {
        let histogram = Histogram::default();
        for value in 1..=100_000u64 {
            histogram.record(value * 1_000);
        }
        let snapshot = histogram.snapshot();
        for (quantile, exact) in [
            (0.5, 50_000_000u64),
            (0.99, 99_000_000),
            (0.999, 99_900_000),
        ] {
            let got = snapshot.quantile(quantile);
            let error = got.abs_diff(exact) as f64 / exact as f64;
            assert!(error < 0.01, "q{quantile}: {got} vs {exact}");
        }
        assert_eq!(snapshot.quantile(1.0), 100_000_000);
        assert_eq!(snapshot.max(), 100_000_000);
        assert_eq!(snapshot.count(), 100_000);
        assert_eq!(snapshot.mean(), 50_000_500);
    }

    #[test]
    fn an_empty_histogram_reports_zero() {
        let snapshot = Histogram::default().snapshot();
        assert_eq!(snapshot.quantile(0.99), 0);
        assert_eq!(snapshot.mean(), 0);
    }

    #[test]
    fn timestamps_are_found_in_single_and_batched_frames() {
        let single = br#"{"type":"message","channel":"ch0","pos":"1","data":{"ts":1700000000000000000,"seq":3,"pad":"xx"}}"#;
        assert_eq!(
            timestamps(single).collect::<Vec<_>>(),
            [1_700_000_000_000_000_000]
        );
        let batch = br#"[{"data":{"ts":5,"seq":1}},{"data":{"ts":7,"seq":2}}]"#;
        assert_eq!(timestamps(batch).collect::<Vec<_>>(), [5, 7]);
        let none = br#"{"type":"pong","id":3,"timestamp":1705238400000,"ts":"x"}"#;
        assert_eq!(timestamps(none).count(), 0);
    }

    #[test]
    fn a_timestamp_too_long_for_u64_is_not_counted() {
        let frame = br#"{"ts":99999999999999999999,"seq":1}{"ts":12}"#;
        assert_eq!(timestamps(frame).collect::<Vec<_>>(), [12]);
    }

    #[test]
    fn a_tally_counts_like_frame_by_frame_recording() {
        let frames: [&[u8]; 3] = [
            br#"{"data":{"ts":500}}"#,
            br#"[{"data":{"ts":1200}},{"data":{"ts":1300}}]"#,
            br#"{"type":"pong"}"#,
        ];
        let one_by_one = DeliveryStats::default();
        one_by_one.set_window(1_000, 2_000);
        let tallied = DeliveryStats::default();
        tallied.set_window(1_000, 2_000);
        {
            let mut tally = tallied.tally(1_600);
            for frame in frames {
                assert_eq!(tally.frame(frame), one_by_one.record_frame(frame, 1_600));
            }
        }
        let (a, b) = (one_by_one.totals(), tallied.totals());
        assert_eq!(
            (a.messages, a.in_window, a.arrived_in_window),
            (b.messages, b.in_window, b.arrived_in_window)
        );
        assert_eq!((b.messages, b.in_window, b.arrived_in_window), (3, 2, 3));
        assert_eq!(
            (a.latency.count(), a.latency.mean(), a.latency.max()),
            (b.latency.count(), b.latency.mean(), b.latency.max())
        );
        assert_eq!(b.latency.quantile(1.0), 400);
    }

    #[test]
    fn only_messages_published_inside_the_window_count_toward_latency() {
        let stats = DeliveryStats::default();
        stats.set_window(1_000, 2_000);
        stats.record_frame(br#"{"data":{"ts":500}}"#, 1_500);
        stats.record_frame(br#"{"data":{"ts":1200}}"#, 1_700);
        stats.record_frame(br#"{"data":{"ts":1900}}"#, 2_100);
        let totals = stats.totals();
        assert_eq!(totals.messages, 3);
        assert_eq!(totals.in_window, 2);
        assert_eq!(totals.arrived_in_window, 2);
        assert_eq!(totals.latency.count(), 2);
        assert_eq!(totals.latency.max(), 500);
    }
}
