//! The Lua scripts, one per operation, each with `lua/common.lua` in front. Every change of a
//! task runs inside one of them, so it is atomic: Redis runs a script to the end before any
//! other command. `redis::Script` sends `EVALSHA` and loads the script on `NOSCRIPT` (after a
//! restart, on a new Cluster node).

use std::sync::LazyLock;

use redis::Script;

macro_rules! shard_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// Every script, compiled (hashed) once.
pub(crate) struct Scripts {
    pub create: Script,
    pub enqueue: Script,
    pub reserve: Script,
    pub ack: Script,
    pub fail: Script,
    pub extend: Script,
    pub effects: Script,
    pub release: Script,
    pub cancel: Script,
    pub replay: Script,
    pub purge: Script,
    pub dead: Script,
    pub list: Script,
    pub stats: Script,
    pub configure: Script,
    pub pause: Script,
    pub housekeeping: Script,
    pub get: Script,
    pub registry: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    create: shard_script!("create.lua"),
    enqueue: shard_script!("enqueue.lua"),
    reserve: shard_script!("reserve.lua"),
    ack: shard_script!("ack.lua"),
    fail: shard_script!("fail.lua"),
    extend: shard_script!("extend.lua"),
    effects: shard_script!("effects.lua"),
    release: shard_script!("release.lua"),
    cancel: shard_script!("cancel.lua"),
    replay: shard_script!("replay.lua"),
    purge: shard_script!("purge.lua"),
    dead: shard_script!("dead.lua"),
    list: shard_script!("list.lua"),
    stats: shard_script!("stats.lua"),
    configure: shard_script!("configure.lua"),
    pause: shard_script!("pause.lua"),
    housekeeping: shard_script!("housekeeping.lua"),
    get: shard_script!("get.lua"),
    registry: Script::new(include_str!("lua/registry.lua")),
});

#[cfg(test)]
mod tests {
    /// The start latency buckets of the Lua scripts are those of the core type, so the Redis
    /// broker's histograms add up with every other broker's.
    #[test]
    fn lua_start_latency_bounds_are_the_core_bounds() {
        let common = include_str!("lua/common.lua");
        let table = common
            .split("local START_LATENCY_BOUNDS_MS = {")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .expect("common.lua declares START_LATENCY_BOUNDS_MS");
        let lua: Vec<u64> = table
            .split(',')
            .map(|n| n.trim().parse().expect("a whole number of ms"))
            .collect();
        let core: Vec<u64> = floodway_core::LatencyHistogram::BOUNDS
            .iter()
            .map(|bound| bound.as_millis() as u64)
            .collect();
        assert_eq!(lua, core);
    }
}
