//! [`Record`]: one durable change to the broker's state, and its binary encoding.
//!
//! The log is a sequence of records; a snapshot is too. Records are deltas (a reservation is
//! "task X now has fence F until T"), not commands, so replaying them needs no clock and no
//! randomness and always rebuilds the same state. The encoding is written by hand, field by
//! field, so the on-disk format changes only when this file does; [`FORMAT_VERSION`] names it.
//!
//! Encoding: unsigned integers are LEB128 varints, strings and byte strings are a varint
//! length and the bytes, options a 0/1 tag, task ids 16 big-endian bytes.

use std::sync::Arc;
use std::time::Duration;

use floodway_core::{
    DeadCounts, DeadReason, Effects, Fence, Jitter, OverflowPolicy, QueueConfig, QueueName,
    QueueTotals, RateLimit, RetryPolicy, Task, TaskId, TaskState, Timestamp, Watermarks,
};

/// The version of the record encoding, written in every file header. Bump it when an encoding
/// changes, and teach [`decode`] to read the old one. (Version 1, before limit keys, effects
/// and the backpressure settings, never left development and is not read. Version 3 groups
/// the frames of one call, see `storage.rs`; its records are encoded as in version 2.)
pub(crate) const FORMAT_VERSION: u32 = 3;

/// One durable change. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Record {
    /// A queue was created or its configuration replaced.
    QueueConfigured {
        queue: QueueName,
        config: QueueConfig,
    },
    /// A task was accepted. `idempotency_expires_at` is set when it carries a key.
    Enqueued {
        task: Arc<Task>,
        idempotency_expires_at: Option<Timestamp>,
    },
    /// A scheduled or retrying task became ready.
    Promoted { id: TaskId },
    /// A task was leased.
    Reserved {
        id: TaskId,
        fence: Fence,
        expires_at: Timestamp,
        worker: Option<String>,
    },
    /// A lease was extended.
    Extended { id: TaskId, expires_at: Timestamp },
    /// A task completed.
    Acked { id: TaskId, at: Timestamp },
    /// An attempt failed and the task will retry at `run_at`.
    Retried {
        id: TaskId,
        at: Timestamp,
        run_at: Timestamp,
        error: String,
    },
    /// An attempt failed and the task went to the dead letters.
    Failed {
        id: TaskId,
        at: Timestamp,
        reason: DeadReason,
        error: String,
    },
    /// The lease holder gave the task back unrun.
    Released { id: TaskId, at: Timestamp },
    /// A lease expired; the task went back to ready, or (`dead`) to the dead letters.
    LeaseExpired {
        id: TaskId,
        at: Timestamp,
        dead: bool,
    },
    /// A waiting task's time to live passed.
    Expired { id: TaskId, at: Timestamp },
    /// A waiting task was dropped to make room in a full queue.
    Overflowed { id: TaskId, at: Timestamp },
    /// A waiting task was cancelled.
    Cancelled { id: TaskId, at: Timestamp },
    /// A dead letter was replayed.
    Replayed { id: TaskId, at: Timestamp },
    /// A dead letter was purged.
    Purged { id: TaskId },
    /// Snapshot only: a task as it stands.
    Restored { task: Arc<Task> },
    /// Snapshot only: a queue's running totals.
    Totals {
        queue: QueueName,
        totals: QueueTotals,
    },
    /// Snapshot only: an idempotency key still inside its window.
    IdempotencyKey {
        queue: QueueName,
        key: String,
        id: TaskId,
        expires_at: Timestamp,
    },
    /// Snapshot only: every id issued so far is at most this one.
    IdFloor { id: TaskId },
    /// Totals that no state change carries (duplicates, refusals) went up.
    Counted { queue: QueueName, counts: Counts },
    /// A task's handler recorded a side effect as done.
    EffectRecorded {
        id: TaskId,
        key: String,
        result: String,
    },
    /// The data directory was opened for the `epoch`-th time (counting from 0); written, and
    /// synced, at open, before any reservation of the new epoch.
    Opened { epoch: u32 },
}

