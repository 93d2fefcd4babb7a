//! Reservation never exceeds free capacity: a worker holds at most `concurrency` leases of a
//! queue, so tasks it cannot start stay in the broker for other workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use floodway_core::{Broker, NewTask, QueueName};
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
