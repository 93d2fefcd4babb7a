//! The [`Broker`] trait: every operation a backend offers, and the types its calls exchange.
//!
//! Calls are batch-first: enqueue, reserve, ack, fail, extend, release and cancel take or
//! return many tasks, so a backend can make one durable write or one round trip for a whole
//! batch. A call either fails as a whole with a [`BrokerError`] (and changed nothing), or
//! returns one result per item, in order, where single items may be refused with a
//! [`Refusal`] without affecting the rest.
//!
//! # Semantics every broker keeps
//!
//! The conformance suite checks each of these rules on every broker.
//!
//! - **Time** is the broker's clock ([`crate::Clock`]). A lease whose `expires_at` is at or
//!   before the broker's "now" is expired at that moment, whether or not the broker has reaped
//!   it yet: ack, fail, extend and release of it are refused with [`Refusal::LeaseExpired`].
//!   A task the broker took back keeps that lease's `lease_expires_at` until it is reserved
//!   again, so later calls with the old fence are still refused as expired. A TTL is passed,
//!   likewise, when `expires_at` is at or before "now".
//! - **Housekeeping** (promoting due tasks, dead-lettering waiting tasks past their TTL,
//!   reaping expired leases) happens in [`Broker::reserve`] for the requested queue (whether
//!   or not it is paused), in [`Broker::promote`] and [`Broker::reap`] for every queue, and in
//!   a broker's own background loop if it has one. The conformance suite turns background
//!   loops off so that only its calls move tasks. Reaping comes before TTL expiry, so a task
//!   whose lease expired after its TTL is dead-lettered, never handed out again.
//! - **Reservation order**: among eligible ready tasks, higher `priority` first; within a
//!   priority, earlier `run_at` first (for a task enqueued ready, `run_at` is its enqueue time;
//!   for a delayed or retried task, the time it became due; for a released or replayed task,
//!   the time of the call; for a task whose lease expired, the lease's `expires_at`); then lower
//!   id first. So the order does not depend on when a broker got round to promoting a due task
//!   or reaping an expired lease.
//! - **Refusals** of a lease operation are decided in this order: unknown task, stale fence,
//!   wrong state (or, for a task taken back by lease expiry, `LeaseExpired`), then an expired
//!   lease of an active task.
//! - **Cancelling a reserve call**: dropping the future while it waits for tasks leases
//!   nothing; dropping it after it took tasks leaves their leases to expire (the tasks run
//!   again later, at least once).
//! - **Durability**: every call that returns `Ok` has made its changes durable, except that a
//!   broker may answer `reserve` before the reservation is durable. A reservation lost in a
//!   crash leaves the task ready again, and its fence stale for ever. But `reserve` never
//!   hands out a task whose own enqueue (or the change that made it ready) is not yet
//!   durable: a task that ran is never lost in a crash and enqueued again under a new id.
//! - **Fences** grow by one with every reservation of a task, except that the first
//!   reservation after a broker restarts may skip ahead (a broker that answers reservations
//!   before they are durable scopes its fences by restart); a fence is never issued twice for
//!   a task and never goes back.
//! - **Reserve** spends an attempt (`attempt + 1`), issues the task's next fence, and sets
//!   the lease to `now + request.lease`. Before choosing, it promotes due tasks, reaps expired
//!   leases and dead-letters waiting tasks whose TTL passed, exactly as [`Broker::promote`] and
//!   [`Broker::reap`] would. A paused or unknown queue yields nothing; like an empty one, it is
//!   waited on for up to `request.wait`.
//! - **Partition keys**: among the unfinished tasks (not completed, dead or cancelled) sharing a
//!   partition key in one queue, only the one with the lowest id is eligible; the next becomes
//!   eligible when it finishes. The others still count as ready (or scheduled) in statistics.
//! - **Failure**: with attempts left and a retry decision other than `Never`, the task goes to
//!   retrying with `run_at = now + backoff` (the policy's, or the decision's wait); otherwise to
//!   the dead letters (`max_attempts` or `permanent_failure`). A lease that expires on the
//!   task's last attempt dead-letters it (`max_attempts`); otherwise the task returns to ready
//!   with its attempt spent and `last_error` saying the lease expired.
//! - **Release** returns the task to ready with `run_at = now` and gives the attempt back.
//! - **Idempotency**: an enqueue whose idempotency key was used in the same queue less than the
//!   queue's `idempotency_window` ago (counted from the first use) creates nothing and returns
//!   the first task's id with `duplicate: true`, whatever that task's state now (even if it
//!   was deleted since, by purge or retention). Within one batch the second use of a key is a
//!   duplicate of the first.
//! - **Length**: a queue's length is its scheduled, ready and retrying tasks. An enqueue batch
//!   whose new tasks would take the length above `length_max` is refused as a whole with
//!   [`BrokerError::QueueFull`] under [`crate::OverflowPolicy::Reject`]; under
//!   [`crate::OverflowPolicy::DeadLetterOldest`] it is accepted and the oldest waiting tasks
//!   (lowest ids) go to the dead letters with reason `overflow`. A batch with more new tasks
//!   than `length_max` can never fit, so it is refused as [`BrokerError::Invalid`] (field
//!   `tasks`) under either policy.
//! - **TTL**: a task whose `expires_at` passes while it is scheduled, ready or retrying goes to
//!   the dead letters (`expired`); a running task is not interrupted.
//! - **Watermarks**: with `watermarks` configured, an enqueue batch that would bring the
//!   queue's length above `high` is refused with [`BrokerError::Overloaded`] (counted in
//!   `rejected_overloaded`), and so is every batch after it until the length is at or below
//!   `low`, whatever its size (hysteresis; `QueueStats::refusing` says which side the queue is
//!   on). A batch made only of duplicates is never refused. The `length_max` check comes after
//!   it. The gate's side may reset to accepting when a broker restarts.
//! - **Reservation limits**: reserve hands out at most `concurrency_max` minus the queue's
//!   active tasks, and at most as many as the queue's token bucket (`rate_limit`; full
//!   when the limit is set or changed, refilled continuously at `rate` up to `burst`; pausing
//!   and resuming leave it as it is) holds whole tokens; each task handed out takes one token. A ready task with a `limit_key` is passed
//!   over, keeping its place, while its key has `key_concurrency_max` tasks active or no
//!   whole token in its own bucket (`key_rate_limit`); reserve looks past at most
//!   [`limits::LIMITED_SCAN_MAX`] such tasks. A call that returns fewer tasks than `max`
//!   while a limit held an eligible task back counts once in `throttled_rate` or
//!   `throttled_concurrency` (rate first), and with `wait` it waits for a token or a free
//!   slot. Buckets live in the broker and may start full again after a restart.
//! - **Effects**: [`Broker::record_effects`] needs the task's current, unexpired lease
//!   (refusals as for extend); a recorded key keeps its result through retries, lease expiry
//!   and replay, and recording a key again replaces its result. A task holds at most
//!   [`limits::EFFECTS_MAX`] keys: a call that would exceed it fails as a whole with
//!   [`BrokerError::Invalid`] (`effects`) and records nothing.
//! - **Retention**: completed and cancelled tasks are kept up to the queue's
//!   `completed_retain` each, dead letters up to `dead_retain`; beyond that the oldest (lowest
//!   id) are deleted.
//! - **Replay** moves a dead letter to ready with `attempt = 0`, `run_at = now`, and clears its
//!   dead reason and its TTL (an operator who replays a task wants it run).
//! - **Queues** are created by enqueue and configure; pause, resume and stats of a queue that
//!   does not exist fail with [`BrokerError::UnknownQueue`]. An empty batch is valid and does
//!   nothing but create the queue.
//! - **Totals** ([`crate::QueueTotals`]) only grow and survive restarts like everything else.
//!   `rejected_full` counts refused enqueue calls, `deduplicated` duplicate tasks,
//!   `stale_refused` refused items. `oldest_ready_age` is measured from the earliest `run_at`
//!   among ready tasks, including those held back by their partition key.
//! - **Start latency**: reserve records, for each task it hands out, `now - run_at` (how long
//!   the task had waited since it became due) in the queue's `start_latency`
//!   ([`crate::LatencyHistogram`]). Like the totals it only grows, except that a broker may
//!   start it empty after a restart (the embedded broker keeps it in memory).

