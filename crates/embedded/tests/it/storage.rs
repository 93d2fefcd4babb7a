//! Durability, recovery and compaction of the embedded broker's data directory.

use std::sync::Arc;
use std::time::Duration;

use floodway_core::{
    Broker, ManualClock, NewTask, QueueConfig, QueueName, ReserveRequest, TaskFilter, TaskState,
    Timestamp,
};
use floodway_embedded::{Durability, EmbeddedBroker, OpenError, Options};

fn options(clock: &ManualClock) -> Options {
    Options {
        clock: Arc::new(clock.clone()),
        maintenance_interval: None,
        ..Options::default()
    }
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_millis(1_795_000_000_000))
}

fn queue() -> QueueName {
    QueueName::new("storage").unwrap()
}

async fn all_tasks(broker: &EmbeddedBroker) -> Vec<floodway_core::Task> {
    let mut tasks = Vec::new();
    let mut after = None;
    loop {
        let page = broker
            .list(TaskFilter {
                after,
                limit: 1000,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        tasks.extend(page);
    }
    tasks
}

#[tokio::test]
async fn compaction_keeps_every_task_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let small_snapshots = Options {
        compaction_bytes_min: 16 * 1024,
        ..options(&clock)
    };
    let broker = EmbeddedBroker::open(dir.path(), small_snapshots.clone()).unwrap();
    // Completed tasks are deleted at once, so acked tasks become garbage in the log.
    let config = QueueConfig {
        completed_retain: 0,
        ..QueueConfig::default()
    };
    broker.configure(&queue(), config).await.unwrap();
    // Enough churn to compact several times: enqueue, reserve and ack most tasks.
    for round in 0..20 {
        let batch = (0..50)
            .map(|i| NewTask::new("k", format!("{{\"round\":{round},\"i\":{i}}}")))
            .collect();
        broker.enqueue(&queue(), batch).await.unwrap();
        let held = broker
            .reserve(ReserveRequest::new(queue(), 40, Duration::from_secs(30)))
            .await
            .unwrap();
        let leases: Vec<_> = held.iter().map(|r| r.lease.as_ref()).collect();
        broker.ack(&leases[..30]).await.unwrap();
    }
    let before = all_tasks(&broker).await;
    let stats_before = broker.stats(Some(&queue())).await.unwrap();
    broker.close().await;

    let snapshots = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snapshot-")
        })
        .count();
    assert_eq!(snapshots, 1, "compaction leaves exactly one snapshot");

    let reopened = EmbeddedBroker::open(dir.path(), small_snapshots).unwrap();
    assert!(reopened.recovery_report().snapshot.is_some());
    assert_eq!(all_tasks(&reopened).await, before);
    let stats_after = reopened.stats(Some(&queue())).await.unwrap();
    assert_eq!(stats_after[0].counts, stats_before[0].counts);
    assert_eq!(
        stats_after[0].totals.completed,
        stats_before[0].totals.completed
    );
    reopened.close().await;
}

fn snapshot_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("snapshot-") && !name.ends_with(".tmp")
        })
        .count()
}

/// Compaction rewrites the live state, so it waits until at least half of the files are
/// garbage: a log that holds only live tasks, however large, is left alone, and it is compacted
/// once those tasks are done.
#[tokio::test]
async fn only_garbage_triggers_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let options = Options {
        compaction_bytes_min: 16 * 1024,
        ..options(&clock)
    };
    let broker = EmbeddedBroker::open(dir.path(), options.clone()).unwrap();
    let config = QueueConfig {
        completed_retain: 0,
        ..QueueConfig::default()
    };
    broker.configure(&queue(), config).await.unwrap();
    // About 300 KiB of log, all of it live: far above the minimum, no garbage.
    for batch in 0..2 {
        let tasks = (0..1000)
            .map(|i| NewTask::new("k", format!("{{\"batch\":{batch},\"i\":{i}}}")))
            .collect();
        broker.enqueue(&queue(), tasks).await.unwrap();
    }
    broker.close().await;
    assert_eq!(
        snapshot_count(dir.path()),
        0,
        "a log of live tasks is not compacted"
    );

    let broker = EmbeddedBroker::open(dir.path(), options).unwrap();
    for _ in 0..2 {
        let held = broker
            .reserve(ReserveRequest::new(queue(), 1000, Duration::from_secs(30)))
            .await
            .unwrap();
        let leases: Vec<_> = held.iter().map(|r| r.lease.as_ref()).collect();
        assert!(broker.ack(&leases).await.unwrap().iter().all(Result::is_ok));
    }
    // One more write, so the flusher looks again after the garbage has piled up.
    broker
        .enqueue(&queue(), vec![NewTask::new("k", "{}")])
        .await
        .unwrap();
    broker.close().await;
    assert_eq!(
        snapshot_count(dir.path()),
        1,
        "done tasks are garbage, and compacted"
    );
}

