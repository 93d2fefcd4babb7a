//! Every limit floodway enforces, in one place.
//!
//! A limit exists so that no input, however large or numerous, can exhaust memory, disk or
//! time. Brokers, the worker and the server read these constants; nothing else defines its own.
//! Relations between limits are checked at compile time at the bottom of this file.

use std::time::Duration;

/// Largest task payload accepted, in bytes. Larger payloads belong in object storage, with a
/// reference in the task.
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// Most tasks in one enqueue, reserve, ack, fail, extend, release or cancel call.
pub const BATCH_SIZE_MAX: usize = 1000;

/// Longest queue name, in bytes.
pub const QUEUE_NAME_LEN_MAX: usize = 128;

/// Longest task kind (handler name), in bytes.
pub const KIND_LEN_MAX: usize = 128;

/// Longest idempotency key or partition key, in bytes.
pub const KEY_LEN_MAX: usize = 256;

/// Most headers on one task.
pub const HEADERS_MAX: usize = 32;

/// Longest header name or value, in bytes.
pub const HEADER_LEN_MAX: usize = 1024;

/// Longest `tracestate` a task carries, in bytes: the W3C recommendation's own limit. A longer
/// one is dropped (the `traceparent` is kept).
pub const TRACESTATE_LEN_MAX: usize = 512;

/// Longest error message kept with a failed attempt, in bytes; longer messages are truncated.
pub const ERROR_LEN_MAX: usize = 4096;

/// Highest task priority; priorities run from 0 (lowest) to this value (highest).
pub const PRIORITY_MAX: u8 = 9;

/// Most attempts a retry policy may allow.
pub const ATTEMPTS_MAX: u32 = 1000;

/// Shortest lease a worker may ask for.
pub const LEASE_DURATION_MIN: Duration = Duration::from_millis(100);

/// Longest lease a worker may ask for; longer tasks extend their lease with heartbeats.
pub const LEASE_DURATION_MAX: Duration = Duration::from_secs(3600);

/// Longest a reserve call may wait for a task to become ready (long poll).
pub const RESERVE_WAIT_MAX: Duration = Duration::from_secs(60);

/// Furthest in the future a task may be scheduled, and the longest retry backoff or TTL.
pub const SCHEDULE_HORIZON_MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// Longest idempotency window a queue may configure.
pub const IDEMPOTENCY_WINDOW_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most queues one broker holds; queues are created on first use, so this bounds a producer
/// that invents queue names.
pub const QUEUES_MAX: usize = 10_000;

/// Most tasks one queue may be configured to hold waiting (its `length_max`).
pub const QUEUE_LENGTH_MAX: u64 = 100_000_000;

/// Most completed tasks a queue may be configured to retain for inspection.
pub const COMPLETED_RETAIN_MAX: u32 = 1_000_000;

/// Most dead letters a queue may be configured to retain.
pub const DEAD_RETAIN_MAX: u64 = 10_000_000;

/// Most tasks one list call returns.
pub const LIST_LIMIT_MAX: usize = 1000;

const _: () = {
    assert!(BATCH_SIZE_MAX >= LIST_LIMIT_MAX);
    assert!(LEASE_DURATION_MIN.as_millis() < LEASE_DURATION_MAX.as_millis());
    assert!(RESERVE_WAIT_MAX.as_millis() <= LEASE_DURATION_MAX.as_millis());
    assert!(ERROR_LEN_MAX < PAYLOAD_BYTES_MAX);
    assert!(COMPLETED_RETAIN_MAX as u64 <= QUEUE_LENGTH_MAX);
    assert!(DEAD_RETAIN_MAX <= QUEUE_LENGTH_MAX);
    // A task's trace context fits in its headers.
    assert!(TRACESTATE_LEN_MAX <= HEADER_LEN_MAX);
    assert!(HEADERS_MAX >= 2);
};

/// The largest concurrency limit a queue or key may set.
pub const CONCURRENCY_MAX: u32 = 1_000_000;

/// Most side-effect results one task may record.
pub const EFFECTS_MAX: usize = 32;

/// Largest side-effect result, in bytes.
pub const EFFECT_RESULT_MAX: usize = 16 * 1024;

/// How many ready tasks a reserve call passes over (held back by their key's rate or
/// concurrency limit) before it stops looking: bounds the work of one call on a queue where
/// the front is full of tasks of limited keys.
pub const LIMITED_SCAN_MAX: usize = 1024;
