//! `floodway chaos`: the chaos harness (floodway-chaos) from the command line.
//!
//! `floodway chaos run --target embedded --nemesis kill-server --runs 100` carries out seeded
//! runs one after another, prints one line per run and a summary, and exits 1 if any run
//! broke a promise (lost an acknowledged task, acknowledged falsely, or performed an effect
//! twice). `floodway chaos worker` is the worker process the harness starts; it is not meant
//! to be run by hand. docs/chaos.md explains the harness and how to read its output.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use floodway_chaos::worker::WorkerArgs;
use floodway_chaos::{Config, Nemesis, RunReport, Summary, Target};

use crate::exit::bad_input;

/// What `floodway chaos run --help` says after the options.
const HELP: &str = "\
Nemeses: none, kill-server, kill-worker, pause-worker, partition-clients, reset-clients,
slow-clients, slow-close-clients; on Redis targets also kill-redis, pause-redis,
partition-redis, reset-redis and slow-redis (redis-server on PATH, or --redis-server); on the
embedded target also
disk-full (it mounts a small tmpfs, so it needs root); and clock-jump-workers (the workers'
wall clock a day forward or back, with libfaketime: apt-get install faketime).

A run is safe when nothing acknowledged was lost, no answer was a false acknowledgement and no
effect was performed twice; the command exits 1 if any run was not, and keeps that run's
directory (logs, histories, data) under --dir. Each run's seed reproduces it (--seed N --runs 1).

Example (the figures of docs/guarantees.md):
  floodway chaos run --target embedded --nemesis kill-server --runs 100";

/// `floodway chaos`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Carry out seeded runs of one target and nemesis, and check each.
    Run(RunArgs),
    /// The worker process of a run (started by the harness).
    #[command(hide = true)]
    Worker(WorkerProcessArgs),
}

/// `floodway chaos run`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub(crate) struct RunArgs {
    /// The broker behind the server: embedded, redis-always, redis-everysec or redis-no
    /// (Redis with AOF and that appendfsync).
    #[arg(long, default_value = "embedded")]
    target: Target,
    /// The fault to inject.
    #[arg(long, default_value = "kill-server")]
    nemesis: Nemesis,
    /// Runs, one after another, with seeds --seed, --seed + 1, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    runs: u64,
    /// The first run's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tasks per run.
    #[arg(long, default_value_t = 400)]
    tasks: u64,
    /// Enqueues per second, all producers together.
    #[arg(long, default_value_t = 150)]
    rate: u64,
    /// Concurrent producers.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Handler slots per worker.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Longest a handler works before its effect.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    work_max: Duration,
    /// The workers' lease.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    lease: Duration,
    /// One task in N is poison (its handler panics or aborts the worker); 0 for none.
    #[arg(long, default_value_t = 0)]
    poison_every: u64,
    /// Attempts per task before it becomes a dead letter.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Most faults per run.
    #[arg(long, default_value_t = 3)]
    faults: u32,
    /// Longest time between faults.
    #[arg(long, default_value = "600ms", value_parser = parse_duration)]
    fault_interval: Duration,
    /// Longest a fault is held; a hold is drawn from half of it to all of it [default: 400ms;
    /// pauses and partitions past the timeout they trip: pause-worker twice the lease,
    /// pause-redis and partition-redis 11s, partition-clients 5s].
    #[arg(long, value_parser = parse_duration)]
    fault_duration: Option<Duration>,
    /// Bound of each run's producing phase.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    time_limit: Duration,
    /// Where runs keep their files [default: a temporary directory, deleted at the end
    /// unless a run was unsafe].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The redis-server binary for Redis targets.
    #[arg(long, default_value = "redis-server", value_name = "PATH")]
    redis_server: PathBuf,
}

/// `floodway chaos worker`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerProcessArgs {
    #[arg(long)]
    server: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    concurrency: usize,
    #[arg(long)]
    lease_ms: u64,
    #[arg(long)]
    history: PathBuf,
    #[arg(long)]
    downstream: PathBuf,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    floodway_core::duration::parse(text).map_err(|e| e.to_string())
}

/// Runs `floodway chaos`.
pub(crate) async fn run(json: bool, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Worker(args) => floodway_chaos::worker::run(WorkerArgs {
            server: args.server,
            name: args.name,
            concurrency: args.concurrency,
            lease: Duration::from_millis(args.lease_ms),
            history: args.history,
            downstream: args.downstream,
        })
        .await
        .map_err(anyhow::Error::msg),
        Command::Run(args) => run_many(json, args).await,
    }
}

