//! Bad input: every invalid call is refused as a whole with the error that names the
//! problem, and changes nothing.

use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, DeadReason, DeadSelector, Fence, LeaseRef, NewTask, QueueConfig,
    QueueName, Refusal, ReserveRequest, RetryPolicy, TaskFilter, TaskState, Timestamp, limits,
};

use super::leases::{UNKNOWN_ID, failure};
use super::{LEASE, enqueue_one, get, queue, reserve_one, snapshot, task};
use crate::Harness;

/// The field an error names, if it is [`BrokerError::Invalid`].
fn invalid_field<T: std::fmt::Debug>(result: Result<T, BrokerError>) -> &'static str {
    match result {
        Err(BrokerError::Invalid { field, .. }) => field,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

/// A payload over the limit refuses its whole batch with `PayloadTooLarge`, in a new queue
/// (which is not created) or an existing one; a payload of exactly the limit is accepted.
pub async fn oversized_payload_is_refused_and_changes_nothing<H: Harness>(h: &mut H) {
    let oversized = NewTask::new("k", vec![b'x'; limits::PAYLOAD_BYTES_MAX + 1]);
    let expected = BrokerError::PayloadTooLarge {
        size: limits::PAYLOAD_BYTES_MAX + 1,
        max: limits::PAYLOAD_BYTES_MAX,
    };
    let fresh = queue("never-created");
    let got = h
        .broker()
        .enqueue(&fresh, vec![task("fine"), oversized.clone()])
        .await;
    assert_eq!(got, Err(expected.clone()));
    assert_eq!(
        h.broker().stats(Some(&fresh)).await,
        Err(BrokerError::UnknownQueue(fresh.clone())),
        "a refused enqueue does not create its queue"
    );

    let q = queue("existing");
    enqueue_one(h, &q, task("first")).await;
    let before = snapshot(h).await;
    let got = h.broker().enqueue(&q, vec![task("fine"), oversized]).await;
    assert_eq!(got, Err(expected));
    assert_eq!(snapshot(h).await, before);

    let largest = NewTask::new("k", vec![b'x'; limits::PAYLOAD_BYTES_MAX]);
    let id = enqueue_one(h, &q, largest).await;
    assert_eq!(get(h, id).await.payload.len(), limits::PAYLOAD_BYTES_MAX);
}

/// Every batch call refuses a batch over the limit as a whole with `BatchTooLarge`, before
/// looking at its items; reserve refuses such a `max` as invalid.
pub async fn batch_too_large_is_refused_by_every_batch_call<H: Harness>(h: &mut H) {
    let q = queue("batches");
    let id = enqueue_one(h, &q, task("k")).await;
    let r = reserve_one(h, &q).await;
    let before = snapshot(h).await;
    let size = limits::BATCH_SIZE_MAX + 1;
    let too_large = Err::<(), _>(BrokerError::BatchTooLarge {
        size,
        max: limits::BATCH_SIZE_MAX,
    });
    let leases = vec![r.lease.as_ref(); size];
    let ids = vec![id; size];
    let b = h.broker();

    let tasks = (0..size).map(|_| task("k")).collect();
    assert_eq!(b.enqueue(&q, tasks).await.map(|_| ()), too_large);
    assert_eq!(b.ack(&leases).await.map(|_| ()), too_large);
    let failures = leases.iter().map(|l| failure(*l)).collect();
    assert_eq!(b.fail(failures).await.map(|_| ()), too_large);
    assert_eq!(b.extend(&leases, LEASE).await.map(|_| ()), too_large);
    assert_eq!(b.release(&leases).await.map(|_| ()), too_large);
    assert_eq!(b.cancel(&ids).await.map(|_| ()), too_large);
    let selector = DeadSelector::Ids(ids.clone());
    assert_eq!(b.replay(selector.clone()).await.map(|_| ()), too_large);
    assert_eq!(b.purge(selector).await.map(|_| ()), too_large);
    let request = ReserveRequest::new(q.clone(), size, LEASE);
    assert_eq!(invalid_field(b.reserve(request).await), "max");
    assert_eq!(snapshot(h).await, before);
}

/// Each invalid field of a task refuses the whole batch with `Invalid` naming that field.
pub async fn invalid_task_fields_are_refused_by_name_and_change_nothing<H: Harness>(h: &mut H) {
    let q = queue("validated");
    enqueue_one(h, &q, task("existing")).await;
    let before = snapshot(h).await;
    let mut too_many_headers = task("k");
    for i in 0..=limits::HEADERS_MAX {
        too_many_headers = too_many_headers.header(format!("h{i}"), "v");
    }
    let cases: Vec<(NewTask, &str)> = vec![
        (task("send email"), "kind"),
        (task(""), "kind"),
        (task("k").priority(limits::PRIORITY_MAX + 1), "priority"),
        (
            task("k")
                .delay(Duration::from_secs(1))
                .run_at(Timestamp::ZERO),
            "run_at",
        ),
        (task("k").delay(limits::SCHEDULE_HORIZON_MAX * 2), "delay"),
        (task("k").ttl(Duration::ZERO), "ttl"),
        (task("k").idempotency_key(""), "idempotency_key"),
        (
            task("k").partition_key("p".repeat(limits::KEY_LEN_MAX + 1)),
            "partition_key",
        ),
        (task("k").max_attempts(0), "max_attempts"),
        (task("k").timeout(Duration::ZERO), "timeout"),
        (too_many_headers, "headers"),
    ];
    for (bad, field) in cases {
        let got = h.broker().enqueue(&q, vec![task("fine"), bad]).await;
        assert_eq!(invalid_field(got), field);
    }
    assert_eq!(snapshot(h).await, before);
    assert_eq!(
        invalid_field(QueueName::new("orders/eu")),
        "queue",
        "queue names are checked where they are made"
    );
}

/// Each invalid field of a reserve request is refused by name, and no task is leased.
pub async fn invalid_reserve_request_is_refused_by_name_and_changes_nothing<H: Harness>(h: &mut H) {
    let q = queue("reserve-validated");
    let id = enqueue_one(h, &q, task("k")).await;
    let before = snapshot(h).await;
    let request = |max, lease| ReserveRequest::new(q.clone(), max, lease);
    let cases = vec![
        (request(0, LEASE), "max"),
        (request(limits::BATCH_SIZE_MAX + 1, LEASE), "max"),
        (
            request(1, limits::LEASE_DURATION_MIN - Duration::from_millis(1)),
            "lease",
        ),
        (
            request(1, limits::LEASE_DURATION_MAX + Duration::from_secs(1)),
            "lease",
        ),
        (
            request(1, LEASE).wait(limits::RESERVE_WAIT_MAX + Duration::from_secs(1)),
            "wait",
        ),
        (
            request(1, LEASE).worker("w".repeat(limits::KEY_LEN_MAX + 1)),
            "worker",
        ),
    ];
    for (bad, field) in cases {
        assert_eq!(invalid_field(h.broker().reserve(bad).await), field);
    }
    assert_eq!(snapshot(h).await, before);
    assert_eq!(get(h, id).await.state, TaskState::Ready);
}

/// Extend refuses a duration outside the lease limits as a whole, and the lease is kept.
pub async fn invalid_lease_duration_on_extend_is_refused_and_changes_nothing<H: Harness>(
    h: &mut H,
) {
    let q = queue("extend-validated");
    enqueue_one(h, &q, task("k")).await;
    let r = reserve_one(h, &q).await;
    let before = snapshot(h).await;
    for duration in [
        Duration::from_millis(50),
        limits::LEASE_DURATION_MAX + Duration::from_secs(1),
    ] {
        let got = h.broker().extend(&[r.lease.as_ref()], duration).await;
        assert_eq!(invalid_field(got), "lease");
    }
    assert_eq!(snapshot(h).await, before);
}

/// Unknown tasks and queues are named in the error of calls about them (get, stats, pause,
/// resume), and refused item by item in batch calls; replay and purge skip them.
pub async fn unknown_task_and_queue_are_refused<H: Harness>(h: &mut H) {
    let q = queue("present");
    enqueue_one(h, &q, task("k")).await;
    let before = snapshot(h).await;
    let b = h.broker();
    assert_eq!(
        b.get(UNKNOWN_ID).await,
        Err(BrokerError::UnknownTask(UNKNOWN_ID))
    );
    let absent = queue("absent");
    assert_eq!(
        b.stats(Some(&absent)).await,
        Err(BrokerError::UnknownQueue(absent.clone()))
    );
    assert_eq!(
        b.pause(&absent).await,
        Err(BrokerError::UnknownQueue(absent.clone()))
    );
    assert_eq!(
        b.resume(&absent).await,
        Err(BrokerError::UnknownQueue(absent.clone()))
    );
    let lease = LeaseRef {
        task_id: UNKNOWN_ID,
        fence: Fence(1),
    };
    let unknown = Err(Refusal::UnknownTask);
    assert_eq!(b.ack(&[lease]).await, Ok(vec![unknown]));
    assert_eq!(b.release(&[lease]).await, Ok(vec![unknown]));
    assert_eq!(b.cancel(&[UNKNOWN_ID]).await, Ok(vec![unknown]));
    let failed = b.fail(vec![failure(lease)]).await.unwrap();
    assert_eq!(failed, vec![Err(Refusal::UnknownTask)]);
    let extended = b.extend(&[lease], LEASE).await.unwrap();
    assert_eq!(extended, vec![Err(Refusal::UnknownTask)]);
    let ids = DeadSelector::Ids(vec![UNKNOWN_ID]);
    assert_eq!(b.replay(ids.clone()).await, Ok(0));
    assert_eq!(b.purge(ids).await, Ok(0));
    assert_eq!(snapshot(h).await, before);
}

/// Invalid list filters, queue configurations and dead-letter selectors are refused by name;
/// a refused configure does not create its queue.
pub async fn invalid_list_filter_config_and_selector_are_refused<H: Harness>(h: &mut H) {
    let q = queue("present");
    enqueue_one(h, &q, task("k")).await;
    let before = snapshot(h).await;
    let b = h.broker();

    for (filter, field) in [
        (TaskFilter::default(), "limit"),
        (
            TaskFilter {
                limit: limits::LIST_LIMIT_MAX + 1,
                ..TaskFilter::default()
            },
            "limit",
        ),
        (
            TaskFilter {
                state: Some(TaskState::Ready),
                dead_reason: Some(DeadReason::Expired),
                limit: 10,
                ..TaskFilter::default()
            },
            "dead_reason",
        ),
    ] {
        assert_eq!(invalid_field(b.list(filter).await), field);
    }

    let fresh = queue("misconfigured");
    for (config, field) in [
        (
            QueueConfig {
                length_max: Some(0),
                ..QueueConfig::default()
            },
            "length_max",
        ),
        (
            QueueConfig {
                retry: RetryPolicy::attempts(0),
                ..QueueConfig::default()
            },
            "retry.max_attempts",
        ),
        (
            QueueConfig {
                idempotency_window: limits::IDEMPOTENCY_WINDOW_MAX * 2,
                ..QueueConfig::default()
            },
            "idempotency_window",
        ),
    ] {
        assert_eq!(
            invalid_field(b.configure(&fresh, config.clone()).await),
            field
        );
        assert_eq!(invalid_field(b.configure(&q, config).await), field);
    }
    assert_eq!(
        b.stats(Some(&fresh)).await,
        Err(BrokerError::UnknownQueue(fresh.clone()))
    );

    for limit in [0, limits::BATCH_SIZE_MAX + 1] {
        let selector = DeadSelector::Matching {
            queue: None,
            reason: None,
            limit,
        };
        assert_eq!(invalid_field(b.replay(selector.clone()).await), "limit");
        assert_eq!(invalid_field(b.purge(selector).await), "limit");
    }
    assert_eq!(snapshot(h).await, before);
}
