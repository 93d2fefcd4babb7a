//! [`run`]: one W5 run, start to audit.
//!
//! 1. Open an embedded broker (durable, default options) in the given directory and configure
//!    the queue as the [`Scenario`] says.
//! 2. Start a worker whose handler calls the [`Downstream`] once per task.
//! 3. Offer tasks at a fixed pace through [`floodway_client::Producer`]s (open loop: a call
//!    waiting out a Retry-After does not delay the next offer), while a sampler records the
//!    queue every [`Scenario::sample_every`].
//! 4. When the last enqueue call has returned (accepted, or given up at its deadline), stop
//!    sampling, shut the worker down gracefully (in-flight tasks finish or go back to ready),
//!    and audit: every accepted task id must be found completed, dead-lettered or waiting.
//!
//! Every loop is bounded: the producers make a fixed number of calls, each call retries until
//! its deadline at most, and the whole run is under a time limit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodway_client::{Producer, ProducerEvent};
use floodway_core::{
    Broker, DeadReason, NewTask, QueueName, TaskFilter, TaskId, TaskState, Timestamp, limits,
};
use floodway_embedded::{EmbeddedBroker, Options};
use floodway_worker::{Outcome, TaskContext, Worker, WorkerHandle, WorkerReport};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::downstream::Downstream;
use crate::scenario::{KIND, QUEUE, Scenario};
use crate::summary::{Latency, Summary, WatermarkCheck};
use crate::timeline::{Row, Sample, Timeline};

/// Why a run could not be carried out (as opposed to a run that measured something bad,
/// which [`Summary`] reports).
pub type RunError = Box<dyn std::error::Error + Send + Sync>;

/// What one run produced.
#[derive(Clone, Debug)]
pub struct Run {
    /// The settings it ran with.
    pub scenario: Scenario,
    /// The queue over time.
    pub timeline: Timeline,
    /// The figures.
    pub summary: Summary,
}

/// A task's payload: about 100 bytes of JSON carrying when it was offered.
#[derive(Serialize, Deserialize)]
struct Offer {
    seq: u64,
    /// Microseconds from the run's start to the offer.
    offered_at_us: u64,
    pad: String,
}

/// Per successful downstream call, in milliseconds: since the task was offered (producer
/// waits included) and since the broker accepted it (time in the queue).
#[derive(Debug, Default)]
struct Latencies {
    offered: Vec<u32>,
    enqueued: Vec<u32>,
}

/// What the producers did, counted as it happens.
#[derive(Debug, Default)]
struct ProducerCounts {
    offered: AtomicU64,
    accepted: AtomicU64,
    /// Offers dropped because `calls_max` calls were in flight.
    shed: AtomicU64,
    /// Tasks of calls still refused with backpressure at their deadline.
    given_up: AtomicU64,
    /// Tasks of calls that failed otherwise.
    failed: AtomicU64,
    /// Enqueue calls refused with backpressure: every refused attempt, retried or not.
    refusals: AtomicU64,
    /// The ids the broker acknowledged.
    accepted_ids: Mutex<Vec<TaskId>>,
}

/// Runs W5 as `scenario` says, with the broker's data in `dir` (which should be empty), and
/// calls `on_row` with each second's row as it is sampled.
pub async fn run(
    scenario: &Scenario,
    dir: &Path,
    on_row: impl FnMut(&Row),
) -> Result<Run, RunError> {
    // Offer window, the last calls' deadline, the worker's grace period, and room for a slow
    // machine.
    let limit = scenario.offer_for + scenario.producer_deadline + Duration::from_secs(60);
    tokio::time::timeout(limit, run_unbounded(scenario, dir, on_row))
        .await
        .map_err(|_| format!("the run did not finish within {} s", limit.as_secs()))?
}

