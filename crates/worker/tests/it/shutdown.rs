//! Graceful shutdown, and a worker that outlives its broker's failures.

use std::sync::Arc;
use std::time::Duration;

use floodway_core::{Fence, NewTask, TaskState};
use floodway_worker::{TaskContext, WorkerError};
use tokio::sync::Semaphore;

use crate::support::{Harness, QUEUE, recv, signals, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_tasks_within_grace_and_releases_the_rest() {
    let h = Harness::new();
    // Two slots: the two highest-priority tasks start, the third waits in the broker.
    let quick = h.enqueue_one(NewTask::new("quick", "{}").priority(9)).await;
    let stuck = h.enqueue_one(NewTask::new("stuck", "{}").priority(8)).await;
    let waiting = h.enqueue_one(NewTask::new("quick", "{}").priority(0)).await;
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = signals();
    let (cancelled_tx, mut cancelled) = signals();
    let started_tx2 = started_tx.clone();
    let handler_gate = gate.clone();
    let worker = h
        .builder()
        .queue(QUEUE, 2)
        .grace_period(Duration::from_secs(2))
        .handler("quick", move |ctx: TaskContext, _: serde_json::Value| {
            let (started, gate) = (started_tx.clone(), handler_gate.clone());
            async move {
                started.send(ctx.id()).await.unwrap();
                gate.acquire().await.unwrap().forget();
            }
        })
        .handler("stuck", move |ctx: TaskContext, _: serde_json::Value| {
            let (started, cancelled) = (started_tx2.clone(), cancelled_tx.clone());
            async move {
                let watched = ctx.clone();
                tokio::spawn(async move {
                    watched.cancelled().await;
                    cancelled.send(watched.id()).await.unwrap();
                });
                started.send(ctx.id()).await.unwrap();
                std::future::pending::<()>().await;
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    let mut first = vec![recv(&mut started).await, recv(&mut started).await];
    first.sort();
    let mut expected = vec![quick, stuck];
    expected.sort();
    assert_eq!(first, expected);

    // Shut down, then let the quick task finish within the grace period; the stuck one is
    // cancelled when the grace period ends.
    running.handle.shutdown();
    gate.add_permits(1);
    let handle = running.handle.clone();
    let report = running.finish().await;
    assert_eq!(recv(&mut cancelled).await, stuck);

    assert_eq!(report.reserved, 2);
    assert_eq!(report.completed, 1);
    assert_eq!(report.released, 1);
    assert_eq!(report.lease_lost + report.refused + report.retried, 0);
    assert_eq!(h.get(quick).await.state, TaskState::Completed);
    let task = h.get(stuck).await;
    assert_eq!(task.state, TaskState::Ready);
    assert_eq!(task.attempt, 0, "a release gives the attempt back");
    let task = h.get(waiting).await;
    assert_eq!(task.state, TaskState::Ready);
    assert_eq!(
        task.fence,
        Fence(0),
        "nothing is reserved after shutdown starts"
    );

    // The handle outlives the worker and says so.
    assert_eq!(
        handle.wait_for(|r| r.completed > 1).await,
        Err(WorkerError::Stopped)
    );
    assert_eq!(handle.heartbeat_now().await, Err(WorkerError::Stopped));
    assert_eq!(handle.report(), report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_worker_stops_promptly_when_its_shutdown_future_completes() {
    let h = Harness::new();
    let worker = h
        .builder()
        .queue(QUEUE, 4)
        .handler("any", |_: TaskContext, _: serde_json::Value| async {})
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async {
        let _ = stop_rx.await;
    }));
    stop_tx.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report, Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_failures_are_retried_and_never_crash_the_worker() {
    let h = Harness::new();
    let worker = h
        .builder()
        .queue(QUEUE, 2)
        .handler("any", |_: TaskContext, _: serde_json::Value| async {})
        .build()
        .unwrap();
    let running = start(worker);
    // A closed broker answers every call with `Unavailable`.
    h.broker.close().await;
    running.wait_for(|r| r.broker_errors >= 2).await;
    let report = running.stop().await;
    assert!(report.broker_errors >= 2);
}
