//! The proptest [`model_agrees_with_broker`]: random operation sequences run against a broker
//! and the [`Model`] side by side, compared after every step.
//!
//! One queue is configured with a random length limit, overflow policy, idempotency window and
//! retention; then up to 60 operations run: enqueue batches (priority, delay, time to live,
//! idempotency and partition keys from tiny pools so they collide, few attempts, no jitter),
//! reserve, ack / fail / extend / release of a held lease (the current one, an old one or a
//! forged one), cancel, replay, purge, pause, resume, moving the clock, promote, reap and
//! restart. After each operation the results must be equal, then every task (state, attempt,
//! fence, run-at, priority, dead reason, lease expiry and the rest) and the queue's statistics
//! (start latencies included; after a restart that emptied the broker's, the model's are
//! emptied too, as the rules allow).
//!
//! Priorities and partition keys vary only when the broker declares those capabilities, and a
//! restart step does nothing when the harness cannot restart. A reserve on a paused queue is
//! followed by a reap and a promote on both sides, uncounted, because the rules do not say
//! whether such a reserve does its housekeeping.
//!
//! The broker assigns ids; the model adopts the ids the broker returns for new tasks, in
//! order, after checking that they grow. On failure proptest shrinks the sequence and the panic
//! message prints the shortest one it found.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, Capabilities, Clock, DeadReason, DeadSelector, Failure, Jitter,
    LatencyHistogram, LeaseRef, NewTask, OverflowPolicy, QueueConfig, QueueName, ReserveRequest,
    RetryDecision, RetryPolicy, Task, TaskFilter, TaskId, TaskState, Timestamp, limits,
    task::PRIORITY_DEFAULT,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use super::{Model, RETRY_AFTER};
use crate::Harness;

/// The queue's configuration for one sequence.
#[derive(Clone, Debug)]
struct Setup {
    length_max: Option<u64>,
    overflow: OverflowPolicy,
    idempotency_window_ms: u64,
    completed_retain: u32,
    dead_retain: u64,
}

/// One task of an enqueue batch.
#[derive(Clone, Debug)]
struct Spec {
    priority: u8,
    delay_ms: Option<u64>,
    ttl_ms: Option<u64>,
    idempotency_key: Option<char>,
    partition_key: Option<char>,
    max_attempts: Option<u32>,
}

/// Which lease a lease operation presents.
#[derive(Clone, Debug)]
enum Pick {
    /// The current lease of an active task (any lease, if no task is active).
    Live(usize),
    /// Any lease handed out so far: often stale, expired or finished.
    Any(usize),
    /// A current lease with a fence from the future.
    Forged(usize),
}

#[derive(Clone, Debug)]
enum Retry {
    Backoff,
    After(u64),
    Never,
}

/// Which dead letters replay or purge acts on; ids are indexes into the tasks enqueued so far.
#[derive(Clone, Debug)]
enum Dead {
    Ids(Vec<usize>),
    Matching {
        reason: Option<DeadReason>,
        limit: usize,
    },
}

