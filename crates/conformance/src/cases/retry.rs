//! Retries: exponential backoff (exact without jitter, bounded with full jitter), the
//! decisions a failure can carry, and the dead letter at the end.

use std::collections::BTreeSet;
use std::time::Duration;

use floodway_core::{
    Broker, DeadReason, FailOutcome, Failure, Jitter, RetryDecision, RetryPolicy, TaskState, limits,
};

use super::leases::failure;
use super::{
    after, enqueue, enqueue_one, exact_retry, get, queue, reserve, reserve_ids, reserve_one, stats,
    task,
};
use crate::Harness;

/// Each failure with attempts left schedules a retry exactly one backoff later (1 s, then
/// 2 s); the task is not reservable a millisecond before; the failure of the last attempt
/// dead-letters it with reason `max_attempts`.
pub async fn failed_task_retries_after_exact_backoff_until_max_attempts_then_dead_letters<
    H: Harness,
>(
    h: &mut H,
) {
    let q = queue("retry");
    let retry = exact_retry(3, Duration::from_secs(1), Duration::from_secs(60));
    let id = enqueue_one(h, &q, task("k").retry(retry)).await;

    for (attempt, backoff) in [(1, 1), (2, 2)] {
        let r = reserve_one(h, &q).await;
        assert_eq!(r.task.attempt, attempt);
        let run_at = after(h, Duration::from_secs(backoff));
        let got = h
            .broker()
            .fail(vec![failure(r.lease.as_ref())])
            .await
            .unwrap();
        assert_eq!(got, vec![Ok(FailOutcome::Retrying { run_at })]);
        let waiting = get(h, id).await;
        assert_eq!(waiting.state, TaskState::Retrying);
        assert_eq!(waiting.run_at, run_at);
        assert_eq!(waiting.attempt, attempt);
        assert_eq!(waiting.lease_expires_at, None);
        assert_eq!(waiting.last_error.as_deref(), Some("downstream timed out"));

        h.clock()
            .advance(Duration::from_secs(backoff) - Duration::from_millis(1));
        assert!(reserve_ids(h, &q, 1).await.is_empty(), "backoff not over");
        h.clock().advance(Duration::from_millis(1));
    }
    let last = reserve_one(h, &q).await;
    assert_eq!(last.task.attempt, 3);
    let got = h
        .broker()
        .fail(vec![failure(last.lease.as_ref())])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Ok(FailOutcome::Dead {
            reason: DeadReason::MaxAttempts
        })]
    );
    let dead = get(h, id).await;
    assert_eq!(dead.state, TaskState::Dead);
    assert_eq!(dead.dead_reason, Some(DeadReason::MaxAttempts));
    assert!(dead.finished_at.is_some());
    let stats = stats(h, &q).await;
    assert_eq!(stats.counts.dead, 1);
    assert_eq!(stats.totals.retried, 2);
    assert_eq!(stats.totals.dead.max_attempts, 1);
}

/// The backoff grows by the multiplier but never beyond `backoff_max`.
pub async fn backoff_is_capped_at_backoff_max<H: Harness>(h: &mut H) {
    let q = queue("capped");
    let retry = RetryPolicy {
        max_attempts: 5,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(3),
        backoff_multiplier: 10.0,
        jitter: Jitter::None,
    };
    enqueue_one(h, &q, task("k").retry(retry)).await;
    for wait in [1, 3, 3] {
        let r = reserve_one(h, &q).await;
        let got = h
            .broker()
            .fail(vec![failure(r.lease.as_ref())])
            .await
            .unwrap();
        let run_at = after(h, Duration::from_secs(wait));
        assert_eq!(got, vec![Ok(FailOutcome::Retrying { run_at })]);
        h.clock().advance(Duration::from_secs(wait));
    }
}

/// With full jitter every retry waits between zero and the ceiling (initial × multiplier^n),
/// and tasks that failed together do not all retry at the same moment.
pub async fn full_jitter_backoff_stays_within_the_ceiling_and_spreads<H: Harness>(h: &mut H) {
    let q = queue("jitter");
    let retry = RetryPolicy {
        max_attempts: 3,
        backoff_initial: Duration::from_secs(10),
        backoff_max: Duration::from_secs(100),
        backoff_multiplier: 2.0,
        jitter: Jitter::Full,
    };
    let count = 32;
    enqueue(
        h,
        &q,
        (0..count).map(|_| task("k").retry(retry.clone())).collect(),
    )
    .await;
    for ceiling in [Duration::from_secs(10), Duration::from_secs(20)] {
        let held = reserve(h, &q, count).await;
        assert_eq!(held.len(), count);
        let failures: Vec<Failure> = held.iter().map(|r| failure(r.lease.as_ref())).collect();
        let got = h.broker().fail(failures).await.unwrap();
        let (earliest, latest) = (after(h, Duration::ZERO), after(h, ceiling));
        let mut waits = BTreeSet::new();
        for outcome in got {
            match outcome {
                Ok(FailOutcome::Retrying { run_at }) => {
                    assert!(
                        earliest <= run_at && run_at <= latest,
                        "retry at {run_at} outside [{earliest}, {latest}]"
                    );
                    waits.insert(run_at);
                }
                other => panic!("expected a retry, got {other:?}"),
            }
        }
        assert!(
            waits.len() > 1,
            "{count} tasks that failed together all retry at {waits:?}: no jitter"
        );
        h.clock().advance(ceiling);
    }
}

