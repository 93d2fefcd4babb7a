//! The harness's own bounds: every run is bounded in count and time.

use std::time::Duration;

/// Most concurrent producers in one run.
pub const PRODUCERS_MAX: u64 = 64;
/// Most worker processes in one run.
pub const WORKERS_MAX: u64 = 16;
/// Most handler slots per worker process.
pub const CONCURRENCY_MAX: u64 = 256;
/// Most tasks in one run.
pub const TASKS_MAX: u64 = 1_000_000;
/// Most enqueues per second in one run.
pub const RATE_MAX: u64 = 100_000;
/// Most faults in one run.
pub const FAULTS_MAX: u64 = 1_000;
/// Longest time limit and drain limit of one run.
pub const TIME_LIMIT_MAX: Duration = Duration::from_secs(3_600);
/// Most runs of one `floodway chaos` invocation.
pub const RUNS_MAX: u64 = 10_000;
/// How long a process (server, Redis) may take to say it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one enqueue may go on being retried (same idempotency key) before the producer
/// gives it up as indeterminate.
pub const ENQUEUE_RETRY_LIMIT: Duration = Duration::from_secs(20);
/// The client's timeout per request: short, so a blackholed request is given up (and
/// retried) quickly.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Concurrent reads of task states when the run is checked.
pub const CHECK_CONCURRENCY: usize = 16;
/// The size of the tmpfs the disk-full nemesis fills, in MiB: room for a run's log and
/// snapshots many times over, small enough to fill in a moment.
pub const DISK_MIB: u64 = 32;
