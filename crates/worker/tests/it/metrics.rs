//! The worker as a metrics source: gauges read live, handler durations by outcome, and a
//! worker's series leaving the registry when it is gone.

use std::sync::Arc;

use floodway_core::NewTask;
use floodway_metrics::Registry;
use floodway_worker::{AimdConfig, Outcome, TaskContext};
use tokio::sync::Semaphore;

use crate::support::{Harness, QUEUE, recv, signals, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_exports_its_levels_and_handler_durations_by_outcome() {
    let h = Harness::new();
    let registry = Arc::new(Registry::new());
    let gate = Arc::new(Semaphore::new(0));
    let (started, mut started_rx) = signals();
    let worker = h
        .builder()
        .queue(QUEUE, 4)
        .metrics(registry.clone())
        .adaptive(
            "ok",
            AimdConfig {
                min: 1,
                max: 8,
                initial: 3,
                ..AimdConfig::default()
            },
        )
        .handler("ok", |_: TaskContext, _: serde_json::Value| async {
            Outcome::Complete
        })
        .handler("flaky", |_: TaskContext, _: serde_json::Value| async {
            Outcome::retry("try again")
        })
        .handler("bad", |_: TaskContext, _: serde_json::Value| async {
            Outcome::fail("never")
        })
        .handler("hold", {
            let gate = gate.clone();
            move |_: TaskContext, _: serde_json::Value| {
                let (gate, started) = (gate.clone(), started.clone());
                async move {
                    started.send(()).await.unwrap();
                    let _ = gate.acquire().await.unwrap();
                    Outcome::Complete
                }
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    h.enqueue(vec![
        NewTask::new("ok", "{}"),
        NewTask::new("ok", "{}"),
        NewTask::new("flaky", "{}").max_attempts(1),
        NewTask::new("bad", "{}"),
        NewTask::new("hold", "{}"),
    ])
    .await;
    recv(&mut started_rx).await;
    running
        .wait_for(|r| r.completed == 2 && r.dead_lettered == 2)
        .await;

    // One handler is still running: the gauges say so.
    let text = registry.encode().await.unwrap();
    let w = "worker=\"test-worker\",queue=\"orders\"";
    for line in [
        format!("floodway_worker_concurrency{{{w}}} 4"),
        format!("floodway_worker_running{{{w}}} 1"),
        format!("floodway_worker_leases{{{w}}} 1"),
        format!("floodway_worker_prefetched{{{w}}} 0"),
        "floodway_worker_kind_limit{worker=\"test-worker\",kind=\"ok\"} 3".to_owned(),
        "floodway_worker_overloaded_total{worker=\"test-worker\",kind=\"ok\"} 0".to_owned(),
        "floodway_worker_timeouts_total{worker=\"test-worker\",kind=\"bad\"} 0".to_owned(),
        format!(
            "floodway_worker_handler_duration_seconds_count{{{w},kind=\"ok\",outcome=\"complete\"}} 2"
        ),
        format!(
            "floodway_worker_handler_duration_seconds_count{{{w},kind=\"flaky\",outcome=\"retry\"}} 1"
        ),
        format!(
            "floodway_worker_handler_duration_seconds_count{{{w},kind=\"bad\",outcome=\"fail\"}} 1"
        ),
    ] {
        assert!(
            text.contains(&format!("{line}\n")),
            "missing {line} in\n{text}"
        );
    }
    assert!(
        !text.contains("outcome=\"panic\""),
        "outcomes that never happened are not exported:\n{text}"
    );
    assert!(
        !text.contains("kind=\"flaky\"} 3"),
        "only adaptive kinds have a limit"
    );

    gate.add_permits(1);
    running.wait_for(|r| r.completed == 3).await;
    let text = registry.encode().await.unwrap();
    assert!(
        text.contains(&format!("floodway_worker_running{{{w}}} 0\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "floodway_worker_handler_duration_seconds_count{{{w},kind=\"hold\",outcome=\"complete\"}} 1\n"
        )),
        "{text}"
    );

    // A worker that is gone leaves the exposition.
    let handle = running.handle.clone();
    running.stop().await;
    assert_eq!(registry.len(), 1, "a handle keeps the worker's source");
    drop(handle);
    assert!(registry.is_empty());
    assert_eq!(registry.encode().await.unwrap(), "");
}
