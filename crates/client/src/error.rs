//! [`ClientError`]: what can go wrong talking to a floodway server, and how each failure maps
//! onto the [`BrokerError`] a remote worker's runtime understands.

use std::time::Duration;

use floodway_backpressure::BreakerOpen;
use floodway_core::{BrokerError, QueueName, TaskId};
use floodway_server::ApiError;
use floodway_server::wire::{ErrorCode, ErrorObject};

/// Why a call to the server failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{} (HTTP {status})", error.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error the server sent.
        error: ErrorObject,
        /// The server's `Retry-After` hint, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The request did not get an answer: the connection failed or timed out.
    #[error("no answer from the server: {message}")]
    Transport {
        /// What went wrong.
        message: String,
        /// True when the request never left: connecting failed, so the server did nothing.
        unsent: bool,
    },
    /// The server answered something this client cannot read (a different version, a proxy's
    /// error page).
    #[error("unreadable answer from the server: {0}")]
    Protocol(String),
    /// The producer's circuit breaker is open after repeated failures; nothing was sent.
    #[error(transparent)]
    BreakerOpen(#[from] BreakerOpen),
    /// The client's own configuration cannot work.
    #[error("client configuration: {0}")]
    Config(String),
    /// A broker called in process (a [`crate::Producer`] made with
    /// [`crate::Producer::from_broker`]) refused the call or could not serve it.
    #[error(transparent)]
    Broker(BrokerError),
}

impl ClientError {
    /// The server's error code, when it answered with one; for an in-process broker's error,
    /// the code the HTTP API answers the same error with, so one check fits both.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            ClientError::Broker(error) => Some(ApiError::from(error.clone()).code()),
            _ => None,
        }
    }

    /// True when the broker refused the request without acting on it and the same request
    /// may succeed later: the queue was full or above its high watermark, or the token's rate
    /// limit was exhausted (429). Retrying is then always safe.
    pub fn is_backpressure(&self) -> bool {
        matches!(
            self.code(),
            Some(ErrorCode::QueueFull | ErrorCode::QueueOverloaded | ErrorCode::RateLimited)
        )
    }

    /// True when the request may succeed later unchanged: backpressure, an unavailable broker,
    /// a timeout, or no answer at all. Only backpressure and unsent requests are known to have
    /// changed nothing; for the others the outcome is unknown.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Api { error, .. } => matches!(
                error.code,
                ErrorCode::QueueFull
                    | ErrorCode::QueueOverloaded
                    | ErrorCode::RateLimited
                    | ErrorCode::Unavailable
                    | ErrorCode::Timeout
                    | ErrorCode::StorageFull
            ),
            ClientError::Transport { .. } | ClientError::BreakerOpen(_) => true,
            ClientError::Broker(error) => error.is_retryable(),
            ClientError::Protocol(_) | ClientError::Config(_) => false,
        }
    }

    /// True when the request certainly did not act: backpressure, a full storage, never sent,
    /// or refused by an in-process broker for any reason but unavailability (a broker call
    /// that fails changes nothing, except that an unavailable broker's outcome is unknown).
    pub fn changed_nothing(&self) -> bool {
        self.is_backpressure()
            || self.code() == Some(ErrorCode::StorageFull)
            || matches!(
                self,
                ClientError::Transport { unsent: true, .. } | ClientError::BreakerOpen(_)
            )
            || matches!(self, ClientError::Broker(error) if !matches!(error, BrokerError::Unavailable(_)))
    }

    /// True when the failure says the server (or the way to it) is unwell, which the circuit
    /// breaker counts: no answer, or a 5xx; for an in-process broker,
    /// [`BrokerError::Unavailable`]. A 4xx, 429 included, is a healthy server saying no.
    pub fn is_server_failure(&self) -> bool {
        match self {
            ClientError::Api { status, .. } => *status >= 500,
            ClientError::Transport { .. } | ClientError::Protocol(_) => true,
            ClientError::Broker(error) => matches!(
                error,
                BrokerError::Unavailable(_) | BrokerError::StorageFull(_)
            ),
            ClientError::BreakerOpen(_) | ClientError::Config(_) => false,
        }
    }

    /// The broker's hint for when to try again: the server's `Retry-After`, the breaker's
    /// open period, or an in-process broker's [`BrokerError::retry_after`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api { retry_after, .. } => *retry_after,
            ClientError::BreakerOpen(open) => Some(open.retry_in),
            ClientError::Broker(error) => error.retry_after(),
            _ => None,
        }
    }
}

