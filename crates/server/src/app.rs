//! The application: shared state, the router with every route and its OpenAPI operation, and
//! the layers around them (body limit, request timeout, request log and count).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Auth;
use crate::config::{Limits, ServerConfig};
use crate::erased::DynBroker;
use crate::error::ApiError;
use crate::metrics::HttpMetrics;
use crate::routes::{dead, health, leases, maintenance, queues, tasks};
use crate::wire::ErrorCode;

/// What every handler shares. Built once by [`crate::Server::new`].
pub(crate) struct App {
    /// The broker behind the API.
    pub(crate) broker: Arc<dyn DynBroker>,
    /// Tokens, scopes and rate limits.
    pub(crate) auth: Auth,
    /// The request limits in force.
    pub(crate) limits: Limits,
    /// Request counts and durations, also registered in `registry`.
    pub(crate) metrics: Arc<HttpMetrics>,
    /// What `/metrics` exports besides the queues: the request metrics, and whatever the
    /// process registered ([`crate::Server::registry`]).
    pub(crate) registry: Arc<floodway_metrics::Registry>,
    /// Turns the broker's statistics into the queue metrics, with each queue's completion
    /// rate measured between scrapes.
    pub(crate) queues: floodway_metrics::QueueMetrics,
}

/// The state handlers extract.
pub(crate) type AppState = Arc<App>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "floodway",
        description = "A durable task queue over HTTP/JSON: enqueue tasks, reserve them with \
            leases (long poll), and ack, fail, extend or release them, or record their side \
            effects, from any language. \
            Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "tasks", description = "Enqueue, inspect and cancel tasks."),
        (name = "leases", description = "Reserve tasks and settle their leases (workers)."),
        (name = "queues", description = "Queue statistics and configuration."),
        (name = "dead letters", description = "List, replay and purge dead letters."),
        (name = "operations", description = "Health, readiness, metrics, maintenance."),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The router of every API route, and the OpenAPI document generated from the same handlers.
pub(crate) fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut api = ApiDoc::openapi();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    OpenApiRouter::with_openapi(api)
        .routes(routes!(tasks::enqueue))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::cancel))
        .routes(routes!(leases::reserve))
        .routes(routes!(leases::ack))
        .routes(routes!(leases::fail))
        .routes(routes!(leases::extend))
        .routes(routes!(leases::release))
        .routes(routes!(leases::record_effects))
        .routes(routes!(queues::list))
        .routes(routes!(queues::get, queues::configure))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(dead::list, dead::purge_matching))
        .routes(routes!(dead::replay))
        .routes(routes!(dead::purge))
        .routes(routes!(maintenance::promote))
        .routes(routes!(maintenance::reap))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::broker))
        .split_for_parts()
}

/// The OpenAPI document of the API, as `/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The whole application: the routes, `/openapi.json`, the dashboard (unless turned off), the
/// fallbacks, and the layers.
pub(crate) fn router(app: AppState, config: &ServerConfig) -> Router {
    let (routes, api) = routes();
    let spec = Arc::new(api.to_json().expect("the OpenAPI document serializes"));
    let routes = if config.dashboard {
        routes.merge(crate::dashboard::routes())
    } else {
        routes
    };
    routes
        .route(
            "/openapi.json",
            get(move || {
                let spec = spec.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        spec.as_str().to_owned(),
                    )
                }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .layer(DefaultBodyLimit::max(config.limits.body_bytes_max))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take this method; see /openapi.json",
    )
}

/// Runs a request under the request timeout, in a span, and counts it by route and status.
///
/// The span carries the method, the route template (never the query string, which could hold
/// anything) and, once authenticated, the token's name; never a header value.
async fn track(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The template of the matched route (a shared pointer, not a copy).
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::debug_span!(
        "request",
        %method,
        route = %route,
        token = tracing::field::Empty,
    );
    let response = match tokio::time::timeout(app.limits.request_timeout, next.run(request))
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!(
                "the request did not finish within {} (limits.request_timeout); it may or may \
                 not have taken effect",
                floodway_core::duration::format(app.limits.request_timeout)
            ),
        )
        .into_response(),
    };
    let status = response.status().as_u16();
    app.metrics
        .record(route, method.as_str(), status, started.elapsed());
    span.in_scope(|| {
        tracing::debug!(
            status,
            elapsed_us = started.elapsed().as_micros() as u64,
            "request answered"
        );
    });
    response
}
