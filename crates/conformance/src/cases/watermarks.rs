//! Queue-depth watermarks: above the high watermark enqueue is refused with a retryable
//! `Overloaded`, until the queue is back at or below the low watermark (hysteresis).

use floodway_core::{Broker, BrokerError, QueueConfig, QueueName, Watermarks};

use super::{configure, enqueue, list_queue, queue, reserve, snapshot, stats, task};
use crate::Harness;

async fn marked<H: Harness>(h: &H, high: u64, low: u64) -> QueueName {
    let q = queue("marked");
    configure(
        h,
        &q,
        QueueConfig {
            watermarks: Some(Watermarks { high, low }),
            ..QueueConfig::default()
        },
    )
    .await;
    q
}

/// Asserts that `result` is an `Overloaded` refusal of `q` at `length` with the marks.
fn assert_overloaded<T: std::fmt::Debug>(
    result: Result<T, BrokerError>,
    q: &QueueName,
    length: u64,
    (high, low): (u64, u64),
) {
    match result {
        Err(err @ BrokerError::Overloaded { .. }) => {
            assert!(err.is_retryable());
            assert!(err.retry_after().is_some_and(|d| !d.is_zero()));
            let BrokerError::Overloaded {
                queue,
                length: got_length,
                high: got_high,
                low: got_low,
                ..
            } = err
            else {
                unreachable!()
            };
            assert_eq!(
                (queue, got_length, got_high, got_low),
                (q.clone(), length, high, low)
            );
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
}

/// Refused above the high watermark, and still refused on the way down until the low one;
/// each refusal is counted and changes nothing else.
pub async fn enqueue_above_the_high_watermark_is_refused_until_down_to_the_low<H: Harness>(
    h: &mut H,
) {
    let q = marked(h, 5, 2).await;
    enqueue(h, &q, (0..5).map(|_| task("t")).collect()).await;
    assert!(
        !stats(h, &q).await.refusing,
        "at the high watermark, not above"
    );
    let before = snapshot(h).await.without_refusal_counts();
    assert_overloaded(
        h.broker().enqueue(&q, vec![task("over")]).await,
        &q,
        5,
        (5, 2),
    );
    assert_eq!(snapshot(h).await.without_refusal_counts(), before);
    assert!(stats(h, &q).await.refusing);

    for reservation in reserve(h, &q, 2).await {
        h.broker().ack(&[reservation.lease.as_ref()]).await.unwrap();
    }
    assert!(
        stats(h, &q).await.refusing,
        "3 waiting: below high, above low"
    );
    assert_overloaded(
        h.broker().enqueue(&q, vec![task("still")]).await,
        &q,
        3,
        (5, 2),
    );
    let one = reserve(h, &q, 1).await;
    h.broker().ack(&[one[0].lease.as_ref()]).await.unwrap();
    assert!(!stats(h, &q).await.refusing, "at the low watermark");
    enqueue(h, &q, vec![task("accepted")]).await;
    let totals = stats(h, &q).await.totals;
    assert_eq!(totals.rejected_overloaded, 2);
    assert_eq!(totals.rejected_full, 0);
}

/// A batch that would cross the high watermark is refused whole: no task of it is stored and
/// its idempotency keys stay unused.
pub async fn a_batch_crossing_the_high_watermark_is_refused_whole<H: Harness>(h: &mut H) {
    let q = marked(h, 5, 2).await;
    enqueue(h, &q, (0..3).map(|_| task("t")).collect()).await;
    let batch = vec![task("a").idempotency_key("k"), task("b"), task("c")];
    assert_overloaded(h.broker().enqueue(&q, batch).await, &q, 3, (5, 2));
    assert_eq!(list_queue(h, &q).await.len(), 3);
    for reservation in reserve(h, &q, 3).await {
        h.broker().ack(&[reservation.lease.as_ref()]).await.unwrap();
    }
    let answers = h
        .broker()
        .enqueue(&q, vec![task("a").idempotency_key("k")])
        .await
        .unwrap();
    assert!(
        !answers[0].duplicate,
        "the refused batch left no key behind"
    );
}

/// A batch of duplicates creates nothing, so it is answered even while the queue refuses.
pub async fn duplicates_alone_are_never_refused_by_the_watermark<H: Harness>(h: &mut H) {
    let q = marked(h, 2, 1).await;
    let first = enqueue(h, &q, vec![task("a").idempotency_key("k"), task("b")]).await;
    assert_overloaded(h.broker().enqueue(&q, vec![task("c")]).await, &q, 2, (2, 1));
    let answers = h
        .broker()
        .enqueue(&q, vec![task("a").idempotency_key("k")])
        .await
        .expect("a duplicate is answered while refusing");
    assert_eq!((answers[0].id, answers[0].duplicate), (first[0], true));
}
