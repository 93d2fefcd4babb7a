//! The tracing subscriber: the one place in floodway that decides where logs and spans go.
//!
//! Logs always go to stderr, so stdout carries only results (tables, ids, JSON) and can be
//! piped. The default level is `warn`, which keeps human output clean; `-v` raises it, and
//! `RUST_LOG`, when set, replaces it with its own directives. With `--log-format json` each
//! line is one JSON object whose `span` and `spans` hold the fields of the spans it happened
//! in, among them `trace_id`, `span_id` and `parent_span_id` (floodway-trace), so the logs of
//! producers, servers and workers correlate by trace id.
//!
//! With the `otlp` cargo feature, spans are also exported over OTLP/HTTP (protobuf) when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//! unless `OTEL_TRACES_EXPORTER=none`; `OTEL_SERVICE_NAME` names the service (`floodway` by
//! default), and the other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout) apply. The
//! exporter has its own level, `info` (the `enqueue` and `handle` spans), or
//! `FLOODWAY_OTLP_LEVEL`, independent of the log level. Spans are sent in batches from a
//! thread of the SDK's, and flushed when [`Telemetry`] is dropped at the end of `main`.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// What must outlive the command: the span exporter, flushed and shut down on drop.
pub(crate) struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans over OTLP failed: {error}");
        }
    }
}

/// Installs the global subscriber. `verbose` is the number of `-v` flags.
pub(crate) fn install(format: LogFormat, verbose: u8) -> Telemetry {
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    // Without an exporter the level filter is global, so a disabled span or event costs one
    // check of its callsite; with one, each layer has its own level.
    #[cfg(not(feature = "otlp"))]
    let subscriber = tracing_subscriber::registry().with(filter).with(logs);
    #[cfg(feature = "otlp")]
    let subscriber = tracing_subscriber::registry().with(logs.with_filter(filter));
    #[cfg(feature = "otlp")]
    let (subscriber, provider) = {
        let provider = otlp::provider();
        let layer = provider.as_ref().map(|provider| {
            use opentelemetry::trace::TracerProvider;
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("floodway"))
                .with_filter(otlp::level())
        });
        (subscriber.with(layer), provider)
    };
    #[cfg(not(feature = "otlp"))]
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        eprintln!(
            "warning: OTEL_EXPORTER_OTLP_ENDPOINT is set, but this floodway was built without \
             the `otlp` feature; no spans are exported"
        );
    }
    // Installing fails only if a subscriber is already set, which cannot happen in main; a
    // missing subscriber would only cost logs, never the command.
    let _ = subscriber.try_init();
    Telemetry {
        #[cfg(feature = "otlp")]
        provider,
    }
}

/// The OTLP exporter (feature `otlp`): configured by the standard environment variables.
#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::level_filters::LevelFilter;

    /// True when a variable is set to something.
    fn set(name: &str) -> bool {
        std::env::var_os(name).is_some_and(|value| !value.is_empty())
    }

    /// The tracer provider, when the environment asks for export; a failure to build it is
    /// reported and costs only the export.
    pub(super) fn provider() -> Option<SdkTracerProvider> {
        let wanted = (set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            && std::env::var("OTEL_TRACES_EXPORTER").map_or(true, |value| value != "none");
        if !wanted {
            return None;
        }
        // reqwest is built without a crypto provider of its own (docs/decisions/0007): an
        // https:// collector needs the process default. Ignored if one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
        {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("warning: no OTLP export: {error}");
                return None;
            }
        };
        let mut resource = Resource::builder();
        if !set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("floodway");
        }
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build(),
        )
    }

    /// The exporter's level: `FLOODWAY_OTLP_LEVEL` (error, warn, info, debug, trace), or info.
    pub(super) fn level() -> LevelFilter {
        std::env::var("FLOODWAY_OTLP_LEVEL")
            .ok()
            .and_then(|level| level.parse().ok())
            .unwrap_or(LevelFilter::INFO)
    }
}
