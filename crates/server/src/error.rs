//! [`ApiError`]: the one error type of the API. Handlers return `Result<_, ApiError>` and use
//! `?`; the error renders as `{"error": {"code", "message", "details"}}` with the status its
//! code comes with ([`ErrorCode::status`]), plus `Retry-After` on 429 and 503 where the server
//! knows when to try again, and `WWW-Authenticate` on 401.
//!
//! A request answered with an error changed nothing, with two exceptions that the code says:
//! `unavailable` and `timeout` (503), where the broker may or may not have made the change.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use floodway_core::{BrokerError, Refusal};

use crate::wire::{ErrorBody, ErrorCode, ErrorDetails, ErrorObject, WireError, refusal_error};

/// An error answer of the API.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    object: ErrorObject,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with `code` and `message` and no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            object: ErrorObject {
                code,
                message: message.into(),
                details: None,
            },
            retry_after: None,
        }
    }

    /// Adds the values the error involves.
    pub fn with_details(mut self, details: ErrorDetails) -> Self {
        self.object.details = Some(Box::new(details));
        self
    }

    /// Adds a `Retry-After` hint.
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// 400: the request cannot be parsed.
    pub fn malformed(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::MalformedRequest, message)
    }

    /// 422: `field` is well-formed but breaks a rule.
    pub fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let (field, reason) = (field.into(), reason.into());
        ApiError::new(
            ErrorCode::InvalidField,
            format!("invalid {field}: {reason}"),
        )
        .with_details(ErrorDetails {
            field: Some(field),
            reason: Some(reason),
            ..ErrorDetails::default()
        })
    }

    /// 403: the caller's token lacks `scope` on `queue` (or on every queue when `None`).
    pub fn forbidden(scope: &str, queue: Option<&str>) -> Self {
        let message = match queue {
            Some(queue) => format!("this token lacks the {scope} scope on queue {queue}"),
            None => format!("this token lacks the {scope} scope on every queue (pattern \"*\")"),
        };
        let error = ApiError::new(ErrorCode::Forbidden, message);
        match queue {
            Some(queue) => error.with_details(ErrorDetails {
                queue: Some(queue.to_owned()),
                ..ErrorDetails::default()
            }),
            None => error,
        }
    }

    /// 404 `unknown_task` for `id`.
    pub fn unknown_task(id: floodway_core::TaskId) -> Self {
        BrokerError::UnknownTask(id).into()
    }

    /// The error for a single-item call whose item was refused: 404 for an unknown task, 409
    /// for a stale or expired lease or a task in the wrong state.
    pub fn refused(refusal: &Refusal) -> Self {
        ApiError {
            object: refusal_error(refusal),
            retry_after: None,
        }
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.object.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.object.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The body this error renders.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.object.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object.code.as_str(), self.object.message)
    }
}

impl std::error::Error for ApiError {}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        let message = error.to_string();
        let (code, details, retry_after) = match error {
            BrokerError::Invalid { field, reason } => (
                ErrorCode::InvalidField,
                ErrorDetails {
                    field: Some(field.to_owned()),
                    reason: Some(reason),
                    ..ErrorDetails::default()
                },
                None,
            ),
            BrokerError::PayloadTooLarge { size, max } => (
                ErrorCode::PayloadTooLarge,
                ErrorDetails {
                    size: Some(size as u64),
                    max: Some(max as u64),
                    ..ErrorDetails::default()
                },
                None,
            ),
            BrokerError::BatchTooLarge { size, max } => (
                ErrorCode::BatchTooLarge,
                ErrorDetails {
                    size: Some(size as u64),
                    max: Some(max as u64),
                    ..ErrorDetails::default()
                },
                None,
            ),
            BrokerError::UnknownQueue(queue) => (
                ErrorCode::UnknownQueue,
                ErrorDetails {
                    queue: Some(queue.to_string()),
                    ..ErrorDetails::default()
                },
                None,
            ),
            BrokerError::UnknownTask(id) => (
                ErrorCode::UnknownTask,
                ErrorDetails {
                    task_id: Some(id.to_string()),
                    ..ErrorDetails::default()
                },
                None,
            ),
            BrokerError::QueueFull {
                queue,
                length,
                max,
                retry_after,
            } => (
                ErrorCode::QueueFull,
                ErrorDetails {
                    queue: Some(queue.to_string()),
                    length: Some(length),
                    max: Some(max),
                    retry_after: Some(retry_after.into()),
                    ..ErrorDetails::default()
                },
                Some(retry_after),
            ),
            BrokerError::Overloaded {
                queue,
                length,
                high,
                low,
                retry_after,
            } => (
                ErrorCode::QueueOverloaded,
                ErrorDetails {
                    queue: Some(queue.to_string()),
                    length: Some(length),
                    high: Some(high),
                    low: Some(low),
                    retry_after: Some(retry_after.into()),
                    ..ErrorDetails::default()
                },
                Some(retry_after),
            ),
            BrokerError::LimitReached(_) => {
                (ErrorCode::LimitReached, ErrorDetails::default(), None)
            }
            BrokerError::Unavailable(_) => (ErrorCode::Unavailable, ErrorDetails::default(), None),
            BrokerError::StorageFull(_) => (ErrorCode::StorageFull, ErrorDetails::default(), None),
            // A variant added to the core after this server was written: say what it is, as a
            // bug to fix here, rather than guess its status.
            other => {
                tracing::error!(error = %other, "a broker error the server does not map");
                (ErrorCode::Internal, ErrorDetails::default(), None)
            }
        };
        let details = (details != ErrorDetails::default()).then(|| Box::new(details));
        ApiError {
            object: ErrorObject {
                code,
                message,
                details,
            },
            retry_after,
        }
    }
}

impl From<WireError> for ApiError {
    fn from(error: WireError) -> Self {
        ApiError::invalid_field(error.field, error.reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.object.code.as_str(), message = %self.object.message, "request failed");
        } else {
            tracing::debug!(code = self.object.code.as_str(), message = %self.object.message, "request refused");
        }
        let body = serde_json::to_vec(&self.body()).unwrap_or_else(|_| {
            br#"{"error":{"code":"internal","message":"the error could not be encoded"}}"#.to_vec()
        });
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"floodway\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodway_core::QueueName;

    #[test]
    fn broker_errors_get_their_status_and_details() {
        let full = ApiError::from(BrokerError::QueueFull {
            queue: QueueName::new("q").unwrap(),
            length: 10,
            max: 10,
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
        let response = full.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");

        let overloaded = ApiError::from(BrokerError::Overloaded {
            queue: QueueName::new("q").unwrap(),
            length: 120,
            high: 100,
            low: 50,
            retry_after: Duration::from_millis(2001),
        });
        assert_eq!(overloaded.code(), ErrorCode::QueueOverloaded);
        assert_eq!(overloaded.status(), StatusCode::TOO_MANY_REQUESTS);
        let details = overloaded.body().error.details.unwrap();
        assert_eq!(
            (details.length, details.high, details.low),
            (Some(120), Some(100), Some(50))
        );
        let response = overloaded.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");

        let invalid = ApiError::from(BrokerError::invalid("kind", "must not be empty"));
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            invalid.body().error.details.unwrap().field.as_deref(),
            Some("kind")
        );
        assert_eq!(
            ApiError::from(BrokerError::Unavailable("disk".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let full = ApiError::from(BrokerError::StorageFull("no space".into()));
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(full.code().as_str(), "storage_full");
    }
}
