//! [`EmbeddedBroker`]: the [`Broker`] on top of [`State`] and [`Storage`], with group commit.
//!
//! ```text
//!  callers (async)          flusher thread                     maintenance thread
//!  lock core                 wait for pending frames            every interval:
//!  state op → frames ──►     take them, write(2), fdatasync     promote + reap
//!  unlock                    publish "durable up to N" ──┐      (frames go the same way)
//!  wait until durable ≥ N ◄──────────────────────────────┘
//! ```
//!
//! One mutex guards the state and the buffer of frames not yet written. An operation holds it
//! only while it changes the in-memory state and encodes the records (microseconds), then waits,
//! without the lock, for the flusher to report its frames durable. While the flusher syncs one
//! buffer, the next operations fill the next, so one `fdatasync` serves every operation that
//! arrived during the previous one: that is group commit, and why throughput grows with
//! concurrency instead of being capped at one sync per call.
//!
//! Every mutating call but `reserve` waits until everything appended before its reply is
//! durable, not only its own frames, so no acknowledgement ever depends on a change that could
//! still be lost (a duplicate enqueue answered with the id of a task whose own enqueue is not
//! yet durable, say). `reserve` answers at once; fences scoped by epoch make that safe (see its
//! doc comment). Reads (`get`, `list`, `stats`) do not wait.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use floodway_core::{
    Broker, BrokerError, Capabilities, Clock, DeadSelector, EffectRecord, Enqueued, FailOutcome,
    Failure, Lease, LeaseRef, LeaseResults, NewTask, QueueConfig, QueueName, QueueStats, Refusal,
    Reservation, ReserveRequest, Task, TaskFilter, TaskId, Timestamp,
};
use tokio::sync::{Notify, watch};

use crate::disk::{Disk, RealDisk};
use crate::options::{Durability, Options};
use crate::record::{self, Record};
use crate::state::State;
use crate::storage::{self, OpenError, RecoveryReport, RotateError, Storage};

/// How many expired idempotency keys one maintenance round forgets at most, so the round stays
/// short however many keys expire at once.
const IDEMPOTENCY_SWEEP_MAX: usize = 10_000;

/// While the disk is full, how often the flusher tries again to write what it holds: the
/// longest a freed disk waits before changes are accepted again.
const FULL_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// What the flusher tells waiting callers.
#[derive(Clone, Debug, Default)]
struct Durable {
    /// Every batch of frames up to this sequence number is durable.
    through: u64,
    /// Set when storage failed: nothing more will become durable.
    failed: Option<String>,
    /// Set when the flusher has written everything and stopped.
    closed: bool,
    /// Set while the disk is full: every batch up to this sequence number is held in memory,
    /// unwritten, until space returns; and why.
    held: Option<(u64, String)>,
}

/// What the lock guards.
struct Core {
    state: State,
    rng: fastrand::Rng,
    /// Frames encoded but not yet handed to the flusher.
    pending: Vec<u8>,
    /// Sequence number of the last batch of frames added to `pending`.
    appended: u64,
    /// Wakers for reserve calls waiting on a queue.
    waiters: HashMap<QueueName, Arc<Notify>>,
    /// Set by close: no more calls are accepted, the threads finish.
    closing: bool,
    /// Set when storage failed; every call is refused from then on.
    failed: Option<String>,
    /// Set by the flusher while the disk is full: calls that would change anything are
    /// refused with `StorageFull` (reads are served) until it could write again.
    full: Option<String>,
}

/// State shared with the background threads.
struct Shared {
    core: Mutex<Core>,
    /// Signalled when frames are pending and on close; the flusher waits on it.
    flush_wanted: Condvar,
    /// Signalled on close; the maintenance thread waits on it between rounds.
    maintenance_stop: Condvar,
    durable: watch::Sender<Durable>,
    clock: Arc<dyn Clock>,
}

