//! [`Backoff`]: how long a loop waits before calling a failing broker again.
//!
//! Exponential from [`limits::BROKER_BACKOFF_INITIAL`] to [`limits::BROKER_BACKOFF_MAX`], with
//! "equal jitter" (a random wait between half and all of the ceiling) so that many workers
//! that lost the broker together do not come back in lockstep. Task retries do not use this;
//! their backoff is the task's [`floodway_core::RetryPolicy`], applied by the broker.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::limits;

/// The wait before each retry of a failing broker call.
#[derive(Debug)]
pub(crate) struct Backoff {
    /// The ceiling of the next wait; doubles after each failure, up to the maximum.
    ceiling: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            ceiling: limits::BROKER_BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    /// The wait before the next retry; each call makes the following one longer.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(limits::BROKER_BACKOFF_MAX);
        ceiling / 2 + ceiling.mul_f64(random_fraction() / 2.0)
    }

    /// Starts again from the shortest wait, after a call succeeded.
    pub(crate) fn reset(&mut self) {
        self.ceiling = limits::BROKER_BACKOFF_INITIAL;
    }
}

/// A number in `[0, 1)`, different on each call. Good enough for jitter, and it needs no
/// random-number crate: each `RandomState` is seeded from the operating system's randomness.
fn random_fraction() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_jitter_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let mut ceiling = limits::BROKER_BACKOFF_INITIAL;
        for _ in 0..20 {
            let wait = backoff.next_wait();
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} vs {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(limits::BROKER_BACKOFF_MAX);
        }
        assert_eq!(ceiling, limits::BROKER_BACKOFF_MAX);
        backoff.reset();
        assert!(backoff.next_wait() <= limits::BROKER_BACKOFF_INITIAL);
    }

    #[test]
    fn fractions_stay_in_range() {
        for _ in 0..1000 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
