//! [`BrokerError`]: what can go wrong in a broker call, for every broker.
//!
//! A call that returns an error changed no task and no queue, except where a variant says
//! otherwise ([`BrokerError::Unavailable`] may leave the outcome unknown); the only trace a
//! refusal may leave is a count in the queue's totals (`rejected_full`). Refusals of single items in a
//! batch (a stale lease among good ones) are not errors of the call; they are
//! [`crate::Refusal`]s in the per-item results.

use std::time::Duration;

use crate::id::TaskId;
use crate::name::QueueName;

/// Why a broker call failed as a whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A field of the request is invalid; `field` names it, `reason` says what is wrong.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, as the API names it (`kind`, `retry.max_attempts`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A payload is larger than [`crate::limits::PAYLOAD_BYTES_MAX`].
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A batch holds more items than [`crate::limits::BATCH_SIZE_MAX`].
    #[error("batch of {size} items exceeds the limit of {max}")]
    BatchTooLarge {
        /// Items in the batch.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The named queue does not exist.
    #[error("unknown queue {0}")]
    UnknownQueue(QueueName),
    /// The task does not exist (never did, or was purged).
    #[error("unknown task {0}")]
    UnknownTask(TaskId),
    /// The queue holds its maximum number of waiting tasks and its overflow policy rejects new
    /// ones. Backpressure: try again later.
    #[error("queue {queue} is full: {length} tasks waiting, limit {max}")]
    QueueFull {
        /// The full queue.
        queue: QueueName,
        /// Waiting tasks now.
        length: u64,
        /// The queue's `length_max`.
        max: u64,
        /// A hint for when to try again.
        retry_after: Duration,
    },
    /// The queue is above its high watermark (or has not yet come down to its low one) and
    /// refuses new tasks. Backpressure: try again after `retry_after`, which the broker
    /// derives from how fast the queue is being worked off.
    #[error(
        "queue {queue} is overloaded: {length} tasks waiting against a high watermark of {high}; accepting again at {low}"
    )]
    Overloaded {
        /// The overloaded queue.
        queue: QueueName,
        /// Waiting tasks now.
        length: u64,
        /// The high watermark.
        high: u64,
        /// The low watermark: enqueue is accepted again at or below it.
        low: u64,
        /// When trying again is worth it: the time to work the queue down to `low` at its
        /// recent completion rate.
        retry_after: Duration,
    },
    /// A limit on the broker as a whole was reached (too many queues, say).
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The broker cannot serve the call now (storage failed, connection lost, shutting down).
    /// The call may or may not have taken effect.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker's storage is full (no space left on its disk): the call was refused before
    /// it changed anything. Reads are still served, and changes are accepted again, without a
    /// restart, once space is freed; try again later.
    #[error("storage full: {0}")]
    StorageFull(String),
}

impl BrokerError {
    /// An [`BrokerError::Invalid`] for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        BrokerError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// True when the same call may succeed later unchanged: the queue was full, the broker
    /// unavailable or its storage full. Invalid input never becomes valid by waiting.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BrokerError::QueueFull { .. }
                | BrokerError::Overloaded { .. }
                | BrokerError::Unavailable(_)
                | BrokerError::StorageFull(_)
        )
    }

    /// The broker's hint for when to try again, for the backpressure refusals.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BrokerError::QueueFull { retry_after, .. }
            | BrokerError::Overloaded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backpressure_and_unavailability_are_retryable() {
        let full = BrokerError::QueueFull {
            queue: QueueName::new("q").unwrap(),
            length: 10,
            max: 10,
            retry_after: Duration::from_secs(1),
        };
        assert!(full.is_retryable());
        assert!(BrokerError::Unavailable("disk".into()).is_retryable());
        assert!(BrokerError::StorageFull("no space".into()).is_retryable());
        assert!(!BrokerError::invalid("kind", "empty").is_retryable());
        assert!(!BrokerError::PayloadTooLarge { size: 2, max: 1 }.is_retryable());
    }
}
