//! The cases, one `pub async fn` per behaviour, grouped by area. Each takes a fresh harness,
//! drives the broker through its public trait only, moves time with the harness's clock, and
//! asserts what the rules in [`floodway_core::broker`] promise.
//!
//! A case that needs an optional capability (priorities, partition FIFO, restart) checks it
//! first and prints `skipping <case>: broker lacks <capability>` when the broker lacks it.
//!
//! The shared steps below (enqueue one task, reserve exactly one, take a snapshot of
//! everything) assert as they go, so a case reads as the behaviour it checks.

pub mod bad_input;
pub mod cancel;
pub mod dead_letters;
pub mod effects;
pub mod enqueue;
pub mod idempotency;
pub mod leases;
pub mod overflow;
pub mod partitions;
pub mod pause;
pub mod reserve;
pub mod restart;
pub mod retry;
pub mod schedule;
pub mod stats;
pub mod throttling;
pub mod ttl;
pub mod watermarks;

use std::time::Duration;

use floodway_core::{
    Broker, Clock, Enqueued, Jitter, LatencyHistogram, NewTask, QueueConfig, QueueName, QueueStats,
    Reservation, ReserveRequest, RetryPolicy, Task, TaskFilter, TaskId, Timestamp, limits,
};

use crate::Harness;

/// The lease most cases reserve with: long enough never to expire unless a case moves the
/// clock past it.
pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// An optional behaviour a case needs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Needs {
    Priorities,
    PartitionFifo,
    Restart,
}

/// True (after saying so) when the broker lacks what `case` needs, so the case should return.
pub(crate) fn lacks<H: Harness>(h: &H, needs: Needs, case: &str) -> bool {
    let capabilities = h.broker().capabilities();
    let (has, name) = match needs {
        Needs::Priorities => (capabilities.priorities, "priorities"),
        Needs::PartitionFifo => (capabilities.partition_fifo, "partition_fifo"),
        Needs::Restart => (h.can_restart(), "restart"),
    };
    if !has {
        println!("skipping {case}: broker lacks {name}");
    }
    !has
}

pub(crate) fn queue(name: &str) -> QueueName {
    QueueName::new(name).expect("the suite's queue names are valid")
}

/// A task of `kind` with an empty JSON object as payload.
pub(crate) fn task(kind: &str) -> NewTask {
    NewTask::new(kind, "{}")
}

/// A retry policy without jitter, so every retry time is exact.
pub(crate) fn exact_retry(
    max_attempts: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff_initial,
        backoff_max,
        backoff_multiplier: 2.0,
        jitter: Jitter::None,
    }
}

pub(crate) fn now<H: Harness>(h: &H) -> Timestamp {
    h.clock().now()
}

pub(crate) fn after<H: Harness>(h: &H, duration: Duration) -> Timestamp {
    h.clock().now().saturating_add(duration)
}

/// Enqueues `tasks`, which must all be new, and returns their ids.
pub(crate) async fn enqueue<H: Harness>(h: &H, q: &QueueName, tasks: Vec<NewTask>) -> Vec<TaskId> {
    let count = tasks.len();
    let answers = h
        .broker()
        .enqueue(q, tasks)
        .await
        .expect("enqueue of valid tasks");
    assert_eq!(answers.len(), count, "one answer per task");
    answers
        .into_iter()
        .map(|Enqueued { id, duplicate }| {
            assert!(!duplicate, "task {id} should be new, not a duplicate");
            id
        })
        .collect()
}

pub(crate) async fn enqueue_one<H: Harness>(h: &H, q: &QueueName, task: NewTask) -> TaskId {
    enqueue(h, q, vec![task]).await[0]
}

/// Reserves up to `max` tasks with [`LEASE`], without waiting.
pub(crate) async fn reserve<H: Harness>(h: &H, q: &QueueName, max: usize) -> Vec<Reservation> {
    reserve_with(h, ReserveRequest::new(q.clone(), max, LEASE)).await
}

