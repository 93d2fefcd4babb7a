//! Bad input exits with code 2, says what is wrong in one line, and changes nothing.
//!
//! Each case snapshots the data directory's observable state (`stats --json` and
//! `tasks list --json`) before and after the bad command and requires them to be equal.

use serde_json::Value;

use crate::Floodway;

/// A data directory holding a little of everything: two queues, a scheduled task, a dead
/// letter.
fn populated() -> Floodway {
    let floodway = Floodway::new();
    floodway.enqueue("orders", "charge_card");
    floodway.ok(&["enqueue", "orders", "send_email", "--delay", "1h"]);
    floodway.ok(&[
        "configure",
        "tiny",
        "--length-max",
        "1",
        "--overflow",
        "dead-letter-oldest",
    ]);
    floodway.enqueue("tiny", "a");
    floodway.enqueue("tiny", "b");
    floodway
}

/// Everything a command could change, minus what moves with the clock alone.
fn snapshot(floodway: &Floodway) -> Value {
    let mut stats = floodway.json(&["stats"]);
    for queue in stats.as_array_mut().expect("stats is an array") {
        queue
            .as_object_mut()
            .expect("a queue is an object")
            .remove("oldest_ready_age");
    }
    let tasks = floodway.json(&["tasks", "list", "--limit", "1000"]);
    serde_json::json!({ "stats": stats, "tasks": tasks })
}

/// Runs `args`, expects exit code 2 with a message containing each of `names`, and checks
/// that nothing changed.
fn refused(floodway: &Floodway, args: &[&str], names: &[&str]) {
    let before = snapshot(floodway);
    let message = floodway.fails(args, 2);
    for name in names {
        assert!(
            message.contains(name),
            "floodway {args:?}: {message:?} does not name {name:?}"
        );
    }
    assert_eq!(
        before,
        snapshot(floodway),
        "floodway {args:?} changed the data directory"
    );
}

const ABSENT_ID: &str = "01934f6e-8c4a-7b1e-9a4d-2f1c3b5a6d7e";

#[test]
fn unknown_queue_is_refused_by_name() {
    let floodway = populated();
    refused(&floodway, &["stats", "nope"], &["unknown queue", "nope"]);
    refused(&floodway, &["pause", "nope"], &["unknown queue", "nope"]);
    refused(&floodway, &["resume", "nope"], &["unknown queue", "nope"]);
    refused(
        &floodway,
        &["tasks", "list", "--queue", "nope"],
        &["unknown queue", "nope"],
    );
    refused(
        &floodway,
        &["dead", "replay", "--queue", "nope"],
        &["unknown queue", "nope"],
    );
    refused(
        &floodway,
        &["configure", "nope"],
        &["unknown queue", "nope"],
    );
}

#[test]
fn unknown_task_is_refused_by_id() {
    let floodway = populated();
    refused(
        &floodway,
        &["tasks", "show", ABSENT_ID],
        &["unknown task", ABSENT_ID],
    );
    refused(
        &floodway,
        &["dead", "purge", ABSENT_ID],
        &["unknown task", ABSENT_ID],
    );
}

#[test]
fn malformed_id_is_refused() {
    let floodway = populated();
    refused(
        &floodway,
        &["tasks", "show", "not-an-id"],
        &["malformed task id", "not-an-id"],
    );
    refused(
        &floodway,
        &["dead", "replay", "01934f6e-zzzz"],
        &["malformed task id", "01934f6e-zzzz"],
    );
    refused(
        &floodway,
        &["tasks", "list", "--after", "yesterday"],
        &["malformed task id", "yesterday"],
    );
}

#[test]
fn invalid_json_payload_is_refused() {
    let floodway = populated();
    refused(
        &floodway,
        &["enqueue", "orders", "charge_card", "{\"amount\": 12"],
        &["payload", "not valid JSON"],
    );
    // A new queue is not created by a refused enqueue either.
    refused(
        &floodway,
        &["enqueue", "fresh", "charge_card", "amount=12"],
        &["payload", "not valid JSON"],
    );
}