#[derive(Clone, Debug)]
enum Op {
    /// `poison` appends an invalid task, so the whole batch must be refused.
    Enqueue {
        tasks: Vec<Spec>,
        poison: bool,
    },
    Reserve {
        max: usize,
        lease_ms: u64,
    },
    Ack(Pick),
    Fail(Pick, Retry),
    Extend(Pick, u64),
    Release(Pick),
    /// An index into the tasks enqueued so far (deleted ones included).
    Cancel(usize),
    Replay(Dead),
    Purge(Dead),
    Pause,
    Resume,
    Advance(u64),
    Promote,
    Reap,
    Restart,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![Just(None), (3u64..=8).prop_map(Some)],
        prop_oneof![
            Just(OverflowPolicy::Reject),
            Just(OverflowPolicy::DeadLetterOldest)
        ],
        prop_oneof![Just(1000u64), Just(5000), Just(20_000)],
        prop_oneof![2 => Just(1000u32), 1 => 1u32..=4],
        prop_oneof![2 => Just(100_000u64), 1 => 1u64..=4],
    )
        .prop_map(
            |(length_max, overflow, idempotency_window_ms, completed_retain, dead_retain)| Setup {
                length_max,
                overflow,
                idempotency_window_ms,
                completed_retain,
                dead_retain,
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![Just(1u8), Just(5), Just(9)],
        prop_oneof![2 => Just(None), 1 => Just(Some(500u64)), 1 => Just(Some(2000))],
        prop_oneof![2 => Just(None), 1 => Just(Some(1500u64)), 1 => Just(Some(6000))],
        prop_oneof![2 => Just(None), 1 => prop::char::range('a', 'c').prop_map(Some)],
        prop_oneof![2 => Just(None), 1 => prop::char::range('x', 'y').prop_map(Some)],
        prop_oneof![Just(None), (1u32..=3).prop_map(Some)],
    )
        .prop_map(
            |(priority, delay_ms, ttl_ms, idempotency_key, partition_key, max_attempts)| Spec {
                priority,
                delay_ms,
                ttl_ms,
                idempotency_key,
                partition_key,
                max_attempts,
            },
        )
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => (0usize..64).prop_map(Pick::Live),
        3 => (0usize..64).prop_map(Pick::Any),
        1 => (0usize..64).prop_map(Pick::Forged),
    ]
}

fn dead() -> impl Strategy<Value = Dead> {
    let reason = prop_oneof![
        Just(None),
        Just(Some(DeadReason::MaxAttempts)),
        Just(Some(DeadReason::Expired)),
        Just(Some(DeadReason::Overflow)),
        Just(Some(DeadReason::PermanentFailure)),
    ];
    prop_oneof![
        prop::collection::vec(0usize..64, 1..=3).prop_map(Dead::Ids),
        (reason, 1usize..=3).prop_map(|(reason, limit)| Dead::Matching { reason, limit }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let millis = prop_oneof![
        Just(1u64),
        Just(100),
        Just(499),
        Just(500),
        Just(1000),
        Just(1500),
        Just(3000),
        Just(10_000)
    ];
    let lease = prop_oneof![Just(100u64), Just(1000), Just(3000)];
    let retry = prop_oneof![
        2 => Just(Retry::Backoff),
        1 => prop_oneof![Just(0u64), Just(700)].prop_map(Retry::After),
        1 => Just(Retry::Never),
    ];
    prop_oneof![
        6 => (prop::collection::vec(spec(), 1..=3), prop::bool::weighted(0.05))
            .prop_map(|(tasks, poison)| Op::Enqueue { tasks, poison }),
        5 => (1usize..=3, lease.clone()).prop_map(|(max, lease_ms)| Op::Reserve { max, lease_ms }),
        3 => pick().prop_map(Op::Ack),
        3 => (pick(), retry).prop_map(|(pick, retry)| Op::Fail(pick, retry)),
        1 => (pick(), lease).prop_map(|(pick, ms)| Op::Extend(pick, ms)),
        1 => pick().prop_map(Op::Release),
        1 => (0usize..64).prop_map(Op::Cancel),
        1 => dead().prop_map(Op::Replay),
        1 => dead().prop_map(Op::Purge),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        4 => millis.prop_map(Op::Advance),
        1 => Just(Op::Promote),
        1 => Just(Op::Reap),
        1 => Just(Op::Restart),
    ]
}

/// Runs random operation sequences against fresh harnesses from `factory` and against the
/// [`Model`], and panics with the shortest disagreeing sequence proptest finds.
///
/// 64 sequences by default; the `PROPTEST_CASES` environment variable changes that.
pub fn model_agrees_with_broker<H, F, Fut>(factory: F)
where
    H: Harness,
    F: Fn() -> Fut,
    Fut: Future<Output = H>,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Shrinking runs the sequence again on a fresh broker each time; this many tries
        // finds a short sequence without taking minutes on a disk-backed broker.
        max_shrink_iters: 1024,
        ..Config::default()
    });
    let strategy = (setup(), prop::collection::vec(op(), 1..=60));
    let result = runner.run(&strategy, |(setup, ops)| {
        crate::block_on(async {
            let mut harness = factory().await;
            Run::new(&mut harness, &setup).await?.all(&ops).await
        })
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, (setup, ops))) => {
            let steps: Vec<String> = ops
                .iter()
                .enumerate()
                .map(|(step, op)| format!("  {step:>2}: {op:?}"))
                .collect();
            panic!(
                "the broker disagrees with the model: {reason}\n\
                 shortest failing sequence found:\n  setup: {setup:?}\n{}",
                steps.join("\n")
            );
        }
        Err(TestError::Abort(reason)) => panic!("the model proptest gave up: {reason}"),
    }
}

