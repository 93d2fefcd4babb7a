//! Queues on the wire: configuration, statistics, and the selectors of dead-letter calls.

use std::time::Duration;

use floodway_core::{QueueName, TaskId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::task::{DeadReason, RetryPolicy};
use super::{
    WireDuration, WireError, nullable_queue_name_schema, nullable_task_ids_schema,
    queue_name_schema,
};

/// How a queue behaves. `PUT` replaces the whole configuration; missing fields take the
/// defaults shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Most waiting tasks (scheduled, ready, retrying) the queue holds; `null` for no limit
    /// below 100,000,000.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub length_max: Option<u64>,
    /// What enqueue does when the queue is at `length_max`.
    pub overflow: OverflowPolicy,
    /// The retry policy of tasks that do not bring their own.
    pub retry: RetryPolicy,
    /// How long an idempotency key deduplicates enqueues after its first use (at most 30d).
    pub idempotency_window: WireDuration,
    /// How many completed (and cancelled) tasks the queue keeps for inspection.
    #[schema(maximum = 1_000_000)]
    pub completed_retain: u32,
    /// How many dead letters the queue keeps.
    #[schema(maximum = 10_000_000)]
    pub dead_retain: u64,
    /// Whether workers are kept from reserving. Enqueue works while paused.
    pub paused: bool,
    /// Reservations per second from the queue over all workers, enforced by the broker with
    /// one token bucket; `null` for no limit. A reserve call held back by it returns fewer
    /// tasks (counted in `totals.throttled_rate`).
    pub rate_limit: Option<RateLimit>,
    /// Reservations per second of the tasks sharing one `limit_key` (a tenant, a downstream
    /// host), each key with its own bucket; `null` for no limit.
    pub key_rate_limit: Option<RateLimit>,
    /// Most tasks of the queue leased at once over all workers (1 to 1,000,000); `null` for
    /// no limit. Compare with `counts.active`.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub concurrency_max: Option<u32>,
    /// Most tasks sharing one `limit_key` leased at once (1 to 1,000,000); `null` for no
    /// limit.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub key_concurrency_max: Option<u32>,
    /// Queue-depth watermarks: above `high` waiting tasks, enqueue is refused with 429
    /// `queue_overloaded` until the queue is back at or below `low`; `null` for none.
    pub watermarks: Option<Watermarks>,
    /// The time to live of tasks enqueued without one: a task still waiting this long after
    /// enqueue is dead-lettered (reason `expired`); `null`: tasks wait for ever.
    pub ttl: Option<WireDuration>,
}

/// A rate limit: `rate` operations per second on average, up to `burst` at once after a
/// quiet spell (a token bucket).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Operations per second, averaged; fractions allowed (0.5 is one every two seconds).
    #[schema(exclusive_minimum = 0.0, example = 500.0)]
    pub rate: f64,
    /// The most operations allowed at once after a quiet spell; at least 1.
    #[schema(minimum = 1, example = 50)]
    pub burst: u32,
}

impl RateLimit {
    /// The wire form of `limit`.
    pub fn from_core(limit: &floodway_core::RateLimit) -> Self {
        let floodway_core::RateLimit { rate, burst } = *limit;
        RateLimit { rate, burst }
    }

    /// The core limit; the broker validates it.
    pub fn into_core(self) -> floodway_core::RateLimit {
        let RateLimit { rate, burst } = self;
        floodway_core::RateLimit { rate, burst }
    }
}

/// Queue-depth watermarks, `low` < `high`: enqueue is refused once the queue's waiting tasks
/// would exceed `high`, and accepted again once they are at or below `low` (hysteresis).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Watermarks {
    /// Above this many waiting tasks, enqueue is refused.
    #[schema(minimum = 1, maximum = 100_000_000, example = 10_000)]
    pub high: u64,
    /// Once refusing, enqueue is accepted again at or below this many; below `high`.
    #[schema(example = 5_000)]
    pub low: u64,
}

impl Watermarks {
    /// The wire form of `marks`.
    pub fn from_core(marks: &floodway_core::Watermarks) -> Self {
        let floodway_core::Watermarks { high, low } = *marks;
        Watermarks { high, low }
    }

    /// The core watermarks; the broker validates them.
    pub fn into_core(self) -> floodway_core::Watermarks {
        let Watermarks { high, low } = self;
        floodway_core::Watermarks { high, low }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig::from_core(&floodway_core::QueueConfig::default())
    }
}

