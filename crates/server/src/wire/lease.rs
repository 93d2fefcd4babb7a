//! Reservations and leases on the wire: reserve, ack, fail, extend, release, recording side
//! effects, and their per-item results.

use std::time::Duration;

use floodway_core::{Fence, Refusal, RetryDecision, TaskId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ErrorCode, ErrorDetails, ErrorObject};
use super::task::{DeadReason, Task, TaskState};
use super::{LeaseToken, WireDuration, WireError, task_id_schema, timestamp_schema};

/// The lease a reserve call gives when the request names none, and the extension an extend
/// call gives when it names none: the worker runtime's default.
pub const LEASE_DEFAULT: Duration = Duration::from_secs(30);

/// A worker's request for tasks (long poll). Every field is optional.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Most tasks to return, 1 to 1,000; 1 when absent. Ask only for what you can run now.
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    pub max: usize,
    /// How long to wait for a task when none is ready; 0 (return at once) when absent. The
    /// server may answer sooner than asked (its `reserve_wait_max`), with no tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WireDuration>,
    /// How long each lease lasts (100ms to 1h); 30s when absent. Extend it while working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<WireDuration>,
    /// The worker's name, recorded on the leases for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub worker: Option<String>,
}

fn one() -> usize {
    1
}

impl ReserveRequest {
    /// The core request for `queue`.
    pub fn into_core(self, queue: floodway_core::QueueName) -> floodway_core::ReserveRequest {
        let ReserveRequest {
            max,
            wait,
            lease,
            worker,
        } = self;
        floodway_core::ReserveRequest {
            queue,
            max,
            lease: lease.map_or(LEASE_DEFAULT, Into::into),
            wait: wait.map_or(Duration::ZERO, Into::into),
            worker,
        }
    }

    /// The wire form of `request` (its queue travels in the path).
    pub fn from_core(request: &floodway_core::ReserveRequest) -> Self {
        let floodway_core::ReserveRequest {
            queue: _,
            max,
            lease,
            wait,
            worker,
        } = request;
        ReserveRequest {
            max: *max,
            wait: Some((*wait).into()),
            lease: Some((*lease).into()),
            worker: worker.clone(),
        }
    }
}

/// What reserve answers: the tasks leased, possibly none.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveResponse {
    /// The reserved tasks, highest priority and oldest first.
    pub tasks: Vec<ReservedTask>,
}

/// One reserved task and its lease.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservedTask {
    /// The task; `attempt` already counts this attempt.
    pub task: Task,
    /// The lease to present with ack, fail, extend or release.
    pub lease: Lease,
}

impl ReservedTask {
    /// The wire form of `reservation`.
    pub fn from_core(reservation: &floodway_core::Reservation) -> Self {
        ReservedTask {
            task: Task::from_core(&reservation.task),
            lease: Lease::from_core(&reservation.lease),
        }
    }

    /// The core reservation.
    pub fn into_core(self) -> Result<floodway_core::Reservation, WireError> {
        Ok(floodway_core::Reservation {
            task: self.task.into_core()?,
            lease: self.lease.into_core(),
        })
    }
}

/// A worker's right to run one task until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// What to present with ack, fail, extend or release.
    pub token: LeaseToken,
    /// The leased task.
    #[schema(schema_with = task_id_schema)]
    pub task_id: TaskId,
    /// The reservation's fence.
    pub fence: u64,
    /// When the server takes the task back unless the lease is extended first (milliseconds
    /// since the Unix epoch, on the server's clock).
    #[schema(schema_with = timestamp_schema)]
    pub expires_at: u64,
}

impl Lease {
    /// The wire form of `lease`.
    pub fn from_core(lease: &floodway_core::Lease) -> Self {
        let floodway_core::Lease {
            task_id,
            fence,
            expires_at,
        } = *lease;
        Lease {
            token: LeaseToken(lease.as_ref()),
            task_id,
            fence: fence.0,
            expires_at: expires_at.as_millis(),
        }
    }

    /// The core lease.
    pub fn into_core(self) -> floodway_core::Lease {
        floodway_core::Lease {
            task_id: self.task_id,
            fence: Fence(self.fence),
            expires_at: Timestamp::from_millis(self.expires_at),
        }
    }
}

