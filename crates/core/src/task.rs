//! Tasks: what a producer submits ([`NewTask`]) and what a broker stores ([`Task`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::broker::RetryDecision;
use crate::error::BrokerError;
use crate::id::TaskId;
use crate::lease::Fence;
use crate::limits;
use crate::name::{QueueName, check_kind};
use crate::queue::QueueConfig;
use crate::retry::RetryPolicy;
use crate::state::{DeadReason, TaskState};
use crate::time::Timestamp;

/// Task headers: small string pairs that travel with the payload (trace context, content type,
/// payload schema version). Ordered, so stored records are deterministic.
pub type Headers = BTreeMap<String, String>;

/// Side effects a task's handler recorded as done: effect key → result. Ordered, so stored
/// records are deterministic. At most [`limits::EFFECTS_MAX`] per task.
pub type Effects = BTreeMap<String, String>;

/// The header that names the payload's content type. Payloads are JSON unless it says
/// otherwise.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// The default task priority: the middle of 0 ..= [`limits::PRIORITY_MAX`].
pub const PRIORITY_DEFAULT: u8 = 5;

/// A task as a producer submits it. Build it with [`NewTask::json`] or [`NewTask::new`] and the
/// builder methods; the broker validates it on enqueue and names any field that is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    /// The handler's name.
    pub kind: String,
    /// The task's input, usually JSON.
    pub payload: Vec<u8>,
    /// Small string pairs carried with the task.
    pub headers: Headers,
    /// 0 ..= [`limits::PRIORITY_MAX`]; higher priorities are reserved first.
    pub priority: u8,
    /// Run no earlier than this long after enqueue. Exclusive with `run_at`.
    pub delay: Option<Duration>,
    /// Run no earlier than this time (on the broker's clock). Exclusive with `delay`.
    pub run_at: Option<Timestamp>,
    /// Dead-letter the task (reason `expired`) if it is still waiting (scheduled, ready or
    /// retrying) this long after enqueue. A running attempt is not interrupted.
    pub ttl: Option<Duration>,
    /// The retry policy; the queue's when `None`.
    pub retry: Option<RetryPolicy>,
    /// Attempts allowed in all, overriding only that field of the retry policy (the task's or
    /// the queue's), so the backoff stays as configured.
    pub max_attempts: Option<u32>,
    /// How long one attempt may run before the worker abandons it; the worker's per-kind
    /// default when `None`.
    pub timeout: Option<Duration>,
    /// Enqueues with the same key within the queue's idempotency window create one task.
    pub idempotency_key: Option<String>,
    /// Tasks with the same partition key run one at a time, in enqueue order.
    pub partition_key: Option<String>,
    /// The key the queue's per-key rate and concurrency limits count this task under (a
    /// tenant, a downstream host); `None` counts it only under the queue's own limits.
    pub limit_key: Option<String>,
}

impl NewTask {
    /// A task of `kind` with raw `payload` bytes and default options.
    pub fn new(kind: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        NewTask {
            kind: kind.into(),
            payload: payload.into(),
            headers: Headers::new(),
            priority: PRIORITY_DEFAULT,
            delay: None,
            run_at: None,
            ttl: None,
            retry: None,
            max_attempts: None,
            timeout: None,
            idempotency_key: None,
            partition_key: None,
            limit_key: None,
        }
    }

    /// A task of `kind` whose payload is `value` as JSON.
    pub fn json<T: Serialize + ?Sized>(
        kind: impl Into<String>,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(NewTask::new(kind, serde_json::to_vec(value)?))
    }

    /// Sets the priority (0 ..= 9, higher first).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Delays the task's first run by `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Schedules the task's first run at `run_at`.
    pub fn run_at(mut self, run_at: Timestamp) -> Self {
        self.run_at = Some(run_at);
        self
    }

