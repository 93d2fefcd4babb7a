//! floodway's trace context for `tracing` spans: one mechanism that makes a task's life one
//! trace, from the producer's `enqueue` span to the worker's `handle` span, with or without
//! OpenTelemetry.
//!
//! A producer (the client's `Producer` and `HttpBroker`, the server's enqueue route) opens an
//! `enqueue` span, [`start`]s it from the caller's current context (or from a `traceparent`
//! received over HTTP), and puts the span's context into every task that lacks one
//! ([`floodway_core::TraceContext::inject`]). The worker opens a `handle` span per attempt and
//! starts it from the task's headers ([`Parent::Remote`]), so the handle span is a child of
//! the producer's span in the producer's trace. The handler runs [`scope`]d in the handle
//! span's context, so a task it enqueues continues the same trace.
//!
//! **Without OpenTelemetry** (the default build) trace and span ids are made here (random)
//! and written as span fields, `trace_id`, `span_id` and `parent_span_id`, so the text and
//! JSON logs of the producer and of the worker correlate by trace id. The "current context"
//! is the ambient one: the handle span's while a handler runs.
//!
//! **With the `opentelemetry` feature** and a `tracing-opentelemetry` layer installed (the
//! CLI's `otlp` feature does it, or the application), OpenTelemetry makes the ids: the current
//! context is OpenTelemetry's, a continued span gets its OpenTelemetry parent with
//! `OpenTelemetrySpanExt::set_parent`, and the span fields carry OpenTelemetry's ids, so logs
//! and exported spans agree. Spans that no OpenTelemetry layer records (filtered out, or no
//! layer) fall back to the first mechanism. The layer must come from the same
//! `tracing-opentelemetry` version as this crate's (0.34).
//!
//! This crate never installs a subscriber: only the `floodway` binary does (ARCHITECTURE.md).
//! Spans are declared by the crates that open them, with [`span!`], so their targets are those
//! crates' modules.

use std::future::Future;

use floodway_core::{SpanId, TraceContext, TraceFlags, TraceId, TraceParent};
use tracing::Span;
use tracing::field::display;

#[cfg(feature = "opentelemetry")]
mod otel;

#[doc(hidden)]
pub use tracing as __tracing;

/// The header names and types of `floodway_core::trace`, for convenience.
pub use floodway_core::trace::{TRACEPARENT_HEADER, TRACESTATE_HEADER};

/// Declares a span like `tracing::span!`, with floodway's three trace fields appended
/// (`trace_id`, `span_id`, `parent_span_id`, empty until [`start`] records them). At least one
/// field of the caller's must be given, without a trailing comma.
///
/// ```
/// let queue = "emails";
/// let span = floodway_trace::span!(tracing::Level::INFO, "enqueue", queue, tasks = 3);
/// let context = floodway_trace::start(&span, floodway_trace::Parent::Current);
/// assert_eq!(context.parent.to_string().len(), 55);
/// ```
#[macro_export]
macro_rules! span {
    ($level:expr, $name:expr, $($fields:tt)+) => {
        $crate::__tracing::span!(
            $level,
            $name,
            $($fields)+,
            trace_id = $crate::__tracing::field::Empty,
            span_id = $crate::__tracing::field::Empty,
            parent_span_id = $crate::__tracing::field::Empty
        )
    };
}

/// Where a span's trace comes from.
#[derive(Clone, Copy, Debug)]
pub enum Parent<'a> {
    /// The caller's: OpenTelemetry's current span, else the ambient context of the handler
    /// running this code ([`scope`]), else none, and the span starts a new trace. For
    /// producers.
    Current,
    /// A context that came from elsewhere: a task's headers, an HTTP request's. For spans that
    /// continue it (the worker's `handle`, the server's routes).
    Remote(&'a TraceContext),
    /// None: the span starts a new trace whatever the caller runs in (a task that carried no
    /// context).
    NewTrace,
}

/// Starts `span`'s place in a trace, records its ids in its fields (when the span is
/// enabled), and returns the context a child of it continues: the trace, with `span` as the
/// parent. This is what a producer injects into its tasks and a handler passes downstream.
///
/// Costs a random number and no allocation (but a `tracestate`'s) when the span is disabled
/// and OpenTelemetry is off.
pub fn start(span: &Span, parent: Parent<'_>) -> TraceContext {
    let caller = match parent {
        Parent::Remote(context) => Some(Caller {
            context: context.clone(),
            from_otel: false,
        }),
        Parent::Current => current_with_source(),
        Parent::NewTrace => None,
    };
    #[cfg(feature = "opentelemetry")]
    {
        match &caller {
            // OpenTelemetry already made the caller's span this span's parent.
            Some(caller) if caller.from_otel => {}
            Some(caller) => otel::set_parent(span, &caller.context),
            None => otel::set_root(span),
        }
        if let Some(own) = otel::span_context(span) {
            record(span, &own.parent, caller.as_ref());
            return own;
        }
    }
    let own = match &caller {
        Some(caller) => caller
            .context
            .with_parent(SpanId::from_random(fastrand::u64(..))),
        None => new_trace(),
    };
    record(span, &own.parent, caller.as_ref());
    own
}

/// A new trace with random ids and no parent: the context of a root span.
///
/// It is marked sampled (recorded, as far as floodway knows), so a worker that exports to
/// OpenTelemetry with a parent-based sampler exports the rest of the trace.
pub fn new_trace() -> TraceContext {
    TraceContext::new(TraceParent {
        trace_id: TraceId::from_random(fastrand::u128(..)),
        parent_id: SpanId::from_random(fastrand::u64(..)),
        flags: TraceFlags::SAMPLED,
    })
}

