//! [`RateLimit`]: the settings of a token bucket, as a queue's configuration carries them.

use crate::error::InvalidConfig;

/// The most a rate limit may allow per second, and the largest burst: far above what one broker
/// serves, low enough that the arithmetic stays exact.
pub const RATE_MAX: f64 = 1_000_000.0;

/// A rate limit: on average at most `rate` operations per second, with bursts of up to `burst`.
/// A broker enforces it with a [`crate::TokenBucket`] made by [`RateLimit::bucket`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct RateLimit {
    /// Operations per second, averaged; fractions allowed (0.5 is one every two seconds).
    pub rate: f64,
    /// The most operations allowed at once after a quiet spell; at least 1.
    pub burst: u32,
}

impl RateLimit {
    /// Checks the limit; the error names `rate` or `burst`.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= RATE_MAX) {
            return Err(InvalidConfig::new(
                "rate",
                format!("must be a positive number per second, at most {RATE_MAX}"),
            ));
        }
        if self.burst == 0 || f64::from(self.burst) > RATE_MAX {
            return Err(InvalidConfig::new(
                "burst",
                format!("must be between 1 and {RATE_MAX}"),
            ));
        }
        Ok(())
    }

    /// A full bucket enforcing this limit from `now`.
    pub fn bucket(&self, now: std::time::Duration) -> Result<crate::TokenBucket, InvalidConfig> {
        self.validate()?;
        crate::TokenBucket::new(self.rate, self.burst, now)
    }
}
