//! W3C Trace Context in task headers: the `traceparent` and `tracestate` a producer puts on a
//! task so that the worker's span continues the producer's trace
//! (<https://www.w3.org/TR/trace-context/>).
//!
//! This module only parses, formats and validates; it makes no ids (randomness comes in as
//! arguments) and knows nothing of `tracing` or OpenTelemetry. `floodway-trace` builds the
//! spans on it, the client and the server inject a [`TraceContext`] into the tasks they
//! enqueue ([`TraceContext::inject`]), and the worker reads it back
//! ([`TraceContext::from_headers`]).
//!
//! A `traceparent` is `00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`: the trace a
//! task belongs to, and the span that enqueued it. The `tracestate` (vendor data) is carried
//! along unchanged. A task's own headers are the producer's data: injection fills only a task
//! that has no `traceparent` at all, and stores one it has as given, even malformed. As the
//! W3C recommendation asks, a malformed `traceparent` is then ignored rather than refused:
//! [`TraceContext::from_headers`] reads it as no context, and the worker starts a new trace.

use std::fmt;
use std::num::{NonZeroU64, NonZeroU128};
use std::str::FromStr;

use crate::limits;
use crate::task::{Headers, NewTask};

/// The task header (and HTTP header) that carries the trace and the parent span.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The task header (and HTTP header) that carries vendor-specific trace data.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The only `traceparent` version this module writes.
const VERSION: &str = "00";

/// Length of a version-00 `traceparent`: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
const TRACEPARENT_LEN: usize = 55;

/// A trace's identity: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(NonZeroU128);

impl TraceId {
    /// The trace id with this value; `None` for zero, which W3C reserves for "invalid".
    pub const fn new(value: u128) -> Option<TraceId> {
        match NonZeroU128::new(value) {
            Some(value) => Some(TraceId(value)),
            None => None,
        }
    }

    /// A trace id made from random bits (zero, drawn once in 2^128, becomes one).
    pub fn from_random(random: u128) -> TraceId {
        TraceId(NonZeroU128::new(random).unwrap_or(NonZeroU128::MIN))
    }

    /// The id as a number (big-endian, as written in hex).
    pub const fn as_u128(self) -> u128 {
        self.0.get()
    }

    /// The id's 16 bytes, as OpenTelemetry holds them.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.get().to_be_bytes()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0.get())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A span's identity within a trace: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(NonZeroU64);

impl SpanId {
    /// The span id with this value; `None` for zero.
    pub const fn new(value: u64) -> Option<SpanId> {
        match NonZeroU64::new(value) {
            Some(value) => Some(SpanId(value)),
            None => None,
        }
    }

    /// A span id made from random bits (zero becomes one).
    pub fn from_random(random: u64) -> SpanId {
        SpanId(NonZeroU64::new(random).unwrap_or(NonZeroU64::MIN))
    }

    /// The id as a number (big-endian, as written in hex).
    pub const fn as_u64(self) -> u64 {
        self.0.get()
    }

    /// The id's 8 bytes, as OpenTelemetry holds them.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.get().to_be_bytes()
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0.get())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The trace flags byte. Only [`TraceFlags::SAMPLED`] has a meaning in version 00; other bits
/// are carried as they came.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(pub u8);

impl TraceFlags {
    /// The caller may have recorded the trace: a sampler that follows its parent records it
    /// too.
    pub const SAMPLED: TraceFlags = TraceFlags(0x01);

    /// True when the sampled bit is set.
    pub const fn is_sampled(self) -> bool {
        self.0 & Self::SAMPLED.0 != 0
    }
}

impl fmt::Debug for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}", self.0)
    }
}

/// A parsed `traceparent`: the trace, and the span a child continues from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: TraceId,
    /// The span that is the parent of whatever continues this context.
    pub parent_id: SpanId,
    /// The trace flags.
    pub flags: TraceFlags,
}

impl TraceParent {
    /// The same trace and flags, with `span` as the parent.
    pub const fn with_parent(self, span: SpanId) -> TraceParent {
        TraceParent {
            parent_id: span,
            ..self
        }
    }
}

/// Writes version 00: `00-<trace id>-<parent id>-<flags>`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERSION}-{}-{}-{:02x}",
            self.trace_id, self.parent_id, self.flags.0
        )
    }
}

