//! [`State`]: every task, queue and idempotency key the embedded broker holds, in memory, with
//! the indexes that make each operation O(log n) in the number of tasks.
//!
//! `State` is pure: no I/O, no clock, no locks. Operations take the time and randomness they
//! need, check their input, decide, and then express every change as [`Record`]s that they pass
//! to [`State::commit`], which encodes each record into the log buffer and applies it with
//! [`State::apply`]. Recovery replays the same records through the same `apply`, so the state
//! after a restart is the state before it, by construction.
//!
//! Invariants, checked by [`State::check_invariants`] in tests:
//! - every task is in exactly one `by_state` set of its queue, the one of its state;
//! - `ready` holds exactly the eligible ready tasks (ready, and the lowest id among the
//!   unfinished tasks of its partition key, if it has one);
//! - `due` holds exactly the scheduled and retrying tasks, `leases` exactly the active ones,
//!   `ttl` exactly the waiting tasks that have an expiry;
//! - `dead_by_reason` partitions `by_state[Dead]`;
//! - `key_active` counts the active tasks of each limit key (keys with none are absent).
//!
//! Backpressure state that is not logged (token buckets, the watermark gate, the drain meter)
//! lives beside the indexes in each queue's `Limiter`; it starts fresh after a restart.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use floodway_backpressure::{DrainMeter, TokenBucket, WatermarkGate};
use floodway_core::broker::{validate_batch, validate_lease_duration};
use floodway_core::task::truncate_error;
use floodway_core::{
    BrokerError, DeadReason, DeadSelector, EffectRecord, Enqueued, Event, FailOutcome, Failure,
    Fence, IdGenerator, LatencyHistogram, Lease, LeaseRef, NewTask, OverflowPolicy, QueueConfig,
    QueueName, QueueStats, QueueTotals, Refusal, Reservation, ReserveRequest, StateCounts, Task,
    TaskFilter, TaskId, TaskState, Timestamp, limits, transition,
};

use crate::record::{self, Counts, Record};

/// Randomness a broker operation may draw on: id bits and retry jitter.
pub(crate) trait Random {
    /// 128 random bits.
    fn bits(&mut self) -> u128;
    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64;
}

impl Random for fastrand::Rng {
    fn bits(&mut self) -> u128 {
        self.u128(..)
    }

    fn unit(&mut self) -> f64 {
        self.f64()
    }
}

/// The state at one moment, captured by [`State::capture`] for a snapshot.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Everything but the tasks, as records that restore it.
    records: Vec<Record>,
    /// Every task as it stood.
    tasks: Vec<Arc<Task>>,
}

impl Snapshot {
    /// Writes the framed records that rebuild the captured state from nothing (the body of a
    /// snapshot file) to `out`, a chunk at a time, and returns how many there are.
    pub(crate) fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<u64> {
        const CHUNK: usize = 1 << 20;
        let mut chunk = Vec::with_capacity(CHUNK + 64 * 1024);
        for record in &self.records {
            crate::storage::frame(&mut chunk, |payload| record::encode(record, payload));
            if chunk.len() >= CHUNK {
                out.write_all(&chunk)?;
                chunk.clear();
            }
        }
        for task in &self.tasks {
            crate::storage::frame(&mut chunk, |payload| record::encode_restored(task, payload));
            if chunk.len() >= CHUNK {
                out.write_all(&chunk)?;
                chunk.clear();
            }
        }
        out.write_all(&chunk)?;
        Ok((self.records.len() + self.tasks.len()) as u64)
    }
}

/// A change the log could not apply: the log is corrupt or was written by a broken version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply record: {0}")]
pub(crate) struct ApplyError(pub(crate) String);

/// Key of the reservation order: priority (highest first), then run-at, then id.
type ReadyKey = (Reverse<u8>, Timestamp, TaskId);

/// About how many bytes a task takes in a snapshot, from the fields that never change after
/// enqueue (so that adding it and later subtracting it agree): the fixed fields plus the
/// variable-length ones.
fn footprint(task: &Task) -> u64 {
    const FIXED: usize = 96;
    let headers: usize = task
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    let keys = task.idempotency_key.as_ref().map_or(0, String::len)
        + task.partition_key.as_ref().map_or(0, String::len)
        + task.limit_key.as_ref().map_or(0, String::len);
    let effects: usize = task.effects.iter().map(|(k, r)| k.len() + r.len()).sum();
    (FIXED
        + task.queue.as_str().len()
        + task.kind.len()
        + task.payload.len()
        + headers
        + keys
        + effects) as u64
}

/// Picks up to `max` eligible ready tasks of a queue with rate or concurrency limits, in
/// reservation order, and takes their tokens; says which limit held back an eligible task.
/// See the "Reservation limits" rule of `Broker`'s docs.
fn choose_limited(
    q: &mut Queue,
    tasks: &HashMap<TaskId, Arc<Task>>,
    max: usize,
    now: Timestamp,
) -> (Vec<TaskId>, Option<Throttle>) {
    let at = since_epoch(now);
    let config = &q.config;
    let limiter = &mut q.limiter;
    limiter.token_due = None;
    let active = q.by_state[TaskState::Active.index()].len();
    let slots = config
        .concurrency_max
        .map_or(usize::MAX, |m| (m as usize).saturating_sub(active));
    let tokens = match config.rate_limit {
        Some(limit) => {
            let bucket = limiter
                .bucket
                .get_or_insert_with(|| limit.bucket(at).expect("validated by configure"));
            bucket.available(at) as usize
        }
        None => usize::MAX,
    };
    if limiter.key_buckets.len() > KEY_BUCKETS_SWEEP_AT {
        limiter
            .key_buckets
            .retain(|_, bucket| bucket.available(at) < bucket.burst());
    }
    let room = max.min(slots).min(tokens);
    let mut held_by_rate = false;
    let mut held_by_concurrency = false;
    let mut taken_per_key: HashMap<&str, u32> = HashMap::new();
    let mut chosen = Vec::new();
    let mut passed_over = 0;
    // The soonest a bucket that held a task back has a token again.
    let mut token_wait: Option<Duration> = None;
    let mut note_wait = |wait: Duration| {
        token_wait = Some(token_wait.map_or(wait, |w| w.min(wait)));
    };
    for &(_, _, id) in &q.ready {
        let task = &tasks[&id];
        if let Some(key) = task.limit_key.as_deref() {
            let taken = taken_per_key.get(key).copied().unwrap_or(0);
            let key_full = config
                .key_concurrency_max
                .is_some_and(|kmax| q.key_active.get(key).copied().unwrap_or(0) + taken >= kmax);
            let key_dry = !key_full
                && config.key_rate_limit.is_some_and(|limit| {
                    // Looked up before inserting, so a key seen before costs no allocation.
                    if !limiter.key_buckets.contains_key(key) {
                        let fresh = limit.bucket(at).expect("validated by configure");
                        limiter.key_buckets.insert(key.to_owned(), fresh);
                    }
                    let bucket = limiter.key_buckets.get_mut(key).expect("inserted above");
                    let dry = bucket.available(at) == 0;
                    if dry {
                        note_wait(bucket.next_token_in(at));
                    }
                    dry
                });
            if key_full || key_dry {
                held_by_concurrency |= key_full;
                held_by_rate |= key_dry;
                passed_over += 1;
                if passed_over > limits::LIMITED_SCAN_MAX {
                    break;
                }
                continue;
            }
        }
        // An eligible task: take it, unless the call is full or a queue limit says no.
        if chosen.len() == max {
            break;
        }
        if chosen.len() == room {
            if room == tokens {
                held_by_rate = true;
            } else {
                held_by_concurrency = true;
            }
            break;
        }
        if let Some(key) = task.limit_key.as_deref() {
            *taken_per_key.entry(key).or_default() += 1;
            if let Some(bucket) = limiter.key_buckets.get_mut(key) {
                bucket.take_up_to(1, at);
            }
        }
        chosen.push(id);
    }
    if let Some(bucket) = limiter.bucket.as_mut() {
        bucket.take_up_to(chosen.len() as u32, at);
        if held_by_rate && chosen.len() == tokens {
            note_wait(bucket.next_token_in(at));
        }
    }
    // A waiting reserve looks again when the next token that would let a task through is due.
    limiter.token_due =
        token_wait.map(|wait| now.saturating_add(wait.max(Duration::from_millis(1))));
    let throttle = if held_by_rate {
        Some(Throttle::Rate)
    } else if held_by_concurrency {
        Some(Throttle::Concurrency)
    } else {
        None
    };
    (chosen, throttle)
}

