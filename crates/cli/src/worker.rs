//! `floodway worker --server URL`: the worker runtime against a remote `floodway serve`,
//! through the HTTP broker of floodway-client.
//!
//! A command line cannot hold application code, so the worker runs one of three handlers for
//! the kinds it is given (`--kind`, repeatable); tasks of other kinds are failed with "no
//! handler" and retried with backoff, as by any worker:
//!
//! - `--run print` (the default) writes each task on stdout as one JSON line
//!   (`{"id","queue","kind","attempt","payload"}`) and completes it: for looking at tasks and
//!   for piping them into another program.
//! - `--run noop` completes each task at once and prints nothing: for benchmarks and for
//!   draining a queue.
//! - `--run exec --exec CMD` runs `sh -c CMD` per task, with the payload on stdin and the
//!   task in `FLOODWAY_TASK_ID`, `FLOODWAY_TASK_KIND`, `FLOODWAY_QUEUE` and
//!   `FLOODWAY_ATTEMPT`, and its trace context (the worker's `handle` span as the parent) in
//!   `TRACEPARENT` and `TRACESTATE`, the OpenTelemetry names for it: exit status 0 completes
//!   the task, 65 (EX_DATAERR) fails it for good (dead letter), anything else is retried with
//!   backoff. A worker in any language, without HTTP code.
//!
//! The worker shuts down gracefully on SIGINT or SIGTERM, or once `--max-tasks` tasks have
//! finished (completed or dead-lettered).
//!
//! Every option but `--max-tasks` can also come from the environment (`FLOODWAY_SERVER`,
//! `FLOODWAY_TOKEN`, `FLOODWAY_CA_CERT`, `FLOODWAY_WORKER_*`; `--help` names each), so a
//! container is configured without a command line; lists (`FLOODWAY_WORKER_QUEUES`,
//! `FLOODWAY_WORKER_KINDS`) are comma-separated.
//!
//! With `--listen ADDR` it also serves, until it stops, its metrics at `/metrics` (the
//! `floodway_worker_*` series of docs/metrics.md), `/healthz` (alive) and `/readyz` (the
//! server answers `/readyz` itself), for a worker pod's scrape and probes.

use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use floodway_client::{ClientConfig, HttpBroker, Token};
use floodway_metrics::Registry;
use floodway_server::metrics;
use floodway_worker::{Outcome, TaskContext, Worker};
use tokio::io::AsyncWriteExt;

use crate::exit::bad_input;

/// What `floodway worker --help` says after the options.
const HELP: &str = "\
What the worker does with each task of the given kinds (--run):
  print  write the task on stdout as one JSON line {id, queue, kind, attempt, payload}, then
         complete it (the default; pipe it into jq or another program)
  noop   complete it at once (benchmarks, draining a queue)
  exec   run `sh -c COMMAND` (--exec) with the payload on stdin and FLOODWAY_TASK_ID,
         FLOODWAY_TASK_KIND, FLOODWAY_QUEUE, FLOODWAY_ATTEMPT (and TRACEPARENT, TRACESTATE)
         in the environment: exit 0
         completes the task, 65 fails it for good (dead letter), anything else retries it
Tasks of other kinds are failed with \"no handler\" and retried later, as by any worker.
With --listen ADDR the worker serves its metrics (docs/metrics.md) at /metrics, and /healthz
and /readyz for liveness and readiness probes; it prints the address on stderr.
SIGINT or SIGTERM (or --max-tasks) stops reserving, lets tasks in flight finish within
--grace-period and gives the rest back. Counts are printed on stderr at the end.

Example:
  floodway worker --server http://127.0.0.1:7700 --queue emails=8 --kind send_email \\
      --run exec --exec 'python3 send_email.py'";

