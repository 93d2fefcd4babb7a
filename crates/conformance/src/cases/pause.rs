//! Pause and resume: a paused queue hands out nothing but keeps accepting tasks.

use std::time::Duration;

use floodway_core::{Broker, TaskState};

use super::{enqueue, enqueue_one, get, queue, reserve_ids, reserve_one, stats, task};
use crate::Harness;

/// While paused, reserve yields nothing and enqueue still works; resume hands out the tasks
/// in their usual order.
pub async fn paused_queue_yields_nothing_and_still_accepts_enqueues<H: Harness>(h: &mut H) {
    let q = queue("pausable");
    let first = enqueue_one(h, &q, task("a")).await;
    h.broker().pause(&q).await.unwrap();
    assert!(stats(h, &q).await.config.paused);
    let second = enqueue_one(h, &q, task("b")).await;
    assert!(reserve_ids(h, &q, 10).await.is_empty());
    assert_eq!(stats(h, &q).await.counts.ready, 2);

    h.broker().resume(&q).await.unwrap();
    assert!(!stats(h, &q).await.config.paused);
    assert_eq!(reserve_ids(h, &q, 10).await, vec![first, second]);
}

/// Pausing does not take tasks away from workers that hold them: they can still extend and
/// ack.
pub async fn pause_leaves_leased_tasks_to_their_workers<H: Harness>(h: &mut H) {
    let q = queue("pause-running");
    let ids = enqueue(h, &q, vec![task("a"), task("b")]).await;
    let r = reserve_one(h, &q).await;
    h.broker().pause(&q).await.unwrap();
    let extended = h
        .broker()
        .extend(&[r.lease.as_ref()], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(extended[0].is_ok(), "{extended:?}");
    assert_eq!(
        h.broker().ack(&[r.lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(get(h, ids[0]).await.state, TaskState::Completed);
    assert_eq!(get(h, ids[1]).await.state, TaskState::Ready);
}