    /// Sets the time to live: dead-letter the task if it is still waiting `ttl` after enqueue.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Allows `max_attempts` attempts in all, keeping the backoff of the retry policy in force.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the partition key.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Sets the limit key: the queue's per-key rate and concurrency limits count the task under
    /// it.
    pub fn limit_key(mut self, key: impl Into<String>) -> Self {
        self.limit_key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Checks every field against the limits; the error names the first bad field.
    pub fn validate(&self) -> Result<(), BrokerError> {
        check_kind(&self.kind)?;
        if self.payload.len() > limits::PAYLOAD_BYTES_MAX {
            return Err(BrokerError::PayloadTooLarge {
                size: self.payload.len(),
                max: limits::PAYLOAD_BYTES_MAX,
            });
        }
        if self.headers.len() > limits::HEADERS_MAX {
            return Err(BrokerError::invalid(
                "headers",
                format!(
                    "{} headers; the limit is {}",
                    self.headers.len(),
                    limits::HEADERS_MAX
                ),
            ));
        }
        for (name, value) in &self.headers {
            if name.is_empty() || name.len() > limits::HEADER_LEN_MAX {
                return Err(BrokerError::invalid(
                    "headers",
                    format!(
                        "a header name must be 1 to {} bytes",
                        limits::HEADER_LEN_MAX
                    ),
                ));
            }
            if value.len() > limits::HEADER_LEN_MAX {
                return Err(BrokerError::invalid(
                    "headers",
                    format!(
                        "header {name:?} is longer than {} bytes",
                        limits::HEADER_LEN_MAX
                    ),
                ));
            }
        }
        if self.priority > limits::PRIORITY_MAX {
            return Err(BrokerError::invalid(
                "priority",
                format!(
                    "{} is above the maximum of {}",
                    self.priority,
                    limits::PRIORITY_MAX
                ),
            ));
        }
        if self.delay.is_some() && self.run_at.is_some() {
            return Err(BrokerError::invalid(
                "run_at",
                "give either a delay or a run-at time, not both",
            ));
        }
        for (field, duration) in [("delay", self.delay), ("ttl", self.ttl)] {
            if duration.is_some_and(|d| d > limits::SCHEDULE_HORIZON_MAX) {
                return Err(BrokerError::invalid(field, "must not exceed one year"));
            }
        }
        if self.ttl == Some(Duration::ZERO) {
            return Err(BrokerError::invalid("ttl", "must be positive"));
        }
        if let Some(timeout) = self.timeout
            && (timeout.is_zero() || timeout > limits::LEASE_DURATION_MAX)
        {
            return Err(BrokerError::invalid(
                "timeout",
                "must be positive and at most one hour",
            ));
        }
        if let Some(retry) = &self.retry {
            retry.validate()?;
        }
        if let Some(max_attempts) = self.max_attempts
            && !(1..=limits::ATTEMPTS_MAX).contains(&max_attempts)
        {
            return Err(BrokerError::invalid(
                "max_attempts",
                format!("must be between 1 and {}", limits::ATTEMPTS_MAX),
            ));
        }
        for (field, key) in [
            ("idempotency_key", &self.idempotency_key),
            ("partition_key", &self.partition_key),
            ("limit_key", &self.limit_key),
        ] {
            if let Some(key) = key
                && (key.is_empty() || key.len() > limits::KEY_LEN_MAX)
            {
                return Err(BrokerError::invalid(
                    field,
                    format!("must be 1 to {} bytes", limits::KEY_LEN_MAX),
                ));
            }
        }
        Ok(())
    }
}

/// A task as a broker stores it: what the producer submitted plus where it is in its life.
///
/// Brokers create it with [`Task::from_new`] and change `state` only through
/// [`crate::transition`].
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Time-ordered identity, assigned by the broker at enqueue.
    pub id: TaskId,
    /// The queue it was enqueued to.
    pub queue: QueueName,
    /// The handler's name.
    pub kind: String,
    /// The task's input.
    pub payload: Vec<u8>,
    /// Small string pairs carried with the task.
    pub headers: Headers,
    /// 0 ..= 9, higher reserved first.
    pub priority: u8,
    /// Where the task is in its life.
    pub state: TaskState,
    /// Attempts started so far: reserve adds one, release takes it back.
    pub attempt: u32,
    /// How failures are retried.
    pub retry: RetryPolicy,
    /// Per-attempt timeout, if the producer set one.
    pub timeout: Option<Duration>,
    /// When the task may next run (meaningful while scheduled or retrying).
    pub run_at: Timestamp,
    /// When the task is dead-lettered if it has not started.
    pub expires_at: Option<Timestamp>,
    /// The idempotency key it was enqueued with.
    pub idempotency_key: Option<String>,
    /// Its partition key: tasks sharing one run one at a time, in order.
    pub partition_key: Option<String>,
    /// Its limit key: the queue's per-key rate and concurrency limits count it under this key.
    pub limit_key: Option<String>,
    /// Side effects its handler recorded as done, each key with its result (see
    /// `Broker::record_effects`). They survive retries, lease expiry and replay, so an attempt
    /// that finds a key here skips that effect.
    pub effects: Effects,
    /// When the broker accepted it.
    pub created_at: Timestamp,
    /// The fence of the latest reservation; 0 if never reserved.
    pub fence: Fence,
    /// While active: when the current lease expires. After the broker took the task back
    /// because the lease expired: when that was, until the task is reserved again. Cleared
    /// when the holder acks, fails or releases.
    pub lease_expires_at: Option<Timestamp>,
    /// While active: the worker holding the lease, if it named itself.
    pub worker: Option<String>,
    /// When the task reached a finished state (completed, dead, cancelled).
    pub finished_at: Option<Timestamp>,
    /// The error of the latest failed attempt.
    pub last_error: Option<String>,
    /// Why it is dead, while it is.
    pub dead_reason: Option<DeadReason>,
}

