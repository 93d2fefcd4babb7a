//! Tells the tests whether a real `redis-server` can be started here.
//!
//! The Redis broker is tested against real servers only. When `redis-server` is not on `PATH`
//! the integration tests that need it are compiled out and one test says why, except in CI
//! (`CI=true`), where they are always compiled so that a missing server fails the run. After
//! installing Redis, `touch crates/redis/build.rs` (or change `PATH`) to compile them in.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(redis_server)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(path) = &found {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    if found.is_some() || ci {
        println!("cargo::rustc-cfg=redis_server");
    }
}