/// Why a string is not a `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed traceparent {input:?}: {reason}")]
pub struct MalformedTraceparent {
    /// The text that was given, cut to 64 bytes.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses per W3C Trace Context level 1: lowercase hex, version `ff` refused, version 00 exactly
/// 55 characters, a later version at least that and a `-` after it (the rest is ignored, as
/// the recommendation asks), trace and parent ids not all zero.
impl FromStr for TraceParent {
    type Err = MalformedTraceparent;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let malformed = |reason| MalformedTraceparent {
            input: input.chars().take(64).collect(),
            reason,
        };
        let bytes = input.as_bytes();
        if bytes.len() < TRACEPARENT_LEN {
            return Err(malformed("shorter than 55 characters"));
        }
        let version = hex_field(&bytes[0..2]).ok_or_else(|| malformed("version is not hex"))?;
        if version == 0xff {
            return Err(malformed("version ff is invalid"));
        }
        if version == 0 && bytes.len() != TRACEPARENT_LEN {
            return Err(malformed("version 00 must be exactly 55 characters"));
        }
        if bytes.len() > TRACEPARENT_LEN && bytes[TRACEPARENT_LEN] != b'-' {
            return Err(malformed("fields must be separated by '-'"));
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(malformed("fields must be separated by '-'"));
        }
        let trace_id = hex_field(&bytes[3..35])
            .ok_or_else(|| malformed("trace id is not 32 lowercase hex digits"))?;
        let parent_id = hex_field(&bytes[36..52])
            .ok_or_else(|| malformed("parent id is not 16 lowercase hex digits"))?;
        let flags = hex_field(&bytes[53..55])
            .ok_or_else(|| malformed("flags are not 2 lowercase hex digits"))?;
        Ok(TraceParent {
            trace_id: TraceId::new(trace_id).ok_or_else(|| malformed("trace id is all zero"))?,
            parent_id: SpanId::new(parent_id as u64)
                .ok_or_else(|| malformed("parent id is all zero"))?,
            flags: TraceFlags(flags as u8),
        })
    }
}

/// The value of up to 32 lowercase hex digits; `None` if any is not one.
fn hex_field(digits: &[u8]) -> Option<u128> {
    debug_assert!(digits.len() <= 32);
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(nibble))
    })
}

/// True for a `tracestate` worth carrying: at most [`limits::TRACESTATE_LEN_MAX`] bytes of
/// printable ASCII in at most 32 comma-separated members. Its members are not parsed further:
/// floodway only carries it.
pub fn tracestate_is_valid(tracestate: &str) -> bool {
    tracestate.len() <= limits::TRACESTATE_LEN_MAX
        && tracestate
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        && tracestate.split(',').count() <= 32
}

/// The trace context of a task: its `traceparent`, and the `tracestate` that came with it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TraceContext {
    /// The trace and the parent span.
    pub parent: TraceParent,
    /// Vendor data, carried unchanged; `None` when there was none (or it was invalid).
    pub state: Option<String>,
}

impl TraceContext {
    /// A context with no `tracestate`.
    pub const fn new(parent: TraceParent) -> TraceContext {
        TraceContext {
            parent,
            state: None,
        }
    }

    /// Parses a `traceparent` and, if given, a `tracestate`; an invalid `tracestate` is
    /// dropped, as the recommendation allows.
    pub fn parse(
        traceparent: &str,
        tracestate: Option<&str>,
    ) -> Result<TraceContext, MalformedTraceparent> {
        let parent = traceparent.parse()?;
        let state = tracestate
            .filter(|s| !s.is_empty() && tracestate_is_valid(s))
            .map(str::to_owned);
        Ok(TraceContext { parent, state })
    }

    /// The context in a task's headers; `None` when there is no `traceparent` or it is
    /// malformed (then the task is treated as one that carries no context).
    pub fn from_headers(headers: &Headers) -> Option<TraceContext> {
        let traceparent = headers.get(TRACEPARENT_HEADER)?;
        TraceContext::parse(
            traceparent,
            headers.get(TRACESTATE_HEADER).map(String::as_str),
        )
        .ok()
    }

    /// The same trace and state, with `span` as the parent: what a child of `span` continues.
    pub fn with_parent(&self, span: SpanId) -> TraceContext {
        TraceContext {
            parent: self.parent.with_parent(span),
            state: self.state.clone(),
        }
    }

