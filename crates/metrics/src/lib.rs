//! floodway's metrics: what every process exports to Prometheus, declared once.
//!
//! - [`catalog`] declares every metric floodway exports (name, type, help, labels, and which
//!   process exports it). Nothing else spells a metric name; docs/metrics.md lists the same
//!   set, and a test checks that they agree.
//! - [`Samples`] is what one scrape gathers: values by metric and label values.
//! - [`Histogram`] counts durations into fixed buckets with atomics, for hot paths (a
//!   worker's handler durations, the server's request durations).
//! - [`Registry`] is a process's set of [`Source`]s (a worker, a producer, the server's own
//!   counters, a broker's queue statistics), each read when scraped;
//!   [`Registry::encode`] turns them into the Prometheus text format (version 0.0.4), one
//!   `HELP` and `TYPE` per metric even when several sources emit it.
//! - [`QueueMetrics`] turns a broker's [`floodway_core::QueueStats`] into the queue metrics,
//!   with a completion rate per queue (a `DrainMeter`) for the backlog in seconds, which is
//!   what autoscaling should follow; [`BrokerSource`] is it as a source of a registry.
//!
//! ```
//! # async fn example() -> Result<(), floodway_metrics::MetricsError> {
//! use std::sync::Arc;
//! use floodway_metrics::{Registry, Samples, Source, SourceFuture, catalog};
//!
//! struct Breaker;
//! impl Source for Breaker {
//!     fn collect<'a>(&'a self, samples: &'a mut Samples) -> SourceFuture<'a> {
//!         samples.gauge(&catalog::PRODUCER_BREAKER_STATE, &["api", "closed"], 1.0);
//!         Box::pin(std::future::ready(Ok(())))
//!     }
//! }
//!
//! let registry = Registry::new();
//! registry.register(Arc::new(Breaker))?;
//! let text = registry.encode().await?;
//! assert!(text.contains("floodway_producer_breaker_state{producer=\"api\",state=\"closed\"} 1"));
//! # Ok(()) }
//! ```
//!
//! The encoder is written here rather than taken from a metrics library because sources are
//! read asynchronously at scrape time (a broker's statistics are a network call) and several
//! sources may emit one metric; docs/decisions/0014-metrics.md records the choice.

pub mod catalog;
mod encode;
mod error;
mod histogram;
pub mod limits;
mod queue;
mod registry;
mod samples;

pub use catalog::{Exporter, Kind, Metric};
pub use encode::{CONTENT_TYPE, encode};
pub use error::MetricsError;
pub use histogram::{Histogram, HistogramSnapshot};
pub use queue::{BrokerSource, QueueMetrics, backlog_seconds};
pub use registry::{Registry, Source, SourceFuture};
pub use samples::{Sample, Samples, Value};
