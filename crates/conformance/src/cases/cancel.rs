//! Cancel: withdraws tasks that have not started; everything else is refused item by item.

use std::time::Duration;

use floodway_core::{Broker, Refusal, TaskState};

use super::dead_letters::dead_letter;
use super::leases::{UNKNOWN_ID, failure};
use super::{enqueue, enqueue_one, exact_retry, get, queue, reserve_ids, reserve_one, stats, task};
use crate::Harness;

/// Ready, scheduled and retrying tasks can be cancelled; they are never handed out after.
pub async fn cancel_withdraws_waiting_tasks<H: Harness>(h: &mut H) {
    let q = queue("cancel");
    let retry = exact_retry(3, Duration::from_secs(1), Duration::from_secs(1));
    let retrying = enqueue_one(h, &q, task("retrying").retry(retry)).await;
    let r = reserve_one(h, &q).await;
    h.broker()
        .fail(vec![failure(r.lease.as_ref())])
        .await
        .unwrap();
    let ids = enqueue(
        h,
        &q,
        vec![
            task("ready"),
            task("scheduled").delay(Duration::from_secs(5)),
        ],
    )
    .await;
    let all = [retrying, ids[0], ids[1]];
    assert_eq!(
        h.broker().cancel(&all).await.unwrap(),
        vec![Ok(()), Ok(()), Ok(())]
    );
    for id in all {
        let cancelled = get(h, id).await;
        assert_eq!(cancelled.state, TaskState::Cancelled);
        assert!(cancelled.finished_at.is_some());
    }
    h.clock().advance(Duration::from_secs(10));
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    let stats_now = stats(h, &q).await;
    assert_eq!(stats_now.counts.cancelled, 3);
    assert_eq!(stats_now.totals.cancelled, 3);
    assert_eq!(stats_now.length(), 0);
}

/// Running, finished and unknown tasks are refused one by one, while the good items of the
/// same batch are cancelled; a running task keeps its lease.
pub async fn cancel_refuses_running_finished_and_unknown_tasks<H: Harness>(h: &mut H) {
    let q = queue("cancel-refused");
    let dead = dead_letter(h, &q, floodway_core::DeadReason::PermanentFailure).await;
    let done = enqueue_one(h, &q, task("done")).await;
    let r = reserve_one(h, &q).await;
    h.broker().ack(&[r.lease.as_ref()]).await.unwrap();
    let running = enqueue_one(h, &q, task("running")).await;
    let held = reserve_one(h, &q).await;
    let waiting = enqueue_one(h, &q, task("waiting")).await;

    let got = h
        .broker()
        .cancel(&[running, done, dead, UNKNOWN_ID, waiting, waiting])
        .await
        .unwrap();
    let wrong = |state| Err(Refusal::WrongState { state });
    assert_eq!(
        got,
        vec![
            wrong(TaskState::Active),
            wrong(TaskState::Completed),
            wrong(TaskState::Dead),
            Err(Refusal::UnknownTask),
            Ok(()),
            wrong(TaskState::Cancelled),
        ]
    );
    assert_eq!(get(h, running).await.state, TaskState::Active);
    assert_eq!(get(h, done).await.state, TaskState::Completed);
    assert_eq!(get(h, dead).await.state, TaskState::Dead);
    assert_eq!(
        h.broker().ack(&[held.lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(stats(h, &q).await.totals.cancelled, 1);
}
