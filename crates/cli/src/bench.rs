//! `floodway bench`: the standard workloads of shared/bench/WORKLOADS.md on the embedded broker.
//!
//! Every run opens a fresh broker in a temporary directory and drives it through the real
//! worker runtime with no-op handlers and ~100-byte JSON payloads, so the figures are what an
//! application would see, not the broker's raw speed. Each workload runs `--runs` times
//! (default 3) and reports the median with min and max. Every loop is bounded: by task count,
//! and by `--timeout` per run.
//!
//! - W1 drain: enqueue N tasks in batches, then start the worker and time until all are
//!   completed (acks durable). Reports enqueue and drain rates.
//! - W2 concurrent: the worker is started, then producers enqueue N tasks; end-to-end rate
//!   from the first enqueue to the last completion.
//! - W3 latency: the worker waits; one producer enqueues single tasks at a fixed rate
//!   (default 2,000/s for 10 s, open loop); enqueue-to-handler-start latency percentiles.
//! - W4 depth: W1's drain with `--depth` tasks (default 1,000,000) already waiting in another
//!   queue of the same broker, and its ratio to W1's drain measured in the same invocation.
//!
//! With `--server URL`, W1 and W2 run through a `floodway serve` over HTTP instead (module
//! `http`). With `--broker URL`, every workload runs on the Redis broker at that URL instead
//! of a temporary embedded broker (module `redis`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::{Args, ValueEnum};
use floodway_core::{Broker, NewTask, QueueName, limits};
use floodway_embedded::{Durability, EmbeddedBroker, Options};
use floodway_worker::{Outcome, TaskContext, Worker, WorkerHandle};
use serde::Serialize;

mod http;
mod redis;

/// Options of `floodway bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which workload to run; `all` runs W1 to W4.
    #[arg(long, value_enum, default_value = "all")]
    workload: Workload,
    /// Runs per workload; the median is reported with min and max.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Tasks per run of W1, W2 and W4.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    tasks: u64,
    /// Tasks already waiting in another queue for W4.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
    depth: u64,
    /// W3's arrival rate, tasks per second.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// W3's duration.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Producers enqueuing concurrently (W1, W2, W4).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    producers: u32,
    /// Tasks per enqueue call in W2 (W1 and W4 preload with the largest batch allowed).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    /// Handler slots of the worker.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Most tasks one reserve call asks for.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reserve_batch: u32,
    /// Where the temporary data directories go (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Longest a single run may take before the benchmark gives up.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    remote: http::RemoteArgs,
    #[command(flatten)]
    broker: redis::BrokerArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    floodway_core::duration::parse(text).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    #[value(name = "W1", alias = "w1")]
    W1,
    #[value(name = "W2", alias = "w2")]
    W2,
    #[value(name = "W3", alias = "w3")]
    W3,
    #[value(name = "W4", alias = "w4")]
    W4,
    #[value(name = "all")]
    All,
}

/// One workload's figures over all its runs.
#[derive(Debug, Serialize)]
struct Report {
    workload: &'static str,
    backend: &'static str,
    durability: String,
    runs: u32,
    tasks: u64,
    /// Median throughput: drain (W1, W4), end to end (W2), completions per second (W3).
    tasks_per_s: f64,
    tasks_per_s_min: f64,
    tasks_per_s_max: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    enqueue_tasks_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depth: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_w1: Option<f64>,
    producers: u32,
    enqueue_batch: u32,
    concurrency: u32,
    reserve_batch: u32,
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    tasks_per_s: f64,
    enqueue_tasks_per_s: Option<f64>,
    latency_ms: Option<[f64; 3]>,
}

/// Runs the benchmark and prints its reports (one JSON object per line with `json`).
pub(crate) async fn run(args: BenchArgs, durability: Durability, json: bool) -> anyhow::Result<()> {
    if let Some(server) = args.remote.server.clone() {
        return http::run(&args, &server, json).await;
    }
    let workloads = match args.workload {
        Workload::All => vec![Workload::W1, Workload::W2, Workload::W3, Workload::W4],
        one => vec![one],
    };
    let (backend, durability_label) = match &args.broker.url {
        Some(url) => ("redis", redis::persistence(url).await?),
        None => ("embedded", durability.to_string()),
    };
    let bench = Bench {
        args,
        durability,
        backend,
        durability_label,
    };
    let mut reports: Vec<Report> = Vec::new();
    let mut w1_drain: Option<f64> = None;
    for workload in workloads {
        // W4 is a ratio to W1's drain, so W1 runs first when it was not asked for.
        if workload == Workload::W4 && w1_drain.is_none() {
            let baseline = bench.workload(Workload::W1).await?;
            w1_drain = Some(baseline.tasks_per_s);
            reports.push(baseline);
        }
        let mut report = bench.workload(workload).await?;
        match workload {
            Workload::W1 => w1_drain = Some(report.tasks_per_s),
            Workload::W4 => report.ratio_to_w1 = w1_drain.map(|w1| report.tasks_per_s / w1),
            _ => {}
        }
        if json {
            println!("{}", serde_json::to_string(&report)?);
        }
        reports.push(report);
    }
    if !json {
        print_table(&reports);
    }
    Ok(())
}