impl Task {
    /// The stored task for a validated `new` task, accepted at `now` into `queue`.
    pub fn from_new(
        new: NewTask,
        id: TaskId,
        queue: QueueName,
        config: &QueueConfig,
        now: Timestamp,
    ) -> Task {
        let run_at = match (new.run_at, new.delay) {
            (Some(at), _) => at,
            (None, Some(delay)) => now.saturating_add(delay),
            (None, None) => now,
        };
        let retry = new.retry.unwrap_or_else(|| config.retry.clone());
        let state = if run_at > now {
            TaskState::Scheduled
        } else {
            TaskState::Ready
        };
        Task {
            id,
            queue,
            kind: new.kind,
            payload: new.payload,
            headers: new.headers,
            priority: new.priority,
            state,
            attempt: 0,
            retry: RetryPolicy {
                max_attempts: new.max_attempts.unwrap_or(retry.max_attempts),
                ..retry
            },
            timeout: new.timeout,
            run_at: run_at.max(now),
            expires_at: new.ttl.or(config.ttl).map(|ttl| now.saturating_add(ttl)),
            idempotency_key: new.idempotency_key,
            partition_key: new.partition_key,
            limit_key: new.limit_key,
            effects: Effects::new(),
            created_at: now,
            fence: Fence(0),
            lease_expires_at: None,
            worker: None,
            finished_at: None,
            last_error: None,
            dead_reason: None,
        }
    }

    /// Decodes the JSON payload.
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// True when the task has used all its attempts.
    pub fn attempts_exhausted(&self) -> bool {
        self.attempt >= self.retry.max_attempts
    }

    /// What a failed attempt leads to: `Ok(run_at)` to retry at that time, or `Err(reason)`
    /// to dead-letter. `random` in `[0, 1)` draws the jitter.
    pub fn failure_disposition(
        &self,
        decision: RetryDecision,
        now: Timestamp,
        random: f64,
    ) -> Result<Timestamp, DeadReason> {
        if decision == RetryDecision::Never {
            return Err(DeadReason::PermanentFailure);
        }
        if self.attempts_exhausted() {
            return Err(DeadReason::MaxAttempts);
        }
        let wait = match decision {
            RetryDecision::After(wait) => wait.min(limits::SCHEDULE_HORIZON_MAX),
            _ => self.retry.backoff(self.attempt, random),
        };
        Ok(now.saturating_add(wait))
    }
}

