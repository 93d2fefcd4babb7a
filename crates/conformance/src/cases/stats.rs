//! Statistics: counts per state, running totals, the age of the oldest ready task, and the
//! configuration they report.

use std::time::Duration;

use floodway_core::{
    Broker, DeadCounts, Failure, LATENCY_BUCKETS, LatencyHistogram, OverflowPolicy, QueueConfig,
    QueueName, QueueTotals, Refusal, RetryDecision, StateCounts, TaskId, TaskState,
};

use super::leases::failure;
use super::{
    configure, enqueue, enqueue_one, exact_retry, get, queue, reserve_one, reserve_one_for, stats,
    task,
};
use crate::Harness;

/// Puts one task in each of the seven states into `q`, which must be new.
pub(crate) async fn one_task_per_state<H: Harness>(h: &H, q: &QueueName) {
    let retry = exact_retry(3, Duration::from_secs(60), Duration::from_secs(60));
    enqueue_one(h, q, task("completed")).await;
    let r = reserve_one(h, q).await;
    h.broker().ack(&[r.lease.as_ref()]).await.unwrap();
    enqueue_one(h, q, task("dead")).await;
    let r = reserve_one(h, q).await;
    let never = Failure {
        retry: RetryDecision::Never,
        ..failure(r.lease.as_ref())
    };
    h.broker().fail(vec![never]).await.unwrap();
    enqueue_one(h, q, task("retrying").retry(retry)).await;
    let r = reserve_one(h, q).await;
    h.broker()
        .fail(vec![failure(r.lease.as_ref())])
        .await
        .unwrap();
    enqueue_one(h, q, task("active")).await;
    reserve_one(h, q).await;
    let cancelled = enqueue_one(h, q, task("cancelled")).await;
    h.broker().cancel(&[cancelled]).await.unwrap();
    enqueue_one(h, q, task("scheduled").delay(Duration::from_secs(60))).await;
    enqueue_one(h, q, task("ready")).await;
}

/// Stats count the queue's tasks in each of the seven states; the length is the waiting
/// ones; stats of every queue include the same entry.
pub async fn stats_count_tasks_per_state<H: Harness>(h: &mut H) {
    let q = queue("counted");
    one_task_per_state(h, &q).await;

    let stats_now = stats(h, &q).await;
    let one_each = StateCounts {
        scheduled: 1,
        ready: 1,
        active: 1,
        retrying: 1,
        completed: 1,
        dead: 1,
        cancelled: 1,
    };
    assert_eq!(stats_now.counts, one_each);
    assert_eq!(stats_now.length(), 3);
    assert_eq!(stats_now.oldest_ready_age, Some(Duration::ZERO));
    let all = h.broker().stats(None).await.unwrap();
    assert_eq!(all.iter().find(|s| s.queue == q), Some(&stats_now));
}