struct Bench {
    args: BenchArgs,
    durability: Durability,
    /// `embedded` or `redis`.
    backend: &'static str,
    /// The embedded durability, or the Redis server's persistence.
    durability_label: String,
}

impl Bench {
    async fn workload(&self, workload: Workload) -> anyhow::Result<Report> {
        let args = &self.args;
        let mut runs = Vec::new();
        for run in 1..=args.runs {
            eprintln!("{workload:?} run {run}/{} ...", args.runs);
            let measured = tokio::time::timeout(args.timeout, self.run_once(workload))
                .await
                .with_context(|| format!("{workload:?} run {run} took longer than --timeout"))??;
            eprintln!(
                "{workload:?} run {run}: {:.0} tasks/s",
                measured.tasks_per_s
            );
            runs.push(measured);
        }
        let (median, min, max) = spread(runs.iter().map(|r| r.tasks_per_s));
        let enqueue = runs
            .iter()
            .filter_map(|r| r.enqueue_tasks_per_s)
            .collect::<Vec<_>>();
        let latency = |i: usize| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.latency_ms.map(|l| l[i]))
                .collect();
            (!values.is_empty()).then(|| spread(values.into_iter()).0)
        };
        Ok(Report {
            workload: match workload {
                Workload::W1 => "W1",
                Workload::W2 => "W2",
                Workload::W3 => "W3",
                Workload::W4 | Workload::All => "W4",
            },
            backend: self.backend,
            durability: self.durability_label.clone(),
            runs: args.runs,
            tasks: match workload {
                Workload::W3 => args.rate * args.duration.as_secs().max(1),
                _ => args.tasks,
            },
            tasks_per_s: median,
            tasks_per_s_min: min,
            tasks_per_s_max: max,
            enqueue_tasks_per_s: (!enqueue.is_empty()).then(|| spread(enqueue.into_iter()).0),
            p50_ms: latency(0),
            p99_ms: latency(1),
            max_ms: latency(2),
            depth: (workload == Workload::W4).then_some(args.depth),
            ratio_to_w1: None,
            producers: if workload == Workload::W3 {
                1
            } else {
                args.producers
            },
            enqueue_batch: match workload {
                Workload::W1 | Workload::W4 => limits::BATCH_SIZE_MAX as u32,
                Workload::W2 => args.batch,
                Workload::W3 | Workload::All => 1,
            },
            concurrency: args.concurrency,
            reserve_batch: args.reserve_batch,
        })
    }

    async fn run_once(&self, workload: Workload) -> anyhow::Result<Run> {
        if let Some(url) = &self.args.broker.url {
            return redis::run_once(self, workload, url).await;
        }
        let base = self.args.dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("floodway-bench-")
            .tempdir_in(&base)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        let broker = Arc::new(EmbeddedBroker::open(
            dir.path(),
            Options {
                durability: self.durability,
                ..Options::default()
            },
        )?);
        let result = match workload {
            Workload::W1 => self.drain(&broker, 0).await,
            Workload::W4 => self.drain(&broker, self.args.depth).await,
            Workload::W2 => self.concurrent(&broker).await,
            Workload::W3 => self.latency(&broker).await,
            Workload::All => unreachable!("expanded into W1..W4"),
        };
        broker.close().await;
        result
    }

    /// W1 (depth 0) and W4: enqueue everything, then drain it.
    async fn drain<B: Broker>(&self, broker: &Arc<B>, depth: u64) -> anyhow::Result<Run> {
        if depth > 0 {
            let started = Instant::now();
            let waiting = queue("bench-depth");
            enqueue_all(
                broker,
                &waiting,
                depth,
                limits::BATCH_SIZE_MAX,
                self.args.producers,
            )
            .await?;
            eprintln!(
                "  {depth} tasks waiting in {waiting} after {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        let queue = queue("bench");
        let started = Instant::now();
        enqueue_all(
            broker,
            &queue,
            self.args.tasks,
            limits::BATCH_SIZE_MAX,
            self.args.producers,
        )
        .await?;
        let enqueue_elapsed = started.elapsed();

        let (worker, handle) = self.worker(broker, &queue, None)?;
        let started = Instant::now();
        let running = tokio::spawn(worker.run(std::future::pending()));
        wait_completed(&handle, self.args.tasks).await?;
        let drain_elapsed = started.elapsed();
        handle.shutdown();
        running.await?;
        check_drained(broker, &queue, self.args.tasks).await?;
        Ok(Run {
            tasks_per_s: self.args.tasks as f64 / drain_elapsed.as_secs_f64(),
            enqueue_tasks_per_s: Some(self.args.tasks as f64 / enqueue_elapsed.as_secs_f64()),
            latency_ms: None,
        })
    }

    /// W2: producers and the worker at the same time.
    async fn concurrent<B: Broker>(&self, broker: &Arc<B>) -> anyhow::Result<Run> {
        let queue = queue("bench");
        let (worker, handle) = self.worker(broker, &queue, None)?;
        let running = tokio::spawn(worker.run(std::future::pending()));
        let started = Instant::now();
        enqueue_all(
            broker,
            &queue,
            self.args.tasks,
            self.args.batch as usize,
            self.args.producers,
        )
        .await?;
        wait_completed(&handle, self.args.tasks).await?;
        let elapsed = started.elapsed();
        handle.shutdown();
        running.await?;
        check_drained(broker, &queue, self.args.tasks).await?;
        Ok(Run {
            tasks_per_s: self.args.tasks as f64 / elapsed.as_secs_f64(),
            ..Run::default()
        })
    }

    /// W3: a fixed arrival rate with the worker waiting; latency from enqueue to handler start.
    async fn latency<B: Broker>(&self, broker: &Arc<B>) -> anyhow::Result<Run> {
        let queue = queue("bench");
        let total = self.args.rate * self.args.duration.as_secs().max(1);
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
        let (worker, handle) = self.worker(broker, &queue, Some(latencies.clone()))?;
        let running = tokio::spawn(worker.run(std::future::pending()));

        // Open loop: each task is sent at its scheduled time whether or not earlier enqueues
        // have returned, so a slow broker shows up as latency, not as a lower arrival rate.
        let interval = Duration::from_secs_f64(1.0 / self.args.rate as f64);
        let started = tokio::time::Instant::now();
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..total {
            tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
            let broker = broker.clone();
            let queue = queue.clone();
            sends.spawn(async move {
                let task = NewTask::new("noop", payload(i, now_micros()));
                broker.enqueue(&queue, vec![task]).await
            });
            while let Some(done) = sends.try_join_next() {
                done??;
            }
        }
        while let Some(done) = sends.join_next().await {
            done??;
        }
        wait_completed(&handle, total).await?;
        let elapsed = started.elapsed();
        handle.shutdown();
        running.await?;
        check_drained(broker, &queue, total).await?;

        let mut latencies = std::mem::take(&mut *latencies.lock().expect("latency lock"));
        ensure!(
            latencies.len() as u64 == total,
            "every task's start was recorded"
        );
        latencies.sort_unstable();
        let at =
            |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        Ok(Run {
            tasks_per_s: total as f64 / elapsed.as_secs_f64(),
            enqueue_tasks_per_s: None,
            latency_ms: Some([at(0.50), at(0.99), at(1.0)]),
        })
    }

    /// A worker on `queue` with a no-op handler; with `latencies`, the handler records each
    /// task's enqueue-to-start latency in microseconds.
    fn worker<B: Broker>(
        &self,
        broker: &Arc<B>,
        queue: &QueueName,
        latencies: Option<Arc<Mutex<Vec<u64>>>>,
    ) -> anyhow::Result<(Worker<B>, WorkerHandle)> {
        let builder = Worker::builder(broker.clone())
            .name("bench")
            .queue(queue.as_str(), self.args.concurrency as usize)
            .reserve_batch_max(self.args.reserve_batch as usize)
            .poll_wait(Duration::from_millis(100));
        let builder = match latencies {
            None => builder.raw_handler("noop", |_ctx: TaskContext, _payload: Vec<u8>| async {
                Outcome::Complete
            }),
            Some(latencies) => {
                builder.handler("noop", move |_ctx: TaskContext, task: BenchPayload| {
                    let latency = now_micros().saturating_sub(task.enqueued_us);
                    latencies.lock().expect("latency lock").push(latency);
                    async { Outcome::Complete }
                })
            }
        };
        let worker = builder.build()?;
        let handle = worker.handle();
        Ok((worker, handle))
    }
}

/// The benchmark payload: ~100 bytes of JSON carrying the producer's clock.
#[derive(serde::Deserialize)]
struct BenchPayload {
    enqueued_us: u64,
}

fn payload(sequence: u64, enqueued_us: u64) -> Vec<u8> {
    format!(
        r#"{{"enqueued_us":{enqueued_us},"sequence":{sequence:>10},"order":"ord_4f1c2e9a","amount_cents":1999}}"#
    )
    .into_bytes()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn queue(name: &str) -> QueueName {
    QueueName::new(name).expect("benchmark queue names are valid")
}

/// Enqueues `total` tasks into `queue` from `producers` concurrent producers in `batch`-sized
/// calls.
async fn enqueue_all<B: Broker>(
    broker: &Arc<B>,
    queue: &QueueName,
    total: u64,
    batch: usize,
    producers: u32,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let progress = crate::output::progress(crate::output::Progress::Bar, total, "enqueued");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..producers {
        let broker = broker.clone();
        let queue = queue.clone();
        let next = next.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            loop {
                let start = next.fetch_add(batch as u64, Ordering::Relaxed);
                if start >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let end = (start + batch as u64).min(total);
                let now = now_micros();
                let tasks = (start..end)
                    .map(|i| NewTask::new("noop", payload(i, now)))
                    .collect();
                broker.enqueue(&queue, tasks).await?;
                progress.inc(end - start);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    progress.finish_and_clear();
    Ok(())
}

/// Waits until the worker has completed `total` tasks, with a progress bar on a terminal.
async fn wait_completed(handle: &WorkerHandle, total: u64) -> anyhow::Result<()> {
    let progress = crate::output::progress(crate::output::Progress::Bar, total, "completed");
    let done = handle
        .wait_for(|report| {
            progress.set_position(report.completed);
            report.completed >= total
        })
        .await;
    progress.finish_and_clear();
    done.context("the worker stopped before every task completed")?;
    Ok(())
}

/// Fails the run unless the broker agrees that exactly `total` tasks completed and nothing is
/// left: a benchmark that loses or repeats tasks measures nothing.
async fn check_drained<B: Broker>(
    broker: &Arc<B>,
    queue: &QueueName,
    total: u64,
) -> anyhow::Result<()> {
    let stats = broker.stats(Some(queue)).await?;
    let stats = &stats[0];
    if stats.totals.completed != total || stats.length() != 0 || stats.counts.active != 0 {
        bail!(
            "after the run the broker reports {} completed (want {total}), {} waiting, {} active",
            stats.totals.completed,
            stats.length(),
            stats.counts.active
        );
    }
    Ok(())
}

/// Median, min and max.
fn spread(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let median = if values.len() % 2 == 1 {
        values[values.len() / 2]
    } else {
        (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
    };
    (median, values[0], values[values.len() - 1])
}

fn print_table(reports: &[Report]) {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "workload",
        "tasks",
        "tasks/s (median)",
        "min",
        "max",
        "enqueue/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ratio to W1",
    ]);
    let num = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    for r in reports {
        table.add_row([
            r.workload.to_owned(),
            r.depth.map_or(r.tasks.to_string(), |d| {
                format!("{} (+{d} waiting)", r.tasks)
            }),
            format!("{:.0}", r.tasks_per_s),
            format!("{:.0}", r.tasks_per_s_min),
            format!("{:.0}", r.tasks_per_s_max),
            num(r.enqueue_tasks_per_s, 0),
            num(r.p50_ms, 2),
            num(r.p99_ms, 2),
            num(r.max_ms, 2),
            num(r.ratio_to_w1, 2),
        ]);
    }
    println!("{table}");
    if let Some(r) = reports.first() {
        println!(
            "{} broker, durability {}, {} runs each; {} producers, worker concurrency {}, reserve batch {}",
            r.backend, r.durability, r.runs, r.producers, r.concurrency, r.reserve_batch
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_about_a_hundred_bytes_of_json() {
        let bytes = payload(42, now_micros());
        assert!((90..=120).contains(&bytes.len()), "{}", bytes.len());
        let decoded: BenchPayload = serde_json::from_slice(&bytes).unwrap();
        assert!(decoded.enqueued_us > 0);
    }

    #[test]
    fn spread_reports_median_min_max() {
        assert_eq!(spread([3.0, 1.0, 2.0].into_iter()), (2.0, 1.0, 3.0));
        assert_eq!(spread([4.0, 1.0, 2.0, 3.0].into_iter()), (2.5, 1.0, 4.0));
    }
}