/// Cuts an error message to [`limits::ERROR_LEN_MAX`] bytes at a character boundary.
pub fn truncate_error(message: &str) -> String {
    if message.len() <= limits::ERROR_LEN_MAX {
        return message.to_owned();
    }
    let mut end = limits::ERROR_LEN_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdGenerator;

    fn task(new: NewTask, now: Timestamp) -> Task {
        let id = IdGenerator::default().next(now, 1);
        Task::from_new(
            new,
            id,
            QueueName::new("q").unwrap(),
            &QueueConfig::default(),
            now,
        )
    }

    #[test]
    fn delayed_task_starts_scheduled() {
        let now = Timestamp::from_millis(10_000);
        let t = task(NewTask::new("k", "{}").delay(Duration::from_secs(5)), now);
        assert_eq!(t.state, TaskState::Scheduled);
        assert_eq!(t.run_at, Timestamp::from_millis(15_000));
        let t = task(
            NewTask::new("k", "{}").run_at(Timestamp::from_millis(9_000)),
            now,
        );
        assert_eq!(t.state, TaskState::Ready);
        assert_eq!(t.run_at, now);
    }

    #[test]
    fn queue_retry_policy_applies_unless_the_task_brings_one() {
        let now = Timestamp::from_millis(1);
        assert_eq!(
            task(NewTask::new("k", ""), now).retry,
            RetryPolicy::default()
        );
        let own = RetryPolicy {
            backoff_initial: Duration::from_millis(7),
            ..RetryPolicy::default()
        };
        assert_eq!(
            task(NewTask::new("k", "").retry(own.clone()), now).retry,
            own
        );
    }

    #[test]
    fn max_attempts_overrides_only_the_attempt_count() {
        let now = Timestamp::from_millis(1);
        let t = task(NewTask::new("k", "").max_attempts(3), now);
        assert_eq!(
            t.retry,
            RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            }
        );
        let own = RetryPolicy {
            backoff_initial: Duration::from_millis(7),
            ..RetryPolicy::default()
        };
        let t = task(NewTask::new("k", "").retry(own).max_attempts(2), now);
        assert_eq!(
            (t.retry.max_attempts, t.retry.backoff_initial),
            (2, Duration::from_millis(7))
        );
    }

    #[test]
    fn validation_names_each_bad_field() {
        let cases: Vec<(NewTask, &str)> = vec![
            (NewTask::new("", ""), "kind"),
            (
                NewTask::new("k", vec![0; limits::PAYLOAD_BYTES_MAX + 1]),
                "payload",
            ),
            (NewTask::new("k", "").priority(10), "priority"),
            (
                NewTask::new("k", "")
                    .delay(Duration::from_secs(1))
                    .run_at(Timestamp::ZERO),
                "run_at",
            ),
            (NewTask::new("k", "").ttl(Duration::ZERO), "ttl"),
            (NewTask::new("k", "").idempotency_key(""), "idempotency_key"),
            (
                NewTask::new("k", "").partition_key("x".repeat(300)),
                "partition_key",
            ),
            (NewTask::new("k", "").max_attempts(0), "max_attempts"),
            (NewTask::new("k", "").timeout(Duration::ZERO), "timeout"),
        ];
        for (task, field) in cases {
            let err = task.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        NewTask::json("k", &serde_json::json!({"a": 1}))
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn failure_disposition_retries_until_attempts_run_out() {
        let now = Timestamp::from_millis(1000);
        let mut t = task(NewTask::new("k", "").max_attempts(2), now);
        t.attempt = 1;
        assert!(
            t.failure_disposition(RetryDecision::Backoff, now, 0.5)
                .is_ok()
        );
        assert_eq!(
            t.failure_disposition(RetryDecision::After(Duration::from_secs(3)), now, 0.5),
            Ok(Timestamp::from_millis(4000))
        );
        assert_eq!(
            t.failure_disposition(RetryDecision::Never, now, 0.5),
            Err(DeadReason::PermanentFailure)
        );
        t.attempt = 2;
        assert_eq!(
            t.failure_disposition(RetryDecision::Backoff, now, 0.5),
            Err(DeadReason::MaxAttempts)
        );
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let long = "é".repeat(limits::ERROR_LEN_MAX);
        let cut = truncate_error(&long);
        assert!(cut.len() <= limits::ERROR_LEN_MAX);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