async fn run_unbounded(
    scenario: &Scenario,
    dir: &Path,
    on_row: impl FnMut(&Row),
) -> Result<Run, RunError> {
    let broker = Arc::new(EmbeddedBroker::open(dir, Options::default())?);
    let queue = QueueName::new(QUEUE)?;
    broker.configure(&queue, scenario.queue.clone()).await?;

    let origin = Instant::now();
    let downstream = Arc::new(Downstream::new(scenario.downstream));
    let latencies = Arc::new(Mutex::new(Latencies::default()));
    let worker = build_worker(
        scenario,
        broker.clone(),
        downstream.clone(),
        latencies.clone(),
        origin,
    )?;
    let handle = worker.handle();
    let worker_task = tokio::spawn(worker.run(std::future::pending()));

    let counts = Arc::new(ProducerCounts::default());
    let (stop, stopped) = watch::channel(false);
    let offering = async {
        let result = offer(scenario, broker.clone(), &queue, counts.clone(), origin).await;
        let _ = stop.send(true);
        result
    };
    let sampling = sample(
        scenario,
        broker.as_ref(),
        &queue,
        Sources {
            downstream: &downstream,
            counts: &counts,
            worker: &handle,
        },
        origin,
        stopped,
        on_row,
    );
    let (offered, timeline) = tokio::join!(offering, sampling);
    offered?;
    let timeline = timeline?;
    let elapsed = origin.elapsed();

    handle.shutdown();
    let report = worker_task.await?;
    let accepted_ids = std::mem::take(&mut *lock(&counts.accepted_ids));
    let audit = audit(broker.as_ref(), &queue, &accepted_ids).await?;
    broker.close().await;

    let latencies = std::mem::take(&mut *lock(&latencies));
    let summary = summarise(
        scenario,
        &timeline,
        &counts,
        &downstream,
        &audit,
        &report,
        latencies,
        elapsed,
    );
    Ok(Run {
        scenario: scenario.clone(),
        timeline,
        summary,
    })
}

/// The worker: one handler that calls the downstream. With backpressure a refusal is
/// reported as [`Outcome::Overloaded`] with the downstream's Retry-After (and cuts the kind's
/// adaptive limit); without, it is a plain failure retried after the task's backoff.
fn build_worker(
    scenario: &Scenario,
    broker: Arc<EmbeddedBroker>,
    downstream: Arc<Downstream>,
    latencies: Arc<Mutex<Latencies>>,
    origin: Instant,
) -> Result<Worker<EmbeddedBroker>, RunError> {
    let backpressure = scenario.backpressure;
    let mut builder = Worker::builder(broker)
        .name("w5-worker")
        .queue(QUEUE, scenario.worker_concurrency)
        .handler(KIND, move |ctx: TaskContext, offer: Offer| {
            let downstream = downstream.clone();
            let latencies = latencies.clone();
            async move {
                match downstream.call().await {
                    Ok(()) => {
                        let since_offer = origin
                            .elapsed()
                            .saturating_sub(Duration::from_micros(offer.offered_at_us));
                        let in_queue = Timestamp::now_system().saturating_since(ctx.created_at());
                        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
                        let mut latencies = lock(&latencies);
                        latencies.offered.push(ms(since_offer));
                        latencies.enqueued.push(ms(in_queue));
                        Outcome::Complete
                    }
                    Err(overloaded) if backpressure => {
                        Outcome::overloaded_for(overloaded.retry_after, overloaded)
                    }
                    Err(overloaded) => Outcome::retry(overloaded),
                }
            }
        })
        .kind_timeout(KIND, Duration::from_secs(10))
        .poll_wait(Duration::from_millis(500))
        .grace_period(Duration::from_secs(5));
    if let Some(aimd) = scenario.adaptive {
        builder = builder.adaptive(KIND, aimd);
    }
    Ok(builder.build()?)
}

/// Offers `scenario.offered()` tasks at the scenario's pace and returns when every enqueue
/// call has returned.
async fn offer(
    scenario: &Scenario,
    broker: Arc<EmbeddedBroker>,
    queue: &QueueName,
    counts: Arc<ProducerCounts>,
    origin: Instant,
) -> Result<(), RunError> {
    let observed = counts.clone();
    let producer =
        Producer::from_broker(broker, scenario.producer_config())?.with_observer(move |event| {
            if let ProducerEvent::Backoff { error, .. } = event
                && error.is_backpressure()
            {
                observed.refusals.fetch_add(1, Ordering::Relaxed);
            }
        });
    let calls_max = u32::try_from(scenario.calls_max)?;
    let calls = Arc::new(Semaphore::new(scenario.calls_max));
    let interval = scenario.batch_interval();
    let batches = scenario.batches_per_producer();
    let mut lanes = Vec::new();
    for lane in 0..scenario.producers {
        let producer = producer.clone();
        let queue = queue.clone();
        let counts = counts.clone();
        let calls = calls.clone();
        let batch = scenario.batch;
        // Producers start staggered across one interval, so calls arrive evenly.
        let first = origin + interval * lane / scenario.producers;
        lanes.push(tokio::spawn(async move {
            for b in 0..batches {
                tokio::time::sleep_until(first + interval * b).await;
                counts
                    .offered
                    .fetch_add(u64::from(batch), Ordering::Relaxed);
                let Ok(permit) = calls.clone().try_acquire_owned() else {
                    counts.shed.fetch_add(u64::from(batch), Ordering::Relaxed);
                    continue;
                };
                let offered_at_us = u64::try_from(origin.elapsed().as_micros()).unwrap_or(0);
                let first_seq =
                    (u64::from(lane) * u64::from(batches) + u64::from(b)) * u64::from(batch);
                let tasks = (0..u64::from(batch))
                    .map(|i| {
                        let offer = Offer {
                            seq: first_seq + i,
                            offered_at_us,
                            pad: "x".repeat(40),
                        };
                        NewTask::json(KIND, &offer).expect("an offer serialises")
                    })
                    .collect::<Vec<_>>();
                let producer = producer.clone();
                let queue = queue.clone();
                let counts = counts.clone();
                tokio::spawn(async move {
                    let n = tasks.len() as u64;
                    match producer.enqueue(&queue, tasks).await {
                        Ok(enqueued) => {
                            counts.accepted.fetch_add(n, Ordering::Relaxed);
                            lock(&counts.accepted_ids).extend(enqueued.iter().map(|e| e.id));
                        }
                        Err(error) if error.is_backpressure() => {
                            counts.refusals.fetch_add(1, Ordering::Relaxed);
                            counts.given_up.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "enqueue failed");
                            counts.failed.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    drop(permit);
                });
            }
        }));
    }
    for lane in lanes {
        lane.await?;
    }
    // Every call holds a permit until it has returned: holding them all means none is left.
    let _all = calls.acquire_many(calls_max).await?;
    Ok(())
}

/// What the sampler reads besides the broker.
struct Sources<'a> {
    downstream: &'a Downstream,
    counts: &'a ProducerCounts,
    worker: &'a WorkerHandle,
}