impl QueueConfig {
    /// The wire form of `config`.
    pub fn from_core(config: &floodway_core::QueueConfig) -> Self {
        let floodway_core::QueueConfig {
            length_max,
            overflow,
            retry,
            idempotency_window,
            completed_retain,
            dead_retain,
            paused,
            rate_limit,
            key_rate_limit,
            concurrency_max,
            key_concurrency_max,
            watermarks,
            ttl,
        } = config;
        QueueConfig {
            length_max: *length_max,
            overflow: (*overflow).into(),
            retry: RetryPolicy::from_core(retry),
            idempotency_window: (*idempotency_window).into(),
            completed_retain: *completed_retain,
            dead_retain: *dead_retain,
            paused: *paused,
            rate_limit: rate_limit.as_ref().map(RateLimit::from_core),
            key_rate_limit: key_rate_limit.as_ref().map(RateLimit::from_core),
            concurrency_max: *concurrency_max,
            key_concurrency_max: *key_concurrency_max,
            watermarks: watermarks.as_ref().map(Watermarks::from_core),
            ttl: ttl.map(Into::into),
        }
    }

    /// The core configuration; the broker validates it.
    pub fn into_core(self) -> floodway_core::QueueConfig {
        let QueueConfig {
            length_max,
            overflow,
            retry,
            idempotency_window,
            completed_retain,
            dead_retain,
            paused,
            rate_limit,
            key_rate_limit,
            concurrency_max,
            key_concurrency_max,
            watermarks,
            ttl,
        } = self;
        floodway_core::QueueConfig {
            length_max,
            overflow: overflow.into(),
            retry: retry.into_core(),
            idempotency_window: idempotency_window.into(),
            completed_retain,
            dead_retain,
            paused,
            rate_limit: rate_limit.map(RateLimit::into_core),
            key_rate_limit: key_rate_limit.map(RateLimit::into_core),
            concurrency_max,
            key_concurrency_max,
            watermarks: watermarks.map(Watermarks::into_core),
            ttl: ttl.map(Into::into),
        }
    }
}

/// What enqueue does when a queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Refuse the batch with 429 `queue_full` (backpressure to the producer).
    Reject,
    /// Accept it and dead-letter the oldest waiting tasks (reason `overflow`).
    DeadLetterOldest,
}

impl From<floodway_core::OverflowPolicy> for OverflowPolicy {
    fn from(policy: floodway_core::OverflowPolicy) -> Self {
        match policy {
            floodway_core::OverflowPolicy::Reject => OverflowPolicy::Reject,
            floodway_core::OverflowPolicy::DeadLetterOldest => OverflowPolicy::DeadLetterOldest,
        }
    }
}

impl From<OverflowPolicy> for floodway_core::OverflowPolicy {
    fn from(policy: OverflowPolicy) -> Self {
        match policy {
            OverflowPolicy::Reject => floodway_core::OverflowPolicy::Reject,
            OverflowPolicy::DeadLetterOldest => floodway_core::OverflowPolicy::DeadLetterOldest,
        }
    }
}

/// One queue: its configuration, tasks per state and running totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueStats {
    /// The queue.
    #[schema(schema_with = queue_name_schema)]
    pub queue: QueueName,
    /// Its configuration.
    pub config: QueueConfig,
    /// Tasks in each state now.
    pub counts: StateCounts,
    /// Running totals since the queue was created.
    pub totals: QueueTotals,
    /// How long the ready task that became ready first has waited; `null` when none is ready.
    pub oldest_ready_age: Option<WireDuration>,
    /// True while the queue is above its high watermark, or came down from it but not yet to
    /// the low one: enqueue is refused with 429 `queue_overloaded`.
    pub refusing: bool,
    /// How long the tasks reserved from the queue had waited since they became due (enqueue,
    /// run-at, retry time), measured by the broker at each reservation.
    pub start_latency: StartLatency,
}

impl QueueStats {
    /// The wire form of `stats`.
    pub fn from_core(stats: &floodway_core::QueueStats) -> Self {
        let floodway_core::QueueStats {
            queue,
            config,
            counts,
            totals,
            oldest_ready_age,
            refusing,
            start_latency,
        } = stats;
        QueueStats {
            queue: queue.clone(),
            config: QueueConfig::from_core(config),
            counts: StateCounts::from_core(counts),
            totals: QueueTotals::from_core(totals),
            oldest_ready_age: oldest_ready_age.map(Into::into),
            refusing: *refusing,
            start_latency: StartLatency::from_core(start_latency),
        }
    }

