//! `floodway bench --broker URL`: the workloads on the Redis broker at URL.
//!
//! Each run connects a fresh broker under a key prefix of its own (`floodway-bench-<pid>-<n>`),
//! so runs never see each other's tasks, and deletes that prefix's keys afterwards, so W4's
//! million waiting tasks do not stay in the user's Redis. The broker's maintenance task runs
//! as in production; time is the Redis server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use floodway_redis::{Options, RedisBroker};

use super::{Bench, Run, Workload};

/// The option of `floodway bench` that picks the Redis broker.
#[derive(Debug, clap::Args)]
pub(crate) struct BrokerArgs {
    /// Run on the Redis broker at this URL (redis://host:port, redis+cluster://host:port,...,
    /// redis+sentinel://host:port/service) instead of a temporary embedded broker. Each run
    /// uses a key prefix of its own and deletes it afterwards. --durability does not apply:
    /// Redis's own persistence settings do, and the report names them.
    #[arg(long = "broker", value_name = "URL", conflicts_with = "server")]
    pub(super) url: Option<String>,
}

fn options() -> Options {
    static RUN: AtomicU64 = AtomicU64::new(0);
    Options {
        prefix: format!(
            "floodway-bench-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ),
        ..Options::default()
    }
}

/// The Redis server's persistence, as the report's durability (e.g. `redis aof-always`).
pub(super) async fn persistence(url: &str) -> anyhow::Result<String> {
    let broker = RedisBroker::connect(url, options())
        .await
        .with_context(|| format!("connecting to Redis at {url}"))?;
    let health = broker.health().await;
    let mut kinds: Vec<&str> = health
        .nodes
        .iter()
        .map(|node| node.persistence().as_str())
        .collect();
    kinds.dedup();
    broker.delete_dataset().await?;
    Ok(format!("redis {}", kinds.join("/")))
}

/// One run of `workload` on a fresh prefix.
pub(super) async fn run_once(bench: &Bench, workload: Workload, url: &str) -> anyhow::Result<Run> {
    let broker = Arc::new(
        RedisBroker::connect(url, options())
            .await
            .with_context(|| format!("connecting to Redis at {url}"))?,
    );
    let result = match workload {
        Workload::W1 => bench.drain(&broker, 0).await,
        Workload::W4 => bench.drain(&broker, bench.args.depth).await,
        Workload::W2 => bench.concurrent(&broker).await,
        Workload::W3 => bench.latency(&broker).await,
        Workload::All => unreachable!("expanded into W1..W4"),
    };
    let broker = Arc::try_unwrap(broker)
        .map_err(|_| anyhow::anyhow!("the benchmark still holds the broker after its run"))?;
    broker.delete_dataset().await?;
    result
}
