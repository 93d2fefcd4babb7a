//! `floodway bench --server URL`: W1 and W2 through a running `floodway serve`, with the
//! producers and a remote worker in this process speaking HTTP.
//!
//! - W1: `--producers` connections enqueue `--tasks` tasks in requests of `--batch` tasks
//!   (`--batch 1`: one task per request, in the API's one-task form), timed as enqueue
//!   requests/s and tasks/s; then a remote worker (the worker runtime over `HttpBroker`) drains
//!   them, timed as drain tasks/s.
//!
//! The producers of an `http://` server each own one HTTP/1.1 connection (hyper's client
//! connection, no pool) and send prepared JSON: on a 2-core machine the load generator shares
//! the CPU with the server, and the lighter it is, the more the figure measures the server.
//! (With the reqwest-based `HttpBroker` as producer, single-task enqueue measured ~21,000
//! requests/s against ~38,000 with `wrk`; docs/benchmarks.md.) Over `https://` the producers use
//! `HttpBroker`. W2's producers always do, as a Rust service would.
//! - W2: the remote worker runs while the producers enqueue; end-to-end tasks/s.
//!
//! Each run uses a queue of its own on the server, and fails unless the server then reports
//! exactly `--tasks` completed and nothing left. The server's broker and durability are the
//! server's: start it with the settings to measure (docs/benchmarks.md shows how).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use floodway_client::{ClientConfig, HttpBroker, Token};
use floodway_core::{Broker, NewTask, QueueName};
use floodway_worker::{Outcome, TaskContext, Worker};
use serde::Serialize;

use super::{BenchArgs, Workload, now_micros, payload, spread, wait_completed};

/// The options of `floodway bench` that point it at a server.
#[derive(Debug, clap::Args)]
pub(crate) struct RemoteArgs {
    /// Run W1 and W2 against this floodway server over HTTP (producers and a remote worker in
    /// this process) instead of a temporary embedded broker.
    #[arg(long, value_name = "URL")]
    pub(super) server: Option<String>,
    /// The bearer token for --server (produce and consume scopes).
    #[arg(
        long,
        env = "FLOODWAY_TOKEN",
        hide_env_values = true,
        requires = "server"
    )]
    token: Option<Token>,
    /// Extra root certificates (PEM) to trust for --server.
    #[arg(long, value_name = "FILE", requires = "server")]
    ca_cert: Option<PathBuf>,
}

/// One workload's figures over all its runs.
#[derive(Debug, Serialize)]
struct Report {
    workload: &'static str,
    backend: &'static str,
    server: String,
    runs: u32,
    tasks: u64,
    /// Median: drain (W1) or end to end (W2), tasks per second.
    tasks_per_s: f64,
    tasks_per_s_min: f64,
    tasks_per_s_max: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    enqueue_tasks_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enqueue_requests_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enqueue_requests_per_s_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enqueue_requests_per_s_max: Option<f64>,
    connections: u32,
    enqueue_batch: u32,
    concurrency: u32,
    reserve_batch: u32,
}

/// What one run measured.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    tasks_per_s: f64,
    enqueue_tasks_per_s: Option<f64>,
}

