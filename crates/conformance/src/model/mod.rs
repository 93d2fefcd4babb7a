//! The model: a deliberately simple in-memory implementation of the rules in
//! [`floodway_core::broker`], and the proptest that checks a broker agrees with it.
//!
//! [`Model`] keeps every task in one `Vec` in id order and answers every operation with linear
//! scans; it is pure (time, ids and randomness come in as arguments) and moves every task
//! through [`floodway_core::transition`]. Being small, it can be read side by side with the
//! rules, and where the rules leave a choice open its doc comments say which choice it makes.
//!
//! [`ModelBroker`] wraps the model in the [`floodway_core::Broker`] trait (with a clock, an id
//! generator and long-poll waiting), and [`ModelHarness`] runs the suite against it, which is
//! how the suite tests its own cases. [`model_agrees_with_broker`] is the proptest.

mod agreement;
mod broker;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use floodway_backpressure::{TokenBucket, WatermarkGate};
use floodway_core::broker::{validate_batch, validate_lease_duration};
use floodway_core::task::truncate_error;
use floodway_core::{
    BrokerError, DeadReason, DeadSelector, EffectRecord, Enqueued, Event, FailOutcome, Failure,
    Fence, LatencyHistogram, Lease, LeaseRef, LeaseResults, NewTask, OverflowPolicy, QueueConfig,
    QueueName, QueueStats, QueueTotals, Refusal, Reservation, ReserveRequest, StateCounts, Task,
    TaskFilter, TaskId, TaskState, Timestamp, limits, transition,
};

pub use agreement::model_agrees_with_broker;
pub use broker::{MODEL_CLOCK_START, ModelBroker, ModelHarness};

/// The `retry_after` hint the model puts in [`BrokerError::QueueFull`]. Brokers choose their
/// own hint, so comparisons ignore it.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Every queue and task of one broker, as plain data.
#[derive(Clone, Debug, Default)]
pub struct Model {
    queues: BTreeMap<QueueName, QueueRecord>,
    /// Every stored task, in id order.
    tasks: Vec<Record>,
}

#[derive(Clone, Debug)]
struct QueueRecord {
    config: QueueConfig,
    totals: QueueTotals,
    /// Idempotency keys: the first task enqueued with each key, and when.
    keys: HashMap<String, (TaskId, Timestamp)>,
    /// The queue's rate-limit bucket, created full on first use.
    bucket: Option<TokenBucket>,
    /// One bucket per limit key, created full on first use.
    key_buckets: HashMap<String, TokenBucket>,
    /// The watermark gate, accepting when the watermarks are (re)configured.
    gate: Option<WatermarkGate>,
    /// Start latencies of the tasks reserved, `now - run_at` at each reservation.
    start_latency: LatencyHistogram,
}

impl QueueRecord {
    fn new(config: QueueConfig) -> Self {
        QueueRecord {
            gate: config.watermarks.and_then(|m| WatermarkGate::new(m).ok()),
            config,
            totals: QueueTotals::default(),
            keys: HashMap::new(),
            bucket: None,
            key_buckets: HashMap::new(),
            start_latency: LatencyHistogram::default(),
        }
    }

    /// Takes a new configuration; buckets and gate start afresh when their settings change.
    fn reconfigure(&mut self, config: QueueConfig) {
        if self.config.rate_limit != config.rate_limit
            || self.config.key_rate_limit != config.key_rate_limit
            || self.config.watermarks != config.watermarks
        {
            let fresh = QueueRecord::new(config.clone());
            self.bucket = fresh.bucket;
            self.key_buckets = fresh.key_buckets;
            self.gate = fresh.gate;
        }
        self.config = config;
    }

    /// The task that first used `key`, if that was less than the window ago.
    fn live_key(&self, key: &str, now: Timestamp) -> Option<TaskId> {
        self.keys
            .get(key)
            .filter(|(_, first)| now.saturating_since(*first) < self.config.idempotency_window)
            .map(|(id, _)| *id)
    }
}

/// One stored task. After the broker takes a task back because its lease expired, the task
/// keeps `lease_expires_at` (and so its fence's expiry) until it is reserved again, so lease
/// operations presenting that fence are refused as expired, not as "wrong state".
#[derive(Clone, Debug)]
struct Record {
    task: Task,
}