/// Above this many per-key buckets, a reserve drops the full ones (a new bucket is full too).
const KEY_BUCKETS_SWEEP_AT: usize = 10_000;

/// Ends a task's lease because its holder finished with it (ack, fail, release).
fn end_lease(task: &mut Task) {
    task.lease_expires_at = None;
    task.worker = None;
}

/// One queue's configuration, totals and task indexes.
#[derive(Debug, Default)]
struct Queue {
    config: QueueConfig,
    totals: QueueTotals,
    /// Every task of the queue, by state, in id order: listing, counts, retention, "oldest".
    by_state: [BTreeSet<TaskId>; 7],
    /// Dead letters by reason, in id order.
    dead_by_reason: [BTreeSet<TaskId>; 4],
    /// Eligible ready tasks in reservation order.
    ready: BTreeSet<ReadyKey>,
    /// Every ready task, eligible or held back by its partition, by how long it has waited.
    ready_since: BTreeSet<(Timestamp, TaskId)>,
    /// Scheduled and retrying tasks by the time they become ready.
    due: BTreeSet<(Timestamp, TaskId)>,
    /// Active tasks by lease expiry.
    leases: BTreeSet<(Timestamp, TaskId)>,
    /// Waiting tasks with a time to live, by expiry.
    ttl: BTreeSet<(Timestamp, TaskId)>,
    /// Unfinished tasks per partition key, in id order; the first may run.
    partitions: HashMap<String, BTreeSet<TaskId>>,
    /// True while the queue is listed in [`State::woken`].
    woken: bool,
    /// Active tasks per limit key (keys with none are absent).
    key_active: HashMap<String, u32>,
    /// Backpressure state that lives only in memory (see [`Limiter`]).
    limiter: Limiter,
    /// Start latencies of the tasks reserved, recorded by `State::reserve`. In memory only, as
    /// the rules allow: it is not logged (a record per reservation would cost more than the
    /// figure is worth), so it starts empty when the broker opens, and Prometheus sees a
    /// counter reset. Reconfiguring the queue keeps it.
    start_latency: LatencyHistogram,
}

/// A queue's backpressure state that is not logged: token buckets, the watermark gate and the
/// drain meter. It is rebuilt fresh (buckets full, gate accepting) when the configuration
/// changes or the broker restarts, as `Broker`'s docs allow.
#[derive(Debug, Default)]
struct Limiter {
    /// The queue's bucket, created full on first use.
    bucket: Option<TokenBucket>,
    /// One bucket per limit key, created full on first use; full ones are dropped now and
    /// then, since a new bucket is full too.
    key_buckets: HashMap<String, TokenBucket>,
    gate: Option<WatermarkGate>,
    drain: DrainMeter,
    /// When a reserve was last held back by a rate limit: the time its next token is due, so
    /// a waiting reserve knows when to look again.
    token_due: Option<Timestamp>,
}

impl Limiter {
    fn new(config: &QueueConfig) -> Self {
        Limiter {
            gate: config
                .watermarks
                .and_then(|marks| WatermarkGate::new(marks).ok()),
            ..Limiter::default()
        }
    }
}

/// Which limit cut a reserve call short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// A rate limit, the queue's or a key's.
    Rate,
    /// A concurrency limit, the queue's or a key's.
    Concurrency,
}

/// The broker's clock as the backpressure primitives take it: time since the Unix epoch.
fn since_epoch(now: Timestamp) -> Duration {
    Duration::from_millis(now.as_millis())
}

impl Queue {
    fn new(config: QueueConfig) -> Self {
        Queue {
            limiter: Limiter::new(&config),
            config,
            ..Queue::default()
        }
    }

    /// True while the watermark gate refuses enqueues: it crossed the high watermark and the
    /// queue has not yet come down to the low one, or the queue is above the high watermark
    /// now (a gate fresh after a restart has not seen the crossing, but will refuse).
    fn refusing(&self) -> bool {
        self.limiter.gate.as_ref().is_some_and(|gate| {
            let length = self.length();
            (gate.is_refusing() && length > gate.marks().low) || length > gate.marks().high
        })
    }

    fn count(&self, state: TaskState) -> u64 {
        self.by_state[state.index()].len() as u64
    }

    fn length(&self) -> u64 {
        self.count(TaskState::Scheduled)
            + self.count(TaskState::Ready)
            + self.count(TaskState::Retrying)
    }

    /// True when `task` may be reserved once ready: it has no partition key, or it is the
    /// oldest unfinished task of its key.
    fn is_partition_head(&self, task: &Task) -> bool {
        match &task.partition_key {
            None => true,
            Some(key) => self
                .partitions
                .get(key)
                .and_then(|ids| ids.first())
                .is_none_or(|head| *head == task.id),
        }
    }
}

/// The embedded broker's whole state. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Behind an `Arc`, so moving a task in or out of the map copies a pointer, not a few
    /// hundred bytes, and a snapshot can hold every task as it stood without copying any:
    /// changes go through [`Arc::make_mut`], which copies only a task the snapshot still holds.
    tasks: HashMap<TaskId, Arc<Task>>,
    queues: BTreeMap<QueueName, Queue>,
    /// (queue, key) → (first task, end of window).
    idempotency: HashMap<(QueueName, String), (TaskId, Timestamp)>,
    ids: IdGenerator,
    /// The greatest id issued, so that a restart never issues a smaller one.
    id_floor: Option<TaskId>,
    /// How many times the data directory was opened before the current opening (0 the first
    /// time). Fences issued now are above `epoch << 32`, so a fence handed out before a crash,
    /// whose reservation never reached the disk, can never equal a fence handed out after it.
    epoch: u32,
    /// The estimated encoded size of every task held (see [`footprint`]), kept up to date by
    /// [`State::insert`] and [`State::remove`]: how large a snapshot would be, which decides
    /// when compaction pays.
    live_bytes: u64,
    /// Queues that gained eligible ready tasks since [`State::take_woken`] was last called
    /// (each once: [`Queue::woken`] marks the ones listed); the broker wakes workers waiting
    /// on them.
    woken: Vec<QueueName>,
}

impl State {
    // ----- operations: validate, decide, commit ---------------------------------------------

