//! [`LatencyHistogram`]: how long tasks waited between becoming due and being reserved, as a
//! histogram with fixed buckets that any broker can keep cheaply and that adds up across
//! shards and processes.
//!
//! A task becomes *due* at its `run_at`: its enqueue for a task enqueued ready, its run-at or
//! retry time for a delayed or retried one, the call for a released or replayed one, the
//! lease's expiry for one whose lease expired (the rules in [`crate::broker`]). Its *start
//! latency* is the time from then to the reservation that leases it, measured by the broker
//! on its own clock when it reserves, so the figure is the same whichever worker or process
//! reserves. A broker records one value per task handed out.
//!
//! The buckets are fixed ([`LatencyHistogram::BOUNDS`]) so that histograms of two shards, two
//! brokers or two scrapes can be added and subtracted bucket by bucket, which is what
//! Prometheus does with them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many buckets a [`LatencyHistogram`] has: one per bound, and one above the last bound
/// (`+Inf`).
pub const LATENCY_BUCKETS: usize = LatencyHistogram::BOUNDS.len() + 1;

/// A histogram of start latencies: a count per bucket (not cumulative) and their sum.
///
/// Bucket `i` counts the latencies above `BOUNDS[i - 1]` and at most `BOUNDS[i]` (Prometheus's
/// `le`), bucket 0 those at most `BOUNDS[0]`, and the last bucket those above every bound.
/// Latencies are measured in milliseconds by every broker, so the bounds are whole
/// milliseconds and a value on a bound is counted exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Reservations per bucket; the last is above every bound.
    pub counts: [u64; LATENCY_BUCKETS],
    /// The sum of every latency counted.
    #[serde(with = "crate::duration::serde")]
    pub sum: Duration,
}

impl LatencyHistogram {
    /// The upper bounds of the buckets, from a millisecond (a task reserved as it arrives) to
    /// an hour (a queue that has fallen far behind).
    pub const BOUNDS: [Duration; 17] = [
        Duration::from_millis(1),
        Duration::from_millis(5),
        Duration::from_millis(10),
        Duration::from_millis(25),
        Duration::from_millis(50),
        Duration::from_millis(100),
        Duration::from_millis(250),
        Duration::from_millis(500),
        Duration::from_secs(1),
        Duration::from_millis(2500),
        Duration::from_secs(5),
        Duration::from_secs(10),
        Duration::from_secs(30),
        Duration::from_secs(60),
        Duration::from_secs(300),
        Duration::from_secs(900),
        Duration::from_secs(3600),
    ];

    /// The index of the bucket that counts `latency`.
    pub fn bucket(latency: Duration) -> usize {
        Self::BOUNDS.partition_point(|bound| *bound < latency)
    }

    /// Counts one latency.
    pub fn record(&mut self, latency: Duration) {
        self.counts[Self::bucket(latency)] += 1;
        self.sum += latency;
    }

    /// Adds `other`'s counts and sum to these (two shards of one queue, say).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }

    /// How many latencies were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

// The bounds grow, so `bucket` finds the first bound at or above a latency.
const _: () = {
    let mut i = 1;
    while i < LatencyHistogram::BOUNDS.len() {
        assert!(
            LatencyHistogram::BOUNDS[i - 1].as_millis() < LatencyHistogram::BOUNDS[i].as_millis()
        );
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_on_a_bound_counts_in_that_bounds_bucket() {
        assert_eq!(LatencyHistogram::bucket(Duration::ZERO), 0);
        assert_eq!(LatencyHistogram::bucket(Duration::from_millis(1)), 0);
        assert_eq!(LatencyHistogram::bucket(Duration::from_millis(2)), 1);
        assert_eq!(LatencyHistogram::bucket(Duration::from_secs(1)), 8);
        assert_eq!(LatencyHistogram::bucket(Duration::from_millis(1001)), 9);
        assert_eq!(
            LatencyHistogram::bucket(Duration::from_secs(3600)),
            LATENCY_BUCKETS - 2
        );
        assert_eq!(
            LatencyHistogram::bucket(Duration::from_secs(3601)),
            LATENCY_BUCKETS - 1,
            "above every bound: +Inf"
        );
    }

    #[test]
    fn histograms_add_up() {
        let mut a = LatencyHistogram::default();
        a.record(Duration::from_millis(3));
        a.record(Duration::from_secs(7));
        let mut b = LatencyHistogram::default();
        b.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.counts[1], 2);
        assert_eq!(a.counts[11], 1);
        assert_eq!(a.sum, Duration::from_millis(7006));
    }

    #[test]
    fn serde_round_trips() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_millis(1500));
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<LatencyHistogram>(&json).unwrap(), h);
    }
}
