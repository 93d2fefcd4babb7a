//! Trace context through the real binary: a producer with a trace of its own enqueues over
//! HTTP, and the JSON logs of `floodway serve` and of `floodway worker` carry its trace id, in
//! the fields of their `enqueue` and `handle` spans and, at the default level, in the warning
//! about a timed-out attempt.

use std::process::Stdio;

use floodway_core::trace::TRACEPARENT_HEADER;
use floodway_core::{Broker, NewTask, QueueName, TraceContext};
use serde_json::Value;

use crate::Floodway;
use crate::serving::{Serving, producer, remote, runtime};

/// The caller's trace: what an upstream service's span would hand on.
const CALLER: &str = "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01";
const CALLER_TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";

/// Every stderr line, as JSON (a line that is not JSON fails the test: the format promises
/// one object per line).
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

/// The span named `name` among a line's spans, if it is there.
fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == name)
}

#[test]
fn json_logs_of_server_and_worker_carry_the_callers_trace_id() {
    let floodway = Floodway::new();
    let serving = Serving::start(
        &floodway,
        &["--log-format", "json"],
        &[("RUST_LOG", "warn,floodway_server=debug")],
    );
    let rt = runtime();
    let caller = TraceContext::parse(CALLER, None).unwrap();
    let (work, slow) = rt.block_on(floodway_trace::scope(caller, async {
        let producer = producer(&serving.url, None);
        let work = QueueName::new("work").unwrap();
        let slow = QueueName::new("slow").unwrap();
        let work = producer
            .enqueue_one(&work, NewTask::new("work", "null"))
            .await
            .unwrap();
        let slow = producer
            .enqueue_one(&slow, NewTask::new("slow", "null").max_attempts(1))
            .await
            .unwrap();
        (work.id, slow.id)
    }));
    // The producer's span (in this process) is the tasks' parent, in the caller's trace.
    let stored = rt
        .block_on(async { remote(&serving.url, None).await.get(work).await })
        .unwrap();
    let header = TraceContext::parse(&stored.headers[TRACEPARENT_HEADER], None).unwrap();
    assert_eq!(header.parent.trace_id.to_string(), CALLER_TRACE);
    let producer_span = header.parent.parent_id.to_string();

    // A worker at debug level: the line that ends the attempt is in its `handle` span.
    let output = floodway
        .command(&[
            "worker",
            "--server",
            &serving.url,
            "--queue",
            "work",
            "--kind",
            "work",
            "--run",
            "noop",
            "--max-tasks",
            "1",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "warn,floodway_worker=debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    let handled = json_lines(&stderr)
        .into_iter()
        .find(|line| line["fields"]["message"] == "attempt finished")
        .unwrap_or_else(|| panic!("no `attempt finished` line: {stderr}"));
    let handle = span(&handled, "handle").unwrap();
    assert_eq!(handle["trace_id"], CALLER_TRACE, "{handled}");
    assert_eq!(handle["parent_span_id"], producer_span.as_str());
    assert_eq!(handle["task_id"], work.to_string());
    assert_eq!(handle["outcome"], "completed");
    assert_eq!(handled["span"]["name"], "handle", "the current span");

    // A worker at the default level (warnings): the timed-out attempt's warning names the trace.
    let output = floodway
        .command(&[
            "worker",
            "--server",
            &serving.url,
            "--queue",
            "slow",
            "--kind",
            "slow",
            "--run",
            "exec",
            "--exec",
            "sleep 30",
            "--timeout",
            "200ms",
            "--max-tasks",
            "1",
            "--log-format",
            "json",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    let warning = json_lines(&stderr)
        .into_iter()
        .find(|line| line["fields"]["message"] == "handler timed out")
        .unwrap_or_else(|| panic!("no timeout warning: {stderr}"));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["fields"]["trace_id"], CALLER_TRACE, "{warning}");
    assert_eq!(warning["fields"]["task"], slow.to_string());

    // The server: its `enqueue` span continues the producer's span, in the caller's trace.
    let log = serving.stderr.clone();
    assert!(serving.stop().success());
    let logs = std::fs::read_to_string(log).unwrap();
    let enqueued: Vec<Value> = json_lines(&logs)
        .into_iter()
        .filter(|line| line["fields"]["message"] == "enqueued")
        .collect();
    assert_eq!(enqueued.len(), 2, "{logs}");
    let served = span(&enqueued[0], "enqueue").unwrap();
    assert_eq!(served["trace_id"], CALLER_TRACE, "{logs}");
    assert_eq!(served["parent_span_id"], producer_span.as_str());
    assert_eq!(served["queue"], "work");
    assert!(
        span(&enqueued[0], "request")
            .is_some_and(|request| request["route"] == "/v1/queues/{queue}/tasks"),
        "inside the request's span: {logs}"
    );
}