    /// Enqueues a batch (all or nothing). See `Broker::enqueue`.
    pub(crate) fn enqueue(
        &mut self,
        queue: &QueueName,
        tasks: Vec<NewTask>,
        now: Timestamp,
        random: &mut impl Random,
        log: &mut Vec<u8>,
    ) -> Result<Vec<Enqueued>, BrokerError> {
        validate_batch(tasks.len())?;
        for task in &tasks {
            task.validate()?;
        }
        let config = match self.queues.get(queue) {
            Some(q) => q.config.clone(),
            None => {
                self.check_queue_capacity()?;
                QueueConfig::default()
            }
        };

        // Decide which tasks are new before changing anything, so a refusal changes nothing.
        let mut keys_in_batch: HashMap<&str, usize> = HashMap::new();
        let mut plan = Vec::with_capacity(tasks.len());
        for (index, task) in tasks.iter().enumerate() {
            let duplicate_of = task.idempotency_key.as_deref().and_then(|key| {
                if let Some(first) = keys_in_batch.get(key) {
                    return Some(Err(*first));
                }
                keys_in_batch.insert(key, index);
                self.idempotency
                    .get(&(queue.clone(), key.to_owned()))
                    .filter(|(_, until)| *until > now)
                    .map(|(id, _)| Ok(*id))
            });
            plan.push(duplicate_of);
        }
        let new_count = plan.iter().filter(|p| p.is_none()).count() as u64;
        let duplicates = tasks.len() as u64 - new_count;
        let length = self.queues.get(queue).map_or(0, Queue::length);
        if new_count > 0
            && let Some(q) = self.queues.get_mut(queue)
            && let Some(gate) = q.limiter.gate.as_mut()
            && !gate.admit(length, new_count)
        {
            let marks = gate.marks();
            q.limiter
                .drain
                .observe(since_epoch(now), q.totals.completed);
            let retry_after = q.limiter.drain.time_to_drain(length - marks.low);
            self.count(queue, Counts::REJECTED_OVERLOADED, log);
            return Err(BrokerError::Overloaded {
                queue: queue.clone(),
                length,
                high: marks.high,
                low: marks.low,
                retry_after,
            });
        }
        let limit = config.length_limit();
        if new_count > limit {
            return Err(BrokerError::invalid(
                "tasks",
                format!(
                    "{new_count} new tasks can never fit in queue {queue}, whose length_max is {limit}"
                ),
            ));
        }
        let mut overflow = Vec::new();
        if length + new_count > limit {
            if config.overflow == OverflowPolicy::Reject {
                self.count(queue, Counts::REJECTED_FULL, log);
                return Err(BrokerError::QueueFull {
                    queue: queue.clone(),
                    length,
                    max: limit,
                    retry_after: Duration::from_secs(1),
                });
            }
            overflow = self.oldest_waiting(queue, length + new_count - limit);
        }

        if !self.queues.contains_key(queue) {
            self.commit(
                Record::QueueConfigured {
                    queue: queue.clone(),
                    config: config.clone(),
                },
                log,
            );
        }
        for id in overflow {
            self.commit(Record::Overflowed { id, at: now }, log);
        }
        let mut results: Vec<Enqueued> = Vec::with_capacity(tasks.len());
        for (task, duplicate_of) in tasks.into_iter().zip(plan) {
            match duplicate_of {
                Some(Ok(id)) => results.push(Enqueued {
                    id,
                    duplicate: true,
                }),
                Some(Err(first_index)) => results.push(Enqueued {
                    id: results[first_index].id,
                    duplicate: true,
                }),
                None => {
                    let id = self.ids.next(now, random.bits());
                    let idempotency_expires_at = task
                        .idempotency_key
                        .as_ref()
                        .map(|_| now.saturating_add(config.idempotency_window));
                    let task = Task::from_new(task, id, queue.clone(), &config, now);
                    self.commit(
                        Record::Enqueued {
                            task: Arc::new(task),
                            idempotency_expires_at,
                        },
                        log,
                    );
                    results.push(Enqueued {
                        id,
                        duplicate: false,
                    });
                }
            }
        }
        if duplicates > 0 {
            self.count(
                queue,
                Counts {
                    deduplicated: duplicates,
                    ..Counts::default()
                },
                log,
            );
        }
        Ok(results)
    }

    /// Leases up to `request.max` eligible tasks. See `Broker::reserve`. Also says which
    /// limit, if any, held back an eligible task while fewer than `max` were leased; the
    /// caller counts it once per call with [`State::count_throttle`].
    pub(crate) fn reserve(
        &mut self,
        request: &ReserveRequest,
        now: Timestamp,
        log: &mut Vec<u8>,
    ) -> Result<(Vec<Reservation>, Option<Throttle>), BrokerError> {
        request.validate()?;
        self.tick_queue(&request.queue, now, log);
        let Some(queue) = self.queues.get_mut(&request.queue) else {
            return Ok((Vec::new(), None));
        };
        if queue.config.paused {
            return Ok((Vec::new(), None));
        }
        let (chosen, throttle) = if queue.config.limits_reservations() {
            choose_limited(queue, &self.tasks, request.max, now)
        } else {
            let ids = queue.ready.iter().take(request.max).map(|k| k.2).collect();
            (ids, None)
        };
        let expires_at = now.saturating_add(request.lease);
        let mut reservations = Vec::with_capacity(chosen.len());
        let mut latency = LatencyHistogram::default();
        for id in chosen {
            // A ready task's run_at is when it became due (the rules in floodway_core::broker).
            latency.record(now.saturating_since(self.tasks[&id].run_at));
            let fence = Fence(self.tasks[&id].fence.0.max(self.fence_base())).next();
            self.commit(
                Record::Reserved {
                    id,
                    fence,
                    expires_at,
                    worker: request.worker.clone(),
                },
                log,
            );
            reservations.push(Reservation {
                task: (*self.tasks[&id]).clone(),
                lease: Lease {
                    task_id: id,
                    fence,
                    expires_at,
                },
            });
        }
        if !reservations.is_empty()
            && let Some(queue) = self.queues.get_mut(&request.queue)
        {
            queue.start_latency.merge(&latency);
        }
        let throttle = throttle.filter(|_| reservations.len() < request.max);
        Ok((reservations, throttle))
    }

    /// Counts one reserve call cut short by `throttle` in the queue's totals.
    pub(crate) fn count_throttle(
        &mut self,
        queue: &QueueName,
        throttle: Throttle,
        log: &mut Vec<u8>,
    ) {
        if self.queues.contains_key(queue) {
            let counts = match throttle {
                Throttle::Rate => Counts::THROTTLED_RATE,
                Throttle::Concurrency => Counts::THROTTLED_CONCURRENCY,
            };
            self.count(queue, counts, log);
        }
    }

    /// Records side effects on their tasks. See `Broker::record_effects`.
    pub(crate) fn record_effects(
        &mut self,
        effects: Vec<EffectRecord>,
        now: Timestamp,
        log: &mut Vec<u8>,
    ) -> Result<Vec<Result<(), Refusal>>, BrokerError> {
        validate_batch(effects.len())?;
        let mut keys_after: HashMap<TaskId, std::collections::BTreeSet<&str>> = HashMap::new();
        for effect in &effects {
            effect.validate()?;
            if let Some(task) = self.tasks.get(&effect.lease.task_id) {
                let keys = keys_after
                    .entry(task.id)
                    .or_insert_with(|| task.effects.keys().map(String::as_str).collect());
                keys.insert(&effect.key);
                if keys.len() > limits::EFFECTS_MAX {
                    return Err(BrokerError::invalid(
                        "effects",
                        format!(
                            "task {} would hold more than {} effects",
                            task.id,
                            limits::EFFECTS_MAX
                        ),
                    ));
                }
            }
        }
        Ok(effects
            .into_iter()
            .map(|effect| {
                self.check_lease(&effect.lease, Event::Extend, now, log)?;
                self.commit(
                    Record::EffectRecorded {
                        id: effect.lease.task_id,
                        key: effect.key,
                        result: effect.result,
                    },
                    log,
                );
                Ok(())
            })
            .collect())
    }

    /// Completes leased tasks. See `Broker::ack`.
    pub(crate) fn ack(
        &mut self,
        leases: &[LeaseRef],
        now: Timestamp,
        log: &mut Vec<u8>,
    ) -> Result<Vec<Result<(), Refusal>>, BrokerError> {
        self.lease_batch(leases, Event::Ack, now, log, |lease| {
            let record = Record::Acked {
                id: lease.task_id,
                at: now,
            };
            (record, ())
        })
    }

    /// Checks each lease for `event` and, for each one that holds, commits the record `change`
    /// makes of it; returns `change`'s value or the refusal, per lease.
    fn lease_batch<T>(
        &mut self,
        leases: &[LeaseRef],
        event: Event,
        now: Timestamp,
        log: &mut Vec<u8>,
        mut change: impl FnMut(&LeaseRef) -> (Record, T),
    ) -> Result<Vec<Result<T, Refusal>>, BrokerError> {
        validate_batch(leases.len())?;
        Ok(leases
            .iter()
            .map(|lease| {
                self.check_lease(lease, event, now, log)?;
                let (record, value) = change(lease);
                self.commit(record, log);
                Ok(value)
            })
            .collect())
    }