/// Where an enqueued task goes: a new task, or a duplicate of an earlier one.
enum Slot {
    New,
    Duplicate(TaskId),
    /// A duplicate of the batch's task at this index.
    DuplicateInBatch(usize),
}

/// Moves `task` by `event`, which the model only raises where the rules allow it.
fn apply(task: &mut Task, event: Event) {
    task.state = transition(task.state, event)
        .unwrap_or_else(|illegal| panic!("the model raised an illegal event: {illegal}"));
}

/// Ends `task`'s lease because its holder finished with it (ack, fail, release).
fn clear_lease(task: &mut Task) {
    task.lease_expires_at = None;
    task.worker = None;
}

/// Moves `task` to the dead letters for `reason`.
fn kill(task: &mut Task, event: Event, reason: DeadReason, now: Timestamp) {
    apply(task, event);
    task.worker = None;
    task.dead_reason = Some(reason);
    task.finished_at = Some(now);
}

impl Model {
    /// An empty broker.
    pub fn new() -> Self {
        Model::default()
    }

    /// A queue's configuration, if the queue exists.
    pub fn config(&self, queue: &QueueName) -> Option<&QueueConfig> {
        self.queues.get(queue).map(|record| &record.config)
    }

    /// Sets a task's current fence to `fence`, which a broker issued after a restart (the
    /// rules let a fence skip ahead then, as long as it grows).
    pub fn adopt_fence(&mut self, id: TaskId, fence: Fence) {
        if let Some(i) = self.index(id) {
            assert!(fence >= self.tasks[i].task.fence, "fences never go back");
            self.tasks[i].task.fence = fence;
        }
    }

    /// The greatest id stored, if any task is.
    pub fn last_id(&self) -> Option<TaskId> {
        self.tasks.last().map(|r| r.task.id)
    }

    fn index(&self, id: TaskId) -> Option<usize> {
        self.tasks.binary_search_by_key(&id, |r| r.task.id).ok()
    }

    fn totals(&mut self, queue: &QueueName) -> &mut QueueTotals {
        &mut self
            .queues
            .get_mut(queue)
            .expect("every stored task's queue exists")
            .totals
    }

    /// A queue's length: its scheduled, ready and retrying tasks.
    fn length(&self, queue: &QueueName) -> u64 {
        self.tasks
            .iter()
            .filter(|r| r.task.queue == *queue && r.task.state.is_waiting())
            .count() as u64
    }

    fn create_queue(&mut self, queue: &QueueName, config: QueueConfig) -> Result<(), BrokerError> {
        if !self.queues.contains_key(queue) {
            if self.queues.len() >= limits::QUEUES_MAX {
                return Err(BrokerError::LimitReached(format!(
                    "a broker holds at most {} queues",
                    limits::QUEUES_MAX
                )));
            }
            self.queues.insert(queue.clone(), QueueRecord::new(config));
        }
        Ok(())
    }

