//! [`QueueMetrics`]: a broker's queue statistics as metrics, with the backlog in seconds;
//! [`BrokerSource`]: the same as a [`Source`] of a registry.
//!
//! Everything here is read from [`QueueStats`] at scrape time, so it is exactly what the broker
//! reports, and one figure for the whole system whichever process reserves (counters and the
//! start latency live in the broker). The only state kept here is a `DrainMeter` per queue:
//! the completed total sampled at each scrape, turned into a smoothed completion rate, from
//! which the backlog in seconds follows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floodway_backpressure::DrainMeter;
use floodway_core::{Broker, DeadReason, QueueName, QueueStats, TaskState, limits};

use crate::catalog::{
    DEAD_LETTERS_DROPPED_TOTAL, EFFECTS_RECORDED_TOTAL, ENQUEUES_REJECTED_FULL_TOTAL,
    ENQUEUES_REJECTED_OVERLOADED_TOTAL, LEASES_EXPIRED_TOTAL, Metric, QUEUE_BACKLOG_SECONDS,
    QUEUE_COMPLETIONS_PER_SECOND, QUEUE_DEPTH, QUEUE_OLDEST_READY_AGE_SECONDS, QUEUE_PAUSED,
    QUEUE_REFUSING, RESERVES_THROTTLED_TOTAL, STALE_REFUSED_TOTAL, TASK_START_LATENCY_SECONDS,
    TASKS_CANCELLED_TOTAL, TASKS_COMPLETED_TOTAL, TASKS_DEAD_LETTERED_TOTAL,
    TASKS_DEDUPLICATED_TOTAL, TASKS_ENQUEUED_TOTAL, TASKS_RELEASED_TOTAL, TASKS_REPLAYED_TOTAL,
    TASKS_RESERVED_TOTAL, TASKS_RETRIED_TOTAL,
};
use crate::error::MetricsError;
use crate::histogram::HistogramSnapshot;
use crate::registry::{Source, SourceFuture};
use crate::samples::Samples;

/// Turns queue statistics into samples, keeping a completion rate per queue.
///
/// One per exporting process: the rate is measured between this exporter's scrapes. Each
/// queue's meter is fed its completed total whenever its statistics are collected; two
/// scrapes closer than 50 ms apart count as one (the meter ignores the second).
#[derive(Debug)]
pub struct QueueMetrics {
    /// One meter per queue seen, at most [`limits::QUEUES_MAX`]; a queue beyond that gets a
    /// fresh meter at each scrape (its backlog is then its oldest ready age).
    meters: Mutex<HashMap<QueueName, DrainMeter>>,
    /// The zero of the meters' time.
    origin: Instant,
}

/// Reads one running total of a queue.
type TotalOf = fn(&QueueStats) -> u64;

/// The running totals exported per queue, with one label (the queue).
const TOTALS: [(&Metric, TotalOf); 14] = [
    (&TASKS_ENQUEUED_TOTAL, |s| s.totals.enqueued),
    (&TASKS_DEDUPLICATED_TOTAL, |s| s.totals.deduplicated),
    (&TASKS_RESERVED_TOTAL, |s| s.totals.reserved),
    (&TASKS_COMPLETED_TOTAL, |s| s.totals.completed),
    (&TASKS_RETRIED_TOTAL, |s| s.totals.retried),
    (&TASKS_RELEASED_TOTAL, |s| s.totals.released),
    (&TASKS_REPLAYED_TOTAL, |s| s.totals.replayed),
    (&TASKS_CANCELLED_TOTAL, |s| s.totals.cancelled),
    (&DEAD_LETTERS_DROPPED_TOTAL, |s| s.totals.dead_dropped),
    (&ENQUEUES_REJECTED_FULL_TOTAL, |s| s.totals.rejected_full),
    (&ENQUEUES_REJECTED_OVERLOADED_TOTAL, |s| {
        s.totals.rejected_overloaded
    }),
    (&EFFECTS_RECORDED_TOTAL, |s| s.totals.effects_recorded),
    (&LEASES_EXPIRED_TOTAL, |s| s.totals.leases_expired),
    (&STALE_REFUSED_TOTAL, |s| s.totals.stale_refused),
];

