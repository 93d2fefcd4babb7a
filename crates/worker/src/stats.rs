//! [`WorkerStats`]: what a running worker holds and runs right now, per queue and per kind.
//!
//! Where [`crate::WorkerReport`] counts what happened since the worker started, these are
//! levels (leases held, handlers running, tasks waiting) and each kind's adaptive limit, read
//! from the live counts in [`crate::capacity`] by [`crate::WorkerHandle::stats`]. Reading them
//! takes no broker call and no lock held for longer than a copy, so it is cheap enough for a
//! metrics scrape or a dashboard poll.

use floodway_core::QueueName;
use serde::Serialize;

/// A snapshot of a worker's queues and kinds. Each count is read on its own, so a snapshot
/// taken while tasks move may be off by a task or two between fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerStats {
    /// Each queue served, in the order the builder was given them.
    pub queues: Vec<QueueActivity>,
    /// Each kind with a handler, by name.
    pub kinds: Vec<KindActivity>,
}

impl WorkerStats {
    /// The activity of `queue`, if the worker serves it.
    pub fn queue(&self, queue: &str) -> Option<&QueueActivity> {
        self.queues.iter().find(|q| q.queue.as_str() == queue)
    }

    /// The activity of `kind`, if the worker has a handler for it.
    pub fn kind(&self, kind: &str) -> Option<&KindActivity> {
        self.kinds.iter().find(|k| k.kind == kind)
    }
}

/// One queue's leases and handlers now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueActivity {
    /// The queue.
    pub queue: QueueName,
    /// Its handler slots, as configured.
    pub concurrency: usize,
    /// Tasks it may hold beyond its handler slots, as configured.
    pub prefetch: usize,
    /// Leases the worker holds on the queue's tasks (running, prefetched, or being settled);
    /// at most `concurrency + prefetch`.
    pub leases: usize,
    /// Handlers running.
    pub running: usize,
    /// Tasks reserved whose handler has not started yet: waiting for a handler slot, or for
    /// their kind's adaptive limit (`held_back`).
    pub prefetched: usize,
    /// Of `prefetched`, the tasks waiting because their kind is at its adaptive limit.
    pub held_back: usize,
}

/// One kind's tasks and adaptive limit now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindActivity {
    /// The kind.
    pub kind: String,
    /// Tasks of the kind running (or about to start, holding a place under the limit).
    pub running: usize,
    /// Tasks of the kind reserved and waiting to start.
    pub waiting: usize,
    /// How many tasks of the kind may run at once now, when the kind is adaptive
    /// ([`crate::WorkerBuilder::adaptive`]); `None` otherwise.
    pub limit: Option<u32>,
    /// Attempts whose handler reported its downstream overloaded
    /// ([`crate::Outcome::Overloaded`]), since the worker started.
    pub overloaded: u64,
    /// Attempts that ran past their timeout, since the worker started.
    pub timed_out: u64,
    /// Times an overload or a timeout cut the adaptive limit (at most once per cool-down).
    pub limit_cuts: u64,
}