    /// Enqueues `tasks`; `next_id` supplies the id of each new task, in order.
    ///
    /// Choices where the rules are silent: a refused batch counts once in `rejected_full` (it
    /// is one refused enqueue, while `deduplicated` counts each duplicate task); an
    /// idempotency key keeps pointing at its first task for the whole window even if that
    /// task is deleted (purged or past retention).
    pub fn enqueue(
        &mut self,
        queue: &QueueName,
        tasks: Vec<NewTask>,
        now: Timestamp,
        mut next_id: impl FnMut() -> TaskId,
    ) -> Result<Vec<Enqueued>, BrokerError> {
        validate_batch(tasks.len())?;
        for task in &tasks {
            task.validate()?;
        }
        self.create_queue(queue, QueueConfig::default())?;
        let record = &self.queues[queue];
        let config = record.config.clone();

        let mut slots = Vec::with_capacity(tasks.len());
        let mut batch_keys: Vec<(&str, usize)> = Vec::new();
        for (index, task) in tasks.iter().enumerate() {
            let slot = match task.idempotency_key.as_deref() {
                None => Slot::New,
                Some(key) => {
                    if let Some(id) = record.live_key(key, now) {
                        Slot::Duplicate(id)
                    } else if let Some((_, first)) = batch_keys.iter().find(|(k, _)| *k == key) {
                        Slot::DuplicateInBatch(*first)
                    } else {
                        batch_keys.push((key, index));
                        Slot::New
                    }
                }
            };
            slots.push(slot);
        }

        let new = slots.iter().filter(|s| matches!(s, Slot::New)).count() as u64;
        let length = self.length(queue);
        let record = self.queues.get_mut(queue).expect("created above");
        if new > 0
            && let Some(gate) = record.gate.as_mut()
            && !gate.admit(length, new)
        {
            let marks = gate.marks();
            record.totals.rejected_overloaded += 1;
            return Err(BrokerError::Overloaded {
                queue: queue.clone(),
                length,
                high: marks.high,
                low: marks.low,
                retry_after: RETRY_AFTER,
            });
        }
        let limit = config.length_limit();
        let excess = (length + new).saturating_sub(limit);
        if new > limit {
            return Err(BrokerError::invalid(
                "tasks",
                format!("{new} new tasks can never fit in a queue whose length_max is {limit}"),
            ));
        }
        if excess > 0 && config.overflow == OverflowPolicy::Reject {
            self.totals(queue).rejected_full += 1;
            return Err(BrokerError::QueueFull {
                queue: queue.clone(),
                length,
                max: limit,
                retry_after: RETRY_AFTER,
            });
        }

        // Make room by dropping the oldest waiting tasks.
        let mut dropped = 0;
        for record in &mut self.tasks {
            if dropped == excess {
                break;
            }
            if record.task.queue == *queue && record.task.state.is_waiting() {
                kill(&mut record.task, Event::Overflow, DeadReason::Overflow, now);
                dropped += 1;
            }
        }

        let mut answers: Vec<Enqueued> = Vec::with_capacity(tasks.len());
        for (task, slot) in tasks.into_iter().zip(slots) {
            let answer = match slot {
                Slot::New => {
                    let id = next_id();
                    let record = self.queues.get_mut(queue).expect("created above");
                    if let Some(key) = &task.idempotency_key {
                        record.keys.insert(key.clone(), (id, now));
                    }
                    record.totals.enqueued += 1;
                    let task = Task::from_new(task, id, queue.clone(), &config, now);
                    let at = self.tasks.partition_point(|r| r.task.id < id);
                    self.tasks.insert(at, Record { task });
                    Enqueued {
                        id,
                        duplicate: false,
                    }
                }
                Slot::Duplicate(id) => {
                    self.totals(queue).deduplicated += 1;
                    Enqueued {
                        id,
                        duplicate: true,
                    }
                }
                Slot::DuplicateInBatch(first) => {
                    self.totals(queue).deduplicated += 1;
                    Enqueued {
                        id: answers[first].id,
                        duplicate: true,
                    }
                }
            };
            answers.push(answer);
        }
        let totals = self.totals(queue);
        totals.dead.overflow += dropped;
        self.retain();
        Ok(answers)
    }

    /// Reaps expired leases and promotes due tasks (see [`Model::reap`] and
    /// [`Model::promote`]), then leases the best eligible ready tasks. Housekeeping is global
    /// and happens even when the queue is paused or unknown.
    ///
    /// Reaping comes first so that a task whose lease expired after its time to live is
    /// dead-lettered (expired) by the promotion that follows instead of being handed out.
    pub fn reserve(
        &mut self,
        request: &ReserveRequest,
        now: Timestamp,
    ) -> Result<Vec<Reservation>, BrokerError> {
        request.validate()?;
        self.reap(now);
        self.promote(now);
        match self.queues.get(&request.queue) {
            Some(record) if !record.config.paused => {}
            _ => return Ok(Vec::new()),
        }
        let mut eligible: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| {
                let task = &self.tasks[i].task;
                task.queue == request.queue
                    && task.state == TaskState::Ready
                    && self.heads_its_partition(i)
            })
            .collect();
        eligible.sort_by_key(|&i| {
            let task = &self.tasks[i].task;
            (Reverse(task.priority), task.run_at, task.id)
        });
        let eligible = self.apply_limits(&request.queue, eligible, request.max, now);