/// Cumulative counters at one instant; rows are differences of two of these.
#[derive(Clone, Copy, Default)]
struct Totals {
    accepted: u64,
    completed: u64,
    served: u64,
    refused: u64,
    refusals: u64,
}

/// Samples the queue until `stopped` turns true, then once more, and returns the timeline.
async fn sample<B: Broker>(
    scenario: &Scenario,
    broker: &B,
    queue: &QueueName,
    sources: Sources<'_>,
    origin: Instant,
    mut stopped: watch::Receiver<bool>,
    mut on_row: impl FnMut(&Row),
) -> Result<Timeline, RunError> {
    let mut timeline = Timeline::default();
    let mut ticks = tokio::time::interval(scenario.sample_every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Totals::default();
    let mut last_at = Duration::ZERO;
    let mut depth_max = 0;
    let mut done = false;
    while !done {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = stopped.wait_for(|stop| *stop) => {
                changed?;
                done = true;
            }
        }
        let stats = broker
            .stats(Some(queue))
            .await?
            .pop()
            .ok_or("the queue has no stats")?;
        let at = origin.elapsed();
        let depth = stats.length();
        depth_max = depth_max.max(depth);
        timeline.samples.push(Sample {
            at,
            depth,
            active: stats.counts.active,
            refusing: stats.refusing,
        });
        let span = at.saturating_sub(last_at);
        if span < Duration::from_secs(1) && !done {
            continue;
        }
        let now = Totals {
            accepted: sources.counts.accepted.load(Ordering::Relaxed),
            completed: stats.totals.completed,
            served: sources.downstream.served(),
            refused: sources.downstream.refused(),
            refusals: sources.counts.refusals.load(Ordering::Relaxed),
        };
        let per_second = |now: u64, before: u64| {
            (now.saturating_sub(before) as f64 / span.as_secs_f64().max(1e-3)).round() as u64
        };
        let row = Row {
            at: at.as_secs_f64(),
            depth,
            depth_max,
            active: stats.counts.active,
            accepted: per_second(now.accepted, last.accepted),
            completed: per_second(now.completed, last.completed),
            downstream_served: per_second(now.served, last.served),
            downstream_refused: per_second(now.refused, last.refused),
            producer_refusals: per_second(now.refusals, last.refusals),
            dead: stats.totals.dead.total(),
            adaptive_limit: sources.worker.stats().kind(KIND).and_then(|k| k.limit),
        };
        on_row(&row);
        timeline.rows.push(row);
        last = now;
        last_at = at;
        depth_max = 0;
    }
    Ok(timeline)
}

/// Where the audit found each accepted task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Audit {
    pub(crate) completed: u64,
    pub(crate) waiting: u64,
    pub(crate) active: u64,
    pub(crate) cancelled: u64,
    pub(crate) dead_expired: u64,
    pub(crate) dead_max_attempts: u64,
    pub(crate) dead_overflow: u64,
    pub(crate) dead_permanent: u64,
    /// Accepted ids the broker does not have: lost.
    pub(crate) missing: u64,
    /// Tasks in the queue that no enqueue acknowledged.
    pub(crate) unacknowledged: u64,
    /// How long the oldest waiting task had been in the queue at the audit.
    pub(crate) waiting_age_max: Option<Duration>,
    /// Attempts spent by the waiting tasks, over all of them, and the most by one.
    pub(crate) waiting_attempts: u64,
    pub(crate) waiting_attempts_max: u32,
}

