//! Dead letters: list (filtered by queue and reason), replay and purge.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::authorize_tasks;
use super::tasks::{filter, list_page};
use crate::app::{App, AppState};
use crate::auth::Caller;
use crate::config::Scope;
use crate::error::ApiError;
use crate::extract::{JsonBytes, Query, parse};
use crate::wire::{
    CountResponse, DEAD_SELECTOR_LIMIT_DEFAULT, DeadReason, DeadSelector, ErrorBody, TaskList,
};

const ADMIN: &[Scope] = &[Scope::Admin];

/// The filters of a dead-letter listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only this queue's dead letters. Required unless the token administers every queue.
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    queue: Option<String>,
    /// Only those with this reason.
    #[param(inline)]
    reason: Option<DeadReason>,
    /// Only those with ids greater than this (the previous page's `next_after`).
    #[param(
        format = Uuid,
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    after: Option<String>,
    /// Most to return, 1 to 1,000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Dead letters, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "dead letters",
    params(ListParams),
    responses(
        (status = 200, description = "A page of dead letters; pass `next_after` as `after` for the next.", body = TaskList),
        (status = 400, description = "A parameter does not parse.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin` on the queue (or on every queue, without `queue`).", body = ErrorBody),
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
        ADMIN,
        params.queue.as_deref(),
        Some(floodway_core::TaskState::Dead),
        params.reason.map(Into::into),
        params.after.as_deref(),
        params.limit,
    )?;
    list_page(&app, filter).await.map(Json)
}

/// Move dead letters back to ready with fresh attempts.
///
/// The body names the tasks (`{"ids": [...]}`; ids that are not dead letters are skipped) or
/// conditions (`{"queue", "reason", "limit"}`, each optional: the oldest matching first).
#[utoipa::path(
    post,
    path = "/v1/dead-letters/replay",
    tag = "dead letters",
    request_body(content = DeadSelector, content_type = "application/json"),
    responses(
        (status = 200, description = "How many dead letters were replayed.", body = CountResponse),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin` on a queue involved.", body = ErrorBody),
        (status = 404, description = "The queue named does not exist.", body = ErrorBody),
        (status = 413, description = "Too many ids, or the body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A field is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable; the outcome is unknown.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn replay(
    State(app): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Json<CountResponse>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_field(
            "body",
            "this call needs a JSON body",
        ));
    }
    let selector = selector(&app, caller, parse(&body)?).await?;
    let count = app.broker.replay(selector).await?;
    Ok(Json(CountResponse { count }))
}

/// Delete dead letters for ever.
///
/// The body selects them as for replay.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/purge",
    tag = "dead letters",
    request_body(content = DeadSelector, content_type = "application/json"),
    responses(
        (status = 200, description = "How many dead letters were deleted.", body = CountResponse),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin` on a queue involved.", body = ErrorBody),
        (status = 404, description = "The queue named does not exist.", body = ErrorBody),
        (status = 413, description = "Too many ids, or the body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A field is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable; the outcome is unknown.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn purge(
    State(app): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Json<CountResponse>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_field(
            "body",
            "this call needs a JSON body",
        ));
    }
    let selector = selector(&app, caller, parse(&body)?).await?;
    let count = app.broker.purge(selector).await?;
    Ok(Json(CountResponse { count }))
}

/// The conditions of a purge by query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PurgeParams {
    /// Only this queue's dead letters. Required unless the token administers every queue.
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    queue: Option<String>,
    /// Only those with this reason.
    #[param(inline)]
    reason: Option<DeadReason>,
    /// Most to delete, oldest first, 1 to 1,000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Delete the oldest dead letters matching the query, for ever.
#[utoipa::path(
    delete,
    path = "/v1/dead-letters",
    tag = "dead letters",
    params(PurgeParams),
    responses(
        (status = 200, description = "How many dead letters were deleted.", body = CountResponse),
        (status = 400, description = "A parameter does not parse.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin` on the queue (or on every queue, without `queue`).", body = ErrorBody),
        (status = 404, description = "The queue named does not exist.", body = ErrorBody),
        (status = 422, description = "A parameter is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable; the outcome is unknown.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn purge_matching(
    State(app): State<AppState>,
    caller: Caller,
    Query(params): Query<PurgeParams>,
) -> Result<Json<CountResponse>, ApiError> {
    let queue = params
        .queue
        .as_deref()
        .map(floodway_core::QueueName::new)
        .transpose()?;
    let selector = selector(
        &app,
        caller,
        DeadSelector {
            ids: None,
            queue,
            reason: params.reason,
            limit: Some(params.limit.unwrap_or(DEAD_SELECTOR_LIMIT_DEFAULT)),
        },
    )
    .await?;
    let count = app.broker.purge(selector).await?;
    Ok(Json(CountResponse { count }))
}

/// The core selector, after checking the caller administers every queue it touches.
async fn selector(
    app: &App,
    caller: Caller,
    selector: DeadSelector,
) -> Result<floodway_core::DeadSelector, ApiError> {
    let selector = selector.into_core()?;
    selector.validate()?;
    match &selector {
        floodway_core::DeadSelector::Ids(ids) => {
            super::check_batch(app, ids.len())?;
            authorize_tasks(app, caller, ADMIN, ids.iter().copied()).await?;
        }
        floodway_core::DeadSelector::Matching { queue: Some(q), .. } => {
            app.auth.require(caller, ADMIN, q.as_str())?;
        }
        floodway_core::DeadSelector::Matching { queue: None, .. } => {
            app.auth.require_every_queue(caller, ADMIN)?;
        }
    }
    Ok(selector)
}