use std::future::Future;
use std::time::Duration;

use crate::error::BrokerError;
use crate::id::TaskId;
use crate::lease::{Lease, LeaseRef, Refusal};
use crate::limits;
use crate::name::QueueName;
use crate::queue::{QueueConfig, QueueStats};
use crate::state::{DeadReason, TaskState};
use crate::task::{NewTask, Task};
use crate::time::Timestamp;

/// The answer to one task of an enqueue batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The task's id: new, or the existing task's when `duplicate`.
    pub id: TaskId,
    /// True when an idempotency key matched a task enqueued within the window; no new task
    /// was created.
    pub duplicate: bool,
}

/// A worker's request for tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReserveRequest {
    /// The queue to reserve from.
    pub queue: QueueName,
    /// Most tasks to return, 1 ..= [`limits::BATCH_SIZE_MAX`]. A worker asks only for as many
    /// as it has free capacity for.
    pub max: usize,
    /// How long each lease lasts, [`limits::LEASE_DURATION_MIN`] ..= [`limits::LEASE_DURATION_MAX`].
    pub lease: Duration,
    /// How long to wait for a task when none is ready (long poll); zero returns at once.
    pub wait: Duration,
    /// The worker's name, recorded on the leases for operators; optional.
    pub worker: Option<String>,
}

