//! The worker process of a run (`floodway chaos worker`): the real worker runtime over HTTP,
//! with a handler that records every execution and performs one effect per task through
//! [`TaskContext::effect`], the idempotency helper.
//!
//! The handler, for a task of kind [`KIND`] with a [`Payload`]:
//! 1. appends `start` to the history (before anything else, so every execution is counted);
//! 2. if the task is poison, panics or aborts the whole process, as a buggy handler would;
//! 3. works for `work_ms`;
//! 4. performs its effect with `ctx.effect("apply", ...)`, handing the effect's idempotency
//!    key to the [`Downstream`], which applies each key once;
//! 5. appends `done` and completes the task.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use floodway_client::{ClientConfig, HttpBroker};
use floodway_worker::{Outcome, TaskContext, Worker};
use serde::{Deserialize, Serialize};

use crate::history::{Downstream, Event, append, now_ms};

/// The kind of every task of a run.
pub const KIND: &str = "chaos";

/// The queue of every run.
pub const QUEUE: &str = "chaos";

/// How a poison task misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Poison {
    /// The handler panics (the runtime catches it and fails the attempt).
    Panic,
    /// The handler aborts the worker process (every task it held is orphaned until its
    /// lease expires).
    Abort,
}

/// A run's task payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Payload {
    /// The producer operation that enqueued it.
    pub op: u64,
    /// How long the handler works before its effect.
    pub work_ms: u64,
    /// Set for poison tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poison: Option<Poison>,
}

/// What `floodway chaos worker` needs.
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    /// The server's URL.
    pub server: String,
    /// The worker's name.
    pub name: String,
    /// Handler slots.
    pub concurrency: usize,
    /// The lease per reservation.
    pub lease: Duration,
    /// The history file to append to.
    pub history: PathBuf,
    /// The downstream's directory.
    pub downstream: PathBuf,
}

/// Runs the worker until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(args: WorkerArgs) -> Result<(), String> {
    let mut config = ClientConfig::new(&args.server);
    config.timeout = crate::limits::REQUEST_TIMEOUT;
    let broker = Arc::new(
        HttpBroker::connect(config)
            .await
            .map_err(|e| format!("connecting to {}: {e}", args.server))?,
    );
    let history = Arc::new(args.history);
    let downstream = Arc::new(args.downstream);
    Downstream::new(&downstream).map_err(|e| format!("the downstream directory: {e}"))?;
    let worker = Worker::builder(broker)
        .name(args.name)
        .queue(QUEUE, args.concurrency)
        .lease_duration(args.lease)
        .poll_wait(Duration::from_millis(500))
        .grace_period(Duration::from_secs(2))
        .handler(KIND, move |ctx: TaskContext, payload: Payload| {
            let history = history.clone();
            let downstream = downstream.clone();
            async move { handle(ctx, payload, &history, &downstream).await }
        })
        .build()
        .map_err(|e| e.to_string())?;
    worker.run(floodway_worker::shutdown_signal()).await;
    Ok(())
}

async fn handle(
    ctx: TaskContext,
    payload: Payload,
    history: &std::path::Path,
    downstream: &std::path::Path,
) -> Outcome {
    let start = Event::Start {
        id: ctx.id(),
        op: payload.op,
        attempt: ctx.attempt(),
        fence: ctx.fence().0,
        at_ms: now_ms(),
    };
    if let Err(error) = append(history, &start) {
        return Outcome::retry(format!("the history could not be written: {error}"));
    }
    match payload.poison {
        Some(Poison::Panic) => panic!("poison task {} panics, as asked", payload.op),
        Some(Poison::Abort) => std::process::abort(),
        None => {}
    }
    tokio::time::sleep(Duration::from_millis(payload.work_ms)).await;
    let op = payload.op;
    let effect = ctx
        .effect("apply", |key| async move {
            Downstream::new(downstream)?.apply(&key, op)
        })
        .await;
    if let Err(error) = effect {
        return Outcome::retry(format!("the effect: {error}"));
    }
    let done = Event::Done {
        id: ctx.id(),
        attempt: ctx.attempt(),
        at_ms: now_ms(),
    };
    match append(history, &done) {
        Ok(()) => Outcome::Complete,
        Err(error) => Outcome::retry(format!("the history could not be written: {error}")),
    }
}
