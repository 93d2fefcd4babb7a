//! Restart: closing a broker and reopening it on the same storage keeps everything: tasks and
//! their states, leases (which then expire normally), fences, ids, idempotency keys, dead
//! letters, queue configuration and totals.

use std::time::Duration;

use floodway_core::{
    Broker, DeadReason, DeadSelector, OverflowPolicy, QueueConfig, Refusal, TaskState,
};

use super::dead_letters::dead_letter;
use super::stats::one_task_per_state;
use super::{
    Needs, configure, enqueue_one, exact_retry, get, lacks, queue, reserve_ids, reserve_one,
    reserve_one_for, snapshot, stats, task,
};
use crate::Harness;

/// Every task, in every state, with every field, is the same after a restart; so are the
/// statistics of every queue (but start latencies, which may start empty).
pub async fn restart_keeps_every_task_and_its_state<H: Harness>(h: &mut H) {
    if lacks(h, Needs::Restart, "restart_keeps_every_task_and_its_state") {
        return;
    }
    one_task_per_state(h, &queue("durable")).await;
    enqueue_one(h, &queue("other"), task("k").priority(8)).await;
    let before = snapshot(h).await;
    h.restart().await;
    let after = snapshot(h).await;
    assert_eq!(after, before.with_start_latency_as_restarted(&after));
}

/// A queue's configuration (paused included) and its running totals survive a restart, the
/// counts of calls that changed no task (duplicates, refusals) included: totals only grow.
pub async fn restart_keeps_queue_config_and_totals<H: Harness>(h: &mut H) {
    if lacks(h, Needs::Restart, "restart_keeps_queue_config_and_totals") {
        return;
    }
    let q = queue("configured");
    let config = QueueConfig {
        length_max: Some(2),
        overflow: OverflowPolicy::Reject,
        retry: exact_retry(4, Duration::from_secs(2), Duration::from_secs(20)),
        idempotency_window: Duration::from_secs(120),
        completed_retain: 7,
        dead_retain: 8,
        paused: false,
        rate_limit: Some(floodway_core::RateLimit {
            rate: 2.5,
            burst: 3,
        }),
        key_rate_limit: Some(floodway_core::RateLimit {
            rate: 0.5,
            burst: 1,
        }),
        concurrency_max: Some(9),
        key_concurrency_max: Some(4),
        watermarks: Some(floodway_core::Watermarks { high: 50, low: 10 }),
        ttl: Some(Duration::from_secs(3600)),
    };
    configure(h, &q, config.clone()).await;
    enqueue_one(h, &q, task("a").idempotency_key("a")).await;
    let stale = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    h.clock().advance(Duration::from_secs(1));
    let r = reserve_one(h, &q).await;
    h.broker().ack(&[r.lease.as_ref()]).await.unwrap();
    let refused = h.broker().ack(&[stale.lease.as_ref()]).await.unwrap();
    assert!(refused[0].is_err());
    let dup = h
        .broker()
        .enqueue(&q, vec![task("a").idempotency_key("a")])
        .await
        .unwrap();
    assert!(dup[0].duplicate);
    enqueue_one(h, &q, task("b")).await;
    let full = h.broker().enqueue(&q, vec![task("c"), task("d")]).await;
    assert!(
        matches!(full, Err(floodway_core::BrokerError::QueueFull { .. })),
        "{full:?}"
    );
    h.broker().pause(&q).await.unwrap();
    let before = stats(h, &q).await;
    let totals = before.totals;
    assert_eq!(
        (totals.completed, totals.stale_refused, totals.deduplicated),
        (1, 1, 1)
    );
    assert!(totals.rejected_full > 0);

    h.restart().await;
    let after = stats(h, &q).await;
    assert_eq!(
        after.config,
        QueueConfig {
            paused: true,
            ..config
        }
    );
    assert_eq!(after.totals, before.totals);
    assert!(reserve_ids(h, &q, 10).await.is_empty(), "still paused");
}

/// A lease taken before a restart is still held after it, and expires at its original time:
/// not a millisecond early, and then like any other expired lease.
pub async fn lease_survives_restart_and_then_expires_normally<H: Harness>(h: &mut H) {
    if lacks(
        h,
        Needs::Restart,
        "lease_survives_restart_and_then_expires_normally",
    ) {
        return;
    }
    let q = queue("leased");
    let id = enqueue_one(h, &q, task("k")).await;
    let lease = Duration::from_secs(10);
    let r = reserve_one_for(h, &q, lease).await;
    h.restart().await;

    let held = get(h, id).await;
    assert_eq!(held.state, TaskState::Active);
    assert_eq!(held.lease_expires_at, Some(r.lease.expires_at));
    h.clock().advance(lease - Duration::from_millis(1));
    assert!(reserve_ids(h, &q, 1).await.is_empty());
    assert_eq!(h.broker().reap().await.unwrap(), 0);
    h.clock().advance(Duration::from_millis(1));
    assert_eq!(h.broker().reap().await.unwrap(), 1);
    let back = get(h, id).await;
    assert_eq!((back.state, back.attempt), (TaskState::Ready, 1));
    let again = reserve_one(h, &q).await;
    assert_eq!(again.task.attempt, 2);
    assert!(again.lease.fence > r.lease.fence);
}