impl QueueMetrics {
    /// An exporter that has measured nothing yet.
    pub fn new() -> Self {
        QueueMetrics {
            meters: Mutex::new(HashMap::new()),
            origin: Instant::now(),
        }
    }

    /// Adds the samples of every queue in `stats`, measuring completion rates against the
    /// process's monotonic clock.
    pub fn collect(&self, stats: &[QueueStats], samples: &mut Samples) {
        self.collect_at(self.origin.elapsed(), stats, samples);
    }

    /// [`QueueMetrics::collect`] at `now` (time since an origin of the caller's choosing,
    /// the same at every call), for tests that move time by hand.
    pub fn collect_at(&self, now: Duration, stats: &[QueueStats], samples: &mut Samples) {
        let rates: Vec<Option<f64>> = {
            let mut meters = self.meters.lock().unwrap_or_else(|p| p.into_inner());
            stats
                .iter()
                .map(|s| {
                    if !meters.contains_key(&s.queue) && meters.len() >= limits::QUEUES_MAX {
                        return None;
                    }
                    let meter = meters.entry(s.queue.clone()).or_default();
                    meter.observe(now, s.totals.completed);
                    meter.rate()
                })
                .collect()
        };
        for (s, rate) in stats.iter().zip(rates) {
            let q = s.queue.as_str();
            for state in TaskState::ALL {
                let depth = s.counts.get(state) as f64;
                samples.gauge(&QUEUE_DEPTH, &[q, state.as_str()], depth);
            }
            let age = s.oldest_ready_age.map_or(0.0, |age| age.as_secs_f64());
            samples.gauge(&QUEUE_OLDEST_READY_AGE_SECONDS, &[q], age);
            samples.gauge(
                &QUEUE_BACKLOG_SECONDS,
                &[q],
                backlog_seconds(s.counts.ready, rate, s.oldest_ready_age),
            );
            samples.gauge(&QUEUE_COMPLETIONS_PER_SECOND, &[q], rate.unwrap_or(0.0));
            samples.gauge(&QUEUE_PAUSED, &[q], f64::from(u8::from(s.config.paused)));
            samples.gauge(&QUEUE_REFUSING, &[q], f64::from(u8::from(s.refusing)));
            for (metric, total) in TOTALS {
                samples.counter(metric, &[q], total(s));
            }
            for reason in DeadReason::ALL {
                samples.counter(
                    &TASKS_DEAD_LETTERED_TOTAL,
                    &[q, reason.as_str()],
                    s.totals.dead.get(reason),
                );
            }
            samples.counter(
                &RESERVES_THROTTLED_TOTAL,
                &[q, "rate"],
                s.totals.throttled_rate,
            );
            samples.counter(
                &RESERVES_THROTTLED_TOTAL,
                &[q, "concurrency"],
                s.totals.throttled_concurrency,
            );
            samples.histogram(
                &TASK_START_LATENCY_SECONDS,
                &[q],
                HistogramSnapshot::from(&s.start_latency),
            );
        }
    }
}

impl Default for QueueMetrics {
    fn default() -> Self {
        QueueMetrics::new()
    }
}

/// The backlog in seconds: the time to work off `ready` tasks at `rate` completions per
/// second; while the rate is unknown or zero (nothing completes) and tasks wait, the age of
/// the oldest ready task, which grows for as long as the queue is stuck. 0 when nothing is
/// ready.
pub fn backlog_seconds(ready: u64, rate: Option<f64>, oldest_ready_age: Option<Duration>) -> f64 {
    if ready == 0 {
        return 0.0;
    }
    match rate {
        Some(rate) if rate > 0.0 => ready as f64 / rate,
        _ => oldest_ready_age.map_or(0.0, |age| age.as_secs_f64()),
    }
}

