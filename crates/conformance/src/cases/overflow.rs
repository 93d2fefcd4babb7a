//! Queue length and overflow: `length_max` bounds the waiting tasks (scheduled, ready,
//! retrying); a full queue rejects a batch whole, or dead-letters its oldest waiting tasks.

use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, DeadReason, OverflowPolicy, QueueConfig, QueueName, TaskState,
};

use super::leases::failure;
use super::{
    configure, enqueue, enqueue_one, exact_retry, get, queue, reserve_one, snapshot, stats, task,
};
use crate::Harness;

async fn bounded<H: Harness>(
    h: &H,
    name: &str,
    length_max: u64,
    overflow: OverflowPolicy,
) -> QueueName {
    let q = queue(name);
    configure(
        h,
        &q,
        QueueConfig {
            length_max: Some(length_max),
            overflow,
            ..QueueConfig::default()
        },
    )
    .await;
    q
}

/// Under the reject policy a batch that would take the queue past `length_max` is refused as
/// a whole with a retryable `QueueFull`; nothing of it is written, not even its idempotency
/// keys.
pub async fn reject_policy_refuses_the_whole_batch_and_writes_nothing<H: Harness>(h: &mut H) {
    let q = bounded(h, "bounded", 3, OverflowPolicy::Reject).await;
    enqueue(h, &q, vec![task("a"), task("b")]).await;
    let before = snapshot(h).await.without_refusal_counts();
    let got = h
        .broker()
        .enqueue(&q, vec![task("c").idempotency_key("fresh"), task("d")])
        .await;
    match got {
        Err(err @ BrokerError::QueueFull { .. }) => {
            assert!(err.is_retryable());
            let BrokerError::QueueFull {
                queue, length, max, ..
            } = err
            else {
                unreachable!()
            };
            assert_eq!((queue, length, max), (q.clone(), 2, 3));
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(snapshot(h).await.without_refusal_counts(), before);
    assert!(stats(h, &q).await.totals.rejected_full > 0);

    enqueue_one(h, &q, task("c")).await;
    assert_eq!(
        stats(h, &q).await.length(),
        3,
        "a queue may fill up exactly"
    );
    reserve_one(h, &q).await;
    let got = h
        .broker()
        .enqueue(&q, vec![task("e").idempotency_key("fresh")])
        .await
        .unwrap();
    assert!(!got[0].duplicate, "the refused batch recorded no key");
}

/// Under the dead-letter-oldest policy the batch is accepted and the oldest waiting tasks
/// (lowest ids) go to the dead letters with reason `overflow`; running tasks neither count
/// nor get dropped.
pub async fn dead_letter_oldest_policy_dead_letters_the_oldest_waiting_tasks<H: Harness>(
    h: &mut H,
) {
    let q = bounded(h, "drop-oldest", 3, OverflowPolicy::DeadLetterOldest).await;
    let first = enqueue(h, &q, vec![task("a"), task("b"), task("c")]).await;
    assert_eq!(reserve_one(h, &q).await.task.id, first[0]);
    let second = enqueue(h, &q, vec![task("d"), task("e")]).await;

    let running = get(h, first[0]).await;
    assert_eq!(running.state, TaskState::Active);
    let dropped = get(h, first[1]).await;
    assert_eq!(
        (dropped.state, dropped.dead_reason),
        (TaskState::Dead, Some(DeadReason::Overflow))
    );
    for id in [first[2], second[0], second[1]] {
        assert_eq!(get(h, id).await.state, TaskState::Ready);
    }
    let stats_now = stats(h, &q).await;
    assert_eq!(stats_now.length(), 3);
    assert_eq!(stats_now.totals.dead.overflow, 1);

    enqueue(h, &q, vec![task("f"), task("g"), task("h")]).await;
    for id in [first[2], second[0], second[1]] {
        assert_eq!(get(h, id).await.dead_reason, Some(DeadReason::Overflow));
    }
    let stats_now = stats(h, &q).await;
    assert_eq!(stats_now.length(), 3);
    assert_eq!(stats_now.totals.dead.overflow, 4);
    assert_eq!(stats_now.counts.dead, 4);
}

/// A batch with more new tasks than `length_max` can never fit, so it is refused as invalid
/// (not as a retryable `QueueFull`) under either policy, and nothing is written or dropped.
pub async fn batch_larger_than_length_max_is_refused_under_either_policy<H: Harness>(h: &mut H) {
    for (name, policy) in [
        ("small-reject", OverflowPolicy::Reject),
        ("small-drop", OverflowPolicy::DeadLetterOldest),
    ] {
        let q = bounded(h, name, 2, policy).await;
        enqueue_one(h, &q, task("waiting")).await;
        let before = snapshot(h).await;
        let got = h
            .broker()
            .enqueue(&q, vec![task("a"), task("b"), task("c")])
            .await;
        assert!(
            matches!(got, Err(BrokerError::Invalid { field: "tasks", .. })),
            "{policy:?}: {got:?}"
        );
        assert_eq!(snapshot(h).await, before);
    }
}

/// The length counts scheduled, ready and retrying tasks; active, completed (and dead) ones
/// leave room.
pub async fn length_counts_scheduled_ready_and_retrying_tasks_only<H: Harness>(h: &mut H) {
    let q = bounded(h, "length", 3, OverflowPolicy::Reject).await;
    let retry = exact_retry(3, Duration::from_secs(60), Duration::from_secs(60));
    let ids = enqueue(
        h,
        &q,
        vec![
            task("scheduled").delay(Duration::from_secs(60)),
            task("completes"),
            task("retries").retry(retry),
        ],
    )
    .await;
    let done = reserve_one(h, &q).await;
    assert_eq!(done.task.id, ids[1]);
    h.broker().ack(&[done.lease.as_ref()]).await.unwrap();
    let retried = reserve_one(h, &q).await;
    assert_eq!(retried.task.id, ids[2]);
    h.broker()
        .fail(vec![failure(retried.lease.as_ref())])
        .await
        .unwrap();
    assert_eq!(stats(h, &q).await.length(), 2);

    enqueue_one(h, &q, task("runs")).await;
    reserve_one(h, &q).await;
    enqueue_one(h, &q, task("fills")).await;
    let counts = stats(h, &q).await.counts;
    assert_eq!(
        (
            counts.scheduled,
            counts.ready,
            counts.retrying,
            counts.active,
            counts.completed
        ),
        (1, 1, 1, 1, 1)
    );
    let got = h.broker().enqueue(&q, vec![task("one-too-many")]).await;
    assert!(
        matches!(
            got,
            Err(BrokerError::QueueFull {
                length: 3,
                max: 3,
                ..
            })
        ),
        "{got:?}"
    );
}

/// Duplicates create nothing, so they are answered even when the queue is full.
pub async fn duplicates_do_not_count_toward_the_length<H: Harness>(h: &mut H) {
    let q = bounded(h, "full-dedupe", 1, OverflowPolicy::Reject).await;
    let first = enqueue_one(h, &q, task("k").idempotency_key("k")).await;
    let got = h
        .broker()
        .enqueue(&q, vec![task("k").idempotency_key("k")])
        .await
        .unwrap();
    assert_eq!((got[0].id, got[0].duplicate), (first, true));
    let got = h.broker().enqueue(&q, vec![task("new")]).await;
    assert!(matches!(got, Err(BrokerError::QueueFull { .. })), "{got:?}");
}
