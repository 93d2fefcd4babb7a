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
//! 1. The **fetch loops** of a queue wait for a free handler slot, reserve as many tasks as
//!    there are free slots (never more: no prefetch hogging), and start a supervisor for each.
//! 2. The **supervisor** decodes the payload, runs the handler in a task of its own under the
//!    kind's timeout, and catches panics. Its [`Outcome`] (or the timeout, or the panic)
//!    becomes an ack or a fail.
//! 3. The **completer** sends acks, fails and releases in batches: everything that arrived
//!    while the previous call was out goes in the next, so completions share durable writes.
//!    The handler slot is freed once the broker has answered.
//! 4. The **heartbeat** loop extends the leases of tasks still in flight, in batches, when a
//!    third of the lease remains. A refused extension means the lease is lost: the handler is
//!    stopped and its result discarded.
//!
//! Shutdown ([`Worker::run`]) stops reserving, lets handlers finish within the grace period,
//! cancels and releases the rest (without spending an attempt), flushes the completer, and
//! returns a [`WorkerReport`].
//!
//! Broker errors never stop a worker: the loops log them with `tracing` and retry with a
//! capped backoff. Delivery is at-least-once: a handler can run again after a crash, a lost
//! lease or an ack the broker never received, so side effects should be idempotent (the task
//! id and attempt are in the [`TaskContext`]).

mod backoff;
mod builder;
mod complete;
mod context;
mod error;
mod fetch;
mod handler;
mod heartbeat;
mod inflight;
pub mod limits;
mod outcome;
mod report;
mod signal;
mod supervise;
mod worker;

pub use builder::WorkerBuilder;
pub use context::TaskContext;
pub use error::WorkerError;
pub use outcome::Outcome;
pub use report::WorkerReport;
pub use signal::shutdown_signal;
pub use worker::{Worker, WorkerHandle};

/// The README's Rust examples, compiled as doc tests so the quick start cannot drift from the
/// API.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
