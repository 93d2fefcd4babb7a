//! Tasks: enqueue (one or a batch, idempotency keys honoured), get, list, cancel.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use floodway_core::{TaskFilter, TaskId, limits as core_limits};
use floodway_trace::Parent;
use serde::Deserialize;
use tracing::{Instrument, Level};
use utoipa::IntoParams;

use super::{authorize_tasks, check_batch};
use crate::app::AppState;
use crate::auth::Caller;
use crate::config::Scope;
use crate::error::ApiError;
use crate::extract::{
    IncomingTrace, JsonBytes, OneOrBatch, Query, QueuePath, TaskIdPath, parse_one_or_batch,
};
use crate::limits;
use crate::wire::{
    CancelBatch, CancelOne, DeadReason, EnqueueRequest, EnqueueResponse, EnqueuedTask, ErrorBody,
    LeaseResult, LeaseResults, Task, TaskBatch, TaskList, TaskSpec, TaskState,
};

/// Enqueue one task or a batch.
///
/// The body is one task, or `{"tasks": [...]}`. A batch is enqueued as a whole or not at all.
/// The answer lists one entry per task, in order; a task whose idempotency key was used within
/// the queue's window is not created again: its entry carries the first task's id and
/// `duplicate: true`. The response comes once the tasks are durable.
///
/// Backpressure: a queue at its `length_max` answers 429 `queue_full`, and a queue above its
/// high watermark answers 429 `queue_overloaded` until it is back at or below its low one
/// (`details` carry `length`, `high` and `low`). Both come with `Retry-After`; nothing was
/// written, so trying the same request again later is always safe.
///
/// Trace context: each task without a `traceparent` header gets one, so the worker's span
/// continues the trace: the request's `traceparent` (and `tracestate`) when it has one, else
/// a new trace started by the server's `enqueue` span.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/tasks",
    tag = "tasks",
    params(super::QueueParam, super::TraceParams),
    request_body(content = EnqueueRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "At least one task was created.", body = EnqueueResponse),
        (status = 200, description = "Nothing new was created: every task was a duplicate, or the batch was empty.", body = EnqueueResponse),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `produce` on this queue.", body = ErrorBody),
        (status = 413, description = "A payload, the batch or the body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A field is invalid; `details.field` names it.", body = ErrorBody),
        (status = 429, description = "The queue is full (`queue_full`), above its high watermark (`queue_overloaded`), or the token's rate limit is exhausted (`rate_limited`); nothing was written.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable; nothing was acknowledged.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn enqueue(
    State(app): State<AppState>,
    caller: Caller,
    QueuePath(queue): QueuePath,
    IncomingTrace(incoming): IncomingTrace,
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, Json<EnqueueResponse>), ApiError> {
    app.auth
        .require(caller, &[Scope::Produce], queue.as_str())?;
    let (specs, batch) = match parse_one_or_batch::<TaskSpec, TaskBatch>(&body, "tasks")? {
        OneOrBatch::One(spec) => (vec![spec], false),
        OneOrBatch::Batch(TaskBatch { tasks }) => (tasks, true),
    };
    check_batch(&app, specs.len())?;
    let tasks = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            spec.into_core().map_err(|error| {
                let field = if batch {
                    format!("tasks[{i}].{}", error.field)
                } else {
                    error.field.to_owned()
                };
                ApiError::invalid_field(field, error.reason)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let span = floodway_trace::span!(Level::INFO, "enqueue", queue = %queue, tasks = tasks.len());
    let parent = incoming.as_ref().map_or(Parent::Current, Parent::Remote);
    let own = floodway_trace::start(&span, parent);
    // The tasks' parent should be a span a trace backend will hold: this one when it is
    // exported to OpenTelemetry, else the caller's, passed on unchanged.
    let context = match &incoming {
        Some(incoming) if !floodway_trace::is_exported(&span) => incoming,
        _ => &own,
    };
    let mut tasks = tasks;
    context.inject(&mut tasks);
    let answers = app
        .broker
        .enqueue(&queue, tasks)
        .instrument(span.clone())
        .await?;
    let created = answers.iter().filter(|a| !a.duplicate).count();
    span.in_scope(|| tracing::debug!(created, "enqueued"));
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let tasks = answers
        .iter()
        .map(|a| EnqueuedTask {
            id: a.id,
            duplicate: a.duplicate,
        })
        .collect();
    Ok((status, Json(EnqueueResponse { tasks })))
}

/// One task, in any state.
///
/// A task of a queue the token may not consume from or administer is answered as unknown.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    tag = "tasks",
    params(super::TaskIdParam),
    responses(
        (status = 200, description = "The task.", body = Task),
        (status = 400, description = "The id is not a UUID.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    State(app): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<Task>, ApiError> {
    let task = app.broker.get(id).await?;
    if !app
        .auth
        .allows(caller, &[Scope::Consume, Scope::Admin], task.queue.as_str())
    {
        return Err(ApiError::unknown_task(id));
    }
    Ok(Json(Task::from_core(&task)))
}

/// The filters of a task listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only this queue's tasks. Required unless the token may consume from every queue.
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    queue: Option<String>,
    /// Only tasks in this state.
    #[param(inline)]
    state: Option<TaskState>,
    /// Only dead letters with this reason.
    #[param(inline)]
    dead_reason: Option<DeadReason>,
    /// Only tasks with ids greater than this (the previous page's `next_after`).
    #[param(
        format = Uuid,
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    after: Option<String>,
    /// Most tasks to return, 1 to 1,000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Tasks in id (creation) order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    params(ListParams),
    responses(
        (status = 200, description = "A page of tasks; pass `next_after` as `after` for the next.", body = TaskList),
        (status = 400, description = "A parameter does not parse.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `consume` on the queue (or on every queue, without `queue`).", body = ErrorBody),
        (status = 404, description = "The queue named does not exist.", body = ErrorBody),
        (status = 422, description = "A parameter is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<TaskList>, ApiError> {
    let filter = filter(
        &app,
        caller,
        &[Scope::Consume, Scope::Admin],
        params.queue.as_deref(),
        params.state.map(Into::into),
        params.dead_reason.map(Into::into),
        params.after.as_deref(),
        params.limit,
    )?;
    list_page(&app, filter).await.map(Json)
}

/// The filter of a listing, after checking the caller may see it.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per query parameter"
)]
pub(crate) fn filter(
    app: &crate::app::App,
    caller: Caller,
    scopes: &[Scope],
    queue: Option<&str>,
    state: Option<floodway_core::TaskState>,
    dead_reason: Option<floodway_core::DeadReason>,
    after: Option<&str>,
    limit: Option<usize>,
) -> Result<TaskFilter, ApiError> {
    let queue = queue.map(floodway_core::QueueName::new).transpose()?;
    match &queue {
        Some(queue) => app.auth.require(caller, scopes, queue.as_str())?,
        None => app.auth.require_every_queue(caller, scopes)?,
    }
    let after = after
        .map(|text| {
            text.parse::<TaskId>()
                .map_err(|error| ApiError::malformed(error.to_string()))
        })
        .transpose()?;
    let filter = TaskFilter {
        queue,
        state,
        dead_reason,
        after,
        limit: limit.unwrap_or(limits::LIST_LIMIT_DEFAULT),
    };
    filter.validate()?;
    Ok(filter)
}

/// One page of `filter`, with the cursor for the next when the page is full.
pub(crate) async fn list_page(
    app: &crate::app::App,
    filter: TaskFilter,
) -> Result<TaskList, ApiError> {
    let limit = filter.limit;
    let tasks = app.broker.list(filter).await?;
    let next_after = (tasks.len() == limit && limit <= core_limits::LIST_LIMIT_MAX)
        .then(|| tasks.last().map(|t| t.id))
        .flatten();
    Ok(TaskList {
        tasks: tasks.iter().map(Task::from_core).collect(),
        next_after,
    })
}

/// Cancel tasks that have not started (scheduled, ready or retrying).
///
/// The body is `{"id": ...}` (answered with the result, or 404/409 when refused) or
/// `{"ids": [...]}` (one result per id, in order).
#[utoipa::path(
    post,
    path = "/v1/tasks/cancel",
    tag = "tasks",
    request_body(content = CancelRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One task: it was cancelled. Several: one result each.", body = CancelAnswer),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `produce` or `admin` on a task's queue.", body = ErrorBody),
        (status = 404, description = "One task: no such task.", body = ErrorBody),
        (status = 409, description = "One task: it has started or finished.", body = ErrorBody),
        (status = 413, description = "Too many ids, or the body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A field is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let (ids, one) = match parse_one_or_batch::<CancelOne, CancelBatch>(&body, "ids")? {
        OneOrBatch::One(CancelOne { id }) => (vec![id], true),
        OneOrBatch::Batch(CancelBatch { ids }) => (ids, false),
    };
    check_batch(&app, ids.len())?;
    authorize_tasks(
        &app,
        caller,
        &[Scope::Produce, Scope::Admin],
        ids.iter().copied(),
    )
    .await?;
    let results = app.broker.cancel(&ids).await?;
    if one {
        return match &results[0] {
            Ok(()) => Ok(Json(LeaseResult::from_core(&Ok(()))).into_response()),
            Err(refusal) => Err(ApiError::refused(refusal)),
        };
    }
    Ok(Json(LeaseResults {
        results: results.iter().map(LeaseResult::from_core).collect(),
    })
    .into_response())
}

/// The body of a cancel request: one id, or several.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "a schema only; the body is parsed as CancelOne or CancelBatch"
)]
pub(crate) enum CancelRequest {
    /// Several: `{"ids": [...]}`.
    Batch(CancelBatch),
    /// One: `{"id": ...}`.
    One(CancelOne),
}

/// The answer to a cancel request: one result, or one per id.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema only")]
pub(crate) enum CancelAnswer {
    /// Several: one result per id, in order.
    Batch(LeaseResults),
    /// One: the result.
    One(LeaseResult),
}
