//! Dead letters (list, replay, purge), retention of finished tasks, and listing.

use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, DeadReason, DeadSelector, Failure, Fence, QueueConfig, QueueName,
    RetryDecision, TaskFilter, TaskId, TaskState, limits,
};

use super::leases::{UNKNOWN_ID, failure};
use super::{
    configure, enqueue, enqueue_one, get, list, now, queue, reserve, reserve_one, stats, task,
};
use crate::Harness;

/// Makes one dead letter in `q` with `reason` (not `overflow`). `q` must hold no other ready
/// task, so that the reserve inside picks this one.
pub(crate) async fn dead_letter<H: Harness>(h: &H, q: &QueueName, reason: DeadReason) -> TaskId {
    let id = match reason {
        DeadReason::Expired => {
            let id = enqueue_one(h, q, task("expires").ttl(Duration::from_millis(1))).await;
            h.clock().advance(Duration::from_millis(1));
            h.broker().promote().await.unwrap();
            id
        }
        DeadReason::MaxAttempts | DeadReason::PermanentFailure => {
            let id = enqueue_one(h, q, task("fails").max_attempts(1)).await;
            let r = reserve_one(h, q).await;
            assert_eq!(
                r.task.id, id,
                "dead_letter needs a queue without ready tasks"
            );
            let retry = if reason == DeadReason::MaxAttempts {
                RetryDecision::Backoff
            } else {
                RetryDecision::Never
            };
            h.broker()
                .fail(vec![Failure {
                    retry,
                    ..failure(r.lease.as_ref())
                }])
                .await
                .unwrap();
            id
        }
        DeadReason::Overflow => panic!("dead_letter cannot make an overflow dead letter"),
    };
    let dead = get(h, id).await;
    assert_eq!(
        (dead.state, dead.dead_reason),
        (TaskState::Dead, Some(reason))
    );
    id
}

fn dead_in(queue: Option<&QueueName>, reason: Option<DeadReason>) -> TaskFilter {
    TaskFilter {
        queue: queue.cloned(),
        state: Some(TaskState::Dead),
        dead_reason: reason,
        ..TaskFilter::default()
    }
}

async fn ids_of<H: Harness>(h: &H, filter: TaskFilter) -> Vec<TaskId> {
    list(h, filter).await.into_iter().map(|t| t.id).collect()
}

/// Dead letters are listed in id order and filter by queue and by reason.
pub async fn dead_letters_are_listed_by_queue_and_reason<H: Harness>(h: &mut H) {
    let (a, b) = (queue("dead-a"), queue("dead-b"));
    let a_max = dead_letter(h, &a, DeadReason::MaxAttempts).await;
    let a_perm = dead_letter(h, &a, DeadReason::PermanentFailure).await;
    let a_expired = dead_letter(h, &a, DeadReason::Expired).await;
    let b_perm = dead_letter(h, &b, DeadReason::PermanentFailure).await;
    enqueue_one(h, &a, task("alive")).await;

    assert_eq!(
        ids_of(h, dead_in(Some(&a), None)).await,
        vec![a_max, a_perm, a_expired]
    );
    assert_eq!(
        ids_of(h, dead_in(None, Some(DeadReason::PermanentFailure))).await,
        vec![a_perm, b_perm]
    );
    let reason_only = TaskFilter {
        dead_reason: Some(DeadReason::MaxAttempts),
        ..TaskFilter::default()
    };
    assert_eq!(ids_of(h, reason_only).await, vec![a_max]);
    assert!(
        ids_of(h, dead_in(Some(&b), Some(DeadReason::Expired)))
            .await
            .is_empty()
    );
    assert_eq!(stats(h, &a).await.counts.dead, 3);
}

/// Replay by ids moves each dead letter to ready with attempt 0, run-at now and no dead
/// reason, keeping its fence; ids that are not dead letters are skipped.
pub async fn replay_by_ids_moves_dead_letters_to_ready_with_fresh_attempts<H: Harness>(h: &mut H) {
    let q = queue("replay");
    let dead = dead_letter(h, &q, DeadReason::MaxAttempts).await;
    let alive = enqueue_one(h, &q, task("alive")).await;
    let alive_before = get(h, alive).await;
    h.clock().advance(Duration::from_secs(3));

    let replayed = h
        .broker()
        .replay(DeadSelector::Ids(vec![dead, alive, UNKNOWN_ID]))
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    let back = get(h, dead).await;
    assert_eq!(back.state, TaskState::Ready);
    assert_eq!(back.attempt, 0);
    assert_eq!(back.run_at, now(h));
    assert_eq!(back.dead_reason, None);
    assert_eq!(back.fence, Fence(1));
    assert_eq!(get(h, alive).await, alive_before);
    let stats_now = stats(h, &q).await;
    assert_eq!(stats_now.totals.replayed, 1);
    assert_eq!(stats_now.counts.dead, 0);

    let held = reserve(h, &q, 10).await;
    let again = held
        .iter()
        .find(|r| r.task.id == dead)
        .expect("the replayed task can be reserved");
    assert_eq!((again.task.attempt, again.lease.fence), (1, Fence(2)));
}

