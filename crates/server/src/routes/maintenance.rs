//! Maintenance: make the broker promote due tasks and reap expired leases now. Brokers do
//! both on their own; these calls are for operators, and for clients that drive a broker's
//! time by hand (the HTTP broker implements `Broker::promote` and `Broker::reap` with them).

use axum::Json;
use axum::extract::State;

use crate::app::AppState;
use crate::auth::Caller;
use crate::config::Scope;
use crate::error::ApiError;
use crate::wire::{CountResponse, ErrorBody};

/// Move scheduled and retrying tasks whose time has come to ready, and dead-letter waiting
/// tasks whose time to live has passed, in every queue.
#[utoipa::path(
    post,
    path = "/v1/maintenance/promote",
    tag = "operations",
    responses(
        (status = 200, description = "How many tasks moved.", body = CountResponse),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin` on every queue.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn promote(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<CountResponse>, ApiError> {
    app.auth.require_every_queue(caller, &[Scope::Admin])?;
    let count = app.broker.promote().await?;
    Ok(Json(CountResponse { count }))
}

/// Take back tasks whose lease expired, in every queue: to ready, or to the dead letters if
/// that was their last attempt.
#[utoipa::path(
    post,
    path = "/v1/maintenance/reap",
    tag = "operations",
    responses(
        (status = 200, description = "How many leases were taken back.", body = CountResponse),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin` on every queue.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reap(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<CountResponse>, ApiError> {
    app.auth.require_every_queue(caller, &[Scope::Admin])?;
    let count = app.broker.reap().await?;
    Ok(Json(CountResponse { count }))
}
