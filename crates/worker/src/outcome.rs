//! [`Outcome`]: what a handler says happened to its attempt, as a value.
//!
//! Handlers return anything that converts into an `Outcome`: the value itself, `()`, or a
//! `Result` whose error is retried with the task's backoff. The worker turns the outcome into
//! an ack or a fail call on the broker; nothing about it is parsed from strings.

use std::fmt::Display;
use std::time::Duration;

use floodway_core::RetryDecision;

/// How one attempt of a task ended, as its handler reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The task is done: the worker acks it.
    Complete,
    /// The attempt failed; try again after the task's retry backoff if attempts remain, else
    /// dead-letter it (`max_attempts`).
    Retry {
        /// What went wrong, kept as the task's last error.
        error: String,
    },
    /// The attempt failed; try again after `wait` (a downstream's Retry-After, say) if
    /// attempts remain, else dead-letter it (`max_attempts`).
    RetryAfter {
        /// How long to wait before the next attempt.
        wait: Duration,
        /// What went wrong, kept as the task's last error.
        error: String,
    },
    /// The task can never succeed (invalid input, say): dead-letter it now
    /// (`permanent_failure`), whatever attempts remain.
    Fail {
        /// Why, kept as the task's last error.
        error: String,
    },
    /// The downstream this handler calls is overloaded (an HTTP 429 or 503, say): the attempt
    /// failed through no fault of the task. It is retried after `retry_after` (the
    /// downstream's Retry-After) if given, else after the task's backoff; like any failed
    /// attempt it spends one of the task's attempts.
    ///
    /// It is counted apart from errors (`overloaded` in the [`crate::WorkerReport`] and per
    /// kind in [`crate::WorkerStats`]) and logged without a warning. For a kind made adaptive
    /// ([`crate::WorkerBuilder::adaptive`]) it also cuts how many tasks of the kind run at
    /// once, so the worker backs off the downstream as TCP does.
    Overloaded {
        /// How long the downstream asked callers to wait, if it said.
        retry_after: Option<Duration>,
        /// What the downstream said, kept as the task's last error.
        error: String,
    },
}

impl Outcome {
    /// A failed attempt to retry with the task's backoff.
    pub fn retry(error: impl Display) -> Self {
        Outcome::Retry {
            error: error.to_string(),
        }
    }

    /// A failed attempt to retry after `wait`.
    pub fn retry_after(wait: Duration, error: impl Display) -> Self {
        Outcome::RetryAfter {
            wait,
            error: error.to_string(),
        }
    }

    /// A permanent failure: the task goes to the dead letters.
    pub fn fail(error: impl Display) -> Self {
        Outcome::Fail {
            error: error.to_string(),
        }
    }

    /// The downstream is overloaded; retry after the task's backoff.
    pub fn overloaded(error: impl Display) -> Self {
        Outcome::Overloaded {
            retry_after: None,
            error: error.to_string(),
        }
    }

    /// The downstream is overloaded and asked callers to come back after `wait` (its
    /// Retry-After); retry then.
    pub fn overloaded_for(wait: Duration, error: impl Display) -> Self {
        Outcome::Overloaded {
            retry_after: Some(wait),
            error: error.to_string(),
        }
    }

    /// The error and retry decision to send to the broker, or `None` for [`Outcome::Complete`].
    pub(crate) fn into_failure(self) -> Option<(String, RetryDecision)> {
        match self {
            Outcome::Complete => None,
            Outcome::Retry { error } => Some((error, RetryDecision::Backoff)),
            Outcome::RetryAfter { wait, error } => Some((error, RetryDecision::After(wait))),
            Outcome::Fail { error } => Some((error, RetryDecision::Never)),
            Outcome::Overloaded { retry_after, error } => Some((
                error,
                retry_after.map_or(RetryDecision::Backoff, RetryDecision::After),
            )),
        }
    }
}

/// A handler that returns nothing completed its task.
impl From<()> for Outcome {
    fn from((): ()) -> Self {
        Outcome::Complete
    }
}

/// `Ok(())` completes the task; an error is retried with the task's backoff. The error is
/// written with `{:#}`, which shows the whole chain for error types that support it (anyhow).
impl<E: Display> From<Result<(), E>> for Outcome {
    fn from(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Outcome::Complete,
            Err(error) => Outcome::Retry {
                error: format!("{error:#}"),
            },
        }
    }
}

/// `Ok(outcome)` is that outcome; an error is retried with the task's backoff. This lets a
/// handler use `?` and still choose a specific outcome.
impl<E: Display> From<Result<Outcome, E>> for Outcome {
    fn from(result: Result<Outcome, E>) -> Self {
        match result {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Retry {
                error: format!("{error:#}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_complete_or_retry() {
        assert_eq!(Outcome::from(()), Outcome::Complete);
        assert_eq!(Outcome::from(Ok::<(), String>(())), Outcome::Complete);
        assert_eq!(
            Outcome::from(Err::<(), _>("card declined")),
            Outcome::retry("card declined")
        );
        assert_eq!(
            Outcome::from(Ok::<_, String>(Outcome::fail("bad card"))),
            Outcome::fail("bad card")
        );
        assert_eq!(
            Outcome::from(Err::<Outcome, _>(std::fmt::Error)),
            Outcome::retry(std::fmt::Error)
        );
    }

    #[test]
    fn outcomes_map_to_retry_decisions() {
        assert_eq!(Outcome::Complete.into_failure(), None);
        assert_eq!(
            Outcome::retry("x").into_failure(),
            Some(("x".to_owned(), RetryDecision::Backoff))
        );
        assert_eq!(
            Outcome::retry_after(Duration::from_secs(7), "slow down").into_failure(),
            Some((
                "slow down".to_owned(),
                RetryDecision::After(Duration::from_secs(7))
            ))
        );
        assert_eq!(
            Outcome::fail("never").into_failure(),
            Some(("never".to_owned(), RetryDecision::Never))
        );
        assert_eq!(
            Outcome::overloaded_for(Duration::from_secs(3), "429").into_failure(),
            Some((
                "429".to_owned(),
                RetryDecision::After(Duration::from_secs(3))
            ))
        );
        assert_eq!(
            Outcome::overloaded("503").into_failure(),
            Some(("503".to_owned(), RetryDecision::Backoff))
        );
    }
}
