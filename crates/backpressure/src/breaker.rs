//! [`CircuitBreaker`]: stop calling what keeps failing, then probe until it works again.

use std::time::Duration;

use crate::error::InvalidConfig;

/// When a [`CircuitBreaker`] opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures (errors or timeouts) that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before it lets probes through.
    pub open_for: Duration,
    /// Most calls let through at once while half-open.
    pub half_open_probes: u32,
    /// Consecutive successful probes that close the breaker again.
    pub close_after: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
            close_after: 2,
        }
    }
}

impl BreakerConfig {
    /// Checks the settings; the error names the one that cannot work.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.failure_threshold == 0 {
            return Err(InvalidConfig::new(
                "failure_threshold",
                "must be at least 1",
            ));
        }
        if self.open_for.is_zero() {
            return Err(InvalidConfig::new("open_for", "must be positive"));
        }
        if self.half_open_probes == 0 {
            return Err(InvalidConfig::new("half_open_probes", "must be at least 1"));
        }
        if self.close_after == 0 {
            return Err(InvalidConfig::new("close_after", "must be at least 1"));
        }
        Ok(())
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// Calls fail fast until the open period ends.
    Open,
    /// A few probe calls go through; enough successes close the breaker, a failure opens it.
    HalfOpen,
}

/// The answer to a call refused by an open breaker: when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open: the broker failed repeatedly; retry in {retry_in:?}")]
pub struct BreakerOpen {
    /// How long until the breaker lets a probe through.
    pub retry_in: Duration,
}

/// A producer's circuit breaker (closed → open after `failure_threshold` consecutive failures →
/// half-open after `open_for` → closed after `close_after` successful probes).
///
/// Call [`CircuitBreaker::check`] before each call, and [`record_success`] or
/// [`record_failure`] after it. While open, `check` refuses at once, so a producer facing a
/// broken or overloaded broker fails fast instead of piling up timeouts.
///
/// [`record_success`]: CircuitBreaker::record_success
/// [`record_failure`]: CircuitBreaker::record_failure
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Closed {
        failures: u32,
    },
    Open {
        until: Duration,
    },
    /// `probes`: calls let through and not yet answered; `successes`: probes answered well.
    /// A probe whose answer never comes would block the breaker, so after another `open_for`
    /// (from `since`) the count of outstanding probes is forgotten.
    HalfOpen {
        probes: u32,
        successes: u32,
        since: Duration,
    },
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(CircuitBreaker {
            config,
            mode: Mode::Closed { failures: 0 },
        })
    }

    /// The state at `now`.
    pub fn state(&self, now: Duration) -> BreakerState {
        match self.mode {
            Mode::Closed { .. } => BreakerState::Closed,
            Mode::Open { until } if now < until => BreakerState::Open,
            Mode::Open { .. } | Mode::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call at `now`: `Ok` lets it through (and, half-open, counts it as a
    /// probe); `Err` says how long to wait.
    pub fn check(&mut self, now: Duration) -> Result<(), BreakerOpen> {
        match self.mode {
            Mode::Closed { .. } => Ok(()),
            Mode::Open { until } if now < until => Err(BreakerOpen {
                retry_in: until - now,
            }),
            Mode::Open { .. } => {
                self.mode = Mode::HalfOpen {
                    probes: 1,
                    successes: 0,
                    since: now,
                };
                Ok(())
            }
            Mode::HalfOpen {
                probes,
                successes,
                since,
            } => {
                let probes = if now.saturating_sub(since) >= self.config.open_for {
                    0
                } else {
                    probes
                };
                if probes >= self.config.half_open_probes {
                    return Err(BreakerOpen {
                        retry_in: (since + self.config.open_for).saturating_sub(now),
                    });
                }
                self.mode = Mode::HalfOpen {
                    probes: probes + 1,
                    successes,
                    since: if probes == 0 { now } else { since },
                };
                Ok(())
            }
        }
    }

    /// Records a call that succeeded.
    pub fn record_success(&mut self, _now: Duration) {
        self.mode = match self.mode {
            Mode::Closed { .. } => Mode::Closed { failures: 0 },
            Mode::HalfOpen {
                probes,
                successes,
                since,
            } => {
                if successes + 1 >= self.config.close_after {
                    Mode::Closed { failures: 0 }
                } else {
                    Mode::HalfOpen {
                        probes: probes.saturating_sub(1),
                        successes: successes + 1,
                        since,
                    }
                }
            }
            // A late success from before the breaker opened does not close it.
            open @ Mode::Open { .. } => open,
        };
    }

    /// Records a call that failed or timed out.
    pub fn record_failure(&mut self, now: Duration) {
        let open = Mode::Open {
            until: now + self.config.open_for,
        };
        self.mode = match self.mode {
            Mode::Closed { failures } if failures + 1 >= self.config.failure_threshold => open,
            Mode::Closed { failures } => Mode::Closed {
                failures: failures + 1,
            },
            Mode::HalfOpen { .. } => open,
            Mode::Open { until } => Mode::Open { until },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: s(10),
            half_open_probes: 1,
            close_after: 2,
        })
        .unwrap()
    }

    #[test]
    fn opens_after_consecutive_failures_and_fails_fast() {
        let mut b = breaker();
        for _ in 0..2 {
            b.check(s(0)).unwrap();
            b.record_failure(s(0));
        }
        assert_eq!(b.state(s(0)), BreakerState::Closed);
        b.record_failure(s(1));
        assert_eq!(b.state(s(1)), BreakerState::Open);
        assert_eq!(b.check(s(4)), Err(BreakerOpen { retry_in: s(7) }));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut b = breaker();
        b.record_failure(s(0));
        b.record_failure(s(0));
        b.record_success(s(0));
        b.record_failure(s(0));
        b.record_failure(s(0));
        assert_eq!(b.state(s(0)), BreakerState::Closed);
    }

    #[test]
    fn half_opens_after_the_open_period_and_closes_after_enough_probes() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure(s(0));
        }
        assert_eq!(b.state(s(10)), BreakerState::HalfOpen);
        b.check(s(10)).unwrap();
        assert!(b.check(s(10)).is_err(), "one probe at a time");
        b.record_success(s(11));
        assert_eq!(b.state(s(11)), BreakerState::HalfOpen);
        b.check(s(11)).unwrap();
        b.record_success(s(12));
        assert_eq!(b.state(s(12)), BreakerState::Closed);
        b.check(s(12)).unwrap();
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure(s(0));
        }
        b.check(s(10)).unwrap();
        b.record_failure(s(10));
        assert_eq!(b.state(s(15)), BreakerState::Open);
        assert_eq!(b.check(s(15)), Err(BreakerOpen { retry_in: s(5) }));
    }

    #[test]
    fn a_probe_that_never_answers_does_not_block_for_ever() {
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure(s(0));
        }
        b.check(s(10)).unwrap();
        assert!(b.check(s(19)).is_err());
        b.check(s(20)).unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let config = BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        };
        assert_eq!(
            CircuitBreaker::new(config).unwrap_err().field,
            "failure_threshold"
        );
    }
}