/// The embedded broker: floodway's default backend, durable in one data directory with no
/// external service. Cheap to clone; clones share one broker. Closing (or dropping the last
/// clone) flushes and releases the directory.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use floodway_core::{Broker, NewTask, QueueName};
/// use floodway_embedded::{EmbeddedBroker, Options};
///
/// let broker = EmbeddedBroker::open("./floodway-data", Options::default())?;
/// let queue = QueueName::new("emails")?;
/// let ids = broker
///     .enqueue(&queue, vec![NewTask::new("send_email", r#"{"to":"a@example.com"}"#)])
///     .await?;
/// println!("enqueued {}", ids[0].id);
/// broker.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EmbeddedBroker {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    dir: PathBuf,
    durability: Durability,
    recovery: RecoveryReport,
}

impl EmbeddedBroker {
    /// Opens the broker on data directory `dir` (created if missing), recovering what it holds.
    ///
    /// Fails if another process has the directory open, or if its files are damaged beyond an
    /// unfinished final write.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Self, OpenError> {
        Self::open_on(Arc::new(RealDisk), dir.as_ref(), options)
    }

    /// Opens the broker on data directory `dir` of `disk`: [`EmbeddedBroker::open`] with the
    /// file system chosen (the simulated disk of the fault-injection tests, say).
    pub(crate) fn open_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        options: Options,
    ) -> Result<Self, OpenError> {
        let dir = dir.to_owned();
        let mut state = State::default();
        let (mut storage, recovery) = Storage::open(disk, &dir, |record| {
            state.apply(record).map_err(|e| e.to_string())
        })?;
        // A new epoch for every opening after the first, durable before any reservation: see
        // `Broker::reserve` below for why reservations need it.
        if recovery.records > 0 {
            let epoch = state
                .epoch()
                .checked_add(1)
                .ok_or_else(|| OpenError::Corrupt {
                    file: dir.clone(),
                    offset: 0,
                    reason: "the epoch counter is exhausted".into(),
                })?;
            let opened = Record::Opened { epoch };
            let mut frames = Vec::new();
            storage::frame(&mut frames, |payload| record::encode(&opened, payload));
            storage.append(&frames)?;
            storage.sync()?;
            state
                .apply(opened)
                .expect("an opening record always applies");
        }
        state.take_woken();
        tracing::info!(
            dir = %dir.display(),
            snapshot = ?recovery.snapshot,
            records = recovery.records,
            torn_tail_bytes = recovery.torn_tail_bytes,
            tasks = state.task_count(),
            durability = %options.durability,
            "embedded broker opened"
        );
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                state,
                rng: fastrand::Rng::new(),
                pending: Vec::with_capacity(64 * 1024),
                appended: 0,
                waiters: HashMap::new(),
                closing: false,
                failed: None,
                full: None,
            }),
            flush_wanted: Condvar::new(),
            maintenance_stop: Condvar::new(),
            durable: watch::Sender::new(Durable::default()),
            clock: options.clock.clone(),
        });
        let mut threads = Vec::new();
        let flusher_shared = shared.clone();
        let durability = options.durability;
        let compaction_min = options.compaction_bytes_min;
        threads.push(
            std::thread::Builder::new()
                .name("floodway-flusher".into())
                .spawn(move || flusher(&flusher_shared, storage, durability, compaction_min))
                .map_err(|source| OpenError::Io {
                    context: "starting the flusher thread".into(),
                    source,
                })?,
        );
        if let Some(interval) = options.maintenance_interval {
            let maintenance_shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("floodway-maintenance".into())
                    .spawn(move || maintenance(&maintenance_shared, interval))
                    .map_err(|source| OpenError::Io {
                        context: "starting the maintenance thread".into(),
                        source,
                    })?,
            );
        }
        Ok(EmbeddedBroker {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(threads),
                dir,
                durability,
                recovery,
            }),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The durability setting in force.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// What recovery found when the broker opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Writes and syncs everything, stops the background threads and releases the data
    /// directory. Calls made afterwards, through any clone, fail with
    /// [`BrokerError::Unavailable`]. Closing twice is harmless.
    pub async fn close(&self) {
        self.inner.shared.begin_close();
        let mut durable = self.inner.shared.durable.subscribe();
        // The flusher reports `closed` (or `failed`) as its last act; if it is gone already the
        // channel is closed too, which is as good.
        let _ = durable.wait_for(|d| d.closed || d.failed.is_some()).await;
        self.inner.join_threads();
    }

    /// Waits until every frame batch up to `through` is durable.
    async fn durable(&self, through: u64) -> Result<(), BrokerError> {
        let mut durable = self.inner.shared.durable.subscribe();
        let result = durable
            .wait_for(|d| {
                d.through >= through
                    || d.failed.is_some()
                    || d.closed
                    || d.held.as_ref().is_some_and(|(held, _)| through <= *held)
            })
            .await;
        match result {
            Ok(d) if d.through >= through => Ok(()),
            Ok(d) => Err(BrokerError::Unavailable(match (&d.failed, &d.held) {
                (Some(reason), _) => format!("storage failed: {reason}"),
                (None, Some((_, reason))) if !d.closed => format!(
                    "{reason}; this change is held in memory and written once space is freed, unless the broker stops first"
                ),
                _ => "the broker closed before the change was durable".into(),
            })),
            Err(_) => Err(BrokerError::Unavailable("the broker is closed".into())),
        }
    }

    /// Runs a mutating `op` and waits for durability before returning its result.
    async fn mutate<T>(
        &self,
        op: impl FnOnce(
            &mut State,
            Timestamp,
            &mut fastrand::Rng,
            &mut Vec<u8>,
        ) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let (result, through) = self.inner.shared.run(op)?;
        self.durable(through).await?;
        Ok(result)
    }

    /// Runs a read-only `op`.
    fn read<T>(
        &self,
        op: impl FnOnce(&State, Timestamp) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let core = self.inner.shared.lock_open()?;
        let now = self.inner.shared.clock.now();
        op(&core.state, now)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock is a bug in `State`; the state may be half-changed, so
        // carrying on would risk writing garbage. Propagate it.
        self.core
            .lock()
            .expect("broker state lock poisoned by an earlier panic")
    }

    /// The lock, if the broker still accepts calls.
    fn lock_open(&self) -> Result<MutexGuard<'_, Core>, BrokerError> {
        let core = self.lock();
        if let Some(reason) = &core.failed {
            return Err(BrokerError::Unavailable(format!(
                "storage failed: {reason}"
            )));
        }
        if core.closing {
            return Err(BrokerError::Unavailable("the broker is closed".into()));
        }
        Ok(core)
    }

    /// Runs `op` on the state under the lock and returns its result with the sequence number
    /// to wait for before replying.
    fn run<T>(
        &self,
        op: impl FnOnce(
            &mut State,
            Timestamp,
            &mut fastrand::Rng,
            &mut Vec<u8>,
        ) -> Result<T, BrokerError>,
    ) -> Result<(T, u64), BrokerError> {
        let mut core = self.lock_open()?;
        if let Some(reason) = &core.full {
            return Err(BrokerError::StorageFull(format!(
                "{reason}; nothing was changed; reads are still served, and changes are accepted again once space is freed"
            )));
        }
        let now = self.clock.now();
        let before = core.pending.len();
        let core = &mut *core;
        let result = op(&mut core.state, now, &mut core.rng, &mut core.pending);
        if core.pending.len() > before {
            // One call, one group: recovery applies its records all or none.
            storage::seal_group(&mut core.pending, before);
            core.appended += 1;
            self.flush_wanted.notify_one();
        }
        for queue in core.state.take_woken() {
            if let Some(waiters) = core.waiters.get(&queue) {
                waiters.notify_waiters();
            }
        }
        result.map(|value| (value, core.appended))
    }

    fn begin_close(&self) {
        let mut core = self.lock();
        core.closing = true;
        for waiters in core.waiters.values() {
            waiters.notify_waiters();
        }
        drop(core);
        self.flush_wanted.notify_all();
        self.maintenance_stop.notify_all();
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "embedded broker storage failed; refusing all calls");
        let mut core = self.lock();
        core.failed = Some(reason.clone());
        for waiters in core.waiters.values() {
            waiters.notify_waiters();
        }
        drop(core);
        self.durable.send_modify(|d| d.failed = Some(reason));
    }
}