async fn run_many(json: bool, args: RunArgs) -> anyhow::Result<()> {
    let floodway = std::env::current_exe().context("finding the floodway binary")?;
    let temporary = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("making a temporary directory")?),
    };
    let root = match (&args.dir, &temporary) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temporary)) => temporary.path().to_owned(),
        (None, None) => unreachable!("a temporary directory is made when --dir is absent"),
    };
    let mut config = Config::new(floodway, root.clone(), args.target, args.nemesis);
    config.redis_server = args.redis_server;
    config.seed = args.seed;
    config.tasks = args.tasks;
    config.rate = args.rate;
    config.producers = args.producers;
    config.workers = args.workers;
    config.concurrency = args.concurrency;
    config.work_max = args.work_max;
    config.lease = args.lease;
    config.poison_every = args.poison_every;
    config.max_attempts = args.max_attempts;
    config.faults_max = args.faults;
    config.fault_interval = args.fault_interval;
    if let Some(duration) = args.fault_duration {
        config.fault_duration = duration;
    } else if args.nemesis == Nemesis::PauseWorker {
        config.fault_duration = args.lease * 2;
    }
    config.time_limit = args.time_limit;
    config.validate().map_err(bad_input)?;
    if !json {
        println!(
            "{:>6} {:>6} {:>5} {:>5} {:>5} {:>6} {:>5} {:>7} {:>6} {:>8}",
            "seed", "acked", "lost", "false", "dup-e", "dup-d", "dead", "faults", "rec-ms", "time"
        );
    }
    let summary = floodway_chaos::runs(&config, &root, args.runs, |report| {
        if json {
            if let Ok(line) = serde_json::to_string(report) {
                println!("{line}");
            }
        } else {
            print_run(report);
        }
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    if summary.unsafe_runs > 0 {
        if let Some(temporary) = temporary {
            // Keep the evidence.
            let kept = temporary.keep();
            eprintln!("the unsafe runs' files are in {}", kept.display());
        }
        anyhow::bail!(
            "{} of {} runs broke a promise (seeds {:?})",
            summary.unsafe_runs,
            summary.runs,
            summary.unsafe_seeds
        );
    }
    Ok(())
}

fn print_run(report: &RunReport) {
    let v = &report.verdict;
    let recovery = floodway_chaos::checker::quantile(&v.recovery_ms, 0.5)
        .map_or_else(|| "-".to_owned(), |ms| ms.to_string());
    println!(
        "{:>6} {:>6} {:>5} {:>5} {:>5} {:>6} {:>5} {:>7} {:>6} {:>7.1}s",
        report.seed,
        v.acknowledged,
        v.lost,
        v.false_acks,
        v.duplicate_effects,
        v.duplicated_deliveries,
        v.dead_lettered,
        v.faults,
        recovery,
        report.elapsed_ms as f64 / 1000.0
    );
}

fn print_summary(summary: &Summary) {
    let t = &summary.totals;
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
    println!();
    println!(
        "target {}, nemesis {}: {} runs",
        summary.target, summary.nemesis, summary.runs
    );
    println!(
        "  attempted {}, acknowledged {}, failed {}, indeterminate {}, enqueues retried {}",
        t.attempted, t.acknowledged, t.failed, t.indeterminate, t.enqueue_retries
    );
    println!(
        "  completed {}, dead-lettered {} (poison {} of {}, not poison {})",
        t.completed, t.dead_lettered, t.poison_quarantined, t.poison, t.dead_not_poison
    );
    println!(
        "  LOST {}, FALSE ACKS {}, DUPLICATE EFFECTS {}",
        t.lost, t.false_acks, t.duplicate_effects
    );
    println!(
        "  executions {}, duplicated deliveries {}, phantom executions {}, effects applied {}",
        t.executions, t.duplicated_deliveries, t.phantom_executions, t.effects_applied
    );
    println!(
        "  faults {}, recovery p50 {}, p99 {} (of {} measured)",
        t.faults,
        ms(summary.recovery_p50_ms),
        ms(summary.recovery_p99_ms),
        t.recovery_ms.len()
    );
    if !t.redelivery_ms.is_empty() {
        println!(
            "  tasks of faulted workers started elsewhere after p50 {}, p99 {} ({} tasks)",
            ms(summary.redelivery_p50_ms),
            ms(summary.redelivery_p99_ms),
            t.redelivery_ms.len()
        );
    }
    println!(
        "  unsafe runs: {} {:?}",
        summary.unsafe_runs, summary.unsafe_seeds
    );
}
