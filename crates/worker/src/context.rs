//! [`TaskContext`]: what a handler knows about the task it runs, and its cancellation signal.
//!
//! The context is shared by the handler, the worker's supervisor of that attempt, and the
//! heartbeat loop (which records each extension in it and fires its cancellation when the
//! lease is lost). Cloning it is cheap, so a handler can hand it to work it spawns. It also
//! carries the task's recorded side effects and a way to the broker, for
//! [`TaskContext::effect`] (in [`crate::effect`]).
//!
//! Its trace context is the `handle` span's (set by the supervisor as the span starts): a
//! handler passes it downstream ([`TaskContext::traceparent`]) and a task it enqueues through
//! a producer continues it without being told (`floodway_trace::scope`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use floodway_core::{
    Effects, Fence, Headers, LeaseRef, QueueName, Refusal, Reservation, TaskId, Timestamp,
    TraceContext, TraceId, TraceParent,
};
use tokio_util::sync::CancellationToken;

use crate::effect::ContextBroker;

/// The task a handler runs and the lease it runs under.
///
/// Cancellation ([`TaskContext::cancelled`]) fires when the worker stops the attempt: the lease
/// was lost (another worker may now hold the task), the attempt timed out, or the shutdown
/// grace period ended. The handler's own future is then dropped at its next `.await`; work it
/// started elsewhere (spawned tasks, blocking threads) should watch the signal and stop.
#[derive(Clone, Debug)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: TaskId,
    queue: QueueName,
    kind: String,
    attempt: u32,
    max_attempts: u32,
    priority: u8,
    headers: Headers,
    /// The trace context in the task's headers (the producer's span), if it carried a valid
    /// one. Read by the supervisor to continue the trace.
    remote_trace: Option<TraceContext>,
    /// The `handle` span's context, set by the supervisor when the span starts (before the
    /// handler does); read by the handler through [`TaskContext::trace_context`].
    trace: OnceLock<TraceContext>,
    created_at: Timestamp,
    fence: Fence,
    worker: Arc<str>,
    /// When the current lease expires, in broker milliseconds. Set at reservation; the
    /// heartbeat loop raises it after each extension.
    lease_expires_at: AtomicU64,
    /// Set, before `cancel` fires, when the broker refused to extend the lease (in a heartbeat
    /// or when confirming an effect). The supervisor reads it to tell a lost lease from the end
    /// of the shutdown grace period.
    lost: OnceLock<Refusal>,
    /// The effects recorded on the task: those in the reservation, and those this attempt
    /// recorded since. Read and extended by [`TaskContext::effect`].
    effects: Mutex<Effects>,
    /// Confirms the lease and records effects, for [`TaskContext::effect`].
    broker: Arc<dyn ContextBroker>,
    /// Fired when the attempt is stopped. A child of the worker's grace-period token, so the
    /// end of the grace period fires every context at once.
    cancel: CancellationToken,
}

impl TaskContext {
    /// The context of `reservation` (whose payload and effects the caller has taken), run by
    /// `worker`, cancelled with `cancel`, with the task's recorded `effects`.
    pub(crate) fn new(
        reservation: &Reservation,
        effects: Effects,
        worker: Arc<str>,
        cancel: CancellationToken,
        broker: Arc<dyn ContextBroker>,
    ) -> Self {
        let task = &reservation.task;
        TaskContext {
            inner: Arc::new(Inner {
                id: task.id,
                queue: task.queue.clone(),
                kind: task.kind.clone(),
                attempt: task.attempt,
                max_attempts: task.retry.max_attempts,
                priority: task.priority,
                remote_trace: TraceContext::from_headers(&task.headers),
                trace: OnceLock::new(),
                headers: task.headers.clone(),
                created_at: task.created_at,
                fence: reservation.lease.fence,
                worker,
                lease_expires_at: AtomicU64::new(reservation.lease.expires_at.as_millis()),
                lost: OnceLock::new(),
                effects: Mutex::new(effects),
                broker,
                cancel,
            }),
        }
    }

    /// The task's id. Together with [`TaskContext::attempt`] it identifies this run. For an
    /// idempotency key that stays the same across attempts, see [`TaskContext::effect`].
    pub fn id(&self) -> TaskId {
        self.inner.id
    }

    /// The queue the task was reserved from.
    pub fn queue(&self) -> &QueueName {
        &self.inner.queue
    }

    /// The task's kind: the name its handler is registered under.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// Attempts the task's retry policy allows.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// True when a failure of this attempt dead-letters the task.
    pub fn is_last_attempt(&self) -> bool {
        self.inner.attempt >= self.inner.max_attempts
    }

