//! floodway's chaos harness, modelled on Jepsen: producers and worker processes run against a
//! real `floodway serve` (on the embedded broker, or on a Redis the harness starts) while a
//! *nemesis* injects faults (killing and pausing processes, breaking links); afterwards a
//! *checker* compares what every producer was told with what the broker holds and what the
//! workers did.
//!
//! - [`config`]: what a run does ([`Config`], [`Target`], [`Nemesis`]).
//! - [`process`]: the real processes, started, signalled and restarted on loopback.
//! - [`proxy`]: the TCP fault proxy placed on a link for the network nemeses.
//! - [`worker`]: the worker process (`floodway chaos worker`), whose handler records each
//!   execution and performs one effect per task through the idempotency helper.
//! - [`history`]: what is recorded; [`checker`]: what it means (lost, duplicated, falsely
//!   acknowledged, recovery time).
//! - [`run()`] carries out one run; [`runs`] many, seeded one after another, into a
//!   [`Summary`].
//!
//! Every run is seeded and bounded in count and time ([`limits`]); all traffic stays on
//! loopback. docs/chaos.md explains how to run it and read it; docs/guarantees.md publishes
//! the figures.

pub mod checker;
pub mod config;
pub mod history;
pub mod limits;
pub mod process;
pub mod proxy;
pub mod run;
pub mod worker;

use std::path::Path;

use serde::Serialize;

pub use checker::Verdict;
pub use config::{Appendfsync, Config, Nemesis, Target};
pub use run::{ChaosError, RunReport, run};

/// The totals of many runs of one configuration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// The broker under test.
    pub target: String,
    /// The nemesis.
    pub nemesis: String,
    /// Runs carried out.
    pub runs: u64,
    /// Runs that broke a promise (lost, false acknowledgement or duplicate effect).
    pub unsafe_runs: u64,
    /// Seeds of those runs, to reproduce them.
    pub unsafe_seeds: Vec<u64>,
    /// Sums over the runs.
    pub totals: Verdict,
    /// Recovery time over every fault of every run: median, in milliseconds.
    pub recovery_p50_ms: Option<u64>,
    /// 99th percentile.
    pub recovery_p99_ms: Option<u64>,
    /// Worker faults: how long the faulted worker's tasks took to start elsewhere, median.
    pub redelivery_p50_ms: Option<u64>,
    /// 99th percentile.
    pub redelivery_p99_ms: Option<u64>,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, report: &RunReport) {
        let v = &report.verdict;
        self.target.clone_from(&report.target);
        self.nemesis.clone_from(&report.nemesis);
        self.runs += 1;
        if !v.safe() {
            self.unsafe_runs += 1;
            self.unsafe_seeds.push(report.seed);
        }
        let t = &mut self.totals;
        t.attempted += v.attempted;
        t.acknowledged += v.acknowledged;
        t.failed += v.failed;
        t.indeterminate += v.indeterminate;
        t.enqueue_retries += v.enqueue_retries;
        t.completed += v.completed;
        t.dead_lettered += v.dead_lettered;
        t.poison += v.poison;
        t.poison_quarantined += v.poison_quarantined;
        t.dead_not_poison += v.dead_not_poison;
        t.lost += v.lost;
        t.false_acks += v.false_acks;
        t.executions += v.executions;
        t.duplicated_deliveries += v.duplicated_deliveries;
        t.duplicate_effects += v.duplicate_effects;
        t.effects_applied += v.effects_applied;
        t.phantom_executions += v.phantom_executions;
        t.faults += v.faults;
        t.recovery_ms.extend(v.recovery_ms.iter().copied());
        t.unmeasured_recoveries += v.unmeasured_recoveries;
        t.redelivery_ms.extend(v.redelivery_ms.iter().copied());
        self.redelivery_p50_ms = checker::quantile(&t.redelivery_ms, 0.50);
        self.redelivery_p99_ms = checker::quantile(&t.redelivery_ms, 0.99);
        self.recovery_p50_ms = checker::quantile(&t.recovery_ms, 0.50);
        self.recovery_p99_ms = checker::quantile(&t.recovery_ms, 0.99);
    }
}

/// Carries out `count` runs of `base`, seeds `base.seed`, `base.seed + 1`, ..., each in its own
/// directory under `root`; calls `each` after every run. The directory of a safe run is
/// deleted; an unsafe run's is kept for inspection.
pub async fn runs(
    base: &Config,
    root: &Path,
    count: u64,
    mut each: impl FnMut(&RunReport),
) -> Result<Summary, ChaosError> {
    if count == 0 || count > limits::RUNS_MAX {
        return Err(ChaosError::Config(format!(
            "runs must be 1 to {}, not {count}",
            limits::RUNS_MAX
        )));
    }
    let mut summary = Summary::default();
    for n in 0..count {
        let mut config = base.clone();
        config.seed = base.seed.wrapping_add(n);
        config.dir = run::run_dir(root, config.seed);
        let report = run(&config).await?;
        each(&report);
        summary.add(&report);
        if report.verdict.safe() {
            let _ = std::fs::remove_dir_all(&config.dir);
        }
    }
    Ok(summary)
}