/// What the suite compares of a task: everything the rules determine. `run_at` is compared
/// only while the task waits (the rules give it meaning only then), the worker only while it
/// is active, and `finished_at` only for being set once the task is finished. `last_error` is
/// left out: the rules say what a failure records, not whether a broker also notes an expired
/// lease there (the cases check the failure's message).
#[derive(Debug, PartialEq)]
struct View {
    id: TaskId,
    queue: QueueName,
    kind: String,
    payload: String,
    state: TaskState,
    attempt: u32,
    fence: u64,
    priority: u8,
    run_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    lease_expires_at: Option<Timestamp>,
    worker: Option<String>,
    dead_reason: Option<DeadReason>,
    retry: RetryPolicy,
    idempotency_key: Option<String>,
    partition_key: Option<String>,
    created_at: Timestamp,
    finished_at_missing: bool,
}

impl View {
    fn of(task: &Task) -> View {
        View {
            id: task.id,
            queue: task.queue.clone(),
            kind: task.kind.clone(),
            payload: String::from_utf8_lossy(&task.payload).into_owned(),
            state: task.state,
            attempt: task.attempt,
            fence: task.fence.0,
            priority: task.priority,
            run_at: task.state.is_waiting().then_some(task.run_at),
            expires_at: task.expires_at,
            lease_expires_at: task.lease_expires_at,
            worker: (task.state == TaskState::Active)
                .then(|| task.worker.clone())
                .flatten(),
            dead_reason: task.dead_reason,
            retry: task.retry.clone(),
            idempotency_key: task.idempotency_key.clone(),
            partition_key: task.partition_key.clone(),
            created_at: task.created_at,
            finished_at_missing: task.state.is_finished() && task.finished_at.is_none(),
        }
    }
}

/// Sets the broker's hint in a [`BrokerError::QueueFull`] to the model's, since brokers
/// choose their own.
fn normalize<T>(result: Result<T, BrokerError>) -> Result<T, BrokerError> {
    result.map_err(|err| match err {
        BrokerError::QueueFull {
            queue, length, max, ..
        } => BrokerError::QueueFull {
            queue,
            length,
            max,
            retry_after: RETRY_AFTER,
        },
        other => other,
    })
}

/// One sequence in progress.
struct Run<'h, H: Harness> {
    harness: &'h mut H,
    model: Model,
    queue: QueueName,
    capabilities: Capabilities,
    /// Every task id the broker returned for a new task, in order.
    ids: Vec<TaskId>,
    /// Every lease handed out, in order.
    leases: Vec<LeaseRef>,
    /// How many times the broker restarted in this run.
    restarts: u32,
    /// For each task, the value of `restarts` when it was last reserved. A task's first
    /// reservation after a restart may get a fence that skips ahead (it must still be greater
    /// than any before), and the model adopts the broker's.
    reserved_after: HashMap<TaskId, u32>,
    /// The step being run and its operation, for failure messages.
    at: String,
}

/// `Err(TestCaseError)` from a broker call that should not fail.
fn ok<T>(result: Result<T, BrokerError>, at: &str, call: &str) -> Result<T, TestCaseError> {
    result.map_err(|err| TestCaseError::fail(format!("{at}: {call} failed: {err}")))
}

