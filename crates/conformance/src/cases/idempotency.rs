//! Idempotency keys: an enqueue that repeats a key within the queue's window creates nothing
//! and answers with the first task's id.

use std::time::Duration;

use floodway_core::{Broker, Enqueued, QueueConfig, TaskState};

use super::{configure, enqueue_one, get, list_queue, queue, reserve_one, stats, task};
use crate::Harness;

/// A second enqueue with the same key inside the window returns the first task's id with
/// `duplicate: true` and stores nothing new.
pub async fn duplicate_key_within_window_returns_the_first_task_id<H: Harness>(h: &mut H) {
    let q = queue("idempotent");
    let first = enqueue_one(h, &q, task("charge").idempotency_key("order-1")).await;
    h.clock().advance(Duration::from_secs(30 * 60));
    let mut again = task("charge").idempotency_key("order-1");
    again.payload = br#"{"different":true}"#.to_vec();
    let got = h.broker().enqueue(&q, vec![again]).await.unwrap();
    assert_eq!(
        got,
        vec![Enqueued {
            id: first,
            duplicate: true
        }]
    );
    let tasks = list_queue(h, &q).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].payload, b"{}", "the first task is untouched");
    let totals = stats(h, &q).await.totals;
    assert_eq!((totals.enqueued, totals.deduplicated), (1, 1));
}

/// The key matches whatever state its first task is in now, completed included; the
/// duplicate does not revive it.
pub async fn duplicate_key_matches_whatever_state_the_first_task_is_in<H: Harness>(h: &mut H) {
    let q = queue("idempotent-done");
    let first = enqueue_one(h, &q, task("k").idempotency_key("once")).await;
    let r = reserve_one(h, &q).await;
    h.broker().ack(&[r.lease.as_ref()]).await.unwrap();
    let got = h
        .broker()
        .enqueue(&q, vec![task("k").idempotency_key("once")])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Enqueued {
            id: first,
            duplicate: true
        }]
    );
    assert_eq!(get(h, first).await.state, TaskState::Completed);
    assert_eq!(list_queue(h, &q).await.len(), 1);
}

/// Once the window has passed since the key's first use, the key creates a new task, which
/// starts a new window; duplicates inside a window do not extend it.
pub async fn key_creates_a_new_task_once_the_window_has_passed<H: Harness>(h: &mut H) {
    let q = queue("idempotent-window");
    let window = Duration::from_secs(10);
    configure(
        h,
        &q,
        QueueConfig {
            idempotency_window: window,
            ..QueueConfig::default()
        },
    )
    .await;
    let keyed = || vec![task("k").idempotency_key("k-1")];
    let first = enqueue_one(h, &q, keyed().remove(0)).await;
    h.clock().advance(window - Duration::from_millis(1));
    let dup = h.broker().enqueue(&q, keyed()).await.unwrap();
    assert_eq!(
        dup,
        vec![Enqueued {
            id: first,
            duplicate: true
        }]
    );
    h.clock().advance(Duration::from_millis(1));
    let second = h.broker().enqueue(&q, keyed()).await.unwrap();
    assert!(!second[0].duplicate, "the window has passed");
    assert_ne!(second[0].id, first);
    h.clock().advance(window / 2);
    let dup = h.broker().enqueue(&q, keyed()).await.unwrap();
    assert_eq!(
        dup,
        vec![Enqueued {
            id: second[0].id,
            duplicate: true
        }]
    );
    assert_eq!(list_queue(h, &q).await.len(), 2);
}

/// Within one batch, the second use of a key is a duplicate of the first.
pub async fn second_use_of_a_key_in_one_batch_is_a_duplicate_of_the_first<H: Harness>(h: &mut H) {
    let q = queue("idempotent-batch");
    let got = h
        .broker()
        .enqueue(
            &q,
            vec![
                task("a").idempotency_key("same"),
                task("b"),
                task("c").idempotency_key("same"),
            ],
        )
        .await
        .unwrap();
    assert!(!got[0].duplicate && !got[1].duplicate);
    assert_eq!(
        got[2],
        Enqueued {
            id: got[0].id,
            duplicate: true
        }
    );
    let kinds: Vec<String> = list_queue(h, &q)
        .await
        .into_iter()
        .map(|t| t.kind)
        .collect();
    assert_eq!(kinds, ["a", "b"]);
    assert_eq!(stats(h, &q).await.totals.deduplicated, 1);
}

/// A key deduplicates within its queue only.
pub async fn idempotency_keys_are_per_queue<H: Harness>(h: &mut H) {
    let (a, b) = (queue("keys-a"), queue("keys-b"));
    let in_a = enqueue_one(h, &a, task("k").idempotency_key("shared")).await;
    let in_b = enqueue_one(h, &b, task("k").idempotency_key("shared")).await;
    assert_ne!(in_a, in_b);
    assert_eq!(list_queue(h, &b).await.len(), 1);
}
