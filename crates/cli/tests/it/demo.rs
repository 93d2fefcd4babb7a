//! `floodway demo --json`: one JSON object with the summary, and nothing lost.

use crate::Floodway;

#[test]
fn demo_prints_one_summary_object_and_loses_nothing() {
    let floodway = Floodway::new();
    let summary = floodway.json(&["demo", "--tasks", "150", "--seed", "7"]);
    let object = summary.as_object().expect("one JSON object");
    for field in [
        "enqueued",
        "completed",
        "retried",
        "dead_lettered",
        "lost",
        "tasks_per_s",
    ] {
        assert!(object.contains_key(field), "missing {field}: {summary}");
    }
    let count = |field: &str| summary[field].as_u64().expect(field);
    assert_eq!(count("lost"), 0, "{summary}");
    assert!(count("enqueued") > 0, "{summary}");
    assert!(count("completed") > 0, "{summary}");
    // Every acknowledged task finished one way or the other.
    assert_eq!(
        count("enqueued"),
        count("completed") + count("dead_lettered"),
        "{summary}"
    );
    // 150 orders start 150 pipelines; each adds a task per successful step.
    assert!(
        count("enqueued") >= 150 && count("enqueued") <= 450,
        "{summary}"
    );
    assert!(summary["tasks_per_s"].as_f64().unwrap() > 0.0);
    // The demo works in a temporary directory of its own.
    assert!(!floodway.data().exists());
}

#[test]
fn the_same_seed_makes_the_same_decisions() {
    let floodway = Floodway::new();
    let args = [
        "demo",
        "--tasks",
        "60",
        "--seed",
        "11",
        "--durability",
        "off",
    ];
    let first = floodway.json(&args);
    let second = floodway.json(&args);
    for field in ["enqueued", "completed", "retried", "dead_lettered", "kinds"] {
        assert_eq!(first[field], second[field], "{field}");
    }
}
