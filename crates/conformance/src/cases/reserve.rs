//! Reserve: leases, the order tasks are handed out in, `max`, and long polling.

use std::time::Duration;

use floodway_core::{
    Broker, Fence, QueueConfig, ReserveRequest, TaskState, limits, task::PRIORITY_DEFAULT,
};

use super::{
    LEASE, Needs, after, configure, enqueue, enqueue_one, get, lacks, queue, reserve, reserve_ids,
    reserve_one, reserve_with, stats, task,
};
use crate::Harness;

/// Reserving spends an attempt, issues fence 1 to a never-reserved task, and sets the lease to
/// now + the requested duration.
pub async fn reserve_spends_an_attempt_and_issues_the_next_fence<H: Harness>(h: &mut H) {
    let q = queue("attempts");
    let id = enqueue_one(h, &q, task("k")).await;
    let lease = Duration::from_secs(7);
    let got = reserve_with(h, ReserveRequest::new(q.clone(), 1, lease)).await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.task.attempt, 1);
    assert_eq!(r.task.fence, Fence(1));
    assert_eq!(r.lease.fence, Fence(1));
    assert_eq!(r.lease.expires_at, after(h, lease));
    assert_eq!(r.task.lease_expires_at, Some(after(h, lease)));

    let stored = get(h, id).await;
    assert_eq!(stored.state, TaskState::Active);
    assert_eq!(stored.attempt, 1);
    assert_eq!(stored.fence, Fence(1));
    assert_eq!(stored.lease_expires_at, Some(after(h, lease)));
    let stats = stats(h, &q).await;
    assert_eq!((stats.counts.ready, stats.counts.active), (0, 1));
    assert_eq!(stats.totals.reserved, 1);
}

/// Among ready tasks, higher priority goes first, then the older task.
pub async fn reserve_takes_higher_priority_first<H: Harness>(h: &mut H) {
    if lacks(h, Needs::Priorities, "reserve_takes_higher_priority_first") {
        return;
    }
    let q = queue("priorities");
    let ids = enqueue(
        h,
        &q,
        vec![
            task("low").priority(1),
            task("high").priority(9),
            task("mid").priority(5),
            task("high-too").priority(9),
            task("lowest").priority(0),
        ],
    )
    .await;
    assert_eq!(reserve_ids(h, &q, 1).await, vec![ids[1]]);
    assert_eq!(reserve_ids(h, &q, 2).await, vec![ids[3], ids[2]]);
    let late = enqueue_one(h, &q, task("late-high").priority(9)).await;
    assert_eq!(reserve_ids(h, &q, 10).await, vec![late, ids[0], ids[4]]);
}

