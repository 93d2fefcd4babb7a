//! The simulated downstream: an in-process service (a payment provider, say) that serves a
//! fixed number of requests a second and refuses the rest, as an HTTP service answering 503
//! with `Retry-After` does.
//!
//! The model is a generic cell rate algorithm (`Admission`): requests start at most `rate`
//! a second, with up to `burst` at once after a quiet spell. A request that arrives while the
//! service is busy waits its turn (queueing latency: the service gets slower as it is pushed
//! over its capacity), up to `queue_delay_max`; one that would wait longer is refused at once
//! with a Retry-After of the time the queued requests still need. Every admitted request then
//! takes `latency` more. Whatever callers do, no more than `rate` requests a second succeed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What the downstream can take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DownstreamConfig {
    /// Requests served per second, sustained.
    pub rate: f64,
    /// Requests that may start at once after a quiet spell; at least 1.
    pub burst: u32,
    /// The longest a request waits for its turn; beyond it the request is refused.
    pub queue_delay_max: Duration,
    /// How long an admitted request takes once its turn has come.
    pub latency: Duration,
}

impl DownstreamConfig {
    /// W5's downstream: 500 requests/s, bursts of 25, up to 200 ms of queueing (about 100
    /// requests), 20 ms per request.
    pub const W5: DownstreamConfig = DownstreamConfig {
        rate: 500.0,
        burst: 25,
        queue_delay_max: Duration::from_millis(200),
        latency: Duration::from_millis(20),
    };
}

/// A refused request: the downstream is over its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overloaded {
    /// When the downstream says trying again is worth it.
    pub retry_after: Duration,
}

impl std::fmt::Display for Overloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "downstream overloaded (503), retry after {} ms",
            self.retry_after.as_millis()
        )
    }
}

/// The shortest Retry-After the downstream sends, as HTTP services round theirs up.
const RETRY_AFTER_MIN: Duration = Duration::from_millis(50);

/// The admission decision, with time as an argument so tests step it by hand.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Time between two request starts at the sustained rate.
    interval: Duration,
    /// How far ahead of the sustained schedule a request may start: `(burst - 1) * interval`.
    tolerance: Duration,
    queue_delay_max: Duration,
    /// The theoretical arrival time: when the next request would start at the sustained
    /// rate. Only admissions move it, so refusals cost the service nothing.
    tat: Duration,
}

impl Admission {
    pub(crate) fn new(config: &DownstreamConfig) -> Self {
        assert!(
            config.rate > 0.0 && config.burst >= 1,
            "bad downstream {config:?}"
        );
        let interval = Duration::from_secs_f64(1.0 / config.rate);
        Admission {
            interval,
            tolerance: interval * (config.burst - 1),
            queue_delay_max: config.queue_delay_max,
            tat: Duration::ZERO,
        }
    }

    /// Decides on a request arriving at `now`: `Ok(wait)` admits it to start after `wait`,
    /// `Err` refuses it.
    pub(crate) fn admit(&mut self, now: Duration) -> Result<Duration, Overloaded> {
        let tat = self.tat.max(now);
        let start = tat.saturating_sub(self.tolerance).max(now);
        let wait = start - now;
        if wait > self.queue_delay_max {
            return Err(Overloaded {
                retry_after: wait.max(RETRY_AFTER_MIN),
            });
        }
        self.tat = tat + self.interval;
        Ok(wait)
    }
}

/// The downstream service, shared by every handler; it counts what it answered.
#[derive(Debug)]
pub struct Downstream {
    config: DownstreamConfig,
    admission: Mutex<Admission>,
    origin: Instant,
    served: AtomicU64,
    refused: AtomicU64,
}

impl Downstream {
    /// A downstream that starts idle now.
    pub fn new(config: DownstreamConfig) -> Self {
        Downstream {
            config,
            admission: Mutex::new(Admission::new(&config)),
            origin: Instant::now(),
            served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// One request: waits its turn and the service's latency, or is refused at once.
    pub async fn call(&self) -> Result<(), Overloaded> {
        let decision = self
            .admission
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(self.origin.elapsed());
        match decision {
            Ok(wait) => {
                tokio::time::sleep(wait + self.config.latency).await;
                self.served.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(overloaded) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(overloaded)
            }
        }
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Requests refused as overloaded so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Admission {
        Admission::new(&DownstreamConfig {
            rate: 100.0,
            burst: 5,
            queue_delay_max: Duration::from_millis(50),
            latency: Duration::ZERO,
        })
    }

    #[test]
    fn a_burst_starts_at_once_then_requests_queue_and_beyond_the_queue_are_refused() {
        let mut a = admission();
        let now = Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(a.admit(now), Ok(Duration::ZERO));
        }
        // 10 ms apart at 100/s: five more fit in 50 ms of queueing.
        for i in 1..=5 {
            assert_eq!(a.admit(now), Ok(Duration::from_millis(10 * i)));
        }
        let refused = a.admit(now).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(60));
        assert!(a.admit(now).is_err(), "a refusal does not make room");
    }

    #[test]
    fn the_sustained_rate_is_never_exceeded() {
        let mut a = admission();
        let mut admitted = 0;
        // 1,000 requests a second for ten seconds, ten times the capacity.
        for ms in 0..10_000u64 {
            if a.admit(Duration::from_millis(ms)).is_ok() {
                admitted += 1;
            }
        }
        // 100/s for 10 s, plus the burst and the queue at the end.
        assert!((1000..=1010).contains(&admitted), "{admitted}");
    }

    #[test]
    fn below_capacity_nothing_waits() {
        let mut a = admission();
        for i in 0..1000u64 {
            assert_eq!(a.admit(Duration::from_millis(i * 11)), Ok(Duration::ZERO));
        }
    }
}
