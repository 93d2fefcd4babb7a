//! [`WorkerReport`]: what a worker did, counted as it happens.
//!
//! The loops count into [`Counters`] (atomics, so counting never waits) and announce each
//! change on a watch channel, so [`crate::WorkerHandle::wait_for`] can wait for a condition on
//! the counts without polling. [`crate::Worker::run`] returns the final report.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::watch;

/// Counts of what a worker did since it started. Every field only grows.
///
/// A failed attempt counts once in `retried` or `dead_lettered` (where the broker put the
/// task) and, if it was a timeout, a panic or an overloaded downstream, once more in
/// `timed_out`, `panicked` or `overloaded`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerReport {
    /// Tasks reserved from the broker.
    pub reserved: u64,
    /// Tasks the broker accepted as completed.
    pub completed: u64,
    /// Failed attempts the broker scheduled for another try.
    pub retried: u64,
    /// Failed attempts that sent their task to the dead letters (a permanent failure, or the
    /// last attempt failing).
    pub dead_lettered: u64,
    /// Attempts stopped because they ran past their timeout.
    pub timed_out: u64,
    /// Attempts whose handler panicked.
    pub panicked: u64,
    /// Attempts whose handler reported its downstream overloaded
    /// ([`crate::Outcome::Overloaded`]).
    pub overloaded: u64,
    /// Attempts stopped because the broker refused to extend their lease; their results were
    /// discarded.
    pub lease_lost: u64,
    /// Tasks given back unrun or unfinished at shutdown, without spending an attempt.
    pub released: u64,
    /// Acks, fails and releases the broker refused because the lease was stale or expired:
    /// another reservation may own the task now.
    pub refused: u64,
    /// Acks, fails and releases given up after the broker stayed unavailable; their leases
    /// expire and the tasks run again.
    pub abandoned: u64,
    /// Lease extensions the broker granted.
    pub extended: u64,
    /// Broker calls that failed as a whole (and were retried or abandoned).
    pub broker_errors: u64,
}

/// One counter per [`WorkerReport`] field.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    Reserved,
    Completed,
    Retried,
    DeadLettered,
    TimedOut,
    Panicked,
    Overloaded,
    LeaseLost,
    Released,
    Refused,
    Abandoned,
    Extended,
    BrokerErrors,
}

const COUNTS: usize = 13;

/// The live counters behind [`WorkerReport`], shared by the worker's loops and its handles.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Indexed by `Count as usize`.
    values: [AtomicU64; COUNTS],
    /// Set once `run` has returned; nothing counts after that.
    stopped: AtomicBool,
    /// Bumped after every batch of changes, so waiters wake up and re-read the counters.
    changed: watch::Sender<u64>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            values: Default::default(),
            stopped: AtomicBool::new(false),
            changed: watch::Sender::new(0),
        }
    }
}

impl Counters {
    /// Adds `n` to a counter. Call [`Counters::announce`] once the related changes are made.
    pub(crate) fn add(&self, count: Count, n: u64) {
        self.values[count as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Wakes whoever waits for a change of the counters.
    pub(crate) fn announce(&self) {
        self.changed
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// Adds one to a counter and announces it.
    pub(crate) fn bump(&self, count: Count) {
        self.add(count, 1);
        self.announce();
    }

    /// Marks the worker stopped and wakes every waiter for the last time.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.announce();
    }

    /// True once the worker's `run` has returned.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// A receiver that sees every later announcement.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> WorkerReport {
        let get = |count: Count| self.values[count as usize].load(Ordering::Relaxed);
        WorkerReport {
            reserved: get(Count::Reserved),
            completed: get(Count::Completed),
            retried: get(Count::Retried),
            dead_lettered: get(Count::DeadLettered),
            timed_out: get(Count::TimedOut),
            panicked: get(Count::Panicked),
            overloaded: get(Count::Overloaded),
            lease_lost: get(Count::LeaseLost),
            released: get(Count::Released),
            refused: get(Count::Refused),
            abandoned: get(Count::Abandoned),
            extended: get(Count::Extended),
            broker_errors: get(Count::BrokerErrors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_count_lands_in_its_own_field() {
        let counters = Counters::default();
        let all = [
            Count::Reserved,
            Count::Completed,
            Count::Retried,
            Count::DeadLettered,
            Count::TimedOut,
            Count::Panicked,
            Count::Overloaded,
            Count::LeaseLost,
            Count::Released,
            Count::Refused,
            Count::Abandoned,
            Count::Extended,
            Count::BrokerErrors,
        ];
        assert_eq!(all.len(), COUNTS);
        for (i, count) in all.into_iter().enumerate() {
            counters.add(count, 1 << i);
        }
        let r = counters.snapshot();
        let fields = [
            r.reserved,
            r.completed,
            r.retried,
            r.dead_lettered,
            r.timed_out,
            r.panicked,
            r.overloaded,
            r.lease_lost,
            r.released,
            r.refused,
            r.abandoned,
            r.extended,
            r.broker_errors,
        ];
        for (i, value) in fields.into_iter().enumerate() {
            assert_eq!(value, 1 << i, "field {i}");
        }
    }
}