/// The caller's context, and whether OpenTelemetry gave it.
struct Caller {
    context: TraceContext,
    /// OpenTelemetry's current context: the span's OpenTelemetry parent already.
    #[cfg_attr(
        not(feature = "opentelemetry"),
        allow(dead_code, reason = "read only by the OpenTelemetry bridge")
    )]
    from_otel: bool,
}

/// Writes the span's trace fields. `own.parent_id` is the span's own id.
fn record(span: &Span, own: &TraceParent, caller: Option<&Caller>) {
    if span.is_disabled() {
        return;
    }
    span.record("trace_id", display(own.trace_id));
    span.record("span_id", display(own.parent_id));
    if let Some(caller) = caller
        && caller.context.parent.trace_id == own.trace_id
    {
        span.record("parent_span_id", display(caller.context.parent.parent_id));
    }
}

/// The context of the code running now: OpenTelemetry's current span's when the
/// `opentelemetry` feature is on and a layer records it, else the ambient context of the
/// handler this runs in ([`scope`]), else `None`.
pub fn current() -> Option<TraceContext> {
    current_with_source().map(|caller| caller.context)
}

fn current_with_source() -> Option<Caller> {
    #[cfg(feature = "opentelemetry")]
    if let Some(context) = otel::current() {
        return Some(Caller {
            context,
            from_otel: true,
        });
    }
    AMBIENT
        .try_with(|context| Caller {
            context: context.clone(),
            from_otel: false,
        })
        .ok()
}

/// True when an OpenTelemetry layer records `span`, so its ids will exist in a trace backend.
/// Always false without the `opentelemetry` feature.
pub fn is_exported(span: &Span) -> bool {
    #[cfg(feature = "opentelemetry")]
    {
        otel::span_context(span).is_some()
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        let _ = span;
        false
    }
}

tokio::task_local! {
    /// The context of the handler whose future is being polled; read by [`current`].
    static AMBIENT: TraceContext;
}

/// Runs `future` with `context` as the ambient context, so that [`current`] (and with it a
/// producer enqueuing from inside `future`) continues it. The worker runs every handler so;
/// a handler that spawns work of its own can pass its context on with it.
pub fn scope<F: Future>(context: TraceContext, future: F) -> impl Future<Output = F::Output> {
    AMBIENT.scope(context, future)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REMOTE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn without_a_caller_a_span_starts_a_new_sampled_trace() {
        let span = span!(tracing::Level::INFO, "enqueue", queue = "q");
        let a = start(&span, Parent::Current);
        let b = start(&span, Parent::NewTrace);
        assert_ne!(a.parent.trace_id, b.parent.trace_id);
        assert!(a.parent.flags.is_sampled());
        assert_eq!(a.state, None);
    }

    #[test]
    fn a_remote_parent_is_continued_with_a_new_span_id() {
        let remote = TraceContext::parse(REMOTE, Some("congo=1")).unwrap();
        let span = span!(tracing::Level::INFO, "handle", queue = "q");
        let own = start(&span, Parent::Remote(&remote));
        assert_eq!(own.parent.trace_id, remote.parent.trace_id);
        assert_ne!(own.parent.parent_id, remote.parent.parent_id);
        assert_eq!(own.state.as_deref(), Some("congo=1"));
    }

    #[tokio::test]
    async fn the_ambient_context_is_the_current_one_inside_its_scope() {
        assert_eq!(current(), None);
        let remote = TraceContext::parse(REMOTE, None).unwrap();
        let inside = scope(remote.clone(), async {
            tokio::task::yield_now().await;
            let span = span!(tracing::Level::INFO, "enqueue", queue = "q");
            (current(), start(&span, Parent::Current))
        })
        .await;
        assert_eq!(inside.0, Some(remote.clone()));
        assert_eq!(inside.1.parent.trace_id, remote.parent.trace_id);
        assert_eq!(current(), None);
    }

    #[test]
    fn span_fields_carry_the_ids() {
        use std::sync::{Arc, Mutex};
        use tracing::field::{Field, Visit};
        use tracing_subscriber::layer::{Context, SubscriberExt};
        use tracing_subscriber::registry::Registry;

        /// Every field recorded on any span, as text.
        #[derive(Clone, Default)]
        struct Fields(Arc<Mutex<Vec<(String, String)>>>);
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let mut fields = self.0.lock().unwrap();
                fields.push((field.name().to_owned(), format!("{value:?}")));
            }
        }
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Fields {
            fn on_record(
                &self,
                _: &tracing::span::Id,
                values: &tracing::span::Record<'_>,
                _: Context<'_, S>,
            ) {
                values.record(&mut self.clone());
            }
        }

        let fields = Fields::default();
        let subscriber = Registry::default().with(fields.clone());
        let remote = TraceContext::parse(REMOTE, None).unwrap();
        let own = tracing::subscriber::with_default(subscriber, || {
            let span = span!(tracing::Level::INFO, "handle", queue = "q");
            start(&span, Parent::Remote(&remote))
        });
        let recorded = fields.0.lock().unwrap().clone();
        let field = |name: &str| {
            recorded
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            field("trace_id").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(field("span_id"), Some(own.parent.parent_id.to_string()));
        assert_eq!(field("parent_span_id").as_deref(), Some("00f067aa0ba902b7"));
    }
}