    /// Puts this context into every task that has no `traceparent` header, and returns how
    /// many it changed. A task that has one keeps it as given (its producer chose its parent;
    /// a malformed one is the worker's to ignore); a `tracestate` without a `traceparent` is
    /// replaced by this context's. A task that already has [`limits::HEADERS_MAX`] other headers
    /// is left alone rather than made invalid.
    pub fn inject(&self, tasks: &mut [NewTask]) -> usize {
        // Formatted once for the batch; each task gets a copy.
        let mut traceparent: Option<String> = None;
        let mut changed = 0;
        for task in tasks {
            if task.headers.contains_key(TRACEPARENT_HEADER) {
                continue;
            }
            let kept = task
                .headers
                .keys()
                .filter(|name| *name != TRACEPARENT_HEADER && *name != TRACESTATE_HEADER)
                .count();
            let added = 1 + usize::from(self.state.is_some());
            if kept + added > limits::HEADERS_MAX {
                continue;
            }
            let value = traceparent.get_or_insert_with(|| self.parent.to_string());
            task.headers
                .insert(TRACEPARENT_HEADER.to_owned(), value.clone());
            match &self.state {
                Some(state) => {
                    task.headers
                        .insert(TRACESTATE_HEADER.to_owned(), state.clone());
                }
                None => {
                    task.headers.remove(TRACESTATE_HEADER);
                }
            }
            changed += 1;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_recommendations_example_round_trips() {
        let parent: TraceParent = EXAMPLE.parse().unwrap();
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.flags.is_sampled());
        assert_eq!(parent.to_string(), EXAMPLE);
        assert_eq!(
            parent.trace_id.to_bytes()[0..2],
            [0x4b, 0xf9],
            "bytes are big-endian, as written"
        );
    }

    #[test]
    fn malformed_traceparents_are_refused_with_a_reason() {
        let cases = [
            ("", "shorter"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "shorter",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version ff",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "trace id is all zero",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "parent id is all zero",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "separated",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                "exactly 55",
            ),
            (
                "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version is not hex",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                "flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é",
                "exactly 55",
            ),
        ];
        for (input, reason) in cases {
            let error = input.parse::<TraceParent>().unwrap_err();
            assert!(error.to_string().contains(reason), "{input:?}: {error}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_first_four_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let parent: TraceParent = later.parse().unwrap();
        assert_eq!(parent.to_string(), EXAMPLE, "written back as version 00");
        assert!(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"
                .parse::<TraceParent>()
                .is_err()
        );
    }

    #[test]
    fn a_child_keeps_the_trace_and_names_its_parent() {
        let context = TraceContext::parse(EXAMPLE, Some("congo=t61rcWkgMzE")).unwrap();
        let child = context.with_parent(SpanId::new(0xabc).unwrap());
        assert_eq!(
            child.parent.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01"
        );
        assert_eq!(child.state.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    #[test]
    fn an_invalid_tracestate_is_dropped_and_the_traceparent_kept() {
        let too_long = "a=".to_owned() + &"b".repeat(limits::TRACESTATE_LEN_MAX);
        let members = vec!["k=v"; 33].join(",");
        for state in ["bad\u{7f}", too_long.as_str(), members.as_str(), ""] {
            let context = TraceContext::parse(EXAMPLE, Some(state)).unwrap();
            assert_eq!(context.state, None, "{state:?}");
        }
    }

    #[test]
    fn zero_random_bits_still_make_valid_ids() {
        assert_eq!(TraceId::from_random(0).as_u128(), 1);
        assert_eq!(SpanId::from_random(0).as_u64(), 1);
        assert_eq!(TraceId::new(0), None);
    }

    #[test]
    fn inject_fills_only_tasks_without_a_traceparent() {
        let context = TraceContext::parse(EXAMPLE, Some("congo=1")).unwrap();
        let own = "00-11111111111111111111111111111111-2222222222222222-00";
        let mut tasks = vec![
            NewTask::new("k", ""),
            NewTask::new("k", "").header(TRACEPARENT_HEADER, own),
            NewTask::new("k", "").header(TRACEPARENT_HEADER, "garbage"),
            NewTask::new("k", "").header(TRACESTATE_HEADER, "orphan=1"),
        ];
        assert_eq!(context.inject(&mut tasks), 2);
        let read = |task: &NewTask| TraceContext::from_headers(&task.headers);
        assert_eq!(read(&tasks[0]), Some(context.clone()));
        assert_eq!(read(&tasks[1]).unwrap().parent.to_string(), own, "kept");
        assert_eq!(
            tasks[2].headers[TRACEPARENT_HEADER], "garbage",
            "stored as given"
        );
        assert_eq!(read(&tasks[2]), None, "and read as no context");
        assert_eq!(read(&tasks[3]), Some(context.clone()));
        let without_state = TraceContext::new(context.parent);
        let mut orphan = vec![NewTask::new("k", "").header(TRACESTATE_HEADER, "orphan=1")];
        without_state.inject(&mut orphan);
        assert_eq!(orphan[0].headers.get(TRACESTATE_HEADER), None);
    }

    #[test]
    fn inject_never_makes_a_task_exceed_the_header_limit() {
        let context = TraceContext::parse(EXAMPLE, None).unwrap();
        let mut full = NewTask::new("k", "");
        for i in 0..limits::HEADERS_MAX {
            full = full.header(format!("h{i}"), "v");
        }
        let mut tasks = vec![full];
        assert_eq!(context.inject(&mut tasks), 0);
        tasks[0].validate().unwrap();
        assert_eq!(TraceContext::from_headers(&tasks[0].headers), None);
    }
}
