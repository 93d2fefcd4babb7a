//! Side effects recorded on a task under its lease: kept through retries and lease expiry,
//! fenced like extend, bounded in number.

use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, EffectRecord, LeaseRef, QueueConfig, Refusal, ReserveRequest, limits,
};

use super::leases::failure;
use super::{
    configure, enqueue_one, exact_retry, get, queue, reserve_one, reserve_with, snapshot, stats,
    task,
};
use crate::Harness;

fn effect(lease: LeaseRef, key: &str, result: &str) -> EffectRecord {
    EffectRecord {
        lease,
        key: key.to_owned(),
        result: result.to_owned(),
    }
}

/// An effect recorded in one attempt comes back with the task in the next, after a failure
/// and after a lease expiry; recording a key again replaces its result.
pub async fn recorded_effects_come_back_with_the_task_in_later_attempts<H: Harness>(h: &mut H) {
    let q = queue("effects");
    configure(
        h,
        &q,
        QueueConfig {
            retry: exact_retry(5, Duration::from_secs(1), Duration::from_secs(1)),
            ..QueueConfig::default()
        },
    )
    .await;
    let id = enqueue_one(h, &q, task("charge")).await;
    let first = reserve_one(h, &q).await;
    assert!(first.task.effects.is_empty());
    let results = h
        .broker()
        .record_effects(vec![
            effect(first.lease.as_ref(), "charge", "\"receipt-1\""),
            effect(first.lease.as_ref(), "email", "sent"),
            effect(first.lease.as_ref(), "email", "sent twice"),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);
    assert_eq!(get(h, id).await.effects["email"], "sent twice");
    h.broker()
        .fail(vec![failure(first.lease.as_ref())])
        .await
        .unwrap();
    h.clock().advance(Duration::from_secs(1));
    let second = reserve_with(h, ReserveRequest::new(q.clone(), 1, Duration::from_secs(1)))
        .await
        .remove(0);
    assert_eq!(second.task.effects["charge"], "\"receipt-1\"");
    assert_eq!(second.task.effects.len(), 2);
    h.clock().advance(Duration::from_secs(1));
    let third = reserve_one(h, &q).await;
    assert_eq!(third.task.attempt, 3);
    assert_eq!(
        third.task.effects["charge"], "\"receipt-1\"",
        "kept through lease expiry"
    );
    assert_eq!(stats(h, &q).await.totals.effects_recorded, 3);
}

/// A worker whose lease expired, or was superseded, records nothing.
pub async fn a_stale_or_expired_lease_cannot_record_an_effect<H: Harness>(h: &mut H) {
    let q = queue("effects");
    let id = enqueue_one(h, &q, task("charge")).await;
    let zombie = reserve_with(h, ReserveRequest::new(q.clone(), 1, Duration::from_secs(1)))
        .await
        .remove(0);
    h.clock().advance(Duration::from_secs(1));
    let before = snapshot(h).await.without_refusal_counts();
    let refused = h
        .broker()
        .record_effects(vec![effect(zombie.lease.as_ref(), "charge", "late")])
        .await
        .unwrap();
    assert!(matches!(refused[0], Err(Refusal::LeaseExpired { .. })));
    assert_eq!(snapshot(h).await.without_refusal_counts(), before);
    let current = reserve_one(h, &q).await;
    let refused = h
        .broker()
        .record_effects(vec![effect(zombie.lease.as_ref(), "charge", "late")])
        .await
        .unwrap();
    assert!(matches!(refused[0], Err(Refusal::StaleFence { .. })));
    assert!(get(h, id).await.effects.is_empty());
    let totals = stats(h, &q).await.totals;
    assert_eq!((totals.stale_refused, totals.effects_recorded), (2, 0));
    h.broker().ack(&[current.lease.as_ref()]).await.unwrap();
}

/// Bad effects are refused whole: an empty or oversized key or result, or more keys on a
/// task than the limit allows.
pub async fn invalid_or_too_many_effects_are_refused_whole<H: Harness>(h: &mut H) {
    let q = queue("effects");
    let id = enqueue_one(h, &q, task("charge")).await;
    let r = reserve_one(h, &q).await;
    let lease = r.lease.as_ref();
    let full: Vec<EffectRecord> = (0..limits::EFFECTS_MAX)
        .map(|i| effect(lease, &format!("k{i}"), "done"))
        .collect();
    h.broker().record_effects(full).await.unwrap();
    let before = get(h, id).await.effects;

    let mut over = vec![effect(lease, "k0", "replaced")];
    over.push(effect(lease, "one-too-many", "x"));
    let err = h.broker().record_effects(over).await.unwrap_err();
    assert!(
        matches!(
            err,
            BrokerError::Invalid {
                field: "effects",
                ..
            }
        ),
        "{err:?}"
    );
    let err = h
        .broker()
        .record_effects(vec![effect(lease, "", "x")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, BrokerError::Invalid { field: "key", .. }),
        "{err:?}"
    );
    let big = "x".repeat(limits::EFFECT_RESULT_MAX + 1);
    let err = h
        .broker()
        .record_effects(vec![effect(lease, "k0", &big)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BrokerError::Invalid {
                field: "result",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(get(h, id).await.effects, before, "nothing was recorded");
    let ok = h
        .broker()
        .record_effects(vec![effect(lease, "k0", "replaced")])
        .await
        .unwrap();
    assert_eq!(ok, vec![Ok(())], "replacing a key does not add one");
}