impl<'h, H: Harness> Run<'h, H> {
    async fn new(harness: &'h mut H, setup: &Setup) -> Result<Self, TestCaseError> {
        let queue = QueueName::new("model").expect("a valid name");
        let config = QueueConfig {
            length_max: setup.length_max,
            overflow: setup.overflow,
            retry: RetryPolicy {
                max_attempts: 2,
                backoff_initial: Duration::from_secs(1),
                backoff_max: Duration::from_secs(4),
                backoff_multiplier: 2.0,
                jitter: Jitter::None,
            },
            idempotency_window: Duration::from_millis(setup.idempotency_window_ms),
            completed_retain: setup.completed_retain,
            dead_retain: setup.dead_retain,
            paused: false,
            ..QueueConfig::default()
        };
        let mut model = Model::new();
        model
            .configure(&queue, config.clone())
            .expect("a valid config");
        let at = "setup".to_owned();
        ok(
            harness.broker().configure(&queue, config).await,
            &at,
            "configure",
        )?;
        let capabilities = harness.broker().capabilities();
        let run = Run {
            harness,
            model,
            queue,
            capabilities,
            ids: Vec::new(),
            leases: Vec::new(),
            restarts: 0,
            reserved_after: HashMap::new(),
            at,
        };
        run.compare_state().await?;
        Ok(run)
    }

    fn broker(&self) -> &H::Broker {
        self.harness.broker()
    }

    fn now(&self) -> Timestamp {
        self.harness.clock().now()
    }

    async fn all(mut self, ops: &[Op]) -> Result<(), TestCaseError> {
        for (step, op) in ops.iter().enumerate() {
            self.at = format!("step {step} ({op:?})");
            self.step(op).await?;
            self.compare_state().await?;
        }
        Ok(())
    }

    fn new_task(&self, spec: &Spec) -> NewTask {
        let mut task = NewTask::new("model", format!("{spec:?}"));
        if self.capabilities.priorities {
            task = task.priority(spec.priority);
        } else {
            task = task.priority(PRIORITY_DEFAULT);
        }
        if let Some(ms) = spec.delay_ms {
            task = task.delay(Duration::from_millis(ms));
        }
        if let Some(ms) = spec.ttl_ms {
            task = task.ttl(Duration::from_millis(ms));
        }
        if let Some(key) = spec.idempotency_key {
            task = task.idempotency_key(key);
        }
        if let Some(key) = spec
            .partition_key
            .filter(|_| self.capabilities.partition_fifo)
        {
            task = task.partition_key(key);
        }
        if let Some(max_attempts) = spec.max_attempts {
            task = task.retry(RetryPolicy {
                max_attempts,
                backoff_initial: Duration::from_millis(500),
                backoff_max: Duration::from_secs(2),
                backoff_multiplier: 3.0,
                jitter: Jitter::None,
            });
        }
        task
    }

    /// The lease `pick` chooses, if any lease exists yet.
    fn lease(&self, pick: &Pick) -> Option<LeaseRef> {
        let live: Vec<LeaseRef> = self
            .model
            .list(&TaskFilter {
                queue: Some(self.queue.clone()),
                state: Some(TaskState::Active),
                limit: limits::LIST_LIMIT_MAX,
                ..TaskFilter::default()
            })
            .expect("a valid filter")
            .iter()
            .map(|task| LeaseRef {
                task_id: task.id,
                fence: task.fence,
            })
            .collect();
        let any = |i: usize| self.leases.get(i % self.leases.len().max(1)).copied();
        match *pick {
            Pick::Live(i) if !live.is_empty() => Some(live[i % live.len()]),
            Pick::Forged(i) if !live.is_empty() => {
                let lease = live[i % live.len()];
                Some(LeaseRef {
                    fence: lease.fence.next(),
                    ..lease
                })
            }
            Pick::Live(i) | Pick::Any(i) | Pick::Forged(i) => any(i),
        }
    }

