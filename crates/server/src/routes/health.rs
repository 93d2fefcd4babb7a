//! Liveness (`/healthz`), readiness (`/readyz`) and metrics (`/metrics`).

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use floodway_metrics::Samples;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Caller;
use crate::config::Scope;
use crate::error::ApiError;
use crate::metrics::exposition;
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

/// Prometheus metrics: the server's requests (counts and durations), what the process
/// registered in its registry, and the depth, age, backlog, totals, start latencies and
/// backpressure of each queue the token administers (docs/metrics.md lists them all).
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
) -> Result<Response, ApiError> {
    app.auth.require_somewhere(caller, &[Scope::Admin])?;
    let stats = app.broker.stats(None).await?;
    let shown: Vec<_> = stats
        .into_iter()
        .filter(|s| app.auth.allows(caller, &[Scope::Admin], s.queue.as_str()))
        .collect();
    let mut samples = Samples::new();
    app.queues.collect(&shown, &mut samples);
    let mut registered = app.registry.gather().await?;
    // Series of the process's own sources that name a queue (a worker's) are shown only to
    // callers who may administer that queue, like the queues themselves.
    registered.retain(|sample| {
        sample
            .metric
            .labels
            .iter()
            .position(|label| *label == "queue")
            .is_none_or(|at| app.auth.allows(caller, &[Scope::Admin], &sample.labels[at]))
    });
    samples.extend(registered);
    Ok(exposition(floodway_metrics::encode(&samples)))
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