    /// Records failed attempts. See `Broker::fail`.
    pub(crate) fn fail(
        &mut self,
        failures: Vec<Failure>,
        now: Timestamp,
        random: &mut impl Random,
        log: &mut Vec<u8>,
    ) -> Result<Vec<Result<FailOutcome, Refusal>>, BrokerError> {
        validate_batch(failures.len())?;
        Ok(failures
            .into_iter()
            .map(|failure| {
                let id = failure.lease.task_id;
                self.check_lease(&failure.lease, Event::Fail { retry: true }, now, log)?;
                let error = truncate_error(&failure.error);
                let disposition =
                    self.tasks[&id].failure_disposition(failure.retry, now, random.unit());
                match disposition {
                    Ok(run_at) => {
                        self.commit(
                            Record::Retried {
                                id,
                                at: now,
                                run_at,
                                error,
                            },
                            log,
                        );
                        Ok(FailOutcome::Retrying { run_at })
                    }
                    Err(reason) => {
                        self.commit(
                            Record::Failed {
                                id,
                                at: now,
                                reason,
                                error,
                            },
                            log,
                        );
                        Ok(FailOutcome::Dead { reason })
                    }
                }
            })
            .collect())
    }

    /// Extends leases to `duration` from now. See `Broker::extend`.
    pub(crate) fn extend(
        &mut self,
        leases: &[LeaseRef],
        duration: Duration,
        now: Timestamp,
        log: &mut Vec<u8>,
    ) -> Result<Vec<Result<Lease, Refusal>>, BrokerError> {
        validate_lease_duration(duration)?;
        let expires_at = now.saturating_add(duration);
        self.lease_batch(leases, Event::Extend, now, log, |lease| {
            let record = Record::Extended {
                id: lease.task_id,
                expires_at,
            };
            let extended = Lease {
                task_id: lease.task_id,
                fence: lease.fence,
                expires_at,
            };
            (record, extended)
        })
    }

    /// Gives leased tasks back unrun. See `Broker::release`.
    pub(crate) fn release(
        &mut self,
        leases: &[LeaseRef],
        now: Timestamp,
        log: &mut Vec<u8>,
    ) -> Result<Vec<Result<(), Refusal>>, BrokerError> {
        self.lease_batch(leases, Event::Release, now, log, |lease| {
            let record = Record::Released {
                id: lease.task_id,
                at: now,
            };
            (record, ())
        })
    }

    /// Cancels waiting tasks. See `Broker::cancel`.
    pub(crate) fn cancel(
        &mut self,
        ids: &[TaskId],
        now: Timestamp,
        log: &mut Vec<u8>,
    ) -> Result<Vec<Result<(), Refusal>>, BrokerError> {
        validate_batch(ids.len())?;
        Ok(ids
            .iter()
            .map(|&id| {
                let task = self.tasks.get(&id).ok_or(Refusal::UnknownTask)?;
                transition(task.state, Event::Cancel)
                    .map_err(|_| Refusal::WrongState { state: task.state })?;
                self.commit(Record::Cancelled { id, at: now }, log);
                Ok(())
            })
            .collect())
    }

    /// Promotes due tasks and expires waiting tasks past their TTL in every queue; returns how
    /// many tasks moved.
    pub(crate) fn promote(&mut self, now: Timestamp, log: &mut Vec<u8>) -> u64 {
        let names: Vec<QueueName> = self.queues.keys().cloned().collect();
        names
            .iter()
            .map(|queue| self.promote_queue(queue, now, log))
            .sum()
    }

    /// Takes back expired leases in every queue; returns how many.
    pub(crate) fn reap(&mut self, now: Timestamp, log: &mut Vec<u8>) -> u64 {
        let names: Vec<QueueName> = self.queues.keys().cloned().collect();
        names
            .iter()
            .map(|queue| self.reap_queue(queue, now, log))
            .sum()
    }

    /// Replaces a queue's configuration, creating the queue if needed.
    pub(crate) fn configure(
        &mut self,
        queue: &QueueName,
        config: QueueConfig,
        log: &mut Vec<u8>,
    ) -> Result<(), BrokerError> {
        config.validate()?;
        if !self.queues.contains_key(queue) {
            self.check_queue_capacity()?;
        }
        self.commit(
            Record::QueueConfigured {
                queue: queue.clone(),
                config,
            },
            log,
        );
        Ok(())
    }

    /// Pauses or resumes an existing queue.
    pub(crate) fn set_paused(
        &mut self,
        queue: &QueueName,
        paused: bool,
        log: &mut Vec<u8>,
    ) -> Result<(), BrokerError> {
        let q = self
            .queues
            .get(queue)
            .ok_or_else(|| BrokerError::UnknownQueue(queue.clone()))?;
        if q.config.paused == paused {
            return Ok(());
        }
        let config = QueueConfig {
            paused,
            ..q.config.clone()
        };
        self.commit(
            Record::QueueConfigured {
                queue: queue.clone(),
                config,
            },
            log,
        );
        Ok(())
    }

    /// Replays dead letters. See `Broker::replay`.
    pub(crate) fn replay(
        &mut self,
        selector: &DeadSelector,
        now: Timestamp,
        log: &mut Vec<u8>,
    ) -> Result<u64, BrokerError> {
        let ids = self.select_dead(selector)?;
        for &id in &ids {
            self.commit(Record::Replayed { id, at: now }, log);
        }
        Ok(ids.len() as u64)
    }

    /// Purges dead letters. See `Broker::purge`.
    pub(crate) fn purge(
        &mut self,
        selector: &DeadSelector,
        log: &mut Vec<u8>,
    ) -> Result<u64, BrokerError> {
        let ids = self.select_dead(selector)?;
        for &id in &ids {
            self.commit(Record::Purged { id }, log);
        }
        Ok(ids.len() as u64)
    }

    /// Reaps, then promotes and expires, what is due in one queue. Reaping comes first so a
    /// task whose lease expired after its TTL is dead-lettered, not handed out again.
    pub(crate) fn tick_queue(&mut self, queue: &QueueName, now: Timestamp, log: &mut Vec<u8>) {
        self.reap_queue(queue, now, log);
        self.promote_queue(queue, now, log);
    }

    /// Forgets idempotency keys whose window has closed, at most `max` of them; returns how
    /// many were forgotten. Expired keys are already ignored, so this only frees memory.
    pub(crate) fn sweep_idempotency(&mut self, now: Timestamp, max: usize) -> usize {
        let before = self.idempotency.len();
        let mut budget = max;
        self.idempotency.retain(|_, (_, until)| {
            if budget > 0 && *until <= now {
                budget -= 1;
                false
            } else {
                true
            }
        });
        before - self.idempotency.len()
    }

    // ----- reads ---------------------------------------------------------------------------

    /// One task.
    pub(crate) fn get(&self, id: TaskId) -> Result<Task, BrokerError> {
        self.tasks
            .get(&id)
            .map(|task| (**task).clone())
            .ok_or(BrokerError::UnknownTask(id))
    }

    /// Tasks matching `filter`, in id order.
    pub(crate) fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, BrokerError> {
        filter.validate()?;
        let queues: Vec<&Queue> = match &filter.queue {
            Some(name) => match self.queues.get(name) {
                Some(q) => vec![q],
                None => return Err(BrokerError::UnknownQueue(name.clone())),
            },
            None => self.queues.values().collect(),
        };
        let state = if filter.dead_reason.is_some() {
            Some(TaskState::Dead)
        } else {
            filter.state
        };
        let lower = filter.after.map_or(std::ops::Bound::Unbounded, |after| {
            std::ops::Bound::Excluded(after)
        });
        let range = (lower, std::ops::Bound::Unbounded);
        let mut ids: Vec<TaskId> = Vec::new();
        for q in queues {
            let sets: Vec<&BTreeSet<TaskId>> = match (state, filter.dead_reason) {
                (_, Some(reason)) => vec![&q.dead_by_reason[reason.index()]],
                (Some(state), None) => vec![&q.by_state[state.index()]],
                (None, None) => q.by_state.iter().collect(),
            };
            for set in sets {
                ids.extend(set.range(range).take(filter.limit));
            }
        }
        ids.sort_unstable();
        ids.truncate(filter.limit);
        Ok(ids
            .into_iter()
            .map(|id| (*self.tasks[&id]).clone())
            .collect())
    }

