//! What each way an attempt can end does to the task in the broker.

use std::collections::BTreeSet;
use std::time::Duration;

use floodway_core::{DeadReason, NewTask, TaskState};
use floodway_worker::{Outcome, TaskContext};
use serde::{Deserialize, Serialize};

use crate::support::{Harness, QUEUE, T0, fixed_backoff, recv, signals, start};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    amount_cents: u64,
}

/// Panics; its `()` return type lets a handler that panics still return an outcome.
fn explode(message: &str) {
    panic!("{message}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handler_completes_tasks() {
    let h = Harness::new();
    let count = 50;
    let tasks = (0..count)
        .map(|id| {
            NewTask::json(
                "charge_card",
                &Order {
                    id,
                    amount_cents: 100 * id,
                },
            )
            .unwrap()
            .header("traceparent", format!("trace-{id}"))
        })
        .collect();
    h.enqueue(tasks).await;
    let (tx, mut rx) = signals();
    let worker = h
        .builder()
        .queue(QUEUE, 8)
        .handler("charge_card", move |ctx: TaskContext, order: Order| {
            let tx = tx.clone();
            async move {
                assert_eq!(order.amount_cents, 100 * order.id);
                assert_eq!(ctx.queue().as_str(), QUEUE);
                assert_eq!(ctx.kind(), "charge_card");
                assert_eq!(ctx.attempt(), 1);
                assert_eq!(ctx.max_attempts(), 10);
                assert_eq!(ctx.worker(), "test-worker");
                assert_eq!(
                    ctx.header("traceparent"),
                    Some(&*format!("trace-{}", order.id))
                );
                assert!(ctx.lease_expires_at() > T0);
                assert!(!ctx.is_cancelled());
                tx.send(order.id).await.unwrap();
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    let mut seen = BTreeSet::new();
    for _ in 0..count {
        seen.insert(recv(&mut rx).await);
    }
    assert_eq!(seen, (0..count).collect());
    let report = running.stop().await;

    assert_eq!(report.reserved, count);
    assert_eq!(report.completed, count);
    assert_eq!(report.retried + report.dead_lettered + report.refused, 0);
    let stats = h.stats().await;
    assert_eq!(stats.counts.completed, count);
    assert_eq!(stats.counts.active + stats.counts.ready, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_outcomes_wait_for_their_backoff_then_complete() {
    let h = Harness::new();
    let policy = fixed_backoff(3, Duration::from_secs(10));
    let busy = h
        .enqueue_one(NewTask::new("busy", "{}").retry(policy.clone()))
        .await;
    let limited = h
        .enqueue_one(NewTask::new("limited", "{}").retry(policy.clone()))
        .await;
    let fallible = h
        .enqueue_one(NewTask::new("fallible", "{}").retry(policy))
        .await;
    let (tx, mut rx) = signals();
    let build = |tx: tokio::sync::mpsc::Sender<(String, u32)>| {
        let (tx1, tx2, tx3) = (tx.clone(), tx.clone(), tx);
        h.builder()
            .queue(QUEUE, 4)
            .handler("busy", move |ctx: TaskContext, _: serde_json::Value| {
                let tx = tx1.clone();
                async move {
                    tx.send((ctx.kind().to_owned(), ctx.attempt()))
                        .await
                        .unwrap();
                    if ctx.attempt() == 1 {
                        Outcome::retry("downstream busy")
                    } else {
                        Outcome::Complete
                    }
                }
            })
            .handler("limited", move |ctx: TaskContext, _: serde_json::Value| {
                let tx = tx2.clone();
                async move {
                    tx.send((ctx.kind().to_owned(), ctx.attempt()))
                        .await
                        .unwrap();
                    if ctx.attempt() == 1 {
                        Outcome::retry_after(Duration::from_secs(42), "rate limited")
                    } else {
                        Outcome::Complete
                    }
                }
            })
            .handler("fallible", move |ctx: TaskContext, _: serde_json::Value| {
                let tx = tx3.clone();
                async move {
                    tx.send((ctx.kind().to_owned(), ctx.attempt()))
                        .await
                        .unwrap();
                    if ctx.attempt() == 1 {
                        Err("connection reset")
                    } else {
                        Ok(())
                    }
                }
            })
            .build()
            .unwrap()
    };

    // First attempts: each fails and waits out its backoff in the broker.
    let running = start(build(tx.clone()));
    let mut firsts = BTreeSet::new();
    for _ in 0..3 {
        firsts.insert(recv(&mut rx).await);
    }
    assert!(
        firsts.iter().all(|(_, attempt)| *attempt == 1),
        "{firsts:?}"
    );
    let report = running.stop().await;
    assert_eq!(report.retried, 3);
    assert_eq!(report.completed, 0);
    let task = h.get(busy).await;
    assert_eq!(task.state, TaskState::Retrying);
    assert_eq!(task.run_at, T0.saturating_add(Duration::from_secs(10)));
    assert_eq!(task.last_error.as_deref(), Some("downstream busy"));
    let task = h.get(limited).await;
    assert_eq!(task.state, TaskState::Retrying);
    assert_eq!(task.run_at, T0.saturating_add(Duration::from_secs(42)));
    assert_eq!(task.last_error.as_deref(), Some("rate limited"));
    let task = h.get(fallible).await;
    assert_eq!(task.state, TaskState::Retrying);
    assert_eq!(task.last_error.as_deref(), Some("connection reset"));

    // Once the backoffs have passed, the second attempts complete.
    h.clock.advance(Duration::from_secs(42));
    let running = start(build(tx));
    for _ in 0..3 {
        let (_, attempt) = recv(&mut rx).await;
        assert_eq!(attempt, 2);
    }
    let report = running.stop().await;
    assert_eq!(report.completed, 3);
    for id in [busy, limited, fallible] {
        let task = h.get(id).await;
        assert_eq!(task.state, TaskState::Completed);
        assert_eq!(task.attempt, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_goes_to_the_dead_letters() {
    let h = Harness::new();
    let id = h
        .enqueue_one(NewTask::new("charge_card", r#"{"id":1,"amount_cents":5}"#).max_attempts(5))
        .await;
    let (tx, mut rx) = signals();
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .handler("charge_card", move |_: TaskContext, order: Order| {
            let tx = tx.clone();
            async move {
                tx.send(()).await.unwrap();
                Outcome::fail(format!("order {}: card number invalid", order.id))
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    recv(&mut rx).await;
    let report = running.stop().await;

    assert_eq!(report.dead_lettered, 1);
    assert_eq!(report.retried, 0);
    let task = h.get(id).await;
    assert_eq!(task.state, TaskState::Dead);
    assert_eq!(task.dead_reason, Some(DeadReason::PermanentFailure));
    assert_eq!(task.attempt, 1);
    assert_eq!(
        task.last_error.as_deref(),
        Some("order 1: card number invalid")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_counts_a_failed_attempt_and_the_worker_carries_on() {
    let h = Harness::new();
    let exploding = h
        .enqueue_one(
            NewTask::new("explode", "{}")
                .priority(9)
                .retry(fixed_backoff(3, Duration::from_secs(10))),
        )
        .await;
    let fine = h.enqueue_one(NewTask::new("fine", "{}").priority(0)).await;
    let (tx, mut rx) = signals();
    let tx2 = tx.clone();
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .handler("explode", move |_: TaskContext, _: serde_json::Value| {
            let tx = tx.clone();
            async move {
                tx.send("explode").await.unwrap();
                explode("boom")
            }
        })
        .handler("fine", move |_: TaskContext, _: serde_json::Value| {
            let tx = tx2.clone();
            async move {
                tx.send("fine").await.unwrap();
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    assert_eq!(recv(&mut rx).await, "explode");
    assert_eq!(recv(&mut rx).await, "fine");
    let report = running.stop().await;

    assert_eq!(report.panicked, 1);
    assert_eq!(report.retried, 1);
    assert_eq!(report.completed, 1);
    let task = h.get(exploding).await;
    assert_eq!(task.state, TaskState::Retrying);
    assert_eq!(task.attempt, 1);
    assert_eq!(task.last_error.as_deref(), Some("handler panicked: boom"));
    assert_eq!(h.get(fine).await.state, TaskState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_past_its_timeout_is_stopped_and_retried() {
    let h = Harness::new();
    let by_kind = h.enqueue_one(NewTask::new("slow", "{}")).await;
    let by_task = h
        .enqueue_one(NewTask::new("slow", "{}").timeout(Duration::from_millis(300)))
        .await;
    let (started_tx, mut started) = signals();
    let (cancelled_tx, mut cancelled) = signals();
    let worker = h
        .builder()
        .queue(QUEUE, 2)
        .handler("slow", move |ctx: TaskContext, _: serde_json::Value| {
            let started = started_tx.clone();
            let cancelled = cancelled_tx.clone();
            async move {
                // Work spawned by a handler learns of the timeout through the context.
                let watched = ctx.clone();
                tokio::spawn(async move {
                    watched.cancelled().await;
                    cancelled.send(watched.id()).await.unwrap();
                });
                started.send(ctx.id()).await.unwrap();
                std::future::pending::<Outcome>().await
            }
        })
        .kind_timeout("slow", Duration::from_millis(200))
        .build()
        .unwrap();
    let running = start(worker);
    recv(&mut started).await;
    recv(&mut started).await;
    // The grace period (30s) outlasts both timeouts, so shutdown waits for them to fire.
    let report = running.stop().await;
    let mut stopped = BTreeSet::new();
    stopped.insert(recv(&mut cancelled).await);
    stopped.insert(recv(&mut cancelled).await);
    assert_eq!(stopped, BTreeSet::from([by_kind, by_task]));

    assert_eq!(report.timed_out, 2);
    assert_eq!(report.retried, 2);
    assert_eq!(report.released, 0);
    let task = h.get(by_kind).await;
    assert_eq!(task.state, TaskState::Retrying);
    assert_eq!(task.last_error.as_deref(), Some("timed out after 200ms"));
    let task = h.get(by_task).await;
    assert_eq!(task.state, TaskState::Retrying);
    assert_eq!(task.last_error.as_deref(), Some("timed out after 300ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_of_unknown_kind_is_retried_then_dead_lettered() {
    let h = Harness::new();
    let id = h
        .enqueue_one(NewTask::new("mystery", "{}").retry(fixed_backoff(2, Duration::ZERO)))
        .await;
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .handler("known", |_: TaskContext, _: serde_json::Value| async {})
        .build()
        .unwrap();
    let running = start(worker);
    running.wait_for(|r| r.dead_lettered >= 1).await;
    let report = running.stop().await;

    assert_eq!(report.retried, 1);
    assert_eq!(report.dead_lettered, 1);
    let task = h.get(id).await;
    assert_eq!(task.state, TaskState::Dead);
    assert_eq!(task.dead_reason, Some(DeadReason::MaxAttempts));
    assert_eq!(task.attempt, 2);
    let error = task.last_error.unwrap();
    assert!(
        error.contains("no handler") && error.contains("\"mystery\""),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_that_does_not_decode_is_a_permanent_failure() {
    let h = Harness::new();
    let wrong_type = h
        .enqueue_one(NewTask::new(
            "charge_card",
            r#"{"id":"seven","amount_cents":5}"#,
        ))
        .await;
    let not_json = h.enqueue_one(NewTask::new("charge_card", "not json")).await;
    let worker = h
        .builder()
        .queue(QUEUE, 2)
        .handler("charge_card", |_: TaskContext, _: Order| async {
            explode("never called with a bad payload")
        })
        .build()
        .unwrap();
    let running = start(worker);
    running.wait_for(|r| r.dead_lettered >= 2).await;
    let report = running.stop().await;

    assert_eq!(report.retried + report.panicked, 0);
    for id in [wrong_type, not_json] {
        let task = h.get(id).await;
        assert_eq!(task.state, TaskState::Dead);
        assert_eq!(task.dead_reason, Some(DeadReason::PermanentFailure));
        assert_eq!(task.attempt, 1);
        let error = task.last_error.unwrap();
        assert!(
            error.contains("\"charge_card\"") && error.contains("Order"),
            "{error}"
        );
    }
    let error = h.get(wrong_type).await.last_error.unwrap();
    assert!(error.contains("invalid type"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_handler_gets_the_payload_bytes() {
    let h = Harness::new();
    let bytes = vec![0u8, 159, 146, 150, 255];
    let id = h.enqueue_one(NewTask::new("blob", bytes.clone())).await;
    let (tx, mut rx) = signals();
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .raw_handler("blob", move |_: TaskContext, payload: Vec<u8>| {
            let tx = tx.clone();
            async move {
                tx.send(payload).await.unwrap();
                Outcome::Complete
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    assert_eq!(recv(&mut rx).await, bytes);
    let report = running.stop().await;
    assert_eq!(report.completed, 1);
    assert_eq!(h.get(id).await.state, TaskState::Completed);
}