impl From<ClientError> for BrokerError {
    /// The broker error a local broker would have returned for the same call, so callers of
    /// the [`floodway_core::Broker`] trait cannot tell a remote broker from a local one.
    /// Failures only HTTP has (no answer, authentication, rate limits) become
    /// [`BrokerError::Unavailable`] with the server's message: the worker runtime retries
    /// those with backoff and logs them.
    fn from(error: ClientError) -> Self {
        if let ClientError::Broker(error) = error {
            return error;
        }
        let ClientError::Api {
            error: object,
            retry_after,
            ..
        } = &error
        else {
            return BrokerError::Unavailable(error.to_string());
        };
        let details = object.details.as_deref().cloned().unwrap_or_default();
        let size = |value: Option<u64>| value.unwrap_or_default() as usize;
        let mapped = match object.code {
            ErrorCode::InvalidField => details.field.as_deref().map(|field| BrokerError::Invalid {
                field: field_name(field),
                reason: details
                    .reason
                    .clone()
                    .unwrap_or_else(|| object.message.clone()),
            }),
            ErrorCode::PayloadTooLarge => Some(BrokerError::PayloadTooLarge {
                size: size(details.size),
                max: size(details.max),
            }),
            ErrorCode::BatchTooLarge => Some(BrokerError::BatchTooLarge {
                size: size(details.size),
                max: size(details.max),
            }),
            ErrorCode::UnknownQueue => details
                .queue
                .as_deref()
                .and_then(|q| QueueName::new(q).ok())
                .map(BrokerError::UnknownQueue),
            ErrorCode::UnknownTask => details
                .task_id
                .as_deref()
                .and_then(|id| id.parse::<TaskId>().ok())
                .map(BrokerError::UnknownTask),
            ErrorCode::QueueFull => details
                .queue
                .as_deref()
                .and_then(|q| QueueName::new(q).ok())
                .map(|queue| BrokerError::QueueFull {
                    queue,
                    length: details.length.unwrap_or_default(),
                    max: details.max.unwrap_or_default(),
                    retry_after: details
                        .retry_after
                        .map(Into::into)
                        .or(*retry_after)
                        .unwrap_or_default(),
                }),
            ErrorCode::QueueOverloaded => details
                .queue
                .as_deref()
                .and_then(|q| QueueName::new(q).ok())
                .map(|queue| BrokerError::Overloaded {
                    queue,
                    length: details.length.unwrap_or_default(),
                    high: details.high.unwrap_or_default(),
                    low: details.low.unwrap_or_default(),
                    retry_after: details
                        .retry_after
                        .map(Into::into)
                        .or(*retry_after)
                        .unwrap_or_default(),
                }),
            ErrorCode::LimitReached => Some(BrokerError::LimitReached(
                object
                    .message
                    .strip_prefix("limit reached: ")
                    .unwrap_or(&object.message)
                    .to_owned(),
            )),
            ErrorCode::Unavailable => Some(BrokerError::Unavailable(
                object
                    .message
                    .strip_prefix("broker unavailable: ")
                    .unwrap_or(&object.message)
                    .to_owned(),
            )),
            ErrorCode::StorageFull => Some(BrokerError::StorageFull(
                object
                    .message
                    .strip_prefix("storage full: ")
                    .unwrap_or(&object.message)
                    .to_owned(),
            )),
            _ => None,
        };
        mapped.unwrap_or_else(|| BrokerError::Unavailable(error.to_string()))
    }
}

/// The field names brokers and the server report, as the `&'static str` that
/// [`BrokerError::Invalid`] carries. A name not in the list (a newer server's) is reported as
/// `request`, with the server's reason intact.
const FIELDS: &[&str] = &[
    "body",
    "completed_retain",
    "concurrency_max",
    "dead_reason",
    "dead_retain",
    "delay",
    "duration",
    "effects",
    "error",
    "headers",
    "id",
    "idempotency_key",
    "idempotency_window",
    "ids",
    "key",
    "key_concurrency_max",
    "key_rate_limit",
    "kind",
    "lease",
    "length_max",
    "limit",
    "limit_key",
    "max",
    "max_attempts",
    "outcome",
    "partition_key",
    "payload",
    "payload_base64",
    "priority",
    "queue",
    "rate_limit",
    "reason",
    "result",
    "retry",
    "retry.backoff_initial",
    "retry.backoff_max",
    "retry.backoff_multiplier",
    "retry.max_attempts",
    "retry_after",
    "run_at",
    "tasks",
    "timeout",
    "ttl",
    "wait",
    "watermarks",
    "worker",
];

