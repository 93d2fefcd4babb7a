//! Capacity: how many leases a worker holds and how many handlers it runs, per queue and per
//! kind, and the live counts behind [`crate::WorkerStats`].
//!
//! # Per queue: a lease budget and handler slots
//!
//! A [`QueueCapacity`] has two semaphores:
//! - the **lease budget**, `concurrency + prefetch` permits. A fetch loop takes one for every
//!   task it asks the broker for; the permit travels with the task (as a [`LeasePermit`]) to
//!   the completer, which gives it back once the broker has settled the task. So the worker
//!   never holds more than `concurrency + prefetch` leases of the queue, counting those whose
//!   ack is still on its way.
//! - the **handler slots**, `concurrency` permits. A supervisor takes one just before it
//!   starts the handler and gives it back once the handler is gone. So at most `concurrency`
//!   handlers of the queue run at once.
//!
//! A task that holds a lease permit but no handler slot yet is *prefetched*: it waits in
//! memory, its lease kept alive by the heartbeat like a running task's, and it is released
//! unrun if shutdown starts first. With `prefetch` 0 (the default) a task is reserved only for
//! a free handler slot (a handler slot is freed when its handler ends, its lease permit only
//! after the ack), so no task waits for one.
//!
//! # Per kind: the adaptive limit
//!
//! Each kind with a handler has a [`KindGate`]. An adaptive kind's gate holds an
//! [`AimdLimiter`]: a task of the kind starts only while fewer than the limit run. A task held
//! back by the limit waits for a *kind slot* before it asks for a handler slot, so it never
//! sits on a handler slot that a task of another kind could use; it holds only its lease
//! permit meanwhile (its lease kept alive, released at shutdown). The supervisor reports how
//! each attempt ended ([`Signal`]), which moves the limit: a success raises it additively, a
//! timeout or an [`crate::Outcome::Overloaded`] cuts it (once per cool-down).
//!
//! When every kind the worker has a handler for is adaptive, the fetch loops also ask the
//! broker for no more tasks than the limits leave room for ([`Kinds::claim`]), so the tasks of
//! a throttled downstream stay in the broker, where other workers can take them, instead of
//! waiting in this worker's memory. With a kind that is not adaptive among them, the worker
//! cannot tell which kinds the next tasks will be, so it reserves by its lease budget only, and
//! tasks of a saturated kind wait in memory for a kind slot.
//!
//! Counts are atomics or sit behind short locks never held across an `.await`, so a
//! [`crate::WorkerHandle::stats`] snapshot is cheap.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use floodway_backpressure::AimdLimiter;
use floodway_core::QueueName;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics::HandlerDurations;
use crate::stats::{KindActivity, QueueActivity};

/// One queue a worker serves: its limits and its live counts.
#[derive(Debug)]
pub(crate) struct QueueCapacity {
    pub(crate) queue: QueueName,
    /// Handlers of this queue that may run at once. Set by the builder.
    pub(crate) concurrency: usize,
    /// Tasks reserved beyond `concurrency`, waiting in memory for a handler slot. Set by the
    /// builder.
    pub(crate) prefetch: usize,
    /// `concurrency + prefetch` permits; the fetch loops take them, the completer gives them
    /// back.
    pub(crate) leases: Arc<Semaphore>,
    /// `concurrency` permits; supervisors take one for each running handler.
    pub(crate) slots: Arc<Semaphore>,
    /// Leases held: dispatched and not yet settled (or lost).
    leased: AtomicUsize,
    /// Handlers running.
    running: AtomicUsize,
    /// Tasks dispatched whose handler has not started yet.
    prefetched: AtomicUsize,
    /// Of the prefetched, those waiting for their kind's adaptive limit.
    held_back: AtomicUsize,
    /// How long this queue's handlers ran, by kind and outcome; supervisors record into it.
    pub(crate) durations: HandlerDurations,
}

