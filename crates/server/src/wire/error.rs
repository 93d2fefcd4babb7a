//! The error body every failed request gets: `{"error": {"code", "message", "details"}}`, and
//! the same object as the result of a refused item in a batch.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{TaskState, WireDuration};

/// A failed request's body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorObject,
}

/// What went wrong: a stable code for programs, a message for people, and details that name
/// the values involved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorObject {
    /// A stable, machine-readable code.
    pub code: ErrorCode,
    /// A sentence that names the problem.
    pub message: String,
    /// The values involved, where there are any. Boxed: most errors have none, and an error
    /// travels in every `Result` of the handlers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<ErrorDetails>>,
}

/// The stable error codes, with the HTTP status each comes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not valid JSON, or a path or query parameter cannot be parsed.
    MalformedRequest,
    /// 422: a value is well-formed but breaks a rule; `details.field` names it.
    InvalidField,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 401: no bearer token, or one the server does not know.
    Unauthenticated,
    /// 403: the token lacks the scope for this queue.
    Forbidden,
    /// 404: no such route.
    NotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 404: the queue does not exist.
    UnknownQueue,
    /// 404: the task does not exist (or belongs to a queue the token may not see).
    UnknownTask,
    /// 409: the lease's fence was superseded by a later reservation.
    StaleLease,
    /// 409: the lease expired before the call arrived.
    LeaseExpired,
    /// 409: the task is not in a state the call applies to.
    WrongState,
    /// 413: a task's payload is larger than the limit.
    PayloadTooLarge,
    /// 413: a batch holds more items than the limit.
    BatchTooLarge,
    /// 413: the request body is larger than the limit.
    BodyTooLarge,
    /// 429: the queue is full (backpressure); `Retry-After` says when to try again.
    QueueFull,
    /// 429: the queue is above its high watermark and refuses new tasks until it is back at
    /// or below its low one (backpressure); `Retry-After` says when trying again is worth it,
    /// and `details` carry `length`, `high` and `low`.
    QueueOverloaded,
    /// 429: the token's rate limit is exhausted; `Retry-After` says when to try again.
    RateLimited,
    /// 422: a limit on the broker as a whole was reached (too many queues).
    LimitReached,
    /// 503: the broker cannot serve the call now; the call may or may not have taken effect.
    Unavailable,
    /// 503: the request did not finish in time; it may or may not have taken effect.
    Timeout,
    /// 507: the broker's storage is full; nothing was changed. Reads still work, and changes
    /// are accepted again once space is freed on the broker's disk.
    StorageFull,
    /// 500: a bug in floodway.
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UnknownQueue => "unknown_queue",
            ErrorCode::UnknownTask => "unknown_task",
            ErrorCode::StaleLease => "stale_lease",
            ErrorCode::LeaseExpired => "lease_expired",
            ErrorCode::WrongState => "wrong_state",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::QueueOverloaded => "queue_overloaded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status this code comes with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::MalformedRequest => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound | ErrorCode::UnknownQueue | ErrorCode::UnknownTask => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::StaleLease | ErrorCode::LeaseExpired | ErrorCode::WrongState => 409,
            ErrorCode::PayloadTooLarge | ErrorCode::BatchTooLarge | ErrorCode::BodyTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::InvalidField | ErrorCode::LimitReached => 422,
            ErrorCode::QueueFull | ErrorCode::QueueOverloaded | ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable | ErrorCode::Timeout => 503,
            ErrorCode::StorageFull => 507,
        }
    }
}

/// The values an error involves; only those that apply are present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetails {
    /// The offending field (`invalid_field`), as a path such as `tasks[2].priority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong with the field (`invalid_field`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The queue involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The task involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub task_id: Option<String>,
    /// The size given (`payload_too_large`: bytes; `batch_too_large`: items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The limit (bytes, items, or the queue's `length_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Waiting tasks in the queue (`queue_full`, `queue_overloaded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// The queue's high watermark (`queue_overloaded`): above it, enqueue is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<u64>,
    /// The queue's low watermark (`queue_overloaded`): at or below it, enqueue is accepted
    /// again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<u64>,
    /// When to try again (`queue_full`, `queue_overloaded`, `rate_limited`); also in the
    /// `Retry-After` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<WireDuration>,
    /// The task's state (`wrong_state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// The fence presented (`stale_lease`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presented_fence: Option<u64>,
    /// The task's current fence (`stale_lease`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_fence: Option<u64>,
    /// When the lease expired, in milliseconds since the Unix epoch (`lease_expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in [
            ErrorCode::MalformedRequest,
            ErrorCode::StaleLease,
            ErrorCode::QueueFull,
            ErrorCode::QueueOverloaded,
            ErrorCode::Internal,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
    }
}
