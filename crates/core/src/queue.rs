//! Queues: their configuration ([`QueueConfig`]) and what a broker reports about them
//! ([`QueueStats`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::latency::LatencyHistogram;
use crate::limits;
use crate::name::QueueName;
use crate::retry::RetryPolicy;
use crate::state::{DeadReason, TaskState};
pub use floodway_backpressure::{RateLimit, Watermarks};

/// How a queue behaves. A queue is created with the default configuration the first time a task
/// is enqueued to it, or with an explicit one by `Broker::configure`.
///
/// Fields are public and have serde defaults, so a partial JSON or TOML object fills in the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Most waiting tasks (scheduled, ready, retrying) the queue holds; `None` for no limit
    /// below [`limits::QUEUE_LENGTH_MAX`]. Enqueue checks it; retries of tasks already in the
    /// queue are never refused.
    pub length_max: Option<u64>,
    /// What enqueue does when the queue is at `length_max`.
    pub overflow: OverflowPolicy,
    /// The retry policy of tasks that do not bring their own.
    pub retry: RetryPolicy,
    /// How long an idempotency key deduplicates enqueues after its first use.
    #[serde(with = "crate::duration::serde")]
    pub idempotency_window: Duration,
    /// How many completed tasks the queue keeps for inspection; older ones are deleted.
    pub completed_retain: u32,
    /// How many dead letters the queue keeps; beyond it the oldest is deleted (and counted in
    /// [`QueueTotals::dead_dropped`]).
    pub dead_retain: u64,
    /// Whether workers may reserve from the queue. Enqueue works while paused.
    pub paused: bool,
    /// Reservations per second from the queue over all workers and processes, enforced by the
    /// broker with one token bucket; `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Reservations per second of the tasks sharing one limit key (a tenant, a downstream
    /// host), each key with its own token bucket; `None` for no limit.
    pub key_rate_limit: Option<RateLimit>,
    /// Most tasks of the queue leased at once over all workers; `None` for no limit. A slot is
    /// a lease, so a crashed worker's slots come back when its leases expire.
    pub concurrency_max: Option<u32>,
    /// Most tasks sharing one limit key leased at once over all workers; `None` for no limit.
    pub key_concurrency_max: Option<u32>,
    /// Queue-depth watermarks: above `high` waiting tasks enqueue is refused with
    /// [`BrokerError::Overloaded`] until the queue is back at or below `low`.
    pub watermarks: Option<Watermarks>,
    /// The time to live of tasks enqueued without one: a task still waiting this long after
    /// enqueue is dead-lettered (reason `expired`). `None`: tasks wait for ever.
    #[serde(with = "crate::duration::serde::option")]
    pub ttl: Option<Duration>,
}

/// What enqueue does when a queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Refuse the whole batch with [`BrokerError::QueueFull`] (backpressure to the producer).
    Reject,
    /// Accept the batch and move the oldest waiting tasks to the dead letters
    /// (reason [`DeadReason::Overflow`]) to make room.
    DeadLetterOldest,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            length_max: None,
            overflow: OverflowPolicy::Reject,
            retry: RetryPolicy::default(),
            idempotency_window: Duration::from_secs(3600),
            completed_retain: 1000,
            dead_retain: 100_000,
            paused: false,
            rate_limit: None,
            key_rate_limit: None,
            concurrency_max: None,
            key_concurrency_max: None,
            watermarks: None,
            ttl: None,
        }
    }
}

impl QueueConfig {
    /// Checks the configuration against the limits; the error names the offending field.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if let Some(max) = self.length_max
            && !(1..=limits::QUEUE_LENGTH_MAX).contains(&max)
        {
            return Err(BrokerError::invalid(
                "length_max",
                format!("must be between 1 and {}", limits::QUEUE_LENGTH_MAX),
            ));
        }
        self.retry.validate()?;
        if self.idempotency_window > limits::IDEMPOTENCY_WINDOW_MAX {
            return Err(BrokerError::invalid(
                "idempotency_window",
                "must not exceed 30 days",
            ));
        }
        if self.completed_retain > limits::COMPLETED_RETAIN_MAX {
            return Err(BrokerError::invalid(
                "completed_retain",
                format!("must not exceed {}", limits::COMPLETED_RETAIN_MAX),
            ));
        }
        if self.dead_retain > limits::DEAD_RETAIN_MAX {
            return Err(BrokerError::invalid(
                "dead_retain",
                format!("must not exceed {}", limits::DEAD_RETAIN_MAX),
            ));
        }
        for (field, limit) in [
            ("rate_limit", &self.rate_limit),
            ("key_rate_limit", &self.key_rate_limit),
        ] {
            if let Some(limit) = limit {
                limit
                    .validate()
                    .map_err(|e| BrokerError::invalid(field, e.to_string()))?;
            }
        }
        for (field, max) in [
            ("concurrency_max", self.concurrency_max),
            ("key_concurrency_max", self.key_concurrency_max),
        ] {
            if max.is_some_and(|m| m == 0 || m > limits::CONCURRENCY_MAX) {
                return Err(BrokerError::invalid(
                    field,
                    format!("must be between 1 and {}", limits::CONCURRENCY_MAX),
                ));
            }
        }
        if let Some(marks) = &self.watermarks {
            marks
                .validate()
                .map_err(|e| BrokerError::invalid("watermarks", e.to_string()))?;
            if marks.high > limits::QUEUE_LENGTH_MAX {
                return Err(BrokerError::invalid(
                    "watermarks",
                    format!("high must not exceed {}", limits::QUEUE_LENGTH_MAX),
                ));
            }
        }
        if let Some(ttl) = self.ttl
            && (ttl.is_zero() || ttl > limits::SCHEDULE_HORIZON_MAX)
        {
            return Err(BrokerError::invalid(
                "ttl",
                "must be positive and at most one year",
            ));
        }
        Ok(())
    }

    /// True when the queue limits reservations by rate or concurrency, per queue or per key.
    pub fn limits_reservations(&self) -> bool {
        self.rate_limit.is_some()
            || self.key_rate_limit.is_some()
            || self.concurrency_max.is_some()
            || self.key_concurrency_max.is_some()
    }

    /// The length limit in force: the configured one or the global ceiling.
    pub fn length_limit(&self) -> u64 {
        self.length_max.unwrap_or(limits::QUEUE_LENGTH_MAX)
    }
}

