//! Tasks on the wire: what a producer submits ([`TaskSpec`]), what enqueue answers, and a
//! stored task as responses show it ([`Task`]).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use floodway_core::task::PRIORITY_DEFAULT;
use floodway_core::{Fence, QueueName, TaskId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::{
    WireDuration, WireError, nullable_timestamp_schema, queue_name_schema, task_id_schema,
    task_ids_schema, timestamp_schema,
};

/// One task as a producer submits it. Only `kind` is required.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The handler's name: 1 to 128 ASCII letters, digits and `_ - . :`.
    #[schema(example = "send_email", pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    pub kind: String,
    /// The task's input as JSON, kept byte for byte. Absent (and not `payload_base64`): `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Box<RawValue>>,
    /// The task's input as base64 bytes, for payloads that are not JSON. Exclusive with
    /// `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Small string pairs carried with the task (trace context, content type, schema version).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// 0 to 9, higher reserved first; 5 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u8>,
    /// Run no earlier than this long after enqueue. Exclusive with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<WireDuration>,
    /// Run no earlier than this time (milliseconds since the Unix epoch). Exclusive with
    /// `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = nullable_timestamp_schema)]
    pub run_at: Option<u64>,
    /// Dead-letter the task (reason `expired`) if it is still waiting this long after enqueue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<WireDuration>,
    /// The retry policy; the queue's when absent. Missing fields take the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Attempts allowed in all (1 to 1,000), overriding only that field of the retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    /// How long one attempt may run; the worker's default for the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<WireDuration>,
    /// Enqueues with the same key within the queue's idempotency window create one task; a
    /// duplicate is answered with the first task's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
    /// Tasks with the same partition key run one at a time, in enqueue order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub partition_key: Option<String>,
    /// The key the queue's per-key limits (`key_rate_limit`, `key_concurrency_max`) count
    /// this task under: a tenant, a downstream host. Absent: only the queue's own limits
    /// apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub limit_key: Option<String>,
}

impl TaskSpec {
    /// The core task this spec describes. Only the payload is checked here; the broker
    /// validates every other field and names the one that is wrong.
    pub fn into_core(self) -> Result<floodway_core::NewTask, WireError> {
        let TaskSpec {
            kind,
            payload,
            payload_base64,
            headers,
            priority,
            delay,
            run_at,
            ttl,
            retry,
            max_attempts,
            timeout,
            idempotency_key,
            partition_key,
            limit_key,
        } = self;
        Ok(floodway_core::NewTask {
            kind,
            payload: decode_payload(payload, payload_base64)?,
            headers,
            priority: priority.unwrap_or(PRIORITY_DEFAULT),
            delay: delay.map(Into::into),
            run_at: run_at.map(Timestamp::from_millis),
            ttl: ttl.map(Into::into),
            retry: retry.map(RetryPolicy::into_core),
            max_attempts,
            timeout: timeout.map(Into::into),
            idempotency_key,
            partition_key,
            limit_key,
        })
    }

    /// The spec that describes `task` exactly (the client sends this).
    pub fn from_core(task: &floodway_core::NewTask) -> Self {
        let floodway_core::NewTask {
            kind,
            payload,
            headers,
            priority,
            delay,
            run_at,
            ttl,
            retry,
            max_attempts,
            timeout,
            idempotency_key,
            partition_key,
            limit_key,
        } = task;
        let (payload, payload_base64) = encode_payload(payload);
        TaskSpec {
            kind: kind.clone(),
            payload,
            payload_base64,
            headers: headers.clone(),
            priority: Some(*priority),
            delay: delay.map(Into::into),
            run_at: run_at.map(Timestamp::as_millis),
            ttl: ttl.map(Into::into),
            retry: retry.as_ref().map(RetryPolicy::from_core),
            max_attempts: *max_attempts,
            timeout: timeout.map(Into::into),
            idempotency_key: idempotency_key.clone(),
            partition_key: partition_key.clone(),
            limit_key: limit_key.clone(),
        }
    }
}

/// A batch of tasks for one enqueue call: all are enqueued, or none.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskBatch {
    /// The tasks, at most the server's batch limit (1,000 by default).
    #[schema(max_items = 1000)]
    pub tasks: Vec<TaskSpec>,
}

/// The body of an enqueue request: one task, or a batch of them. The OpenAPI document's name
/// for the two shapes; the server tells them apart by the `tasks` key and parses each strictly.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "describes a body for the document and for clients; the server never builds one"
)]
pub enum EnqueueRequest {
    /// A batch: `{"tasks": [...]}`.
    Batch(TaskBatch),
    /// One task.
    One(TaskSpec),
}

