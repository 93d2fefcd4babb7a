//! [`Scenario`]: every setting of one W5 run, with backpressure on or off.
//!
//! [`Scenario::w5`] is the workload as WORKLOADS.md states it; the tests use a scaled-down
//! copy. Keeping the settings in one value means the summary and the docs can print exactly
//! what a run used.

use std::time::Duration;

use floodway_backpressure::{AimdConfig, BreakerConfig, RateLimit, Watermarks};
use floodway_core::{QueueConfig, limits};

use crate::downstream::DownstreamConfig;

/// The queue W5 uses.
pub const QUEUE: &str = "w5";
/// The kind of W5's tasks: call the downstream once.
pub const KIND: &str = "call_downstream";

/// One W5 run's settings.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Whether floodway's backpressure is configured (queue limits, watermarks, adaptive
    /// concurrency, producers pushed back) or not (a naive queue).
    pub backpressure: bool,
    /// How long the producers offer tasks.
    pub offer_for: Duration,
    /// Tasks offered per second, over all producers.
    pub offer_rate: u32,
    /// Producers, each offering `offer_rate / producers` tasks a second.
    pub producers: u32,
    /// Tasks per enqueue call.
    pub batch: u32,
    /// Enqueue calls in flight at once over all producers (calls waiting out a Retry-After
    /// count). An offer that finds none free is shed at once and counted.
    pub calls_max: usize,
    /// How a producer retries a refused call: until this long after the offer, waiting the
    /// broker's Retry-After (with jitter) up to `retry_cap` each time.
    pub producer_deadline: Duration,
    /// The longest single wait of a producer.
    pub retry_cap: Duration,
    /// The simulated downstream.
    pub downstream: DownstreamConfig,
    /// The queue's configuration.
    pub queue: QueueConfig,
    /// The worker's handler slots for the queue.
    pub worker_concurrency: usize,
    /// The adaptive (AIMD) limit of the downstream-calling kind, if any.
    pub adaptive: Option<AimdConfig>,
    /// How often the queue is sampled (depth, active, totals). Rows are per second; the
    /// depth's maximum and the depth curve use every sample.
    pub sample_every: Duration,
}

impl Scenario {
    /// W5: producers offer 2,000 tasks/s for `offer_for` (30 s in WORKLOADS.md) to a queue
    /// whose handlers call a downstream serving 500 requests/s.
    ///
    /// With backpressure the queue admits reservations at 480/s (just under the downstream),
    /// at most 32 at once, refuses enqueues above 5,000 waiting tasks until back at 2,500,
    /// and dead-letters a task still waiting after a minute; the worker cuts its concurrency
    /// when the downstream answers 503 and retries after the downstream's Retry-After. Without
    /// it, the queue has no limits and 256 handlers call the downstream, retrying refused
    /// calls with the default exponential backoff.
    pub fn w5(backpressure: bool, offer_for: Duration) -> Self {
        let mut queue = QueueConfig {
            // Keep every completed task, so the audit at the end finds each one by id.
            completed_retain: limits::COMPLETED_RETAIN_MAX,
            ..QueueConfig::default()
        };
        if backpressure {
            queue.rate_limit = Some(RateLimit {
                rate: 480.0,
                burst: 24,
            });
            queue.concurrency_max = Some(32);
            queue.watermarks = Some(Watermarks {
                high: 5_000,
                low: 2_500,
            });
            queue.ttl = Some(Duration::from_secs(60));
        }
        Scenario {
            backpressure,
            offer_for,
            offer_rate: 2_000,
            producers: 4,
            batch: 50,
            calls_max: 2_000,
            producer_deadline: Duration::from_secs(10),
            retry_cap: Duration::from_secs(10),
            downstream: DownstreamConfig::W5,
            queue,
            worker_concurrency: if backpressure { 32 } else { 256 },
            adaptive: backpressure.then_some(AimdConfig {
                min: 2,
                max: 32,
                initial: 16,
                decrease_factor: 0.5,
                cooldown: Duration::from_secs(1),
            }),
            sample_every: Duration::from_millis(100),
        }
    }

    /// The high watermark, if the queue has one.
    pub fn high_watermark(&self) -> Option<u64> {
        self.queue.watermarks.map(|w| w.high)
    }

    /// The producers' settings: the broker's Retry-After honoured with jitter until the
    /// deadline; the breaker as by default (only an unavailable broker trips it).
    pub fn producer_config(&self) -> floodway_client::ProducerConfig {
        floodway_client::ProducerConfig {
            breaker: BreakerConfig::default(),
            retry_base: Duration::from_millis(100),
            retry_cap: self.retry_cap,
            deadline: self.producer_deadline,
        }
    }

    /// Tasks offered in all.
    pub fn offered(&self) -> u64 {
        u64::from(self.batches_per_producer()) * u64::from(self.batch) * u64::from(self.producers)
    }

    /// Enqueue calls each producer makes.
    pub(crate) fn batches_per_producer(&self) -> u32 {
        let per_producer = f64::from(self.offer_rate) / f64::from(self.producers);
        (per_producer * self.offer_for.as_secs_f64() / f64::from(self.batch)).round() as u32
    }

    /// Time between two calls of one producer.
    pub(crate) fn batch_interval(&self) -> Duration {
        Duration::from_secs_f64(
            f64::from(self.batch) * f64::from(self.producers) / f64::from(self.offer_rate),
        )
    }

    /// A one-line description for the summary and the plot's title.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "{} tasks/s offered for {} s by {} producers in batches of {}; downstream {}/s",
            self.offer_rate,
            self.offer_for.as_secs_f64(),
            self.producers,
            self.batch,
            self.downstream.rate
        )];
        if let Some(limit) = &self.queue.rate_limit {
            parts.push(format!("rate limit {}/s", limit.rate));
        }
        if let Some(max) = self.queue.concurrency_max {
            parts.push(format!("concurrency max {max}"));
        }
        if let Some(marks) = &self.queue.watermarks {
            parts.push(format!("watermarks {}/{}", marks.high, marks.low));
        }
        if let Some(ttl) = self.queue.ttl {
            parts.push(format!("ttl {} s", ttl.as_secs()));
        }
        parts.push(format!("worker concurrency {}", self.worker_concurrency));
        if let Some(aimd) = &self.adaptive {
            parts.push(format!("AIMD {}..{}", aimd.min, aimd.max));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w5_offers_two_thousand_tasks_a_second() {
        let s = Scenario::w5(true, Duration::from_secs(30));
        assert_eq!(s.offered(), 60_000);
        assert_eq!(s.batch_interval(), Duration::from_millis(100));
        s.queue.validate().unwrap();
        Scenario::w5(false, Duration::from_secs(30))
            .queue
            .validate()
            .unwrap();
    }
}
