//! Heartbeats and lost leases. The broker's clock is moved by hand; the worker is told to
//! heartbeat with `heartbeat_now` where a test needs one at a known moment, and long leases
//! keep the scheduled heartbeats out of the way (a 60s lease is first due after 40s).

use std::sync::Arc;
use std::time::Duration;

use floodway_core::{Broker, Fence, NewTask, ReserveRequest, TaskState};
use floodway_worker::TaskContext;
use tokio::sync::Semaphore;

use crate::support::{Harness, QUEUE, T0, recv, signals, start};

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_a_long_task_alive_past_its_first_expiry() {
    let h = Harness::new();
    let id = h.enqueue_one(NewTask::new("long", "{}")).await;
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut rx) = signals();
    let handler_gate = gate.clone();
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .lease_duration(LEASE)
        .handler("long", move |ctx: TaskContext, _: serde_json::Value| {
            let (tx, gate) = (tx.clone(), handler_gate.clone());
            async move {
                tx.send(ctx.clone()).await.unwrap();
                gate.acquire().await.unwrap().forget();
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    let ctx = recv(&mut rx).await;
    let first_expiry = T0.saturating_add(LEASE);
    assert_eq!(h.get(id).await.lease_expires_at, Some(first_expiry));

    h.clock.advance(Duration::from_secs(50));
    running.handle.heartbeat_now().await.unwrap();
    let extended = T0.saturating_add(Duration::from_secs(50) + LEASE);
    assert_eq!(h.get(id).await.lease_expires_at, Some(extended));
    assert_eq!(ctx.lease_expires_at(), extended);

    // Past the first expiry: the broker would have taken the task back without the heartbeat.
    h.clock.advance(Duration::from_secs(20));
    assert_eq!(h.broker.reap().await.unwrap(), 0);
    let task = h.get(id).await;
    assert_eq!(task.state, TaskState::Active);
    assert_eq!(task.fence, Fence(1));

    gate.add_permits(1);
    let report = running.stop().await;
    assert_eq!(report.extended, 1);
    assert_eq!(report.completed, 1);
    assert_eq!(report.lease_lost + report.refused, 0);
    let task = h.get(id).await;
    assert_eq!(task.state, TaskState::Completed);
    assert_eq!(task.attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_extend_leases_on_their_own_schedule() {
    let h = Harness::new();
    let id = h.enqueue_one(NewTask::new("long", "{}")).await;
    let lease = Duration::from_millis(300);
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut rx) = signals();
    let handler_gate = gate.clone();
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .lease_duration(lease)
        .handler("long", move |_: TaskContext, _: serde_json::Value| {
            let (tx, gate) = (tx.clone(), handler_gate.clone());
            async move {
                tx.send(()).await.unwrap();
                gate.acquire().await.unwrap().forget();
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    recv(&mut rx).await;

    // Move the broker's clock, then wait, event by event, for a scheduled heartbeat that saw
    // the new time: the lease then ends one lease duration after it.
    h.clock.advance(Duration::from_millis(200));
    let wanted = Some(T0.saturating_add(Duration::from_millis(200) + lease));
    let mut seen = running.handle.report().extended;
    while h.get(id).await.lease_expires_at != wanted {
        seen = running.wait_for(|r| r.extended > seen).await.extended;
    }

    gate.add_permits(1);
    let report = running.stop().await;
    assert_eq!(report.completed, 1);
    assert_eq!(report.lease_lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_stops_the_handler_and_discards_its_result() {
    let h = Harness::new();
    let id = h.enqueue_one(NewTask::new("long", "{}")).await;
    let (started_tx, mut started) = signals();
    let (cancelled_tx, mut cancelled) = signals();
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .lease_duration(LEASE)
        .handler("long", move |ctx: TaskContext, _: serde_json::Value| {
            let (started, cancelled) = (started_tx.clone(), cancelled_tx.clone());
            async move {
                let watched = ctx.clone();
                tokio::spawn(async move {
                    watched.cancelled().await;
                    cancelled.send(watched.fence()).await.unwrap();
                });
                started.send(ctx.attempt()).await.unwrap();
                std::future::pending::<()>().await;
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    assert_eq!(recv(&mut started).await, 1);

    // The lease expires and another worker (this test) reserves the task.
    h.clock.advance(LEASE + Duration::from_secs(1));
    let other = h
        .broker
        .reserve(ReserveRequest::new(h.queue.clone(), 1, LEASE))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(other.task.id, id);
    assert_eq!(other.lease.fence, Fence(2));

    // The next heartbeat is refused, so the worker stops its handler.
    running.handle.heartbeat_now().await.unwrap();
    assert_eq!(recv(&mut cancelled).await, Fence(1));
    running.wait_for(|r| r.lease_lost == 1).await;
    let report = running.stop().await;
    assert_eq!(report.lease_lost, 1);
    assert_eq!(report.completed + report.retried + report.refused, 0);

    // The worker settled nothing: the new holder still has the task and can complete it.
    let task = h.get(id).await;
    assert_eq!(task.state, TaskState::Active);
    assert_eq!(task.fence, Fence(2));
    assert_eq!(
        h.broker.ack(&[other.lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_ack_after_a_lost_lease_is_refused() {
    let h = Harness::new();
    let id = h.enqueue_one(NewTask::new("long", "{}")).await;
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut rx) = signals();
    let handler_gate = gate.clone();
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .lease_duration(LEASE)
        .handler("long", move |_: TaskContext, _: serde_json::Value| {
            let (tx, gate) = (tx.clone(), handler_gate.clone());
            async move {
                tx.send(()).await.unwrap();
                gate.acquire().await.unwrap().forget();
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    recv(&mut rx).await;

    // The worker stalls past its lease (no heartbeat is due yet on its clock) and another
    // worker reserves the task; then the stalled handler finishes.
    h.clock.advance(LEASE + Duration::from_secs(1));
    let other = h
        .broker
        .reserve(ReserveRequest::new(h.queue.clone(), 1, LEASE))
        .await
        .unwrap()
        .remove(0);
    gate.add_permits(1);
    running.wait_for(|r| r.refused == 1).await;
    let report = running.stop().await;
    assert_eq!(report.completed, 0);
    assert_eq!(report.refused, 1);

    let task = h.get(id).await;
    assert_eq!(task.state, TaskState::Active);
    assert_eq!(task.fence, other.lease.fence);
    assert_eq!(task.attempt, 2);
}
