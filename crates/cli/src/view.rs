//! What `--json` prints: serializable views of tasks and queues, owned by the CLI so its
//! output format is a decision of its own and not a side effect of the core types' serde.
//!
//! Conventions: times are RFC 3339 strings in UTC, durations are strings such as `"30s"`
//! (`floodway_core::duration::format`), and a task's payload is embedded as JSON when it is
//! JSON, or else given as a (lossily decoded) UTF-8 string, with `payload_format` saying which.

use std::collections::BTreeMap;

use floodway_core::{
    QueueConfig, QueueStats, QueueTotals, RateLimit, StateCounts, Task, Watermarks, duration,
};
use serde::Serialize;
use serde_json::value::RawValue;

/// One task, every field.
#[derive(Debug, Serialize)]
pub(crate) struct TaskView {
    pub(crate) id: String,
    pub(crate) queue: String,
    pub(crate) kind: String,
    pub(crate) state: &'static str,
    pub(crate) dead_reason: Option<&'static str>,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) priority: u8,
    pub(crate) created_at: String,
    pub(crate) run_at: String,
    pub(crate) expires_at: Option<String>,
    pub(crate) lease_expires_at: Option<String>,
    pub(crate) worker: Option<String>,
    pub(crate) fence: u64,
    pub(crate) finished_at: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) partition_key: Option<String>,
    pub(crate) limit_key: Option<String>,
    /// Side effects the task's handler recorded as done: effect key → result.
    pub(crate) effects: BTreeMap<String, String>,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) retry: RetryView,
    pub(crate) last_error: Option<String>,
    pub(crate) payload_bytes: usize,
    pub(crate) payload_format: PayloadFormat,
    pub(crate) payload: Payload,
}

/// A task's retry policy.
#[derive(Debug, Serialize)]
pub(crate) struct RetryView {
    pub(crate) max_attempts: u32,
    pub(crate) backoff_initial: String,
    pub(crate) backoff_max: String,
    pub(crate) backoff_multiplier: f64,
    pub(crate) jitter: &'static str,
}

/// Whether a payload is shown as the JSON it is, or as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PayloadFormat {
    /// The payload is valid JSON and embedded as such.
    Json,
    /// The payload is not JSON; it is shown as UTF-8 text, invalid bytes replaced.
    Text,
}

/// A payload, embedded as JSON (byte for byte, key order kept) or as a string.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Payload {
    /// Valid JSON, exactly as stored.
    Json(Box<RawValue>),
    /// Anything else, as lossy UTF-8.
    Text(String),
}

impl Payload {
    /// The view of `bytes`.
    pub(crate) fn of(bytes: &[u8]) -> Payload {
        match std::str::from_utf8(bytes) {
            Ok(text) => match RawValue::from_string(text.trim().to_owned()) {
                Ok(raw) => Payload::Json(raw),
                Err(_) => Payload::Text(text.to_owned()),
            },
            Err(_) => Payload::Text(String::from_utf8_lossy(bytes).into_owned()),
        }
    }

    /// Which format this is.
    pub(crate) fn format(&self) -> PayloadFormat {
        match self {
            Payload::Json(_) => PayloadFormat::Json,
            Payload::Text(_) => PayloadFormat::Text,
        }
    }

    /// The payload for people: JSON indented, text as it is.
    pub(crate) fn pretty(&self) -> String {
        match self {
            Payload::Json(raw) => indent_json(raw.get()),
            Payload::Text(text) => text.clone(),
        }
    }
}

impl TaskView {
    /// The view of `task`.
    pub(crate) fn of(task: &Task) -> TaskView {
        let payload = Payload::of(&task.payload);
        TaskView {
            id: task.id.to_string(),
            queue: task.queue.to_string(),
            kind: task.kind.clone(),
            state: task.state.as_str(),
            dead_reason: task.dead_reason.map(|r| r.as_str()),
            attempt: task.attempt,
            max_attempts: task.retry.max_attempts,
            priority: task.priority,
            created_at: task.created_at.to_string(),
            run_at: task.run_at.to_string(),
            expires_at: task.expires_at.map(|t| t.to_string()),
            lease_expires_at: task.lease_expires_at.map(|t| t.to_string()),
            worker: task.worker.clone(),
            fence: task.fence.0,
            finished_at: task.finished_at.map(|t| t.to_string()),
            timeout: task.timeout.map(duration::format),
            idempotency_key: task.idempotency_key.clone(),
            partition_key: task.partition_key.clone(),
            limit_key: task.limit_key.clone(),
            effects: task.effects.clone(),
            headers: task.headers.clone(),
            retry: RetryView {
                max_attempts: task.retry.max_attempts,
                backoff_initial: duration::format(task.retry.backoff_initial),
                backoff_max: duration::format(task.retry.backoff_max),
                backoff_multiplier: task.retry.backoff_multiplier,
                jitter: match task.retry.jitter {
                    floodway_core::Jitter::Full => "full",
                    floodway_core::Jitter::None => "none",
                },
            },
            last_error: task.last_error.clone(),
            payload_bytes: task.payload.len(),
            payload_format: payload.format(),
            payload,
        }
    }
}

