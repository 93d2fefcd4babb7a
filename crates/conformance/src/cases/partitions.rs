//! Partition keys: among a queue's unfinished tasks sharing a key only the oldest is eligible,
//! so they run one at a time in enqueue order.

use std::time::Duration;

use floodway_core::{Broker, Failure, RetryDecision, TaskState};

use super::leases::failure;
use super::{
    Needs, enqueue, exact_retry, get, lacks, queue, reserve_ids, reserve_one, reserve_one_for,
    stats, task,
};
use crate::Harness;

/// Only the oldest unfinished task of each key is handed out; the next follows when it
/// completes. Tasks without a key, or with another key, are not held up. The held-back tasks
/// still count as ready.
pub async fn tasks_sharing_a_partition_key_run_one_at_a_time_in_enqueue_order<H: Harness>(
    h: &mut H,
) {
    const CASE: &str = "tasks_sharing_a_partition_key_run_one_at_a_time_in_enqueue_order";
    if lacks(h, Needs::PartitionFifo, CASE) {
        return;
    }
    let q = queue("partitioned");
    let ids = enqueue(
        h,
        &q,
        vec![
            task("k1").partition_key("k"),
            task("k2").partition_key("k"),
            task("j1").partition_key("j"),
            task("free"),
            task("k3").partition_key("k"),
        ],
    )
    .await;
    let first = super::reserve(h, &q, 10).await;
    let got: Vec<_> = first.iter().map(|r| r.task.id).collect();
    assert_eq!(got, vec![ids[0], ids[2], ids[3]]);
    assert_eq!(stats(h, &q).await.counts.ready, 2);

    h.broker().ack(&[first[0].lease.as_ref()]).await.unwrap();
    let next = reserve_one(h, &q).await;
    assert_eq!(next.task.id, ids[1]);
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    h.broker().ack(&[next.lease.as_ref()]).await.unwrap();
    assert_eq!(reserve_ids(h, &q, 10).await, vec![ids[4]]);
}

/// A head that failed and waits to retry still blocks its key: the next task stays ready but
/// is not handed out until the head finishes (here, in the dead letters).
pub async fn failed_partition_head_blocks_its_key_while_retrying<H: Harness>(h: &mut H) {
    if lacks(
        h,
        Needs::PartitionFifo,
        "failed_partition_head_blocks_its_key_while_retrying",
    ) {
        return;
    }
    let q = queue("partition-retry");
    let retry = exact_retry(3, Duration::from_secs(1), Duration::from_secs(1));
    let ids = enqueue(
        h,
        &q,
        vec![
            task("head").partition_key("k").retry(retry),
            task("next").partition_key("k"),
        ],
    )
    .await;
    let head = reserve_one(h, &q).await;
    assert_eq!(head.task.id, ids[0]);
    h.broker()
        .fail(vec![failure(head.lease.as_ref())])
        .await
        .unwrap();
    assert!(
        reserve_ids(h, &q, 10).await.is_empty(),
        "the key is blocked"
    );
    let counts = stats(h, &q).await.counts;
    assert_eq!((counts.ready, counts.retrying), (1, 1));

    h.clock().advance(Duration::from_secs(1));
    let head = reserve_one(h, &q).await;
    assert_eq!((head.task.id, head.task.attempt), (ids[0], 2));
    h.broker()
        .fail(vec![Failure {
            retry: RetryDecision::Never,
            ..failure(head.lease.as_ref())
        }])
        .await
        .unwrap();
    assert_eq!(reserve_ids(h, &q, 10).await, vec![ids[1]]);
}

/// A head that is still scheduled blocks the later tasks of its key even when they are ready.
pub async fn delayed_partition_head_blocks_later_tasks_of_its_key<H: Harness>(h: &mut H) {
    if lacks(
        h,
        Needs::PartitionFifo,
        "delayed_partition_head_blocks_later_tasks_of_its_key",
    ) {
        return;
    }
    let q = queue("partition-delay");
    let ids = enqueue(
        h,
        &q,
        vec![
            task("head")
                .partition_key("k")
                .delay(Duration::from_secs(10)),
            task("next").partition_key("k"),
        ],
    )
    .await;
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    let counts = stats(h, &q).await.counts;
    assert_eq!((counts.scheduled, counts.ready), (1, 1));
    h.clock().advance(Duration::from_secs(10));
    assert_eq!(reserve_ids(h, &q, 10).await, vec![ids[0]]);
}

/// Any way the head finishes unblocks the next task: cancellation, a lease expiring on the
/// last attempt (even inside the reserve that then picks the next), a permanent failure. A
/// release does not: the released head goes first again.
pub async fn finishing_the_head_in_any_way_unblocks_the_next<H: Harness>(h: &mut H) {
    if lacks(
        h,
        Needs::PartitionFifo,
        "finishing_the_head_in_any_way_unblocks_the_next",
    ) {
        return;
    }
    let q = queue("partition-finish");
    let ids = enqueue(
        h,
        &q,
        vec![
            task("cancelled")
                .partition_key("k")
                .delay(Duration::from_secs(60)),
            task("expires").partition_key("k").max_attempts(1),
            task("fails").partition_key("k"),
            task("last").partition_key("k"),
        ],
    )
    .await;
    assert_eq!(h.broker().cancel(&[ids[0]]).await.unwrap(), vec![Ok(())]);
    let expiring = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    assert_eq!(expiring.task.id, ids[1]);
    h.clock().advance(Duration::from_secs(1));
    let failing = reserve_one(h, &q).await;
    assert_eq!(failing.task.id, ids[2]);
    assert_eq!(get(h, ids[1]).await.state, TaskState::Dead);

    h.broker().release(&[failing.lease.as_ref()]).await.unwrap();
    let failing = reserve_one(h, &q).await;
    assert_eq!(failing.task.id, ids[2], "a released head keeps its place");
    h.broker()
        .fail(vec![Failure {
            retry: RetryDecision::Never,
            ..failure(failing.lease.as_ref())
        }])
        .await
        .unwrap();
    assert_eq!(reserve_ids(h, &q, 10).await, vec![ids[3]]);
}

/// The same key in two queues makes two independent partitions.
pub async fn partition_keys_are_per_queue<H: Harness>(h: &mut H) {
    if lacks(h, Needs::PartitionFifo, "partition_keys_are_per_queue") {
        return;
    }
    let (a, b) = (queue("partition-a"), queue("partition-b"));
    let in_a = enqueue(h, &a, vec![task("a").partition_key("k")]).await;
    assert_eq!(reserve_ids(h, &a, 1).await, in_a);
    let in_b = enqueue(h, &b, vec![task("b").partition_key("k")]).await;
    assert_eq!(reserve_ids(h, &b, 1).await, in_b);
}
