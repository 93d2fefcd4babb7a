//! Reservation never exceeds the room a queue has: a worker holds at most `concurrency`
//! leases of a queue, plus its prefetch when one is set, so tasks it cannot start (or hold)
//! stay in the broker for other workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use floodway_core::{Broker, Fence, NewTask, QueueName, TaskState};
use floodway_worker::TaskContext;
use tokio::sync::Semaphore;

use crate::support::{Harness, QUEUE, recv, signals, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_never_holds_more_leases_than_its_concurrency() {
    let h = Harness::new();
    let concurrency = 3;
    let count = 20u64;
    h.enqueue((0..count).map(|_| NewTask::new("work", "{}")).collect())
        .await;
    let running_now = Arc::new(AtomicU64::new(0));
    let running_max = Arc::new(AtomicU64::new(0));
    let active_max = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut rx) = signals();
    let worker = {
        let (running_now, running_max, active_max, gate) = (
            running_now.clone(),
            running_max.clone(),
            active_max.clone(),
            gate.clone(),
        );
        let broker = h.broker.clone();
        let queue = QueueName::new(QUEUE).unwrap();
        h.builder()
            .queue(QUEUE, concurrency)
            .reserve_batch_max(100)
            .handler("work", move |_: TaskContext, _: serde_json::Value| {
                let (running_now, running_max, active_max, gate, broker, queue, tx) = (
                    running_now.clone(),
                    running_max.clone(),
                    active_max.clone(),
                    gate.clone(),
                    broker.clone(),
                    queue.clone(),
                    tx.clone(),
                );
                async move {
                    let now = running_now.fetch_add(1, Ordering::SeqCst) + 1;
                    running_max.fetch_max(now, Ordering::SeqCst);
                    // The broker's own count of this queue's leases, from inside a handler.
                    let active = broker.stats(Some(&queue)).await.unwrap()[0].counts.active;
                    active_max.fetch_max(active, Ordering::SeqCst);
                    tx.send(()).await.unwrap();
                    gate.acquire().await.unwrap().forget();
                    running_now.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .build()
            .unwrap()
    };
    let running = start(worker);

    // With every slot busy, the rest of the queue stays ready in the broker.
    for _ in 0..concurrency {
        recv(&mut rx).await;
    }
    let stats = h.stats().await;
    assert_eq!(stats.counts.active, concurrency as u64);
    assert_eq!(stats.counts.ready, count - concurrency as u64);
    let activity = running.handle.stats();
    let queue = activity.queue(QUEUE).unwrap();
    assert_eq!((queue.leases, queue.running), (concurrency, concurrency));
    assert_eq!(queue.prefetched, 0);

    gate.add_permits(count as usize);
    for _ in concurrency as u64..count {
        recv(&mut rx).await;
    }
    let report = running.stop().await;
    assert_eq!(report.completed, count);
    assert!(running_max.load(Ordering::SeqCst) <= concurrency as u64);
    let active = active_max.load(Ordering::SeqCst);
    assert!(
        (1..=concurrency as u64).contains(&active),
        "the broker saw {active} leases"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_holds_that_many_more_leases_and_shutdown_releases_them_unrun() {
    let h = Harness::new();
    let (concurrency, prefetch) = (2, 3);
    let count = 20u64;
    let ids = h
        .enqueue((0..count).map(|_| NewTask::new("work", "{}")).collect())
        .await;
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut rx) = signals();
    let handler_gate = gate.clone();
    let worker = h
        .builder()
        .queue(QUEUE, concurrency)
        .prefetch(QUEUE, prefetch)
        .handler("work", move |ctx: TaskContext, _: serde_json::Value| {
            let (tx, gate) = (tx.clone(), handler_gate.clone());
            async move {
                tx.send(ctx.id()).await.unwrap();
                gate.acquire().await.unwrap().forget();
            }
        })
        .build()
        .unwrap();
    let running = start(worker);

    // Two handlers run; three more tasks wait in memory, leased; the rest stay in the broker.
    recv(&mut rx).await;
    recv(&mut rx).await;
    let stats = running
        .wait_for_stats(|s| s.queue(QUEUE).unwrap().prefetched == prefetch)
        .await;
    let queue = stats.queue(QUEUE).unwrap();
    assert_eq!(queue.leases, concurrency + prefetch);
    assert_eq!(queue.running, concurrency);
    assert_eq!(queue.held_back, 0);
    let broker = h.stats().await;
    assert_eq!(broker.counts.active, (concurrency + prefetch) as u64);
    assert_eq!(broker.counts.ready, count - (concurrency + prefetch) as u64);

    // A finished handler's slot goes to a prefetched task at once, and the worker tops its
    // prefetch up again.
    gate.add_permits(1);
    recv(&mut rx).await;
    running
        .wait_for_stats(|s| {
            let q = s.queue(QUEUE).unwrap();
            q.leases == concurrency + prefetch && q.prefetched == prefetch
        })
        .await;
    assert_eq!(
        h.stats().await.counts.active,
        (concurrency + prefetch) as u64
    );

    // Shutdown gives the prefetched tasks back at once, unrun and without spending an
    // attempt, while the running handlers finish.
    running.handle.shutdown();
    let stats = running
        .wait_for_stats(|s| s.queue(QUEUE).unwrap().leases == concurrency)
        .await;
    let queue = stats.queue(QUEUE).unwrap();
    assert_eq!((queue.running, queue.prefetched), (concurrency, 0));
    let report = running.handle.report();
    assert_eq!((report.released, report.completed), (prefetch as u64, 1));
    gate.add_permits(concurrency);
    let report = running.finish().await;
    assert_eq!(report.completed, 1 + concurrency as u64);
    assert_eq!(report.released, prefetch as u64);
    assert_eq!(report.reserved, (concurrency + prefetch + 1) as u64);
    let broker = h.stats().await;
    assert_eq!(broker.counts.active, 0);
    assert_eq!(broker.counts.completed, 1 + concurrency as u64);
    let mut released = 0;
    for id in ids {
        let task = h.get(id).await;
        if task.state == TaskState::Ready && task.fence > Fence(0) {
            assert_eq!(task.attempt, 0, "a release gives the attempt back");
            released += 1;
        }
    }
    assert_eq!(released, prefetch);
}
