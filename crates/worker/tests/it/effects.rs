//! Idempotent side effects: an effect recorded by one attempt is not performed again by a later
//! one, and a worker that lost its lease is refused before it performs one.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use floodway_core::{Broker, Fence, NewTask, ReserveRequest, TaskState};
use floodway_worker::{EffectError, Outcome, TaskContext};
use tokio::sync::Semaphore;

use crate::support::{Harness, QUEUE, fixed_backoff, recv, signals, start};

const LEASE: Duration = Duration::from_secs(60);

/// The effect the tests perform: counts its runs and answers with a receipt naming the
/// idempotency key it was given.
async fn charge(runs: &AtomicU32, idempotency_key: String) -> Result<String, Infallible> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(format!("receipt for {idempotency_key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_recorded_by_a_failed_attempt_is_not_repeated_by_the_retry() {
    let h = Harness::new();
    let backoff = Duration::from_secs(10);
    let id = h
        .enqueue_one(NewTask::new("order", "{}").retry(fixed_backoff(3, backoff)))
        .await;
    let runs = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = signals();
    let handler_runs = runs.clone();
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .handler("order", move |ctx: TaskContext, _: serde_json::Value| {
            let (tx, runs) = (tx.clone(), handler_runs.clone());
            async move {
                let receipt: String = ctx.effect("charge", |key| charge(&runs, key)).await?;
                tx.send((ctx.attempt(), receipt)).await.unwrap();
                // The first attempt fails after the charge, as if sending the email failed.
                Ok::<_, EffectError<Infallible>>(if ctx.attempt() == 1 {
                    Outcome::retry("the email provider timed out")
                } else {
                    Outcome::Complete
                })
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    let receipt = format!("receipt for {id}:charge");
    assert_eq!(recv(&mut rx).await, (1, receipt.clone()));
    running.wait_for(|r| r.retried == 1).await;
    let task = h.get(id).await;
    assert_eq!(task.state, TaskState::Retrying);
    assert_eq!(
        task.effects.get("charge"),
        Some(&serde_json::to_string(&receipt).unwrap())
    );

    // The retry gets the recorded receipt without charging again.
    h.clock.advance(backoff);
    assert_eq!(recv(&mut rx).await, (2, receipt));
    running.wait_for(|r| r.completed == 1).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let report = running.stop().await;
    assert_eq!(report.lease_lost + report.refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_recorded_before_a_lease_expired_is_skipped_by_the_next_attempt() {
    let h = Harness::new();
    let id = h.enqueue_one(NewTask::new("order", "{}")).await;
    let runs = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = signals();
    let handler_runs = runs.clone();
    let worker = h
        .builder()
        // Two slots: the stalled first attempt keeps one, the second attempt takes the other.
        .queue(QUEUE, 2)
        .lease_duration(LEASE)
        .handler("order", move |ctx: TaskContext, _: serde_json::Value| {
            let (tx, runs) = (tx.clone(), handler_runs.clone());
            async move {
                let receipt: String = ctx.effect("charge", |key| charge(&runs, key)).await?;
                tx.send((ctx.attempt(), receipt)).await.unwrap();
                if ctx.attempt() == 1 {
                    // Stalls past its lease, as a paused process would.
                    std::future::pending::<()>().await;
                }
                Ok::<_, EffectError<Infallible>>(Outcome::Complete)
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    let receipt = format!("receipt for {id}:charge");
    assert_eq!(recv(&mut rx).await, (1, receipt.clone()));

    // The lease expires; the broker hands the task out again (to this worker's free slot).
    h.clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(recv(&mut rx).await, (2, receipt));
    running.wait_for(|r| r.completed == 1).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The stalled attempt's next heartbeat is refused, and it is stopped.
    running.handle.heartbeat_now().await.unwrap();
    running.wait_for(|r| r.lease_lost == 1).await;
    let report = running.stop().await;
    assert_eq!(report.completed, 1);
    assert_eq!(h.get(id).await.attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_is_refused_before_it_performs_an_effect() {
    let h = Harness::new();
    let id = h.enqueue_one(NewTask::new("order", "{}")).await;
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = signals();
    let (result_tx, mut result) = signals();
    let (handler_runs, handler_gate) = (runs.clone(), gate.clone());
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .lease_duration(LEASE)
        .handler("order", move |ctx: TaskContext, _: serde_json::Value| {
            let (started, result, runs, gate) = (
                started_tx.clone(),
                result_tx.clone(),
                handler_runs.clone(),
                handler_gate.clone(),
            );
            async move {
                started.send(()).await.unwrap();
                gate.acquire().await.unwrap().forget();
                let charged = ctx.effect("charge", |key| charge(&runs, key)).await;
                // Before the next `.await`: the worker stops a handler that lost its lease.
                result
                    .try_send(charged.as_ref().map_err(EffectError::is_lease_lost).err())
                    .unwrap();
                charged.map(|_| ())
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    recv(&mut started).await;

    // The worker stalls past its lease (no heartbeat is due yet) and another worker (this
    // test) reserves the task. Then the stalled handler goes on to charge.
    h.clock.advance(LEASE + Duration::from_secs(1));
    let other = h
        .broker
        .reserve(ReserveRequest::new(h.queue.clone(), 1, LEASE))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(other.lease.fence, Fence(2));
    gate.add_permits(1);
    assert_eq!(recv(&mut result).await, Some(true), "refused as lease lost");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the zombie never charged");

    // The worker discards the attempt: nothing settled, nothing recorded.
    running.wait_for(|r| r.lease_lost == 1).await;
    let report = running.stop().await;
    assert_eq!(report.completed + report.retried + report.refused, 0);
    let task = h.get(id).await;
    assert_eq!(task.state, TaskState::Active);
    assert_eq!(task.fence, Fence(2));
    assert!(task.effects.is_empty());
    assert_eq!(
        h.broker.ack(&[other.lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );
}