/// Increments of the totals that count calls rather than state changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) deduplicated: u64,
    pub(crate) rejected_full: u64,
    pub(crate) stale_refused: u64,
    pub(crate) rejected_overloaded: u64,
    pub(crate) throttled_rate: u64,
    pub(crate) throttled_concurrency: u64,
}

impl Counts {
    const NONE: Counts = Counts {
        deduplicated: 0,
        rejected_full: 0,
        stale_refused: 0,
        rejected_overloaded: 0,
        throttled_rate: 0,
        throttled_concurrency: 0,
    };
    /// One enqueue refused because the queue was full.
    pub(crate) const REJECTED_FULL: Counts = Counts {
        rejected_full: 1,
        ..Counts::NONE
    };
    /// One enqueue refused because the queue was above its high watermark.
    pub(crate) const REJECTED_OVERLOADED: Counts = Counts {
        rejected_overloaded: 1,
        ..Counts::NONE
    };
    /// One lease operation refused for a stale or expired lease.
    pub(crate) const STALE_REFUSED: Counts = Counts {
        stale_refused: 1,
        ..Counts::NONE
    };
    /// One reserve call cut short by a rate limit.
    pub(crate) const THROTTLED_RATE: Counts = Counts {
        throttled_rate: 1,
        ..Counts::NONE
    };
    /// One reserve call cut short by a concurrency limit.
    pub(crate) const THROTTLED_CONCURRENCY: Counts = Counts {
        throttled_concurrency: 1,
        ..Counts::NONE
    };
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed record: {0}")]
pub(crate) struct DecodeError(pub(crate) &'static str);

/// Appends the encoding of `record` to `out`.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    match record {
        Record::QueueConfigured { queue, config } => {
            w.u8(1);
            w.str(queue.as_str());
            w.queue_config(config);
        }
        Record::Enqueued {
            task,
            idempotency_expires_at,
        } => {
            w.u8(2);
            w.task(task);
            w.opt_time(*idempotency_expires_at);
        }
        Record::Promoted { id } => {
            w.u8(3);
            w.id(*id);
        }
        Record::Reserved {
            id,
            fence,
            expires_at,
            worker,
        } => {
            w.u8(4);
            w.id(*id);
            w.uint(fence.0);
            w.time(*expires_at);
            w.opt_str(worker.as_deref());
        }
        Record::Extended { id, expires_at } => {
            w.u8(5);
            w.id(*id);
            w.time(*expires_at);
        }
        Record::Acked { id, at } => {
            w.u8(6);
            w.id(*id);
            w.time(*at);
        }
        Record::Retried {
            id,
            at,
            run_at,
            error,
        } => {
            w.u8(7);
            w.id(*id);
            w.time(*at);
            w.time(*run_at);
            w.str(error);
        }
        Record::Failed {
            id,
            at,
            reason,
            error,
        } => {
            w.u8(8);
            w.id(*id);
            w.time(*at);
            w.u8(reason.index() as u8);
            w.str(error);
        }
        Record::Released { id, at } => {
            w.u8(9);
            w.id(*id);
            w.time(*at);
        }
        Record::LeaseExpired { id, at, dead } => {
            w.u8(10);
            w.id(*id);
            w.time(*at);
            w.u8(u8::from(*dead));
        }
        Record::Expired { id, at } => {
            w.u8(11);
            w.id(*id);
            w.time(*at);
        }
        Record::Overflowed { id, at } => {
            w.u8(12);
            w.id(*id);
            w.time(*at);
        }
        Record::Cancelled { id, at } => {
            w.u8(13);
            w.id(*id);
            w.time(*at);
        }
        Record::Replayed { id, at } => {
            w.u8(14);
            w.id(*id);
            w.time(*at);
        }
        Record::Purged { id } => {
            w.u8(15);
            w.id(*id);
        }
        Record::Restored { task } => encode_restored(task, w.0),
        Record::Totals { queue, totals } => {
            w.u8(17);
            w.str(queue.as_str());
            w.totals(totals);
        }
        Record::IdempotencyKey {
            queue,
            key,
            id,
            expires_at,
        } => {
            w.u8(18);
            w.str(queue.as_str());
            w.str(key);
            w.id(*id);
            w.time(*expires_at);
        }
        Record::IdFloor { id } => {
            w.u8(19);
            w.id(*id);
        }
        Record::Counted { queue, counts } => {
            w.u8(20);
            w.str(queue.as_str());
            w.uint(counts.deduplicated);
            w.uint(counts.rejected_full);
            w.uint(counts.stale_refused);
            w.uint(counts.rejected_overloaded);
            w.uint(counts.throttled_rate);
            w.uint(counts.throttled_concurrency);
        }
        Record::EffectRecorded { id, key, result } => {
            w.u8(22);
            w.id(*id);
            w.str(key);
            w.str(result);
        }
        Record::Opened { epoch } => {
            w.u8(21);
            w.uint(u64::from(*epoch));
        }
    }
}

