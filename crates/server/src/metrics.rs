//! Metrics: the server's own (requests by route, method and status, and their durations), the
//! `/metrics` exposition of `floodway serve`, and the exporter a library user mounts.
//!
//! Every metric is declared in [`floodway_metrics::catalog`]; this module only feeds them.
//! `floodway serve` answers `/metrics` with its [`Registry`] (the request counters below, and
//! whatever else the process registered, [`crate::Server::registry`]) and the statistics of
//! every queue the caller may administer, read from the broker at that moment.
//!
//! A library user who runs workers or producers in their own process exposes them with
//! [`router`] (an axum `Router` to merge into their app, or to serve with [`serve`]), or with
//! [`Registry::encode`] in any other framework:
//!
//! ```no_run
//! # async fn example(broker: std::sync::Arc<floodway_embedded::EmbeddedBroker>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use floodway_metrics::{BrokerSource, Registry};
//!
//! let registry = Arc::new(Registry::new());
//! registry.register(Arc::new(BrokerSource::new(broker.clone())))?; // the queues, if wanted
//! // Worker::builder(broker).metrics(&registry) ... registers the worker when built.
//! let app = floodway_server::metrics::router(registry.clone())
//!     .merge(floodway_server::metrics::probes(broker));            // /healthz, /readyz
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9464").await?;
//! floodway_server::metrics::serve(listener, app, std::future::pending()).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use floodway_core::Broker;
use floodway_metrics::catalog::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL, Kind};
use floodway_metrics::{
    CONTENT_TYPE, Histogram, MetricsError, Registry, Samples, Source, SourceFuture,
};
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::limits;
use crate::routes::health::Health;
use crate::wire::ErrorCode;

/// The server's request counters and durations, a [`Source`] of its registry.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    /// Requests by route template; at most [`limits::HTTP_SERIES_MAX`] series in all. Route
    /// templates come from the router and methods are folded to a fixed set, so the series
    /// are bounded by routes × methods × statuses. Keyed by route first so that counting
    /// looks up a `&str` and allocates nothing.
    routes: Mutex<Routes>,
}

#[derive(Debug, Default)]
struct Routes {
    by_route: BTreeMap<String, RouteMetrics>,
    /// Series held, counts and histograms together.
    series: usize,
}

/// One route's requests by (method, status), and durations by method.
#[derive(Debug, Default)]
struct RouteMetrics {
    counts: BTreeMap<(&'static str, u16), u64>,
    durations: BTreeMap<&'static str, Histogram>,
}

/// The methods counted by name; any other is counted as `other`, so a client cannot add
/// series by inventing methods.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn duration_bounds() -> &'static [f64] {
    match HTTP_REQUEST_DURATION_SECONDS.kind {
        Kind::Histogram(bounds) => bounds,
        _ => unreachable!("the request duration is a histogram"),
    }
}

impl HttpMetrics {
    /// Counts one answered request and how long it took.
    pub(crate) fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let Routes { by_route, series } = &mut *routes;
        let metrics = match by_route.get_mut(route) {
            Some(metrics) => metrics,
            None if *series < limits::HTTP_SERIES_MAX => {
                by_route.entry(route.to_owned()).or_default()
            }
            None => return,
        };
        match metrics.counts.get_mut(&(method, status)) {
            Some(count) => *count += 1,
            None if *series < limits::HTTP_SERIES_MAX => {
                metrics.counts.insert((method, status), 1);
                *series += 1;
            }
            None => {}
        }
        match metrics.durations.get(method) {
            Some(histogram) => histogram.observe(elapsed),
            None if *series < limits::HTTP_SERIES_MAX => {
                let histogram = Histogram::new(duration_bounds());
                histogram.observe(elapsed);
                metrics.durations.insert(method, histogram);
                *series += 1;
            }
            None => {}
        }
    }
}