/// One lease to ack or release.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseOne {
    /// The lease token from reserve.
    pub lease: LeaseToken,
}

/// Several leases to ack or release; each is judged on its own.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseBatch {
    /// The lease tokens from reserve.
    #[schema(max_items = 1000)]
    pub leases: Vec<LeaseToken>,
}

/// Extend one lease.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendOne {
    /// The lease token from reserve.
    pub lease: LeaseToken,
    /// The new lease lasts this long from now (100ms to 1h); 30s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<WireDuration>,
}

/// Extend several leases by the same duration.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBatch {
    /// The lease tokens from reserve.
    #[schema(max_items = 1000)]
    pub leases: Vec<LeaseToken>,
    /// Each new lease lasts this long from now (100ms to 1h); 30s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<WireDuration>,
}

/// One failed attempt, reported by its lease holder.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The lease token from reserve.
    pub lease: LeaseToken,
    /// What went wrong, kept as the task's last error (truncated to 4 KiB).
    #[serde(default)]
    pub error: String,
    /// Never retry: dead-letter the task now (`permanent_failure`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
    /// Retry after this wait instead of the task's backoff (a downstream's Retry-After).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<WireDuration>,
}

impl Failure {
    /// The core failure.
    pub fn into_core(self) -> Result<floodway_core::Failure, WireError> {
        let retry = match (self.permanent, self.retry_after) {
            (true, Some(_)) => {
                return Err(WireError::new(
                    "retry_after",
                    "a permanent failure is never retried; give permanent or retry_after",
                ));
            }
            (true, None) => RetryDecision::Never,
            (false, Some(wait)) => RetryDecision::After(wait.into()),
            (false, None) => RetryDecision::Backoff,
        };
        Ok(floodway_core::Failure {
            lease: self.lease.0,
            error: self.error,
            retry,
        })
    }

    /// The wire form of `failure`.
    pub fn from_core(failure: &floodway_core::Failure) -> Self {
        let floodway_core::Failure {
            lease,
            error,
            retry,
        } = failure;
        let (permanent, retry_after) = match retry {
            RetryDecision::Backoff => (false, None),
            RetryDecision::After(wait) => (false, Some((*wait).into())),
            RetryDecision::Never => (true, None),
        };
        Failure {
            lease: LeaseToken(*lease),
            error: error.clone(),
            permanent,
            retry_after,
        }
    }
}

/// Several failed attempts; each is judged on its own.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBatch {
    /// The failures.
    #[schema(max_items = 1000)]
    pub failures: Vec<Failure>,
}

/// A side effect a task's handler performed under its lease, to record on the task with its
/// result (`POST /v1/leases/effects`). A later attempt finds it in the task's `effects` and
/// skips the effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EffectRecord {
    /// The lease token from reserve: the task and the fence of the attempt that performed the
    /// effect. Only the current, unexpired lease may record.
    pub lease: LeaseToken,
    /// The effect's key, unique within the task (`"charge"`, `"email:welcome"`); recording a
    /// key again replaces its result.
    #[schema(min_length = 1, max_length = 256)]
    pub key: String,
    /// What the effect returned (often JSON text), at most 16 KiB.
    #[serde(default)]
    #[schema(max_length = 16384)]
    pub result: String,
}

impl EffectRecord {
    /// The wire form of `record`.
    pub fn from_core(record: &floodway_core::EffectRecord) -> Self {
        let floodway_core::EffectRecord { lease, key, result } = record;
        EffectRecord {
            lease: LeaseToken(*lease),
            key: key.clone(),
            result: result.clone(),
        }
    }

    /// The core record; the broker checks key and result against the limits.
    pub fn into_core(self) -> floodway_core::EffectRecord {
        let EffectRecord { lease, key, result } = self;
        floodway_core::EffectRecord {
            lease: lease.0,
            key,
            result,
        }
    }
}

/// Several side effects to record; each is judged on its own lease.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EffectBatch {
    /// The effects, in order; a later record of the same task and key replaces an earlier one.
    #[schema(max_items = 1000)]
    pub effects: Vec<EffectRecord>,
}

