//! Reservation limits: a queue's rate limit and concurrency limit, and the same per limit key,
//! enforced by the broker over every worker (the "Reservation limits" rule of `Broker`'s docs).

use std::time::Duration;

use floodway_core::{Broker, QueueConfig, QueueName, RateLimit, ReserveRequest, TaskId};

use super::leases::failure;
use super::{configure, enqueue, queue, reserve, reserve_ids, reserve_with, stats, task};
use crate::Harness;

async fn limited<H: Harness>(h: &H, name: &str, config: QueueConfig) -> QueueName {
    let q = queue(name);
    configure(h, &q, config).await;
    q
}

async fn tasks_with_keys<H: Harness>(h: &H, q: &QueueName, keys: &[Option<&str>]) -> Vec<TaskId> {
    let tasks = keys
        .iter()
        .map(|key| match key {
            Some(key) => task("call").limit_key(*key),
            None => task("call"),
        })
        .collect();
    enqueue(h, q, tasks).await
}

/// A rate limit hands out a full bucket at once, then one task per token as the bucket
/// refills, never more than `burst` after a quiet spell; a call cut short counts in
/// `throttled_rate`.
pub async fn queue_rate_limit_hands_out_a_burst_then_one_task_per_token<H: Harness>(h: &mut H) {
    let q = limited(
        h,
        "rated",
        QueueConfig {
            rate_limit: Some(RateLimit {
                rate: 10.0,
                burst: 5,
            }),
            ..QueueConfig::default()
        },
    )
    .await;
    enqueue(h, &q, (0..40).map(|_| task("call")).collect()).await;
    assert_eq!(reserve(h, &q, 100).await.len(), 5, "the burst");
    assert_eq!(reserve(h, &q, 100).await.len(), 0, "the bucket is empty");
    assert_eq!(stats(h, &q).await.totals.throttled_rate, 2);
    h.clock().advance(Duration::from_millis(100));
    assert_eq!(
        reserve(h, &q, 100).await.len(),
        1,
        "one token in 100 ms at 10/s"
    );
    h.clock().advance(Duration::from_millis(250));
    assert_eq!(
        reserve(h, &q, 100).await.len(),
        2,
        "2.5 tokens: two whole ones"
    );
    h.clock().advance(Duration::from_secs(10));
    assert_eq!(
        reserve(h, &q, 100).await.len(),
        5,
        "refill stops at the burst"
    );
    assert_eq!(reserve(h, &q, 3).await.len(), 0);
    h.clock().advance(Duration::from_millis(300));
    assert_eq!(
        reserve(h, &q, 2).await.len(),
        2,
        "a call that gets all it asked for"
    );
    let totals = stats(h, &q).await.totals;
    assert_eq!(
        totals.throttled_rate, 6,
        "every call but the last was cut short"
    );
    assert_eq!(totals.throttled_concurrency, 0);
    assert_eq!(totals.reserved, 15);
}

/// Setting a different rate limit starts a full bucket; pausing and resuming do not refill it.
pub async fn changing_the_rate_limit_refills_the_bucket_and_pausing_does_not<H: Harness>(
    h: &mut H,
) {
    let limit = |rate, burst| QueueConfig {
        rate_limit: Some(RateLimit { rate, burst }),
        ..QueueConfig::default()
    };
    let q = limited(h, "rated", limit(0.5, 2)).await;
    enqueue(h, &q, (0..10).map(|_| task("call")).collect()).await;
    assert_eq!(reserve(h, &q, 10).await.len(), 2);
    h.broker().pause(&q).await.unwrap();
    h.broker().resume(&q).await.unwrap();
    assert_eq!(
        reserve(h, &q, 10).await.len(),
        0,
        "pause and resume add no tokens"
    );
    configure(h, &q, limit(0.5, 3)).await;
    assert_eq!(reserve(h, &q, 10).await.len(), 3, "a new limit starts full");
}