/// What enqueue answers: one entry per task submitted, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueResponse {
    /// One entry per task submitted, in order.
    pub tasks: Vec<EnqueuedTask>,
}

/// The answer for one submitted task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueuedTask {
    /// The task's id: new, or the first task's when `duplicate`.
    #[schema(schema_with = task_id_schema)]
    pub id: TaskId,
    /// True when an idempotency key matched a task enqueued within the window: nothing new
    /// was created.
    pub duplicate: bool,
}

/// A stored task, as responses show it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Time-ordered id (UUIDv7).
    #[schema(schema_with = task_id_schema)]
    pub id: TaskId,
    /// The queue it belongs to.
    #[schema(schema_with = queue_name_schema)]
    pub queue: QueueName,
    /// The handler's name.
    pub kind: String,
    /// The payload, when its bytes are a JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Box<RawValue>>,
    /// The payload as base64, when its bytes are not a JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Small string pairs carried with the task.
    pub headers: BTreeMap<String, String>,
    /// 0 to 9, higher reserved first.
    pub priority: u8,
    /// Where the task is in its life.
    pub state: TaskState,
    /// Attempts started so far (reserve adds one, release gives it back).
    pub attempt: u32,
    /// How failures are retried.
    pub retry: RetryPolicy,
    /// The per-attempt timeout the producer set, if any.
    pub timeout: Option<WireDuration>,
    /// When the task may next run.
    #[schema(schema_with = timestamp_schema)]
    pub run_at: u64,
    /// When the task is dead-lettered if it has not started.
    #[schema(schema_with = nullable_timestamp_schema)]
    pub expires_at: Option<u64>,
    /// The idempotency key it was enqueued with.
    pub idempotency_key: Option<String>,
    /// Its partition key.
    pub partition_key: Option<String>,
    /// Its limit key: the queue's per-key rate and concurrency limits count it under this key.
    pub limit_key: Option<String>,
    /// Side effects its handler recorded as done (`POST /v1/leases/effects`): effect key →
    /// result. They survive retries, lease expiry and replay, so an attempt that finds a key
    /// here skips that effect and uses the recorded result.
    pub effects: BTreeMap<String, String>,
    /// When the broker accepted it.
    #[schema(schema_with = timestamp_schema)]
    pub created_at: u64,
    /// The fence of the latest reservation; 0 if never reserved.
    pub fence: u64,
    /// While active, when the lease expires; after a lease expired, when that was.
    #[schema(schema_with = nullable_timestamp_schema)]
    pub lease_expires_at: Option<u64>,
    /// While active, the worker holding the lease, if it named itself.
    pub worker: Option<String>,
    /// When the task reached a finished state.
    #[schema(schema_with = nullable_timestamp_schema)]
    pub finished_at: Option<u64>,
    /// The error of the latest failed attempt.
    pub last_error: Option<String>,
    /// Why it is dead, while it is.
    pub dead_reason: Option<DeadReason>,
}

impl Task {
    /// The view of `task`.
    pub fn from_core(task: &floodway_core::Task) -> Self {
        let floodway_core::Task {
            id,
            queue,
            kind,
            payload,
            headers,
            priority,
            state,
            attempt,
            retry,
            timeout,
            run_at,
            expires_at,
            idempotency_key,
            partition_key,
            limit_key,
            effects,
            created_at,
            fence,
            lease_expires_at,
            worker,
            finished_at,
            last_error,
            dead_reason,
        } = task;
        let (payload, payload_base64) = encode_payload(payload);
        Task {
            id: *id,
            queue: queue.clone(),
            kind: kind.clone(),
            payload,
            payload_base64,
            headers: headers.clone(),
            priority: *priority,
            state: (*state).into(),
            attempt: *attempt,
            retry: RetryPolicy::from_core(retry),
            timeout: timeout.map(Into::into),
            run_at: run_at.as_millis(),
            expires_at: expires_at.map(Timestamp::as_millis),
            idempotency_key: idempotency_key.clone(),
            partition_key: partition_key.clone(),
            limit_key: limit_key.clone(),
            effects: effects.clone(),
            created_at: created_at.as_millis(),
            fence: fence.0,
            lease_expires_at: lease_expires_at.map(Timestamp::as_millis),
            worker: worker.clone(),
            finished_at: finished_at.map(Timestamp::as_millis),
            last_error: last_error.clone(),
            dead_reason: dead_reason.map(Into::into),
        }
    }