    /// The task's priority, 0 ..= 9.
    pub fn priority(&self) -> u8 {
        self.inner.priority
    }

    /// The headers the producer attached (trace context, content type, schema version).
    pub fn headers(&self) -> &Headers {
        &self.inner.headers
    }

    /// One header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.headers.get(name).map(String::as_str)
    }

    /// The trace context of this attempt: the trace the producer started (or continued), with
    /// the worker's `handle` span as the parent. Pass it to what the handler calls, or put it
    /// on tasks enqueued without a producer, so their spans join the trace. A task enqueued
    /// through a `floodway_client::Producer` from inside the handler continues it by itself.
    ///
    /// A task that carried no context starts a trace of its own here.
    pub fn trace_context(&self) -> &TraceContext {
        // The supervisor sets it before the handler starts; this fallback only serves a read
        // before that, which the runtime never makes.
        self.inner
            .trace
            .get_or_init(|| match &self.inner.remote_trace {
                Some(remote) => remote.clone(),
                None => floodway_trace::new_trace(),
            })
    }

    /// The W3C `traceparent` of this attempt ([`TaskContext::trace_context`]): format it
    /// (`to_string()`) into an outgoing request's `traceparent` header.
    pub fn traceparent(&self) -> TraceParent {
        self.trace_context().parent
    }

    /// The trace this task's life belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.trace_context().parent.trace_id
    }

    /// The trace context the producer put in the task's headers, if any.
    pub(crate) fn remote_trace(&self) -> Option<&TraceContext> {
        self.inner.remote_trace.as_ref()
    }

    /// Records the `handle` span's context; the first one set stays.
    pub(crate) fn set_trace(&self, trace: TraceContext) {
        let _ = self.inner.trace.set(trace);
    }

    /// When the broker accepted the task.
    pub fn created_at(&self) -> Timestamp {
        self.inner.created_at
    }

    /// The fence of this attempt's lease: it grows with every reservation of the task.
    pub fn fence(&self) -> Fence {
        self.inner.fence
    }

    /// The lease this attempt runs under.
    pub fn lease(&self) -> LeaseRef {
        LeaseRef {
            task_id: self.inner.id,
            fence: self.inner.fence,
        }
    }

    /// When the lease expires on the broker's clock, as of its latest extension.
    pub fn lease_expires_at(&self) -> Timestamp {
        Timestamp::from_millis(self.inner.lease_expires_at.load(Ordering::Relaxed))
    }

    /// The name of the worker running the task.
    pub fn worker(&self) -> &str {
        &self.inner.worker
    }

    /// Completes when the worker stops this attempt (lease lost, timeout, or end of the
    /// shutdown grace period).
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await;
    }

    /// True once the worker has stopped this attempt.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Records an extension of the lease.
    pub(crate) fn extended(&self, expires_at: Timestamp) {
        self.inner
            .lease_expires_at
            .fetch_max(expires_at.as_millis(), Ordering::Relaxed);
    }

    /// Marks the lease lost, for the reason the broker gave, and stops the attempt.
    pub(crate) fn lose_lease(&self, refusal: Refusal) {
        // The first refusal is the one that counts.
        let _ = self.inner.lost.set(refusal);
        self.inner.cancel.cancel();
    }

    /// True when the lease was lost (the broker refused an extension).
    pub(crate) fn lease_lost(&self) -> bool {
        self.inner.lost.get().is_some()
    }

    /// Why the lease was lost, if it was.
    pub(crate) fn lost_to(&self) -> Option<Refusal> {
        self.inner.lost.get().copied()
    }

    /// The result recorded under an effect's key, if any.
    pub(crate) fn recorded_effect(&self, key: &str) -> Option<String> {
        self.effects().get(key).cloned()
    }

    /// How many effects the task holds.
    pub(crate) fn recorded_effects(&self) -> usize {
        self.effects().len()
    }

    /// Remembers an effect this attempt recorded, so a second call with its key returns it.
    pub(crate) fn remember_effect(&self, key: String, result: String) {
        self.effects().insert(key, result);
    }

    /// The way to the broker for effects.
    pub(crate) fn broker(&self) -> &dyn ContextBroker {
        &*self.inner.broker
    }

    fn effects(&self) -> std::sync::MutexGuard<'_, Effects> {
        // Held only for a lookup or an insert, which a panic cannot leave half done.
        self.inner
            .effects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the attempt (timeout, end of grace period).
    pub(crate) fn cancel(&self) {
        self.inner.cancel.cancel();
    }

    /// Completes when the attempt is stopped; for the supervisor's `select!`.
    pub(crate) fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancel
    }
}