/// The holder of a lease taken before a restart can ack after it.
pub async fn lease_taken_before_restart_can_be_acked_after<H: Harness>(h: &mut H) {
    if lacks(
        h,
        Needs::Restart,
        "lease_taken_before_restart_can_be_acked_after",
    ) {
        return;
    }
    let q = queue("ack-after");
    let id = enqueue_one(h, &q, task("k")).await;
    let r = reserve_one(h, &q).await;
    h.restart().await;
    assert_eq!(
        h.broker().ack(&[r.lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(get(h, id).await.state, TaskState::Completed);
}

/// Fences never go back: after a restart the next fence may skip ahead (a broker may scope
/// fences by restart), but it is greater than every fence before, and leases from before stay
/// stale.
pub async fn fences_keep_growing_across_restart<H: Harness>(h: &mut H) {
    if lacks(h, Needs::Restart, "fences_keep_growing_across_restart") {
        return;
    }
    let q = queue("fences");
    enqueue_one(h, &q, task("k")).await;
    let first = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    h.clock().advance(Duration::from_secs(1));
    h.restart().await;
    let second = reserve_one(h, &q).await;
    assert!(second.lease.fence > first.lease.fence);
    h.broker().release(&[second.lease.as_ref()]).await.unwrap();
    h.restart().await;
    let third = reserve_one(h, &q).await;
    assert!(third.lease.fence > second.lease.fence);
    assert_eq!(get(h, third.lease.task_id).await.fence, third.lease.fence);
    for stale in [first.lease, second.lease] {
        let got = h.broker().ack(&[stale.as_ref()]).await.unwrap();
        assert_eq!(
            got,
            vec![Err(Refusal::StaleFence {
                presented: stale.fence,
                current: third.lease.fence
            })]
        );
    }
}

/// Ids made after a restart are greater than every id made before, even within the same
/// millisecond.
pub async fn ids_after_restart_are_greater_than_before<H: Harness>(h: &mut H) {
    if lacks(
        h,
        Needs::Restart,
        "ids_after_restart_are_greater_than_before",
    ) {
        return;
    }
    let q = queue("ids");
    let mut last = enqueue_one(h, &q, task("k")).await;
    for _ in 0..3 {
        h.restart().await;
        let next = enqueue_one(h, &q, task("k")).await;
        assert!(
            next > last,
            "{next} after restart is not greater than {last}"
        );
        last = next;
    }
}

/// An idempotency key used before a restart still deduplicates after it, within the window
/// counted from its first use.
pub async fn idempotency_keys_survive_restart<H: Harness>(h: &mut H) {
    if lacks(h, Needs::Restart, "idempotency_keys_survive_restart") {
        return;
    }
    let q = queue("keys");
    let window = Duration::from_secs(10);
    configure(
        h,
        &q,
        QueueConfig {
            idempotency_window: window,
            ..QueueConfig::default()
        },
    )
    .await;
    let first = enqueue_one(h, &q, task("k").idempotency_key("key")).await;
    h.clock().advance(window / 2);
    h.restart().await;
    let keyed = || vec![task("k").idempotency_key("key")];
    let got = h.broker().enqueue(&q, keyed()).await.unwrap();
    assert_eq!((got[0].id, got[0].duplicate), (first, true));
    h.clock().advance(window / 2);
    let got = h.broker().enqueue(&q, keyed()).await.unwrap();
    assert!(
        !got[0].duplicate,
        "the window, counted from the first use, has passed"
    );
}

/// Dead letters keep their reasons across a restart and can be replayed after it.
pub async fn dead_letters_survive_restart_and_can_be_replayed<H: Harness>(h: &mut H) {
    if lacks(
        h,
        Needs::Restart,
        "dead_letters_survive_restart_and_can_be_replayed",
    ) {
        return;
    }
    let q = queue("dead-durable");
    let reasons = [
        DeadReason::MaxAttempts,
        DeadReason::PermanentFailure,
        DeadReason::Expired,
    ];
    let mut ids = Vec::new();
    for reason in reasons {
        ids.push(dead_letter(h, &q, reason).await);
    }
    h.restart().await;
    for (id, reason) in ids.iter().zip(reasons) {
        let dead = get(h, *id).await;
        assert_eq!(
            (dead.state, dead.dead_reason),
            (TaskState::Dead, Some(reason))
        );
    }
    let replayed = h
        .broker()
        .replay(DeadSelector::Ids(ids[..2].to_vec()))
        .await
        .unwrap();
    assert_eq!(replayed, 2);
    assert_eq!(reserve_ids(h, &q, 10).await, ids[..2].to_vec());
}
