//! The supervisor of one reserved task: waits for room to start it, runs its handler, and
//! turns however it ended into a settlement for the completer.
//!
//! A task starts once it holds a slot under its kind's adaptive limit (if the kind has one)
//! and then one of its queue's handler slots, in that order, so a task held back by its kind
//! never sits on a handler slot another kind could use ([`crate::capacity`]). While it waits
//! it is prefetched: its lease is kept alive by the heartbeat; if shutdown starts it is
//! released unrun, and if its lease is lost it is dropped.
//!
//! The handler runs in a task of its own so that a panic is caught (as a `JoinError`) instead
//! of taking the worker down. The supervisor waits for the first of: the handler's outcome,
//! the attempt's timeout, or its cancellation (lease lost, or end of the shutdown grace
//! period). When it stops a handler, it fires the attempt's cancellation, aborts the handler
//! task and waits for it to be dropped, so the handler slot is free only once the handler is
//! gone. How the attempt ended then feeds the kind's adaptive limit.
//!
//! | how it ended            | settlement                                  | counted as   |
//! |-------------------------|---------------------------------------------|--------------|
//! | outcome                 | ack, or fail with the outcome's decision    | by the broker's answer |
//! | overloaded outcome      | fail, retry after its hint (or backoff)     | `overloaded` too |
//! | no handler for the kind | fail, retry with backoff                    | by the broker's answer |
//! | payload does not decode | fail, permanent                             | by the broker's answer |
//! | panic                   | fail, retry with backoff                    | `panicked`   |
//! | timeout                 | fail, retry with backoff                    | `timed_out`  |
//! | lease lost              | none: the result is discarded               | `lease_lost` |
//! | shutdown before it started | release, no attempt spent                | `released`   |
//! | grace period over       | release, no attempt spent                   | `released`   |
//!
//! Whenever a handler ran, how long it ran is recorded in its queue's durations
//! ([`crate::metrics`]) under how it ended: `complete`, `retry`, `fail`, `overloaded` (its
//! outcome), `panic`, `timeout`, or `cancelled` (stopped because its lease was lost or the
//! grace period ended). A payload that does not decode runs no handler and records nothing.
//!
//! The attempt runs in a `handle` span (level info) with the task's queue, kind, id and
//! attempt, and its `outcome` once known (`completed`, `failed`, `overloaded`, `undecodable`,
//! `panicked`, `timed_out`, `lease_lost`, `released`). The span continues the trace in the
//! task's headers (`floodway_trace::start`): its trace id is the task's and its parent the
//! producer's span; the handler runs in its context (`floodway_trace::scope`). Warnings about
//! an attempt carry its `trace_id` themselves, so they correlate even when info spans are
//! filtered out (the CLI's default level is warn).

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use floodway_core::{Broker, RetryDecision};
use floodway_trace::Parent;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinError;
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::{Instrument, Level, Span};

use crate::capacity::{Assignment, Gauge, KindGate, KindSlot, LeasePermit, QueueCapacity, Signal};
use crate::complete::{Action, Settlement};
use crate::context::TaskContext;
use crate::handler::Handler;
use crate::metrics::HandlerOutcome;
use crate::outcome::Outcome;
use crate::report::Count;
use crate::worker::Runtime;

/// What a dispatched task holds while it waits to start.
pub(crate) struct Waiting {
    /// Its queue.
    pub(crate) queue: Arc<QueueCapacity>,
    /// Counts it as prefetched until its handler starts.
    pub(crate) prefetched: Gauge,
    /// Counts it against its kind until it finishes; `None` for a kind without a handler.
    pub(crate) assignment: Option<Assignment>,
}

/// Runs one reserved task and hands its settlement to the completer, with the task's lease
/// permit. `timeout` is the task's own timeout, if it has one.
pub(crate) async fn run<B: Broker>(
    runtime: Arc<Runtime<B>>,
    ctx: TaskContext,
    payload: Vec<u8>,
    timeout: Option<Duration>,
    waiting: Waiting,
    permit: Option<LeasePermit>,
) {
    let Waiting {
        queue,
        prefetched,
        assignment,
    } = waiting;
    let mut prefetched = Some(prefetched);
    let action = match (runtime.handlers.get(ctx.kind()), assignment) {
        (Some(handler), Some(assignment)) => {
            match wait_to_start(&runtime, &ctx, &queue, assignment.gate()).await {
                Start::Run(kind_slot, handler_slot) => {
                    drop(prefetched.take());
                    let running = queue.running();
                    runtime.counters.announce();
                    let (action, signal) =
                        execute(&runtime, &ctx, &queue, handler, payload, timeout).await;
                    kind_slot.finish(signal, runtime.elapsed());
                    drop((handler_slot, running, assignment));
                    action
                }
                Start::Release => Some(Action::Release),
                Start::Lost => None,
            }
        }
        _ => {
            tracing::warn!(task = %ctx.id(), kind = ctx.kind(), "no handler for this kind");
            Some(Action::Fail {
                error: format!(
                    "no handler for kind {:?} on worker {}",
                    ctx.kind(),
                    ctx.worker()
                ),
                retry: RetryDecision::Backoff,
            })
        }
    };
    // Every count of the task (prefetched, running, its kind's) ends before its settlement is
    // sent, so the stats agree with the report once the completer announces it.
    drop(prefetched);
    match action {
        Some(action) => {
            let settlement = Settlement {
                lease: ctx.lease(),
                action,
                permit,
            };
            if runtime.settle.send(settlement).await.is_err() {
                tracing::error!("the completer has stopped; a lease will expire instead");
            }
        }
        None => {
            runtime.inflight.remove(&ctx.lease());
            drop(permit);
            runtime.counters.bump(Count::LeaseLost);
        }
    }
}