/// Runs the workloads against `server` and prints their reports.
pub(super) async fn run(args: &BenchArgs, server: &str, json: bool) -> anyhow::Result<()> {
    let workloads = match args.workload {
        Workload::All => vec![Workload::W1, Workload::W2],
        Workload::W1 => vec![Workload::W1],
        Workload::W2 => vec![Workload::W2],
        Workload::W3 | Workload::W4 => bail!(
            "over HTTP (--server), floodway bench runs W1 and W2; W3 and W4 measure the broker, \
             run them without --server"
        ),
    };
    let mut config = ClientConfig::new(server);
    config.token = args.remote.token.clone();
    config.ca_cert = args.remote.ca_cert.clone();
    config.pool_idle_max = args.producers as usize + 8;
    let broker = Arc::new(
        HttpBroker::connect(config)
            .await
            .with_context(|| format!("connecting to {server}"))?,
    );
    let mut reports = Vec::new();
    for workload in workloads {
        let report = workload_report(args, &broker, server, workload).await?;
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

async fn workload_report(
    args: &BenchArgs,
    broker: &Arc<HttpBroker>,
    server: &str,
    workload: Workload,
) -> anyhow::Result<Report> {
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        eprintln!("{workload:?} over HTTP, run {run}/{} ...", args.runs);
        let measured = tokio::time::timeout(args.timeout, run_once(args, broker, workload))
            .await
            .with_context(|| format!("{workload:?} run {run} took longer than --timeout"))??;
        eprintln!(
            "{workload:?} run {run}: {:.0} tasks/s{}",
            measured.tasks_per_s,
            measured
                .enqueue_tasks_per_s
                .map_or(String::new(), |e| format!(
                    ", enqueue {e:.0} tasks/s ({:.0} requests/s)",
                    e / f64::from(args.batch)
                ))
        );
        runs.push(measured);
    }
    let (median, min, max) = spread(runs.iter().map(|r| r.tasks_per_s));
    let enqueue: Vec<f64> = runs.iter().filter_map(|r| r.enqueue_tasks_per_s).collect();
    let enqueue = (!enqueue.is_empty()).then(|| spread(enqueue.into_iter()));
    let per_request = |tasks: f64| tasks / f64::from(args.batch);
    Ok(Report {
        workload: if workload == Workload::W1 { "W1" } else { "W2" },
        backend: "http",
        server: server.to_owned(),
        runs: args.runs,
        tasks: args.tasks,
        tasks_per_s: median,
        tasks_per_s_min: min,
        tasks_per_s_max: max,
        enqueue_tasks_per_s: enqueue.map(|e| e.0),
        enqueue_requests_per_s: enqueue.map(|e| per_request(e.0)),
        enqueue_requests_per_s_min: enqueue.map(|e| per_request(e.1)),
        enqueue_requests_per_s_max: enqueue.map(|e| per_request(e.2)),
        connections: args.producers,
        enqueue_batch: args.batch,
        concurrency: args.concurrency,
        reserve_batch: args.reserve_batch,
    })
}

async fn run_once(
    args: &BenchArgs,
    broker: &Arc<HttpBroker>,
    workload: Workload,
) -> anyhow::Result<Run> {
    // A queue of its own per run: the server may hold earlier runs' queues.
    let queue = QueueName::new(&format!(
        "bench-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ))?;
    let total = args.tasks;
    let result = match workload {
        Workload::W1 => {
            let started = Instant::now();
            match args
                .remote
                .server
                .as_deref()
                .and_then(|s| s.strip_prefix("http://"))
            {
                Some(authority) => enqueue_raw(authority, &queue, total, args).await?,
                None => enqueue_all(broker, &queue, total, args).await?,
            }
            let enqueue_elapsed = started.elapsed();
            let (worker, handle) = worker(args, broker, &queue)?;
            let started = Instant::now();
            let running = tokio::spawn(worker.run(std::future::pending()));
            wait_completed(&handle, total).await?;
            let drain_elapsed = started.elapsed();
            handle.shutdown();
            running.await?;
            Run {
                tasks_per_s: total as f64 / drain_elapsed.as_secs_f64(),
                enqueue_tasks_per_s: Some(total as f64 / enqueue_elapsed.as_secs_f64()),
            }
        }
        _ => {
            let (worker, handle) = worker(args, broker, &queue)?;
            let running = tokio::spawn(worker.run(std::future::pending()));
            let started = Instant::now();
            enqueue_all(broker, &queue, total, args).await?;
            wait_completed(&handle, total).await?;
            let elapsed = started.elapsed();
            handle.shutdown();
            running.await?;
            Run {
                tasks_per_s: total as f64 / elapsed.as_secs_f64(),
                enqueue_tasks_per_s: None,
            }
        }
    };
    let stats = broker.stats(Some(&queue)).await?;
    let stats = &stats[0];
    if stats.totals.completed != total || stats.length() != 0 || stats.counts.active != 0 {
        bail!(
            "after the run the server reports {} completed (want {total}), {} waiting, {} active",
            stats.totals.completed,
            stats.length(),
            stats.counts.active
        );
    }
    Ok(result)
}

/// `--producers` concurrent connections enqueue `total` tasks in requests of `--batch`.
async fn enqueue_all(
    broker: &Arc<HttpBroker>,
    queue: &QueueName,
    total: u64,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let batch = u64::from(args.batch);
    let next = Arc::new(AtomicU64::new(0));
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..args.producers {
        let broker = broker.clone();
        let queue = queue.clone();
        let next = next.clone();
        producers.spawn(async move {
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let end = (start + batch).min(total);
                let now = now_micros();
                let tasks = (start..end)
                    .map(|i| NewTask::new("noop", payload(i, now)))
                    .collect();
                broker.enqueue(&queue, tasks).await?;
            }
        });
    }
    while let Some(done) = producers.join_next().await {
        done??;
    }
    Ok(())
}

/// `--producers` connections, each a bare HTTP/1.1 connection to `authority` (`host:port`),
/// enqueue `total` tasks in requests of `--batch`: the one-task form for a batch of 1, else
/// `{"tasks": [...]}`. Every answer must be 201.
async fn enqueue_raw(
    authority: &str,
    queue: &QueueName,
    total: u64,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let authority = authority.trim_end_matches('/').to_owned();
    let path = format!("/v1/queues/{queue}/tasks");
    let authorization = args
        .remote
        .token
        .as_ref()
        .map(|token| format!("Bearer {}", token.expose()));
    let batch = u64::from(args.batch);
    let next = Arc::new(AtomicU64::new(0));
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..args.producers {
        let (authority, path, authorization, next) = (
            authority.clone(),
            path.clone(),
            authorization.clone(),
            next.clone(),
        );
        producers.spawn(async move {
            let stream = tokio::net::TcpStream::connect(&authority)
                .await
                .with_context(|| format!("connecting to {authority}"))?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            let connection = tokio::spawn(connection);
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= total {
                    break;
                }
                let end = (start + batch).min(total);
                let now = now_micros();
                let body = if batch == 1 {
                    task_json(start, now)
                } else {
                    let tasks: Vec<String> = (start..end).map(|i| task_json(i, now)).collect();
                    format!(r#"{{"tasks":[{}]}}"#, tasks.join(","))
                };
                let mut request = hyper::Request::post(&path)
                    .header(hyper::header::HOST, &authority)
                    .header(hyper::header::CONTENT_TYPE, "application/json");
                if let Some(authorization) = &authorization {
                    request = request.header(hyper::header::AUTHORIZATION, authorization);
                }
                let request = request.body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let answer = http_body_util::BodyExt::collect(response.into_body())
                    .await?
                    .to_bytes();
                if status != hyper::StatusCode::CREATED {
                    bail!(
                        "an enqueue was answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
            drop(sender);
            connection.await??;
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(done) = producers.join_next().await {
        done??;
    }
    Ok(())
}

/// One no-op task with the benchmark payload, in the API's JSON.
fn task_json(sequence: u64, enqueued_us: u64) -> String {
    let payload = payload(sequence, enqueued_us);
    format!(
        r#"{{"kind":"noop","payload":{}}}"#,
        String::from_utf8(payload).expect("the benchmark payload is JSON text")
    )
}

/// The remote worker: the worker runtime over HTTP with a no-op handler.
fn worker(
    args: &BenchArgs,
    broker: &Arc<HttpBroker>,
    queue: &QueueName,
) -> anyhow::Result<(Worker<HttpBroker>, floodway_worker::WorkerHandle)> {
    let worker = Worker::builder(broker.clone())
        .name("bench-remote")
        .queue(queue.as_str(), args.concurrency as usize)
        .reserve_batch_max(args.reserve_batch as usize)
        .poll_wait(Duration::from_millis(100))
        .raw_handler("noop", |_ctx: TaskContext, _payload: Vec<u8>| async {
            Outcome::Complete
        })
        .build()?;
    let handle = worker.handle();
    Ok((worker, handle))
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
        "enqueue tasks/s",
        "enqueue requests/s",
    ]);
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.0}"));
    for r in reports {
        table.add_row([
            r.workload.to_owned(),
            r.tasks.to_string(),
            format!("{:.0}", r.tasks_per_s),
            format!("{:.0}", r.tasks_per_s_min),
            format!("{:.0}", r.tasks_per_s_max),
            num(r.enqueue_tasks_per_s),
            r.enqueue_requests_per_s.map_or(String::new(), |m| {
                format!(
                    "{m:.0} [{}–{}]",
                    num(r.enqueue_requests_per_s_min),
                    num(r.enqueue_requests_per_s_max)
                )
            }),
        ]);
    }
    println!("{table}");
    if let Some(r) = reports.first() {
        println!(
            "over HTTP to {}, {} runs each; {} connections, {} tasks per enqueue request, \
             remote worker concurrency {}, reserve batch {}",
            r.server, r.runs, r.connections, r.enqueue_batch, r.concurrency, r.reserve_batch
        );
    }
}
