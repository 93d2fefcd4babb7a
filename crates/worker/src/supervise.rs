//! The supervisor of one attempt: runs its handler and turns however it ended into a
//! settlement for the completer.
//!
//! The handler runs in a task of its own so that a panic is caught (as a `JoinError`) instead
//! of taking the worker down. The supervisor waits for the first of: the handler's outcome,
//! the attempt's timeout, or its cancellation (lease lost, or end of the shutdown grace
//! period). When it stops a handler, it fires the attempt's cancellation, aborts the handler
//! task and waits for it to be dropped, so the handler slot is free only once the handler is
//! gone.
//!
//! | how it ended            | settlement                                  | counted as   |
//! |-------------------------|---------------------------------------------|--------------|
//! | outcome                 | ack, or fail with the outcome's decision    | by the broker's answer |
//! | no handler for the kind | fail, retry with backoff                    | by the broker's answer |
//! | payload does not decode | fail, permanent                             | by the broker's answer |
//! | panic                   | fail, retry with backoff                    | `panicked`   |
//! | timeout                 | fail, retry with backoff                    | `timed_out`  |
//! | lease lost              | none: the result is discarded               | `lease_lost` |
//! | grace period over       | release, no attempt spent                   | `released`   |

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use floodway_core::{Broker, RetryDecision};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinError;
use tracing::Instrument;

use crate::complete::{Action, Settlement};
use crate::context::TaskContext;
use crate::handler::HandlerFuture;
use crate::outcome::Outcome;
use crate::report::Count;
use crate::worker::Runtime;

/// Runs one attempt and hands its settlement to the completer, with the attempt's handler
/// slot. `timeout` is the task's own timeout, if it has one.
pub(crate) async fn run<B: Broker>(
    runtime: Arc<Runtime<B>>,
    ctx: TaskContext,
    payload: Vec<u8>,
    timeout: Option<Duration>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let action = match runtime.handlers.get(ctx.kind()) {
        None => {
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
        Some(handler) => match handler.start(ctx.clone(), payload) {
            Err(error) => {
                tracing::warn!(task = %ctx.id(), %error, "payload does not decode");
                Some(Action::Fail {
                    error,
                    retry: RetryDecision::Never,
                })
            }
            Ok(future) => attempt(&runtime, &ctx, future, timeout.unwrap_or(handler.timeout)).await,
        },
    };
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

/// How the wait for a handler ended.
enum Ending {
    Joined(Result<Outcome, JoinError>),
    Cancelled,
    TimedOut,
}

/// Runs the handler under its timeout and cancellation. `None` means the lease was lost and
/// nothing must be settled.
async fn attempt<B: Broker>(
    runtime: &Runtime<B>,
    ctx: &TaskContext,
    future: HandlerFuture,
    timeout: Duration,
) -> Option<Action> {
    let span = tracing::info_span!(
        "task",
        id = %ctx.id(),
        kind = ctx.kind(),
        attempt = ctx.attempt()
    );
    let mut handler = tokio::spawn(future.instrument(span));
    let ending = tokio::select! {
        biased;
        joined = &mut handler => Ending::Joined(joined),
        () = ctx.cancellation().cancelled() => Ending::Cancelled,
        () = tokio::time::sleep(timeout) => Ending::TimedOut,
    };
    if !matches!(ending, Ending::Joined(_)) {
        ctx.cancel();
        handler.abort();
        // Wait until the handler is dropped, so its slot is free only once it is gone. An
        // outcome it produced meanwhile is discarded.
        let _ = handler.await;
    }
    match ending {
        Ending::Joined(Ok(outcome)) => Some(match outcome.into_failure() {
            None => Action::Ack,
            Some((error, retry)) => Action::Fail { error, retry },
        }),
        Ending::Joined(Err(error)) if error.is_panic() => {
            runtime.counters.add(Count::Panicked, 1);
            let message = panic_message(error.into_panic());
            tracing::warn!(task = %ctx.id(), kind = ctx.kind(), %message, "handler panicked");
            Some(Action::Fail {
                error: format!("handler panicked: {message}"),
                retry: RetryDecision::Backoff,
            })
        }
        Ending::Joined(Err(_)) => {
            // Only the runtime shutting down cancels a handler task this supervisor did not
            // abort.
            Some(Action::Fail {
                error: "the handler was cancelled by the runtime".to_owned(),
                retry: RetryDecision::Backoff,
            })
        }
        Ending::TimedOut => {
            runtime.counters.add(Count::TimedOut, 1);
            let error = format!(
                "timed out after {}",
                floodway_core::duration::format(timeout)
            );
            tracing::warn!(task = %ctx.id(), kind = ctx.kind(), %error, "handler timed out");
            Some(Action::Fail {
                error,
                retry: RetryDecision::Backoff,
            })
        }
        Ending::Cancelled if ctx.lease_lost() => {
            tracing::warn!(
                task = %ctx.id(),
                kind = ctx.kind(),
                fence = %ctx.fence(),
                "lease lost: handler stopped and its result discarded"
            );
            None
        }
        Ending::Cancelled => Some(Action::Release),
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
