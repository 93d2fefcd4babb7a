//! The worker runtime's defaults and limits, in one place.
//!
//! Limits that every part of floodway shares (batch size, lease bounds, the longest reserve
//! wait) live in [`floodway_core::limits`]; this module names only what belongs to the worker:
//! the defaults a [`crate::WorkerBuilder`] starts from and the bounds it checks them against.
//! Relations between them are checked at compile time at the bottom of this file.

use std::time::Duration;

use floodway_core::limits as core;

/// How long each lease lasts unless the builder says otherwise. Heartbeats extend it while the
/// handler runs, so this bounds how long a crashed worker's tasks wait to be redelivered, not
/// how long a task may run.
pub const LEASE_DURATION_DEFAULT: Duration = Duration::from_secs(30);

/// How long one attempt may run before the worker abandons it, unless the kind or the task
/// sets its own timeout.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(5 * 60);

/// Longest timeout a kind may be given; the same bound [`floodway_core::NewTask`] puts on a
/// task's own timeout.
pub const TIMEOUT_MAX: Duration = core::LEASE_DURATION_MAX;

/// How long a reserve call waits for a task when the queue is empty (long poll). It is also
/// how long shutdown may wait for a poll already in flight, so it is kept short.
pub const POLL_WAIT_DEFAULT: Duration = Duration::from_secs(2);

/// Most tasks one reserve call asks for, unless the builder says otherwise. A call never asks
/// for more than the queue has room for either (free handler slots plus free prefetch).
pub const RESERVE_BATCH_MAX_DEFAULT: usize = 100;

/// How long shutdown lets in-flight handlers finish before cancelling them and releasing their
/// tasks.
pub const GRACE_PERIOD_DEFAULT: Duration = Duration::from_secs(30);

/// Longest grace period a worker may be given.
pub const GRACE_PERIOD_MAX: Duration = Duration::from_secs(3600);

/// Most leases one worker holds at once, over all its queues: the sum of their concurrency
/// and prefetch. It bounds the handler tasks, the tasks waiting in memory, the leases a
/// heartbeat round extends, and the completion channel.
pub const INFLIGHT_MAX: usize = 10_000;

/// Most queues one worker serves; each has its own fetch loops.
pub const QUEUES_MAX: usize = 256;

/// Fetch loops per queue, sharing the queue's lease budget. With more than one, a reserve
/// call can start while another waits for the broker to make its leases durable, so
/// reservation keeps up when each call costs a disk sync or a round trip.
pub const FETCH_LANES_PER_QUEUE: usize = 2;

/// A lease is extended once only `1 / EXTEND_WHEN_LEFT_DIVISOR` of it is left (counted from
/// when the worker received it or last extended it), which leaves that much time for the
/// extend call to land: with the default 30s lease, at 20s, with 10s to spare.
pub const EXTEND_WHEN_LEFT_DIVISOR: u32 = 3;

/// The heartbeat loop looks for leases due for extension this many times per lease duration,
/// so an extension happens at most a sixth of the lease after it fell due.
pub const HEARTBEAT_TICKS_PER_LEASE: u32 = 6;

/// Most heartbeat requests ([`crate::WorkerHandle::heartbeat_now`]) that may wait at once.
pub const HEARTBEAT_REQUESTS_MAX: usize = 16;

/// First wait after a broker call failed in a fetch loop or the completer; it doubles on each
/// further failure up to [`BROKER_BACKOFF_MAX`].
pub const BROKER_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// Longest wait between retries of a failed broker call.
pub const BROKER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Most times the completer sends one ack, fail or release batch while the broker is
/// unavailable. After that the settlement is abandoned: the lease expires and the task is
/// redelivered (at-least-once).
pub const SETTLE_ATTEMPTS_MAX: u32 = 8;

/// Longest worker name, the same bound the broker puts on a reserve request's worker field.
pub const WORKER_NAME_LEN_MAX: usize = core::KEY_LEN_MAX;

const _: () = {
    assert!(LEASE_DURATION_DEFAULT.as_millis() >= core::LEASE_DURATION_MIN.as_millis());
    assert!(LEASE_DURATION_DEFAULT.as_millis() <= core::LEASE_DURATION_MAX.as_millis());
    assert!(TIMEOUT_DEFAULT.as_millis() <= TIMEOUT_MAX.as_millis());
    assert!(POLL_WAIT_DEFAULT.as_millis() <= core::RESERVE_WAIT_MAX.as_millis());
    assert!(RESERVE_BATCH_MAX_DEFAULT >= 1 && RESERVE_BATCH_MAX_DEFAULT <= core::BATCH_SIZE_MAX);
    assert!(GRACE_PERIOD_DEFAULT.as_millis() <= GRACE_PERIOD_MAX.as_millis());
    assert!(EXTEND_WHEN_LEFT_DIVISOR >= 2);
    // A tick must come before the part of the lease left at the extension point runs out.
    assert!(HEARTBEAT_TICKS_PER_LEASE > EXTEND_WHEN_LEFT_DIVISOR);
    assert!(BROKER_BACKOFF_INITIAL.as_millis() <= BROKER_BACKOFF_MAX.as_millis());
    assert!(SETTLE_ATTEMPTS_MAX >= 1);
    assert!(INFLIGHT_MAX <= u32::MAX as usize);
};