/// One queue's statistics and configuration.
#[derive(Debug, Serialize)]
pub(crate) struct StatsView {
    pub(crate) queue: String,
    pub(crate) paused: bool,
    /// True while the queue refuses enqueues between its watermarks.
    pub(crate) refusing: bool,
    /// Waiting tasks (scheduled, ready, retrying): what `length_max` bounds.
    pub(crate) length: u64,
    #[serde(flatten)]
    pub(crate) counts: StateCounts,
    pub(crate) oldest_ready_age: Option<String>,
    pub(crate) totals: QueueTotals,
    pub(crate) config: QueueConfig,
    pub(crate) backpressure: BackpressureView,
}

/// A queue's backpressure in one place: whether it refuses enqueues, the limits it is held
/// to next to what they limit, and how often each limit bit. (The same figures are also in
/// `config` and `totals`; this is the view an operator asks for when producers are pushed
/// back or workers sit idle.)
#[derive(Debug, Serialize)]
pub(crate) struct BackpressureView {
    /// True while enqueue is refused: above the high watermark, or not yet back at the low.
    pub(crate) refusing: bool,
    /// Waiting tasks now: what the watermarks and `length_max` bound.
    pub(crate) length: u64,
    pub(crate) watermarks: Option<Watermarks>,
    pub(crate) length_max: Option<u64>,
    /// Leased tasks now: what `concurrency_max` bounds.
    pub(crate) active: u64,
    pub(crate) concurrency_max: Option<u32>,
    pub(crate) key_concurrency_max: Option<u32>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) key_rate_limit: Option<RateLimit>,
    /// Enqueue calls refused above the high watermark, since the queue was created.
    pub(crate) rejected_overloaded: u64,
    /// Enqueue calls refused at `length_max`.
    pub(crate) rejected_full: u64,
    /// Reserve calls cut short by a rate limit.
    pub(crate) throttled_rate: u64,
    /// Reserve calls cut short by a concurrency limit.
    pub(crate) throttled_concurrency: u64,
}

impl BackpressureView {
    /// The view of `stats`.
    pub(crate) fn of(stats: &QueueStats) -> BackpressureView {
        let QueueConfig {
            length_max,
            rate_limit,
            key_rate_limit,
            concurrency_max,
            key_concurrency_max,
            watermarks,
            ..
        } = stats.config;
        BackpressureView {
            refusing: stats.refusing,
            length: stats.length(),
            watermarks,
            length_max,
            active: stats.counts.active,
            concurrency_max,
            key_concurrency_max,
            rate_limit,
            key_rate_limit,
            rejected_overloaded: stats.totals.rejected_overloaded,
            rejected_full: stats.totals.rejected_full,
            throttled_rate: stats.totals.throttled_rate,
            throttled_concurrency: stats.totals.throttled_concurrency,
        }
    }
}

impl StatsView {
    /// The view of `stats`.
    pub(crate) fn of(stats: &QueueStats) -> StatsView {
        StatsView {
            queue: stats.queue.to_string(),
            paused: stats.config.paused,
            refusing: stats.refusing,
            length: stats.length(),
            counts: stats.counts,
            oldest_ready_age: stats.oldest_ready_age.map(duration::format),
            totals: stats.totals,
            config: stats.config.clone(),
            backpressure: BackpressureView::of(stats),
        }
    }
}

/// Re-indents valid JSON text, two spaces per level, without parsing it into values: key order
/// and number spelling stay exactly as stored.
fn indent_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Keep empty containers on one line.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.push(chars.next().expect("peeked"));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_are_embedded_and_others_are_text() {
        let json = Payload::of(br#" {"b":1,"a":[1,2]} "#);
        assert_eq!(json.format(), PayloadFormat::Json);
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"b":1,"a":[1,2]}"#
        );
        let text = Payload::of(b"not json");
        assert_eq!(serde_json::to_string(&text).unwrap(), r#""not json""#);
        let bytes = Payload::of(&[0xff, b'a']);
        assert_eq!(bytes.format(), PayloadFormat::Text);
        assert_eq!(bytes.pretty(), "\u{fffd}a");
    }

    #[test]
    fn indentation_keeps_order_and_strings() {
        let pretty =
            Payload::of(br#"{"z":1,"s":"a, {b}: \"c\"","e":{},"l":[1,{"x":null}]}"#).pretty();
        assert_eq!(
            pretty,
            "{\n  \"z\": 1,\n  \"s\": \"a, {b}: \\\"c\\\"\",\n  \"e\": {},\n  \"l\": [\n    1,\n    {\n      \"x\": null\n    }\n  ]\n}"
        );
        let reparsed: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(reparsed["l"][1]["x"], serde_json::Value::Null);
    }
}
