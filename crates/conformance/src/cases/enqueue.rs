//! Enqueue: what a new task looks like, ids, and queue creation.

use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, Fence, QueueConfig, Task, TaskState, task::PRIORITY_DEFAULT,
};

use super::{
    LEASE, after, configure, enqueue, enqueue_one, exact_retry, get, list_queue, now, queue,
    reserve_ids, reserve_one, stats, task,
};
use crate::Harness;

/// A task enqueued without delay is ready at once; reserve leases it and ack completes it.
pub async fn enqueued_task_is_ready_and_ack_completes_it<H: Harness>(h: &mut H) {
    let q = queue("orders");
    let start = now(h);
    let id = enqueue_one(h, &q, task("charge_card")).await;

    let waiting = get(h, id).await;
    assert_eq!(waiting.state, TaskState::Ready);
    assert_eq!(waiting.attempt, 0);
    assert_eq!(waiting.fence, Fence(0));
    assert_eq!(waiting.run_at, start);
    assert_eq!(waiting.created_at, start);
    assert_eq!(waiting.lease_expires_at, None);

    let reserved = reserve_one(h, &q).await;
    assert_eq!(reserved.task.id, id);
    assert_eq!(reserved.task.state, TaskState::Active);
    assert_eq!(reserved.lease.task_id, id);
    assert_eq!(reserved.lease.expires_at, after(h, LEASE));

    let acked = h.broker().ack(&[reserved.lease.as_ref()]).await.unwrap();
    assert_eq!(acked, vec![Ok(())]);
    let done = get(h, id).await;
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!(done.lease_expires_at, None);
    assert!(done.finished_at.is_some(), "a completed task records when");
    assert!(reserve_ids(h, &q, 10).await.is_empty(), "nothing left");

    let stats = stats(h, &q).await;
    assert_eq!(stats.counts.completed, 1);
    assert_eq!(stats.counts.waiting() + stats.counts.active, 0);
    assert_eq!(stats.totals.enqueued, 1);
    assert_eq!(stats.totals.reserved, 1);
    assert_eq!(stats.totals.completed, 1);
}

/// A batch gets one id per task, in order, strictly increasing; later enqueues get greater
/// ids; listing returns tasks in id order.
pub async fn enqueue_returns_increasing_ids_in_batch_order<H: Harness>(h: &mut H) {
    let q = queue("batch");
    let first = enqueue(h, &q, (0..5).map(|i| task(&format!("k{i}"))).collect()).await;
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "ids within a batch increase: {first:?}"
    );
    h.clock().advance(Duration::from_millis(1));
    let second = enqueue(h, &q, vec![task("k5"), task("k6")]).await;
    assert!(second[0] > first[4] && second[1] > second[0]);

    let listed: Vec<(_, String)> = list_queue(h, &q)
        .await
        .into_iter()
        .map(|t| (t.id, t.kind))
        .collect();
    let expected: Vec<(_, String)> = first
        .iter()
        .chain(&second)
        .enumerate()
        .map(|(i, id)| (*id, format!("k{i}")))
        .collect();
    assert_eq!(listed, expected);
}

/// Every field the producer set is stored as given, and the broker's own fields start empty.
pub async fn enqueue_keeps_what_the_producer_submitted<H: Harness>(h: &mut H) {
    let q = queue("fields");
    let retry = exact_retry(4, Duration::from_secs(2), Duration::from_secs(60));
    let mut submitted = task("send_email")
        .header("traceparent", "00-abc-def-01")
        .header("content-type", "application/json")
        .priority(7)
        .ttl(Duration::from_secs(90))
        .retry(retry.clone())
        .timeout(Duration::from_secs(12))
        .idempotency_key("order-17")
        .partition_key("customer-3");
    submitted.payload = br#"{"order":17,"to":"a@example.com"}"#.to_vec();
    let start = now(h);
    let id = enqueue_one(h, &q, submitted.clone()).await;

    let stored: Task = get(h, id).await;
    assert_eq!(stored.id, id);
    assert_eq!(stored.queue, q);
    assert_eq!(stored.kind, submitted.kind);
    assert_eq!(stored.payload, submitted.payload);
    assert_eq!(stored.headers, submitted.headers);
    assert_eq!(stored.priority, 7);
    assert_eq!(stored.retry, retry);
    assert_eq!(stored.timeout, Some(Duration::from_secs(12)));
    assert_eq!(
        stored.expires_at,
        Some(start.saturating_add(Duration::from_secs(90)))
    );
    assert_eq!(stored.idempotency_key.as_deref(), Some("order-17"));
    assert_eq!(stored.partition_key.as_deref(), Some("customer-3"));
    assert_eq!(stored.created_at, start);
    assert_eq!(stored.worker, None);
    assert_eq!(stored.finished_at, None);
    assert_eq!(stored.last_error, None);
    assert_eq!(stored.dead_reason, None);

    let plain = get(h, enqueue_one(h, &q, task("plain")).await).await;
    assert_eq!(plain.priority, PRIORITY_DEFAULT);
    assert_eq!(plain.expires_at, None);
    assert_eq!(plain.timeout, None);
    assert_eq!(plain.run_at, start);
}

/// Before its first task a queue is unknown; the first enqueue creates it with the default
/// configuration.
pub async fn enqueue_creates_the_queue_with_the_default_config<H: Harness>(h: &mut H) {
    let q = queue("fresh");
    assert_eq!(
        h.broker().stats(Some(&q)).await,
        Err(BrokerError::UnknownQueue(q.clone()))
    );
    enqueue_one(h, &q, task("k")).await;
    let stats = stats(h, &q).await;
    assert_eq!(stats.config, QueueConfig::default());
    assert_eq!(stats.counts.ready, 1);
    let all = h.broker().stats(None).await.unwrap();
    assert!(all.iter().any(|s| s.queue == q), "stats(None) lists {q}");
}

/// A task that brings no retry policy gets its queue's.
pub async fn task_without_a_retry_policy_takes_the_queue_default<H: Harness>(h: &mut H) {
    let q = queue("retry-default");
    let queue_retry = exact_retry(3, Duration::from_secs(5), Duration::from_secs(50));
    configure(
        h,
        &q,
        QueueConfig {
            retry: queue_retry.clone(),
            ..QueueConfig::default()
        },
    )
    .await;
    let own = exact_retry(7, Duration::from_secs(1), Duration::from_secs(9));
    let ids = enqueue(h, &q, vec![task("a"), task("b").retry(own.clone())]).await;
    assert_eq!(get(h, ids[0]).await.retry, queue_retry);
    assert_eq!(get(h, ids[1]).await.retry, own);
}

/// Reserving from one queue never returns another queue's task.
pub async fn tasks_of_one_queue_are_invisible_to_another<H: Harness>(h: &mut H) {
    let (a, b) = (queue("alpha"), queue("beta"));
    let in_a = enqueue_one(h, &a, task("k")).await;
    assert!(reserve_ids(h, &b, 10).await.is_empty());
    let in_b = enqueue_one(h, &b, task("k")).await;
    assert_eq!(reserve_ids(h, &b, 10).await, vec![in_b]);
    assert_eq!(reserve_ids(h, &a, 10).await, vec![in_a]);
    assert_eq!(list_queue(h, &a).await.len(), 1);
}