/// Lists every task of the queue and looks up each accepted id.
async fn audit<B: Broker>(
    broker: &B,
    queue: &QueueName,
    accepted: &[TaskId],
) -> Result<Audit, RunError> {
    let mut found: HashMap<TaskId, (TaskState, Option<DeadReason>, Timestamp, u32)> =
        HashMap::with_capacity(accepted.len());
    let pages_max = accepted.len() / limits::LIST_LIMIT_MAX + 2;
    let mut after = None;
    for _ in 0..=pages_max {
        let page = broker
            .list(TaskFilter {
                queue: Some(queue.clone()),
                after,
                limit: limits::LIST_LIMIT_MAX,
                ..TaskFilter::default()
            })
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.id);
        found.extend(
            page.iter()
                .map(|t| (t.id, (t.state, t.dead_reason, t.created_at, t.attempt))),
        );
    }
    let now = Timestamp::now_system();
    let mut audit = Audit::default();
    for id in accepted {
        let Some((state, reason, created_at, attempt)) = found.remove(id) else {
            audit.missing += 1;
            continue;
        };
        if matches!(
            state,
            TaskState::Scheduled | TaskState::Ready | TaskState::Retrying
        ) {
            let age = now.saturating_since(created_at);
            audit.waiting_age_max = Some(audit.waiting_age_max.map_or(age, |max| max.max(age)));
            audit.waiting_attempts += u64::from(attempt);
            audit.waiting_attempts_max = audit.waiting_attempts_max.max(attempt);
        }
        let count = match (state, reason) {
            (TaskState::Completed, _) => &mut audit.completed,
            (TaskState::Scheduled | TaskState::Ready | TaskState::Retrying, _) => {
                &mut audit.waiting
            }
            (TaskState::Active, _) => &mut audit.active,
            (TaskState::Cancelled, _) => &mut audit.cancelled,
            (TaskState::Dead, Some(DeadReason::Expired)) => &mut audit.dead_expired,
            (TaskState::Dead, Some(DeadReason::Overflow)) => &mut audit.dead_overflow,
            (TaskState::Dead, Some(DeadReason::PermanentFailure)) => &mut audit.dead_permanent,
            (TaskState::Dead, _) => &mut audit.dead_max_attempts,
        };
        *count += 1;
    }
    audit.unacknowledged = found.len() as u64;
    Ok(audit)
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site, every input named"
)]
fn summarise(
    scenario: &Scenario,
    timeline: &Timeline,
    counts: &ProducerCounts,
    downstream: &Downstream,
    audit: &Audit,
    report: &WorkerReport,
    latencies: Latencies,
    elapsed: Duration,
) -> Summary {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let watermarks = scenario.queue.watermarks.map(|marks| {
        let after = timeline.after_first_refusal();
        WatermarkCheck {
            high: marks.high,
            low: marks.low,
            first_refusal_at: after.map(|(at, _, _)| at),
            depth_min_after: after.map(|(_, min, _)| min),
            depth_max_after: after.map(|(_, _, max)| max),
        }
    });
    Summary {
        backpressure: scenario.backpressure,
        elapsed,
        offered: load(&counts.offered),
        accepted: load(&counts.accepted),
        shed: load(&counts.shed),
        given_up: load(&counts.given_up),
        failed: load(&counts.failed),
        producer_refusals: load(&counts.refusals),
        completed: audit.completed,
        waiting: audit.waiting,
        active: audit.active,
        cancelled: audit.cancelled,
        dead_expired: audit.dead_expired,
        dead_max_attempts: audit.dead_max_attempts,
        dead_overflow: audit.dead_overflow,
        dead_permanent: audit.dead_permanent,
        lost: audit.missing + audit.active + audit.cancelled,
        unacknowledged: audit.unacknowledged,
        downstream_served: downstream.served(),
        downstream_refused: downstream.refused(),
        attempts_failed: report.retried + report.dead_lettered,
        depth_max: timeline.depth_max(),
        depth_mean: timeline.depth_mean(),
        watermarks,
        offer_to_success: Latency::of(latencies.offered),
        enqueue_to_success: Latency::of(latencies.enqueued),
        waiting_age_max: audit.waiting_age_max,
        waiting_attempts_mean: if audit.waiting == 0 {
            0.0
        } else {
            audit.waiting_attempts as f64 / audit.waiting as f64
        },
        waiting_attempts_max: audit.waiting_attempts_max,
        max_attempts: scenario.queue.retry.max_attempts,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
