//! Time to live: a task that waits past its expiry goes to the dead letters (`expired`); a
//! running task is not interrupted.

use std::time::Duration;

use floodway_core::{Broker, DeadReason, TaskState};

use super::leases::failure;
use super::{
    after, enqueue, enqueue_one, exact_retry, get, queue, reserve_ids, reserve_one,
    reserve_one_for, stats, task,
};
use crate::Harness;

/// A ready task whose time to live passes is dead-lettered as expired at its expiry, not a
/// millisecond before.
pub async fn ttl_expiry_dead_letters_a_waiting_task_as_expired<H: Harness>(h: &mut H) {
    let q = queue("ttl");
    let ttl = Duration::from_secs(5);
    let id = enqueue_one(h, &q, task("k").ttl(ttl)).await;
    assert_eq!(get(h, id).await.expires_at, Some(after(h, ttl)));
    h.clock().advance(ttl - Duration::from_millis(1));
    assert_eq!(h.broker().promote().await.unwrap(), 0);
    assert_eq!(get(h, id).await.state, TaskState::Ready);
    h.clock().advance(Duration::from_millis(1));
    assert_eq!(h.broker().promote().await.unwrap(), 1);
    let dead = get(h, id).await;
    assert_eq!(dead.state, TaskState::Dead);
    assert_eq!(dead.dead_reason, Some(DeadReason::Expired));
    assert!(dead.finished_at.is_some());
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    let stats = stats(h, &q).await;
    assert_eq!(stats.counts.dead, 1);
    assert_eq!(stats.totals.dead.expired, 1);
}

/// Reserve dead-letters expired tasks before choosing, so it never hands one out.
pub async fn reserve_never_hands_out_a_task_whose_ttl_passed<H: Harness>(h: &mut H) {
    let q = queue("ttl-reserve");
    let ids = enqueue(
        h,
        &q,
        vec![task("short").ttl(Duration::from_secs(2)), task("forever")],
    )
    .await;
    h.clock().advance(Duration::from_secs(2));
    assert_eq!(reserve_ids(h, &q, 10).await, vec![ids[1]]);
    let dead = get(h, ids[0]).await;
    assert_eq!(
        (dead.state, dead.dead_reason),
        (TaskState::Dead, Some(DeadReason::Expired))
    );
}

/// A task whose time to live passed while it ran, and whose lease then expired, is waiting
/// again with its time to live gone: reserve dead-letters it (`expired`) instead of handing
/// it out.
pub async fn reserve_never_hands_out_a_task_whose_ttl_passed_while_it_ran<H: Harness>(h: &mut H) {
    let q = queue("ttl-ran");
    let id = enqueue_one(h, &q, task("k").ttl(Duration::from_secs(2))).await;
    reserve_one_for(h, &q, Duration::from_secs(3)).await;
    h.clock().advance(Duration::from_secs(3));
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    let dead = get(h, id).await;
    assert_eq!(
        (dead.state, dead.dead_reason),
        (TaskState::Dead, Some(DeadReason::Expired))
    );
    let totals = stats(h, &q).await.totals;
    assert_eq!((totals.leases_expired, totals.dead.expired), (1, 1));
}

/// A task whose time to live passes while it runs is not interrupted: its worker can still
/// complete it.
pub async fn running_task_is_not_interrupted_by_its_ttl<H: Harness>(h: &mut H) {
    let q = queue("ttl-running");
    let id = enqueue_one(h, &q, task("k").ttl(Duration::from_secs(2))).await;
    let r = reserve_one(h, &q).await;
    h.clock().advance(Duration::from_secs(5));
    assert_eq!(h.broker().promote().await.unwrap(), 0);
    assert_eq!(get(h, id).await.state, TaskState::Active);
    assert_eq!(
        h.broker().ack(&[r.lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(get(h, id).await.state, TaskState::Completed);
}

/// The time to live applies to every waiting state: a scheduled task that expires before its
/// run-at, and a retrying task that expires during its backoff.
pub async fn ttl_applies_to_scheduled_and_retrying_tasks<H: Harness>(h: &mut H) {
    let q = queue("ttl-waiting");
    let ttl = Duration::from_secs(5);
    let retry = exact_retry(3, Duration::from_secs(60), Duration::from_secs(60));
    let ids = enqueue(
        h,
        &q,
        vec![
            task("scheduled").delay(Duration::from_secs(10)).ttl(ttl),
            task("retrying").ttl(ttl).retry(retry),
        ],
    )
    .await;
    let r = reserve_one(h, &q).await;
    assert_eq!(r.task.id, ids[1]);
    h.broker()
        .fail(vec![failure(r.lease.as_ref())])
        .await
        .unwrap();
    assert_eq!(get(h, ids[1]).await.state, TaskState::Retrying);
    h.clock().advance(ttl);
    assert_eq!(h.broker().promote().await.unwrap(), 2);
    for id in ids {
        let dead = get(h, id).await;
        assert_eq!(
            (dead.state, dead.dead_reason),
            (TaskState::Dead, Some(DeadReason::Expired)),
            "{}",
            dead.kind
        );
    }
    assert_eq!(stats(h, &q).await.totals.dead.expired, 2);
}

/// A queue's `ttl` is the time to live of tasks enqueued without their own; a task's own
/// `ttl` wins.
pub async fn queue_ttl_applies_to_tasks_without_their_own<H: Harness>(h: &mut H) {
    let q = queue("ttl-default");
    super::configure(
        h,
        &q,
        floodway_core::QueueConfig {
            ttl: Some(Duration::from_secs(10)),
            ..floodway_core::QueueConfig::default()
        },
    )
    .await;
    let plain = enqueue_one(h, &q, task("k")).await;
    let own = enqueue_one(h, &q, task("k").ttl(Duration::from_secs(60))).await;
    assert_eq!(
        get(h, plain).await.expires_at,
        Some(after(h, Duration::from_secs(10)))
    );
    h.clock().advance(Duration::from_secs(10));
    assert_eq!(h.broker().promote().await.unwrap(), 1);
    assert_eq!(get(h, plain).await.dead_reason, Some(DeadReason::Expired));
    assert_eq!(get(h, own).await.state, TaskState::Ready);
}
