//! Queues: statistics, configuration, pause and resume.

use axum::Json;
use axum::extract::State;

use crate::app::{App, AppState};
use crate::auth::Caller;
use crate::config::Scope;
use crate::error::ApiError;
use crate::extract::{JsonBytes, QueuePath, parse};
use crate::wire::{ErrorBody, QueueConfig, QueueList, QueueStats};

const ANY: &[Scope] = &[Scope::Produce, Scope::Consume, Scope::Admin];

/// Every queue the token may see (any scope), with its statistics.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "queues",
    responses(
        (status = 200, description = "The queues, by name.", body = QueueList),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<QueueList>, ApiError> {
    let stats = app.broker.stats(None).await?;
    let queues = stats
        .iter()
        .filter(|s| app.auth.allows(caller, ANY, s.queue.as_str()))
        .map(QueueStats::from_core)
        .collect();
    Ok(Json(QueueList { queues }))
}

/// One queue: configuration, tasks per state, totals.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}",
    tag = "queues",
    params(super::QueueParam),
    responses(
        (status = 200, description = "The queue.", body = QueueStats),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token has no scope on this queue.", body = ErrorBody),
        (status = 404, description = "No such queue.", body = ErrorBody),
        (status = 422, description = "The queue name is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    State(app): State<AppState>,
    caller: Caller,
    QueuePath(queue): QueuePath,
) -> Result<Json<QueueStats>, ApiError> {
    app.auth.require(caller, ANY, queue.as_str())?;
    stats(&app, &queue).await.map(Json)
}

pub(crate) async fn stats(
    app: &App,
    queue: &floodway_core::QueueName,
) -> Result<QueueStats, ApiError> {
    let stats = app.broker.stats(Some(queue)).await?;
    stats
        .first()
        .map(QueueStats::from_core)
        .ok_or_else(|| floodway_core::BrokerError::UnknownQueue(queue.clone()).into())
}

/// Replace a queue's configuration, creating the queue if needed.
///
/// Missing fields take their defaults, so `{}` resets the queue to the default configuration.
/// The body is required. The backpressure settings (`rate_limit`, `key_rate_limit`,
/// `concurrency_max`, `key_concurrency_max`, `watermarks`) and the default `ttl` take effect
/// at once; a value out of range is refused with 422 naming the field (`watermarks` when
/// `low` is not below `high`).
/// The tasks in the queue are kept.
#[utoipa::path(
    put,
    path = "/v1/queues/{queue}",
    tag = "queues",
    params(super::QueueParam),
    request_body(content = QueueConfig, content_type = "application/json"),
    responses(
        (status = 200, description = "The queue with its new configuration.", body = QueueStats),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin` on this queue.", body = ErrorBody),
        (status = 413, description = "The body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A field is invalid; `details.field` names it.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn configure(
    State(app): State<AppState>,
    caller: Caller,
    QueuePath(queue): QueuePath,
    JsonBytes(body): JsonBytes,
) -> Result<Json<QueueStats>, ApiError> {
    app.auth.require(caller, &[Scope::Admin], queue.as_str())?;
    if body.is_empty() {
        return Err(ApiError::invalid_field(
            "body",
            "this call needs a JSON body; {} sets the default configuration",
        ));
    }
    let config: QueueConfig = parse(&body)?;
    let config = config.into_core();
    // The broker checks it too; checking here names the field (`watermarks`, `rate_limit`)
    // the same way whatever the broker.
    config.validate()?;
    app.broker.configure(&queue, config).await?;
    stats(&app, &queue).await.map(Json)
}

/// Stop workers from reserving from a queue; enqueue keeps working.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/pause",
    tag = "queues",
    params(super::QueueParam),
    responses(
        (status = 200, description = "The queue, paused.", body = QueueStats),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin` on this queue.", body = ErrorBody),
        (status = 404, description = "No such queue.", body = ErrorBody),
        (status = 422, description = "The queue name is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pause(
    State(app): State<AppState>,
    caller: Caller,
    QueuePath(queue): QueuePath,
) -> Result<Json<QueueStats>, ApiError> {
    app.auth.require(caller, &[Scope::Admin], queue.as_str())?;
    app.broker.pause(&queue).await?;
    stats(&app, &queue).await.map(Json)
}

/// Let workers reserve from a paused queue again.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/resume",
    tag = "queues",
    params(super::QueueParam),
    responses(
        (status = 200, description = "The queue, running.", body = QueueStats),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin` on this queue.", body = ErrorBody),
        (status = 404, description = "No such queue.", body = ErrorBody),
        (status = 422, description = "The queue name is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume(
    State(app): State<AppState>,
    caller: Caller,
    QueuePath(queue): QueuePath,
) -> Result<Json<QueueStats>, ApiError> {
    app.auth.require(caller, &[Scope::Admin], queue.as_str())?;
    app.broker.resume(&queue).await?;
    stats(&app, &queue).await.map(Json)
}
