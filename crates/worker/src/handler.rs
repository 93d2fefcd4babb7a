//! Handlers: the user's async functions, registered by kind and stored behind one erased type.
//!
//! A typed handler takes its payload decoded from JSON into any `T: DeserializeOwned`; a raw
//! handler takes the payload bytes as they are. Both are stored as a [`Handler`], which decodes
//! (when typed) and returns the handler's future, so the rest of the worker never sees `T`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::context::TaskContext;
use crate::outcome::Outcome;

/// A started handler: the future the worker spawns and supervises.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

type StartFn = dyn Fn(TaskContext, Vec<u8>) -> Result<HandlerFuture, String> + Send + Sync;

/// A registered handler and the timeout of its kind.
#[derive(Clone)]
pub(crate) struct Handler {
    /// Decodes the payload and calls the user's function; `Err` carries the decode error.
    start: Arc<StartFn>,
    /// How long one attempt may run unless the task sets its own timeout. The builder sets it
    /// from the worker's and the kind's timeouts.
    pub(crate) timeout: Duration,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// A handler whose payload is JSON decoded into `T`.
    pub(crate) fn typed<T, F, Fut, O>(function: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(TaskContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: Into<Outcome> + 'static,
    {
        let start = move |ctx: TaskContext, payload: Vec<u8>| {
            let input: T = serde_json::from_slice(&payload).map_err(|error| {
                format!(
                    "cannot decode the payload of kind {:?} as {}: {error}",
                    ctx.kind(),
                    std::any::type_name::<T>()
                )
            })?;
            let future = function(ctx, input);
            Ok(Box::pin(async move { future.await.into() }) as HandlerFuture)
        };
        Handler {
            start: Arc::new(start),
            timeout: crate::limits::TIMEOUT_DEFAULT,
        }
    }

    /// A handler that takes the payload bytes undecoded.
    pub(crate) fn raw<F, Fut, O>(function: F) -> Self
    where
        F: Fn(TaskContext, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: Into<Outcome> + 'static,
    {
        let start = move |ctx: TaskContext, payload: Vec<u8>| {
            let future = function(ctx, payload);
            Ok(Box::pin(async move { future.await.into() }) as HandlerFuture)
        };
        Handler {
            start: Arc::new(start),
            timeout: crate::limits::TIMEOUT_DEFAULT,
        }
    }

    /// Decodes `payload` and calls the handler. The error names the kind, the target type and
    /// what serde found wrong; such a payload can never succeed, so it is a permanent failure.
    pub(crate) fn start(
        &self,
        ctx: TaskContext,
        payload: Vec<u8>,
    ) -> Result<HandlerFuture, String> {
        (self.start)(ctx, payload)
    }
}