/// Every running total counts its events: a scripted run produces each kind of event a known
/// number of times.
pub async fn stats_totals_count_every_event<H: Harness>(h: &mut H) {
    let q = queue("totals");
    let bounded = |length_max, overflow| QueueConfig {
        length_max: Some(length_max),
        overflow,
        dead_retain: 1,
        ..QueueConfig::default()
    };
    configure(h, &q, bounded(4, OverflowPolicy::Reject)).await;
    let retry = exact_retry(3, Duration::from_secs(1), Duration::from_secs(1));
    let ids = enqueue(
        h,
        &q,
        vec![
            task("a").idempotency_key("k").max_attempts(1),
            task("b").retry(retry),
            task("c"),
        ],
    )
    .await;
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let dup = h
        .broker()
        .enqueue(&q, vec![task("d").idempotency_key("k")])
        .await
        .unwrap();
    assert!(dup[0].duplicate);
    assert!(
        h.broker()
            .enqueue(&q, vec![task("e"), task("f")])
            .await
            .is_err()
    );

    // a: its late ack is refused, and as its only attempt's lease expired, it dies.
    let held_a = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    assert_eq!(held_a.task.id, a);
    h.clock().advance(Duration::from_secs(1));
    let late = h.broker().ack(&[held_a.lease.as_ref()]).await.unwrap();
    assert!(matches!(late[0], Err(Refusal::LeaseExpired { .. })));
    assert_eq!(h.broker().reap().await.unwrap(), 1);
    // b is released, c completes, b fails once and is cancelled while it waits to retry.
    let held_b = reserve_one(h, &q).await;
    assert_eq!(held_b.task.id, b);
    h.broker().release(&[held_b.lease.as_ref()]).await.unwrap();
    let held_c = reserve_one(h, &q).await;
    assert_eq!(held_c.task.id, c);
    h.broker().ack(&[held_c.lease.as_ref()]).await.unwrap();
    let held_b = reserve_one(h, &q).await;
    h.broker()
        .fail(vec![failure(held_b.lease.as_ref())])
        .await
        .unwrap();
    assert_eq!(h.broker().cancel(&[b]).await.unwrap(), vec![Ok(())]);
    // a is replayed and fails permanently.
    assert_eq!(
        h.broker()
            .replay(floodway_core::DeadSelector::Ids(vec![a]))
            .await,
        Ok(1)
    );
    let held_a = reserve_one(h, &q).await;
    let never = Failure {
        retry: RetryDecision::Never,
        ..failure(held_a.lease.as_ref())
    };
    h.broker().fail(vec![never]).await.unwrap();
    // g expires, which drops a (dead_retain is 1).
    enqueue_one(h, &q, task("g").ttl(Duration::from_millis(1))).await;
    h.clock().advance(Duration::from_millis(1));
    assert_eq!(h.broker().promote().await.unwrap(), 1);
    // h overflows when i arrives, which drops g.
    configure(h, &q, bounded(1, OverflowPolicy::DeadLetterOldest)).await;
    enqueue(h, &q, vec![task("h")]).await;
    enqueue(h, &q, vec![task("i")]).await;

    let totals = stats(h, &q).await.totals;
    let expected = QueueTotals {
        enqueued: 6,
        deduplicated: 1,
        // One refused enqueue, of two tasks.
        rejected_full: 1,
        reserved: 5,
        completed: 1,
        retried: 1,
        released: 1,
        leases_expired: 1,
        dead: DeadCounts {
            max_attempts: 1,
            expired: 1,
            overflow: 1,
            permanent_failure: 1,
        },
        dead_dropped: 2,
        replayed: 1,
        cancelled: 1,
        stale_refused: 1,
        rejected_overloaded: 0,
        throttled_rate: 0,
        throttled_concurrency: 0,
        effects_recorded: 0,
    };
    assert_eq!(totals, expected);
    assert_eq!(get(h, c).await.state, TaskState::Completed);
}

/// The oldest ready age is how long the longest-waiting ready task has waited since its
/// run-at; none when no task is ready (scheduled tasks do not count).
pub async fn oldest_ready_age_is_the_wait_of_the_longest_waiting_ready_task<H: Harness>(h: &mut H) {
    let q = queue("age");
    configure(h, &q, QueueConfig::default()).await;
    assert_eq!(stats(h, &q).await.oldest_ready_age, None);
    enqueue_one(h, &q, task("a")).await;
    h.clock().advance(Duration::from_secs(3));
    enqueue_one(h, &q, task("b")).await;
    enqueue_one(h, &q, task("later").delay(Duration::from_secs(60))).await;
    assert_eq!(
        stats(h, &q).await.oldest_ready_age,
        Some(Duration::from_secs(3))
    );
    reserve_one(h, &q).await;
    h.clock().advance(Duration::from_secs(2));
    assert_eq!(
        stats(h, &q).await.oldest_ready_age,
        Some(Duration::from_secs(2))
    );
    reserve_one(h, &q).await;
    assert_eq!(stats(h, &q).await.oldest_ready_age, None);
}