impl ReserveRequest {
    /// A request for up to `max` tasks from `queue` with `lease`-long leases, not waiting.
    pub fn new(queue: QueueName, max: usize, lease: Duration) -> Self {
        ReserveRequest {
            queue,
            max,
            lease,
            wait: Duration::ZERO,
            worker: None,
        }
    }

    /// Waits up to `wait` for a task when none is ready.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Records `worker` as the lease holder.
    pub fn worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    /// Checks the request against the limits; the error names the offending field.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.max == 0 || self.max > limits::BATCH_SIZE_MAX {
            return Err(BrokerError::invalid(
                "max",
                format!("must be between 1 and {}", limits::BATCH_SIZE_MAX),
            ));
        }
        validate_lease_duration(self.lease)?;
        if self.wait > limits::RESERVE_WAIT_MAX {
            return Err(BrokerError::invalid("wait", "must not exceed 60s"));
        }
        if let Some(worker) = &self.worker
            && worker.len() > limits::KEY_LEN_MAX
        {
            return Err(BrokerError::invalid(
                "worker",
                format!("must be at most {} bytes", limits::KEY_LEN_MAX),
            ));
        }
        Ok(())
    }
}

/// Checks a lease duration against [`limits::LEASE_DURATION_MIN`] and
/// [`limits::LEASE_DURATION_MAX`].
pub fn validate_lease_duration(lease: Duration) -> Result<(), BrokerError> {
    if lease < limits::LEASE_DURATION_MIN || lease > limits::LEASE_DURATION_MAX {
        return Err(BrokerError::invalid(
            "lease",
            "must be between 100ms and 1h",
        ));
    }
    Ok(())
}

/// Checks that a batch holds at most [`limits::BATCH_SIZE_MAX`] items.
pub fn validate_batch(size: usize) -> Result<(), BrokerError> {
    if size > limits::BATCH_SIZE_MAX {
        return Err(BrokerError::BatchTooLarge {
            size,
            max: limits::BATCH_SIZE_MAX,
        });
    }
    Ok(())
}

/// A reserved task and the lease that lets the worker finish it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    /// The task, with `attempt` already counting this attempt.
    pub task: Task,
    /// The lease to present with ack, fail, extend or release.
    pub lease: Lease,
}

/// What a failed attempt asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retry after the task's backoff, if attempts remain.
    Backoff,
    /// Retry after this wait, if attempts remain (e.g. a downstream's Retry-After).
    After(Duration),
    /// Do not retry: dead-letter the task as a permanent failure.
    Never,
}

/// One failed attempt, reported by its lease holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The lease of the failed attempt.
    pub lease: LeaseRef,
    /// What went wrong, kept as the task's last error (truncated to
    /// [`limits::ERROR_LEN_MAX`] bytes).
    pub error: String,
    /// Whether and when to retry.
    pub retry: RetryDecision,
}

/// Where a failed task went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// It will run again at `run_at`.
    Retrying {
        /// When the next attempt may start.
        run_at: Timestamp,
    },
    /// It is in the dead letters.
    Dead {
        /// Why.
        reason: DeadReason,
    },
}

/// Which tasks a list call returns. Tasks come in id order (creation order), `limit` at a
/// time; pass the last id returned as `after` for the next page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this queue's tasks.
    pub queue: Option<QueueName>,
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only dead letters with this reason (implies state dead).
    pub dead_reason: Option<DeadReason>,
    /// Only tasks with ids greater than this.
    pub after: Option<TaskId>,
    /// Most tasks to return, 1 ..= [`limits::LIST_LIMIT_MAX`].
    pub limit: usize,
}

