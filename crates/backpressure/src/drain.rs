//! [`DrainMeter`]: how fast a queue is being worked off, so a refused producer can be told when
//! trying again is worth it.

use std::time::Duration;

/// The shortest Retry-After hint given: below it producers would only spin.
pub const RETRY_AFTER_MIN: Duration = Duration::from_millis(100);
/// The longest Retry-After hint given: beyond it a producer is better off failing its caller.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// The hint given before the meter has seen the queue drain at all.
pub const RETRY_AFTER_UNKNOWN: Duration = Duration::from_secs(1);

/// Samples of a queue's running total of completed tasks turned into a completion rate (an
/// exponentially weighted moving average over samples at least `MIN_SPAN` apart), and from it
/// the time until the queue has worked off a given number of tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainMeter {
    /// The latest sample: when, and the completed total then.
    last: Option<(Duration, u64)>,
    /// Completions per second, smoothed; `None` until two samples far enough apart.
    rate: Option<f64>,
}

impl DrainMeter {
    /// Samples closer together than this are ignored: the rate between them is mostly noise.
    const MIN_SPAN: Duration = Duration::from_millis(50);
    /// The weight of the newest rate in the average.
    const WEIGHT: f64 = 0.5;

    /// A meter that has seen nothing.
    pub fn new() -> Self {
        DrainMeter {
            last: None,
            rate: None,
        }
    }

    /// Records that `completed` tasks had completed in all by `now`.
    pub fn observe(&mut self, now: Duration, completed: u64) {
        match self.last {
            None => self.last = Some((now, completed)),
            Some((then, before)) => {
                if completed < before || now < then {
                    // A reset counter or a clock step: start over from here.
                    self.last = Some((now, completed));
                    return;
                }
                let span = now - then;
                if span < Self::MIN_SPAN {
                    return;
                }
                let rate = (completed - before) as f64 / span.as_secs_f64();
                self.rate = Some(match self.rate {
                    None => rate,
                    Some(old) => old + Self::WEIGHT * (rate - old),
                });
                self.last = Some((now, completed));
            }
        }
    }

    /// Completions per second as last measured; `None` before two samples.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// How long until `backlog` more tasks have completed at the measured rate, clamped to
    /// [`RETRY_AFTER_MIN`] ..= [`RETRY_AFTER_MAX`]; [`RETRY_AFTER_UNKNOWN`] before any rate was
    /// measured, [`RETRY_AFTER_MAX`] when nothing completes.
    pub fn time_to_drain(&self, backlog: u64) -> Duration {
        let wait = match self.rate {
            None => return RETRY_AFTER_UNKNOWN,
            Some(rate) if rate <= 0.0 => RETRY_AFTER_MAX,
            Some(rate) => Duration::from_secs_f64((backlog as f64 / rate).min(1e6)),
        };
        wait.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
    }
}

impl Default for DrainMeter {
    fn default() -> Self {
        DrainMeter::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn the_hint_is_the_backlog_over_the_measured_rate() {
        let mut meter = DrainMeter::new();
        assert_eq!(meter.time_to_drain(100), RETRY_AFTER_UNKNOWN);
        meter.observe(s(0.0), 1_000);
        assert_eq!(meter.rate(), None);
        meter.observe(s(1.0), 1_200);
        assert_eq!(meter.rate(), Some(200.0));
        assert_eq!(meter.time_to_drain(400), s(2.0));
    }

    #[test]
    fn the_rate_is_smoothed_and_close_samples_are_ignored() {
        let mut meter = DrainMeter::new();
        meter.observe(s(0.0), 0);
        meter.observe(s(1.0), 100);
        meter.observe(s(1.01), 10_000);
        assert_eq!(
            meter.rate(),
            Some(100.0),
            "a sample 10 ms later changes nothing"
        );
        meter.observe(s(2.0), 400);
        assert_eq!(meter.rate(), Some(200.0), "the average of 100/s and 300/s");
    }

    #[test]
    fn hints_are_clamped_and_a_stalled_queue_gets_the_longest() {
        let mut meter = DrainMeter::new();
        meter.observe(s(0.0), 0);
        meter.observe(s(1.0), 1_000_000);
        assert_eq!(meter.time_to_drain(1), RETRY_AFTER_MIN);
        let mut stalled = DrainMeter::new();
        stalled.observe(s(0.0), 5);
        stalled.observe(s(10.0), 5);
        assert_eq!(stalled.time_to_drain(1), RETRY_AFTER_MAX);
    }

    #[test]
    fn a_counter_that_goes_back_starts_over() {
        let mut meter = DrainMeter::new();
        meter.observe(s(0.0), 500);
        meter.observe(s(1.0), 10);
        assert_eq!(meter.rate(), None);
        meter.observe(s(2.0), 110);
        assert_eq!(meter.rate(), Some(100.0));
    }
}
