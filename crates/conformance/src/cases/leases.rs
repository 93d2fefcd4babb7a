//! Leases and fencing: expiry and redelivery, and the refusal of stale and expired leases.
//!
//! A stale lease is one whose fence was superseded by a later reservation; an expired lease is
//! one whose expiry is at or before the broker's now, whether or not the broker has taken the
//! task back yet. Every refusal must leave the task exactly as it was.

use std::time::Duration;

use floodway_core::{
    Broker, DeadReason, FailOutcome, Failure, Fence, Lease, LeaseRef, Refusal, Reservation,
    RetryDecision, TaskId, TaskState,
};

use super::{
    after, enqueue, enqueue_one, exact_retry, get, now, queue, reserve, reserve_ids, reserve_one,
    reserve_one_for, snapshot, stats, task,
};
use crate::Harness;

/// An id no broker in the suite ever makes: a UUIDv7 from 1 ms after the Unix epoch.
pub(crate) const UNKNOWN_ID: TaskId = TaskId::from_u128(0x0000_0000_0001_7000_8000_0000_0000_0001);

/// A failure report for `lease` that asks for the task's backoff.
pub(crate) fn failure(lease: LeaseRef) -> Failure {
    Failure {
        lease,
        error: "downstream timed out".to_owned(),
        retry: RetryDecision::Backoff,
    }
}

/// A task reserved twice: its first lease (1 s) expired and the task was reserved again.
/// Returns the stale reservation and the current one.
async fn superseded<H: Harness>(h: &H) -> (Reservation, Reservation) {
    let q = queue("fenced");
    enqueue_one(h, &q, task("k")).await;
    let stale = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    h.clock().advance(Duration::from_secs(1));
    let current = reserve_one(h, &q).await;
    assert_eq!(current.task.id, stale.task.id);
    assert_eq!(current.lease.fence, stale.lease.fence.next());
    (stale, current)
}

/// The refusal a stale lease gets.
fn stale_refusal(stale: &Reservation, current: &Reservation) -> Refusal {
    Refusal::StaleFence {
        presented: stale.lease.fence,
        current: current.lease.fence,
    }
}

/// A lease that expires returns the task to ready with its attempt spent, its fence kept and
/// its run-at set to when the lease expired (not when the broker took it back); the next
/// reservation gets attempt + 1 and a higher fence.
pub async fn expired_lease_returns_task_to_ready_with_attempt_spent<H: Harness>(h: &mut H) {
    let q = queue("expiry");
    let id = enqueue_one(h, &q, task("k")).await;
    let first = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    let expired_at = first.lease.expires_at;
    h.clock().advance(Duration::from_millis(999));
    assert_eq!(h.broker().reap().await.unwrap(), 0, "not expired yet");
    h.clock().advance(Duration::from_millis(501));
    assert_eq!(h.broker().reap().await.unwrap(), 1, "expired");

    let back = get(h, id).await;
    assert_eq!(back.state, TaskState::Ready);
    assert_eq!(back.attempt, 1, "the expired attempt stays spent");
    assert_eq!(back.fence, Fence(1));
    assert_eq!(back.run_at, expired_at);
    // The task keeps the expiry of the lease the broker took back, until it is reserved again.
    assert_eq!(back.lease_expires_at, Some(expired_at));
    assert_eq!(back.worker, None);
    assert_eq!(stats(h, &q).await.totals.leases_expired, 1);

    let second = reserve_one(h, &q).await;
    assert_eq!(second.task.attempt, 2);
    assert_eq!(second.lease.fence, Fence(2));
}

/// The reservation order counts a task whose lease expired as ready since the expiry, however
/// late the broker took it back: it goes before a task that became ready after the expiry.
pub async fn expired_lease_task_is_ordered_by_its_expiry_not_by_when_it_was_reaped<H: Harness>(
    h: &mut H,
) {
    let q = queue("expiry-order");
    let expired = enqueue_one(h, &q, task("expired")).await;
    reserve_one_for(h, &q, Duration::from_secs(1)).await;
    h.clock().advance(Duration::from_secs(2));
    let later = enqueue_one(h, &q, task("later")).await;
    h.clock().advance(Duration::from_secs(1));
    assert_eq!(reserve_ids(h, &q, 1).await, vec![expired]);
    assert_eq!(reserve_ids(h, &q, 1).await, vec![later]);
}