impl Inner {
    fn join_threads(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().expect("thread list lock"));
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("an embedded broker thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.begin_close();
        self.join_threads();
    }
}

/// The flusher thread: writes pending frames, syncs per the durability setting, publishes
/// progress, and compacts the log into a snapshot when it has grown enough.
fn flusher(shared: &Shared, mut storage: Storage, durability: Durability, compaction_min: u64) {
    let mut spare = Vec::with_capacity(64 * 1024);
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    // The thread writing the latest snapshot, if one is being written; one at a time.
    let mut snapshot_writer: Option<JoinHandle<()>> = None;
    loop {
        let writer_idle = snapshot_writer.as_ref().is_none_or(JoinHandle::is_finished);
        let (mut frames, through, closing, image) = {
            let mut core = shared.lock();
            loop {
                if !core.pending.is_empty() || core.closing {
                    break;
                }
                match durability {
                    Durability::Interval(every) if unsynced => {
                        let left = every.saturating_sub(last_sync.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        core = shared
                            .flush_wanted
                            .wait_timeout(core, left)
                            .expect("broker state lock poisoned")
                            .0;
                    }
                    _ => {
                        core = shared
                            .flush_wanted
                            .wait(core)
                            .expect("broker state lock poisoned");
                    }
                }
            }
            let frames = std::mem::replace(&mut core.pending, std::mem::take(&mut spare));
            // The snapshot must show exactly what the logs written so far hold, so it is taken
            // together with the last frames of the current log, under the same lock; capturing
            // copies a pointer per task, and encoding and writing happen on another thread.
            let compact = writer_idle
                && !core.closing
                && storage.wants_compaction(core.state.live_bytes(), compaction_min);
            let image = compact.then(|| core.state.capture(shared.clock.now()));
            (frames, core.appended, core.closing, image)
        };

        let (mut through, mut image) = (through, image);
        if !frames.is_empty() {
            match storage.append(&frames) {
                Ok(()) => unsynced = true,
                Err(err) if err.is_storage_full() => {
                    // No compaction while full: a snapshot needs space of its own.
                    image = None;
                    match hold_until_written(shared, &mut storage, &mut frames, &err) {
                        Held::Written { through: held } => {
                            through = held;
                            unsynced = true;
                        }
                        Held::Closed => {
                            stop_snapshot_writer(snapshot_writer.take());
                            shared.durable.send_modify(|d| d.closed = true);
                            return;
                        }
                        Held::Failed => return,
                    }
                }
                Err(err) => {
                    shared.fail(err.to_string());
                    return;
                }
            }
        }
        let sync_now = match durability {
            Durability::Fsync => true,
            Durability::Interval(every) => last_sync.elapsed() >= every,
            Durability::Off => false,
        } || closing
            || image.is_some();
        if sync_now && unsynced {
            // A failed sync is never retried: the kernel may have dropped the pages it could
            // not write, so a later success would prove nothing ("fsyncgate").
            if let Err(err) = storage.sync() {
                shared.fail(err.to_string());
                return;
            }
            unsynced = false;
            last_sync = Instant::now();
        }
        shared.durable.send_modify(|d| {
            d.through = d.through.max(through);
            d.held = None;
        });

        if let Some(captured) = image {
            // Later frames go to the next generation's log; the snapshot of everything before
            // them is written meanwhile, and replaces the older files once it is in place.
            let generation = match storage.rotate() {
                Ok(generation) => generation,
                Err(RotateError::Skipped(err)) => {
                    // The current log goes on; compaction is tried again later.
                    tracing::warn!(%err, "could not start a new log; compaction skipped");
                    frames.clear();
                    spare = frames;
                    continue;
                }
                Err(RotateError::Failed(err)) => {
                    shared.fail(format!("starting a new log: {err}"));
                    return;
                }
            };
            let dir = storage.dir().to_owned();
            let disk = storage.disk();
            let snapshot_bytes = storage.snapshot_bytes.clone();
            let spawned = std::thread::Builder::new()
                .name("floodway-snapshot".into())
                .spawn(move || {
                    let started = Instant::now();
                    let mut records = 0;
                    let written = storage::write_snapshot(
                        &*disk,
                        &dir,
                        generation,
                        &snapshot_bytes,
                        |mut file| {
                            records = captured.write_to(&mut file)?;
                            Ok(records)
                        },
                    );
                    match written {
                        Ok(bytes) => tracing::info!(
                            generation,
                            records,
                            bytes,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "log compacted into a snapshot"
                        ),
                        // Not fatal: the logs still hold everything, and compaction is tried
                        // again once they have grown further.
                        Err(err) => tracing::warn!(%err, "writing a snapshot failed"),
                    }
                });
            match spawned {
                Ok(handle) => snapshot_writer = Some(handle),
                Err(err) => tracing::warn!(%err, "could not start the snapshot thread"),
            }
        }
        if closing {
            stop_snapshot_writer(snapshot_writer.take());
            shared.durable.send_modify(|d| d.closed = true);
            return;
        }
        frames.clear();
        spare = frames;
    }
}

fn stop_snapshot_writer(writer: Option<JoinHandle<()>>) {
    if let Some(writer) = writer
        && writer.join().is_err()
    {
        tracing::error!("the snapshot thread panicked");
    }
}

/// How holding frames on a full disk ended.
enum Held {
    /// They are in the log now (not yet synced), with everything up to `through`.
    Written { through: u64 },
    /// The broker closed while the disk was still full; the held frames are lost.
    Closed,
    /// Another storage error; the broker is failed.
    Failed,
}

/// The disk is full: `frames` could not be appended (and nothing of them stayed in the log).
/// Holds them, with every frame accepted since, refuses further changes with `StorageFull`
/// (reads go on), answers the callers waiting for the held frames that the outcome is unknown
/// for now, and tries again every [`FULL_RETRY_INTERVAL`] until the write succeeds, the
/// broker closes, or another error fails it.
///
/// This is recoverable, unlike a failed sync, because a write that fails with `ENOSPC` has
/// not put anything in the page cache that a later sync could silently drop: the log was cut
/// back to its length before the write, and the frames are written again whole.
fn hold_until_written(
    shared: &Shared,
    storage: &mut Storage,
    frames: &mut Vec<u8>,
    err: &OpenError,
) -> Held {
    let reason = format!("the disk is full ({err})");
    tracing::error!(dir = %storage.dir().display(), %reason, "refusing changes until space is freed; reads are still served");
    let held_through = {
        let mut core = shared.lock();
        frames.extend_from_slice(&core.pending);
        core.pending.clear();
        core.full = Some(reason.clone());
        for waiters in core.waiters.values() {
            waiters.notify_waiters();
        }
        core.appended
    };
    shared
        .durable
        .send_modify(|d| d.held = Some((held_through, reason)));
    let started = Instant::now();
    loop {
        let closing = {
            let core = shared.lock();
            if core.closing {
                true
            } else {
                shared
                    .flush_wanted
                    .wait_timeout(core, FULL_RETRY_INTERVAL)
                    .expect("broker state lock poisoned")
                    .0
                    .closing
            }
        };
        match storage.append(frames) {
            Ok(()) => {
                shared.lock().full = None;
                tracing::info!(
                    dir = %storage.dir().display(),
                    held_bytes = frames.len(),
                    full_ms = started.elapsed().as_millis() as u64,
                    "space is back; accepting changes again"
                );
                return Held::Written {
                    through: held_through,
                };
            }
            Err(err) if err.is_storage_full() => {
                if closing {
                    tracing::error!(%err, held_bytes = frames.len(), "closing with the disk still full; the held changes are lost");
                    return Held::Closed;
                }
            }
            Err(err) => {
                shared.fail(err.to_string());
                return Held::Failed;
            }
        }
    }
}

/// The maintenance thread: promotes due tasks, expires TTLs and reaps leases on its own, so
/// tasks move even when no caller does anything.
fn maintenance(shared: &Shared, interval: Duration) {
    let mut rounds: u64 = 0;
    loop {
        {
            let core = shared.lock();
            if core.closing || core.failed.is_some() {
                return;
            }
            let (core, _) = shared
                .maintenance_stop
                .wait_timeout(core, interval)
                .expect("broker state lock poisoned");
            if core.closing || core.failed.is_some() {
                return;
            }
        }
        rounds += 1;
        let sweep = rounds.is_multiple_of(50);
        let result = shared.run(|state, now, _, log| {
            state.reap(now, log);
            state.promote(now, log);
            if sweep {
                state.sweep_idempotency(now, IDEMPOTENCY_SWEEP_MAX);
            }
            Ok(())
        });
        match result {
            // Nothing to write while the disk is full; the next round tries again.
            Ok(_) | Err(BrokerError::StorageFull(_)) => {}
            Err(_) => return,
        }
    }
}

impl Broker for EmbeddedBroker {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn enqueue(
        &self,
        queue: &QueueName,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Enqueued>, BrokerError> {
        self.mutate(|state, now, rng, log| state.enqueue(queue, tasks, now, rng, log))
            .await
    }

    /// Reservations are the one change answered before it is durable: a worker starts a task
    /// one sync sooner, which is most of the enqueue-to-start latency. Nothing unsafe follows
    /// from a reservation lost in a crash: the task is simply ready again after the restart,
    /// and the lost reservation's fence belongs to the previous epoch (every opening starts a
    /// new one, durably, before it reserves anything), so it can never equal a fence issued
    /// after the restart and the worker holding it cannot ack, fail, extend or release. The
    /// worker's own ack waits for durability as usual, and the log is sequential, so an ack
    /// that is durable implies the reservation and the enqueue before it are too.
    async fn reserve(&self, request: ReserveRequest) -> Result<Vec<Reservation>, BrokerError> {
        request.validate()?;
        let deadline = tokio::time::Instant::now() + request.wait;
        loop {
            let notify = {
                let mut core = self.inner.shared.lock_open()?;
                core.waiters
                    .entry(request.queue.clone())
                    .or_default()
                    .clone()
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            // Register for wake-ups before looking, so an enqueue between the look and the
            // wait cannot be missed.
            notified.as_mut().enable();
            let ((reservations, throttle), through) = self
                .inner
                .shared
                .run(|state, now, _, log| state.reserve(&request, now, log))?;
            let now_instant = tokio::time::Instant::now();
            if !reservations.is_empty() || now_instant >= deadline {
                self.forget_waiter(&request.queue);
                if let Some(throttle) = throttle {
                    self.inner.shared.run(|state, _, _, log| {
                        state.count_throttle(&request.queue, throttle, log);
                        Ok(())
                    })?;
                }
                if !reservations.is_empty() {
                    // The reservation itself is answered before it is durable (decision 0004),
                    // but not before what came before it: a task is never handed to a worker
                    // while its enqueue (or the retry that made it ready) could still be lost
                    // in a crash. Otherwise a crash could lose an enqueue whose task had
                    // already run, and the producer's retry would run it again under a new id
                    // (found by the chaos harness). This call's own group is the last one, so
                    // everything through the one before it must be durable; usually it is
                    // already, and a fresh task waits only for the sync its enqueue waits for.
                    self.durable(through - 1).await?;
                }
                return Ok(reservations);
            }
            // Sleep until woken, the deadline, or the queue's next timed event (a scheduled
            // task falling due, a lease expiring), whichever is first.
            let next_event = self.read(|state, now| {
                Ok(state
                    .next_event(&request.queue)
                    .map(|at| at.saturating_since(now).max(Duration::from_millis(1))))
            })?;
            let wake_at = next_event.map_or(deadline, |in_| deadline.min(now_instant + in_));
            let _ = tokio::time::timeout_at(wake_at, notified).await;
        }
    }

    async fn ack(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        self.mutate(|state, now, _, log| state.ack(leases, now, log))
            .await
    }

    async fn fail(
        &self,
        failures: Vec<Failure>,
    ) -> Result<Vec<Result<FailOutcome, Refusal>>, BrokerError> {
        self.mutate(|state, now, rng, log| state.fail(failures, now, rng, log))
            .await
    }

    async fn extend(
        &self,
        leases: &[LeaseRef],
        duration: Duration,
    ) -> Result<Vec<Result<Lease, Refusal>>, BrokerError> {
        self.mutate(|state, now, _, log| state.extend(leases, duration, now, log))
            .await
    }

    async fn release(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        self.mutate(|state, now, _, log| state.release(leases, now, log))
            .await
    }

    async fn record_effects(
        &self,
        effects: Vec<EffectRecord>,
    ) -> Result<LeaseResults, BrokerError> {
        self.mutate(|state, now, _, log| state.record_effects(effects, now, log))
            .await
    }

    async fn cancel(&self, ids: &[TaskId]) -> Result<LeaseResults, BrokerError> {
        self.mutate(|state, now, _, log| state.cancel(ids, now, log))
            .await
    }

    async fn promote(&self) -> Result<u64, BrokerError> {
        self.mutate(|state, now, _, log| Ok(state.promote(now, log)))
            .await
    }

    async fn reap(&self) -> Result<u64, BrokerError> {
        self.mutate(|state, now, _, log| Ok(state.reap(now, log)))
            .await
    }

    async fn stats(&self, queue: Option<&QueueName>) -> Result<Vec<QueueStats>, BrokerError> {
        self.read(|state, now| state.stats(queue, now))
    }

    async fn configure(&self, queue: &QueueName, config: QueueConfig) -> Result<(), BrokerError> {
        self.mutate(|state, _, _, log| state.configure(queue, config, log))
            .await
    }

    async fn pause(&self, queue: &QueueName) -> Result<(), BrokerError> {
        self.mutate(|state, _, _, log| state.set_paused(queue, true, log))
            .await
    }

    async fn resume(&self, queue: &QueueName) -> Result<(), BrokerError> {
        self.mutate(|state, _, _, log| state.set_paused(queue, false, log))
            .await
    }

    async fn get(&self, id: TaskId) -> Result<Task, BrokerError> {
        self.read(|state, _| state.get(id))
    }

    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, BrokerError> {
        self.read(|state, _| state.list(&filter))
    }

    async fn replay(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        self.mutate(|state, now, _, log| state.replay(&selector, now, log))
            .await
    }

    async fn purge(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        self.mutate(|state, _, _, log| state.purge(&selector, log))
            .await
    }

    /// Open and not poisoned by a storage failure: what every other call checks first, without
    /// the O(queues) walk of the default (`stats`), so a readiness probe never holds the lock
    /// for long.
    async fn ping(&self) -> Result<(), BrokerError> {
        self.inner.shared.lock_open().map(|_| ())
    }
}

impl EmbeddedBroker {
    /// Drops the waiter entry of `queue` when no other reserve call is waiting on it, so the
    /// map holds only queues someone waits on. The caller still holds one reference.
    fn forget_waiter(&self, queue: &QueueName) {
        let mut core = self.inner.shared.lock();
        if core
            .waiters
            .get(queue)
            .is_some_and(|waiters| Arc::strong_count(waiters) <= 2)
        {
            core.waiters.remove(queue);
        }
    }
}