    fn selector(&self, dead: &Dead) -> DeadSelector {
        match dead {
            Dead::Ids(indexes) => DeadSelector::Ids(
                indexes
                    .iter()
                    .filter_map(|i| self.ids.get(i % self.ids.len().max(1)).copied())
                    .collect(),
            ),
            Dead::Matching { reason, limit } => DeadSelector::Matching {
                queue: Some(self.queue.clone()),
                reason: *reason,
                limit: *limit,
            },
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now();
        match op {
            Op::Enqueue { tasks, poison } => {
                let mut batch: Vec<NewTask> = tasks.iter().map(|s| self.new_task(s)).collect();
                if *poison {
                    batch.push(NewTask::new("model", "{}").priority(limits::PRIORITY_MAX + 1));
                }
                let got = normalize(self.broker().enqueue(&self.queue, batch.clone()).await);
                let mut new_ids: Vec<TaskId> = got
                    .iter()
                    .flatten()
                    .filter(|answer| !answer.duplicate)
                    .map(|answer| answer.id)
                    .collect();
                for id in &new_ids {
                    if let Some(last) = self.ids.last() {
                        prop_assert!(
                            id > last,
                            "{}: new id {id} is not greater than the previous {last}",
                            self.at
                        );
                    }
                    self.ids.push(*id);
                }
                new_ids.reverse();
                let want = self.model.enqueue(&self.queue, batch, now, || {
                    new_ids.pop().unwrap_or(TaskId::from_u128(u128::MAX))
                });
                prop_assert_eq!(got, want, "{}: enqueue answers", self.at);
            }
            Op::Reserve { max, lease_ms } => {
                let request =
                    ReserveRequest::new(self.queue.clone(), *max, Duration::from_millis(*lease_ms))
                        .worker("model-worker");
                let paused = self.model.config(&self.queue).is_some_and(|c| c.paused);
                let got = self.broker().reserve(request.clone()).await;
                let mut want = self.model.reserve(&request, now);
                if let (Ok(got), Ok(want)) = (&got, &mut want) {
                    for (g, w) in got.iter().zip(want.iter_mut()) {
                        let id = w.lease.task_id;
                        let first_since_restart = self.restarts > 0
                            && self.reserved_after.insert(id, self.restarts) != Some(self.restarts);
                        let skipped = first_since_restart
                            && g.lease.task_id == id
                            && g.lease.fence > w.lease.fence;
                        if skipped {
                            self.model.adopt_fence(w.lease.task_id, g.lease.fence);
                            w.lease.fence = g.lease.fence;
                            w.task.fence = g.lease.fence;
                        }
                    }
                }
                let view = |r: &Result<Vec<floodway_core::Reservation>, BrokerError>| {
                    r.as_ref()
                        .map(|rs| {
                            rs.iter()
                                .map(|r| (View::of(&r.task), r.lease))
                                .collect::<Vec<_>>()
                        })
                        .map_err(Clone::clone)
                };
                prop_assert_eq!(view(&got), view(&want), "{}: reservations", self.at);
                self.leases
                    .extend(got.iter().flatten().map(|r| r.lease.as_ref()));
                if paused {
                    // The rules do not say whether a reserve on a paused queue does its
                    // housekeeping, so do it now on both sides without comparing counts.
                    ok(self.broker().reap().await, &self.at, "reap")?;
                    ok(self.broker().promote().await, &self.at, "promote")?;
                    self.model.reap(now);
                    self.model.promote(now);
                }
            }
            Op::Ack(pick) => {
                if let Some(lease) = self.lease(pick) {
                    let got = self.broker().ack(&[lease]).await;
                    let want = self.model.ack(&[lease], now);
                    prop_assert_eq!(got, want, "{}: ack of {:?}", self.at, lease);
                }
            }
            Op::Fail(pick, retry) => {
                if let Some(lease) = self.lease(pick) {
                    let failure = Failure {
                        lease,
                        error: format!("failed at {}", self.at),
                        retry: match retry {
                            Retry::Backoff => RetryDecision::Backoff,
                            Retry::After(ms) => RetryDecision::After(Duration::from_millis(*ms)),
                            Retry::Never => RetryDecision::Never,
                        },
                    };
                    let got = self.broker().fail(vec![failure.clone()]).await;
                    let want = self.model.fail(vec![failure], now, || 0.5);
                    prop_assert_eq!(got, want, "{}: fail of {:?}", self.at, lease);
                }
            }
            Op::Extend(pick, ms) => {
                if let Some(lease) = self.lease(pick) {
                    let duration = Duration::from_millis(*ms);
                    let got = self.broker().extend(&[lease], duration).await;
                    let want = self.model.extend(&[lease], duration, now);
                    prop_assert_eq!(got, want, "{}: extend of {:?}", self.at, lease);
                }
            }
            Op::Release(pick) => {
                if let Some(lease) = self.lease(pick) {
                    let got = self.broker().release(&[lease]).await;
                    let want = self.model.release(&[lease], now);
                    prop_assert_eq!(got, want, "{}: release of {:?}", self.at, lease);
                }
            }
            Op::Cancel(i) => {
                if let Some(id) = self.ids.get(i % self.ids.len().max(1)).copied() {
                    let got = self.broker().cancel(&[id]).await;
                    let want = self.model.cancel(&[id], now);
                    prop_assert_eq!(got, want, "{}: cancel of {}", self.at, id);
                }
            }
            Op::Replay(dead) => {
                let selector = self.selector(dead);
                let got = self.broker().replay(selector.clone()).await;
                let want = self.model.replay(&selector, now);
                prop_assert_eq!(got, want, "{}: replay of {:?}", self.at, selector);
            }
            Op::Purge(dead) => {
                let selector = self.selector(dead);
                let got = self.broker().purge(selector.clone()).await;
                let want = self.model.purge(&selector);
                prop_assert_eq!(got, want, "{}: purge of {:?}", self.at, selector);
            }
            Op::Pause => {
                let got = self.broker().pause(&self.queue).await;
                let want = self.model.set_paused(&self.queue, true);
                prop_assert_eq!(got, want, "{}: pause", self.at);
            }
            Op::Resume => {
                let got = self.broker().resume(&self.queue).await;
                let want = self.model.set_paused(&self.queue, false);
                prop_assert_eq!(got, want, "{}: resume", self.at);
            }
            Op::Advance(ms) => self.harness.clock().advance(Duration::from_millis(*ms)),
            Op::Promote => {
                let got = self.broker().promote().await;
                prop_assert_eq!(got, Ok(self.model.promote(now)), "{}: promote", self.at);
            }
            Op::Reap => {
                let got = self.broker().reap().await;
                prop_assert_eq!(got, Ok(self.model.reap(now)), "{}: reap", self.at);
            }
            Op::Restart => {
                if self.harness.can_restart() {
                    self.harness.restart().await;
                    self.restarts += 1;
                    // A broker may start its start latencies empty after a restart; the model
                    // follows when it did.
                    let stats = ok(
                        self.broker().stats(Some(&self.queue)).await,
                        &self.at,
                        "stats",
                    )?;
                    if stats[0].start_latency == LatencyHistogram::default() {
                        self.model.forget_start_latency(&self.queue);
                    }
                }
            }
        }
        Ok(())
    }

    /// Compares every task of the queue and the queue's statistics.
    async fn compare_state(&self) -> Result<(), TestCaseError> {
        let filter = TaskFilter {
            queue: Some(self.queue.clone()),
            limit: limits::LIST_LIMIT_MAX,
            ..TaskFilter::default()
        };
        let got = ok(self.broker().list(filter.clone()).await, &self.at, "list")?;
        let want = self.model.list(&filter).expect("a valid filter");
        let got: Vec<View> = got.iter().map(View::of).collect();
        let want: Vec<View> = want.iter().map(View::of).collect();
        if got != want {
            let mut lines = Vec::new();
            if got.len() != want.len() {
                lines.push(format!(
                    "the broker lists {} tasks, the model {}",
                    got.len(),
                    want.len()
                ));
            }
            for (index, (g, w)) in got.iter().zip(&want).enumerate() {
                if g != w {
                    lines.push(format!("task {index}:\n  broker {g:?}\n  model  {w:?}"));
                }
            }
            for extra in got.iter().skip(want.len()) {
                lines.push(format!("only the broker has {extra:?}"));
            }
            for extra in want.iter().skip(got.len()) {
                lines.push(format!("only the model has {extra:?}"));
            }
            return Err(TestCaseError::fail(format!(
                "{}: tasks differ\n{}",
                self.at,
                lines.join("\n")
            )));
        }
        let now = self.now();
        let got = ok(
            self.broker().stats(Some(&self.queue)).await,
            &self.at,
            "stats",
        )?;
        let want = self
            .model
            .stats(Some(&self.queue), now)
            .expect("the queue exists");
        prop_assert_eq!(got, want, "{}: stats", self.at);
        Ok(())
    }
}
