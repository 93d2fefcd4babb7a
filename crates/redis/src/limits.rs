//! The Redis broker's own limits, in one place (the task limits are
//! [`floodway_core::limits`]).

use std::time::Duration;

/// Most shards a queue may be partitioned over: task ids hold the shard in 10 bits.
pub const SHARDS_MAX: u16 = crate::codec::SHARD_MAX + 1;

/// Default for [`crate::Options::housekeeping_batch`]: most tasks one promote or reap step
/// moves in one script call, so Redis is never blocked long by housekeeping.
pub const HOUSEKEEPING_BATCH_DEFAULT: usize = 1000;

/// Most housekeeping steps one `promote` or `reap` call, or one maintenance round, runs per
/// shard; what is left waits for the next call or round.
pub const HOUSEKEEPING_STEPS_MAX: usize = 100;

/// Most unfinished tasks one list script examines when filtering by state, before it hands a
/// cursor back to the client (which then calls again): bounds how long a list blocks Redis.
pub const LIST_EXAMINE_MAX: usize = 5000;

/// Most list script calls per shard for one list call (each examines up to
/// [`LIST_EXAMINE_MAX`] tasks).
pub const LIST_CALLS_MAX: usize = 10_000;

/// Most shards at once that have a task watching for other processes' wake-up events, each
/// on its own connection. Reserves waiting on further shards poll instead.
pub const WATCHERS_MAX: usize = 64;

/// How long one watcher's `XREAD BLOCK` waits before it looks whether anyone still waits.
pub const WATCH_BLOCK: Duration = Duration::from_secs(1);

/// Longest a waiting reserve sleeps before it looks again without having been woken: the
/// safety net for a wake-up event missed while a watcher reconnected.
pub const REPOLL_MAX: Duration = Duration::from_secs(1);

/// Queue names the broker remembers from the registry; it holds at most
/// [`floodway_core::limits::QUEUES_MAX`], so this is the same bound.
pub const QUEUES_MAX: usize = floodway_core::limits::QUEUES_MAX;

/// Queue shards whose completion rate the broker measures (for the Retry-After of an
/// overloaded queue); an enqueue refused on a further shard gets the "unknown rate" hint.
pub const DRAIN_METERS_MAX: usize = QUEUES_MAX;

const _: () = {
    assert!(floodway_core::limits::QUEUES_MAX <= u16::MAX as usize);
    assert!(
        floodway_core::limits::PRIORITY_MAX == 9,
        "the scripts hard-code 9"
    );
    assert!(
        floodway_core::limits::LIMITED_SCAN_MAX == 1024,
        "reserve.lua hard-codes 1024"
    );
    assert!(HOUSEKEEPING_BATCH_DEFAULT >= 1);
    assert!(WATCH_BLOCK.as_millis() < REPOLL_MAX.as_millis() * 10);
};