/// How the wait to start a task ended.
enum Start {
    /// It may run: it holds a slot under its kind's limit and a handler slot.
    Run(KindSlot, OwnedSemaphorePermit),
    /// Shutdown started first: release it unrun.
    Release,
    /// Its lease was lost meanwhile: drop it.
    Lost,
}

/// Waits for a kind slot, then for a handler slot, unless shutdown starts or the lease is
/// lost first. Shutdown is checked first, so nothing starts once it has begun.
async fn wait_to_start<B>(
    runtime: &Runtime<B>,
    ctx: &TaskContext,
    queue: &Arc<QueueCapacity>,
    gate: &Arc<KindGate>,
) -> Start {
    let stopped = || {
        if ctx.lease_lost() {
            Start::Lost
        } else {
            Start::Release
        }
    };
    if runtime.stop.is_cancelled() || ctx.is_cancelled() {
        return stopped();
    }
    let kind_slot = match gate.try_start() {
        Some(slot) => slot,
        None => {
            let held_back = queue.held_back();
            runtime.counters.announce();
            let slot = tokio::select! {
                biased;
                () = runtime.stop.cancelled() => None,
                () = ctx.cancellation().cancelled() => None,
                slot = gate.start() => Some(slot),
            };
            drop(held_back);
            match slot {
                Some(slot) => slot,
                None => return stopped(),
            }
        }
    };
    let handler_slot = tokio::select! {
        biased;
        () = runtime.stop.cancelled() => None,
        () = ctx.cancellation().cancelled() => None,
        slot = queue.slots.clone().acquire_owned() => {
            Some(slot.expect("the handler slot semaphore is never closed"))
        }
    };
    match handler_slot {
        // Both slots were free, or became free, before shutdown: start.
        Some(handler_slot) if !runtime.stop.is_cancelled() => Start::Run(kind_slot, handler_slot),
        _ => stopped(),
    }
}

/// Decodes the payload and runs the handler. Returns the settlement (`None` when the lease
/// was lost) and what the attempt says about the downstream's load.
async fn execute<B: Broker>(
    runtime: &Runtime<B>,
    ctx: &TaskContext,
    queue: &QueueCapacity,
    handler: &Handler,
    payload: Vec<u8>,
    timeout: Option<Duration>,
) -> (Option<Action>, Signal) {
    let span = floodway_trace::span!(
        Level::INFO,
        "handle",
        queue = %ctx.queue(),
        kind = ctx.kind(),
        task_id = %ctx.id(),
        attempt = ctx.attempt(),
        outcome = Empty
    );
    let parent = ctx.remote_trace().map_or(Parent::NewTrace, Parent::Remote);
    let trace = floodway_trace::start(&span, parent);
    ctx.set_trace(trace.clone());
    match handler.start(ctx.clone(), payload) {
        Err(error) => {
            span.record("outcome", "undecodable");
            span.in_scope(|| {
                tracing::warn!(
                    task = %ctx.id(),
                    trace_id = %ctx.trace_id(),
                    %error,
                    "payload does not decode"
                );
            });
            let action = Action::Fail {
                error,
                retry: RetryDecision::Never,
            };
            (Some(action), Signal::Neutral)
        }
        Ok(future) => {
            // The handler runs in the span, with its context as the ambient one.
            let future = floodway_trace::scope(trace, future).instrument(span.clone());
            let timeout = timeout.unwrap_or(handler.timeout);
            let ended = attempt(runtime, ctx, queue, future, timeout, &span)
                .instrument(span.clone())
                .await;
            span.in_scope(|| tracing::debug!("attempt finished"));
            ended
        }
    }
}

/// How the wait for a handler ended.
enum Ending {
    Joined(Result<Outcome, JoinError>),
    Cancelled,
    TimedOut,
}

