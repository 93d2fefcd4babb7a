//! The bridge to OpenTelemetry (feature `opentelemetry`): floodway's [`TraceContext`] to and
//! from OpenTelemetry's span contexts, the current context, and the parent of a span.
//!
//! Everything here goes through `tracing-opentelemetry`'s `OpenTelemetrySpanExt`, which finds
//! the span's OpenTelemetry data in the subscriber; without its layer every function is a
//! cheap no-op that reports "no context", and [`crate::start`] falls back to its own ids.

use floodway_core::{SpanId, TraceContext, TraceFlags, TraceId, TraceParent};
use opentelemetry::trace::{self as otel, TraceContextExt};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `context` as a remote parent, the way an OpenTelemetry propagator would extract it.
fn to_otel(context: &TraceContext) -> opentelemetry::Context {
    let state = context
        .state
        .as_deref()
        .and_then(|state| state.parse::<otel::TraceState>().ok())
        .unwrap_or_default();
    let span_context = otel::SpanContext::new(
        otel::TraceId::from_bytes(context.parent.trace_id.to_bytes()),
        otel::SpanId::from_bytes(context.parent.parent_id.to_bytes()),
        otel::TraceFlags::new(context.parent.flags.0),
        true,
        state,
    );
    opentelemetry::Context::new().with_remote_span_context(span_context)
}

/// The context a child of `span_context` continues; `None` if it is not valid.
fn from_otel(span_context: &otel::SpanContext) -> Option<TraceContext> {
    if !span_context.is_valid() {
        return None;
    }
    let trace_id = TraceId::new(u128::from_be_bytes(span_context.trace_id().to_bytes()))?;
    let span_id = SpanId::new(u64::from_be_bytes(span_context.span_id().to_bytes()))?;
    let state = span_context.trace_state().header();
    Some(TraceContext {
        parent: TraceParent {
            trace_id,
            parent_id: span_id,
            flags: TraceFlags(span_context.trace_flags().to_u8()),
        },
        state: (!state.is_empty()).then_some(state),
    })
}

/// Makes `context` the OpenTelemetry parent of `span` (before the span is first entered).
pub(crate) fn set_parent(span: &Span, context: &TraceContext) {
    if span.is_disabled() {
        return;
    }
    // Fails only without the layer, or once the span has started: then it keeps its parent.
    let _ = span.set_parent(to_otel(context));
}

/// Makes `span` the root of a new OpenTelemetry trace, whatever context the caller runs in.
pub(crate) fn set_root(span: &Span) {
    if span.is_disabled() {
        return;
    }
    let _ = span.set_parent(opentelemetry::Context::new());
}

/// The context a child of `span` continues, if an OpenTelemetry layer records `span`.
pub(crate) fn span_context(span: &Span) -> Option<TraceContext> {
    if span.is_disabled() {
        return None;
    }
    from_otel(span.context().span().span_context())
}

/// OpenTelemetry's current context: the active OpenTelemetry context (which the layer keeps
/// as the entered span's), or else the current tracing span's.
pub(crate) fn current() -> Option<TraceContext> {
    let active = opentelemetry::Context::current();
    from_otel(active.span().span_context()).or_else(|| span_context(&Span::current()))
}