#[tokio::test]
async fn a_torn_final_write_is_cut_off_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let broker = EmbeddedBroker::open(dir.path(), options(&clock)).unwrap();
    let ids = broker
        .enqueue(
            &queue(),
            (0..10).map(|i| NewTask::new("k", format!("{i}"))).collect(),
        )
        .await
        .unwrap();
    broker.close().await;

    // Append half a frame, as a crash in the middle of a write would leave.
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    let intact = bytes.len();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    std::fs::write(&log, &bytes).unwrap();

    let reopened = EmbeddedBroker::open(dir.path(), options(&clock)).unwrap();
    assert_eq!(reopened.recovery_report().torn_tail_bytes, 10);
    for enqueued in &ids {
        assert_eq!(
            reopened.get(enqueued.id).await.unwrap().state,
            TaskState::Ready
        );
    }
    reopened.close().await;
    // The torn bytes are gone for good: the log continues from the intact prefix.
    let after = std::fs::read(&log).unwrap();
    assert_eq!(after[..intact], bytes[..intact]);
    let again = EmbeddedBroker::open(dir.path(), options(&clock)).unwrap();
    assert_eq!(again.recovery_report().torn_tail_bytes, 0);
    assert_eq!(all_tasks(&again).await.len(), ids.len());
    again.close().await;
}

#[tokio::test]
async fn the_directory_is_locked_while_open_and_released_by_close() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let broker = EmbeddedBroker::open(dir.path(), options(&clock)).unwrap();
    let second = EmbeddedBroker::open(dir.path(), options(&clock));
    assert!(matches!(second, Err(OpenError::Locked(_))));
    broker.close().await;
    let err = broker
        .enqueue(&queue(), vec![NewTask::new("k", "{}")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
    EmbeddedBroker::open(dir.path(), options(&clock))
        .unwrap()
        .close()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_are_all_durable_under_every_durability() {
    for durability in [
        Durability::Fsync,
        Durability::Interval(Duration::from_millis(5)),
        Durability::Off,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let opts = Options {
            durability,
            ..options(&clock)
        };
        let broker = EmbeddedBroker::open(dir.path(), opts.clone()).unwrap();
        let producers: Vec<_> = (0..8)
            .map(|p| {
                let broker = broker.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for b in 0..25 {
                        let batch = (0..10)
                            .map(|i| NewTask::new("k", format!("[{p},{b},{i}]")))
                            .collect();
                        ids.extend(broker.enqueue(&queue(), batch).await.unwrap());
                    }
                    ids
                })
            })
            .collect();
        let mut ids = Vec::new();
        for producer in producers {
            ids.extend(producer.await.unwrap());
        }
        drop(broker);
        // Dropping the last handle closes the broker; everything acknowledged is on disk.
        let reopened = EmbeddedBroker::open(dir.path(), opts).unwrap();
        let stored = all_tasks(&reopened).await;
        assert_eq!(stored.len(), 2000, "{durability}");
        for enqueued in ids {
            assert!(stored.iter().any(|t| t.id == enqueued.id), "{durability}");
        }
        reopened.close().await;
    }
}

#[tokio::test]
async fn leases_survive_a_restart_and_then_expire_normally() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let broker = EmbeddedBroker::open(dir.path(), options(&clock)).unwrap();
    broker
        .enqueue(&queue(), vec![NewTask::new("k", "{}")])
        .await
        .unwrap();
    let held = broker
        .reserve(ReserveRequest::new(queue(), 1, Duration::from_secs(10)))
        .await
        .unwrap();
    broker.close().await;

    let reopened = EmbeddedBroker::open(dir.path(), options(&clock)).unwrap();
    let task = reopened.get(held[0].lease.task_id).await.unwrap();
    assert_eq!(task.state, TaskState::Active);
    assert_eq!(task.lease_expires_at, Some(held[0].lease.expires_at));
    clock.advance(Duration::from_secs(10));
    assert_eq!(reopened.reap().await.unwrap(), 1);
    let again = reopened
        .reserve(ReserveRequest::new(queue(), 1, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(again[0].task.attempt, 2);
    assert!(again[0].lease.fence > held[0].lease.fence);
    reopened.close().await;
}

/// A reservation is answered before it is durable. If a crash loses it, the task is ready
/// again after the restart and the fence its worker holds can never match a later
/// reservation. The crash is simulated with real files: the directory is copied while it holds
/// only the durable enqueue, the original broker then reserves, and the copy is opened as the
/// restarted broker that never saw that reservation.
#[tokio::test]
async fn a_reservation_lost_in_a_crash_leaves_its_fence_stale() {
    let original = tempfile::tempdir().unwrap();
    let clock = clock();
    let broker = EmbeddedBroker::open(original.path(), options(&clock)).unwrap();
    let ids = broker
        .enqueue(&queue(), vec![NewTask::new("k", "{}")])
        .await
        .unwrap();

    let crashed = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(original.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, crashed.path().join(path.file_name().unwrap())).unwrap();
    }
    let lost = broker
        .reserve(ReserveRequest::new(queue(), 1, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(lost[0].lease.task_id, ids[0].id);

    let restarted = EmbeddedBroker::open(crashed.path(), options(&clock)).unwrap();
    assert_eq!(
        restarted.get(ids[0].id).await.unwrap().state,
        TaskState::Ready,
        "the lost reservation left the task ready"
    );
    let again = restarted
        .reserve(ReserveRequest::new(queue(), 1, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(again[0].lease.task_id, ids[0].id);
    assert_ne!(again[0].lease.fence, lost[0].lease.fence);
    let refused = restarted.ack(&[lost[0].lease.as_ref()]).await.unwrap();
    assert!(
        matches!(refused[0], Err(floodway_core::Refusal::StaleFence { .. })),
        "{refused:?}"
    );
    assert_eq!(
        restarted.ack(&[again[0].lease.as_ref()]).await.unwrap(),
        vec![Ok(())]
    );
    restarted.close().await;
    broker.close().await;
}
