//! The worker runtime, unchanged, against a remote server: reservations, heartbeats, acks and
//! retries all go over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use floodway_client::{ClientConfig, HttpBroker};
use floodway_core::{Broker, Jitter, NewTask, QueueName, RetryPolicy};
use floodway_server::ServerConfig;
use floodway_worker::{Outcome, TaskContext, Worker};

use crate::support::{TestServer, broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runtime_completes_and_retries_tasks_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(broker(&dir), ServerConfig::default()).await;
    let remote = Arc::new(
        HttpBroker::connect(ClientConfig::new(&server.url))
            .await
            .unwrap(),
    );
    let queue = QueueName::new("remote").unwrap();
    let quick_retry = RetryPolicy {
        max_attempts: 3,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(10),
        backoff_multiplier: 1.0,
        jitter: Jitter::None,
    };
    for batch in 0..5 {
        let tasks = (0..100)
            .map(|i| {
                let kind = if i % 10 == 0 { "flaky" } else { "steady" };
                NewTask::json(kind, &serde_json::json!({ "n": batch * 100 + i }))
                    .unwrap()
                    .retry(quick_retry.clone())
            })
            .collect();
        remote.enqueue(&queue, tasks).await.unwrap();
    }
    let first_attempts = Arc::new(AtomicU32::new(0));
    let seen = first_attempts.clone();
    let worker = Worker::builder(remote.clone())
        .queue("remote", 32)
        .poll_wait(Duration::from_millis(200))
        .handler("steady", |_ctx: TaskContext, _n: serde_json::Value| async {
            Outcome::Complete
        })
        .handler("flaky", move |ctx: TaskContext, _n: serde_json::Value| {
            let seen = seen.clone();
            async move {
                if ctx.attempt() == 1 {
                    seen.fetch_add(1, Ordering::Relaxed);
                    Outcome::retry("the first attempt always fails")
                } else {
                    Outcome::Complete
                }
            }
        })
        .build()
        .unwrap();
    let handle = worker.handle();
    let running = tokio::spawn(worker.run(std::future::pending()));
    let report = handle.wait_for(|r| r.completed >= 500).await.unwrap();
    handle.shutdown();
    running.await.unwrap();

    assert_eq!(report.retried, 50);
    assert_eq!(first_attempts.load(Ordering::Relaxed), 50);
    let stats = &server.broker.stats(Some(&queue)).await.unwrap()[0];
    assert_eq!(stats.totals.completed, 500);
    assert_eq!(stats.totals.retried, 50);
    assert_eq!(stats.length() + stats.counts.active, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_over_http_keep_a_long_task_leased() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(broker(&dir), ServerConfig::default()).await;
    let remote = Arc::new(
        HttpBroker::connect(ClientConfig::new(&server.url))
            .await
            .unwrap(),
    );
    let queue = QueueName::new("slow").unwrap();
    remote
        .enqueue(&queue, vec![NewTask::new("slow", "null")])
        .await
        .unwrap();
    // The handler works for four lease lengths: only extensions over HTTP keep the lease.
    let lease = Duration::from_millis(300);
    let worker = Worker::builder(remote.clone())
        .queue("slow", 1)
        .lease_duration(lease)
        .poll_wait(Duration::from_millis(200))
        .handler("slow", move |_ctx: TaskContext, _: ()| async move {
            tokio::time::sleep(lease * 4).await;
            Outcome::Complete
        })
        .build()
        .unwrap();
    let handle = worker.handle();
    let running = tokio::spawn(worker.run(std::future::pending()));
    let report = handle.wait_for(|r| r.completed >= 1).await.unwrap();
    handle.shutdown();
    running.await.unwrap();
    assert!(report.extended >= 3, "{report:?}");
    assert_eq!(report.lease_lost, 0, "{report:?}");
    let stats = &server.broker.stats(Some(&queue)).await.unwrap()[0];
    assert_eq!(stats.totals.completed, 1);
    assert_eq!(stats.totals.leases_expired, 0);
}