#[test]
fn oversized_payload_is_refused() {
    let floodway = populated();
    // Valid JSON, one string, 1 MiB + 1 byte of content: too large however it is counted.
    let payload = format!("\"{}\"", "x".repeat(1024 * 1024 + 1));
    let file = floodway.scratch("big.json");
    std::fs::write(&file, &payload).unwrap();
    let arg = format!("@{}", file.display());
    refused(
        &floodway,
        &["enqueue", "orders", "charge_card", &arg],
        &["payload", "exceeds the limit of 1048576 bytes"],
    );
    // The same payload as a line of a stream: refused by line number, nothing enqueued.
    let lines = floodway.scratch("big.jsonl");
    std::fs::write(
        &lines,
        format!("{{\"kind\":\"charge_card\",\"payload\":{payload}}}\n"),
    )
    .unwrap();
    refused(
        &floodway,
        &["enqueue", "orders", "--from", lines.to_str().unwrap()],
        &[
            "line 1",
            "exceeds the limit",
            "0 tasks before it were enqueued",
        ],
    );
}

#[test]
fn invalid_option_values_are_refused() {
    let floodway = populated();
    refused(
        &floodway,
        &["--durability", "sometimes", "stats"],
        &["invalid durability", "sometimes"],
    );
    refused(
        &floodway,
        &["enqueue", "orders", "k", "--priority", "10"],
        &["priority", "10"],
    );
    refused(
        &floodway,
        &["enqueue", "orders", "k", "--delay", "soon"],
        &["invalid duration", "soon"],
    );
    refused(
        &floodway,
        &["enqueue", "orders", "not a kind"],
        &["kind", "' '"],
    );
    refused(
        &floodway,
        &["tasks", "list", "--state", "finished"],
        &["unknown state", "finished"],
    );
    refused(
        &floodway,
        &["configure", "orders", "--max-attempts", "0"],
        &["max_attempts"],
    );
    refused(
        &floodway,
        &["configure", "orders", "--overflow", "drop"],
        &["overflow", "drop"],
    );
}

#[test]
fn replaying_a_task_that_is_not_dead_changes_nothing() {
    let floodway = populated();
    let ready = floodway.enqueue("orders", "charge_card");
    let dead = floodway.json(&["dead", "list"]);
    let dead_id = dead[0]["id"].as_str().unwrap().to_owned();
    // One good id and one bad: refused as a whole.
    refused(
        &floodway,
        &["dead", "replay", &dead_id, &ready],
        &[&ready, "is ready, not a dead letter"],
    );
}

#[test]
fn a_bad_line_stops_the_stream_after_the_lines_before_it() {
    let floodway = populated();
    let lines = floodway.scratch("lines.jsonl");
    std::fs::write(
        &lines,
        "{\"kind\":\"a\"}\n\n{\"kind\":\"b\",\"colour\":\"red\"}\n{\"kind\":\"c\"}\n",
    )
    .unwrap();
    let output = floodway.run(&["enqueue", "stream", "--from", lines.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("colour") && stderr.contains("the 1 tasks"),
        "{stderr}"
    );
    let ids: Vec<&str> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(ids.len(), 1, "only the first line was enqueued");
    let task = floodway.json(&["tasks", "show", ids[0]]);
    assert_eq!(task["kind"], "a");
    assert_eq!(
        floodway.json(&["stats", "stream"])[0]["totals"]["enqueued"],
        1
    );
}

#[test]
fn a_missing_data_directory_is_not_created_by_reading() {
    let floodway = Floodway::new();
    let message = floodway.fails(&["stats"], 2);
    assert!(message.contains("no data directory"), "{message}");
    floodway.fails(&["tasks", "show", ABSENT_ID], 2);
    floodway.fails(&["pause", "orders"], 2);
    assert!(!floodway.data().exists());
}

#[test]
fn a_locked_data_directory_is_a_failure_not_bad_input() {
    let floodway = populated();
    let broker = floodway_embedded::EmbeddedBroker::open(
        floodway.data(),
        floodway_embedded::Options::default(),
    )
    .expect("the directory opens");
    let message = floodway.fails(&["stats"], 1);
    assert!(
        message.contains("in use by another floodway process"),
        "{message}"
    );
    drop(broker);
    floodway.ok(&["stats"]);
}