/// A broker's queues as a [`Source`]: every queue's statistics, read from the broker at each
/// scrape. Register one per process that should export the queues (a process embedding the
/// broker, say); `floodway serve` exports them itself.
pub struct BrokerSource<B> {
    broker: Arc<B>,
    queues: QueueMetrics,
}

impl<B: Broker> BrokerSource<B> {
    /// The queues of `broker`.
    pub fn new(broker: Arc<B>) -> Self {
        BrokerSource {
            broker,
            queues: QueueMetrics::new(),
        }
    }
}

impl<B: Broker + 'static> Source for BrokerSource<B> {
    fn collect<'a>(&'a self, samples: &'a mut Samples) -> SourceFuture<'a> {
        Box::pin(async move {
            let stats = self
                .broker
                .stats(None)
                .await
                .map_err(|error| MetricsError::Source {
                    source_name: "broker".to_owned(),
                    reason: error.to_string(),
                })?;
            self.queues.collect(&stats, samples);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::Value;
    use floodway_core::{QueueConfig, QueueTotals, StateCounts};

    fn stats(ready: u64, completed: u64, oldest_ms: Option<u64>) -> QueueStats {
        QueueStats {
            queue: QueueName::new("orders").unwrap(),
            config: QueueConfig::default(),
            counts: StateCounts {
                ready,
                ..StateCounts::default()
            },
            totals: QueueTotals {
                completed,
                ..QueueTotals::default()
            },
            oldest_ready_age: oldest_ms.map(Duration::from_millis),
            refusing: false,
            start_latency: Default::default(),
        }
    }

    fn gauge(samples: &Samples, metric: &Metric) -> f64 {
        match samples.find(metric, &["orders"]) {
            Some(Value::Gauge(level)) => *level,
            other => panic!("{}: {other:?}", metric.name),
        }
    }

    #[test]
    fn backlog_is_ready_tasks_over_the_completion_rate() {
        let metrics = QueueMetrics::new();
        let mut first = Samples::new();
        metrics.collect_at(
            Duration::ZERO,
            &[stats(600, 1_000, Some(4_000))],
            &mut first,
        );
        // No rate yet: the backlog is the oldest ready task's age.
        assert_eq!(gauge(&first, &QUEUE_BACKLOG_SECONDS), 4.0);
        assert_eq!(gauge(&first, &QUEUE_COMPLETIONS_PER_SECOND), 0.0);
        let mut second = Samples::new();
        metrics.collect_at(
            Duration::from_secs(10),
            &[stats(600, 3_000, Some(2_000))],
            &mut second,
        );
        assert_eq!(gauge(&second, &QUEUE_COMPLETIONS_PER_SECOND), 200.0);
        assert_eq!(
            gauge(&second, &QUEUE_BACKLOG_SECONDS),
            3.0,
            "600 / 200 per s"
        );
    }

    #[test]
    fn a_stuck_queue_reports_its_oldest_wait_and_an_empty_one_none() {
        let metrics = QueueMetrics::new();
        let mut samples = Samples::new();
        metrics.collect_at(Duration::ZERO, &[stats(5, 100, Some(1_000))], &mut samples);
        metrics.collect_at(
            Duration::from_secs(30),
            &[stats(5, 100, Some(31_000))],
            &mut samples,
        );
        let mut last = Samples::new();
        metrics.collect_at(
            Duration::from_secs(60),
            &[stats(5, 100, Some(61_000))],
            &mut last,
        );
        assert_eq!(gauge(&last, &QUEUE_BACKLOG_SECONDS), 61.0);
        assert_eq!(backlog_seconds(0, Some(10.0), None), 0.0);
    }

    #[test]
    fn every_figure_of_a_queue_is_exported() {
        let mut s = stats(3, 0, Some(1_500));
        s.totals = QueueTotals {
            enqueued: 7,
            rejected_overloaded: 2,
            throttled_rate: 3,
            throttled_concurrency: 4,
            effects_recorded: 5,
            ..QueueTotals::default()
        };
        s.totals.dead.expired = 6;
        s.refusing = true;
        s.start_latency.record(Duration::from_millis(30));
        let mut samples = Samples::new();
        QueueMetrics::new().collect_at(Duration::ZERO, &[s], &mut samples);
        let text = crate::encode(&samples);
        for line in [
            "floodway_queue_depth{queue=\"orders\",state=\"ready\"} 3",
            "floodway_queue_depth{queue=\"orders\",state=\"dead\"} 0",
            "floodway_queue_oldest_ready_age_seconds{queue=\"orders\"} 1.5",
            "floodway_queue_refusing{queue=\"orders\"} 1",
            "floodway_queue_paused{queue=\"orders\"} 0",
            "floodway_tasks_enqueued_total{queue=\"orders\"} 7",
            "floodway_tasks_dead_lettered_total{queue=\"orders\",reason=\"expired\"} 6",
            "floodway_tasks_dead_lettered_total{queue=\"orders\",reason=\"overflow\"} 0",
            "floodway_enqueues_rejected_overloaded_total{queue=\"orders\"} 2",
            "floodway_reserves_throttled_total{queue=\"orders\",limit=\"rate\"} 3",
            "floodway_reserves_throttled_total{queue=\"orders\",limit=\"concurrency\"} 4",
            "floodway_effects_recorded_total{queue=\"orders\"} 5",
            "floodway_task_start_latency_seconds_bucket{queue=\"orders\",le=\"0.025\"} 0",
            "floodway_task_start_latency_seconds_bucket{queue=\"orders\",le=\"0.05\"} 1",
            "floodway_task_start_latency_seconds_count{queue=\"orders\"} 1",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "missing {line} in\n{text}"
            );
        }
    }

    #[test]
    fn a_broker_source_exports_every_queue_of_the_broker() {
        use floodway_core::{ManualClock, NewTask, ReserveRequest, Timestamp};
        use floodway_embedded::{EmbeddedBroker, Options};

        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
        let broker = Arc::new(
            EmbeddedBroker::open(
                dir.path(),
                Options {
                    clock: Arc::new(clock.clone()),
                    ..Options::default()
                },
            )
            .unwrap(),
        );
        let registry = crate::Registry::new();
        registry
            .register(Arc::new(BrokerSource::new(broker.clone())))
            .unwrap();
        let text = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let q = QueueName::new("emails").unwrap();
                let tasks = vec![NewTask::new("k", "{}"), NewTask::new("k", "{}")];
                broker.enqueue(&q, tasks).await.unwrap();
                clock.advance(Duration::from_millis(1500));
                let request = ReserveRequest::new(q, 1, Duration::from_secs(30));
                assert_eq!(broker.reserve(request).await.unwrap().len(), 1);
                registry.encode().await.unwrap()
            });
        for line in [
            "floodway_queue_depth{queue=\"emails\",state=\"ready\"} 1",
            "floodway_queue_depth{queue=\"emails\",state=\"active\"} 1",
            "floodway_queue_oldest_ready_age_seconds{queue=\"emails\"} 1.5",
            "floodway_queue_backlog_seconds{queue=\"emails\"} 1.5",
            "floodway_tasks_reserved_total{queue=\"emails\"} 1",
            "floodway_task_start_latency_seconds_bucket{queue=\"emails\",le=\"1\"} 0",
            "floodway_task_start_latency_seconds_bucket{queue=\"emails\",le=\"2.5\"} 1",
            "floodway_task_start_latency_seconds_sum{queue=\"emails\"} 1.5",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "missing {line} in\n{text}"
            );
        }
    }
}
