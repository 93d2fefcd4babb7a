//! The chaos harness's fast tier (issue 7): every nemesis a few times, on the embedded broker
//! and on Redis with `appendfsync always`, each run checked for lost tasks, false
//! acknowledgements and duplicate effects. The runs are the harness's (floodway-chaos) with
//! the real `floodway` binary: a real `floodway serve`, real worker processes, real signals.
//!
//! Each test also checks that its nemesis acted (faults injected, processes restarted), so a
//! test cannot pass with the fault missing. The long soaks behind docs/guarantees.md run the
//! same code with `floodway chaos run --runs 100`.

use std::path::PathBuf;

use floodway_chaos::{Appendfsync, Config, Nemesis, RunReport, Summary, Target};

use crate::BIN;

/// Runs `count` seeded runs of `nemesis` on `target`, adjusted by `tune`, and checks that
/// every one kept the promises. Returns the summary and each run's report.
fn fast_tier(
    target: Target,
    nemesis: Nemesis,
    count: u64,
    tune: impl FnOnce(&mut Config),
) -> (Summary, Vec<RunReport>) {
    let root = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::new(PathBuf::from(BIN), root.path().to_owned(), target, nemesis);
    // A seed per nemesis, so each test explores its own fault times.
    config.seed = 1_000 + nemesis as u64 * 100;
    config.tasks = 300;
    config.rate = 120;
    if matches!(
        nemesis,
        Nemesis::PauseWorker
            | Nemesis::PauseRedis
            | Nemesis::PartitionRedis
            | Nemesis::PartitionClients
    ) {
        // Held past a timeout (Config::new): one per run keeps the tier quick.
        config.faults_max = 1;
    }
    tune(&mut config);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut reports = Vec::new();
    let summary = runtime
        .block_on(floodway_chaos::runs(
            &config,
            root.path(),
            count,
            |report| reports.push(report.clone()),
        ))
        .unwrap_or_else(|error| panic!("{target} / {nemesis}: the harness failed: {error}"));
    let totals = &summary.totals;
    let kept = root.keep();
    assert_eq!(
        (totals.lost, totals.false_acks, totals.duplicate_effects),
        (0, 0, 0),
        "{target} / {nemesis}: a promise broke (lost, false acks, duplicate effects); seeds {:?}; \
         the runs' files are in {}: {summary:#?}",
        summary.unsafe_seeds,
        kept.display()
    );
    let _ = std::fs::remove_dir_all(&kept);
    assert_eq!(summary.runs, count);
    assert!(totals.acknowledged > 0, "{summary:#?}");
    assert_eq!(
        totals.completed + totals.dead_lettered,
        totals.acknowledged,
        "every acknowledged task finished: {summary:#?}"
    );
    if nemesis != Nemesis::None {
        for report in &reports {
            assert!(
                report.verdict.faults >= 1,
                "{target} / {nemesis} seed {}: no fault was injected: {report:#?}",
                report.seed
            );
        }
    }
    (summary, reports)
}

/// True when the Redis tier can run here; in CI it must (the test fails instead of skipping).
fn redis_available() -> bool {
    let found = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed, and CI must run the Redis chaos tier"
        );
        eprintln!("skipped: redis-server is not on PATH (apt-get install redis-server)");
    }
    found
}

const ALWAYS: Target = Target::Redis(Appendfsync::Always);

fn fault_names(reports: &[RunReport]) -> Vec<String> {
    reports
        .iter()
        .flat_map(|r| r.faults.iter().map(|f| f.what.clone()))
        .collect()
}

#[test]
fn embedded_kill_server() {
    let (summary, reports) = fast_tier(Target::Embedded, Nemesis::KillServer, 3, |_| {});
    for report in &reports {
        assert_eq!(
            u64::from(report.server_starts),
            report.verdict.faults + 1,
            "the server was restarted after every kill: {report:#?}"
        );
    }
    assert!(summary.recovery_p50_ms.is_some(), "{summary:#?}");
}

#[test]
fn embedded_kill_worker() {
    let (_, reports) = fast_tier(Target::Embedded, Nemesis::KillWorker, 3, |_| {});
    for report in &reports {
        assert_eq!(
            u64::from(report.worker_starts),
            2 + report.verdict.faults,
            "a new worker replaced every one killed: {report:#?}"
        );
    }
}

#[test]
fn embedded_pause_worker_past_its_lease() {
    let (_, reports) = fast_tier(Target::Embedded, Nemesis::PauseWorker, 2, |_| {});
    assert!(
        fault_names(&reports)
            .iter()
            .all(|f| f.starts_with("pause-worker")),
        "{reports:#?}"
    );
    for report in &reports {
        let fault = &report.faults[0];
        assert!(
            fault.healed_ms - fault.start_ms >= 1_000,
            "the pause outlasted the 1 s lease: {fault:?}"
        );
    }
}

#[test]
fn embedded_network_faults_between_clients_and_server() {
    for nemesis in [
        Nemesis::PartitionClients,
        Nemesis::ResetClients,
        Nemesis::SlowClients,
        Nemesis::SlowCloseClients,
    ] {
        let (summary, reports) = fast_tier(Target::Embedded, nemesis, 2, |_| {});
        assert!(
            fault_names(&reports).iter().all(|f| f == nemesis.as_str()),
            "{reports:#?}"
        );
        if nemesis == Nemesis::PartitionClients {
            assert!(
                summary.totals.enqueue_retries > 0,
                "a partition past the clients' timeout made enqueues time out: {summary:#?}"
            );
        }
    }
}

