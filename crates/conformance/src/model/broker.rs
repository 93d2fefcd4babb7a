//! [`ModelBroker`]: the [`Model`] behind the [`Broker`] trait, and [`ModelHarness`], which runs
//! the suite against it.
//!
//! The model itself is pure; this wrapper adds what a broker has and the model does not: a
//! clock, an id generator, a random source for jitter, and long-poll waiting on reserve.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, Capabilities, Clock, DeadSelector, EffectRecord, Enqueued, FailOutcome,
    Failure, IdGenerator, Lease, LeaseRef, LeaseResults, ManualClock, NewTask, QueueConfig,
    QueueName, QueueStats, Refusal, Reservation, ReserveRequest, Task, TaskFilter, TaskId,
    Timestamp,
};
use tokio::sync::Notify;

use super::Model;
use crate::Harness;

/// An in-memory broker that does exactly what [`Model`] does. Nothing is durable; it exists
/// so that the suite can check its own cases, and it can stand in for a broker in other
/// crates' tests.
pub struct ModelBroker {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    /// Woken whenever tasks may have become ready, for long-polling reserves.
    changed: Notify,
}

struct State {
    model: Model,
    ids: IdGenerator,
    random: Random,
}

/// splitmix64: random bits for ids and jitter, reproducible per broker.
struct Random(u64);

impl Random {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u128(&mut self) -> u128 {
        u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())
    }

    /// A number in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl ModelBroker {
    /// An empty broker reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        ModelBroker::with_model(clock, Model::new())
    }

    /// A broker holding `model`, as if reopened on it: new ids are greater than every stored
    /// one.
    pub fn with_model(clock: Arc<dyn Clock>, model: Model) -> Self {
        let ids = model.last_id().map(IdGenerator::after).unwrap_or_default();
        ModelBroker {
            state: Mutex::new(State {
                model,
                ids,
                random: Random(0x5eed),
            }),
            clock,
            changed: Notify::new(),
        }
    }

    /// A copy of everything the broker holds.
    pub fn model(&self) -> Model {
        self.lock().model.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held means a model bug already reported by that panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Runs `f` on the model, then wakes long-polling reserves.
    fn change<T>(&self, f: impl FnOnce(&mut State, Timestamp) -> T) -> T {
        let now = self.now();
        let out = f(&mut self.lock(), now);
        self.changed.notify_waiters();
        out
    }
}

impl Broker for ModelBroker {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn enqueue(
        &self,
        queue: &QueueName,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Enqueued>, BrokerError> {
        self.change(|state, now| {
            let State { model, ids, random } = state;
            model.enqueue(queue, tasks, now, || ids.next(now, random.next_u128()))
        })
    }

    async fn reserve(&self, request: ReserveRequest) -> Result<Vec<Reservation>, BrokerError> {
        request.validate()?;
        let deadline = tokio::time::Instant::now() + request.wait;
        loop {
            // Register for wake-ups before looking, so an enqueue between the look and the
            // wait is not missed.
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let now = self.now();
            let reserved = self.lock().model.reserve(&request, now)?;
            if !reserved.is_empty() || request.wait.is_zero() {
                return Ok(reserved);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        self.change(|state, now| state.model.ack(leases, now))
    }

    async fn fail(
        &self,
        failures: Vec<Failure>,
    ) -> Result<Vec<Result<FailOutcome, Refusal>>, BrokerError> {
        self.change(|state, now| {
            let State { model, random, .. } = state;
            model.fail(failures, now, || random.next_unit())
        })
    }

    async fn extend(
        &self,
        leases: &[LeaseRef],
        duration: Duration,
    ) -> Result<Vec<Result<Lease, Refusal>>, BrokerError> {
        self.change(|state, now| state.model.extend(leases, duration, now))
    }

    async fn release(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        self.change(|state, now| state.model.release(leases, now))
    }

    async fn record_effects(
        &self,
        effects: Vec<EffectRecord>,
    ) -> Result<LeaseResults, BrokerError> {
        self.change(|state, now| state.model.record_effects(effects, now))
    }

    async fn cancel(&self, ids: &[TaskId]) -> Result<LeaseResults, BrokerError> {
        self.change(|state, now| state.model.cancel(ids, now))
    }

    async fn promote(&self) -> Result<u64, BrokerError> {
        Ok(self.change(|state, now| state.model.promote(now)))
    }

    async fn reap(&self) -> Result<u64, BrokerError> {
        Ok(self.change(|state, now| state.model.reap(now)))
    }

    async fn stats(&self, queue: Option<&QueueName>) -> Result<Vec<QueueStats>, BrokerError> {
        let now = self.now();
        self.lock().model.stats(queue, now)
    }

    async fn configure(&self, queue: &QueueName, config: QueueConfig) -> Result<(), BrokerError> {
        self.change(|state, _| state.model.configure(queue, config))
    }

    async fn pause(&self, queue: &QueueName) -> Result<(), BrokerError> {
        self.change(|state, _| state.model.set_paused(queue, true))
    }

    async fn resume(&self, queue: &QueueName) -> Result<(), BrokerError> {
        self.change(|state, _| state.model.set_paused(queue, false))
    }

    async fn get(&self, id: TaskId) -> Result<Task, BrokerError> {
        self.lock().model.get(id)
    }

    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, BrokerError> {
        self.lock().model.list(&filter)
    }

    async fn replay(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        self.change(|state, now| state.model.replay(&selector, now))
    }

    async fn purge(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        self.change(|state, _| state.model.purge(&selector))
    }
}

/// The time a [`ModelHarness`] clock starts at: 2027-01-15T08:00:00Z, far from zero so that
/// arithmetic below the start would show.
pub const MODEL_CLOCK_START: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// Runs the suite against a [`ModelBroker`]. Restart reopens a new broker on the old one's
/// model, as a durable broker reopens on its storage.
pub struct ModelHarness {
    broker: ModelBroker,
    clock: ManualClock,
}

impl ModelHarness {
    /// A harness with an empty broker and a clock at [`MODEL_CLOCK_START`].
    pub fn new() -> Self {
        let clock = ManualClock::new(MODEL_CLOCK_START);
        ModelHarness {
            broker: ModelBroker::new(Arc::new(clock.clone())),
            clock,
        }
    }
}

impl Default for ModelHarness {
    fn default() -> Self {
        ModelHarness::new()
    }
}

impl Harness for ModelHarness {
    type Broker = ModelBroker;

    fn broker(&self) -> &ModelBroker {
        &self.broker
    }

    fn clock(&self) -> &ManualClock {
        &self.clock
    }

    fn can_restart(&self) -> bool {
        true
    }

    async fn restart(&mut self) {
        let model = self.broker.model();
        self.broker = ModelBroker::with_model(Arc::new(self.clock.clone()), model);
    }
}
