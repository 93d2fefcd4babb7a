//! Delayed tasks: scheduled until their run-at, then promoted to ready.

use std::time::Duration;

use floodway_core::{Broker, TaskState, Timestamp};

use super::{after, enqueue, enqueue_one, get, now, queue, reserve_ids, stats, task};
use crate::Harness;

/// A delayed task waits in scheduled until the clock reaches its run-at, and not a
/// millisecond less.
pub async fn delayed_task_is_scheduled_until_its_run_at<H: Harness>(h: &mut H) {
    let q = queue("delayed");
    let delay = Duration::from_secs(5);
    let id = enqueue_one(h, &q, task("k").delay(delay)).await;
    let stored = get(h, id).await;
    assert_eq!(stored.state, TaskState::Scheduled);
    assert_eq!(stored.run_at, after(h, delay));
    assert_eq!(stats(h, &q).await.counts.scheduled, 1);
    assert!(reserve_ids(h, &q, 10).await.is_empty());

    h.clock().advance(delay - Duration::from_millis(1));
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    assert_eq!(get(h, id).await.state, TaskState::Scheduled);

    h.clock().advance(Duration::from_millis(1));
    assert_eq!(reserve_ids(h, &q, 10).await, vec![id]);
}

/// A run-at in the past makes a ready task whose run-at is now; one in the future makes a
/// scheduled task with exactly that run-at.
pub async fn task_with_run_at_in_the_past_is_ready_at_once<H: Harness>(h: &mut H) {
    let q = queue("run-at");
    let start = now(h);
    let past = Timestamp::from_millis(start.as_millis() - 10_000);
    let future = after(h, Duration::from_secs(3));
    let ids = enqueue(
        h,
        &q,
        vec![task("past").run_at(past), task("future").run_at(future)],
    )
    .await;
    let (p, f) = (get(h, ids[0]).await, get(h, ids[1]).await);
    assert_eq!((p.state, p.run_at), (TaskState::Ready, start));
    assert_eq!((f.state, f.run_at), (TaskState::Scheduled, future));
    assert_eq!(reserve_ids(h, &q, 10).await, vec![ids[0]]);
}

/// Promote moves exactly the scheduled tasks that are due and says how many it moved.
pub async fn promote_moves_due_tasks_to_ready_and_counts_them<H: Harness>(h: &mut H) {
    let q = queue("promote");
    let ids = enqueue(
        h,
        &q,
        [1, 2, 3]
            .map(|s| task("k").delay(Duration::from_secs(s)))
            .into(),
    )
    .await;
    h.clock().advance(Duration::from_secs(2));
    assert_eq!(h.broker().promote().await.unwrap(), 2);
    let mut states = Vec::new();
    for id in &ids {
        states.push(get(h, *id).await.state);
    }
    assert_eq!(
        states,
        [TaskState::Ready, TaskState::Ready, TaskState::Scheduled]
    );
    assert_eq!(
        h.broker().promote().await.unwrap(),
        0,
        "nothing more is due"
    );
    let stats = stats(h, &q).await;
    assert_eq!((stats.counts.ready, stats.counts.scheduled), (2, 1));
}

/// Reserve promotes due tasks itself before choosing; nobody has to call promote first.
pub async fn reserve_promotes_due_tasks_before_choosing<H: Harness>(h: &mut H) {
    let q = queue("promote-on-reserve");
    let id = enqueue_one(h, &q, task("k").delay(Duration::from_secs(1))).await;
    h.clock().advance(Duration::from_secs(1));
    assert_eq!(reserve_ids(h, &q, 1).await, vec![id]);
    assert_eq!(get(h, id).await.attempt, 1);
}