impl Ending {
    /// The outcome its duration is recorded under. A handler that returned is recorded by
    /// what it returned, even if its lease was lost meanwhile and the result is discarded.
    fn outcome(&self) -> HandlerOutcome {
        match self {
            Ending::Joined(Ok(Outcome::Complete)) => HandlerOutcome::Complete,
            Ending::Joined(Ok(Outcome::Retry { .. } | Outcome::RetryAfter { .. })) => {
                HandlerOutcome::Retry
            }
            Ending::Joined(Ok(Outcome::Fail { .. })) => HandlerOutcome::Fail,
            Ending::Joined(Ok(Outcome::Overloaded { .. })) => HandlerOutcome::Overloaded,
            Ending::Joined(Err(error)) if error.is_panic() => HandlerOutcome::Panic,
            Ending::Joined(Err(_)) | Ending::Cancelled => HandlerOutcome::Cancelled,
            Ending::TimedOut => HandlerOutcome::Timeout,
        }
    }
}

/// Runs the handler under its timeout and cancellation. `None` means the lease was lost and
/// nothing must be settled.
async fn attempt<B: Broker>(
    runtime: &Runtime<B>,
    ctx: &TaskContext,
    queue: &QueueCapacity,
    future: impl Future<Output = Outcome> + Send + 'static,
    timeout: Duration,
    span: &Span,
) -> (Option<Action>, Signal) {
    let started = Instant::now();
    let mut handler = tokio::spawn(future);
    let ending = tokio::select! {
        biased;
        joined = &mut handler => Ending::Joined(joined),
        () = ctx.cancellation().cancelled() => Ending::Cancelled,
        () = tokio::time::sleep(timeout) => Ending::TimedOut,
    };
    queue
        .durations
        .record(ctx.kind(), ending.outcome(), started.elapsed());
    if !matches!(ending, Ending::Joined(_)) {
        ctx.cancel();
        handler.abort();
        // Wait until the handler is dropped, so its slot is free only once it is gone. An
        // outcome it produced meanwhile is discarded.
        let _ = handler.await;
    }
    match ending {
        // The lease was lost while the handler finished (an effect's confirmation was
        // refused, say): whatever it returned, the task is another reservation's now.
        Ending::Joined(_) | Ending::Cancelled if ctx.lease_lost() => {
            span.record("outcome", "lease_lost");
            tracing::warn!(
                task = %ctx.id(),
                trace_id = %ctx.trace_id(),
                kind = ctx.kind(),
                fence = %ctx.fence(),
                "lease lost: handler stopped and its result discarded"
            );
            (None, Signal::Neutral)
        }
        Ending::Joined(Ok(outcome)) => {
            let signal = match &outcome {
                Outcome::Complete => {
                    span.record("outcome", "completed");
                    Signal::Success
                }
                Outcome::Overloaded { error, retry_after } => {
                    span.record("outcome", "overloaded");
                    runtime.counters.add(Count::Overloaded, 1);
                    tracing::info!(
                        task = %ctx.id(),
                        kind = ctx.kind(),
                        %error,
                        ?retry_after,
                        "the downstream is overloaded; retrying later"
                    );
                    Signal::Overloaded
                }
                _ => {
                    span.record("outcome", "failed");
                    Signal::Neutral
                }
            };
            let action = match outcome.into_failure() {
                None => Action::Ack,
                Some((error, retry)) => Action::Fail { error, retry },
            };
            (Some(action), signal)
        }
        Ending::Joined(Err(error)) if error.is_panic() => {
            span.record("outcome", "panicked");
            runtime.counters.add(Count::Panicked, 1);
            let message = panic_message(error.into_panic());
            tracing::warn!(
                task = %ctx.id(),
                trace_id = %ctx.trace_id(),
                kind = ctx.kind(),
                %message,
                "handler panicked"
            );
            let action = Action::Fail {
                error: format!("handler panicked: {message}"),
                retry: RetryDecision::Backoff,
            };
            (Some(action), Signal::Neutral)
        }
        Ending::Joined(Err(_)) => {
            // Only the runtime shutting down cancels a handler task this supervisor did not
            // abort.
            span.record("outcome", "failed");
            let action = Action::Fail {
                error: "the handler was cancelled by the runtime".to_owned(),
                retry: RetryDecision::Backoff,
            };
            (Some(action), Signal::Neutral)
        }
        Ending::TimedOut => {
            span.record("outcome", "timed_out");
            runtime.counters.add(Count::TimedOut, 1);
            let error = format!(
                "timed out after {}",
                floodway_core::duration::format(timeout)
            );
            tracing::warn!(
                task = %ctx.id(),
                trace_id = %ctx.trace_id(),
                kind = ctx.kind(),
                %error,
                "handler timed out"
            );
            let action = Action::Fail {
                error,
                retry: RetryDecision::Backoff,
            };
            (Some(action), Signal::TimedOut)
        }
        Ending::Cancelled => {
            span.record("outcome", "released");
            (Some(Action::Release), Signal::Neutral)
        }
    }
}

/// The message of a panic, when it is a string (as `panic!` with a message makes it).
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_recovered() {
        assert_eq!(panic_message(Box::new("boom")), "boom");
        assert_eq!(panic_message(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_message(Box::new(42)), "a panic without a message");
    }
}
