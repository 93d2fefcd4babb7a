//! `floodway`: the command-line tool. It enqueues tasks, inspects and administers the queues of
//! a data directory (the embedded broker), and runs the order-processing demo. `serve` puts the
//! HTTP API in front of a broker, and `worker --server URL` works tasks from such a server.
//!
//! Each subcommand lives in a module of its own with an `Args` struct (its flags) and an
//! `async fn run(&Global, Args) -> anyhow::Result<()>`; this file only parses the command line,
//! installs logging, dispatches, and turns an error into a message and an exit code. Adding a
//! subcommand is one module, one [`Command`] variant and one match arm in [`dispatch`].
//!
//! # Exit codes
//!
//! They are chosen on purpose, so scripts can tell a mistake of theirs from a failure of ours:
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 2    | bad input: an unknown queue or task, a malformed id, invalid JSON, an oversized payload, an invalid option value or usage. The message names the problem and nothing was changed (for `enqueue --from`, the lines before the bad one were enqueued, and the message says so). |
//! | 1    | any other failure: the data directory is locked by another process, storage failed, a queue is full. |
//!
//! Every error is reported as one line on stderr (`error: ...`). Results go to stdout, human
//! tables by default or one JSON document with `--json`; logs and progress bars go to stderr.

mod bench;
mod chaos;
mod data;
mod dead;
mod demo;
mod enqueue;
mod exit;
mod logging;
mod output;
mod queue;
mod serve;
mod signal;
mod source;
mod stats;
mod tasks;
mod token;
mod top;
mod view;
mod watch;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use floodway_embedded::Durability;

use crate::data::Global;
use crate::logging::LogFormat;

/// mimalloc rather than the system allocator: floodway allocates per task on every path,
/// and W2 ran about 1.3 times faster with it (docs/decisions/0005-allocator.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// floodway: a durable task queue with backpressure built in.
#[derive(Debug, Parser)]
#[command(
    name = "floodway",
    version,
    about,
    after_help = "Exit codes:\n  0  success\n  2  bad input (unknown queue or task, malformed id, invalid JSON, oversized payload,\n     invalid option value); the message names the problem and nothing was changed\n  1  any other failure (data directory locked by another process, storage error, queue full)"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, clap::Args)]
struct GlobalArgs {
    /// The data directory of the embedded broker.
    #[arg(
        long,
        global = true,
        env = "FLOODWAY_DATA",
        default_value = "./floodway-data",
        value_name = "DIR"
    )]
    data: PathBuf,
    /// When a change is safe on disk: fsync (before every reply, with group commit),
    /// interval:DURATION (synced at that interval, e.g. interval:100ms) or off.
    #[arg(
        long,
        global = true,
        env = "FLOODWAY_DURABILITY",
        default_value = "fsync"
    )]
    durability: Durability,
    /// Print machine-readable output on stdout: one JSON document.
    #[arg(long, global = true)]
    json: bool,
    /// How logs on stderr are written.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More logs on stderr: -v info, -vv debug, -vvv trace (the default is warnings only;
    /// RUST_LOG, when set, takes precedence).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue one task, or many as JSON lines with --from.
    Enqueue(enqueue::Args),
    /// Show queue statistics: tasks per state, age of the oldest ready task, totals
    /// (--watch to refresh them, --server URL to read them from a server).
    Stats(stats::Args),
    /// Show the busiest queues, refreshed: throughput, depth, backlog, oldest ready task.
    Top(top::Args),
    /// List or inspect tasks.
    #[command(subcommand)]
    Tasks(tasks::Command),
    /// List, replay or purge dead letters.
    #[command(subcommand)]
    Dead(dead::Command),
    /// Stop workers from reserving tasks of a queue (enqueue continues to work).
    Pause(queue::PauseArgs),
    /// Let workers reserve tasks of a paused queue again.
    Resume(queue::PauseArgs),
    /// Change a queue's configuration (only the fields given), or show it.
    Configure(queue::ConfigureArgs),
    /// Run the order-processing demo on a temporary data directory.
    Demo(demo::Args),
    /// Run the standard benchmark workloads (W1-W4) on a temporary embedded broker.
    Bench(bench::BenchArgs),
    /// Serve the HTTP API over the broker (the embedded broker in --data by default).
    Serve(serve::Args),
    /// Run a worker against a floodway server (--server URL): print, noop or exec each task.
    Worker(worker::Args),
    /// Make a bearer token for `floodway serve` and print its configuration entry.
    Token(token::Args),
    /// Run the chaos harness: producers and workers against a real server while faults are
    /// injected, then check for lost, duplicated and falsely acknowledged tasks.
    #[command(subcommand)]
    Chaos(chaos::Command),
}

/// Runs one subcommand.
async fn dispatch(global: &Global, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Enqueue(args) => enqueue::run(global, args).await,
        Command::Stats(args) => stats::run(global, args).await,
        Command::Top(args) => top::run(global, args).await,
        Command::Tasks(command) => tasks::run(global, command).await,
        Command::Dead(command) => dead::run(global, command).await,
        Command::Pause(args) => queue::pause(global, args, true).await,
        Command::Resume(args) => queue::pause(global, args, false).await,
        Command::Configure(args) => queue::configure(global, args).await,
        Command::Demo(args) => demo::run(global, args).await,
        Command::Bench(args) => bench::run(args, global.durability, global.json).await,
        Command::Serve(args) => serve::run(global, args).await,
        Command::Worker(args) => worker::run(args).await,
        Command::Token(args) => token::run(global.json, args).await,
        Command::Chaos(command) => chaos::run(global.json, command).await,
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return exit::usage(error),
    };
    // Held to the end of main: dropping it flushes the spans still to be exported.
    let _telemetry = logging::install(cli.global.log_format, cli.global.verbose);
    output::hide_progress(cli.global.json);
    let global = Global {
        data: cli.global.data,
        durability: cli.global.durability,
        json: cli.global.json,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return exit::report(&anyhow::Error::new(error).context("starting the tokio runtime"));
        }
    };
    match runtime.block_on(dispatch(&global, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit::report(&error),
    }
}