fn field_name(field: &str) -> &'static str {
    let known = |name: &str| FIELDS.iter().copied().find(|f| *f == name);
    known(field)
        .or_else(|| {
            // A path such as `tasks[3].priority`: the field is what follows the last `]`.
            let tail = field.rsplit_once("].").map(|(_, tail)| tail)?;
            known(tail)
        })
        .unwrap_or("request")
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodway_server::wire::ErrorDetails;

    fn api(code: ErrorCode, details: ErrorDetails, message: &str) -> ClientError {
        ClientError::Api {
            status: code.status(),
            error: ErrorObject {
                code,
                message: message.into(),
                details: Some(Box::new(details)),
            },
            retry_after: None,
        }
    }

    #[test]
    fn invalid_fields_keep_their_names() {
        let error = api(
            ErrorCode::InvalidField,
            ErrorDetails {
                field: Some("retry.max_attempts".into()),
                reason: Some("must be between 1 and 1000".into()),
                ..ErrorDetails::default()
            },
            "",
        );
        assert_eq!(
            BrokerError::from(error),
            BrokerError::invalid("retry.max_attempts", "must be between 1 and 1000")
        );
        assert_eq!(field_name("tasks[2].priority"), "priority");
        assert_eq!(field_name("something_new"), "request");
    }

    #[test]
    fn an_overloaded_queue_is_decoded_as_overloaded_and_retryable_with_its_hint() {
        let mut error = api(
            ErrorCode::QueueOverloaded,
            ErrorDetails {
                queue: Some("orders".into()),
                length: Some(120),
                high: Some(100),
                low: Some(50),
                retry_after: Some(Duration::from_millis(2500).into()),
                ..ErrorDetails::default()
            },
            "queue orders is overloaded",
        );
        if let ClientError::Api { retry_after, .. } = &mut error {
            *retry_after = Some(Duration::from_secs(3));
        }
        assert!(error.is_backpressure() && error.is_retryable() && error.changed_nothing());
        assert!(
            !error.is_server_failure(),
            "a 429 is a healthy server saying no"
        );
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
        let broker = BrokerError::from(error);
        assert_eq!(
            broker,
            BrokerError::Overloaded {
                queue: QueueName::new("orders").unwrap(),
                length: 120,
                high: 100,
                low: 50,
                retry_after: Duration::from_millis(2500),
            }
        );
        assert!(broker.is_retryable());
        assert_eq!(broker.retry_after(), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn an_in_process_brokers_errors_are_classified_like_the_servers() {
        let overloaded = ClientError::Broker(BrokerError::Overloaded {
            queue: QueueName::new("q").unwrap(),
            length: 2,
            high: 1,
            low: 0,
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(overloaded.code(), Some(ErrorCode::QueueOverloaded));
        assert!(overloaded.is_backpressure() && overloaded.changed_nothing());
        assert!(!overloaded.is_server_failure());
        assert_eq!(overloaded.retry_after(), Some(Duration::from_secs(1)));
        let down = ClientError::Broker(BrokerError::Unavailable("disk".into()));
        assert!(down.is_retryable() && down.is_server_failure());
        assert!(
            !down.changed_nothing(),
            "the outcome of an unavailable call is unknown"
        );
        let invalid = ClientError::Broker(BrokerError::invalid("kind", "empty"));
        assert!(!invalid.is_retryable() && !invalid.is_server_failure());
        assert_eq!(
            BrokerError::from(invalid),
            BrokerError::invalid("kind", "empty")
        );
    }

    #[test]
    fn http_only_failures_become_unavailable_and_keep_the_message() {
        let error = api(ErrorCode::Forbidden, ErrorDetails::default(), "no scope");
        let BrokerError::Unavailable(message) = BrokerError::from(error) else {
            panic!("expected Unavailable");
        };
        assert!(message.contains("no scope"), "{message}");
        let unsent = ClientError::Transport {
            message: "refused".into(),
            unsent: true,
        };
        assert!(unsent.changed_nothing() && unsent.is_server_failure());
    }
}