    /// The core task this view shows.
    pub fn into_core(self) -> Result<floodway_core::Task, WireError> {
        let Task {
            id,
            queue,
            kind,
            payload,
            payload_base64,
            headers,
            priority,
            state,
            attempt,
            retry,
            timeout,
            run_at,
            expires_at,
            idempotency_key,
            partition_key,
            limit_key,
            effects,
            created_at,
            fence,
            lease_expires_at,
            worker,
            finished_at,
            last_error,
            dead_reason,
        } = self;
        Ok(floodway_core::Task {
            id,
            queue,
            kind,
            payload: decode_payload(payload, payload_base64)?,
            headers,
            priority,
            state: state.into(),
            attempt,
            retry: retry.into_core(),
            timeout: timeout.map(Into::into),
            run_at: Timestamp::from_millis(run_at),
            expires_at: expires_at.map(Timestamp::from_millis),
            idempotency_key,
            partition_key,
            limit_key,
            effects,
            created_at: Timestamp::from_millis(created_at),
            fence: Fence(fence),
            lease_expires_at: lease_expires_at.map(Timestamp::from_millis),
            worker,
            finished_at: finished_at.map(Timestamp::from_millis),
            last_error,
            dead_reason: dead_reason.map(Into::into),
        })
    }
}

/// A page of tasks, in id order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskList {
    /// The tasks, oldest first.
    pub tasks: Vec<Task>,
    /// Pass as `after` for the next page; absent when this page was not full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = task_id_schema)]
    pub next_after: Option<TaskId>,
}

/// Cancel one task that has not started.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOne {
    /// The task.
    #[schema(schema_with = task_id_schema)]
    pub id: TaskId,
}

/// Cancel several tasks that have not started.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBatch {
    /// The tasks.
    #[schema(schema_with = task_ids_schema)]
    pub ids: Vec<TaskId>,
}

/// The wire form of a payload: `(payload, payload_base64)`, the first when the bytes are
/// exactly one JSON text, else the second.
pub fn encode_payload(bytes: &[u8]) -> (Option<Box<RawValue>>, Option<String>) {
    if let Ok(raw) = serde_json::from_slice::<&RawValue>(bytes)
        && raw.get().len() == bytes.len()
    {
        return (Some(raw.to_owned()), None);
    }
    (None, Some(BASE64.encode(bytes)))
}

/// The payload bytes from their wire form; JSON `null` when neither is given.
pub fn decode_payload(
    payload: Option<Box<RawValue>>,
    payload_base64: Option<String>,
) -> Result<Vec<u8>, WireError> {
    match (payload, payload_base64) {
        (Some(_), Some(_)) => Err(WireError::new(
            "payload_base64",
            "give payload (JSON) or payload_base64 (bytes), not both",
        )),
        (Some(json), None) => Ok(Box::<str>::from(json).into_boxed_bytes().into_vec()),
        (None, Some(text)) => BASE64.decode(text.as_bytes()).map_err(|error| {
            WireError::new("payload_base64", format!("is not valid base64: {error}"))
        }),
        (None, None) => Ok(b"null".to_vec()),
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its run-at time.
    Scheduled,
    /// Waiting for a worker.
    Ready,
    /// Leased to a worker.
    Active,
    /// Waiting out a retry backoff.
    Retrying,
    /// Done.
    Completed,
    /// In the dead letters.
    Dead,
    /// Withdrawn before it ran.
    Cancelled,
}

impl From<floodway_core::TaskState> for TaskState {
    fn from(state: floodway_core::TaskState) -> Self {
        use floodway_core::TaskState as S;
        match state {
            S::Scheduled => TaskState::Scheduled,
            S::Ready => TaskState::Ready,
            S::Active => TaskState::Active,
            S::Retrying => TaskState::Retrying,
            S::Completed => TaskState::Completed,
            S::Dead => TaskState::Dead,
            S::Cancelled => TaskState::Cancelled,
        }
    }
}

impl From<TaskState> for floodway_core::TaskState {
    fn from(state: TaskState) -> Self {
        use floodway_core::TaskState as S;
        match state {
            TaskState::Scheduled => S::Scheduled,
            TaskState::Ready => S::Ready,
            TaskState::Active => S::Active,
            TaskState::Retrying => S::Retrying,
            TaskState::Completed => S::Completed,
            TaskState::Dead => S::Dead,
            TaskState::Cancelled => S::Cancelled,
        }
    }
}

/// Why a task is in the dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Its last allowed attempt failed.
    MaxAttempts,
    /// Its time to live passed while it waited.
    Expired,
    /// The queue overflowed and dead-lettered its oldest tasks.
    Overflow,
    /// Its handler failed it permanently.
    PermanentFailure,
}

impl From<floodway_core::DeadReason> for DeadReason {
    fn from(reason: floodway_core::DeadReason) -> Self {
        use floodway_core::DeadReason as R;
        match reason {
            R::MaxAttempts => DeadReason::MaxAttempts,
            R::Expired => DeadReason::Expired,
            R::Overflow => DeadReason::Overflow,
            R::PermanentFailure => DeadReason::PermanentFailure,
        }
    }
}