pub(crate) async fn reserve_with<H: Harness>(h: &H, request: ReserveRequest) -> Vec<Reservation> {
    let max = request.max;
    let got = h
        .broker()
        .reserve(request)
        .await
        .expect("reserve with a valid request");
    assert!(
        got.len() <= max,
        "reserve returned {} > max {max}",
        got.len()
    );
    got
}

/// Reserves exactly one task with `lease`; panics if there is none.
pub(crate) async fn reserve_one_for<H: Harness>(
    h: &H,
    q: &QueueName,
    lease: Duration,
) -> Reservation {
    let mut got = reserve_with(h, ReserveRequest::new(q.clone(), 1, lease)).await;
    assert_eq!(got.len(), 1, "expected one task to reserve in {q}");
    got.remove(0)
}

pub(crate) async fn reserve_one<H: Harness>(h: &H, q: &QueueName) -> Reservation {
    reserve_one_for(h, q, LEASE).await
}

/// The ids of what a reserve of up to `max` returns, in order.
pub(crate) async fn reserve_ids<H: Harness>(h: &H, q: &QueueName, max: usize) -> Vec<TaskId> {
    reserve(h, q, max)
        .await
        .into_iter()
        .map(|r| r.task.id)
        .collect()
}

pub(crate) async fn get<H: Harness>(h: &H, id: TaskId) -> Task {
    h.broker().get(id).await.expect("get of a stored task")
}

pub(crate) async fn stats<H: Harness>(h: &H, q: &QueueName) -> QueueStats {
    let mut all = h
        .broker()
        .stats(Some(q))
        .await
        .expect("stats of a known queue");
    assert_eq!(all.len(), 1, "stats of one queue returns one entry");
    all.remove(0)
}

/// Every task matching `filter` (with the maximum limit).
pub(crate) async fn list<H: Harness>(h: &H, filter: TaskFilter) -> Vec<Task> {
    h.broker()
        .list(TaskFilter {
            limit: limits::LIST_LIMIT_MAX,
            ..filter
        })
        .await
        .expect("list with a valid filter")
}

pub(crate) async fn list_queue<H: Harness>(h: &H, q: &QueueName) -> Vec<Task> {
    list(
        h,
        TaskFilter {
            queue: Some(q.clone()),
            ..TaskFilter::default()
        },
    )
    .await
}

pub(crate) async fn configure<H: Harness>(h: &H, q: &QueueName, config: QueueConfig) {
    h.broker()
        .configure(q, config)
        .await
        .expect("configure with a valid config");
}

/// Everything a broker holds that a case can see: every task and every queue's statistics.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    tasks: Vec<Task>,
    stats: Vec<QueueStats>,
}

impl Snapshot {
    /// The same snapshot with the counters of refused calls zeroed: a refused lease
    /// operation or a full queue changes nothing but those counters.
    pub(crate) fn without_refusal_counts(mut self) -> Self {
        for stats in &mut self.stats {
            stats.totals.stale_refused = 0;
            stats.totals.rejected_full = 0;
            stats.totals.rejected_overloaded = 0;
            stats.refusing = false;
        }
        self
    }
}

impl Snapshot {
    /// The same snapshot with each queue's start latencies emptied where `after` (taken
    /// after a restart) has them empty, as the rules let a broker start them.
    pub(crate) fn with_start_latency_as_restarted(mut self, after: &Snapshot) -> Self {
        for stats in &mut self.stats {
            let emptied = after
                .stats
                .iter()
                .any(|a| a.queue == stats.queue && a.start_latency == LatencyHistogram::default());
            if emptied {
                stats.start_latency = LatencyHistogram::default();
            }
        }
        self
    }
}

pub(crate) async fn snapshot<H: Harness>(h: &H) -> Snapshot {
    Snapshot {
        tasks: list(h, TaskFilter::default()).await,
        stats: h.broker().stats(None).await.expect("stats of every queue"),
    }
}
