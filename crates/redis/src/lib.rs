//! floodway's distributed broker: queues held in Redis (one server, Sentinel or Cluster),
//! shared by any number of floodway processes. The only crate that knows Redis.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use floodway_core::{Broker, NewTask, QueueName};
//! use floodway_redis::{Options, RedisBroker};
//!
//! let broker = RedisBroker::connect("redis://127.0.0.1:6379", Options::default()).await?;
//! broker
//!     .enqueue(&QueueName::new("emails")?, vec![NewTask::new("send_email", "{}")])
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # How tasks are held
//!
//! A queue lives in one *shard*, or in N shards when [`Options::shards`] partitions it; all
//! of a shard's keys share the hash tag `{<queue>#<shard>}`, so a shard is one Cluster slot
//! and every change to it is one Lua script, atomic. In a shard (see `src/lua/common.lua`):
//!
//! - a hash of task records (state, attempt, fence, times, keys, then the body);
//! - sorted sets for what has an order: the ready tasks by (priority, run-at, id), the
//!   scheduled and retrying ones by run-at, active ones by lease expiry, waiting ones with a
//!   time to live by expiry, and every task by id (unfinished, completed, cancelled, and dead
//!   letters per reason) for listing, retention and overflow;
//! - per partition key, its unfinished tasks by id: only the first is reservable;
//! - per limit key, its active tasks and its token bucket;
//! - a stream of dead letters (task, reason, last error) for operators to follow, and a short
//!   stream of wake-up events that waiting reserves in other processes block on.
//!
//! Why sorted sets rather than a stream with a consumer group for the ready tasks, and how
//! time, fences and data loss work: docs/decisions/0011-redis-data-layout.md and
//! 0012-redis-time-fences-and-loss.md.
//!
//! # Backpressure
//!
//! The reservation limits (`QueueConfig::rate_limit`, `concurrency_max` and their per-key
//! forms) and the watermark gate are enforced inside the scripts, with their state in Redis:
//! token buckets and per-key active counts beside the shard's tasks, the gate's side in its
//! metadata. So every process sharing a queue shares its limits, and a crashed worker's
//! concurrency slots come back when its leases are reaped. A partitioned queue enforces its
//! queue-wide limits per shard, divided by the shard count (as it does `length_max`); tasks
//! go to the shard of their partition key, else of their limit key, so the per-key limits are
//! exact for a limit key whose tasks carry no partition key. Side-effect results
//! (`Broker::record_effects`) are kept in the task's record. See
//! docs/decisions/0011-redis-data-layout.md.
//!
//! # Time
//!
//! Leases, schedules and time-to-live are judged on one clock: by default the Redis server's
//! (`TIME` inside every script), never a worker's ([`TimeSource`]).
//!
//! # Safety checks
//!
//! [`RedisBroker::connect`] refuses a Redis that may evict keys, logs what its persistence
//! settings risk, and finds (or makes) floodway's dataset marker; every script checks the
//! marker, so a Redis that restarted empty is reported unavailable, not served as an empty
//! queue ([`RedisBroker::health`], `Broker::ping`).

mod broker;
mod codec;
mod connection;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod health;
pub mod limits;
mod options;
mod registry;
mod scripts;
mod wake;

pub use broker::RedisBroker;
pub use codec::Malformed;
pub use error::ConnectError;
pub use health::{Health, NodeReport, Persistence};
pub use options::{Endpoint, InvalidEndpoint, Options, TimeSource};