    /// The core statistics; fails when the start latencies do not have the buckets of this
    /// version (a server of another version).
    pub fn into_core(self) -> Result<floodway_core::QueueStats, WireError> {
        let QueueStats {
            queue,
            config,
            counts,
            totals,
            oldest_ready_age,
            refusing,
            start_latency,
        } = self;
        Ok(floodway_core::QueueStats {
            queue,
            config: config.into_core(),
            counts: counts.into_core(),
            totals: totals.into_core(),
            oldest_ready_age: oldest_ready_age.map(Into::into),
            refusing,
            start_latency: start_latency.into_core()?,
        })
    }
}

/// A histogram of start latencies: from when each task became due to its reservation.
/// Prometheus exports the same figures as `floodway_task_start_latency_seconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartLatency {
    /// The upper bound of each bucket, in seconds, ascending; the same for every queue.
    #[schema(example = json!([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0]))]
    pub bounds_seconds: Vec<f64>,
    /// Reservations per bucket (not cumulative), one more than `bounds_seconds`: `counts[i]`
    /// waited more than `bounds_seconds[i - 1]` and at most `bounds_seconds[i]`; the last
    /// counts those above every bound (`+Inf`).
    pub counts: Vec<u64>,
    /// The sum of every latency counted, in seconds (whole milliseconds).
    pub sum_seconds: f64,
}

impl StartLatency {
    /// The wire form of `histogram`.
    pub fn from_core(histogram: &floodway_core::LatencyHistogram) -> Self {
        StartLatency {
            bounds_seconds: floodway_core::LatencyHistogram::BOUNDS
                .iter()
                .map(Duration::as_secs_f64)
                .collect(),
            counts: histogram.counts.to_vec(),
            sum_seconds: histogram.sum.as_secs_f64(),
        }
    }

    /// The core histogram: the bounds must be this version's.
    pub fn into_core(self) -> Result<floodway_core::LatencyHistogram, WireError> {
        let expected = StartLatency::from_core(&floodway_core::LatencyHistogram::default());
        if self.bounds_seconds != expected.bounds_seconds {
            return Err(WireError::new(
                "start_latency.bounds_seconds",
                format!(
                    "expected the buckets {:?}, got {:?}",
                    expected.bounds_seconds, self.bounds_seconds
                ),
            ));
        }
        let counts = self.counts.try_into().map_err(|counts: Vec<u64>| {
            WireError::new(
                "start_latency.counts",
                format!(
                    "expected {} counts, got {}",
                    floodway_core::LATENCY_BUCKETS,
                    counts.len()
                ),
            )
        })?;
        if !(self.sum_seconds.is_finite() && self.sum_seconds >= 0.0) {
            return Err(WireError::new(
                "start_latency.sum_seconds",
                "must be a number of seconds, at least 0",
            ));
        }
        Ok(floodway_core::LatencyHistogram {
            counts,
            // Brokers measure in milliseconds; rounding undoes the decimal seconds.
            sum: Duration::from_millis((self.sum_seconds * 1000.0).round() as u64),
        })
    }
}

/// Every queue the caller may see.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueList {
    /// The queues, by name.
    pub queues: Vec<QueueStats>,
}

/// Tasks per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateCounts {
    /// Waiting for their run-at time.
    pub scheduled: u64,
    /// Waiting for a worker.
    pub ready: u64,
    /// Leased to workers.
    pub active: u64,
    /// Waiting out a retry backoff.
    pub retrying: u64,
    /// Completed and still retained.
    pub completed: u64,
    /// Dead letters retained.
    pub dead: u64,
    /// Cancelled and still retained.
    pub cancelled: u64,
}

impl StateCounts {
    fn from_core(counts: &floodway_core::StateCounts) -> Self {
        let floodway_core::StateCounts {
            scheduled,
            ready,
            active,
            retrying,
            completed,
            dead,
            cancelled,
        } = *counts;
        StateCounts {
            scheduled,
            ready,
            active,
            retrying,
            completed,
            dead,
            cancelled,
        }
    }

    fn into_core(self) -> floodway_core::StateCounts {
        let StateCounts {
            scheduled,
            ready,
            active,
            retrying,
            completed,
            dead,
            cancelled,
        } = self;
        floodway_core::StateCounts {
            scheduled,
            ready,
            active,
            retrying,
            completed,
            dead,
            cancelled,
        }
    }
}