/// A failure that says when to retry (a downstream's Retry-After) overrides the backoff; on
/// the last attempt it still dead-letters.
pub async fn fail_with_retry_after_waits_the_given_time<H: Harness>(h: &mut H) {
    let q = queue("retry-after");
    let retry = exact_retry(2, Duration::from_secs(1), Duration::from_secs(1));
    let id = enqueue_one(h, &q, task("k").retry(retry)).await;
    let r = reserve_one(h, &q).await;
    let wait = Duration::from_secs(7);
    let got = h
        .broker()
        .fail(vec![Failure {
            retry: RetryDecision::After(wait),
            ..failure(r.lease.as_ref())
        }])
        .await
        .unwrap();
    let run_at = after(h, wait);
    assert_eq!(got, vec![Ok(FailOutcome::Retrying { run_at })]);
    assert_eq!(get(h, id).await.run_at, run_at);

    h.clock().advance(wait);
    let r = reserve_one(h, &q).await;
    let got = h
        .broker()
        .fail(vec![Failure {
            retry: RetryDecision::After(wait),
            ..failure(r.lease.as_ref())
        }])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Ok(FailOutcome::Dead {
            reason: DeadReason::MaxAttempts
        })]
    );
}

/// A failure that says retrying cannot help dead-letters the task at once as a permanent
/// failure, attempts left or not.
pub async fn fail_with_never_dead_letters_as_permanent_failure<H: Harness>(h: &mut H) {
    let q = queue("permanent");
    let id = enqueue_one(h, &q, task("k").max_attempts(5)).await;
    let r = reserve_one(h, &q).await;
    let got = h
        .broker()
        .fail(vec![Failure {
            lease: r.lease.as_ref(),
            error: "card declined".to_owned(),
            retry: RetryDecision::Never,
        }])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Ok(FailOutcome::Dead {
            reason: DeadReason::PermanentFailure
        })]
    );
    let dead = get(h, id).await;
    assert_eq!(dead.state, TaskState::Dead);
    assert_eq!(dead.dead_reason, Some(DeadReason::PermanentFailure));
    assert_eq!(dead.last_error.as_deref(), Some("card declined"));
    assert_eq!(dead.attempt, 1);
    let totals = stats(h, &q).await.totals;
    assert_eq!(totals.dead.permanent_failure, 1);
    assert_eq!(totals.retried, 0);
}

/// The failure's message is kept as the task's last error, cut to the limit.
pub async fn failure_message_is_kept_and_truncated<H: Harness>(h: &mut H) {
    let q = queue("errors");
    let id = enqueue_one(h, &q, task("k")).await;
    let r = reserve_one(h, &q).await;
    let long = "x".repeat(limits::ERROR_LEN_MAX + 100);
    h.broker()
        .fail(vec![Failure {
            error: long,
            ..failure(r.lease.as_ref())
        }])
        .await
        .unwrap();
    let stored = get(h, id).await.last_error.expect("the error is kept");
    assert_eq!(stored, "x".repeat(limits::ERROR_LEN_MAX));
}

/// Promote moves a retrying task to ready once its backoff has passed, keeping its run-at.
pub async fn retrying_task_is_promoted_when_its_backoff_passes<H: Harness>(h: &mut H) {
    let q = queue("retry-promote");
    let retry = exact_retry(3, Duration::from_secs(1), Duration::from_secs(1));
    let id = enqueue_one(h, &q, task("k").retry(retry)).await;
    let r = reserve_one(h, &q).await;
    h.broker()
        .fail(vec![failure(r.lease.as_ref())])
        .await
        .unwrap();
    let run_at = after(h, Duration::from_secs(1));
    assert_eq!(stats(h, &q).await.counts.retrying, 1);
    h.clock().advance(Duration::from_secs(1));
    assert_eq!(h.broker().promote().await.unwrap(), 1);
    let ready = get(h, id).await;
    assert_eq!(ready.state, TaskState::Ready);
    assert_eq!(ready.run_at, run_at);
    let counts = stats(h, &q).await.counts;
    assert_eq!((counts.retrying, counts.ready), (0, 1));
}
