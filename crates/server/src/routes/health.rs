//! Liveness (`/healthz`), readiness (`/readyz`) and metrics (`/metrics`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Caller;
use crate::config::Scope;
use crate::error::ApiError;
use crate::wire::{BrokerInfo, Capabilities, ErrorBody};

/// A health answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready` (the broker answers).
    pub status: String,
}

/// Liveness: the process serves HTTP. Needs no token.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The server is alive.", body = Health))
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness: the broker can serve calls now. Needs no token. Use it as the readiness probe:
/// a server whose broker is unreachable or has failed answers 503.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The broker answers.", body = Health),
        (status = 503, description = "The broker cannot serve calls.", body = ErrorBody),
    )
)]
pub(crate) async fn readyz(State(app): State<AppState>) -> Result<Json<Health>, ApiError> {
    app.broker.ping().await?;
    Ok(Json(Health {
        status: "ready".to_owned(),
    }))
}

/// Prometheus metrics: request counts, and depth, age, totals and backpressure (refusing,
/// enqueues refused above the high watermark, reserves throttled by rate or concurrency,
/// effects recorded) of each queue the token administers.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The Prometheus text exposition format, version 0.0.4.",
            body = String, content_type = "text/plain"),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `admin`.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn metrics(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    app.auth.require_somewhere(caller, &[Scope::Admin])?;
    let stats = app.broker.stats(None).await?;
    let shown: Vec<_> = stats
        .into_iter()
        .filter(|s| app.auth.allows(caller, &[Scope::Admin], s.queue.as_str()))
        .collect();
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        app.metrics.render(&shown),
    ))
}

/// The broker behind the API: which optional behaviours it has. Needs a valid token, no scope.
#[utoipa::path(
    get,
    path = "/v1/broker",
    tag = "operations",
    responses(
        (status = 200, description = "The broker's capabilities.", body = BrokerInfo),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn broker(State(app): State<AppState>, _caller: Caller) -> Json<BrokerInfo> {
    Json(BrokerInfo {
        capabilities: Capabilities::from_core(app.broker.capabilities()),
    })
}
