//! The worker as a metrics source: its gauges (leases, running, prefetched, concurrency per
//! queue; adaptive limits per kind), its overload and timeout counters, and the duration of
//! every handler run, by queue, kind and outcome.
//!
//! The levels are read from the live counts in [`crate::capacity`] at scrape time, as
//! [`crate::WorkerHandle::stats`] reads them. Durations are recorded by the supervisor when a
//! handler ends, into histograms made when the worker is built (one set per queue and kind),
//! so recording takes two atomic additions and no lock. Every series carries the worker's
//! name (label `worker`), so workers of one process, or of many pods, stay apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use floodway_metrics::catalog::{
    HANDLER_OUTCOMES, Kind, WORKER_CONCURRENCY, WORKER_HANDLER_DURATION_SECONDS, WORKER_KIND_LIMIT,
    WORKER_LEASES, WORKER_OVERLOADED_TOTAL, WORKER_PREFETCHED, WORKER_RUNNING,
    WORKER_TIMEOUTS_TOTAL,
};
use floodway_metrics::{Histogram, Samples, Source, SourceFuture};

use crate::capacity::{Kinds, QueueCapacity};

/// How a handler run ended, as the `outcome` label of its duration says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandlerOutcome {
    /// It returned [`crate::Outcome::Complete`].
    Complete,
    /// It returned a retry ([`crate::Outcome::Retry`], [`crate::Outcome::RetryAfter`]).
    Retry,
    /// It failed the task for good ([`crate::Outcome::Fail`]).
    Fail,
    /// It reported its downstream overloaded ([`crate::Outcome::Overloaded`]).
    Overloaded,
    /// It panicked.
    Panic,
    /// It ran past its timeout and was stopped.
    Timeout,
    /// It was stopped: its lease was lost, or the shutdown grace period ended.
    Cancelled,
}

impl HandlerOutcome {
    /// The position of the outcome's label in [`HANDLER_OUTCOMES`].
    fn index(self) -> usize {
        self as usize
    }
}

/// One histogram per outcome, for one queue and kind.
#[derive(Debug)]
pub(crate) struct OutcomeDurations([Histogram; HANDLER_OUTCOMES.len()]);

impl OutcomeDurations {
    fn new() -> Self {
        let bounds = match WORKER_HANDLER_DURATION_SECONDS.kind {
            Kind::Histogram(bounds) => bounds,
            _ => unreachable!("the handler duration is a histogram"),
        };
        OutcomeDurations(std::array::from_fn(|_| Histogram::new(bounds)))
    }
}

/// Handler durations of one queue, by kind. Made by the builder with every kind that has a
/// handler; a task of another kind never runs a handler, so it records nothing.
#[derive(Debug, Default)]
pub(crate) struct HandlerDurations {
    by_kind: HashMap<String, OutcomeDurations>,
}

impl HandlerDurations {
    /// Histograms for each of `kinds`.
    pub(crate) fn new<'k>(kinds: impl IntoIterator<Item = &'k String>) -> Self {
        HandlerDurations {
            by_kind: kinds
                .into_iter()
                .map(|kind| (kind.clone(), OutcomeDurations::new()))
                .collect(),
        }
    }

    /// Records that a handler of `kind` ran for `elapsed` and ended with `outcome`.
    pub(crate) fn record(&self, kind: &str, outcome: HandlerOutcome, elapsed: Duration) {
        if let Some(durations) = self.by_kind.get(kind) {
            durations.0[outcome.index()].observe(elapsed);
        }
    }
}

/// A worker's metrics source, registered (weakly) with a registry by
/// [`crate::WorkerBuilder::metrics`]: it lives as long as the worker or a handle of it.
#[derive(Debug)]
pub(crate) struct WorkerMetrics {
    pub(crate) name: Arc<str>,
    pub(crate) queues: Vec<Arc<QueueCapacity>>,
    pub(crate) kinds: Arc<Kinds>,
}

impl WorkerMetrics {
    fn add_to(&self, samples: &mut Samples) {
        let worker = &*self.name;
        for queue in &self.queues {
            let activity = queue.snapshot();
            let labels = [worker, queue.queue.as_str()];
            samples.gauge(&WORKER_LEASES, &labels, activity.leases as f64);
            samples.gauge(&WORKER_RUNNING, &labels, activity.running as f64);
            samples.gauge(&WORKER_PREFETCHED, &labels, activity.prefetched as f64);
            samples.gauge(&WORKER_CONCURRENCY, &labels, activity.concurrency as f64);
        }
        for kind in self.kinds.snapshot() {
            let labels = [worker, kind.kind.as_str()];
            if let Some(limit) = kind.limit {
                samples.gauge(&WORKER_KIND_LIMIT, &labels, f64::from(limit));
            }
            samples.counter(&WORKER_OVERLOADED_TOTAL, &labels, kind.overloaded);
            samples.counter(&WORKER_TIMEOUTS_TOTAL, &labels, kind.timed_out);
        }
        for queue in &self.queues {
            let mut kinds: Vec<_> = queue.durations.by_kind.iter().collect();
            kinds.sort_by(|a, b| a.0.cmp(b.0));
            for (kind, durations) in kinds {
                for (outcome, histogram) in HANDLER_OUTCOMES.iter().zip(&durations.0) {
                    // Only what happened: seven empty outcomes per kind would be noise.
                    if !histogram.is_empty() {
                        samples.histogram(
                            &WORKER_HANDLER_DURATION_SECONDS,
                            &[worker, queue.queue.as_str(), kind, outcome],
                            histogram.snapshot(),
                        );
                    }
                }
            }
        }
    }
}

impl Source for WorkerMetrics {
    fn collect<'a>(&'a self, samples: &'a mut Samples) -> SourceFuture<'a> {
        self.add_to(samples);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_in_the_catalog_order() {
        let all = [
            HandlerOutcome::Complete,
            HandlerOutcome::Retry,
            HandlerOutcome::Fail,
            HandlerOutcome::Overloaded,
            HandlerOutcome::Panic,
            HandlerOutcome::Timeout,
            HandlerOutcome::Cancelled,
        ];
        let labels: Vec<&str> = all.iter().map(|o| HANDLER_OUTCOMES[o.index()]).collect();
        assert_eq!(
            labels,
            [
                "complete",
                "retry",
                "fail",
                "overloaded",
                "panic",
                "timeout",
                "cancelled"
            ]
        );
    }

    #[test]
    fn durations_are_recorded_per_kind_and_outcome() {
        let kinds = ["a".to_owned()];
        let durations = HandlerDurations::new(&kinds);
        durations.record("a", HandlerOutcome::Retry, Duration::from_millis(20));
        durations.record("unknown", HandlerOutcome::Retry, Duration::from_millis(20));
        let a = &durations.by_kind["a"].0;
        assert_eq!(a[HandlerOutcome::Retry.index()].snapshot().count(), 1);
        assert!(a[HandlerOutcome::Complete.index()].is_empty());
    }
}
