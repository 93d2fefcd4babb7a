//! The system clock stepped under the embedded broker. The broker reads time through
//! [`floodway_core::SystemClock`]: the wall clock (what survives a restart: lease expiries and
//! schedules are stored as wall times), made monotonic. These tests put the same rule
//! ([`MonotonicClock`]) over a wall clock they step, and check what the broker then does:
//!
//! - stepped **back**: the broker's time stands still until the wall clock catches up; leases
//!   last longer by the step, nothing expires or falls due early, ids keep growing;
//! - stepped **forward** by `d`: everything due within `d` happens at once (leases expire,
//!   scheduled tasks fall due), so a task may run again (at least once), but the worker that
//!   lost its lease can no longer complete it (its ack is refused), so it completes once;
//! - stepped back **across a restart** (the monotonic floor is not stored): time restarts at
//!   the wall clock; leases and schedules stored before wait until the wall clock reaches them
//!   (longer, never shorter), and ids still grow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodway_core::{
    Broker, Fence, MonotonicClock, NewTask, QueueName, Refusal, ReserveRequest, TaskState,
    Timestamp,
};
use floodway_embedded::{EmbeddedBroker, Options};

const T0: u64 = 1_800_000_000_000;
const LEASE: Duration = Duration::from_secs(30);
const MINUTE: u64 = 60_000;

/// A wall clock the test steps, and the broker's monotonic clock over it.
fn stepped_wall() -> (Arc<AtomicU64>, Options) {
    let wall = Arc::new(AtomicU64::new(T0));
    let source = wall.clone();
    let clock = MonotonicClock::new(move || Timestamp::from_millis(source.load(Ordering::SeqCst)));
    let options = Options {
        clock: Arc::new(clock),
        maintenance_interval: None,
        ..Options::default()
    };
    (wall, options)
}

fn queue() -> QueueName {
    QueueName::new("clock").unwrap()
}

#[tokio::test]
async fn a_clock_stepped_back_makes_time_stand_still_and_expires_nothing_early() {
    let dir = tempfile::tempdir().unwrap();
    let (wall, options) = stepped_wall();
    let broker = EmbeddedBroker::open(dir.path(), options).unwrap();
    let first = broker
        .enqueue(
            &queue(),
            vec![
                NewTask::new("k", "{}"),
                NewTask::new("k", "{}").delay(Duration::from_secs(10)),
            ],
        )
        .await
        .unwrap();
    let held = broker
        .reserve(ReserveRequest::new(queue(), 1, LEASE))
        .await
        .unwrap();
    assert_eq!(
        held[0].lease.expires_at,
        Timestamp::from_millis(T0 + 30_000)
    );

    // Ten minutes back, then forty seconds of wall time pass: the broker saw no time pass.
    wall.store(T0 - 10 * MINUTE + 40_000, Ordering::SeqCst);
    assert_eq!(broker.reap().await.unwrap(), 0, "no lease expired early");
    assert_eq!(
        broker.promote().await.unwrap(),
        0,
        "no scheduled task fell due early"
    );
    let later = broker
        .enqueue(&queue(), vec![NewTask::new("k", "{}")])
        .await
        .unwrap();
    assert!(later[0].id > first[1].id, "ids keep growing");
    assert_eq!(
        broker.get(later[0].id).await.unwrap().created_at,
        Timestamp::from_millis(T0)
    );
    let acked = broker.ack(&[held[0].lease.as_ref()]).await.unwrap();
    assert_eq!(acked, vec![Ok(())], "the lease holder completes its task");

    // Once the wall clock is past the old time, time moves again.
    wall.store(T0 + 11_000, Ordering::SeqCst);
    assert_eq!(broker.promote().await.unwrap(), 1);
    broker.close().await;
}

#[tokio::test]
async fn a_clock_stepped_forward_expires_leases_at_once_but_never_completes_a_task_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (wall, options) = stepped_wall();
    let broker = EmbeddedBroker::open(dir.path(), options).unwrap();
    let ids = broker
        .enqueue(
            &queue(),
            vec![
                NewTask::new("k", "{}"),
                NewTask::new("k", "{}").delay(Duration::from_secs(120)),
            ],
        )
        .await
        .unwrap();
    let first = broker
        .reserve(ReserveRequest::new(queue(), 1, LEASE).worker("a"))
        .await
        .unwrap();
    assert_eq!(first[0].task.id, ids[0].id);

    // Ten minutes forward: worker a's 30-second lease is over at once, and the task delayed
    // by two minutes is due.
    wall.store(T0 + 10 * MINUTE, Ordering::SeqCst);
    let second = broker
        .reserve(ReserveRequest::new(queue(), 2, LEASE).worker("b"))
        .await
        .unwrap();
    assert_eq!(second.len(), 2, "the expired task and the due one");
    let again = second.iter().find(|r| r.task.id == ids[0].id).unwrap();
    assert_eq!(again.lease.fence, Fence(2));
    let refused = broker.ack(&[first[0].lease.as_ref()]).await.unwrap();
    assert!(
        matches!(refused[0], Err(Refusal::StaleFence { .. })),
        "worker a's late ack is refused: {refused:?}"
    );
    let leases: Vec<_> = second.iter().map(|r| r.lease.as_ref()).collect();
    assert!(broker.ack(&leases).await.unwrap().iter().all(Result::is_ok));
    let task = broker.get(ids[0].id).await.unwrap();
    assert_eq!(task.state, TaskState::Completed);
    let totals = broker.stats(Some(&queue())).await.unwrap()[0].totals;
    assert_eq!(totals.completed, 2, "each task completed once");
    assert_eq!(
        totals.reserved, 3,
        "one task ran twice: at least once, not exactly once"
    );
    broker.close().await;
}

#[tokio::test]
async fn a_clock_stepped_back_across_a_restart_keeps_leases_and_ids_safe() {
    let dir = tempfile::tempdir().unwrap();
    let (wall, options) = stepped_wall();
    let broker = EmbeddedBroker::open(dir.path(), options).unwrap();
    let before = broker
        .enqueue(&queue(), vec![NewTask::new("k", "{}")])
        .await
        .unwrap();
    let held = broker
        .reserve(ReserveRequest::new(queue(), 1, LEASE))
        .await
        .unwrap();
    broker.close().await;

    // The machine comes back an hour in the past; the monotonic floor died with the process.
    let (wall_after, options) = stepped_wall();
    wall_after.store(T0 - 60 * MINUTE, Ordering::SeqCst);
    drop(wall);
    let broker = EmbeddedBroker::open(dir.path(), options).unwrap();
    let after = broker
        .enqueue(&queue(), vec![NewTask::new("k", "{}")])
        .await
        .unwrap();
    assert!(
        after[0].id > before[0].id,
        "ids keep growing across the step"
    );
    // The old lease is not over until the wall clock reaches its expiry: it lasts an hour
    // longer, never shorter.
    wall_after.store(T0 - 60 * MINUTE + 31_000, Ordering::SeqCst);
    assert_eq!(broker.reap().await.unwrap(), 0);
    wall_after.store(T0 + 31_000, Ordering::SeqCst);
    assert_eq!(broker.reap().await.unwrap(), 1);
    let refused = broker.ack(&[held[0].lease.as_ref()]).await.unwrap();
    assert!(
        refused[0].is_err(),
        "the lease from before the restart is over: {refused:?}"
    );
    broker.close().await;
}