/// The result of one ack, release, cancel or effect item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseResult {
    /// True when the item was done.
    pub ok: bool,
    /// Why it was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

/// One result per item, in request order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseResults {
    /// One result per item, in request order.
    pub results: Vec<LeaseResult>,
}

/// The result of one extend item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendResult {
    /// True when the lease was extended.
    pub ok: bool,
    /// The new lease, when extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Why it was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

/// One result per extend item, in request order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendResults {
    /// One result per item, in request order.
    pub results: Vec<ExtendResult>,
}

/// Where a failed task went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailOutcome {
    /// `retrying` (it runs again at `run_at`) or `dead` (see `dead_reason`).
    pub state: TaskState,
    /// When the next attempt may start, when retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = timestamp_schema)]
    pub run_at: Option<u64>,
    /// Why it is dead, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<DeadReason>,
}

impl FailOutcome {
    /// The wire form of `outcome`.
    pub fn from_core(outcome: &floodway_core::FailOutcome) -> Self {
        match *outcome {
            floodway_core::FailOutcome::Retrying { run_at } => FailOutcome {
                state: TaskState::Retrying,
                run_at: Some(run_at.as_millis()),
                dead_reason: None,
            },
            floodway_core::FailOutcome::Dead { reason } => FailOutcome {
                state: TaskState::Dead,
                run_at: None,
                dead_reason: Some(reason.into()),
            },
        }
    }

    /// The core outcome.
    pub fn into_core(self) -> Result<floodway_core::FailOutcome, WireError> {
        match (self.state, self.run_at, self.dead_reason) {
            (TaskState::Retrying, Some(run_at), None) => Ok(floodway_core::FailOutcome::Retrying {
                run_at: Timestamp::from_millis(run_at),
            }),
            (TaskState::Dead, None, Some(reason)) => Ok(floodway_core::FailOutcome::Dead {
                reason: reason.into(),
            }),
            _ => Err(WireError::new(
                "outcome",
                "expected retrying with run_at, or dead with dead_reason",
            )),
        }
    }
}

/// The result of one fail item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailResult {
    /// True when the failure was recorded.
    pub ok: bool,
    /// Where the task went, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<FailOutcome>,
    /// Why it was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

/// One result per fail item, in request order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailResults {
    /// One result per item, in request order.
    pub results: Vec<FailResult>,
}

/// The error object for a refused item.
pub fn refusal_error(refusal: &Refusal) -> ErrorObject {
    let (code, details) = match *refusal {
        Refusal::UnknownTask => (ErrorCode::UnknownTask, ErrorDetails::default()),
        Refusal::WrongState { state } => (
            ErrorCode::WrongState,
            ErrorDetails {
                state: Some(state.into()),
                ..ErrorDetails::default()
            },
        ),
        Refusal::StaleFence { presented, current } => (
            ErrorCode::StaleLease,
            ErrorDetails {
                presented_fence: Some(presented.0),
                current_fence: Some(current.0),
                ..ErrorDetails::default()
            },
        ),
        Refusal::LeaseExpired { expired_at } => (
            ErrorCode::LeaseExpired,
            ErrorDetails {
                expired_at: Some(expired_at.as_millis()),
                ..ErrorDetails::default()
            },
        ),
    };
    ErrorObject {
        code,
        message: refusal.to_string(),
        details: Some(Box::new(details)),
    }
}

/// The refusal an item's error object stands for, if it is one.
pub fn refusal_from_error(error: &ErrorObject) -> Option<Refusal> {
    let details = error.details.as_deref().cloned().unwrap_or_default();
    match error.code {
        ErrorCode::UnknownTask => Some(Refusal::UnknownTask),
        ErrorCode::WrongState => Some(Refusal::WrongState {
            state: details.state?.into(),
        }),
        ErrorCode::StaleLease => Some(Refusal::StaleFence {
            presented: Fence(details.presented_fence?),
            current: Fence(details.current_fence?),
        }),
        ErrorCode::LeaseExpired => Some(Refusal::LeaseExpired {
            expired_at: Timestamp::from_millis(details.expired_at?),
        }),
        _ => None,
    }
}