/// Within a priority the task that has been due longer goes first, even when it was enqueued
/// later: a delayed task that came due earlier, or a task that waited while another was
/// released.
pub async fn reserve_takes_earlier_run_at_first_within_a_priority<H: Harness>(h: &mut H) {
    let q = queue("run-at");
    let later_due = enqueue_one(h, &q, task("a").delay(Duration::from_secs(10))).await;
    let earlier_due = enqueue_one(h, &q, task("b").delay(Duration::from_secs(5))).await;
    h.clock().advance(Duration::from_secs(10));
    assert_eq!(reserve_ids(h, &q, 2).await, vec![earlier_due, later_due]);

    let ids = enqueue(h, &q, vec![task("c"), task("d")]).await;
    let first = reserve_one(h, &q).await;
    assert_eq!(first.task.id, ids[0]);
    h.clock().advance(Duration::from_secs(1));
    assert_eq!(
        h.broker().release(&[first.lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(
        reserve_ids(h, &q, 2).await,
        vec![ids[1], ids[0]],
        "a released task queues behind one that has waited longer"
    );
}

/// The order uses a due task's `run_at`, not the moment the broker got round to promoting it:
/// a task due at t+2s but first looked at t+5s still goes before one enqueued ready at t+3s.
pub async fn due_task_is_ordered_by_its_run_at_not_by_when_it_was_promoted<H: Harness>(h: &mut H) {
    let q = queue("promotion-order");
    let delayed = enqueue_one(h, &q, task("delayed").delay(Duration::from_secs(2))).await;
    h.clock().advance(Duration::from_secs(3));
    let ready = enqueue_one(h, &q, task("ready")).await;
    h.clock().advance(Duration::from_secs(2));
    assert_eq!(reserve_ids(h, &q, 1).await, vec![delayed]);
    assert_eq!(reserve_ids(h, &q, 1).await, vec![ready]);
}

/// With equal priority and run-at, the lower id goes first.
pub async fn reserve_takes_lower_id_first_when_priority_and_run_at_tie<H: Harness>(h: &mut H) {
    let q = queue("ties");
    let ids = enqueue(h, &q, (0..6).map(|i| task(&format!("t{i}"))).collect()).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(reserve_ids(h, &q, 2).await);
    }
    assert_eq!(got, ids);
    for id in &ids {
        assert_eq!(get(h, *id).await.priority, PRIORITY_DEFAULT);
    }
}

/// Reserve returns at most `max` tasks, however many are ready.
pub async fn reserve_never_returns_more_than_max<H: Harness>(h: &mut H) {
    let q = queue("max");
    enqueue(h, &q, (0..10).map(|_| task("k")).collect()).await;
    assert_eq!(reserve(h, &q, 3).await.len(), 3);
    assert_eq!(reserve(h, &q, 1).await.len(), 1);
    assert_eq!(reserve(h, &q, limits::BATCH_SIZE_MAX).await.len(), 6);
    assert!(reserve(h, &q, 5).await.is_empty());
    assert_eq!(stats(h, &q).await.counts.active, 10);
}

/// A leased task is not handed to a second worker while its lease lasts.
pub async fn leased_task_is_not_reserved_again<H: Harness>(h: &mut H) {
    let q = queue("exclusive");
    let id = enqueue_one(h, &q, task("k")).await;
    assert_eq!(reserve_one(h, &q).await.task.id, id);
    h.clock().advance(LEASE - Duration::from_millis(1));
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    assert_eq!(get(h, id).await.state, TaskState::Active);
}

/// The worker named in the request is recorded on the task while it is active, and only
/// then.
pub async fn reserve_records_the_worker_while_the_task_is_active<H: Harness>(h: &mut H) {
    let q = queue("workers");
    let id = enqueue_one(h, &q, task("k")).await;
    let got = reserve_with(
        h,
        ReserveRequest::new(q.clone(), 1, LEASE).worker("worker-7"),
    )
    .await;
    assert_eq!(got[0].task.worker.as_deref(), Some("worker-7"));
    assert_eq!(get(h, id).await.worker.as_deref(), Some("worker-7"));
    h.broker().ack(&[got[0].lease.as_ref()]).await.unwrap();
    assert_eq!(get(h, id).await.worker, None);
}

/// Reserving from a queue that does not exist returns nothing; it is not an error.
pub async fn reserve_from_an_unknown_queue_returns_nothing<H: Harness>(h: &mut H) {
    enqueue_one(h, &queue("known"), task("k")).await;
    assert!(reserve(h, &queue("unknown"), 10).await.is_empty());
}

/// A reserve that waits (long poll) returns the task as soon as one is enqueued, well before
/// its wait runs out.
pub async fn long_poll_reserve_returns_when_a_task_is_enqueued<H: Harness>(h: &mut H) {
    let q = queue("long-poll");
    configure(h, &q, QueueConfig::default()).await;
    let broker = h.broker();
    let request = ReserveRequest::new(q.clone(), 1, LEASE).wait(limits::RESERVE_WAIT_MAX);
    let waiting = broker.reserve(request);
    let enqueue_later = async {
        // Let the reserve start waiting first.
        tokio::task::yield_now().await;
        broker.enqueue(&q, vec![task("k")]).await
    };
    let (reserved, enqueued) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(waiting, enqueue_later)
    })
    .await
    .expect("a waiting reserve returns once a task is enqueued, not at the end of its wait");
    let enqueued = enqueued.expect("enqueue");
    let reserved = reserved.expect("reserve");
    assert_eq!(reserved.len(), 1);
    assert_eq!(reserved[0].task.id, enqueued[0].id);
}