/// Reserve takes back expired leases itself before choosing.
pub async fn reserve_reaps_expired_leases_before_choosing<H: Harness>(h: &mut H) {
    let q = queue("reap-on-reserve");
    let id = enqueue_one(h, &q, task("k")).await;
    reserve_one_for(h, &q, Duration::from_secs(2)).await;
    h.clock().advance(Duration::from_secs(2));
    let again = reserve_one(h, &q).await;
    assert_eq!(again.task.id, id);
    assert_eq!((again.task.attempt, again.lease.fence), (2, Fence(2)));
    assert_eq!(stats(h, &q).await.totals.leases_expired, 1);
}

/// A lease that expires on the task's last allowed attempt sends it to the dead letters
/// (`max_attempts`) instead of back to ready.
pub async fn lease_expiring_on_the_last_attempt_dead_letters_the_task<H: Harness>(h: &mut H) {
    let q = queue("expiry-last");
    let retry = exact_retry(2, Duration::from_secs(1), Duration::from_secs(1));
    let id = enqueue_one(h, &q, task("k").retry(retry)).await;
    let mut last_expiry = None;
    for attempt in 1..=2 {
        let r = reserve_one_for(h, &q, Duration::from_secs(1)).await;
        assert_eq!(r.task.attempt, attempt);
        last_expiry = Some(r.lease.expires_at);
        h.clock().advance(Duration::from_secs(1));
        assert_eq!(h.broker().reap().await.unwrap(), 1);
    }
    let dead = get(h, id).await;
    assert_eq!(dead.state, TaskState::Dead);
    assert_eq!(dead.dead_reason, Some(DeadReason::MaxAttempts));
    assert_eq!(dead.lease_expires_at, last_expiry);
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    let totals = stats(h, &q).await.totals;
    assert_eq!(totals.leases_expired, 2);
    assert_eq!(totals.dead.max_attempts, 1);
}

/// Ack with a superseded fence is refused and changes nothing; the current holder's ack
/// still works.
pub async fn ack_with_stale_fence_is_refused_and_changes_nothing<H: Harness>(h: &mut H) {
    let (stale, current) = superseded(h).await;
    let id = stale.task.id;
    let before = get(h, id).await;
    let everything = snapshot(h).await.without_refusal_counts();
    let got = h.broker().ack(&[stale.lease.as_ref()]).await.unwrap();
    assert_eq!(got, vec![Err(stale_refusal(&stale, &current))]);
    assert_eq!(get(h, id).await, before);
    assert_eq!(snapshot(h).await.without_refusal_counts(), everything);
    assert_eq!(stats(h, &current.task.queue).await.totals.stale_refused, 1);

    let got = h.broker().ack(&[current.lease.as_ref()]).await.unwrap();
    assert_eq!(got, vec![Ok(())]);
    assert_eq!(get(h, id).await.state, TaskState::Completed);
}