impl LeaseResult {
    /// The result of one item.
    pub fn from_core(result: &Result<(), Refusal>) -> Self {
        match result {
            Ok(()) => LeaseResult {
                ok: true,
                error: None,
            },
            Err(refusal) => LeaseResult {
                ok: false,
                error: Some(refusal_error(refusal)),
            },
        }
    }

    /// The core result.
    pub fn into_core(self) -> Result<Result<(), Refusal>, WireError> {
        match (self.ok, self.error) {
            (true, None) => Ok(Ok(())),
            (false, Some(error)) => Ok(Err(refusal(&error)?)),
            _ => Err(inconsistent()),
        }
    }
}

impl ExtendResult {
    /// The result of one item.
    pub fn from_core(result: &Result<floodway_core::Lease, Refusal>) -> Self {
        match result {
            Ok(lease) => ExtendResult {
                ok: true,
                lease: Some(Lease::from_core(lease)),
                error: None,
            },
            Err(refusal) => ExtendResult {
                ok: false,
                lease: None,
                error: Some(refusal_error(refusal)),
            },
        }
    }

    /// The core result.
    pub fn into_core(self) -> Result<Result<floodway_core::Lease, Refusal>, WireError> {
        match (self.ok, self.lease, self.error) {
            (true, Some(lease), None) => Ok(Ok(lease.into_core())),
            (false, None, Some(error)) => Ok(Err(refusal(&error)?)),
            _ => Err(inconsistent()),
        }
    }
}

impl FailResult {
    /// The result of one item.
    pub fn from_core(result: &Result<floodway_core::FailOutcome, Refusal>) -> Self {
        match result {
            Ok(outcome) => FailResult {
                ok: true,
                outcome: Some(FailOutcome::from_core(outcome)),
                error: None,
            },
            Err(refusal) => FailResult {
                ok: false,
                outcome: None,
                error: Some(refusal_error(refusal)),
            },
        }
    }

    /// The core result.
    pub fn into_core(self) -> Result<Result<floodway_core::FailOutcome, Refusal>, WireError> {
        match (self.ok, self.outcome, self.error) {
            (true, Some(outcome), None) => Ok(Ok(outcome.into_core()?)),
            (false, None, Some(error)) => Ok(Err(refusal(&error)?)),
            _ => Err(inconsistent()),
        }
    }
}

fn refusal(error: &ErrorObject) -> Result<Refusal, WireError> {
    refusal_from_error(error).ok_or_else(|| {
        WireError::new(
            "error",
            format!("{} is not a refusal of one item", error.code.as_str()),
        )
    })
}

fn inconsistent() -> WireError {
    WireError::new(
        "results",
        "a result must be ok with its value, or not ok with an error",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodway_core::{LeaseRef, TaskState as CoreState};

    #[test]
    fn every_refusal_round_trips_through_its_error_object() {
        for refusal in [
            Refusal::UnknownTask,
            Refusal::WrongState {
                state: CoreState::Completed,
            },
            Refusal::StaleFence {
                presented: Fence(3),
                current: Fence(4),
            },
            Refusal::LeaseExpired {
                expired_at: Timestamp::from_millis(123),
            },
        ] {
            let object = refusal_error(&refusal);
            let json = serde_json::to_string(&object).unwrap();
            let back: ErrorObject = serde_json::from_str(&json).unwrap();
            assert_eq!(refusal_from_error(&back), Some(refusal));
        }
    }

    #[test]
    fn failures_round_trip_and_contradictions_are_named() {
        let lease = LeaseRef {
            task_id: TaskId::from_u128(1),
            fence: Fence(2),
        };
        for retry in [
            RetryDecision::Backoff,
            RetryDecision::After(Duration::from_secs(5)),
            RetryDecision::Never,
        ] {
            let failure = floodway_core::Failure {
                lease,
                error: "boom".into(),
                retry,
            };
            assert_eq!(Failure::from_core(&failure).into_core().unwrap(), failure);
        }
        let both = Failure {
            lease: LeaseToken(lease),
            error: String::new(),
            permanent: true,
            retry_after: Some(Duration::from_secs(1).into()),
        };
        assert_eq!(both.into_core().unwrap_err().field, "retry_after");
    }
}
