//! The polyglot proof: `examples/python_worker/worker.py` (Python's standard library only)
//! works tasks from a real `floodway serve` over the HTTP API: completes them, sees a failed
//! attempt retried, and sends a permanent failure to the dead letters.

use std::path::PathBuf;
use std::process::Stdio;

use floodway_core::{Broker, NewTask, QueueName};
use serde_json::Value;

use crate::Floodway;
use crate::serving::{Serving, config_file, producer, remote, runtime};

const PRODUCER: &str = "fw_test_python_producer";
const WORKER: &str = "fw_test_python_worker";

fn worker_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/python_worker/worker.py")
}

#[test]
fn python_worker_completes_tasks_from_a_real_server() {
    let floodway = Floodway::new();
    let config = config_file(
        &floodway,
        "",
        &[
            ("producer", PRODUCER, "\"produce\""),
            ("python", WORKER, "\"consume\""),
        ],
    );
    let serving = Serving::start(&floodway, &["--config", config.to_str().unwrap()], &[]);
    let rt = runtime();
    let math = QueueName::new("math").unwrap();
    rt.block_on(async {
        let mut tasks: Vec<NewTask> = (0..30)
            .map(|i| NewTask::json("add", &serde_json::json!({"a": i, "b": 1000})).unwrap())
            .collect();
        tasks.extend((0..5).map(|i| {
            // Retried after a short backoff, so the test does not wait for the default second.
            let retry = floodway_core::RetryPolicy {
                backoff_initial: std::time::Duration::from_millis(50),
                backoff_max: std::time::Duration::from_millis(50),
                ..floodway_core::RetryPolicy::default()
            };
            NewTask::json("flaky", &i).unwrap().retry(retry)
        }));
        tasks.extend((0..2).map(|_| NewTask::new("reject", "{}")));
        producer(&serving.url, Some(PRODUCER))
            .enqueue(&math, tasks)
            .await
            .unwrap();
    });

    let output = std::process::Command::new("python3")
        .arg(worker_script())
        .args([
            "--server",
            &serving.url,
            "--queue",
            "math",
            "--max-tasks",
            "37",
        ])
        .env("FLOODWAY_TOKEN", WORKER)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs (CI installs it; see .ci/run)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python worker failed: {stderr}"
    );
    let results: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let sums: Vec<u64> = results
        .iter()
        .filter(|r| r["kind"] == "add")
        .map(|r| r["result"].as_u64().unwrap())
        .collect();
    assert_eq!(sums.len(), 30);
    assert_eq!(sums.iter().sum::<u64>(), (0..30).sum::<u64>() + 30 * 1000);
    let counts: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(counts["completed"], 35, "{counts}");
    assert_eq!(counts["dead"], 2, "{counts}");

    rt.block_on(async {
        // The server's own account agrees.
        let admin_view = remote(&serving.url, Some(WORKER)).await;
        let stats = &admin_view.stats(Some(&math)).await.unwrap()[0];
        assert_eq!(stats.totals.completed, 35);
        assert_eq!(stats.totals.retried, 5);
        assert_eq!(stats.totals.dead.permanent_failure, 2);
        assert_eq!(stats.length() + stats.counts.active, 0);
    });
    assert!(serving.stop().success());
}