impl TaskFilter {
    /// Checks the filter; the error names the offending field.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.limit == 0 || self.limit > limits::LIST_LIMIT_MAX {
            return Err(BrokerError::invalid(
                "limit",
                format!("must be between 1 and {}", limits::LIST_LIMIT_MAX),
            ));
        }
        if self.dead_reason.is_some() && self.state.is_some_and(|s| s != TaskState::Dead) {
            return Err(BrokerError::invalid(
                "dead_reason",
                "applies only to dead tasks",
            ));
        }
        Ok(())
    }

    /// True when `task` passes the filter's queue, state and reason conditions (`after` and
    /// `limit` are the caller's to apply).
    pub fn matches(&self, task: &Task) -> bool {
        self.queue.as_ref().is_none_or(|q| *q == task.queue)
            && self.state.is_none_or(|s| s == task.state)
            && self
                .dead_reason
                .is_none_or(|r| task.state == TaskState::Dead && task.dead_reason == Some(r))
    }
}

/// Which dead letters a replay or purge acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadSelector {
    /// These tasks; ids that are not dead letters are skipped.
    Ids(Vec<TaskId>),
    /// Up to `limit` of the oldest dead letters matching the conditions.
    Matching {
        /// Only this queue's.
        queue: Option<QueueName>,
        /// Only those with this reason.
        reason: Option<DeadReason>,
        /// Most to act on, 1 ..= [`limits::BATCH_SIZE_MAX`].
        limit: usize,
    },
}