/// `floodway worker`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub(crate) struct Args {
    /// The server's URL, e.g. http://127.0.0.1:7700.
    #[arg(long, env = "FLOODWAY_SERVER", value_name = "URL")]
    server: String,
    /// The bearer token (it needs the consume scope on the queues).
    #[arg(
        long,
        env = "FLOODWAY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<Token>,
    /// A PEM file of extra root certificates to trust (a private CA or self-signed server).
    #[arg(long, env = "FLOODWAY_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// A queue to serve, with the most tasks to run at once: QUEUE or QUEUE=N (default 16).
    /// Repeatable, or comma-separated.
    #[arg(
        long = "queue",
        env = "FLOODWAY_WORKER_QUEUES",
        required = true,
        value_delimiter = ',',
        value_name = "QUEUE[=N]"
    )]
    queues: Vec<QueueArg>,
    /// A task kind to run. Repeatable, or comma-separated; tasks of other kinds are failed
    /// with "no handler".
    #[arg(
        long = "kind",
        env = "FLOODWAY_WORKER_KINDS",
        required = true,
        value_delimiter = ',',
        value_name = "KIND"
    )]
    kinds: Vec<String>,
    /// What to do with each task: print it as a JSON line, do nothing (noop), or run --exec.
    #[arg(long, env = "FLOODWAY_WORKER_RUN", value_enum, default_value = "print")]
    run: Run,
    /// With --run exec: the shell command run per task (payload on stdin).
    #[arg(
        long,
        env = "FLOODWAY_WORKER_EXEC",
        value_name = "COMMAND",
        required_if_eq("run", "exec")
    )]
    exec: Option<String>,
    /// How long one attempt may run before it is stopped and retried.
    #[arg(long, env = "FLOODWAY_WORKER_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    timeout: Duration,
    /// How long each lease lasts; heartbeats extend it while a task runs.
    #[arg(long, env = "FLOODWAY_WORKER_LEASE", default_value = "30s", value_parser = parse_duration)]
    lease: Duration,
    /// Most tasks one reserve call asks for.
    #[arg(
        long,
        env = "FLOODWAY_WORKER_RESERVE_BATCH",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    reserve_batch: u32,
    /// How long shutdown lets tasks in flight finish before it stops them and gives them back
    /// (a supervisor's stop timeout must exceed it: Kubernetes' terminationGracePeriodSeconds,
    /// compose's stop_grace_period; see docs/deploy.md).
    #[arg(
        long,
        env = "FLOODWAY_WORKER_GRACE_PERIOD",
        default_value = "30s",
        value_parser = parse_duration
    )]
    grace_period: Duration,
    /// Stop (gracefully) once this many tasks have finished here: completed, or failed for
    /// good (dead-lettered).
    #[arg(long, value_name = "N")]
    max_tasks: Option<u64>,
    /// The worker's name on its leases and metrics [default: host name and process id].
    #[arg(long, env = "FLOODWAY_WORKER_NAME")]
    name: Option<String>,
    /// Serve the worker's Prometheus metrics at http://ADDR/metrics, with /healthz (the
    /// process is alive) and /readyz (the server answers) for probes, e.g. 0.0.0.0:9464.
    #[arg(long, env = "FLOODWAY_WORKER_LISTEN", value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
}

/// What the worker does with a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Run {
    /// Print the task as one JSON line on stdout, then complete it.
    Print,
    /// Complete the task at once.
    Noop,
    /// Run --exec with the payload on stdin.
    Exec,
}

/// `QUEUE` or `QUEUE=N`.
#[derive(Clone, Debug)]
struct QueueArg {
    name: String,
    concurrency: usize,
}

const CONCURRENCY_DEFAULT: usize = 16;

impl FromStr for QueueArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, concurrency) = match text.split_once('=') {
            None => (text, CONCURRENCY_DEFAULT),
            Some((name, n)) => (
                name,
                n.parse()
                    .map_err(|_| format!("{n:?} is not a number of tasks"))?,
            ),
        };
        Ok(QueueArg {
            name: name.to_owned(),
            concurrency,
        })
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    floodway_core::duration::parse(text).map_err(|e| e.to_string())
}

/// The exit status of an `--exec` command that fails its task for good.
const EXIT_PERMANENT_FAILURE: i32 = 65;