#[test]
fn embedded_poison_tasks_are_quarantined_while_the_rest_flows() {
    let (summary, _) = fast_tier(Target::Embedded, Nemesis::None, 1, |config| {
        config.poison_every = 30;
        config.max_attempts = 5;
    });
    let t = &summary.totals;
    assert_eq!(t.poison, 10, "{summary:#?}");
    assert_eq!(
        t.poison_quarantined, t.poison,
        "every poison task ended dead: {summary:#?}"
    );
    assert!(
        t.completed >= t.acknowledged - t.poison - t.dead_not_poison
            && t.completed > t.acknowledged / 2,
        "the other tasks completed: {summary:#?}"
    );
}

/// The data directory on a small tmpfs, filled and freed: needs root to mount (CI runs as
/// root; elsewhere the test says why it skipped).
#[test]
fn embedded_disk_full() {
    let probe = tempfile::tempdir().expect("a temporary directory");
    if let Err(reason) = floodway_chaos::process::Tmpfs::mount(probe.path(), 1) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the disk-full tier: {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let (summary, _) = fast_tier(Target::Embedded, Nemesis::DiskFull, 2, |_| {});
    assert!(
        summary.totals.enqueue_retries > 0,
        "a full disk refused some enqueues (retried until space returned): {summary:#?}"
    );
}

/// The workers' wall clock a day forward or back (libfaketime), their monotonic clock left
/// alone: leases are judged on the broker's clock, so nothing may break.
#[test]
fn embedded_clock_jumps_for_workers() {
    if floodway_chaos::process::libfaketime().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs libfaketime (apt-get install faketime)"
        );
        eprintln!("skipped: libfaketime is not installed (apt-get install faketime)");
        return;
    }
    let (_, reports) = fast_tier(Target::Embedded, Nemesis::ClockJumpWorkers, 2, |_| {});
    assert!(
        fault_names(&reports)
            .iter()
            .all(|f| f == "clock-jump-workers +1d" || f == "clock-jump-workers -1d"),
        "{reports:#?}"
    );
}

#[test]
fn redis_always_kill_and_pause_redis() {
    if !redis_available() {
        return;
    }
    fast_tier(ALWAYS, Nemesis::KillRedis, 3, |_| {});
    let (summary, _) = fast_tier(ALWAYS, Nemesis::PauseRedis, 2, |_| {});
    assert!(
        summary.totals.enqueue_retries > 0,
        "a pause past the Redis timeout made enqueues fail and be retried: {summary:#?}"
    );
}

#[test]
fn redis_always_partition_between_server_and_redis() {
    if !redis_available() {
        return;
    }
    let (summary, _) = fast_tier(ALWAYS, Nemesis::PartitionRedis, 2, |_| {});
    assert!(
        summary.totals.enqueue_retries > 0,
        "a partition past the Redis timeout made enqueues fail and be retried: {summary:#?}"
    );
}

#[test]
fn redis_always_reset_and_slow_link_between_server_and_redis() {
    if !redis_available() {
        return;
    }
    for nemesis in [Nemesis::ResetRedis, Nemesis::SlowRedis] {
        let (_, reports) = fast_tier(ALWAYS, nemesis, 2, |_| {});
        assert!(
            fault_names(&reports).iter().all(|f| f == nemesis.as_str()),
            "{reports:#?}"
        );
    }
}

#[test]
fn redis_always_kill_server_and_workers() {
    if !redis_available() {
        return;
    }
    let (_, reports) = fast_tier(ALWAYS, Nemesis::KillServer, 2, |_| {});
    assert!(reports.iter().all(|r| r.server_starts >= 2), "{reports:#?}");
    fast_tier(ALWAYS, Nemesis::KillWorker, 2, |_| {});
}

/// A bad configuration is refused before anything starts, naming the problem.
#[test]
fn a_redis_nemesis_on_the_embedded_broker_is_refused() {
    let output = std::process::Command::new(BIN)
        .args([
            "chaos",
            "run",
            "--target",
            "embedded",
            "--nemesis",
            "kill-redis",
        ])
        .output()
        .expect("floodway runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs a Redis target"), "{stderr}");
}

/// `floodway chaos run --json` prints one JSON line per run and the summary last.
#[test]
fn the_command_reports_each_run_and_a_summary() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = std::process::Command::new(BIN)
        .args([
            "--json",
            "chaos",
            "run",
            "--nemesis",
            "kill-server",
            "--runs",
            "2",
        ])
        .args(["--tasks", "120", "--rate", "100", "--faults", "1", "--dir"])
        .arg(dir.path())
        .output()
        .expect("floodway runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["seed"], 1);
    assert_eq!(lines[1]["seed"], 2);
    assert_eq!(lines[1]["verdict"]["faults"], 1);
    assert_eq!(lines[2]["runs"], 2);
    assert_eq!(lines[2]["totals"]["acknowledged"], 240);
    assert_eq!(lines[2]["totals"]["lost"], 0);
    // Safe runs leave nothing behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