/// Reserve records how long each task it hands out waited since it became due (its enqueue,
/// or its run-at for a delayed task), on the broker's clock, in the queue's start latencies.
pub async fn start_latency_counts_the_wait_from_due_to_reservation<H: Harness>(h: &mut H) {
    let q = queue("latency");
    configure(h, &q, QueueConfig::default()).await;
    assert_eq!(
        stats(h, &q).await.start_latency,
        LatencyHistogram::default()
    );
    // Each task is acked at once, so no lease expires while the clock moves.
    let reserve_and_ack = async |expected: TaskId| {
        let r = reserve_one(h, &q).await;
        assert_eq!(r.task.id, expected);
        h.broker().ack(&[r.lease.as_ref()]).await.unwrap();
    };
    // Reserved 3 s after its enqueue.
    let waited = enqueue_one(h, &q, task("waited")).await;
    h.clock().advance(Duration::from_secs(3));
    reserve_and_ack(waited).await;
    // Due 60 s after its enqueue, reserved 700 ms after that: the wait counts from the run-at.
    let delayed = enqueue_one(h, &q, task("delayed").delay(Duration::from_secs(60))).await;
    h.clock().advance(Duration::from_millis(60_700));
    reserve_and_ack(delayed).await;
    // Reserved as it arrives.
    let at_once = enqueue_one(h, &q, task("at_once")).await;
    reserve_and_ack(at_once).await;

    let latency = stats(h, &q).await.start_latency;
    let mut expected = [0; LATENCY_BUCKETS];
    expected[LatencyHistogram::bucket(Duration::from_secs(3))] += 1;
    expected[LatencyHistogram::bucket(Duration::from_millis(700))] += 1;
    expected[LatencyHistogram::bucket(Duration::ZERO)] += 1;
    assert_eq!(
        (latency.counts, latency.sum),
        (expected, Duration::from_millis(3_700)),
        "3 s in the bucket up to 5 s, 700 ms in the one up to 1 s, 0 in the first"
    );
    assert_eq!(
        (
            LatencyHistogram::bucket(Duration::from_secs(3)),
            LatencyHistogram::bucket(Duration::from_millis(700))
        ),
        (10, 8)
    );
    let all = h.broker().stats(None).await.unwrap();
    let listed = all.iter().find(|s| s.queue == q).expect("listed");
    assert_eq!(listed.start_latency, latency);
}

/// A ready task held back by its partition's head is still ready, so it counts in the oldest
/// ready age like in the ready count.
pub async fn oldest_ready_age_counts_ready_tasks_held_back_by_their_partition<H: Harness>(
    h: &mut H,
) {
    const CASE: &str = "oldest_ready_age_counts_ready_tasks_held_back_by_their_partition";
    if super::lacks(h, super::Needs::PartitionFifo, CASE) {
        return;
    }
    let q = queue("age-partition");
    enqueue(
        h,
        &q,
        vec![
            task("head").partition_key("k"),
            task("held").partition_key("k"),
        ],
    )
    .await;
    reserve_one(h, &q).await;
    h.clock().advance(Duration::from_secs(4));
    let stats_now = stats(h, &q).await;
    assert_eq!(stats_now.counts.ready, 1);
    assert_eq!(stats_now.oldest_ready_age, Some(Duration::from_secs(4)));
}

/// Configure replaces a queue's configuration and keeps its tasks and totals.
pub async fn configure_replaces_the_config_and_keeps_the_tasks<H: Harness>(h: &mut H) {
    let q = queue("configured");
    let first = QueueConfig {
        length_max: Some(10),
        overflow: OverflowPolicy::DeadLetterOldest,
        idempotency_window: Duration::from_secs(60),
        completed_retain: 5,
        dead_retain: 6,
        ..QueueConfig::default()
    };
    configure(h, &q, first.clone()).await;
    assert_eq!(stats(h, &q).await.config, first);
    enqueue(h, &q, vec![task("a"), task("b")]).await;
    let second = QueueConfig {
        retry: exact_retry(2, Duration::from_secs(3), Duration::from_secs(9)),
        ..QueueConfig::default()
    };
    configure(h, &q, second.clone()).await;
    let stats_now = stats(h, &q).await;
    assert_eq!(stats_now.config, second);
    assert_eq!(stats_now.counts.ready, 2);
    assert_eq!(stats_now.totals.enqueued, 2);
}

/// An open broker answers `ping` with `Ok`, empty or not, and the ping changes nothing.
pub async fn ping_answers_an_open_broker_and_changes_nothing<H: Harness>(h: &mut H) {
    h.broker().ping().await.expect("ping of a fresh broker");
    let q = queue("pinged");
    enqueue_one(h, &q, task("k")).await;
    let before = super::snapshot(h).await;
    h.broker()
        .ping()
        .await
        .expect("ping of a broker holding a task");
    assert_eq!(super::snapshot(h).await, before);
}