/// A concurrency limit counts the queue's active tasks over every caller; acking, failing,
/// releasing and a lease expiring each give a slot back.
pub async fn queue_concurrency_limit_counts_leases_and_every_way_out_frees_a_slot<H: Harness>(
    h: &mut H,
) {
    let q = limited(
        h,
        "bounded",
        QueueConfig {
            concurrency_max: Some(2),
            ..QueueConfig::default()
        },
    )
    .await;
    enqueue(h, &q, (0..8).map(|_| task("call")).collect()).await;
    let first = reserve(h, &q, 10).await;
    assert_eq!(first.len(), 2);
    assert!(reserve(h, &q, 10).await.is_empty(), "both slots are taken");
    assert_eq!(stats(h, &q).await.totals.throttled_concurrency, 2);

    h.broker().ack(&[first[0].lease.as_ref()]).await.unwrap();
    let second = reserve(h, &q, 10).await;
    assert_eq!(second.len(), 1, "an ack frees one slot");
    h.broker()
        .fail(vec![failure(first[1].lease.as_ref())])
        .await
        .unwrap();
    let third = reserve(h, &q, 10).await;
    assert_eq!(third.len(), 1, "a failure frees one slot");
    h.broker()
        .release(&[second[0].lease.as_ref()])
        .await
        .unwrap();
    assert_eq!(
        reserve(h, &q, 10).await.len(),
        1,
        "a release frees one slot"
    );
    assert!(reserve(h, &q, 10).await.is_empty());

    // A crashed worker's slots come back when its leases expire.
    h.clock().advance(super::LEASE);
    let after_expiry = reserve_with(
        h,
        ReserveRequest::new(q.clone(), 10, Duration::from_secs(1)),
    )
    .await;
    assert_eq!(after_expiry.len(), 2, "expired leases free their slots");
    assert_eq!(stats(h, &q).await.counts.active, 2);
}

/// A key at its concurrency limit is passed over: its next task keeps its place and goes
/// first once a slot of the key is free, while other keys and unkeyed tasks flow past it.
pub async fn key_concurrency_limit_passes_over_a_busy_key_keeping_its_place<H: Harness>(h: &mut H) {
    let q = limited(
        h,
        "tenants",
        QueueConfig {
            key_concurrency_max: Some(1),
            ..QueueConfig::default()
        },
    )
    .await;
    let ids = tasks_with_keys(h, &q, &[Some("a"), Some("a"), Some("b"), None, Some("b")]).await;
    let got = reserve(h, &q, 10).await;
    let got_ids: Vec<TaskId> = got.iter().map(|r| r.task.id).collect();
    assert_eq!(got_ids, vec![ids[0], ids[2], ids[3]]);
    assert_eq!(stats(h, &q).await.totals.throttled_concurrency, 1);
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    h.broker().ack(&[got[0].lease.as_ref()]).await.unwrap();
    assert_eq!(
        reserve_ids(h, &q, 10).await,
        vec![ids[1]],
        "a's next task, b still busy"
    );
}

/// Each limit key has its own bucket: one key running dry does not hold back another.
pub async fn key_rate_limit_gives_each_key_its_own_bucket<H: Harness>(h: &mut H) {
    let q = limited(
        h,
        "hosts",
        QueueConfig {
            key_rate_limit: Some(RateLimit {
                rate: 1.0,
                burst: 1,
            }),
            ..QueueConfig::default()
        },
    )
    .await;
    let ids = tasks_with_keys(
        h,
        &q,
        &[Some("a"), Some("a"), Some("b"), Some("b"), Some("a")],
    )
    .await;
    assert_eq!(reserve_ids(h, &q, 10).await, vec![ids[0], ids[2]]);
    assert_eq!(stats(h, &q).await.totals.throttled_rate, 1);
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    h.clock().advance(Duration::from_secs(1));
    assert_eq!(reserve_ids(h, &q, 10).await, vec![ids[1], ids[3]]);
    h.clock().advance(Duration::from_secs(5));
    assert_eq!(
        reserve_ids(h, &q, 10).await,
        vec![ids[4]],
        "a key's bucket holds at most its burst"
    );
}

/// Queue and key limits together: the queue's concurrency bounds the total while keys are
/// bounded each, and no limit set means no throttling is ever counted.
pub async fn queue_and_key_limits_apply_together<H: Harness>(h: &mut H) {
    let q = limited(
        h,
        "both",
        QueueConfig {
            concurrency_max: Some(3),
            key_concurrency_max: Some(2),
            ..QueueConfig::default()
        },
    )
    .await;
    let ids = tasks_with_keys(
        h,
        &q,
        &[Some("a"), Some("a"), Some("a"), Some("b"), Some("b")],
    )
    .await;
    assert_eq!(reserve_ids(h, &q, 10).await, vec![ids[0], ids[1], ids[3]]);
    assert!(reserve_ids(h, &q, 10).await.is_empty());

    let free = queue("free");
    enqueue(h, &free, vec![task("call")]).await;
    assert_eq!(reserve(h, &free, 10).await.len(), 1);
    let totals = stats(h, &free).await.totals;
    assert_eq!(
        (totals.throttled_rate, totals.throttled_concurrency),
        (0, 0)
    );
}