impl From<DeadReason> for floodway_core::DeadReason {
    fn from(reason: DeadReason) -> Self {
        use floodway_core::DeadReason as R;
        match reason {
            DeadReason::MaxAttempts => R::MaxAttempts,
            DeadReason::Expired => R::Expired,
            DeadReason::Overflow => R::Overflow,
            DeadReason::PermanentFailure => R::PermanentFailure,
        }
    }
}

/// How a failed task is retried: up to `max_attempts` attempts in all, waiting an
/// exponentially growing, capped and (by default) fully jittered backoff between them.
/// Missing fields take the defaults shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts allowed in all, counting the first.
    #[schema(default = 10, minimum = 1, maximum = 1000)]
    pub max_attempts: u32,
    /// The backoff ceiling after the first failure.
    pub backoff_initial: WireDuration,
    /// The largest backoff ceiling.
    pub backoff_max: WireDuration,
    /// How much the ceiling grows after each failure (1 to 100).
    #[schema(default = 2.0, minimum = 1.0, maximum = 100.0)]
    pub backoff_multiplier: f64,
    /// Whether the wait is drawn at random below the ceiling.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::from_core(&floodway_core::RetryPolicy::default())
    }
}

impl RetryPolicy {
    /// The wire form of `policy`.
    pub fn from_core(policy: &floodway_core::RetryPolicy) -> Self {
        let floodway_core::RetryPolicy {
            max_attempts,
            backoff_initial,
            backoff_max,
            backoff_multiplier,
            jitter,
        } = policy;
        RetryPolicy {
            max_attempts: *max_attempts,
            backoff_initial: (*backoff_initial).into(),
            backoff_max: (*backoff_max).into(),
            backoff_multiplier: *backoff_multiplier,
            jitter: match jitter {
                floodway_core::Jitter::Full => Jitter::Full,
                floodway_core::Jitter::None => Jitter::None,
            },
        }
    }

    /// The core policy.
    pub fn into_core(self) -> floodway_core::RetryPolicy {
        let RetryPolicy {
            max_attempts,
            backoff_initial,
            backoff_max,
            backoff_multiplier,
            jitter,
        } = self;
        floodway_core::RetryPolicy {
            max_attempts,
            backoff_initial: backoff_initial.into(),
            backoff_max: backoff_max.into(),
            backoff_multiplier,
            jitter: match jitter {
                Jitter::Full => floodway_core::Jitter::Full,
                Jitter::None => floodway_core::Jitter::None,
            },
        }
    }
}

/// Whether a retry waits a random time below the backoff ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// A uniformly random wait between zero and the ceiling (the default).
    Full,
    /// Exactly the ceiling.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_payloads_travel_as_json_and_other_bytes_as_base64() {
        for bytes in [&b"{\"b\":1,  \"a\":[1, 2]}"[..], b"\"x\"", b"17", b"null"] {
            let (json, b64) = encode_payload(bytes);
            assert!(b64.is_none());
            assert_eq!(decode_payload(json, None).unwrap(), bytes);
        }
        for bytes in [&b""[..], b"xx", b" {}", b"{} ", b"\xff\x00", b"{\"a\":1}{}"] {
            let (json, b64) = encode_payload(bytes);
            assert!(json.is_none(), "{bytes:?}");
            assert_eq!(decode_payload(None, b64).unwrap(), bytes);
        }
        assert_eq!(decode_payload(None, None).unwrap(), b"null");
        assert_eq!(
            decode_payload(None, Some("@@".into())).unwrap_err().field,
            "payload_base64"
        );
    }

    #[test]
    fn a_spec_round_trips_a_core_task_exactly() {
        let task = floodway_core::NewTask::new("k", b"\x01\x02".to_vec())
            .priority(7)
            .delay(Duration::from_millis(1500))
            .ttl(Duration::from_secs(60))
            .retry(floodway_core::RetryPolicy::attempts(3))
            .max_attempts(2)
            .timeout(Duration::from_secs(9))
            .idempotency_key("i")
            .partition_key("p")
            .limit_key("tenant-1")
            .header("h", "v");
        let spec = TaskSpec::from_core(&task);
        let json = serde_json::to_string(&spec).unwrap();
        let back: TaskSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_core().unwrap(), task);
        let json_task =
            floodway_core::NewTask::new("k", "{\"a\": 1}").run_at(Timestamp::from_millis(5));
        let json = serde_json::to_string(&TaskSpec::from_core(&json_task)).unwrap();
        assert!(json.contains("\"payload\":{\"a\": 1}"), "{json}");
        let back: TaskSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_core().unwrap(), json_task);
    }
}