impl QueueCapacity {
    pub(crate) fn new(
        queue: QueueName,
        concurrency: usize,
        prefetch: usize,
        durations: HandlerDurations,
    ) -> Self {
        assert!(concurrency >= 1, "the builder checks concurrency");
        QueueCapacity {
            queue,
            concurrency,
            prefetch,
            durations,
            leases: Arc::new(Semaphore::new(concurrency + prefetch)),
            slots: Arc::new(Semaphore::new(concurrency)),
            leased: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            prefetched: AtomicUsize::new(0),
            held_back: AtomicUsize::new(0),
        }
    }

    /// Wraps one lease permit of a dispatched task, counting the lease as held.
    pub(crate) fn lease_permit(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> LeasePermit {
        debug_assert_eq!(permit.num_permits(), 1);
        self.leased.fetch_add(1, Ordering::Relaxed);
        LeasePermit {
            _permit: permit,
            queue: self.clone(),
        }
    }

    /// Counts a dispatched task as prefetched until the guard is dropped (its handler starts,
    /// or it is released or lost unrun).
    pub(crate) fn prefetched(self: &Arc<Self>) -> Gauge {
        Gauge::enter(self.clone(), |q| &q.prefetched)
    }

    /// Counts a task as held back by its kind's limit until the guard is dropped.
    pub(crate) fn held_back(self: &Arc<Self>) -> Gauge {
        Gauge::enter(self.clone(), |q| &q.held_back)
    }

    /// Counts a running handler until the guard is dropped.
    pub(crate) fn running(self: &Arc<Self>) -> Gauge {
        Gauge::enter(self.clone(), |q| &q.running)
    }

    pub(crate) fn snapshot(&self) -> QueueActivity {
        QueueActivity {
            queue: self.queue.clone(),
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            leases: self.leased.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            prefetched: self.prefetched.load(Ordering::Relaxed),
            held_back: self.held_back.load(Ordering::Relaxed),
        }
    }
}

/// A task's share of its queue's lease budget. Dropping it gives the permit back and stops
/// counting the lease; the completer does so once the broker has settled the task.
pub(crate) struct LeasePermit {
    _permit: OwnedSemaphorePermit,
    queue: Arc<QueueCapacity>,
}

impl fmt::Debug for LeasePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasePermit")
            .field("queue", &self.queue.queue)
            .finish()
    }
}

impl Drop for LeasePermit {
    fn drop(&mut self) {
        self.queue.leased.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Adds one to a count of a queue while it lives.
pub(crate) struct Gauge {
    queue: Arc<QueueCapacity>,
    field: fn(&QueueCapacity) -> &AtomicUsize,
}

impl Gauge {
    fn enter(queue: Arc<QueueCapacity>, field: fn(&QueueCapacity) -> &AtomicUsize) -> Self {
        field(&queue).fetch_add(1, Ordering::Relaxed);
        Gauge { queue, field }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.field)(&self.queue).fetch_sub(1, Ordering::Relaxed);
    }
}

/// How an attempt ended, as far as its kind's adaptive limit is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The handler completed its task: the downstream coped.
    Success,
    /// The handler reported the downstream overloaded ([`crate::Outcome::Overloaded`]).
    Overloaded,
    /// The attempt ran past its timeout, which a slow downstream causes too.
    TimedOut,
    /// Anything else (a failure, a panic, a lost lease): says nothing about load.
    Neutral,
}

/// The gates of every kind that has a handler.
#[derive(Debug)]
pub(crate) struct Kinds {
    gates: HashMap<String, Arc<KindGate>>,
    /// True when every kind with a handler is adaptive: only then do the limits bound what the
    /// fetch loops ask for.
    all_adaptive: bool,
    /// Room claimed by reserve calls whose tasks are not dispatched yet.
    claimed: Mutex<usize>,
    /// Notified whenever room under the limits may have grown (a task of an adaptive kind
    /// finished, or a limit rose), for fetch loops waiting for room.
    changed: Arc<Notify>,
}