/// Replay by conditions takes the oldest matching dead letters first, up to its limit.
pub async fn replay_matching_takes_the_oldest_first_up_to_the_limit<H: Harness>(h: &mut H) {
    let q = queue("replay-oldest");
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(dead_letter(h, &q, DeadReason::PermanentFailure).await);
    }
    let replayed = h
        .broker()
        .replay(DeadSelector::Matching {
            queue: Some(q.clone()),
            reason: None,
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(replayed, 2);
    let states = [
        get(h, dead[0]).await.state,
        get(h, dead[1]).await.state,
        get(h, dead[2]).await.state,
    ];
    assert_eq!(
        states,
        [TaskState::Ready, TaskState::Ready, TaskState::Dead]
    );
}

/// Replay by conditions acts only on dead letters of the given queue and reason.
pub async fn replay_matching_filters_by_queue_and_reason<H: Harness>(h: &mut H) {
    let (a, b) = (queue("replay-a"), queue("replay-b"));
    let a_perm = dead_letter(h, &a, DeadReason::PermanentFailure).await;
    let a_max = dead_letter(h, &a, DeadReason::MaxAttempts).await;
    let b_perm = dead_letter(h, &b, DeadReason::PermanentFailure).await;
    let replay = |queue: Option<QueueName>, reason| DeadSelector::Matching {
        queue,
        reason,
        limit: 10,
    };

    let got = h
        .broker()
        .replay(replay(Some(a.clone()), Some(DeadReason::PermanentFailure)))
        .await;
    assert_eq!(got, Ok(1));
    assert_eq!(get(h, a_perm).await.state, TaskState::Ready);
    assert_eq!(get(h, a_max).await.state, TaskState::Dead);
    assert_eq!(get(h, b_perm).await.state, TaskState::Dead);

    let got = h
        .broker()
        .replay(replay(None, Some(DeadReason::PermanentFailure)))
        .await;
    assert_eq!(got, Ok(1));
    assert_eq!(get(h, b_perm).await.state, TaskState::Ready);
    assert_eq!(get(h, a_max).await.state, TaskState::Dead);

    assert_eq!(h.broker().replay(replay(None, None)).await, Ok(1));
    assert_eq!(get(h, a_max).await.state, TaskState::Ready);
}

/// Purge by ids deletes dead letters for ever and skips other ids; totals keep counting what
/// happened.
pub async fn purge_by_ids_deletes_dead_letters_for_ever<H: Harness>(h: &mut H) {
    let q = queue("purge");
    let gone = dead_letter(h, &q, DeadReason::PermanentFailure).await;
    let kept = dead_letter(h, &q, DeadReason::PermanentFailure).await;
    let alive = enqueue_one(h, &q, task("alive")).await;
    let purged = h
        .broker()
        .purge(DeadSelector::Ids(vec![gone, alive]))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(
        h.broker().get(gone).await,
        Err(BrokerError::UnknownTask(gone))
    );
    assert_eq!(get(h, kept).await.state, TaskState::Dead);
    assert_eq!(get(h, alive).await.state, TaskState::Ready);
    let stats_now = stats(h, &q).await;
    assert_eq!(stats_now.counts.dead, 1);
    assert_eq!(stats_now.totals.dead.permanent_failure, 2);
    assert_eq!(
        h.broker().replay(DeadSelector::Ids(vec![gone])).await,
        Ok(0),
        "a purged task cannot be replayed"
    );
}

/// Purge by conditions deletes the oldest matching dead letters of the given queue and
/// reason, up to its limit.
pub async fn purge_matching_deletes_by_queue_and_reason_oldest_first<H: Harness>(h: &mut H) {
    let (a, b) = (queue("purge-a"), queue("purge-b"));
    let a_perm_1 = dead_letter(h, &a, DeadReason::PermanentFailure).await;
    let a_perm_2 = dead_letter(h, &a, DeadReason::PermanentFailure).await;
    let a_max = dead_letter(h, &a, DeadReason::MaxAttempts).await;
    let b_perm = dead_letter(h, &b, DeadReason::PermanentFailure).await;

    let got = h
        .broker()
        .purge(DeadSelector::Matching {
            queue: Some(a.clone()),
            reason: Some(DeadReason::PermanentFailure),
            limit: 1,
        })
        .await;
    assert_eq!(got, Ok(1));
    assert!(h.broker().get(a_perm_1).await.is_err());
    for id in [a_perm_2, a_max, b_perm] {
        assert_eq!(get(h, id).await.state, TaskState::Dead);
    }
    let got = h
        .broker()
        .purge(DeadSelector::Matching {
            queue: None,
            reason: None,
            limit: limits::BATCH_SIZE_MAX,
        })
        .await;
    assert_eq!(got, Ok(3));
    assert_eq!(stats(h, &a).await.counts.dead, 0);
    assert_eq!(stats(h, &b).await.counts.dead, 0);
}

/// A queue keeps at most `dead_retain` dead letters; the oldest beyond it are deleted and
/// counted as dropped.
pub async fn dead_letters_beyond_dead_retain_are_dropped_oldest_first<H: Harness>(h: &mut H) {
    let q = queue("dead-retain");
    configure(
        h,
        &q,
        QueueConfig {
            dead_retain: 2,
            ..QueueConfig::default()
        },
    )
    .await;
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(dead_letter(h, &q, DeadReason::PermanentFailure).await);
    }
    assert_eq!(
        h.broker().get(dead[0]).await,
        Err(BrokerError::UnknownTask(dead[0]))
    );
    assert_eq!(ids_of(h, dead_in(Some(&q), None)).await, dead[1..].to_vec());
    let stats_now = stats(h, &q).await;
    assert_eq!(stats_now.counts.dead, 2);
    assert_eq!(stats_now.totals.dead_dropped, 1);
}