impl DeadSelector {
    /// Checks the selector's size; the error names the offending field.
    pub fn validate(&self) -> Result<(), BrokerError> {
        match self {
            DeadSelector::Ids(ids) => validate_batch(ids.len()),
            DeadSelector::Matching { limit, .. } => {
                if *limit == 0 || *limit > limits::BATCH_SIZE_MAX {
                    return Err(BrokerError::invalid(
                        "limit",
                        format!("must be between 1 and {}", limits::BATCH_SIZE_MAX),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Optional behaviours a broker may lack. The conformance suite skips, and says it skips, the
/// cases that need a capability the broker does not declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Tasks of higher priority are reserved before lower ones.
    pub priorities: bool,
    /// Tasks sharing a partition key run one at a time in enqueue order.
    pub partition_fifo: bool,
}

impl Capabilities {
    /// Every capability.
    pub const ALL: Capabilities = Capabilities {
        priorities: true,
        partition_fifo: true,
    };
}

/// A side effect a task's handler performed, to record on the task with its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectRecord {
    /// The lease of the attempt that performed it.
    pub lease: LeaseRef,
    /// The effect's key, unique within the task (`"charge"`, `"email:welcome"`), 1 ..=
    /// [`limits::KEY_LEN_MAX`] bytes.
    pub key: String,
    /// What the effect returned (often JSON), at most [`limits::EFFECT_RESULT_MAX`] bytes; a
    /// later attempt gets it back instead of performing the effect again.
    pub result: String,
}

impl EffectRecord {
    /// Checks key and result against the limits; the error names the offending field.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.key.is_empty() || self.key.len() > limits::KEY_LEN_MAX {
            return Err(BrokerError::invalid(
                "key",
                format!("must be 1 to {} bytes", limits::KEY_LEN_MAX),
            ));
        }
        if self.result.len() > limits::EFFECT_RESULT_MAX {
            return Err(BrokerError::invalid(
                "result",
                format!("must be at most {} bytes", limits::EFFECT_RESULT_MAX),
            ));
        }
        Ok(())
    }
}

/// Per-item results of a lease operation (ack, release), in request order.
pub type LeaseResults = Vec<Result<(), Refusal>>;

/// A backend that stores tasks and hands them to workers: the embedded broker, Redis, or a
/// remote server over HTTP.
///
/// Every state change goes through [`crate::transition`], so all brokers agree on what is
/// legal; the conformance suite (crate `floodway-conformance`) checks that they agree on
/// everything else. A call that returns `Ok` has made its effect durable to the broker's
/// configured durability before returning, except possibly `reserve` (see the module docs).
pub trait Broker: Send + Sync + 'static {
    /// The optional behaviours this broker supports.
    fn capabilities(&self) -> Capabilities;

    /// Adds tasks to `queue`, creating the queue with the default configuration if needed.
    ///
    /// All or nothing: if any task is invalid, or the queue is full and rejects, nothing is
    /// enqueued. Returns one [`Enqueued`] per task, in order.
    fn enqueue(
        &self,
        queue: &QueueName,
        tasks: Vec<NewTask>,
    ) -> impl Future<Output = Result<Vec<Enqueued>, BrokerError>> + Send;

    /// Leases up to `request.max` ready tasks of the queue, highest priority first and oldest
    /// first within a priority, waiting up to `request.wait` if none is ready. Returns an empty
    /// list when the queue is unknown, paused or empty at the end of the wait.
    fn reserve(
        &self,
        request: ReserveRequest,
    ) -> impl Future<Output = Result<Vec<Reservation>, BrokerError>> + Send;

    /// Completes tasks. Each lease must be current and unexpired.
    fn ack(
        &self,
        leases: &[LeaseRef],
    ) -> impl Future<Output = Result<LeaseResults, BrokerError>> + Send;

    /// Records failed attempts: each task is retried after a backoff or dead-lettered.
    fn fail(
        &self,
        failures: Vec<Failure>,
    ) -> impl Future<Output = Result<Vec<Result<FailOutcome, Refusal>>, BrokerError>> + Send;

    /// Extends leases to `duration` from now; returns each new lease.
    fn extend(
        &self,
        leases: &[LeaseRef],
        duration: Duration,
    ) -> impl Future<Output = Result<Vec<Result<Lease, Refusal>>, BrokerError>> + Send;

    /// Gives tasks back unrun: they return to ready without spending an attempt.
    fn release(
        &self,
        leases: &[LeaseRef],
    ) -> impl Future<Output = Result<LeaseResults, BrokerError>> + Send;

    /// Records side effects performed under current leases on their tasks, durably, so an
    /// attempt after a crash or a lease expiry finds them in [`Task::effects`] and skips them.
    /// Fenced like extend: a worker that lost its lease is refused and records nothing.
    fn record_effects(
        &self,
        effects: Vec<EffectRecord>,
    ) -> impl Future<Output = Result<LeaseResults, BrokerError>> + Send;

    /// Withdraws tasks that have not started (scheduled, ready or retrying).
    fn cancel(
        &self,
        ids: &[TaskId],
    ) -> impl Future<Output = Result<LeaseResults, BrokerError>> + Send;

    /// Moves scheduled and retrying tasks whose time has come to ready, and dead-letters
    /// waiting tasks whose time to live has passed. Returns how many tasks moved. Brokers also
    /// do this on their own; the call makes it happen now.
    fn promote(&self) -> impl Future<Output = Result<u64, BrokerError>> + Send;

    /// Takes back tasks whose lease expired: to ready, or to the dead letters if that was their
    /// last attempt. Returns how many. Brokers also do this on their own.
    fn reap(&self) -> impl Future<Output = Result<u64, BrokerError>> + Send;

    /// Statistics of one queue (error if unknown), or of every queue when `queue` is `None`.
    fn stats(
        &self,
        queue: Option<&QueueName>,
    ) -> impl Future<Output = Result<Vec<QueueStats>, BrokerError>> + Send;

    /// Sets a queue's configuration, creating the queue if it does not exist.
    fn configure(
        &self,
        queue: &QueueName,
        config: QueueConfig,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Stops workers from reserving from the queue; enqueue continues to work.
    fn pause(&self, queue: &QueueName) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Lets workers reserve from a paused queue again.
    fn resume(&self, queue: &QueueName) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// One task, in any state (error if unknown).
    fn get(&self, id: TaskId) -> impl Future<Output = Result<Task, BrokerError>> + Send;

    /// Tasks matching the filter, in id order.
    fn list(
        &self,
        filter: TaskFilter,
    ) -> impl Future<Output = Result<Vec<Task>, BrokerError>> + Send;

    /// Moves dead letters back to ready with fresh attempts. Returns how many moved.
    fn replay(
        &self,
        selector: DeadSelector,
    ) -> impl Future<Output = Result<u64, BrokerError>> + Send;

    /// Deletes dead letters for ever. Returns how many.
    fn purge(
        &self,
        selector: DeadSelector,
    ) -> impl Future<Output = Result<u64, BrokerError>> + Send;

    /// Checks that the broker can serve calls now: `Ok` when it is open and its storage or
    /// connection works, [`BrokerError::Unavailable`] otherwise. It changes nothing.
    ///
    /// This is what a readiness probe asks (the server's `/readyz`), so a broker should answer
    /// it cheaply and without waiting on its own backlog. The default makes one
    /// [`Broker::stats`] call, which is a real round trip for a remote broker but costs
    /// O(queues); a broker that can tell more cheaply overrides it.
    fn ping(&self) -> impl Future<Output = Result<(), BrokerError>> + Send {
        async move { self.stats(None).await.map(|_| ()) }
    }
}