/// Runs `floodway worker`.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    // Installed before "worker started" is logged: a SIGTERM from then on is a graceful stop.
    let shutdown = crate::signal::shutdown_signal().await;
    let mut config = ClientConfig::new(&args.server);
    config.token = args.token;
    config.ca_cert = args.ca_cert;
    let broker = Arc::new(
        HttpBroker::connect(config)
            .await
            .with_context(|| format!("connecting to {}", args.server))?,
    );
    let registry = Arc::new(Registry::new());
    let mut builder = Worker::builder(broker.clone())
        .metrics(registry.clone())
        .timeout(args.timeout)
        .lease_duration(args.lease)
        .reserve_batch_max(args.reserve_batch as usize)
        .grace_period(args.grace_period);
    if let Some(name) = args.name {
        builder = builder.name(name);
    }
    for queue in &args.queues {
        builder = builder.queue(&queue.name, queue.concurrency);
    }
    let command: Option<Arc<str>> = args.exec.map(Arc::from);
    for kind in &args.kinds {
        builder = match args.run {
            Run::Noop => builder.raw_handler(kind, |_ctx: TaskContext, _payload: Vec<u8>| async {
                Outcome::Complete
            }),
            Run::Print => {
                builder.raw_handler(kind, |ctx: TaskContext, payload: Vec<u8>| async move {
                    match print_task(&ctx, &payload) {
                        Ok(()) => Outcome::Complete,
                        // Nobody reads stdout any more: give the task back to be run elsewhere.
                        Err(error) => Outcome::retry(format!("printing the task failed: {error}")),
                    }
                })
            }
            Run::Exec => {
                let command = command
                    .clone()
                    .ok_or_else(|| bad_input("--run exec needs --exec COMMAND"))?;
                builder.raw_handler(kind, move |ctx: TaskContext, payload: Vec<u8>| {
                    let command = command.clone();
                    async move { exec(&command, &ctx, payload).await }
                })
            }
        };
    }
    let worker = builder
        .build()
        .map_err(|error| bad_input(error.to_string()))?;
    let exporter = match args.listen {
        Some(address) => Some(Exporter::start(address, registry, broker).await?),
        None => None,
    };
    let handle = worker.handle();
    let report = match args.max_tasks {
        None => worker.run(shutdown).await,
        Some(max) => {
            let done = handle.clone();
            worker
                .run(async move {
                    tokio::select! {
                        () = shutdown => {}
                        _ = done.wait_for(|r| r.completed + r.dead_lettered >= max) => {}
                    }
                })
                .await
        }
    };
    if let Some(exporter) = exporter {
        exporter.stop().await?;
    }
    eprintln!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The worker's metrics and probes endpoint (`--listen`), served until the worker stops.
struct Exporter {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Exporter {
    /// Binds `address` (failing at once if it is taken) and serves `/metrics` from
    /// `registry`, `/healthz`, and `/readyz` asking `broker`.
    async fn start(
        address: std::net::SocketAddr,
        registry: Arc<Registry>,
        broker: Arc<HttpBroker>,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address} (--listen)"))?;
        let local = listener.local_addr()?;
        let router = metrics::router(registry).merge(metrics::probes(broker));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(metrics::serve(listener, router, async {
            let _ = stopped.await;
        }));
        eprintln!("metrics on http://{local}/metrics (and /healthz, /readyz)");
        Ok(Exporter { stop, task })
    }

    /// Stops serving, once the worker has stopped.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// One JSON line per task on stdout; the payload as JSON when it is JSON, else as a string.
fn print_task(ctx: &TaskContext, payload: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let payload = serde_json::from_slice::<serde_json::Value>(payload)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(payload).into()));
    let line = serde_json::json!({
        "id": ctx.id().to_string(),
        "queue": ctx.queue().as_str(),
        "kind": ctx.kind(),
        "attempt": ctx.attempt(),
        "payload": payload,
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// Runs `command` for one task; its exit status decides the outcome.
async fn exec(command: &str, ctx: &TaskContext, payload: Vec<u8>) -> Outcome {
    let mut command_line = tokio::process::Command::new("sh");
    // The task's tracestate, never one this worker inherited.
    match &ctx.trace_context().state {
        Some(state) => command_line.env("TRACESTATE", state),
        None => command_line.env_remove("TRACESTATE"),
    };
    let child = command_line
        .arg("-c")
        .arg(command)
        .env("FLOODWAY_TASK_ID", ctx.id().to_string())
        .env("FLOODWAY_TASK_KIND", ctx.kind())
        .env("FLOODWAY_QUEUE", ctx.queue().as_str())
        .env("FLOODWAY_ATTEMPT", ctx.attempt().to_string())
        // The command gets the task, not the worker's credentials.
        .env_remove("FLOODWAY_TOKEN")
        .env("TRACEPARENT", ctx.traceparent().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        // A timed-out or cancelled attempt drops this future: the command dies with it.
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => return Outcome::retry(format!("starting `sh -c {command}`: {error}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input closes the pipe early; that is its business.
        let _ = stdin.write_all(&payload).await;
    }
    let output = match child.wait_with_output().await {
        Ok(output) => output,
        Err(error) => return Outcome::retry(format!("waiting for the command: {error}")),
    };
    if output.status.success() {
        return Outcome::Complete;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: String = stderr
        .trim()
        .chars()
        .rev()
        .take(500)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let message = format!("the command exited with {}: {tail}", output.status);
    if output.status.code() == Some(EXIT_PERMANENT_FAILURE) {
        Outcome::fail(message)
    } else {
        Outcome::retry(message)
    }
}