/// Running totals of what happened in a queue; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueTotals {
    /// Tasks accepted by enqueue (duplicates excluded).
    pub enqueued: u64,
    /// Enqueued tasks answered with an existing id (idempotency key).
    pub deduplicated: u64,
    /// Enqueue calls refused because the queue was full.
    pub rejected_full: u64,
    /// Enqueue calls refused because the queue was above its high watermark.
    pub rejected_overloaded: u64,
    /// Reserve calls that returned fewer tasks than asked for while a rate limit (the
    /// queue's or a key's) held back an eligible task.
    pub throttled_rate: u64,
    /// Reserve calls that returned fewer tasks than asked for while a concurrency limit (the
    /// queue's or a key's) held back an eligible task.
    pub throttled_concurrency: u64,
    /// Side-effect results recorded by tasks' handlers (`POST /v1/leases/effects`).
    pub effects_recorded: u64,
    /// Reservations handed out.
    pub reserved: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Failed attempts scheduled for retry.
    pub retried: u64,
    /// Tasks given back unrun.
    pub released: u64,
    /// Leases that expired before their holder finished.
    pub leases_expired: u64,
    /// Tasks moved to the dead letters, per reason.
    pub dead: DeadCounts,
    /// Dead letters deleted because the queue held `dead_retain` already.
    pub dead_dropped: u64,
    /// Dead letters replayed.
    pub replayed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Lease operations refused for a stale or expired lease.
    pub stale_refused: u64,
}

impl QueueTotals {
    fn from_core(totals: &floodway_core::QueueTotals) -> Self {
        let floodway_core::QueueTotals {
            enqueued,
            deduplicated,
            rejected_full,
            rejected_overloaded,
            throttled_rate,
            throttled_concurrency,
            effects_recorded,
            reserved,
            completed,
            retried,
            released,
            leases_expired,
            dead,
            dead_dropped,
            replayed,
            cancelled,
            stale_refused,
        } = *totals;
        QueueTotals {
            enqueued,
            deduplicated,
            rejected_full,
            rejected_overloaded,
            throttled_rate,
            throttled_concurrency,
            effects_recorded,
            reserved,
            completed,
            retried,
            released,
            leases_expired,
            dead: DeadCounts::from_core(&dead),
            dead_dropped,
            replayed,
            cancelled,
            stale_refused,
        }
    }

    fn into_core(self) -> floodway_core::QueueTotals {
        let QueueTotals {
            enqueued,
            deduplicated,
            rejected_full,
            rejected_overloaded,
            throttled_rate,
            throttled_concurrency,
            effects_recorded,
            reserved,
            completed,
            retried,
            released,
            leases_expired,
            dead,
            dead_dropped,
            replayed,
            cancelled,
            stale_refused,
        } = self;
        floodway_core::QueueTotals {
            enqueued,
            deduplicated,
            rejected_full,
            rejected_overloaded,
            throttled_rate,
            throttled_concurrency,
            effects_recorded,
            reserved,
            completed,
            retried,
            released,
            leases_expired,
            dead: dead.into_core(),
            dead_dropped,
            replayed,
            cancelled,
            stale_refused,
        }
    }
}

/// A count per dead-letter reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadCounts {
    /// Dead after the last allowed attempt.
    pub max_attempts: u64,
    /// Dead because their time to live passed.
    pub expired: u64,
    /// Dead because the queue overflowed.
    pub overflow: u64,
    /// Dead because the handler failed them permanently.
    pub permanent_failure: u64,
}

impl DeadCounts {
    fn from_core(counts: &floodway_core::DeadCounts) -> Self {
        let floodway_core::DeadCounts {
            max_attempts,
            expired,
            overflow,
            permanent_failure,
        } = *counts;
        DeadCounts {
            max_attempts,
            expired,
            overflow,
            permanent_failure,
        }
    }

    fn into_core(self) -> floodway_core::DeadCounts {
        let DeadCounts {
            max_attempts,
            expired,
            overflow,
            permanent_failure,
        } = self;
        floodway_core::DeadCounts {
            max_attempts,
            expired,
            overflow,
            permanent_failure,
        }
    }
}

/// Which dead letters a replay or purge acts on: the tasks named by `ids`, or up to `limit`
/// of the oldest matching `queue` and `reason` (each optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadSelector {
    /// These tasks; ids that are not dead letters are skipped. Exclusive with the other
    /// fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = nullable_task_ids_schema)]
    pub ids: Option<Vec<TaskId>>,
    /// Only this queue's dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = nullable_queue_name_schema)]
    pub queue: Option<QueueName>,
    /// Only those with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeadReason>,
    /// Most to act on, 1 to 1,000; 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// How many a selector without `ids` acts on when it gives no `limit`.
pub const DEAD_SELECTOR_LIMIT_DEFAULT: usize = 100;