/// Extend with a superseded fence is refused and changes nothing, the lease expiry included.
pub async fn extend_with_stale_fence_is_refused_and_changes_nothing<H: Harness>(h: &mut H) {
    let (stale, current) = superseded(h).await;
    let id = stale.task.id;
    let before = get(h, id).await;
    let everything = snapshot(h).await.without_refusal_counts();
    let got = h
        .broker()
        .extend(&[stale.lease.as_ref()], Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(got, vec![Err(stale_refusal(&stale, &current))]);
    assert_eq!(get(h, id).await, before);
    assert_eq!(snapshot(h).await.without_refusal_counts(), everything);
    assert_eq!(stats(h, &current.task.queue).await.totals.stale_refused, 1);
}

/// Fail with a superseded fence is refused and changes nothing: no retry is scheduled and no
/// error recorded.
pub async fn fail_with_stale_fence_is_refused_and_changes_nothing<H: Harness>(h: &mut H) {
    let (stale, current) = superseded(h).await;
    let id = stale.task.id;
    let before = get(h, id).await;
    let everything = snapshot(h).await.without_refusal_counts();
    for retry in [RetryDecision::Backoff, RetryDecision::Never] {
        let got = h
            .broker()
            .fail(vec![Failure {
                retry,
                ..failure(stale.lease.as_ref())
            }])
            .await
            .unwrap();
        assert_eq!(got, vec![Err(stale_refusal(&stale, &current))]);
    }
    assert_eq!(get(h, id).await, before);
    assert_eq!(snapshot(h).await.without_refusal_counts(), everything);
    assert_eq!(stats(h, &current.task.queue).await.totals.stale_refused, 2);
}

/// Release with a superseded fence is refused and changes nothing: the current holder keeps
/// the task and its attempt stays spent.
pub async fn release_with_stale_fence_is_refused_and_changes_nothing<H: Harness>(h: &mut H) {
    let (stale, current) = superseded(h).await;
    let id = stale.task.id;
    let before = get(h, id).await;
    let everything = snapshot(h).await.without_refusal_counts();
    let got = h.broker().release(&[stale.lease.as_ref()]).await.unwrap();
    assert_eq!(got, vec![Err(stale_refusal(&stale, &current))]);
    assert_eq!(get(h, id).await, before);
    assert_eq!(snapshot(h).await.without_refusal_counts(), everything);
    assert!(reserve_ids(h, &current.task.queue, 1).await.is_empty());
}

/// An ack that arrives at or after the lease's expiry is refused as expired, even though the
/// broker has not taken the task back yet, and changes nothing.
pub async fn ack_with_expired_but_unreaped_lease_is_refused_and_changes_nothing<H: Harness>(
    h: &mut H,
) {
    let q = queue("expired-ack");
    let id = enqueue_one(h, &q, task("k")).await;
    let r = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    h.clock().advance(Duration::from_secs(1));
    let before = get(h, id).await;
    let everything = snapshot(h).await.without_refusal_counts();
    let got = h.broker().ack(&[r.lease.as_ref()]).await.unwrap();
    assert_eq!(
        got,
        vec![Err(Refusal::LeaseExpired {
            expired_at: r.lease.expires_at
        })]
    );
    assert_eq!(get(h, id).await, before);
    assert_eq!(snapshot(h).await.without_refusal_counts(), everything);
    assert_eq!(stats(h, &q).await.totals.stale_refused, 1);
    assert_ne!(get(h, id).await.state, TaskState::Completed);

    let again = reserve_one(h, &q).await;
    assert_eq!((again.task.id, again.lease.fence), (id, Fence(2)));
}

/// Extend, fail and release of an expired (unreaped) lease are refused as expired and change
/// nothing: a worker cannot revive or finish a lease it lost.
pub async fn extend_fail_and_release_of_an_expired_lease_are_refused<H: Harness>(h: &mut H) {
    let q = queue("expired-ops");
    let id = enqueue_one(h, &q, task("k")).await;
    let r = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    h.clock().advance(Duration::from_secs(5));
    let refusal = Refusal::LeaseExpired {
        expired_at: r.lease.expires_at,
    };
    let before = get(h, id).await;
    let everything = snapshot(h).await.without_refusal_counts();
    let lease = r.lease.as_ref();
    assert_eq!(
        h.broker()
            .extend(&[lease], Duration::from_secs(60))
            .await
            .unwrap(),
        vec![Err(refusal)]
    );
    assert_eq!(
        h.broker().fail(vec![failure(lease)]).await.unwrap(),
        vec![Err(refusal)]
    );
    assert_eq!(
        h.broker().release(&[lease]).await.unwrap(),
        vec![Err(refusal)]
    );
    assert_eq!(get(h, id).await, before);
    assert_eq!(snapshot(h).await.without_refusal_counts(), everything);
    assert_eq!(stats(h, &q).await.totals.stale_refused, 3);
}

/// After the broker took the task back, the old lease is still refused as expired (not as
/// "wrong state"), and the task stays ready.
pub async fn lease_taken_back_by_reap_is_refused_as_expired<H: Harness>(h: &mut H) {
    let q = queue("reaped-ack");
    let id = enqueue_one(h, &q, task("k")).await;
    let r = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    h.clock().advance(Duration::from_secs(1));
    assert_eq!(h.broker().reap().await.unwrap(), 1);
    let before = get(h, id).await;
    let got = h.broker().ack(&[r.lease.as_ref()]).await.unwrap();
    assert_eq!(
        got,
        vec![Err(Refusal::LeaseExpired {
            expired_at: r.lease.expires_at
        })]
    );
    assert_eq!(get(h, id).await, before);
    assert_eq!(before.state, TaskState::Ready);
}

/// Extend sets the lease to the given duration from now, keeps the fence, and the task is not
/// taken back at the old expiry.
pub async fn extend_moves_the_expiry_to_the_given_duration_from_now<H: Harness>(h: &mut H) {
    let q = queue("extend");
    let id = enqueue_one(h, &q, task("k")).await;
    let r = reserve_one_for(h, &q, Duration::from_secs(1)).await;
    h.clock().advance(Duration::from_millis(800));
    let got = h
        .broker()
        .extend(&[r.lease.as_ref()], Duration::from_secs(2))
        .await
        .unwrap();
    let extended = Lease {
        task_id: id,
        fence: r.lease.fence,
        expires_at: after(h, Duration::from_secs(2)),
    };
    assert_eq!(got, vec![Ok(extended)]);
    assert_eq!(get(h, id).await.lease_expires_at, Some(extended.expires_at));

    h.clock().advance(Duration::from_secs(1));
    assert_eq!(h.broker().reap().await.unwrap(), 0, "the old expiry passed");
    assert!(reserve_ids(h, &q, 1).await.is_empty());
    assert_eq!(
        h.broker().ack(&[r.lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );
}

/// A lease that already finished its task is refused as wrong state: a second ack, or a fail
/// after the ack. A never-reserved task (fence 0) is refused the same way.
pub async fn second_ack_of_a_task_is_refused_as_wrong_state<H: Harness>(h: &mut H) {
    let q = queue("twice");
    let ids = enqueue(h, &q, vec![task("a"), task("b")]).await;
    let r = reserve_one(h, &q).await;
    let lease = r.lease.as_ref();
    assert_eq!(h.broker().ack(&[lease]).await.unwrap(), vec![Ok(())]);
    let done = get(h, ids[0]).await;
    let wrong = Refusal::WrongState {
        state: TaskState::Completed,
    };
    assert_eq!(h.broker().ack(&[lease]).await.unwrap(), vec![Err(wrong)]);
    assert_eq!(
        h.broker().fail(vec![failure(lease)]).await.unwrap(),
        vec![Err(wrong)]
    );
    assert_eq!(get(h, ids[0]).await, done);
    assert_eq!(stats(h, &q).await.totals.completed, 1);

    let never_reserved = LeaseRef {
        task_id: ids[1],
        fence: Fence(0),
    };
    assert_eq!(
        h.broker().ack(&[never_reserved]).await.unwrap(),
        vec![Err(Refusal::WrongState {
            state: TaskState::Ready
        })]
    );
    assert_eq!(get(h, ids[1]).await.state, TaskState::Ready);
}

/// In a batch, bad items (a forged fence, an unknown task) are refused one by one while the
/// good items around them take effect.
pub async fn batch_lease_operation_refuses_only_its_bad_items<H: Harness>(h: &mut H) {
    let q = queue("batch-leases");
    enqueue(h, &q, vec![task("a"), task("b"), task("c")]).await;
    let held = reserve(h, &q, 3).await;
    assert_eq!(held.len(), 3);
    let forged = LeaseRef {
        task_id: held[1].task.id,
        fence: held[1].lease.fence.next(),
    };
    let unknown = LeaseRef {
        task_id: UNKNOWN_ID,
        fence: Fence(1),
    };
    let got = h
        .broker()
        .ack(&[
            held[0].lease.as_ref(),
            forged,
            unknown,
            held[2].lease.as_ref(),
        ])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Ok(()),
            Err(Refusal::StaleFence {
                presented: forged.fence,
                current: held[1].lease.fence
            }),
            Err(Refusal::UnknownTask),
            Ok(()),
        ]
    );
    assert_eq!(get(h, held[0].task.id).await.state, TaskState::Completed);
    assert_eq!(get(h, held[1].task.id).await.state, TaskState::Active);
    assert_eq!(get(h, held[2].task.id).await.state, TaskState::Completed);

    let got = h
        .broker()
        .fail(vec![failure(unknown), failure(held[1].lease.as_ref())])
        .await
        .unwrap();
    assert_eq!(got[0], Err(Refusal::UnknownTask));
    assert!(
        matches!(got[1], Ok(FailOutcome::Retrying { .. })),
        "{got:?}"
    );
}

/// Release gives the task back unrun: ready again at once with run-at now, the attempt
/// returned and the fence kept; the next reservation gets the next fence.
pub async fn release_returns_task_to_ready_without_spending_an_attempt<H: Harness>(h: &mut H) {
    let q = queue("release");
    let retry = exact_retry(2, Duration::from_secs(1), Duration::from_secs(1));
    let id = enqueue_one(h, &q, task("k").retry(retry)).await;
    let r = reserve_one(h, &q).await;
    h.clock().advance(Duration::from_secs(2));
    assert_eq!(
        h.broker().release(&[r.lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );

    let back = get(h, id).await;
    assert_eq!(back.state, TaskState::Ready);
    assert_eq!(back.attempt, 0);
    assert_eq!(back.fence, Fence(1));
    assert_eq!(back.run_at, now(h));
    assert_eq!(back.lease_expires_at, None);
    assert_eq!(stats(h, &q).await.totals.released, 1);

    let again = reserve_one(h, &q).await;
    assert_eq!((again.task.attempt, again.lease.fence), (1, Fence(2)));
    // Had the release spent an attempt, this would be the last one and the task would die.
    let got = h
        .broker()
        .fail(vec![failure(again.lease.as_ref())])
        .await
        .unwrap();
    assert!(
        matches!(got[0], Ok(FailOutcome::Retrying { .. })),
        "{got:?}"
    );
}
