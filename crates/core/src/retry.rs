//! Retries: how many attempts a task gets and how long it waits between them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::limits;

/// How a failed task is retried: up to `max_attempts` attempts in all, waiting an exponentially
/// growing, capped and (by default) fully jittered backoff between them.
///
/// With full jitter the wait before attempt n+1 is uniform in
/// `[0, min(backoff_max, backoff_initial × backoff_multiplier^(n-1))]`, which spreads retries of
/// many tasks that failed together (AWS Architecture Blog, "Exponential Backoff And Jitter").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts allowed in all, counting the first; 1 means never retry.
    pub max_attempts: u32,
    /// The backoff ceiling after the first failure.
    #[serde(with = "crate::duration::serde")]
    pub backoff_initial: Duration,
    /// The largest backoff ceiling, however many attempts have failed.
    #[serde(with = "crate::duration::serde")]
    pub backoff_max: Duration,
    /// How much the ceiling grows after each failure; at least 1.
    pub backoff_multiplier: f64,
    /// Whether the wait is drawn at random below the ceiling or is the ceiling itself.
    pub jitter: Jitter,
}

/// Whether a retry waits a random time below the backoff ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Wait a uniformly random time between zero and the ceiling (the default).
    Full,
    /// Wait exactly the ceiling; predictable, but tasks that failed together retry together.
    None,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            backoff_multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// A policy allowing `max_attempts` attempts with the default backoff.
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        }
    }

    /// The wait before the next attempt, after attempt number `attempt` (1-based) failed.
    /// `random` is a number in `[0, 1)` from the broker's random source; it is used only with
    /// full jitter.
    pub fn backoff(&self, attempt: u32, random: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let ceiling_secs = (self.backoff_initial.as_secs_f64()
            * self.backoff_multiplier.powi(exponent))
        .min(self.backoff_max.as_secs_f64());
        let wait_secs = match self.jitter {
            Jitter::Full => ceiling_secs * random.clamp(0.0, 1.0),
            Jitter::None => ceiling_secs,
        };
        Duration::try_from_secs_f64(wait_secs).unwrap_or(self.backoff_max)
    }

    /// Checks the policy against the limits; the error names the offending field.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.max_attempts == 0 || self.max_attempts > limits::ATTEMPTS_MAX {
            return Err(BrokerError::invalid(
                "retry.max_attempts",
                format!("must be between 1 and {}", limits::ATTEMPTS_MAX),
            ));
        }
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier <= 100.0) {
            return Err(BrokerError::invalid(
                "retry.backoff_multiplier",
                "must be between 1 and 100",
            ));
        }
        if self.backoff_initial > self.backoff_max {
            return Err(BrokerError::invalid(
                "retry.backoff_initial",
                "must not exceed retry.backoff_max",
            ));
        }
        if self.backoff_max > limits::SCHEDULE_HORIZON_MAX {
            return Err(BrokerError::invalid(
                "retry.backoff_max",
                "must not exceed one year",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            backoff_multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn backoff_grows_exponentially_until_the_cap() {
        let p = policy(Jitter::None);
        let waits: Vec<u128> = (1..=7).map(|a| p.backoff(a, 0.5).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn full_jitter_scales_the_ceiling_by_the_random_draw() {
        let p = policy(Jitter::Full);
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(3, 0.5).as_millis(), 200);
        assert_eq!(p.backoff(30, 0.25).as_millis(), 500);
    }

    #[test]
    fn validation_names_the_field() {
        let p = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("max_attempts")
        );
        let p = RetryPolicy {
            backoff_multiplier: f64::NAN,
            ..RetryPolicy::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("multiplier"));
        let p = RetryPolicy {
            backoff_initial: Duration::from_secs(3600),
            ..RetryPolicy::default()
        };
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("backoff_initial")
        );
        RetryPolicy::default().validate().unwrap();
    }

    proptest! {
        #[test]
        fn backoff_never_exceeds_the_cap(attempt in 0u32..2000, random in 0.0f64..1.0) {
            let p = policy(Jitter::Full);
            prop_assert!(p.backoff(attempt, random) <= p.backoff_max);
        }
    }
}