    /// Statistics of one queue or all.
    pub(crate) fn stats(
        &self,
        queue: Option<&QueueName>,
        now: Timestamp,
    ) -> Result<Vec<QueueStats>, BrokerError> {
        let stats_of = |name: &QueueName, q: &Queue| {
            let mut counts = StateCounts::default();
            for state in TaskState::ALL {
                *counts.get_mut(state) = q.count(state);
            }
            let oldest_ready = q.ready_since.first().map(|(since, _)| *since);
            QueueStats {
                queue: name.clone(),
                config: q.config.clone(),
                counts,
                totals: q.totals,
                oldest_ready_age: oldest_ready.map(|at| now.saturating_since(at)),
                refusing: q.refusing(),
                start_latency: q.start_latency,
            }
        };
        match queue {
            Some(name) => {
                let q = self
                    .queues
                    .get(name)
                    .ok_or_else(|| BrokerError::UnknownQueue(name.clone()))?;
                Ok(vec![stats_of(name, q)])
            }
            None => Ok(self.queues.iter().map(|(n, q)| stats_of(n, q)).collect()),
        }
    }

    /// The earliest time something in `queue` becomes due or a lease there expires, so a
    /// waiting reserve knows when to look again.
    pub(crate) fn next_event(&self, queue: &QueueName) -> Option<Timestamp> {
        let q = self.queues.get(queue)?;
        [q.due.first(), q.leases.first(), q.ttl.first()]
            .into_iter()
            .flatten()
            .map(|(at, _)| *at)
            .chain(q.limiter.token_due)
            .min()
    }

    /// Queues that gained eligible ready tasks since the last call.
    pub(crate) fn take_woken(&mut self) -> Vec<QueueName> {
        for name in &self.woken {
            if let Some(q) = self.queues.get_mut(name) {
                q.woken = false;
            }
        }
        std::mem::take(&mut self.woken)
    }

    /// Captures the state as it stands, for a snapshot: the small records (queues, totals,
    /// idempotency keys) and a reference to every task. Under the broker's lock this costs a
    /// pointer copy per task; [`Snapshot::encode`] does the real work later, elsewhere.
    pub(crate) fn capture(&self, now: Timestamp) -> Snapshot {
        let mut records = Vec::with_capacity(2 + 2 * self.queues.len());
        records.push(Record::Opened { epoch: self.epoch });
        if let Some(id) = self.id_floor {
            records.push(Record::IdFloor { id });
        }
        for (name, q) in &self.queues {
            records.push(Record::QueueConfigured {
                queue: name.clone(),
                config: q.config.clone(),
            });
            records.push(Record::Totals {
                queue: name.clone(),
                totals: q.totals,
            });
        }
        for ((queue, key), (id, expires_at)) in &self.idempotency {
            if *expires_at > now {
                records.push(Record::IdempotencyKey {
                    queue: queue.clone(),
                    key: key.clone(),
                    id: *id,
                    expires_at: *expires_at,
                });
            }
        }
        Snapshot {
            records,
            tasks: self.tasks.values().cloned().collect(),
        }
    }