        let mut reservations = Vec::with_capacity(eligible.len());
        let mut latency = LatencyHistogram::default();
        for i in eligible {
            let record = &mut self.tasks[i];
            let task = &mut record.task;
            latency.record(now.saturating_since(task.run_at));
            apply(task, Event::Reserve);
            task.attempt += 1;
            task.fence = task.fence.next();
            task.lease_expires_at = Some(now.saturating_add(request.lease));
            task.worker = request.worker.clone();
            let lease = Lease {
                task_id: task.id,
                fence: task.fence,
                expires_at: now.saturating_add(request.lease),
            };
            reservations.push(Reservation {
                task: task.clone(),
                lease,
            });
        }
        self.totals(&request.queue).reserved += reservations.len() as u64;
        if let Some(record) = self.queues.get_mut(&request.queue) {
            record.start_latency.merge(&latency);
        }
        Ok(reservations)
    }

    /// Of the eligible tasks (in reservation order), those the queue's rate and concurrency
    /// limits let through, taking their tokens; counts a call cut short by a limit. The
    /// "Reservation limits" rule, step by step.
    fn apply_limits(
        &mut self,
        queue: &QueueName,
        eligible: Vec<usize>,
        max: usize,
        now: Timestamp,
    ) -> Vec<usize> {
        let at = Duration::from_millis(now.as_millis());
        let mut active: HashMap<Option<String>, u32> = HashMap::new();
        let mut queue_active = 0usize;
        for record in &self.tasks {
            if record.task.queue == *queue && record.task.state == TaskState::Active {
                queue_active += 1;
                *active.entry(record.task.limit_key.clone()).or_default() += 1;
            }
        }
        let record = self
            .queues
            .get_mut(queue)
            .expect("reserve checked the queue");
        let config = record.config.clone();
        let slots = config
            .concurrency_max
            .map_or(usize::MAX, |m| (m as usize).saturating_sub(queue_active));
        let tokens = match config.rate_limit {
            Some(limit) => record
                .bucket
                .get_or_insert_with(|| limit.bucket(at).expect("validated"))
                .available(at) as usize,
            None => usize::MAX,
        };
        let room = max.min(slots).min(tokens);
        let (mut by_rate, mut by_concurrency) = (false, false);
        let mut passed_over = 0;
        let mut chosen = Vec::new();
        for i in eligible {
            let key = self.tasks[i].task.limit_key.clone();
            if let Some(key) = &key {
                let running = active.get(&Some(key.clone())).copied().unwrap_or(0);
                let full = config.key_concurrency_max.is_some_and(|m| running >= m);
                let dry = !full
                    && config.key_rate_limit.is_some_and(|limit| {
                        record
                            .key_buckets
                            .entry(key.clone())
                            .or_insert_with(|| limit.bucket(at).expect("validated"))
                            .available(at)
                            == 0
                    });
                if full || dry {
                    by_concurrency |= full;
                    by_rate |= dry;
                    passed_over += 1;
                    if passed_over > limits::LIMITED_SCAN_MAX {
                        break;
                    }
                    continue;
                }
            }
            if chosen.len() == max {
                break;
            }
            if chosen.len() == room {
                if room == tokens {
                    by_rate = true;
                } else {
                    by_concurrency = true;
                }
                break;
            }
            if let Some(key) = key {
                if let Some(bucket) = record.key_buckets.get_mut(&key) {
                    bucket.take_up_to(1, at);
                }
                *active.entry(Some(key)).or_default() += 1;
            }
            chosen.push(i);
        }
        if let Some(bucket) = record.bucket.as_mut() {
            bucket.take_up_to(chosen.len() as u32, at);
        }
        if chosen.len() < max {
            if by_rate {
                record.totals.throttled_rate += 1;
            } else if by_concurrency {
                record.totals.throttled_concurrency += 1;
            }
        }
        chosen
    }

    /// Records side effects on tasks whose lease the caller holds.
    pub fn record_effects(
        &mut self,
        effects: Vec<EffectRecord>,
        now: Timestamp,
    ) -> Result<LeaseResults, BrokerError> {
        validate_batch(effects.len())?;
        for effect in &effects {
            effect.validate()?;
        }
        for effect in &effects {
            let Some(index) = self.index(effect.lease.task_id) else {
                continue;
            };
            let mut keys: Vec<&str> = self.tasks[index]
                .task
                .effects
                .keys()
                .map(String::as_str)
                .collect();
            for other in &effects {
                if other.lease.task_id == effect.lease.task_id
                    && !keys.contains(&other.key.as_str())
                {
                    keys.push(&other.key);
                }
            }
            if keys.len() > limits::EFFECTS_MAX {
                return Err(BrokerError::invalid(
                    "effects",
                    format!("a task holds at most {} effects", limits::EFFECTS_MAX),
                ));
            }
        }
        let mut results = Vec::with_capacity(effects.len());
        for effect in effects {
            let result = self.check_counted(effect.lease, now).map(|i| {
                let task = &mut self.tasks[i].task;
                task.effects.insert(effect.key, effect.result);
                let queue = task.queue.clone();
                self.totals(&queue).effects_recorded += 1;
            });
            results.push(result);
        }
        Ok(results)
    }

    /// True when no unfinished task of the same queue with a lower id shares the task's
    /// partition key.
    fn heads_its_partition(&self, index: usize) -> bool {
        let task = &self.tasks[index].task;
        let Some(key) = &task.partition_key else {
            return true;
        };
        !self.tasks[..index].iter().any(|r| {
            r.task.queue == task.queue
                && r.task.partition_key.as_ref() == Some(key)
                && !r.task.state.is_finished()
        })
    }

    /// Checks a lease against the task it names: the task's index, or why not.
    fn check(&self, lease: LeaseRef, now: Timestamp) -> Result<usize, Refusal> {
        let index = self.index(lease.task_id).ok_or(Refusal::UnknownTask)?;
        let record = &self.tasks[index];
        let task = &record.task;
        if lease.fence != task.fence {
            return Err(Refusal::StaleFence {
                presented: lease.fence,
                current: task.fence,
            });
        }
        if task.state == TaskState::Active {
            let expires_at = task
                .lease_expires_at
                .expect("an active task has a lease expiry");
            if expires_at <= now {
                return Err(Refusal::LeaseExpired {
                    expired_at: expires_at,
                });
            }
            return Ok(index);
        }
        match task.lease_expires_at {
            Some(expired_at) => Err(Refusal::LeaseExpired { expired_at }),
            None => Err(Refusal::WrongState { state: task.state }),
        }
    }

    /// Checks a lease and counts a stale or expired one in its queue's totals.
    fn check_counted(&mut self, lease: LeaseRef, now: Timestamp) -> Result<usize, Refusal> {
        let checked = self.check(lease, now);
        if let Err(Refusal::StaleFence { .. } | Refusal::LeaseExpired { .. }) = checked {
            let queue = self.tasks[self.index(lease.task_id).expect("refusal of a known task")]
                .task
                .queue
                .clone();
            self.totals(&queue).stale_refused += 1;
        }
        checked
    }

    /// Completes tasks.
    pub fn ack(
        &mut self,
        leases: &[LeaseRef],
        now: Timestamp,
    ) -> Result<LeaseResults, BrokerError> {
        validate_batch(leases.len())?;
        let mut results = Vec::with_capacity(leases.len());
        for lease in leases {
            let result = self.check_counted(*lease, now).map(|i| {
                let task = &mut self.tasks[i].task;
                apply(task, Event::Ack);
                clear_lease(task);
                task.finished_at = Some(now);
                let queue = task.queue.clone();
                self.totals(&queue).completed += 1;
            });
            results.push(result);
        }
        self.retain();
        Ok(results)
    }

    /// Records failed attempts; `random` draws each jitter in `[0, 1)`.
    pub fn fail(
        &mut self,
        failures: Vec<Failure>,
        now: Timestamp,
        mut random: impl FnMut() -> f64,
    ) -> Result<Vec<Result<FailOutcome, Refusal>>, BrokerError> {
        validate_batch(failures.len())?;
        let mut results = Vec::with_capacity(failures.len());
        for failure in failures {
            let result = self.check_counted(failure.lease, now).map(|i| {
                let task = &mut self.tasks[i].task;
                task.last_error = Some(truncate_error(&failure.error));
                let queue = task.queue.clone();
                match task.failure_disposition(failure.retry, now, random()) {
                    Ok(run_at) => {
                        apply(task, Event::Fail { retry: true });
                        clear_lease(task);
                        task.run_at = run_at;
                        self.totals(&queue).retried += 1;
                        FailOutcome::Retrying { run_at }
                    }
                    Err(reason) => {
                        clear_lease(task);
                        kill(task, Event::Fail { retry: false }, reason, now);
                        *self.totals(&queue).dead.get_mut(reason) += 1;
                        FailOutcome::Dead { reason }
                    }
                }
            });
            results.push(result);
        }
        self.retain();
        Ok(results)
    }

    /// Extends leases to `duration` from now.
    pub fn extend(
        &mut self,
        leases: &[LeaseRef],
        duration: Duration,
        now: Timestamp,
    ) -> Result<Vec<Result<Lease, Refusal>>, BrokerError> {
        validate_batch(leases.len())?;
        validate_lease_duration(duration)?;
        let mut results = Vec::with_capacity(leases.len());
        for lease in leases {
            let result = self.check_counted(*lease, now).map(|i| {
                let task = &mut self.tasks[i].task;
                apply(task, Event::Extend);
                let expires_at = now.saturating_add(duration);
                task.lease_expires_at = Some(expires_at);
                Lease {
                    task_id: task.id,
                    fence: task.fence,
                    expires_at,
                }
            });
            results.push(result);
        }
        Ok(results)
    }

    /// Gives tasks back unrun, returning their attempts.
    pub fn release(
        &mut self,
        leases: &[LeaseRef],
        now: Timestamp,
    ) -> Result<LeaseResults, BrokerError> {
        validate_batch(leases.len())?;
        let mut results = Vec::with_capacity(leases.len());
        for lease in leases {
            let result = self.check_counted(*lease, now).map(|i| {
                let task = &mut self.tasks[i].task;
                apply(task, Event::Release);
                clear_lease(task);
                task.attempt = task.attempt.saturating_sub(1);
                task.run_at = now;
                let queue = task.queue.clone();
                self.totals(&queue).released += 1;
            });
            results.push(result);
        }
        Ok(results)
    }

    /// Withdraws waiting tasks.
    pub fn cancel(&mut self, ids: &[TaskId], now: Timestamp) -> Result<LeaseResults, BrokerError> {
        validate_batch(ids.len())?;
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let result = match self.index(*id) {
                None => Err(Refusal::UnknownTask),
                Some(i) => {
                    let task = &mut self.tasks[i].task;
                    match transition(task.state, Event::Cancel) {
                        Err(_) => Err(Refusal::WrongState { state: task.state }),
                        Ok(_) => {
                            apply(task, Event::Cancel);
                            task.finished_at = Some(now);
                            let queue = task.queue.clone();
                            self.totals(&queue).cancelled += 1;
                            Ok(())
                        }
                    }
                }
            };
            results.push(result);
        }
        self.retain();
        Ok(results)
    }

    /// Dead-letters waiting tasks whose time to live has passed (at or before `now`), and
    /// moves scheduled and retrying tasks whose run-at has come to ready. Returns how many
    /// tasks moved; a task that is both due and expired counts once, as expired.
    pub fn promote(&mut self, now: Timestamp) -> u64 {
        let mut moved = 0;
        let mut expired: Vec<QueueName> = Vec::new();
        for record in &mut self.tasks {
            let task = &mut record.task;
            if !task.state.is_waiting() {
                continue;
            }
            if task.expires_at.is_some_and(|at| at <= now) {
                kill(task, Event::Expire, DeadReason::Expired, now);
                expired.push(task.queue.clone());
                moved += 1;
            } else if task.state != TaskState::Ready && task.run_at <= now {
                apply(task, Event::Due);
                moved += 1;
            }
        }
        for queue in expired {
            self.totals(&queue).dead.expired += 1;
        }
        self.retain();
        moved
    }

    /// Takes back tasks whose lease expired at or before `now`: to ready with `run_at` set to
    /// when the lease expired (the time that happened, so the order does not depend on when
    /// the broker got round to it), or to the dead letters (`max_attempts`) if that was the
    /// last attempt. Returns how many.
    pub fn reap(&mut self, now: Timestamp) -> u64 {
        let mut reaped: Vec<(QueueName, bool)> = Vec::new();
        for record in &mut self.tasks {
            let task = &mut record.task;
            if task.state != TaskState::Active {
                continue;
            }
            let expires_at = task
                .lease_expires_at
                .expect("an active task has a lease expiry");
            if expires_at > now {
                continue;
            }
            // The task keeps `lease_expires_at`: the fence's lease is over, not ended by its
            // holder, and later lease operations with it are refused as expired.
            let retry = !task.attempts_exhausted();
            if retry {
                apply(task, Event::LeaseExpired { retry });
                task.worker = None;
                task.run_at = expires_at;
            } else {
                kill(
                    task,
                    Event::LeaseExpired { retry },
                    DeadReason::MaxAttempts,
                    expires_at,
                );
            }
            reaped.push((task.queue.clone(), retry));
        }
        let count = reaped.len() as u64;
        for (queue, retry) in reaped {
            let totals = self.totals(&queue);
            totals.leases_expired += 1;
            if !retry {
                totals.dead.max_attempts += 1;
            }
        }
        self.retain();
        count
    }

    fn stats_of(&self, queue: &QueueName, record: &QueueRecord, now: Timestamp) -> QueueStats {
        let mut counts = StateCounts::default();
        let mut oldest_ready_age = None;
        for task in self.tasks.iter().map(|r| &r.task) {
            if task.queue != *queue {
                continue;
            }
            *counts.get_mut(task.state) += 1;
            if task.state == TaskState::Ready {
                let age = now.saturating_since(task.run_at);
                oldest_ready_age = Some(oldest_ready_age.map_or(age, |a: Duration| a.max(age)));
            }
        }
        let refusing = record.gate.as_ref().is_some_and(|gate| {
            let length = counts.waiting();
            (gate.is_refusing() && length > gate.marks().low) || length > gate.marks().high
        });
        QueueStats {
            queue: queue.clone(),
            config: record.config.clone(),
            counts,
            totals: record.totals,
            oldest_ready_age,
            refusing,
            start_latency: record.start_latency,
        }
    }

    /// Empties a queue's start latencies, as a broker that keeps them in memory does when it
    /// restarts (the rules allow it); the agreement test calls it after a restart that did.
    pub fn forget_start_latency(&mut self, queue: &QueueName) {
        if let Some(record) = self.queues.get_mut(queue) {
            record.start_latency = LatencyHistogram::default();
        }
    }

    /// One queue's statistics, or every queue's in name order. `oldest_ready_age` is `now`
    /// minus the earliest `run_at` among ready tasks.
    pub fn stats(
        &self,
        queue: Option<&QueueName>,
        now: Timestamp,
    ) -> Result<Vec<QueueStats>, BrokerError> {
        match queue {
            Some(queue) => {
                let record = self
                    .queues
                    .get(queue)
                    .ok_or_else(|| BrokerError::UnknownQueue(queue.clone()))?;
                Ok(vec![self.stats_of(queue, record, now)])
            }
            None => Ok(self
                .queues
                .iter()
                .map(|(queue, record)| self.stats_of(queue, record, now))
                .collect()),
        }
    }

    /// Sets a queue's configuration, creating the queue if needed. Tasks and totals stay.
    pub fn configure(&mut self, queue: &QueueName, config: QueueConfig) -> Result<(), BrokerError> {
        config.validate()?;
        self.create_queue(queue, config.clone())?;
        self.queues
            .get_mut(queue)
            .expect("created above")
            .reconfigure(config);
        self.retain();
        Ok(())
    }

    /// Pauses or resumes a queue. The rules do not say what pausing an unknown queue does; the
    /// model refuses it with [`BrokerError::UnknownQueue`].
    pub fn set_paused(&mut self, queue: &QueueName, paused: bool) -> Result<(), BrokerError> {
        let record = self
            .queues
            .get_mut(queue)
            .ok_or_else(|| BrokerError::UnknownQueue(queue.clone()))?;
        record.config.paused = paused;
        Ok(())
    }

    /// One task.
    pub fn get(&self, id: TaskId) -> Result<Task, BrokerError> {
        self.index(id)
            .map(|i| self.tasks[i].task.clone())
            .ok_or(BrokerError::UnknownTask(id))
    }

    /// Tasks matching `filter`, in id order.
    pub fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, BrokerError> {
        filter.validate()?;
        Ok(self
            .tasks
            .iter()
            .map(|r| &r.task)
            .filter(|task| filter.after.is_none_or(|after| task.id > after))
            .filter(|task| filter.matches(task))
            .take(filter.limit)
            .cloned()
            .collect())
    }

    /// The indexes of the dead letters `selector` picks, in id order.
    fn select_dead(&self, selector: &DeadSelector) -> Result<Vec<usize>, BrokerError> {
        selector.validate()?;
        let dead = |i: &usize| self.tasks[*i].task.state == TaskState::Dead;
        let mut picked: Vec<usize> = match selector {
            DeadSelector::Ids(ids) => ids
                .iter()
                .filter_map(|id| self.index(*id))
                .filter(dead)
                .collect(),
            DeadSelector::Matching {
                queue,
                reason,
                limit,
            } => (0..self.tasks.len())
                .filter(dead)
                .filter(|&i| {
                    let task = &self.tasks[i].task;
                    queue.as_ref().is_none_or(|q| *q == task.queue)
                        && reason.is_none_or(|r| task.dead_reason == Some(r))
                })
                .take(*limit)
                .collect(),
        };
        picked.sort_unstable();
        picked.dedup();
        Ok(picked)
    }

    /// Moves dead letters to ready with `attempt = 0` and `run_at = now`. Everything else
    /// about the task stays, its time to live included (the rules do not say to clear it).
    pub fn replay(&mut self, selector: &DeadSelector, now: Timestamp) -> Result<u64, BrokerError> {
        let picked = self.select_dead(selector)?;
        for &i in &picked {
            let task = &mut self.tasks[i].task;
            apply(task, Event::Replay);
            task.attempt = 0;
            task.run_at = now;
            task.expires_at = None;
            task.dead_reason = None;
            task.finished_at = None;
            let queue = task.queue.clone();
            self.totals(&queue).replayed += 1;
        }
        Ok(picked.len() as u64)
    }

    /// Deletes dead letters.
    pub fn purge(&mut self, selector: &DeadSelector) -> Result<u64, BrokerError> {
        let picked = self.select_dead(selector)?;
        for &i in picked.iter().rev() {
            self.tasks.remove(i);
        }
        Ok(picked.len() as u64)
    }

    /// Deletes the oldest completed, cancelled and dead tasks of each queue beyond its
    /// retention, counting dropped dead letters.
    fn retain(&mut self) {
        let queues: Vec<(QueueName, u64, u64)> = self
            .queues
            .iter()
            .map(|(name, record)| {
                (
                    name.clone(),
                    u64::from(record.config.completed_retain),
                    record.config.dead_retain,
                )
            })
            .collect();
        for (queue, completed_retain, dead_retain) in queues {
            for (state, keep) in [
                (TaskState::Completed, completed_retain),
                (TaskState::Cancelled, completed_retain),
                (TaskState::Dead, dead_retain),
            ] {
                let in_state = |r: &Record| r.task.queue == queue && r.task.state == state;
                let held = self.tasks.iter().filter(|r| in_state(r)).count() as u64;
                let mut excess = held.saturating_sub(keep);
                if excess == 0 {
                    continue;
                }
                if state == TaskState::Dead {
                    self.totals(&queue).dead_dropped += excess;
                }
                self.tasks.retain(|r| {
                    if excess > 0 && in_state(r) {
                        excess -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
}
