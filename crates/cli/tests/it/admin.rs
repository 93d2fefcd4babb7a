//! The administrative commands, round trip: enqueue, stats, tasks, pause and resume,
//! configure (backpressure settings included, and stats showing them), and dead letters made
//! by overflow, then replayed and purged.

use std::io::Write;
use std::process::Stdio;

use serde_json::json;

use crate::Floodway;

#[test]
fn an_enqueued_task_shows_up_in_stats_and_in_full() {
    let floodway = Floodway::new();
    let id = floodway
        .ok(&[
            "enqueue",
            "orders",
            "charge_card",
            r#"{"order": 17, "amount": 12345678901234567890, "z": 1, "a": 2}"#,
            "--priority",
            "7",
            "--header",
            "traceparent=00-abc-def-01",
            "--ttl",
            "1h",
            "--max-attempts",
            "3",
            "--partition-key",
            "customer-9",
        ])
        .trim()
        .to_owned();

    let stats = floodway.json(&["stats", "orders"]);
    assert_eq!(stats[0]["queue"], "orders");
    assert_eq!(stats[0]["ready"], 1);
    assert_eq!(stats[0]["paused"], false);
    assert_eq!(stats[0]["totals"]["enqueued"], 1);

    let task = floodway.json(&["tasks", "show", &id]);
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["kind"], "charge_card");
    assert_eq!(task["state"], "ready");
    assert_eq!(task["priority"], 7);
    assert_eq!(task["max_attempts"], 3);
    assert_eq!(task["partition_key"], "customer-9");
    assert_eq!(task["headers"]["traceparent"], "00-abc-def-01");
    assert!(task["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(task["payload_format"], "json");
    // The payload is embedded exactly as given: key order and big numbers survive.
    let raw = floodway.ok(&["tasks", "show", &id, "--json"]);
    assert!(
        raw.contains(r#""payload": {"order": 17, "amount": 12345678901234567890, "z": 1, "a": 2}"#),
        "{raw}"
    );
    let human = floodway.ok(&["tasks", "show", &id]);
    assert!(human.contains("\"order\": 17"), "{human}");

    let listed = floodway.json(&["tasks", "list", "--queue", "orders", "--state", "ready"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    let after = floodway.json(&["tasks", "list", "--after", &id]);
    assert_eq!(after.as_array().unwrap().len(), 0);
}

#[test]
fn delayed_tasks_are_scheduled() {
    let floodway = Floodway::new();
    let id = floodway.ok(&["enqueue", "later", "k", "--delay", "1h"]);
    let task = floodway.json(&["tasks", "show", id.trim()]);
    assert_eq!(task["state"], "scheduled");
    assert_eq!(floodway.json(&["stats", "later"])[0]["scheduled"], 1);
}

#[test]
fn an_idempotency_key_answers_the_first_id() {
    let floodway = Floodway::new();
    let first = floodway.json(&["enqueue", "q", "k", "--idempotency-key", "order-1"]);
    assert_eq!(first["duplicate"], false);
    let second = floodway.json(&["enqueue", "q", "k", "--idempotency-key", "order-1"]);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["id"], second["id"]);
    let output = floodway.run(&["enqueue", "q", "k", "--idempotency-key", "order-1"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        first["id"].as_str().unwrap()
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("duplicate of"));
    assert_eq!(floodway.json(&["stats", "q"])[0]["totals"]["enqueued"], 1);
}

#[test]
fn pause_and_resume_flip_the_queue() {
    let floodway = Floodway::new();
    floodway.enqueue("orders", "k");
    assert!(
        floodway
            .ok(&["pause", "orders"])
            .contains("paused queue orders")
    );
    assert_eq!(floodway.json(&["stats", "orders"])[0]["paused"], true);
    let again = floodway.json(&["pause", "orders"]);
    assert_eq!(again["changed"], false);
    assert!(
        floodway
            .ok(&["resume", "orders"])
            .contains("resumed queue orders")
    );
    assert_eq!(floodway.json(&["stats", "orders"])[0]["paused"], false);
}

#[test]
fn configure_changes_only_the_given_fields() {
    let floodway = Floodway::new();
    floodway.ok(&[
        "configure",
        "q",
        "--max-attempts",
        "4",
        "--backoff-max",
        "2m",
    ]);
    floodway.ok(&["configure", "q", "--length-max", "50"]);
    let config = &floodway.json(&["configure", "q"])["config"];
    assert_eq!(config["length_max"], 50);
    assert_eq!(config["retry"]["max_attempts"], 4);
    assert_eq!(config["retry"]["backoff_max"], "2m");
    assert_eq!(config["overflow"], "reject");
    floodway.ok(&["configure", "q", "--length-max", "none"]);
    assert_eq!(
        floodway.json(&["stats", "q"])[0]["config"]["length_max"],
        serde_json::Value::Null
    );
    // A task enqueued with --max-attempts keeps the queue's backoff.
    let id = floodway.ok(&["enqueue", "q", "k", "--max-attempts", "2"]);
    let task = floodway.json(&["tasks", "show", id.trim()]);
    assert_eq!(task["retry"]["max_attempts"], 2);
    assert_eq!(task["retry"]["backoff_max"], "2m");
}

#[test]
fn overflow_dead_letters_can_be_listed_replayed_and_purged() {
    let floodway = Floodway::new();
    floodway.ok(&[
        "configure",
        "tiny",
        "--length-max",
        "1",
        "--overflow",
        "dead-letter-oldest",
    ]);
    let first = floodway.enqueue("tiny", "a");
    let second = floodway.enqueue("tiny", "b");

    let dead = floodway.json(&["dead", "list", "--queue", "tiny"]);
    assert_eq!(dead.as_array().unwrap().len(), 1);
    assert_eq!(dead[0]["id"], first.as_str());
    assert_eq!(dead[0]["dead_reason"], "overflow");
    let by_reason = floodway.json(&["dead", "list", "--reason", "expired"]);
    assert_eq!(by_reason.as_array().unwrap().len(), 0);

    let replayed = floodway.json(&["dead", "replay", &first]);
    assert_eq!(replayed["replayed"], 1);
    let task = floodway.json(&["tasks", "show", &first]);
    assert_eq!(task["state"], "ready");
    assert_eq!(task["attempt"], 0);

    // Two waiting now; a third pushes the oldest two out again.
    floodway.enqueue("tiny", "c");
    let stats = floodway.json(&["stats", "tiny"]);
    assert_eq!(stats[0]["dead"], 2);
    assert_eq!(stats[0]["ready"], 1);
    let dead: Vec<String> = floodway
        .json(&["dead", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(dead, [first.clone(), second.clone()]);

    let purged = floodway.ok(&["dead", "purge", "--queue", "tiny", "--reason", "overflow"]);
    assert!(purged.contains("purged 2 dead letters"), "{purged}");
    assert_eq!(floodway.json(&["stats", "tiny"])[0]["dead"], 0);
    floodway.fails(&["tasks", "show", &second], 2);
    assert_eq!(floodway.json(&["dead", "purge", "--all"])["purged"], 0);
}

#[test]
fn replay_all_loops_over_more_than_one_batch() {
    let floodway = Floodway::new();
    floodway.ok(&[
        "configure",
        "big",
        "--length-max",
        "1000",
        "--overflow",
        "dead-letter-oldest",
    ]);
    // 2,200 tasks through a queue of length 1,000: 1,200 dead letters, more than one batch
    // of the broker's batch limit (1,000) however the stream was batched.
    let lines: String = (0..2200)
        .map(|i| format!("{{\"kind\":\"k{i}\"}}\n"))
        .collect();
    let file = floodway.scratch("lines.jsonl");
    std::fs::write(&file, lines).unwrap();
    let ids = floodway.ok(&["enqueue", "big", "--from", file.to_str().unwrap()]);
    assert_eq!(ids.lines().count(), 2200);
    assert_eq!(floodway.json(&["stats", "big"])[0]["dead"], 1200);
    let replayed = floodway.json(&["dead", "replay", "--all"]);
    assert_eq!(replayed["replayed"], 1200);
    let stats = floodway.json(&["stats", "big"]);
    assert_eq!(stats[0]["dead"], 0);
    assert_eq!(stats[0]["ready"], 2200);
}

#[test]
fn a_stream_into_a_short_queue_is_batched_to_fit() {
    let floodway = Floodway::new();
    floodway.ok(&[
        "configure",
        "short",
        "--length-max",
        "2",
        "--overflow",
        "dead-letter-oldest",
    ]);
    // Read from a file, the lines are all waiting at once; batches of more than two new tasks
    // would be refused by the broker, so the stream must keep them to two.
    let lines: String = (0..7).map(|i| format!("{{\"kind\":\"k{i}\"}}\n")).collect();
    let file = floodway.scratch("lines.jsonl");
    std::fs::write(&file, lines).unwrap();
    let ids = floodway.ok(&["enqueue", "short", "--from", file.to_str().unwrap()]);
    assert_eq!(ids.lines().count(), 7);
    let stats = floodway.json(&["stats", "short"]);
    assert_eq!(stats[0]["ready"], 2);
    assert_eq!(stats[0]["dead"], 5);
}

#[test]
fn streamed_lines_print_one_id_each_in_order() {
    let floodway = Floodway::new();
    let mut child = floodway
        .command(&["enqueue", "stream", "--from", "-", "--priority", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, r#"{{"kind":"a","payload":{{"n":1}}}}"#).unwrap();
    writeln!(
        stdin,
        r#"{{"kind":"b","priority":9,"delay":"1h","headers":{{"h":"v"}}}}"#
    )
    .unwrap();
    writeln!(stdin, r#"{{"kind":"c","idempotency_key":"x"}}"#).unwrap();
    writeln!(stdin, r#"{{"kind":"c","idempotency_key":"x"}}"#).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let ids: Vec<&str> = stdout.lines().collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[2], ids[3], "the duplicate answers the first id");
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(
        summary.contains("enqueued 4 tasks to stream (1 duplicates)"),
        "{summary}"
    );

    let a = floodway.json(&["tasks", "show", ids[0]]);
    assert_eq!(a["kind"], "a");
    assert_eq!(a["priority"], 2);
    assert_eq!(a["payload"]["n"], 1);
    let b = floodway.json(&["tasks", "show", ids[1]]);
    assert_eq!(b["priority"], 9);
    assert_eq!(b["state"], "scheduled");
    assert_eq!(b["headers"]["h"], "v");
}

#[test]
fn configure_sets_backpressure_and_stats_shows_it() {
    let floodway = Floodway::new();
    let configured = floodway.json(&[
        "configure",
        "hot",
        "--rate-limit",
        "500/s:50",
        "--key-rate-limit",
        "10/s",
        "--concurrency-max",
        "2",
        "--key-concurrency-max",
        "1",
        "--watermarks",
        "3:1",
        "--ttl",
        "1h",
    ]);
    let config = &configured["config"];
    assert_eq!(config["rate_limit"], json!({"rate": 500.0, "burst": 50}));
    assert_eq!(config["key_rate_limit"], json!({"rate": 10.0, "burst": 10}));
    assert_eq!(config["concurrency_max"], 2);
    assert_eq!(config["key_concurrency_max"], 1);
    assert_eq!(config["watermarks"], json!({"high": 3, "low": 1}));
    assert_eq!(config["ttl"], "1h");
    let shown = floodway.ok(&["configure", "hot"]);
    for row in ["500/s (burst 50)", "10/s (burst 10)", "high 3, low 1", "1h"] {
        assert!(shown.contains(row), "missing {row}:\n{shown}");
    }

    // Three tasks fill the queue to its high watermark; the fourth is refused (exit 1:
    // backpressure, not bad input) and written nowhere.
    let id = floodway
        .ok(&["enqueue", "hot", "k", "--limit-key", "tenant-a"])
        .trim()
        .to_owned();
    floodway.enqueue("hot", "k");
    floodway.enqueue("hot", "k");
    let refused = floodway.fails(&["enqueue", "hot", "k"], 1);
    assert!(
        refused.contains("overloaded") && refused.contains("high watermark of 3"),
        "{refused}"
    );
    let task = floodway.json(&["tasks", "show", &id]);
    assert_eq!(task["limit_key"], "tenant-a");
    assert_eq!(task["effects"], json!({}));
    assert!(floodway.ok(&["tasks", "show", &id]).contains("tenant-a"));

    // Which side of its watermarks a queue is on lives in the broker's memory and starts at
    // accepting when a process opens the data directory (docs of `Broker`); only a depth above
    // the high watermark is reported refusing by a fresh process. At exactly the high mark each
    // command here sees it accepting; the refusal is in the totals.
    let stats = &floodway.json(&["stats", "hot"])[0];
    assert_eq!(stats["refusing"], false);
    assert_eq!(stats["totals"]["enqueued"], 3);
    assert_eq!(stats["totals"]["rejected_overloaded"], 1);
    let backpressure = &stats["backpressure"];
    assert_eq!(backpressure["refusing"], false);
    assert_eq!(backpressure["length"], 3);
    assert_eq!(backpressure["watermarks"], json!({"high": 3, "low": 1}));
    assert_eq!(backpressure["active"], 0);
    assert_eq!(backpressure["concurrency_max"], 2);
    assert_eq!(backpressure["key_concurrency_max"], 1);
    assert_eq!(
        backpressure["rate_limit"],
        json!({"rate": 500.0, "burst": 50})
    );
    assert_eq!(backpressure["rejected_overloaded"], 1);
    assert_eq!(backpressure["throttled_rate"], 0);
    assert_eq!(backpressure["throttled_concurrency"], 0);

    let table = floodway.ok(&["stats"]);
    for cell in [
        "accepting",
        "3 / high 3, low 1",
        "0 / 2",
        "500/s (burst 50)",
        "1 active, 10/s (burst 10)",
        "Σ rejected overloaded",
        "Σ throttled concurrency",
    ] {
        assert!(table.contains(cell), "missing {cell}:\n{table}");
    }

    // `none` removes a setting; the others stay.
    floodway.ok(&["configure", "hot", "--watermarks", "none", "--ttl", "none"]);
    let config = &floodway.json(&["stats", "hot"])[0]["config"];
    assert_eq!(config["watermarks"], serde_json::Value::Null);
    assert_eq!(config["ttl"], serde_json::Value::Null);
    assert_eq!(config["concurrency_max"], 2);
    floodway.enqueue("hot", "k");
}

#[test]
fn invalid_backpressure_settings_are_bad_input_and_named() {
    let floodway = Floodway::new();
    floodway.enqueue("q", "k");
    let message = floodway.fails(&["configure", "q", "--watermarks", "5:5"], 2);
    assert!(message.contains("watermarks"), "{message}");
    let message = floodway.fails(&["configure", "q", "--watermarks", "5"], 2);
    assert!(message.contains("HIGH:LOW"), "{message}");
    let message = floodway.fails(&["configure", "q", "--rate-limit", "fast"], 2);
    assert!(message.contains("rate limit"), "{message}");
    let message = floodway.fails(&["configure", "q", "--concurrency-max", "0"], 2);
    assert!(message.contains("concurrency_max"), "{message}");
    let message = floodway.fails(&["enqueue", "q", "k", "--limit-key", ""], 2);
    assert!(message.contains("limit_key"), "{message}");
    assert_eq!(
        floodway.json(&["stats", "q"])[0]["config"]["watermarks"],
        serde_json::Value::Null,
        "nothing changed"
    );
}
