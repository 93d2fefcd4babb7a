//! [`TokenBucket`]: at most `rate` operations per second on average, with bursts up to `burst`.

use std::time::Duration;

use crate::error::InvalidConfig;

/// A token bucket: it holds up to `burst` tokens and refills at `rate` tokens per second; every
/// operation takes one. A queue's rate limit is one bucket in its broker, so every worker and
/// process that reserves from the queue draws on the same tokens.
///
/// Tokens are fractional, so a rate below one per second works, and refilling is computed from
/// elapsed time on each call: the bucket needs no timer.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens the bucket holds: the largest burst.
    burst: f64,
    /// Tokens now, as of `updated`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Duration,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` per second and holding at most `burst` tokens,
    /// starting at `now`.
    pub fn new(rate: f64, burst: u32, now: Duration) -> Result<Self, InvalidConfig> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(InvalidConfig::new(
                "rate",
                "must be a positive number per second",
            ));
        }
        if burst == 0 {
            return Err(InvalidConfig::new("burst", "must be at least 1"));
        }
        Ok(TokenBucket {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            updated: now,
        })
    }

    /// Tokens added per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The most tokens the bucket holds.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// Changes rate and burst, keeping the tokens already saved (capped at the new burst).
    pub fn reconfigure(
        &mut self,
        rate: f64,
        burst: u32,
        now: Duration,
    ) -> Result<(), InvalidConfig> {
        let fresh = TokenBucket::new(rate, burst, now)?;
        self.refill(now);
        self.rate = fresh.rate;
        self.burst = fresh.burst;
        self.tokens = self.tokens.min(self.burst);
        Ok(())
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Duration) -> u32 {
        self.refill(now);
        self.tokens.floor() as u32
    }

    /// Takes up to `max` tokens at `now` and returns how many it took (possibly zero).
    pub fn take_up_to(&mut self, max: u32, now: Duration) -> u32 {
        self.refill(now);
        let taken = (self.tokens.floor() as u32).min(max);
        self.tokens -= f64::from(taken);
        taken
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Duration) -> bool {
        self.take_up_to(1, now) == 1
    }

    /// How long after `now` the next whole token is available; zero if one is.
    pub fn next_token_in(&mut self, now: Duration) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }

    /// Adds the tokens earned since `updated`. Time that goes backwards earns nothing.
    fn refill(&mut self, now: Duration) {
        if now > self.updated {
            let earned = (now - self.updated).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
            self.updated = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn a_full_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(10.0, 5, ms(0)).unwrap();
        assert_eq!(bucket.take_up_to(100, ms(0)), 5);
        assert_eq!(bucket.take_up_to(100, ms(0)), 0);
        assert_eq!(bucket.next_token_in(ms(0)), ms(100));
        assert_eq!(bucket.take_up_to(100, ms(250)), 2);
        assert_eq!(
            bucket.take_up_to(100, ms(10_000)),
            5,
            "refill stops at the burst"
        );
    }

    #[test]
    fn slow_rates_accumulate_fractions() {
        let mut bucket = TokenBucket::new(0.5, 1, ms(0)).unwrap();
        assert!(bucket.try_take(ms(0)));
        assert!(!bucket.try_take(ms(1_999)));
        assert!(bucket.try_take(ms(2_000)));
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let mut bucket = TokenBucket::new(100.0, 1, ms(1_000)).unwrap();
        assert!(bucket.try_take(ms(1_000)));
        assert!(!bucket.try_take(ms(0)));
        assert!(!bucket.try_take(ms(1_000)));
    }

    #[test]
    fn reconfigure_keeps_saved_tokens_up_to_the_new_burst() {
        let mut bucket = TokenBucket::new(1.0, 10, ms(0)).unwrap();
        bucket.reconfigure(1.0, 3, ms(0)).unwrap();
        assert_eq!(bucket.available(ms(0)), 3);
        assert!(bucket.reconfigure(0.0, 3, ms(0)).is_err());
        assert_eq!(bucket.burst(), 3, "a refused change changes nothing");
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(
            TokenBucket::new(f64::NAN, 1, ms(0)).unwrap_err().field,
            "rate"
        );
        assert_eq!(TokenBucket::new(-1.0, 1, ms(0)).unwrap_err().field, "rate");
        assert_eq!(TokenBucket::new(1.0, 0, ms(0)).unwrap_err().field, "burst");
    }

    proptest! {
        /// Over any window, the tokens taken never exceed burst + rate × window.
        #[test]
        fn never_more_than_burst_plus_rate_times_elapsed(
            rate in 1u32..1000,
            burst in 1u32..100,
            steps in prop::collection::vec((0u64..50, 0u32..20), 1..200),
        ) {
            let mut bucket = TokenBucket::new(f64::from(rate), burst, ms(0)).unwrap();
            let mut now = 0;
            let mut taken = 0u64;
            for (advance, want) in steps {
                now += advance;
                taken += u64::from(bucket.take_up_to(want, ms(now)));
                let allowed = f64::from(burst) + f64::from(rate) * now as f64 / 1000.0;
                prop_assert!(taken as f64 <= allowed + 1e-6, "{taken} > {allowed}");
            }
        }
    }
}