impl HttpMetrics {
    /// Adds the counts and durations so far.
    fn add_to(&self, samples: &mut Samples) {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for (route, metrics) in &routes.by_route {
            for ((method, status), count) in &metrics.counts {
                let status = status.to_string();
                samples.counter(&HTTP_REQUESTS_TOTAL, &[route, method, &status], *count);
            }
            for (method, histogram) in &metrics.durations {
                samples.histogram(
                    &HTTP_REQUEST_DURATION_SECONDS,
                    &[route, method],
                    histogram.snapshot(),
                );
            }
        }
    }
}

impl Source for HttpMetrics {
    fn collect<'a>(&'a self, samples: &'a mut Samples) -> SourceFuture<'a> {
        self.add_to(samples);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl From<MetricsError> for ApiError {
    fn from(error: MetricsError) -> Self {
        let code = if error.is_retryable() {
            ErrorCode::Unavailable
        } else {
            ErrorCode::Internal
        };
        ApiError::new(code, error.to_string())
    }
}

/// The exposition as a response.
pub(crate) fn exposition(text: String) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response()
}

/// A router with `GET /metrics`: the exposition of `registry`, encoded at each scrape
/// (503 with a JSON error when a source fails). It has no authentication of its own: merge
/// it into an app behind the auth it needs, or serve it on a port only Prometheus reaches.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry)
}

async fn scrape(State(registry): State<Arc<Registry>>) -> Result<Response, ApiError> {
    Ok(exposition(registry.encode().await?))
}

/// A router with the probes of a process that uses `broker`: `GET /healthz` answers 200
/// while the process serves HTTP, `GET /readyz` 200 while the broker answers
/// (`Broker::ping`) and 503 otherwise. For worker pods; `floodway serve` has its own.
pub fn probes<B: Broker + 'static>(broker: Arc<B>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async {
                axum::Json(Health {
                    status: "ok".to_owned(),
                })
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let broker = broker.clone();
                async move {
                    match broker.ping().await {
                        Ok(()) => (
                            StatusCode::OK,
                            axum::Json(Health {
                                status: "ready".to_owned(),
                            }),
                        )
                            .into_response(),
                        Err(error) => ApiError::from(error).into_response(),
                    }
                }
            }),
        )
}

/// Serves `router` on `listener` (plain HTTP) until `shutdown` completes, with the server's
/// default connection limit and header timeout: for a worker's metrics and probes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    crate::listen::serve_router(
        listener,
        router,
        None,
        &crate::config::Limits::default(),
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodway_metrics::encode;

    fn scrape(metrics: &HttpMetrics) -> String {
        let mut samples = Samples::new();
        metrics.add_to(&mut samples);
        encode(&samples)
    }

    #[test]
    fn requests_are_counted_and_timed_by_route_method_and_status() {
        let metrics = HttpMetrics::default();
        let route = "/v1/queues/{queue}/tasks";
        metrics.record(route, "POST", 201, Duration::from_millis(3));
        metrics.record(route, "POST", 201, Duration::from_millis(40));
        metrics.record(route, "BREW", 405, Duration::from_millis(1));
        let text = scrape(&metrics);
        for line in [
            "floodway_http_requests_total{route=\"/v1/queues/{queue}/tasks\",method=\"POST\",status=\"201\"} 2",
            "floodway_http_requests_total{route=\"/v1/queues/{queue}/tasks\",method=\"other\",status=\"405\"} 1",
            "floodway_http_request_duration_seconds_bucket{route=\"/v1/queues/{queue}/tasks\",method=\"POST\",le=\"0.005\"} 1",
            "floodway_http_request_duration_seconds_bucket{route=\"/v1/queues/{queue}/tasks\",method=\"POST\",le=\"0.05\"} 2",
            "floodway_http_request_duration_seconds_count{route=\"/v1/queues/{queue}/tasks\",method=\"POST\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn the_number_of_series_is_bounded() {
        let metrics = HttpMetrics::default();
        for i in 0..limits::HTTP_SERIES_MAX {
            metrics.record(&format!("/r{i}"), "GET", 200, Duration::ZERO);
        }
        let routes = metrics.routes.lock().unwrap();
        assert!(routes.series <= limits::HTTP_SERIES_MAX);
        assert!(routes.by_route.len() <= limits::HTTP_SERIES_MAX / 2 + 1);
    }
}
