//! The handlers of API v1, one module per area. Each handler authorizes the caller for the
//! queue it touches, parses its body strictly, makes one broker call, and answers with wire
//! types; every failure is an [`ApiError`].
//!
//! Each handler's `#[utoipa::path]` attribute is its entry in the OpenAPI document, and the
//! router is built from the same list of handlers (`app::routes`), so a route cannot exist
//! without its documentation or the other way round.

pub(crate) mod dead;
pub(crate) mod health;
pub(crate) mod leases;
pub(crate) mod maintenance;
pub(crate) mod queues;
pub(crate) mod tasks;

use floodway_core::{BrokerError, TaskId};

use crate::app::App;
use crate::auth::Caller;
use crate::config::Scope;
use crate::error::ApiError;

/// 413 `batch_too_large` when a request carries more items than the server allows.
pub(crate) fn check_batch(app: &App, size: usize) -> Result<(), ApiError> {
    let max = app.limits.batch_size_max;
    if size > max {
        return Err(BrokerError::BatchTooLarge { size, max }.into());
    }
    Ok(())
}

/// 403 unless `caller` has one of `scopes` on the queue of every task in `ids`.
///
/// Lease tokens and task ids do not name their queue, so for a token limited to some queues
/// each task is looked up (one broker read per item). A token with the scope on every queue,
/// and every caller when authentication is off, skips the lookups. An id the broker does not
/// know passes: the call itself refuses it as `unknown_task`, as it would for anyone.
pub(crate) async fn authorize_tasks(
    app: &App,
    caller: Caller,
    scopes: &[Scope],
    ids: impl Iterator<Item = TaskId>,
) -> Result<(), ApiError> {
    if app.auth.allows_every_queue(caller, scopes) {
        return Ok(());
    }
    for id in ids {
        match app.broker.get(id).await {
            Ok(task) => app.auth.require(caller, scopes, task.queue.as_str())?,
            Err(BrokerError::UnknownTask(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// The `{queue}` path parameter, as the OpenAPI document describes it (`QueuePath` parses it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "a schema only")]
pub(crate) struct QueueParam {
    /// The queue: 1 to 128 ASCII letters, digits and `_ - . :`.
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$", min_length = 1, max_length = 128)]
    queue: String,
}

/// The W3C trace context headers, as the OpenAPI document describes them (`IncomingTrace`
/// reads them).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "a schema only")]
pub(crate) struct TraceParams {
    /// The caller's trace (W3C Trace Context): the tasks that lack a `traceparent` header
    /// continue it. A malformed value is ignored.
    #[param(example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    traceparent: Option<String>,
    /// Vendor trace data carried with `traceparent`.
    tracestate: Option<String>,
}

/// The `{id}` path parameter, as the OpenAPI document describes it (`TaskIdPath` parses it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "a schema only")]
pub(crate) struct TaskIdParam {
    /// The task's id, a UUID.
    #[param(
        format = Uuid,
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    id: String,
}
