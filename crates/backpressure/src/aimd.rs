//! [`AimdLimiter`]: additive increase, multiplicative decrease of a concurrency limit.

use std::time::Duration;

use crate::error::InvalidConfig;

/// Bounds and pace of an [`AimdLimiter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdConfig {
    /// The limit never goes below this (at least 1).
    pub min: u32,
    /// The limit never goes above this.
    pub max: u32,
    /// Where the limit starts.
    pub initial: u32,
    /// What an overload signal multiplies the limit by, in (0, 1).
    pub decrease_factor: f64,
    /// After a decrease, further overload signals are ignored for this long: the tasks already
    /// running when the downstream pushed back would otherwise cut the limit again and again
    /// for one episode (TCP reacts once per round trip for the same reason).
    pub cooldown: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            min: 1,
            max: 64,
            initial: 16,
            decrease_factor: 0.5,
            cooldown: Duration::from_secs(1),
        }
    }
}

impl AimdConfig {
    /// Checks the settings; the error names the one that cannot work.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.min == 0 {
            return Err(InvalidConfig::new("min", "must be at least 1"));
        }
        if self.max < self.min {
            return Err(InvalidConfig::new("max", "must be at least min"));
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return Err(InvalidConfig::new("initial", "must be between min and max"));
        }
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return Err(InvalidConfig::new(
                "decrease_factor",
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }
}

/// A concurrency limit that adapts to a downstream: every success adds `1 / limit` (so the limit
/// grows by about one per limit's worth of successes, one "round trip"), every overload signal
/// (a timeout, or a handler reporting the downstream overloaded) multiplies it by
/// `decrease_factor`, at most once per cooldown, always within `min ..= max`.
#[derive(Debug, Clone, PartialEq)]
pub struct AimdLimiter {
    config: AimdConfig,
    limit: f64,
    /// When the limit was last cut.
    last_decrease: Option<Duration>,
}

impl AimdLimiter {
    /// A limiter at `config.initial`.
    pub fn new(config: AimdConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(AimdLimiter {
            config,
            limit: f64::from(config.initial),
            last_decrease: None,
        })
    }

    /// How many tasks may run at once now.
    pub fn limit(&self) -> u32 {
        (self.limit.floor() as u32).clamp(self.config.min, self.config.max)
    }

    /// Records a task that finished without overloading its downstream.
    pub fn on_success(&mut self) {
        self.limit = (self.limit + 1.0 / self.limit.max(1.0)).min(f64::from(self.config.max));
    }

    /// Records an overload signal at `now`; returns true if it cut the limit.
    pub fn on_overload(&mut self, now: Duration) -> bool {
        if let Some(last) = self.last_decrease
            && now.saturating_sub(last) < self.config.cooldown
        {
            return false;
        }
        self.limit = (self.limit * self.config.decrease_factor).max(f64::from(self.config.min));
        self.last_decrease = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> AimdLimiter {
        AimdLimiter::new(AimdConfig {
            min: 2,
            max: 40,
            initial: 20,
            decrease_factor: 0.5,
            cooldown: Duration::from_secs(1),
        })
        .unwrap()
    }

    #[test]
    fn overload_halves_the_limit_once_per_cooldown() {
        let mut l = limiter();
        assert!(l.on_overload(Duration::from_secs(10)));
        assert_eq!(l.limit(), 10);
        assert!(
            !l.on_overload(Duration::from_millis(10_500)),
            "still cooling down"
        );
        assert_eq!(l.limit(), 10);
        assert!(l.on_overload(Duration::from_secs(11)));
        assert_eq!(l.limit(), 5);
    }

    #[test]
    fn successes_raise_it_by_about_one_per_round() {
        let mut l = limiter();
        l.on_overload(Duration::ZERO);
        assert_eq!(l.limit(), 10);
        for _ in 0..10 {
            l.on_success();
        }
        assert_eq!(
            l.limit(),
            10,
            "ten successes at limit 10 are one round: almost +1"
        );
        l.on_success();
        assert_eq!(l.limit(), 11);
    }

    #[test]
    fn the_limit_stays_within_bounds() {
        let mut l = limiter();
        for i in 0..20 {
            l.on_overload(Duration::from_secs(i * 2));
        }
        assert_eq!(l.limit(), 2);
        for _ in 0..10_000 {
            l.on_success();
        }
        assert_eq!(l.limit(), 40);
    }

    #[test]
    fn bad_settings_are_named() {
        let config = AimdConfig {
            initial: 100,
            ..AimdConfig::default()
        };
        assert_eq!(AimdLimiter::new(config).unwrap_err().field, "initial");
        let config = AimdConfig {
            decrease_factor: 1.0,
            ..AimdConfig::default()
        };
        assert_eq!(
            AimdLimiter::new(config).unwrap_err().field,
            "decrease_factor"
        );
    }
}
