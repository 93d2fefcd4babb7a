//! [`Summary`]: a W5 run's figures, as WORKLOADS.md asks for them, and how they print.

use std::fmt;
use std::time::Duration;

/// Wait from a task's offer to its successful downstream call, over the tasks that got one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Successful calls measured.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Longest.
    pub max: Duration,
}

impl Latency {
    /// The percentiles of `millis`, one entry per successful call.
    pub fn of(mut millis: Vec<u32>) -> Self {
        if millis.is_empty() {
            return Latency::default();
        }
        millis.sort_unstable();
        let at = |q: f64| {
            let index = ((millis.len() - 1) as f64 * q).round() as usize;
            Duration::from_millis(u64::from(millis[index]))
        };
        Latency {
            count: millis.len() as u64,
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// How the queue's depth behaved against its watermarks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WatermarkCheck {
    /// The high watermark.
    pub high: u64,
    /// The low watermark.
    pub low: u64,
    /// When the queue first refused an enqueue; `None` if it never did.
    pub first_refusal_at: Option<Duration>,
    /// The lowest depth sampled from then on.
    pub depth_min_after: Option<u64>,
    /// The highest depth sampled from then on.
    pub depth_max_after: Option<u64>,
}

impl WatermarkCheck {
    /// True when, from the first refusal on, the depth never went above the high watermark.
    pub fn held(&self) -> bool {
        self.depth_max_after.is_none_or(|max| max <= self.high)
    }
}

/// A W5 run's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Whether backpressure was on.
    pub backpressure: bool,
    /// From the first offer to the last enqueue call's return.
    pub elapsed: Duration,
    /// Tasks the producers offered.
    pub offered: u64,
    /// Tasks the broker acknowledged.
    pub accepted: u64,
    /// Tasks dropped by a producer that had too many calls in flight.
    pub shed: u64,
    /// Tasks whose enqueue was still refused with backpressure at the producer's deadline:
    /// the producer's caller was told to back off. Never acknowledged, so not lost.
    pub given_up: u64,
    /// Tasks whose enqueue failed otherwise.
    pub failed: u64,
    /// Enqueue calls refused with backpressure (each refused attempt counts).
    pub producer_refusals: u64,
    /// Accepted tasks completed.
    pub completed: u64,
    /// Accepted tasks still waiting (ready, scheduled or retrying) at the end.
    pub waiting: u64,
    /// Accepted tasks still leased at the end (0 after a graceful shutdown).
    pub active: u64,
    /// Accepted tasks cancelled (W5 cancels none).
    pub cancelled: u64,
    /// Accepted tasks dead-lettered because their TTL passed while they waited.
    pub dead_expired: u64,
    /// Accepted tasks dead-lettered after their last attempt failed.
    pub dead_max_attempts: u64,
    /// Accepted tasks dead-lettered to make room in a full queue.
    pub dead_overflow: u64,
    /// Accepted tasks dead-lettered as permanent failures.
    pub dead_permanent: u64,
    /// Accepted tasks neither completed, nor dead-lettered, nor waiting: must be 0.
    pub lost: u64,
    /// Tasks in the queue that no enqueue acknowledged: must be 0.
    pub unacknowledged: u64,
    /// Downstream requests served.
    pub downstream_served: u64,
    /// Downstream requests refused as overloaded.
    pub downstream_refused: u64,
    /// Failed attempts the worker reported to the broker (retried or dead-lettered).
    pub attempts_failed: u64,
    /// The deepest the queue was in any sample.
    pub depth_max: u64,
    /// The queue's mean depth over the samples.
    pub depth_mean: f64,
    /// The watermark check, when the queue has watermarks.
    pub watermarks: Option<WatermarkCheck>,
    /// From a task's offer (producer waits included) to its successful downstream call.
    pub offer_to_success: Latency,
    /// From a task's acceptance by the broker to its successful downstream call.
    pub enqueue_to_success: Latency,
    /// How long the oldest task still waiting at the end had been in the queue.
    pub waiting_age_max: Option<Duration>,
    /// Attempts already spent by the tasks still waiting at the end, on average.
    pub waiting_attempts_mean: f64,
    /// The most attempts one of them had spent.
    pub waiting_attempts_max: u32,
    /// The attempts a task gets (the queue's retry policy); one that fails them all is
    /// dead-lettered.
    pub max_attempts: u32,
}

impl Summary {
    /// All dead letters.
    pub fn dead(&self) -> u64 {
        self.dead_expired + self.dead_max_attempts + self.dead_overflow + self.dead_permanent
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_millis();
        writeln!(
            f,
            "W5 summary, backpressure {}",
            if self.backpressure { "ON" } else { "OFF" }
        )?;
        writeln!(
            f,
            "  offered                      {:>8}   in {:.1} s (to the last enqueue's return)",
            self.offered,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "  accepted                     {:>8}", self.accepted)?;
        writeln!(
            f,
            "  turned away at the producer  {:>8}   (refused until the deadline {}, shed {}, failed {})",
            self.given_up + self.shed + self.failed,
            self.given_up,
            self.shed,
            self.failed
        )?;
        writeln!(f, "  completed                    {:>8}", self.completed)?;
        writeln!(
            f,
            "  dead letters                 {:>8}   (expired {}, max attempts {}, overflow {}, permanent {})",
            self.dead(),
            self.dead_expired,
            self.dead_max_attempts,
            self.dead_overflow,
            self.dead_permanent
        )?;
        writeln!(
            f,
            "  still waiting                {:>8}   (oldest in the queue {:.1} s; attempts spent {:.1} on average, at most {} of {})",
            self.waiting,
            self.waiting_age_max.unwrap_or_default().as_secs_f64(),
            self.waiting_attempts_mean,
            self.waiting_attempts_max,
            self.max_attempts
        )?;
        writeln!(
            f,
            "  LOST                         {:>8}   (accepted, not completed, dead or waiting; must be 0; still leased {}; unacknowledged in the queue {})",
            self.lost, self.active, self.unacknowledged
        )?;
        writeln!(
            f,
            "  downstream served            {:>8}",
            self.downstream_served
        )?;
        writeln!(
            f,
            "  downstream overload errors   {:>8}   (failed attempts reported to the broker {})",
            self.downstream_refused, self.attempts_failed
        )?;
        writeln!(
            f,
            "  producer backpressure signals{:>8}   (enqueue calls refused, retries included)",
            self.producer_refusals
        )?;
        writeln!(
            f,
            "  queue depth max / mean       {:>8} / {:.0}",
            self.depth_max, self.depth_mean
        )?;
        for (what, latency) in [
            ("offer to success  ", &self.offer_to_success),
            ("enqueue to success", &self.enqueue_to_success),
        ] {
            writeln!(
                f,
                "  {what}           p50 {} ms, p99 {} ms, max {} ms (completed tasks only)",
                ms(latency.p50),
                ms(latency.p99),
                ms(latency.max),
            )?;
        }
        if let Some(check) = &self.watermarks {
            match (
                check.first_refusal_at,
                check.depth_min_after,
                check.depth_max_after,
            ) {
                (Some(at), Some(min), Some(max)) => writeln!(
                    f,
                    "  watermarks {}/{}: first refusal at {:.1} s; depth after it {}..{}; stayed at or below high: {}",
                    check.high,
                    check.low,
                    at.as_secs_f64(),
                    min,
                    max,
                    if check.held() { "yes" } else { "NO" }
                )?,
                _ => writeln!(
                    f,
                    "  watermarks {}/{}: never crossed",
                    check.high, check.low
                )?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_the_sorted_values() {
        let latency = Latency::of((1..=100).rev().collect());
        assert_eq!(latency.count, 100);
        assert_eq!(latency.p50, Duration::from_millis(51));
        assert_eq!(latency.p99, Duration::from_millis(99));
        assert_eq!(latency.max, Duration::from_millis(100));
        assert_eq!(Latency::of(vec![]), Latency::default());
    }
}
