//! [`Inflight`]: the leases a worker holds, and when each is next due for extension.
//!
//! A lease enters when a fetch loop dispatches its reservation and leaves when it is settled:
//! the completer removes it once the broker has answered the ack, fail or release (or the
//! completer gave up), and a supervisor removes it when the lease was lost. So the registry
//! holds exactly the leases the broker counts as this worker's, including those whose handler
//! has finished but whose ack is still on its way, and the heartbeat loop keeps all of them
//! alive.
//!
//! Entries are keyed by [`LeaseRef`] (task and fence), not by task: after a lost lease the
//! same task may be reserved again by this worker under a new fence, and the two must not be
//! confused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use floodway_core::LeaseRef;
use tokio::time::Instant;

use crate::context::TaskContext;

/// The leases this worker holds. The lock is held only to copy or update entries, never
/// across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    entries: Mutex<HashMap<LeaseRef, Entry>>,
}

#[derive(Debug)]
struct Entry {
    /// The attempt's context: the heartbeat records extensions in it and fires its
    /// cancellation when the lease is lost.
    ctx: TaskContext,
    /// When the lease should next be extended, on the worker's clock.
    extend_at: Instant,
}

impl Inflight {
    /// Registers a lease received (or last extended) at `extend_at`'s origin.
    pub(crate) fn insert(&self, ctx: TaskContext, extend_at: Instant) {
        let previous = self.lock().insert(ctx.lease(), Entry { ctx, extend_at });
        assert!(previous.is_none(), "a fence identifies one reservation");
    }

    /// Forgets a settled or lost lease. Returns whether it was held.
    pub(crate) fn remove(&self, lease: &LeaseRef) -> bool {
        self.lock().remove(lease).is_some()
    }

    /// The leases due for extension at `now` (all of them when `all`).
    pub(crate) fn due(&self, now: Instant, all: bool) -> Vec<TaskContext> {
        self.lock()
            .values()
            .filter(|entry| all || entry.extend_at <= now)
            .map(|entry| entry.ctx.clone())
            .collect()
    }

    /// Schedules the next extension of a lease, if it is still held.
    pub(crate) fn reschedule(&self, lease: &LeaseRef, extend_at: Instant) {
        if let Some(entry) = self.lock().get_mut(lease) {
            entry.extend_at = extend_at;
        }
    }

    /// How many leases are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseRef, Entry>> {
        // A panic while holding the lock leaves the map consistent (every update is a single
        // insert, remove or assignment), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// When a lease received (or extended) at `start` should next be extended: once only
/// `1 / `[`crate::limits::EXTEND_WHEN_LEFT_DIVISOR`] of it is left.
pub(crate) fn extend_at(start: Instant, lease: Duration) -> Instant {
    start + lease - lease / crate::limits::EXTEND_WHEN_LEFT_DIVISOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_extended_when_a_third_is_left() {
        let start = Instant::now();
        assert_eq!(
            extend_at(start, Duration::from_secs(30)),
            start + Duration::from_secs(20)
        );
    }
}