/// A snapshot of one queue: its configuration, tasks per state and running totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: QueueName,
    /// Its configuration.
    pub config: QueueConfig,
    /// Tasks in each state now. Completed and dead counts are those retained.
    pub counts: StateCounts,
    /// Running totals since the queue was created.
    pub totals: QueueTotals,
    /// How long the ready task with the earliest `run_at` has waited (including tasks held back
    /// by their partition key); `None` when none is ready.
    #[serde(with = "crate::duration::serde::option")]
    pub oldest_ready_age: Option<Duration>,
    /// True while the queue is above its high watermark, or crossed it and has not yet come
    /// down to the low one: enqueue is refused with [`BrokerError::Overloaded`].
    pub refusing: bool,
    /// How long the tasks reserved from the queue had waited since they became due, recorded
    /// by the broker at each reservation. It only grows, like the totals, but a broker that
    /// keeps it in memory (the embedded one) starts it empty again after a restart.
    pub start_latency: LatencyHistogram,
}

impl QueueStats {
    /// Waiting tasks: scheduled, ready and retrying. This is what `length_max` bounds.
    pub fn length(&self) -> u64 {
        self.counts.waiting()
    }
}

/// Tasks per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The count for `state`.
    pub fn get(&self, state: TaskState) -> u64 {
        match state {
            TaskState::Scheduled => self.scheduled,
            TaskState::Ready => self.ready,
            TaskState::Active => self.active,
            TaskState::Retrying => self.retrying,
            TaskState::Completed => self.completed,
            TaskState::Dead => self.dead,
            TaskState::Cancelled => self.cancelled,
        }
    }

    /// A mutable reference to the count for `state`.
    pub fn get_mut(&mut self, state: TaskState) -> &mut u64 {
        match state {
            TaskState::Scheduled => &mut self.scheduled,
            TaskState::Ready => &mut self.ready,
            TaskState::Active => &mut self.active,
            TaskState::Retrying => &mut self.retrying,
            TaskState::Completed => &mut self.completed,
            TaskState::Dead => &mut self.dead,
            TaskState::Cancelled => &mut self.cancelled,
        }
    }

    /// Scheduled, ready and retrying tasks together.
    pub fn waiting(&self) -> u64 {
        self.scheduled + self.ready + self.retrying
    }
}

/// Running totals of what happened in a queue. They only grow (a purge does not lower them) and
/// survive restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTotals {
    /// Tasks accepted by enqueue (duplicates excluded).
    pub enqueued: u64,
    /// Tasks answered with an existing task's id because of an idempotency key.
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
    /// Side-effect results recorded by tasks' handlers.
    pub effects_recorded: u64,
    /// Reservations handed out.
    pub reserved: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Failed attempts that were scheduled for retry.
    pub retried: u64,
    /// Tasks given back unrun by their worker.
    pub released: u64,
    /// Leases that expired before their holder finished.
    pub leases_expired: u64,
    /// Tasks moved to the dead letters, per [`DeadReason`].
    pub dead: DeadCounts,
    /// Dead letters deleted because the queue held `dead_retain` already.
    pub dead_dropped: u64,
    /// Dead letters replayed.
    pub replayed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Ack, fail, extend or release items refused for a stale or expired lease.
    pub stale_refused: u64,
}

/// A count per [`DeadReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A mutable reference to the count for `reason`.
    pub fn get_mut(&mut self, reason: DeadReason) -> &mut u64 {
        match reason {
            DeadReason::MaxAttempts => &mut self.max_attempts,
            DeadReason::Expired => &mut self.expired,
            DeadReason::Overflow => &mut self.overflow,
            DeadReason::PermanentFailure => &mut self.permanent_failure,
        }
    }

    /// The count for `reason`.
    pub fn get(&self, reason: DeadReason) -> u64 {
        match reason {
            DeadReason::MaxAttempts => self.max_attempts,
            DeadReason::Expired => self.expired,
            DeadReason::Overflow => self.overflow,
            DeadReason::PermanentFailure => self.permanent_failure,
        }
    }

    /// All reasons together.
    pub fn total(&self) -> u64 {
        DeadReason::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_config_fills_in_defaults() {
        let config: QueueConfig =
            serde_json::from_str(r#"{"length_max": 100, "overflow": "dead_letter_oldest"}"#)
                .unwrap();
        assert_eq!(config.length_max, Some(100));
        assert_eq!(config.overflow, OverflowPolicy::DeadLetterOldest);
        assert_eq!(config.retry, RetryPolicy::default());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<QueueConfig>(r#"{"lenght_max": 100}"#).unwrap_err();
        assert!(err.to_string().contains("lenght_max"));
    }

    #[test]
    fn validation_names_the_field() {
        let config = QueueConfig {
            length_max: Some(0),
            ..QueueConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("length_max")
        );
        QueueConfig::default().validate().unwrap();
    }
}