/// A queue keeps at most `completed_retain` completed tasks and as many cancelled ones; the
/// oldest (lowest id, not first finished) beyond it are deleted.
pub async fn finished_tasks_beyond_completed_retain_are_deleted_oldest_first<H: Harness>(
    h: &mut H,
) {
    let q = queue("retain");
    configure(
        h,
        &q,
        QueueConfig {
            completed_retain: 2,
            ..QueueConfig::default()
        },
    )
    .await;
    let ids = enqueue(h, &q, vec![task("a"), task("b"), task("c")]).await;
    let held = reserve(h, &q, 3).await;
    assert_eq!(held.len(), 3);
    for index in [2, 0, 1] {
        let got = h.broker().ack(&[held[index].lease.as_ref()]).await.unwrap();
        assert_eq!(got, vec![Ok(())]);
    }
    assert_eq!(
        h.broker().get(ids[0]).await,
        Err(BrokerError::UnknownTask(ids[0]))
    );
    assert_eq!(get(h, ids[1]).await.state, TaskState::Completed);
    assert_eq!(get(h, ids[2]).await.state, TaskState::Completed);

    let more = enqueue(h, &q, vec![task("d"), task("e"), task("f")]).await;
    let cancelled = h.broker().cancel(&more).await.unwrap();
    assert!(cancelled.iter().all(Result::is_ok), "{cancelled:?}");
    assert!(h.broker().get(more[0]).await.is_err());
    let counts = stats(h, &q).await.counts;
    assert_eq!((counts.completed, counts.cancelled), (2, 2));
}

/// List returns tasks in id order, `limit` at a time, continuing after the last id given.
pub async fn list_pages_through_tasks_in_id_order<H: Harness>(h: &mut H) {
    let q = queue("pages");
    let ids = enqueue(h, &q, (0..7).map(|_| task("k")).collect()).await;
    let mut after = None;
    let mut pages = Vec::new();
    loop {
        let page = h
            .broker()
            .list(TaskFilter {
                queue: Some(q.clone()),
                after,
                limit: 3,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().map(|t| t.id);
        pages.push(page.into_iter().map(|t| t.id).collect::<Vec<_>>());
    }
    assert_eq!(
        pages,
        vec![ids[..3].to_vec(), ids[3..6].to_vec(), ids[6..].to_vec()]
    );

    reserve(h, &q, 2).await;
    let ready = TaskFilter {
        queue: Some(q.clone()),
        state: Some(TaskState::Ready),
        ..TaskFilter::default()
    };
    assert_eq!(ids_of(h, ready).await, ids[2..].to_vec());
}
