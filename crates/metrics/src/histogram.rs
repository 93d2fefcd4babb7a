//! [`Histogram`]: durations counted into fixed buckets with atomics, so a hot path (a handler
//! finishing, a request answered) records one without a lock; [`HistogramSnapshot`]: what a
//! scrape reads from it, or from a broker's [`floodway_core::LatencyHistogram`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodway_core::LatencyHistogram;

/// Durations counted into buckets with fixed upper bounds (seconds), and their sum.
///
/// Recording is two relaxed atomic additions and a search of the bounds. A snapshot read
/// while values are recorded may be a value or two behind in some bucket, never torn within a
/// bucket; Prometheus tolerates that.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then one above every bound (`+Inf`); not cumulative.
    counts: Box<[AtomicU64]>,
    /// The sum of every value recorded, in nanoseconds (it wraps after 584 years of time
    /// recorded).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with buckets up to `bounds` (seconds, ascending), such as a
    /// metric's [`crate::Kind::Histogram`] bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must ascend"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one duration.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = self.bounds.partition_point(|bound| *bound < seconds);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts and sum now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64(),
        }
    }

    /// True when nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.counts
            .iter()
            .all(|count| count.load(Ordering::Relaxed) == 0)
    }
}

/// A histogram's counts at one moment: one per bucket (not cumulative), the last above every
/// bound, and the sum of the values in seconds. Its buckets are those of the metric it is a
/// sample of.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Values per bucket; one more than the metric's bounds.
    pub counts: Vec<u64>,
    /// The sum of every value, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts and sum (two sources of one series).
    pub(crate) fn add(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum_seconds += other.sum_seconds;
    }
}

impl From<&LatencyHistogram> for HistogramSnapshot {
    fn from(histogram: &LatencyHistogram) -> Self {
        HistogramSnapshot {
            counts: histogram.counts.to_vec(),
            sum_seconds: histogram.sum.as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::DURATION_BOUNDS_SECONDS;

    #[test]
    fn values_count_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let histogram = Histogram::new(&DURATION_BOUNDS_SECONDS);
        assert!(histogram.is_empty());
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(7));
        histogram.observe(Duration::from_secs(1000));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts.len(), DURATION_BOUNDS_SECONDS.len() + 1);
        assert_eq!(snapshot.counts[0], 1, "1 ms is at most 0.001 s");
        assert_eq!(
            snapshot.counts[2], 1,
            "7 ms is above 0.005 s, at most 0.01 s"
        );
        assert_eq!(snapshot.counts[DURATION_BOUNDS_SECONDS.len()], 1, "+Inf");
        assert_eq!(snapshot.count(), 3);
        assert!((snapshot.sum_seconds - 1000.008).abs() < 1e-9);
    }

    #[test]
    fn a_broker_histogram_converts_bucket_for_bucket() {
        let mut latency = LatencyHistogram::default();
        latency.record(Duration::from_millis(1500));
        let snapshot = HistogramSnapshot::from(&latency);
        assert_eq!(snapshot.counts, latency.counts.to_vec());
        assert_eq!(snapshot.sum_seconds, 1.5);
    }
}
