//! Integration tests of the Redis broker, against real `redis-server` processes that the
//! tests start on free loopback ports (see `server.rs`). One test binary, to keep link time
//! down.

#[cfg(redis_server)]
mod backpressure;
#[cfg(redis_server)]
mod children;
#[cfg(redis_server)]
mod conformance;
#[cfg(redis_server)]
mod faults;
#[cfg(redis_server)]
mod processes;
#[cfg(redis_server)]
mod replication;
#[cfg(redis_server)]
mod safety;
#[cfg(redis_server)]
mod sentinel;
#[cfg(redis_server)]
mod server;
#[cfg(redis_server)]
mod shards;

/// Without `redis-server` on PATH (and outside CI), the tests above are compiled out; this
/// says so in the test output instead of passing silently.
#[cfg(not(redis_server))]
#[test]
fn redis_server_tests_are_skipped() {
    println!(
        "skipping the Redis broker's integration tests: redis-server is not on PATH \
         (install it, e.g. apt-get install redis-server, then touch crates/redis/build.rs)"
    );
}