/// Appends the encoding of `Record::Restored { task }` without needing the task boxed: the
/// snapshot writes every task this way, straight from the state.
pub(crate) fn encode_restored(task: &Task, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(16);
    w.task(task);
}

/// Decodes one record that fills `bytes` exactly.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader(bytes);
    let record = match r.u8()? {
        1 => Record::QueueConfigured {
            queue: r.queue()?,
            config: r.queue_config()?,
        },
        2 => Record::Enqueued {
            task: Arc::new(r.task()?),
            idempotency_expires_at: r.opt_time()?,
        },
        3 => Record::Promoted { id: r.id()? },
        4 => Record::Reserved {
            id: r.id()?,
            fence: Fence(r.uint()?),
            expires_at: r.time()?,
            worker: r.opt_string()?,
        },
        5 => Record::Extended {
            id: r.id()?,
            expires_at: r.time()?,
        },
        6 => Record::Acked {
            id: r.id()?,
            at: r.time()?,
        },
        7 => Record::Retried {
            id: r.id()?,
            at: r.time()?,
            run_at: r.time()?,
            error: r.string()?,
        },
        8 => Record::Failed {
            id: r.id()?,
            at: r.time()?,
            reason: r.dead_reason()?,
            error: r.string()?,
        },
        9 => Record::Released {
            id: r.id()?,
            at: r.time()?,
        },
        10 => Record::LeaseExpired {
            id: r.id()?,
            at: r.time()?,
            dead: r.bool()?,
        },
        11 => Record::Expired {
            id: r.id()?,
            at: r.time()?,
        },
        12 => Record::Overflowed {
            id: r.id()?,
            at: r.time()?,
        },
        13 => Record::Cancelled {
            id: r.id()?,
            at: r.time()?,
        },
        14 => Record::Replayed {
            id: r.id()?,
            at: r.time()?,
        },
        15 => Record::Purged { id: r.id()? },
        16 => Record::Restored {
            task: Arc::new(r.task()?),
        },
        17 => Record::Totals {
            queue: r.queue()?,
            totals: r.totals()?,
        },
        18 => Record::IdempotencyKey {
            queue: r.queue()?,
            key: r.string()?,
            id: r.id()?,
            expires_at: r.time()?,
        },
        19 => Record::IdFloor { id: r.id()? },
        21 => Record::Opened { epoch: r.u32()? },
        20 => Record::Counted {
            queue: r.queue()?,
            counts: Counts {
                deduplicated: r.uint()?,
                rejected_full: r.uint()?,
                stale_refused: r.uint()?,
                rejected_overloaded: r.uint()?,
                throttled_rate: r.uint()?,
                throttled_concurrency: r.uint()?,
            },
        },
        22 => Record::EffectRecorded {
            id: r.id()?,
            key: r.string()?,
            result: r.string()?,
        },
        _ => return Err(DecodeError("unknown record type")),
    };
    if !r.0.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(record)
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    fn uint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.uint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    fn opt_str(&mut self, text: Option<&str>) {
        match text {
            Some(text) => {
                self.u8(1);
                self.str(text);
            }
            None => self.u8(0),
        }
    }

    fn id(&mut self, id: TaskId) {
        self.0.extend_from_slice(&id.as_u128().to_be_bytes());
    }

    fn time(&mut self, at: Timestamp) {
        self.uint(at.as_millis());
    }

    fn opt_time(&mut self, at: Option<Timestamp>) {
        match at {
            Some(at) => {
                self.u8(1);
                self.time(at);
            }
            None => self.u8(0),
        }
    }

    fn duration(&mut self, duration: Duration) {
        self.uint(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    }

    fn opt_duration(&mut self, duration: Option<Duration>) {
        match duration {
            Some(duration) => {
                self.u8(1);
                self.duration(duration);
            }
            None => self.u8(0),
        }
    }

    fn retry(&mut self, retry: &RetryPolicy) {
        self.uint(u64::from(retry.max_attempts));
        self.duration(retry.backoff_initial);
        self.duration(retry.backoff_max);
        self.0
            .extend_from_slice(&retry.backoff_multiplier.to_bits().to_le_bytes());
        self.u8(match retry.jitter {
            Jitter::Full => 0,
            Jitter::None => 1,
        });
    }

    fn task(&mut self, task: &Task) {
        self.id(task.id);
        self.str(task.queue.as_str());
        self.str(&task.kind);
        self.bytes(&task.payload);
        self.uint(task.headers.len() as u64);
        for (name, value) in &task.headers {
            self.str(name);
            self.str(value);
        }
        self.u8(task.priority);
        self.u8(task.state.index() as u8);
        self.uint(u64::from(task.attempt));
        self.retry(&task.retry);
        self.opt_duration(task.timeout);
        self.time(task.run_at);
        self.opt_time(task.expires_at);
        self.opt_str(task.idempotency_key.as_deref());
        self.opt_str(task.partition_key.as_deref());
        self.opt_str(task.limit_key.as_deref());
        self.uint(task.effects.len() as u64);
        for (key, result) in &task.effects {
            self.str(key);
            self.str(result);
        }
        self.time(task.created_at);
        self.uint(task.fence.0);
        self.opt_time(task.lease_expires_at);
        self.opt_str(task.worker.as_deref());
        self.opt_time(task.finished_at);
        self.opt_str(task.last_error.as_deref());
        match task.dead_reason {
            Some(reason) => {
                self.u8(1);
                self.u8(reason.index() as u8);
            }
            None => self.u8(0),
        }
    }

    fn queue_config(&mut self, config: &QueueConfig) {
        match config.length_max {
            Some(max) => {
                self.u8(1);
                self.uint(max);
            }
            None => self.u8(0),
        }
        self.u8(match config.overflow {
            OverflowPolicy::Reject => 0,
            OverflowPolicy::DeadLetterOldest => 1,
        });
        self.retry(&config.retry);
        self.duration(config.idempotency_window);
        self.uint(u64::from(config.completed_retain));
        self.uint(config.dead_retain);
        self.u8(u8::from(config.paused));
        for limit in [config.rate_limit, config.key_rate_limit] {
            match limit {
                Some(limit) => {
                    self.u8(1);
                    self.0
                        .extend_from_slice(&limit.rate.to_bits().to_le_bytes());
                    self.uint(u64::from(limit.burst));
                }
                None => self.u8(0),
            }
        }
        for max in [config.concurrency_max, config.key_concurrency_max] {
            match max {
                Some(max) => {
                    self.u8(1);
                    self.uint(u64::from(max));
                }
                None => self.u8(0),
            }
        }
        match config.watermarks {
            Some(marks) => {
                self.u8(1);
                self.uint(marks.high);
                self.uint(marks.low);
            }
            None => self.u8(0),
        }
        self.opt_duration(config.ttl);
    }

    fn totals(&mut self, totals: &QueueTotals) {
        for value in [
            totals.enqueued,
            totals.deduplicated,
            totals.rejected_full,
            totals.reserved,
            totals.completed,
            totals.retried,
            totals.released,
            totals.leases_expired,
            totals.dead.max_attempts,
            totals.dead.expired,
            totals.dead.overflow,
            totals.dead.permanent_failure,
            totals.dead_dropped,
            totals.replayed,
            totals.cancelled,
            totals.stale_refused,
            totals.rejected_overloaded,
            totals.throttled_rate,
            totals.throttled_concurrency,
            totals.effects_recorded,
        ] {
            self.uint(value);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("invalid flag")),
        }
    }

    fn uint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError("varint too long"))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.uint()?).map_err(|_| DecodeError("number out of range"))
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let len = usize::try_from(self.uint()?).map_err(|_| DecodeError("length out of range"))?;
        if len > self.0.len() {
            return Err(DecodeError("length beyond record"));
        }
        Ok(len)
    }

    fn byte_vec(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.len()?;
        Ok(self.take(len)?.to_vec())
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.byte_vec()?).map_err(|_| DecodeError("invalid UTF-8"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.string()?)
        } else {
            None
        })
    }

    fn queue(&mut self) -> Result<QueueName, DecodeError> {
        QueueName::new(&self.string()?).map_err(|_| DecodeError("invalid queue name"))
    }

    fn id(&mut self) -> Result<TaskId, DecodeError> {
        let bytes: [u8; 16] = self.take(16)?.try_into().expect("took 16 bytes");
        Ok(TaskId::from_u128(u128::from_be_bytes(bytes)))
    }

    fn time(&mut self) -> Result<Timestamp, DecodeError> {
        Ok(Timestamp::from_millis(self.uint()?))
    }

    fn opt_time(&mut self) -> Result<Option<Timestamp>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.time()?)
        } else {
            None
        })
    }

    fn duration(&mut self) -> Result<Duration, DecodeError> {
        Ok(Duration::from_millis(self.uint()?))
    }

    fn opt_duration(&mut self) -> Result<Option<Duration>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.duration()?)
        } else {
            None
        })
    }

    fn state(&mut self) -> Result<TaskState, DecodeError> {
        TaskState::ALL
            .get(usize::from(self.u8()?))
            .copied()
            .ok_or(DecodeError("invalid state"))
    }

    fn dead_reason(&mut self) -> Result<DeadReason, DecodeError> {
        DeadReason::ALL
            .get(usize::from(self.u8()?))
            .copied()
            .ok_or(DecodeError("invalid dead reason"))
    }

    fn retry(&mut self) -> Result<RetryPolicy, DecodeError> {
        Ok(RetryPolicy {
            max_attempts: self.u32()?,
            backoff_initial: self.duration()?,
            backoff_max: self.duration()?,
            backoff_multiplier: f64::from_bits(u64::from_le_bytes(
                self.take(8)?.try_into().expect("took 8 bytes"),
            )),
            jitter: match self.u8()? {
                0 => Jitter::Full,
                1 => Jitter::None,
                _ => return Err(DecodeError("invalid jitter")),
            },
        })
    }

    fn task(&mut self) -> Result<Task, DecodeError> {
        let id = self.id()?;
        let queue = self.queue()?;
        let kind = self.string()?;
        let payload = self.byte_vec()?;
        let header_count = self.len()?;
        let mut headers = floodway_core::Headers::new();
        for _ in 0..header_count {
            let name = self.string()?;
            let value = self.string()?;
            headers.insert(name, value);
        }
        Ok(Task {
            id,
            queue,
            kind,
            payload,
            headers,
            priority: self.u8()?,
            state: self.state()?,
            attempt: self.u32()?,
            retry: self.retry()?,
            timeout: self.opt_duration()?,
            run_at: self.time()?,
            expires_at: self.opt_time()?,
            idempotency_key: self.opt_string()?,
            partition_key: self.opt_string()?,
            limit_key: self.opt_string()?,
            effects: self.effects()?,
            created_at: self.time()?,
            fence: Fence(self.uint()?),
            lease_expires_at: self.opt_time()?,
            worker: self.opt_string()?,
            finished_at: self.opt_time()?,
            last_error: self.opt_string()?,
            dead_reason: if self.bool()? {
                Some(self.dead_reason()?)
            } else {
                None
            },
        })
    }

    fn queue_config(&mut self) -> Result<QueueConfig, DecodeError> {
        Ok(QueueConfig {
            length_max: if self.bool()? {
                Some(self.uint()?)
            } else {
                None
            },
            overflow: match self.u8()? {
                0 => OverflowPolicy::Reject,
                1 => OverflowPolicy::DeadLetterOldest,
                _ => return Err(DecodeError("invalid overflow policy")),
            },
            retry: self.retry()?,
            idempotency_window: self.duration()?,
            completed_retain: self.u32()?,
            dead_retain: self.uint()?,
            paused: self.bool()?,
            rate_limit: self.opt_rate_limit()?,
            key_rate_limit: self.opt_rate_limit()?,
            concurrency_max: self.opt_u32()?,
            key_concurrency_max: self.opt_u32()?,
            watermarks: if self.bool()? {
                Some(Watermarks {
                    high: self.uint()?,
                    low: self.uint()?,
                })
            } else {
                None
            },
            ttl: self.opt_duration()?,
        })
    }

    fn opt_rate_limit(&mut self) -> Result<Option<RateLimit>, DecodeError> {
        Ok(if self.bool()? {
            Some(RateLimit {
                rate: f64::from_bits(u64::from_le_bytes(
                    self.take(8)?.try_into().expect("took 8 bytes"),
                )),
                burst: self.u32()?,
            })
        } else {
            None
        })
    }

    fn opt_u32(&mut self) -> Result<Option<u32>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.u32()?)
        } else {
            None
        })
    }

    fn effects(&mut self) -> Result<Effects, DecodeError> {
        let count = self.len()?;
        let mut effects = Effects::new();
        for _ in 0..count {
            let key = self.string()?;
            let result = self.string()?;
            effects.insert(key, result);
        }
        Ok(effects)
    }

    fn totals(&mut self) -> Result<QueueTotals, DecodeError> {
        Ok(QueueTotals {
            enqueued: self.uint()?,
            deduplicated: self.uint()?,
            rejected_full: self.uint()?,
            reserved: self.uint()?,
            completed: self.uint()?,
            retried: self.uint()?,
            released: self.uint()?,
            leases_expired: self.uint()?,
            dead: DeadCounts {
                max_attempts: self.uint()?,
                expired: self.uint()?,
                overflow: self.uint()?,
                permanent_failure: self.uint()?,
            },
            dead_dropped: self.uint()?,
            replayed: self.uint()?,
            cancelled: self.uint()?,
            stale_refused: self.uint()?,
            rejected_overloaded: self.uint()?,
            throttled_rate: self.uint()?,
            throttled_concurrency: self.uint()?,
            effects_recorded: self.uint()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodway_core::{IdGenerator, NewTask};
    use proptest::prelude::*;

    fn sample_task(seed: u64) -> Task {
        let now = Timestamp::from_millis(1_795_338_930_000 + seed);
        let id = IdGenerator::default().next(now, u128::from(seed));
        let new = NewTask::new("charge_card", format!("{{\"order\":{seed}}}"))
            .priority((seed % 10) as u8)
            .header("traceparent", "00-abc-def-01")
            .idempotency_key(format!("order-{seed}"))
            .partition_key("customer-7")
            .limit_key("tenant-3")
            .ttl(Duration::from_secs(60))
            .timeout(Duration::from_secs(5));
        let mut task = Task::from_new(
            new,
            id,
            QueueName::new("orders").unwrap(),
            &QueueConfig::default(),
            now,
        );
        task.last_error = Some("downstream timed out".into());
        task.dead_reason = Some(DeadReason::Expired);
        task.effects
            .insert("charge".into(), format!("{{\"receipt\":{seed}}}"));
        task
    }

    fn any_record() -> impl Strategy<Value = Record> {
        let id = any::<u128>().prop_map(TaskId::from_u128);
        let at = any::<u64>().prop_map(Timestamp::from_millis);
        prop_oneof![
            any::<u64>().prop_map(|s| Record::Enqueued {
                task: Arc::new(sample_task(s)),
                idempotency_expires_at: Some(Timestamp::from_millis(s)),
            }),
            any::<u64>().prop_map(|s| Record::Restored {
                task: Arc::new(sample_task(s)),
            }),
            (
                id.clone(),
                any::<u64>(),
                at.clone(),
                proptest::option::of("[a-z]{0,12}")
            )
                .prop_map(|(id, fence, expires_at, worker)| Record::Reserved {
                    id,
                    fence: Fence(fence),
                    expires_at,
                    worker,
                }),
            (id.clone(), at.clone(), at.clone(), ".{0,40}").prop_map(|(id, at, run_at, error)| {
                Record::Retried {
                    id,
                    at,
                    run_at,
                    error,
                }
            }),
            (id.clone(), at.clone(), 0usize..4, ".{0,40}").prop_map(|(id, at, r, error)| {
                Record::Failed {
                    id,
                    at,
                    reason: DeadReason::ALL[r],
                    error,
                }
            }),
            (id.clone(), at.clone(), any::<bool>())
                .prop_map(|(id, at, dead)| Record::LeaseExpired { id, at, dead }),
            (id.clone(), at.clone()).prop_map(|(id, at)| Record::Acked { id, at }),
            id.clone().prop_map(|id| Record::Purged { id }),
            (any::<u64>(), any::<bool>()).prop_map(|(n, paused)| Record::QueueConfigured {
                queue: QueueName::new("q.1").unwrap(),
                config: QueueConfig {
                    length_max: Some(n % 1000 + 1),
                    overflow: OverflowPolicy::DeadLetterOldest,
                    paused,
                    rate_limit: Some(RateLimit {
                        rate: (n % 997) as f64 / 7.0 + 0.5,
                        burst: (n % 50) as u32 + 1,
                    }),
                    key_concurrency_max: Some((n % 9) as u32 + 1),
                    watermarks: Some(Watermarks {
                        high: n % 1000 + 10,
                        low: n % 10,
                    }),
                    ttl: Some(Duration::from_millis(n % 100_000 + 1)),
                    ..QueueConfig::default()
                },
            }),
            any::<[u64; 4]>().prop_map(|n| Record::Totals {
                queue: QueueName::new("q").unwrap(),
                totals: QueueTotals {
                    enqueued: n[0],
                    completed: n[1],
                    stale_refused: n[2],
                    dead: DeadCounts {
                        overflow: n[3],
                        ..DeadCounts::default()
                    },
                    ..QueueTotals::default()
                },
            }),
            (id.clone(), "[a-z]{1,20}", at).prop_map(|(id, key, expires_at)| {
                Record::IdempotencyKey {
                    queue: QueueName::new("q").unwrap(),
                    key,
                    id,
                    expires_at,
                }
            }),
            id.prop_map(|id| Record::IdFloor { id }),
            any::<u32>().prop_map(|epoch| Record::Opened { epoch }),
            any::<[u64; 6]>().prop_map(|n| Record::Counted {
                queue: QueueName::new("q").unwrap(),
                counts: Counts {
                    deduplicated: n[0],
                    rejected_full: n[1],
                    stale_refused: n[2],
                    rejected_overloaded: n[3],
                    throttled_rate: n[4],
                    throttled_concurrency: n[5],
                },
            }),
            (any::<u128>(), "[a-z:]{1,20}", ".{0,40}").prop_map(|(id, key, result)| {
                Record::EffectRecorded {
                    id: TaskId::from_u128(id),
                    key,
                    result,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_record_round_trips(record in any_record()) {
            let mut bytes = Vec::new();
            encode(&record, &mut bytes);
            prop_assert_eq!(decode(&bytes).unwrap(), record);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn truncated_records_are_refused(record in any_record(), cut in 0usize..1000) {
            let mut bytes = Vec::new();
            encode(&record, &mut bytes);
            let cut = cut % bytes.len();
            prop_assert!(decode(&bytes[..cut]).is_err());
        }
    }
}