impl Kinds {
    /// Gates for `kinds`, adaptive where `limiters` has one.
    pub(crate) fn new(
        kinds: impl IntoIterator<Item = String>,
        mut limiters: HashMap<String, AimdLimiter>,
    ) -> Self {
        let changed = Arc::new(Notify::new());
        let gates: HashMap<String, Arc<KindGate>> = kinds
            .into_iter()
            .map(|kind| {
                let limiter = limiters.remove(&kind);
                let gate = KindGate {
                    kind: kind.clone(),
                    state: Mutex::new(KindState {
                        limiter,
                        ..KindState::default()
                    }),
                    freed: Notify::new(),
                    changed: changed.clone(),
                };
                (kind, Arc::new(gate))
            })
            .collect();
        assert!(
            limiters.is_empty(),
            "the builder checks that adaptive kinds have handlers"
        );
        let all_adaptive = !gates.is_empty() && gates.values().all(|gate| gate.is_adaptive());
        Kinds {
            gates,
            all_adaptive,
            claimed: Mutex::new(0),
            changed,
        }
    }

    /// The gate of `kind`, if it has a handler.
    pub(crate) fn gate(&self, kind: &str) -> Option<&Arc<KindGate>> {
        self.gates.get(kind)
    }

    /// Claims room for up to `wanted` tasks for one reserve call of a queue with `prefetch`,
    /// or returns `None` when the kinds do not bound it (some kind is not adaptive).
    ///
    /// The room is the sum of the limits plus `prefetch`, minus the tasks of those kinds in
    /// memory and the room other calls have claimed. The claim holds its room until the call's
    /// tasks are dispatched (and so counted against their kinds), so two fetch loops never
    /// both take the same room. It is a hint all the same: the broker may return tasks of any
    /// kind, and queues share the kinds' limits; the kind gates are what enforce the limits.
    pub(crate) fn claim(&self, prefetch: usize, wanted: usize) -> Option<Claim<'_>> {
        if !self.all_adaptive {
            return None;
        }
        let mut claimed = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        let (limits, assigned) =
            self.gates
                .values()
                .fold((prefetch, 0usize), |(limits, assigned), gate| {
                    let state = gate.lock();
                    let limit = state.limiter.as_ref().map_or(0, |l| l.limit() as usize);
                    (limits + limit, assigned + state.assigned)
                });
        let room = limits.saturating_sub(assigned + *claimed).min(wanted);
        *claimed += room;
        Some(Claim { kinds: self, room })
    }

    /// Notified when room may have grown; see [`Kinds::claim`].
    pub(crate) fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Every kind's counts, by kind name.
    pub(crate) fn snapshot(&self) -> Vec<KindActivity> {
        let mut kinds: Vec<KindActivity> =
            self.gates.values().map(|gate| gate.snapshot()).collect();
        kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
        kinds
    }
}

/// Room under the adaptive limits held for one reserve call, from [`Kinds::claim`] until the
/// call's tasks are dispatched.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    kinds: &'a Kinds,
    room: usize,
}

impl Claim<'_> {
    /// How many tasks the call may ask for.
    pub(crate) fn room(&self) -> usize {
        self.room
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.room == 0 {
            return;
        }
        *self
            .kinds
            .claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) -= self.room;
        // Room the call did not use is free again.
        self.kinds.changed.notify_waiters();
    }
}

/// One kind's limit (when adaptive) and counts.
pub(crate) struct KindGate {
    kind: String,
    state: Mutex<KindState>,
    /// Notified when a kind slot frees up or the limit rises, for tasks held back.
    freed: Notify,
    /// The worker's [`Kinds::changed`].
    changed: Arc<Notify>,
}

impl fmt::Debug for KindGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindGate")
            .field("kind", &self.kind)
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

/// What a [`KindGate`] counts. Only grows or shrinks under its lock.
#[derive(Debug, Default)]
struct KindState {
    /// The adaptive limit; `None` when the kind is not adaptive.
    limiter: Option<AimdLimiter>,
    /// Tasks of the kind holding a kind slot: about to run or running.
    running: usize,
    /// Tasks of the kind in memory: dispatched and not yet finished (waiting or running).
    assigned: usize,
    /// Attempts whose handler reported the downstream overloaded.
    overloaded: u64,
    /// Attempts that ran past their timeout.
    timed_out: u64,
    /// Times an overload signal cut the limit.
    limit_cuts: u64,
}

