//! floodway's worker runtime: runs tasks from any [`floodway_core::Broker`] with typed
//! handlers, bounded concurrency, timeouts, heartbeats, batched completion and graceful
//! shutdown.
//!
//! ```no_run
//! use std::sync::Arc;
//! use floodway_worker::{Outcome, TaskContext, Worker};
//!
//! #[derive(serde::Deserialize)]
//! struct Email { to: String }
//!
//! # async fn example<B: floodway_core::Broker>(broker: Arc<B>) -> Result<(), floodway_worker::WorkerError> {
//! let worker = Worker::builder(broker)
//!     .queue("emails", 16)
//!     .handler("send_email", |ctx: TaskContext, email: Email| async move {
//!         tracing::info!(attempt = ctx.attempt(), to = %email.to, "sending");
//!         Ok::<(), std::io::Error>(()) // an Err would be retried with backoff
//!     })
//!     .build()?;
//! let report = worker.run(floodway_worker::shutdown_signal()).await;
//! # Ok(()) }
//! ```
//!
//! # How a task moves through a worker
//!
//! 1. The **fetch loops** of a queue wait for room, reserve as many tasks as the queue has
//!    room for (never more), and start a supervisor for each. A queue's room is its free
//!    handler slots (`concurrency`) plus its free prefetch places (`prefetch`, 0 by default).
//! 2. The **supervisor** waits until the task may start (a slot under its kind's adaptive
//!    limit, if any, then a handler slot), decodes the payload, runs the handler in a task of
//!    its own under the kind's timeout, and catches panics. Its [`Outcome`] (or the timeout,
//!    or the panic) becomes an ack or a fail.
//! 3. The **completer** sends acks, fails and releases in batches: everything that arrived
//!    while the previous call was out goes in the next, so completions share durable writes.
//!    The task's room in its queue is freed once the broker has answered.
//! 4. The **heartbeat** loop extends the leases of every task the worker holds (running or
//!    waiting to start), in batches, when a third of the lease remains. A refused extension
//!    means the lease is lost: the handler is stopped and its result discarded.
//!
//! Shutdown ([`Worker::run`]) stops reserving, releases the tasks that have not started,
//! lets handlers finish within the grace period, cancels and releases the rest (without
//! spending an attempt), flushes the completer, and returns a [`WorkerReport`].
//!
//! Broker errors never stop a worker: the loops log them with `tracing` and retry with a
//! capped backoff. Delivery is at-least-once: a handler can run again after a crash, a lost
//! lease or an ack the broker never received, so side effects should be idempotent (see
//! below).
//!
//! # Tracing
//!
//! Each attempt runs in a `handle` span (queue, kind, task id, attempt, outcome) that
//! continues the trace in the task's `traceparent` header: same trace id, the producer's span
//! as its parent (with the `opentelemetry` feature, as the OpenTelemetry parent too). The
//! handler runs in that span's context: [`TaskContext::traceparent`] passes it downstream, and
//! a task the handler enqueues through a `floodway_client::Producer` continues it by itself.
//! The fetch loops, the completer and the heartbeat run their broker calls in `reserve`,
//! `ack`, `fail`, `release` and `extend` spans (debug). See `floodway-trace`.
//!
//! # Backpressure in the worker
//!
//! **Pull, never push.** A worker reserves only what it has room for, so the tasks it cannot
//! start stay in the broker for other workers, and a slow worker never hoards work. With the
//! default prefetch of 0 it reserves a task only for a free handler slot, and holds at most
//! `concurrency` leases of a queue.
//!
//! **Prefetch** ([`WorkerBuilder::prefetch`]) lets it hold up to `concurrency + prefetch`
//! leases of a queue: the extra tasks wait in memory, leases kept alive, and start the moment
//! a handler slot frees up; shutdown releases them unrun. It pays off for short tasks and a
//! broker a round trip away, where the wait for the next reserve call would otherwise leave
//! handler slots idle; for long tasks keep it at 0.
//!
//! **Adaptive concurrency** ([`WorkerBuilder::adaptive`]) limits how many tasks of a kind run
//! at once and adapts the limit to the kind's downstream, within configured bounds, as TCP
//! does: it grows by about one per limit's worth of completed tasks, and halves (by the
//! configured factor, at most once per cool-down) when a handler returns
//! [`Outcome::Overloaded`] (the downstream answered HTTP 429 or 503, say) or an attempt times
//! out. A task held back by its kind's limit waits without taking a handler slot that another
//! kind could use; when every kind is adaptive, the worker also reserves only as many tasks
//! as the limits leave room for. An `Overloaded` attempt is retried after the downstream's
//! Retry-After (or the task's backoff) and counted apart from errors. Time for the limits is
//! tokio's clock, so tests can pause it.
//!
//! **Visibility.** [`WorkerHandle::stats`] is a cheap snapshot ([`WorkerStats`]) of every
//! queue (leases held, handlers running, tasks prefetched and held back) and every kind
//! (running, waiting, adaptive limit, overloads, timeouts, limit cuts);
//! [`WorkerHandle::report`] counts what happened since the start.
//! [`WorkerBuilder::metrics`] exports the same levels to Prometheus through a
//! [`floodway_metrics::Registry`], with every handler's duration by queue, kind and outcome
//! (docs/metrics.md).
//!
//! # Side effects that run once
//!
//! [`TaskContext::effect`] runs a side effect (a charge, an email) once per task and key,
//! across attempts and workers: the result is recorded on the task in the broker, and a later
//! attempt gets the recorded result instead of performing the effect again. Before it
//! performs an effect, the worker confirms with the broker that it still holds the lease, so
//! a worker that lost its lease (a zombie) is refused first. One window remains: a crash
//! between performing an effect and recording it repeats the effect, so pass the idempotency
//! key the closure receives (`"{task id}:{key}"`) to the downstream when it accepts one.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use floodway_worker::{AimdConfig, EffectError, Outcome, TaskContext, Worker};
//!
//! #[derive(serde::Deserialize)]
//! struct Webhook { url: String }
//!
//! # #[derive(Debug)] enum PostError { TooManyRequests(Duration), Other }
//! # impl std::fmt::Display for PostError {
//! #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") }
//! # }
//! # async fn post(url: &str, idempotency_key: String) -> Result<(), PostError> { Ok(()) }
//! # async fn example<B: floodway_core::Broker>(broker: Arc<B>) -> Result<(), floodway_worker::WorkerError> {
//! let worker = Worker::builder(broker)
//!     .queue("webhooks", 64)
//!     .prefetch("webhooks", 16) // short tasks, a broker a round trip away
//!     .adaptive("deliver", AimdConfig { min: 1, max: 64, initial: 8, ..AimdConfig::default() })
//!     .handler("deliver", |ctx: TaskContext, hook: Webhook| async move {
//!         // The receiver dedupes on the idempotency key; a delivery recorded once is never
//!         // posted again by a retry.
//!         match ctx.effect("post", |key| post(&hook.url, key)).await {
//!             Ok(()) => Outcome::Complete,
//!             // A refusal is not recorded: the retry posts again, after the receiver's wait,
//!             // and fewer deliveries run at once meanwhile.
//!             Err(EffectError::Failed(PostError::TooManyRequests(wait))) => {
//!                 Outcome::overloaded_for(wait, "HTTP 429")
//!             }
//!             Err(error) => Outcome::retry(error),
//!         }
//!     })
//!     .build()?;
//! let handle = worker.handle();
//! tokio::spawn(worker.run(floodway_worker::shutdown_signal()));
//! let stats = handle.stats();
//! println!("deliveries at once: {:?}", stats.kind("deliver").and_then(|k| k.limit));
//! # Ok(()) }
//! ```

mod backoff;
mod builder;
mod capacity;
mod complete;
mod context;
mod effect;
mod error;
mod fetch;
mod handler;
mod heartbeat;
mod inflight;
pub mod limits;
mod metrics;
mod outcome;
mod report;
mod signal;
mod stats;
mod supervise;
mod worker;

pub use builder::WorkerBuilder;
pub use context::TaskContext;
pub use effect::EffectError;
pub use error::WorkerError;
/// The settings of [`WorkerBuilder::adaptive`], from `floodway-backpressure`.
pub use floodway_backpressure::AimdConfig;
pub use outcome::Outcome;
pub use report::WorkerReport;
pub use signal::shutdown_signal;
pub use stats::{KindActivity, QueueActivity, WorkerStats};
pub use worker::{Worker, WorkerHandle};

/// The README's Rust examples, compiled as doc tests so the quick start cannot drift from the
/// API.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