impl DeadSelector {
    /// The core selector; the broker checks its size.
    pub fn into_core(self) -> Result<floodway_core::DeadSelector, WireError> {
        match self {
            DeadSelector {
                ids: Some(ids),
                queue: None,
                reason: None,
                limit: None,
            } => Ok(floodway_core::DeadSelector::Ids(ids)),
            DeadSelector { ids: Some(_), .. } => Err(WireError::new(
                "ids",
                "give ids, or queue/reason/limit, not both",
            )),
            DeadSelector {
                ids: None,
                queue,
                reason,
                limit,
            } => Ok(floodway_core::DeadSelector::Matching {
                queue,
                reason: reason.map(Into::into),
                limit: limit.unwrap_or(DEAD_SELECTOR_LIMIT_DEFAULT),
            }),
        }
    }

    /// The wire form of `selector`.
    pub fn from_core(selector: &floodway_core::DeadSelector) -> Self {
        match selector {
            floodway_core::DeadSelector::Ids(ids) => DeadSelector {
                ids: Some(ids.clone()),
                ..DeadSelector::default()
            },
            floodway_core::DeadSelector::Matching {
                queue,
                reason,
                limit,
            } => DeadSelector {
                ids: None,
                queue: queue.clone(),
                reason: reason.map(Into::into),
                limit: Some(*limit),
            },
        }
    }
}

/// How many tasks a call acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountResponse {
    /// How many tasks moved, or were deleted.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_config_fills_in_the_defaults() {
        let config: QueueConfig =
            serde_json::from_str(r#"{"length_max": 10, "idempotency_window": "5m"}"#).unwrap();
        let core = config.into_core();
        assert_eq!(core.length_max, Some(10));
        assert_eq!(core.idempotency_window, Duration::from_secs(300));
        assert_eq!(core.retry, floodway_core::RetryPolicy::default());
    }

    #[test]
    fn backpressure_settings_round_trip_exactly() {
        let core = floodway_core::QueueConfig {
            rate_limit: Some(floodway_core::RateLimit {
                rate: 0.5,
                burst: 3,
            }),
            key_rate_limit: Some(floodway_core::RateLimit {
                rate: 100.0,
                burst: 10,
            }),
            concurrency_max: Some(8),
            key_concurrency_max: Some(2),
            watermarks: Some(floodway_core::Watermarks { high: 100, low: 10 }),
            ttl: Some(Duration::from_secs(90)),
            ..floodway_core::QueueConfig::default()
        };
        let json = serde_json::to_string(&QueueConfig::from_core(&core)).unwrap();
        assert!(
            json.contains(r#""watermarks":{"high":100,"low":10}"#),
            "{json}"
        );
        assert!(json.contains(r#""ttl":"90s""#), "{json}");
        let back: QueueConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_core(), core);
    }

    #[test]
    fn start_latency_is_per_bucket_with_bounds_in_seconds_and_round_trips() {
        let mut core = floodway_core::LatencyHistogram::default();
        core.record(Duration::from_millis(700));
        core.record(Duration::from_secs(3));
        let wire = StartLatency::from_core(&core);
        let json = serde_json::to_value(&wire).unwrap();
        assert_eq!(json["bounds_seconds"][0], 0.001);
        assert_eq!(json["bounds_seconds"][16], 3600.0);
        assert_eq!(json["counts"].as_array().unwrap().len(), 18);
        assert_eq!(json["counts"][8], 1);
        assert_eq!(json["counts"][10], 1);
        assert_eq!(json["sum_seconds"], 3.7);
        let back: StartLatency = serde_json::from_value(json).unwrap();
        assert_eq!(back.into_core().unwrap(), core);
        let other = StartLatency {
            bounds_seconds: vec![1.0],
            counts: vec![0, 0],
            sum_seconds: 0.0,
        };
        assert_eq!(
            other.into_core().unwrap_err().field,
            "start_latency.bounds_seconds"
        );
    }

    #[test]
    fn selectors_are_ids_or_conditions() {
        let ids: DeadSelector = serde_json::from_str(r#"{"ids": []}"#).unwrap();
        assert_eq!(
            ids.into_core().unwrap(),
            floodway_core::DeadSelector::Ids(vec![])
        );
        let both: DeadSelector = serde_json::from_str(r#"{"ids": [], "limit": 3}"#).unwrap();
        assert_eq!(both.into_core().unwrap_err().field, "ids");
        let matching: DeadSelector = serde_json::from_str(r#"{"reason": "expired"}"#).unwrap();
        assert_eq!(
            matching.into_core().unwrap(),
            floodway_core::DeadSelector::Matching {
                queue: None,
                reason: Some(floodway_core::DeadReason::Expired),
                limit: DEAD_SELECTOR_LIMIT_DEFAULT
            }
        );
    }
}