impl KindState {
    fn has_room(&self) -> bool {
        self.limiter
            .as_ref()
            .is_none_or(|limiter| self.running < limiter.limit() as usize)
    }
}

impl KindGate {
    fn lock(&self) -> MutexGuard<'_, KindState> {
        // Every update under the lock is a few plain assignments, so a panic cannot leave the
        // state half-changed; a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_adaptive(&self) -> bool {
        self.lock().limiter.is_some()
    }

    /// Counts a dispatched task of the kind as in memory until the guard is dropped.
    pub(crate) fn assign(self: &Arc<Self>) -> Assignment {
        self.lock().assigned += 1;
        Assignment { gate: self.clone() }
    }

    /// A kind slot, if the limit has room now.
    pub(crate) fn try_start(self: &Arc<Self>) -> Option<KindSlot> {
        let mut state = self.lock();
        if !state.has_room() {
            return None;
        }
        state.running += 1;
        Some(KindSlot { gate: self.clone() })
    }

    /// Waits for a kind slot.
    pub(crate) async fn start(self: &Arc<Self>) -> KindSlot {
        loop {
            // Registered before the check, so a slot freed in between still wakes this task.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_start() {
                return slot;
            }
            freed.await;
        }
    }

    fn snapshot(&self) -> KindActivity {
        let state = self.lock();
        KindActivity {
            kind: self.kind.clone(),
            running: state.running,
            waiting: state.assigned.saturating_sub(state.running),
            limit: state.limiter.as_ref().map(AimdLimiter::limit),
            overloaded: state.overloaded,
            timed_out: state.timed_out,
            limit_cuts: state.limit_cuts,
        }
    }

    /// Wakes whoever waits for room under this kind's limit.
    fn wake(&self) {
        self.freed.notify_waiters();
        self.changed.notify_waiters();
    }
}

/// A dispatched task of a kind, counted until dropped (see [`KindGate::assign`]).
#[derive(Debug)]
pub(crate) struct Assignment {
    gate: Arc<KindGate>,
}

impl Assignment {
    /// The gate of the task's kind.
    pub(crate) fn gate(&self) -> &Arc<KindGate> {
        &self.gate
    }
}

impl Drop for Assignment {
    fn drop(&mut self) {
        let adaptive = {
            let mut state = self.gate.lock();
            state.assigned -= 1;
            state.limiter.is_some()
        };
        if adaptive {
            self.gate.changed.notify_waiters();
        }
    }
}

/// The right to run one task of a kind under its limit. Dropping it frees the slot;
/// [`KindSlot::finish`] also tells the limit how the attempt ended.
#[derive(Debug)]
pub(crate) struct KindSlot {
    gate: Arc<KindGate>,
}

impl KindSlot {
    /// Frees the slot, telling the limit how the attempt ended at `now` (time since the worker
    /// started, on tokio's clock).
    pub(crate) fn finish(self, signal: Signal, now: Duration) {
        let mut state = self.gate.lock();
        match signal {
            Signal::Success => {
                if let Some(limiter) = &mut state.limiter {
                    limiter.on_success();
                }
            }
            Signal::Overloaded | Signal::TimedOut => {
                if signal == Signal::Overloaded {
                    state.overloaded += 1;
                } else {
                    state.timed_out += 1;
                }
                if let Some(limiter) = &mut state.limiter
                    && limiter.on_overload(now)
                {
                    state.limit_cuts += 1;
                }
            }
            Signal::Neutral => {}
        }
        drop(state);
        // Dropping `self` frees the slot and wakes the tasks waiting for it.
    }
}

impl Drop for KindSlot {
    fn drop(&mut self) {
        self.gate.lock().running -= 1;
        self.gate.wake();
    }
}

#[cfg(test)]
mod tests {
    use floodway_backpressure::AimdConfig;

    use super::*;

    fn kinds(adaptive: &[(&str, u32)], plain: &[&str]) -> Kinds {
        let limiters = adaptive
            .iter()
            .map(|(kind, limit)| {
                let config = AimdConfig {
                    min: 1,
                    max: 8,
                    initial: *limit,
                    decrease_factor: 0.5,
                    cooldown: Duration::ZERO,
                };
                ((*kind).to_owned(), AimdLimiter::new(config).unwrap())
            })
            .collect();
        let names = adaptive
            .iter()
            .map(|(kind, _)| (*kind).to_owned())
            .chain(plain.iter().map(|kind| (*kind).to_owned()));
        Kinds::new(names, limiters)
    }