    /// The epoch recovered from the log: the opening before this one.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The estimated size of a snapshot of the state now, in bytes.
    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes + 256 * self.queues.len() as u64 + 64 * self.idempotency.len() as u64
    }

    /// Every fence issued in the current epoch is above this.
    fn fence_base(&self) -> u64 {
        u64::from(self.epoch) << 32
    }

    /// How many tasks the state holds.
    pub(crate) fn task_count(&self) -> usize {
        self.tasks.len()
    }

    // ----- the single mutator ----------------------------------------------------------------

    /// Encodes `record` into the log buffer and applies it.
    pub(crate) fn commit(&mut self, record: Record, log: &mut Vec<u8>) {
        crate::storage::frame(log, |payload| record::encode(&record, payload));
        if let Err(err) = self.apply(record) {
            // Operations check every record before committing it, so this is a bug in them.
            panic!("an operation committed an inapplicable record: {err}");
        }
    }

    /// Applies one record: the only place the state changes.
    pub(crate) fn apply(&mut self, record: Record) -> Result<(), ApplyError> {
        match record {
            Record::QueueConfigured { queue, config } => {
                let q = self
                    .queues
                    .entry(queue.clone())
                    .or_insert_with(|| Queue::new(config.clone()));
                let was_paused = q.config.paused;
                if q.config.rate_limit != config.rate_limit
                    || q.config.key_rate_limit != config.key_rate_limit
                    || q.config.watermarks != config.watermarks
                {
                    q.limiter = Limiter::new(&config);
                }
                q.config = config;
                if was_paused && !q.config.paused && !q.ready.is_empty() && !q.woken {
                    q.woken = true;
                    self.woken.push(queue.clone());
                }
                self.enforce_retention(&queue);
            }
            Record::Enqueued {
                task,
                idempotency_expires_at,
            } => {
                if let (Some(key), Some(until)) = (&task.idempotency_key, idempotency_expires_at) {
                    self.idempotency
                        .insert((task.queue.clone(), key.clone()), (task.id, until));
                }
                self.queue_mut(&task.queue)?.totals.enqueued += 1;
                self.insert(task)?;
            }
            Record::Restored { task } => self.insert(task)?,
            Record::Promoted { id } => self.change(id, Event::Due, |_| {})?,
            Record::Reserved {
                id,
                fence,
                expires_at,
                worker,
            } => {
                self.change(id, Event::Reserve, |task| {
                    task.attempt += 1;
                    task.fence = fence;
                    task.lease_expires_at = Some(expires_at);
                    task.worker = worker;
                })?;
                self.totals_of(id)?.reserved += 1;
            }
            Record::Extended { id, expires_at } => self.change(id, Event::Extend, |task| {
                task.lease_expires_at = Some(expires_at);
            })?,
            Record::Acked { id, at } => {
                self.change(id, Event::Ack, |task| {
                    end_lease(task);
                    task.finished_at = Some(at);
                })?;
                self.totals_of(id)?.completed += 1;
                self.enforce_retention_of(id);
            }
            Record::Retried {
                id,
                at: _,
                run_at,
                error,
            } => {
                self.change(id, Event::Fail { retry: true }, |task| {
                    end_lease(task);
                    task.run_at = run_at;
                    task.last_error = Some(error);
                })?;
                self.totals_of(id)?.retried += 1;
            }
            Record::Failed {
                id,
                at,
                reason,
                error,
            } => {
                self.change(id, Event::Fail { retry: false }, |task| {
                    end_lease(task);
                    task.last_error = Some(error);
                    task.dead_reason = Some(reason);
                    task.finished_at = Some(at);
                })?;
                self.count_dead(id, reason)?;
            }
            Record::Released { id, at } => {
                self.change(id, Event::Release, |task| {
                    end_lease(task);
                    task.attempt = task.attempt.saturating_sub(1);
                    task.run_at = at;
                })?;
                self.totals_of(id)?.released += 1;
            }
            Record::LeaseExpired { id, at, dead } => {
                // The task keeps `lease_expires_at`, so a late call with this fence is
                // refused as expired rather than as "wrong state".
                self.change(id, Event::LeaseExpired { retry: !dead }, |task| {
                    task.worker = None;
                    task.run_at = at;
                    task.last_error = Some(format!("lease expired on attempt {}", task.attempt));
                    if dead {
                        task.dead_reason = Some(DeadReason::MaxAttempts);
                        task.finished_at = Some(at);
                    }
                })?;
                self.totals_of(id)?.leases_expired += 1;
                if dead {
                    self.count_dead(id, DeadReason::MaxAttempts)?;
                }
            }
            Record::Expired { id, at } => {
                self.change(id, Event::Expire, |task| {
                    task.dead_reason = Some(DeadReason::Expired);
                    task.finished_at = Some(at);
                })?;
                self.count_dead(id, DeadReason::Expired)?;
            }
            Record::Overflowed { id, at } => {
                self.change(id, Event::Overflow, |task| {
                    task.dead_reason = Some(DeadReason::Overflow);
                    task.finished_at = Some(at);
                })?;
                self.count_dead(id, DeadReason::Overflow)?;
            }
            Record::Cancelled { id, at } => {
                self.change(id, Event::Cancel, |task| task.finished_at = Some(at))?;
                self.totals_of(id)?.cancelled += 1;
                self.enforce_retention_of(id);
            }
            Record::Replayed { id, at } => {
                self.change(id, Event::Replay, |task| {
                    task.attempt = 0;
                    task.run_at = at;
                    task.expires_at = None;
                    task.dead_reason = None;
                    task.finished_at = None;
                })?;
                self.totals_of(id)?.replayed += 1;
            }
            Record::Purged { id } => {
                let task = self
                    .tasks
                    .get(&id)
                    .ok_or_else(|| ApplyError(format!("purge of unknown task {id}")))?;
                if task.state != TaskState::Dead {
                    return Err(ApplyError(format!("purge of {} task {id}", task.state)));
                }
                self.remove(id);
            }
            Record::Totals { queue, totals } => self.queue_mut(&queue)?.totals = totals,
            Record::Counted { queue, counts } => {
                let totals = &mut self.queue_mut(&queue)?.totals;
                totals.deduplicated += counts.deduplicated;
                totals.rejected_full += counts.rejected_full;
                totals.stale_refused += counts.stale_refused;
                totals.rejected_overloaded += counts.rejected_overloaded;
                totals.throttled_rate += counts.throttled_rate;
                totals.throttled_concurrency += counts.throttled_concurrency;
            }
            Record::EffectRecorded { id, key, result } => {
                let task = self
                    .tasks
                    .get_mut(&id)
                    .ok_or_else(|| ApplyError(format!("effect of unknown task {id}")))?;
                let task = Arc::make_mut(task);
                self.live_bytes += (key.len() + result.len()) as u64;
                if let Some(old) = task.effects.insert(key.clone(), result) {
                    self.live_bytes -= (key.len() + old.len()) as u64;
                }
                self.totals_of(id)?.effects_recorded += 1;
            }
            Record::IdempotencyKey {
                queue,
                key,
                id,
                expires_at,
            } => {
                self.idempotency.insert((queue, key), (id, expires_at));
            }
            Record::IdFloor { id } => self.raise_id_floor(id),
            Record::Opened { epoch } => self.epoch = self.epoch.max(epoch),
        }
        Ok(())
    }

    // ----- internals -------------------------------------------------------------------------

    /// Adds `counts` to a queue's totals, durably: totals survive a restart like everything else.
    fn count(&mut self, queue: &QueueName, counts: Counts, log: &mut Vec<u8>) {
        self.commit(
            Record::Counted {
                queue: queue.clone(),
                counts,
            },
            log,
        );
    }

    fn check_queue_capacity(&self) -> Result<(), BrokerError> {
        if self.queues.len() >= limits::QUEUES_MAX {
            return Err(BrokerError::LimitReached(format!(
                "the broker already holds {} queues",
                limits::QUEUES_MAX
            )));
        }
        Ok(())
    }

    /// Checks that `lease` is the current, unexpired lease of an active task that may take
    /// `event`; counts refusals for stale or expired leases.
    fn check_lease(
        &mut self,
        lease: &LeaseRef,
        event: Event,
        now: Timestamp,
        log: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let task = self.tasks.get(&lease.task_id).ok_or(Refusal::UnknownTask)?;
        let refusal = if task.fence != lease.fence {
            Refusal::StaleFence {
                presented: lease.fence,
                current: task.fence,
            }
        } else if transition(task.state, event).is_err() {
            // A task taken back for an expired lease keeps that lease's expiry until it is
            // reserved again: the caller's lease expired, whatever happened since.
            match (task.state, task.lease_expires_at) {
                (TaskState::Active, _) | (_, None) => {
                    return Err(Refusal::WrongState { state: task.state });
                }
                (_, Some(expired_at)) => Refusal::LeaseExpired { expired_at },
            }
        } else {
            match task.lease_expires_at {
                Some(expired_at) if expired_at <= now => Refusal::LeaseExpired { expired_at },
                _ => return Ok(()),
            }
        };
        let queue = task.queue.clone();
        self.count(&queue, Counts::STALE_REFUSED, log);
        Err(refusal)
    }

    /// The `count` oldest waiting tasks of `queue` (lowest ids among scheduled, ready and
    /// retrying).
    fn oldest_waiting(&self, queue: &QueueName, count: u64) -> Vec<TaskId> {
        let Some(q) = self.queues.get(queue) else {
            return Vec::new();
        };
        let mut iters = [
            q.by_state[TaskState::Scheduled.index()].iter().peekable(),
            q.by_state[TaskState::Ready.index()].iter().peekable(),
            q.by_state[TaskState::Retrying.index()].iter().peekable(),
        ];
        let mut oldest = Vec::new();
        while (oldest.len() as u64) < count {
            let next = iters
                .iter_mut()
                .enumerate()
                .filter_map(|(i, it)| it.peek().map(|id| (**id, i)))
                .min();
            let Some((id, i)) = next else { break };
            iters[i].next();
            oldest.push(id);
        }
        oldest
    }

    fn select_dead(&self, selector: &DeadSelector) -> Result<Vec<TaskId>, BrokerError> {
        selector.validate()?;
        Ok(match selector {
            DeadSelector::Ids(ids) => ids
                .iter()
                .copied()
                .filter(|id| {
                    self.tasks
                        .get(id)
                        .is_some_and(|t| t.state == TaskState::Dead)
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            DeadSelector::Matching {
                queue,
                reason,
                limit,
            } => {
                if let Some(name) = queue
                    && !self.queues.contains_key(name)
                {
                    return Err(BrokerError::UnknownQueue(name.clone()));
                }
                let mut ids: Vec<TaskId> = Vec::new();
                for (name, q) in &self.queues {
                    if queue.as_ref().is_some_and(|want| want != name) {
                        continue;
                    }
                    let set = match reason {
                        Some(reason) => &q.dead_by_reason[reason.index()],
                        None => &q.by_state[TaskState::Dead.index()],
                    };
                    ids.extend(set.iter().take(*limit));
                }
                ids.sort_unstable();
                ids.truncate(*limit);
                ids
            }
        })
    }

    fn promote_queue(&mut self, queue: &QueueName, now: Timestamp, log: &mut Vec<u8>) -> u64 {
        let mut moved = 0;
        loop {
            let Some(q) = self.queues.get(queue) else {
                return moved;
            };
            let expired = q
                .ttl
                .first()
                .filter(|(at, _)| *at <= now)
                .map(|(_, id)| *id);
            let due = q
                .due
                .first()
                .filter(|(at, _)| *at <= now)
                .map(|(_, id)| *id);
            // Expiry first: a task that is both due and expired never runs.
            if let Some(id) = expired {
                self.commit(Record::Expired { id, at: now }, log);
            } else if let Some(id) = due {
                self.commit(Record::Promoted { id }, log);
            } else {
                return moved;
            }
            moved += 1;
        }
    }

    fn reap_queue(&mut self, queue: &QueueName, now: Timestamp, log: &mut Vec<u8>) -> u64 {
        let mut reaped = 0;
        loop {
            let Some(q) = self.queues.get(queue) else {
                return reaped;
            };
            let Some(&(expired_at, id)) = q.leases.first().filter(|(at, _)| *at <= now) else {
                return reaped;
            };
            let dead = self.tasks[&id].attempts_exhausted();
            // Dated when the lease expired, not when it was noticed, so the task's place in
            // the reservation order does not depend on when reaping ran.
            let record = Record::LeaseExpired {
                id,
                at: expired_at,
                dead,
            };
            self.commit(record, log);
            reaped += 1;
        }
    }

    fn queue_mut(&mut self, queue: &QueueName) -> Result<&mut Queue, ApplyError> {
        self.queues
            .get_mut(queue)
            .ok_or_else(|| ApplyError(format!("unknown queue {queue}")))
    }

    fn totals_of(&mut self, id: TaskId) -> Result<&mut QueueTotals, ApplyError> {
        let queue = self.tasks[&id].queue.clone();
        Ok(&mut self.queue_mut(&queue)?.totals)
    }

    fn count_dead(&mut self, id: TaskId, reason: DeadReason) -> Result<(), ApplyError> {
        *self.totals_of(id)?.dead.get_mut(reason) += 1;
        self.enforce_retention_of(id);
        Ok(())
    }

    fn raise_id_floor(&mut self, id: TaskId) {
        if self.id_floor.is_none_or(|floor| id > floor) {
            self.id_floor = Some(id);
            self.ids = IdGenerator::after(id);
        }
    }

    /// Adds a task with all its index entries.
    fn insert(&mut self, task: Arc<Task>) -> Result<(), ApplyError> {
        if self.tasks.contains_key(&task.id) {
            return Err(ApplyError(format!("task {} exists already", task.id)));
        }
        if !self.queues.contains_key(&task.queue) {
            return Err(ApplyError(format!("task {} of unknown queue", task.id)));
        }
        self.raise_id_floor(task.id);
        self.live_bytes += footprint(&task);
        let id = task.id;
        let partition = (!task.state.is_finished())
            .then(|| task.partition_key.clone())
            .flatten()
            .map(|key| (task.queue.clone(), key));
        self.tasks.insert(id, task);
        if let Some((queue, key)) = &partition {
            self.partition_join(queue, key, id);
        }
        self.index(id);
        Ok(())
    }

    /// Deletes a task and its index entries.
    fn remove(&mut self, id: TaskId) {
        self.unindex(id);
        let task = self.tasks.remove(&id).expect("removing a task that exists");
        self.live_bytes -= footprint(&task);
        if let Some(key) = &task.partition_key
            && !task.state.is_finished()
        {
            self.partition_leave(&task.queue, key, id);
        }
    }

    /// Moves a task through `event` (which must be legal), letting `update` set the fields the
    /// move changes, and keeps every index in step.
    fn change(
        &mut self,
        id: TaskId,
        event: Event,
        update: impl FnOnce(&mut Task),
    ) -> Result<(), ApplyError> {
        let task = self
            .tasks
            .get(&id)
            .ok_or_else(|| ApplyError(format!("{event:?} of unknown task {id}")))?;
        let to = transition(task.state, event).map_err(|e| ApplyError(format!("{e} ({id})")))?;
        let was_finished = task.state.is_finished();
        self.unindex(id);
        let task = Arc::make_mut(self.tasks.get_mut(&id).expect("checked above"));
        task.state = to;
        update(task);
        let partition = task
            .partition_key
            .clone()
            .map(|key| (task.queue.clone(), key));
        // A task joins its partition before it is indexed (so it can be found to be the
        // head) and leaves after (so the next head becomes eligible).
        match (&partition, was_finished, to.is_finished()) {
            (Some((queue, key)), true, false) => {
                self.partition_join(queue, key, id);
                self.index(id);
            }
            (Some((queue, key)), false, true) => {
                self.index(id);
                self.partition_leave(queue, key, id);
            }
            _ => self.index(id),
        }
        Ok(())
    }

    /// Adds `id` to its queue's indexes according to its state.
    fn index(&mut self, id: TaskId) {
        let task = &self.tasks[&id];
        let q = self
            .queues
            .get_mut(&task.queue)
            .expect("task of a known queue");
        q.by_state[task.state.index()].insert(id);
        match task.state {
            TaskState::Ready => {
                q.ready_since.insert((task.run_at, id));
                if q.is_partition_head(task) {
                    q.ready.insert((Reverse(task.priority), task.run_at, id));
                    if !q.woken {
                        q.woken = true;
                        self.woken.push(task.queue.clone());
                    }
                }
            }
            TaskState::Scheduled | TaskState::Retrying => {
                q.due.insert((task.run_at, id));
            }
            TaskState::Active => {
                let expires_at = task.lease_expires_at.expect("an active task has a lease");
                q.leases.insert((expires_at, id));
                if let Some(key) = &task.limit_key {
                    *q.key_active.entry(key.clone()).or_default() += 1;
                }
            }
            TaskState::Dead => {
                let reason = task.dead_reason.expect("a dead task has a reason");
                q.dead_by_reason[reason.index()].insert(id);
            }
            TaskState::Completed | TaskState::Cancelled => {}
        }
        if task.state.is_waiting()
            && let Some(expires_at) = task.expires_at
        {
            q.ttl.insert((expires_at, id));
        }
    }

    /// Removes `id` from its queue's indexes (the inverse of [`State::index`]).
    fn unindex(&mut self, id: TaskId) {
        let task = &self.tasks[&id];
        let q = self
            .queues
            .get_mut(&task.queue)
            .expect("task of a known queue");
        q.by_state[task.state.index()].remove(&id);
        match task.state {
            TaskState::Ready => {
                q.ready.remove(&(Reverse(task.priority), task.run_at, id));
                q.ready_since.remove(&(task.run_at, id));
            }
            TaskState::Scheduled | TaskState::Retrying => {
                q.due.remove(&(task.run_at, id));
            }
            TaskState::Active => {
                if let Some(expires_at) = task.lease_expires_at {
                    q.leases.remove(&(expires_at, id));
                }
                if let Some(key) = &task.limit_key
                    && let Some(active) = q.key_active.get_mut(key)
                {
                    *active -= 1;
                    if *active == 0 {
                        q.key_active.remove(key);
                    }
                }
                // A slot came free: a reserve waiting on a concurrency limit may proceed.
                if (q.config.concurrency_max.is_some() || q.config.key_concurrency_max.is_some())
                    && !q.woken
                {
                    q.woken = true;
                    self.woken.push(task.queue.clone());
                }
            }
            TaskState::Dead => {
                if let Some(reason) = task.dead_reason {
                    q.dead_by_reason[reason.index()].remove(&id);
                }
            }
            TaskState::Completed | TaskState::Cancelled => {}
        }
        if let Some(expires_at) = task.expires_at {
            q.ttl.remove(&(expires_at, id));
        }
    }

    /// Adds an unfinished task to its partition; if it becomes the head, the previous head
    /// stops being eligible.
    fn partition_join(&mut self, queue: &QueueName, key: &str, id: TaskId) {
        let q = self.queues.get_mut(queue).expect("known queue");
        let members = q.partitions.entry(key.to_owned()).or_default();
        let previous_head = members.first().copied();
        members.insert(id);
        if let Some(previous) = previous_head
            && id < previous
        {
            let prev = &self.tasks[&previous];
            q.ready
                .remove(&(Reverse(prev.priority), prev.run_at, previous));
        }
    }

    /// Removes a finished task from its partition; the next task, if ready, becomes eligible.
    fn partition_leave(&mut self, queue: &QueueName, key: &str, id: TaskId) {
        let q = self.queues.get_mut(queue).expect("known queue");
        let Some(members) = q.partitions.get_mut(key) else {
            return;
        };
        members.remove(&id);
        match members.first().copied() {
            None => {
                q.partitions.remove(key);
            }
            Some(head) => {
                let next = &self.tasks[&head];
                if next.state == TaskState::Ready
                    && q.ready.insert((Reverse(next.priority), next.run_at, head))
                    && !q.woken
                {
                    q.woken = true;
                    self.woken.push(queue.clone());
                }
            }
        }
    }

    fn enforce_retention_of(&mut self, id: TaskId) {
        let queue = self.tasks[&id].queue.clone();
        self.enforce_retention(&queue);
    }

    /// Deletes the oldest completed, cancelled and dead tasks beyond the queue's limits.
    fn enforce_retention(&mut self, queue: &QueueName) {
        let Some(q) = self.queues.get(queue) else {
            return;
        };
        let limits = [
            (TaskState::Completed, u64::from(q.config.completed_retain)),
            (TaskState::Cancelled, u64::from(q.config.completed_retain)),
            (TaskState::Dead, q.config.dead_retain),
        ];
        for (state, keep) in limits {
            loop {
                let q = &self.queues[queue];
                if q.count(state) <= keep {
                    break;
                }
                let oldest = *q.by_state[state.index()].first().expect("count > keep ≥ 0");
                self.remove(oldest);
                if state == TaskState::Dead {
                    self.queues
                        .get_mut(queue)
                        .expect("known")
                        .totals
                        .dead_dropped += 1;
                }
            }
        }
    }

    /// Checks every invariant in the module docs; panics with the first one broken.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut seen = 0;
        for (name, q) in &self.queues {
            for state in TaskState::ALL {
                for id in &q.by_state[state.index()] {
                    let task = &self.tasks[id];
                    assert_eq!(task.state, state, "{id} filed under the wrong state");
                    assert_eq!(&task.queue, name);
                    seen += 1;
                    let eligible = state == TaskState::Ready && q.is_partition_head(task);
                    assert_eq!(
                        q.ready
                            .contains(&(Reverse(task.priority), task.run_at, *id)),
                        eligible,
                        "{id} ready-index membership"
                    );
                    if let Some(key) = &task.partition_key {
                        assert_eq!(
                            q.partitions.get(key).is_some_and(|m| m.contains(id)),
                            !state.is_finished(),
                            "{id} partition membership"
                        );
                    }
                }
            }
            let due: usize = [TaskState::Scheduled, TaskState::Retrying]
                .iter()
                .map(|s| q.by_state[s.index()].len())
                .sum();
            assert_eq!(q.due.len(), due, "due index of {name}");
            assert_eq!(q.leases.len(), q.by_state[TaskState::Active.index()].len());
            assert_eq!(
                q.ready_since.len(),
                q.by_state[TaskState::Ready.index()].len()
            );
            let dead: usize = q.dead_by_reason.iter().map(BTreeSet::len).sum();
            assert_eq!(dead, q.by_state[TaskState::Dead.index()].len());
            let with_ttl = TaskState::ALL
                .iter()
                .filter(|s| s.is_waiting())
                .flat_map(|s| q.by_state[s.index()].iter())
                .filter(|id| self.tasks[id].expires_at.is_some())
                .count();
            assert_eq!(q.ttl.len(), with_ttl, "ttl index of {name}");
            let mut key_active: HashMap<String, u32> = HashMap::new();
            for id in &q.by_state[TaskState::Active.index()] {
                if let Some(key) = &self.tasks[id].limit_key {
                    *key_active.entry(key.clone()).or_default() += 1;
                }
            }
            assert_eq!(
                q.key_active, key_active,
                "active tasks per limit key of {name}"
            );
        }
        assert_eq!(seen, self.tasks.len(), "a task is missing from by_state");
        let footprints: u64 = self.tasks.values().map(|t| footprint(t)).sum();
        assert_eq!(self.live_bytes, footprints, "live_bytes drifted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodway_core::RetryPolicy;

    struct FixedRandom;
    impl Random for FixedRandom {
        fn bits(&mut self) -> u128 {
            0x1234
        }
        fn unit(&mut self) -> f64 {
            0.5
        }
    }

    fn q(name: &str) -> QueueName {
        QueueName::new(name).unwrap()
    }

    fn at(millis: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + millis)
    }

    /// Replays `log` into a fresh state, as recovery does.
    fn replay(log: &[u8]) -> State {
        let mut state = State::default();
        crate::storage::read_frames(log, |group| {
            for payload in group {
                state.apply(record::decode(payload).unwrap()).unwrap();
            }
            Ok(())
        })
        .unwrap();
        state
    }

    #[test]
    fn replaying_the_log_rebuilds_the_same_state() {
        let mut state = State::default();
        let mut log = Vec::new();
        let queue = q("orders");
        let tasks = (0..20)
            .map(|i| {
                let t = NewTask::new("k", format!("{i}"))
                    .priority((i % 3) as u8)
                    .retry(RetryPolicy::attempts(2));
                if i % 4 == 0 { t.partition_key("p") } else { t }
            })
            .collect();
        state
            .enqueue(&queue, tasks, at(0), &mut FixedRandom, &mut log)
            .unwrap();
        let request = ReserveRequest::new(queue.clone(), 7, Duration::from_secs(1));
        let held = state.reserve(&request, at(1), &mut log).unwrap().0;
        state
            .ack(&[held[0].lease.as_ref()], at(2), &mut log)
            .unwrap();
        state
            .fail(
                vec![Failure {
                    lease: held[1].lease.as_ref(),
                    error: "boom".into(),
                    retry: floodway_core::RetryDecision::Never,
                }],
                at(2),
                &mut FixedRandom,
                &mut log,
            )
            .unwrap();
        state.reap(at(5000), &mut log);
        state.check_invariants();

        let rebuilt = replay(&log);
        rebuilt.check_invariants();
        assert_eq!(rebuilt.tasks, state.tasks);
        for (name, queue) in &state.queues {
            let other = &rebuilt.queues[name];
            assert_eq!(other.totals, queue.totals);
            assert_eq!(other.ready, queue.ready);
            assert_eq!(other.by_state, queue.by_state);
        }
    }

    #[test]
    fn a_snapshot_rebuilds_the_state_as_it_was_when_captured() {
        let mut state = State::default();
        let mut log = Vec::new();
        let queue = q("snap");
        let tasks = (0..10)
            .map(|i| {
                NewTask::new("k", "{}")
                    .idempotency_key(format!("key-{i}"))
                    .partition_key("p")
            })
            .collect();
        state
            .enqueue(&queue, tasks, at(0), &mut FixedRandom, &mut log)
            .unwrap();
        let request = ReserveRequest::new(queue.clone(), 3, Duration::from_secs(1));
        let held = state.reserve(&request, at(1), &mut log).unwrap().0;
        let captured = state.capture(at(2));
        let at_capture = replay(&log);

        // Changes after the capture must not reach the snapshot (copy on write).
        let mut later = Vec::new();
        state
            .ack(&[held[0].lease.as_ref()], at(3), &mut later)
            .unwrap();
        state.reserve(&request, at(3), &mut later).unwrap();
        assert_ne!(state.tasks, at_capture.tasks);

        let mut image = Vec::new();
        let count = captured.write_to(&mut image).unwrap();
        let rebuilt = replay(&image);
        rebuilt.check_invariants();
        assert!(count > 10);
        assert_eq!(rebuilt.tasks, at_capture.tasks);
        assert_eq!(rebuilt.idempotency, at_capture.idempotency);
        assert_eq!(rebuilt.id_floor, at_capture.id_floor);
        assert_eq!(
            rebuilt.queues[&queue].ready,
            at_capture.queues[&queue].ready
        );
        assert_eq!(
            rebuilt.queues[&queue].totals,
            at_capture.queues[&queue].totals
        );

        // And the snapshot plus the records after it is the state now.
        let mut recovered = rebuilt;
        crate::storage::read_frames(&later, |group| {
            for payload in group {
                recovered.apply(record::decode(payload).unwrap()).unwrap();
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(recovered.tasks, state.tasks);
    }
}