    #[test]
    fn an_adaptive_kind_runs_at_most_its_limit() {
        let kinds = kinds(&[("call", 2)], &[]);
        let gate = kinds.gate("call").unwrap();
        let first = gate.try_start().unwrap();
        let _second = gate.try_start().unwrap();
        assert!(gate.try_start().is_none());
        first.finish(Signal::Neutral, Duration::ZERO);
        assert!(gate.try_start().is_some());
    }

    #[test]
    fn overload_cuts_the_limit_and_success_raises_it() {
        let kinds = kinds(&[("call", 8)], &["plain"]);
        let gate = kinds.gate("call").unwrap();
        gate.try_start()
            .unwrap()
            .finish(Signal::Overloaded, Duration::ZERO);
        gate.try_start()
            .unwrap()
            .finish(Signal::TimedOut, Duration::from_secs(1));
        let activity = gate.snapshot();
        assert_eq!(activity.limit, Some(2));
        assert_eq!((activity.overloaded, activity.timed_out), (1, 1));
        assert_eq!(activity.limit_cuts, 2);
        // Additive increase: 1/limit per success, so about one per limit's worth of them.
        for expected in [2, 2, 3] {
            gate.try_start()
                .unwrap()
                .finish(Signal::Success, Duration::ZERO);
            assert_eq!(gate.snapshot().limit, Some(expected));
        }
        // A kind that is not adaptive counts timeouts but has no limit.
        let plain = kinds.gate("plain").unwrap();
        plain
            .try_start()
            .unwrap()
            .finish(Signal::TimedOut, Duration::ZERO);
        assert_eq!(plain.snapshot().limit, None);
        assert_eq!(plain.snapshot().timed_out, 1);
    }

    #[test]
    fn room_is_claimed_only_when_every_kind_is_adaptive() {
        let mixed = kinds(&[("call", 2)], &["plain"]);
        assert!(mixed.claim(0, 10).is_none());
        let adaptive = kinds(&[("a", 2), ("b", 3)], &[]);
        assert_eq!(adaptive.claim(0, 10).unwrap().room(), 5);
        assert_eq!(adaptive.claim(4, 10).unwrap().room(), 9);
        assert_eq!(
            adaptive.claim(0, 3).unwrap().room(),
            3,
            "never more than wanted"
        );
        let gate = adaptive.gate("a").unwrap();
        let assigned: Vec<_> = (0..4).map(|_| gate.assign()).collect();
        assert_eq!(adaptive.claim(0, 10).unwrap().room(), 1);
        assert_eq!(gate.snapshot().waiting, 4);
        let more: Vec<_> = (0..3).map(|_| gate.assign()).collect();
        assert_eq!(adaptive.claim(0, 10).unwrap().room(), 0, "never below zero");
        drop((assigned, more));
        assert_eq!(adaptive.claim(0, 10).unwrap().room(), 5);
    }

    #[test]
    fn a_claim_holds_its_room_until_dropped() {
        let adaptive = kinds(&[("a", 3)], &[]);
        let first = adaptive.claim(0, 2).unwrap();
        assert_eq!(first.room(), 2);
        assert_eq!(adaptive.claim(0, 10).unwrap().room(), 1);
        drop(first);
        assert_eq!(adaptive.claim(0, 10).unwrap().room(), 3);
    }

    #[tokio::test]
    async fn a_held_back_task_starts_when_a_slot_frees() {
        let kinds = kinds(&[("call", 1)], &[]);
        let gate = kinds.gate("call").unwrap().clone();
        let running = gate.try_start().unwrap();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.start().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        running.finish(Signal::Success, Duration::ZERO);
        let slot = waiter.await.unwrap();
        assert_eq!(gate.snapshot().running, 1);
        drop(slot);
        assert_eq!(gate.snapshot().running, 0);
    }
}
