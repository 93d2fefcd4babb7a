//! A full disk under the real broker (simulated: [`SimulatedDisk::set_capacity`]; the same on a
//! real small file system is tested through `floodway serve` in the CLI's tests).
//!
//! What the broker promises: a write that fails with `ENOSPC` is not fatal. The calls whose
//! changes were accepted but not yet written are answered `Unavailable` (outcome unknown: the
//! changes are held in memory); every later change is refused with `StorageFull` and changes
//! nothing; reads are served; and once space is freed the held changes are written and changes
//! are accepted again, without a restart. No call is ever answered `Ok` for a change that is
//! not durable.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, ManualClock, NewTask, QueueName, ReserveRequest, TaskFilter, TaskId,
    Timestamp,
};
use floodway_embedded::fault::SimulatedDisk;
use floodway_embedded::{Durability, EmbeddedBroker, Options};

const DIR: &str = "/sim/data";

fn options(durability: Durability) -> Options {
    Options {
        durability,
        clock: Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000))),
        maintenance_interval: None,
        ..Options::default()
    }
}

fn queue() -> QueueName {
    QueueName::new("full").unwrap()
}

fn batch(call: u64) -> Vec<NewTask> {
    (0..4)
        .map(|i| {
            NewTask::new(
                "k",
                format!(
                    "{{\"call\":{call},\"i\":{i},\"pad\":\"{}\"}}",
                    "x".repeat(200)
                ),
            )
        })
        .collect()
}

async fn ids_in(broker: &EmbeddedBroker) -> BTreeSet<TaskId> {
    broker
        .list(TaskFilter {
            limit: 1000,
            ..TaskFilter::default()
        })
        .await
        .expect("reads are served")
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// Enqueues until the broker refuses with `StorageFull`; returns the acknowledged ids and the
/// payload call numbers answered `Unavailable` (held).
async fn fill(broker: &EmbeddedBroker) -> (BTreeSet<TaskId>, Vec<u64>) {
    let mut acknowledged = BTreeSet::new();
    let mut held = Vec::new();
    for call in 0..10_000 {
        match broker.enqueue(&queue(), batch(call)).await {
            Ok(enqueued) => acknowledged.extend(enqueued.iter().map(|e| e.id)),
            Err(BrokerError::Unavailable(reason)) => {
                assert!(reason.contains("disk is full"), "{reason}");
                held.push(call);
            }
            Err(BrokerError::StorageFull(reason)) => {
                assert!(reason.contains("nothing was changed"), "{reason}");
                return (acknowledged, held);
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    panic!("the disk never filled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_changes_serves_reads_and_resumes_when_space_returns() {
    for durability in [
        Durability::Fsync,
        Durability::Interval(Duration::from_millis(5)),
        Durability::Off,
    ] {
        let disk = SimulatedDisk::new();
        let broker = EmbeddedBroker::open_simulated(&disk, DIR, options(durability)).unwrap();
        broker.enqueue(&queue(), batch(1_000_000)).await.unwrap();
        disk.set_capacity(Some(disk.used_bytes() + 20 * 1024));

        let (acknowledged, held) = fill(&broker).await;
        assert!(!acknowledged.is_empty());
        let before = ids_in(&broker).await;
        let stats_before = broker.stats(Some(&queue())).await.unwrap();

        // Every change is refused, and refusing changes nothing; reads go on.
        let refused = [
            broker.enqueue(&queue(), batch(2_000_000)).await.map(|_| ()),
            broker
                .reserve(ReserveRequest::new(queue(), 1, Duration::from_secs(30)))
                .await
                .map(|_| ()),
            broker.pause(&queue()).await,
        ];
        for result in refused {
            assert!(
                matches!(result, Err(BrokerError::StorageFull(_))),
                "{durability}: {result:?}"
            );
        }
        assert_eq!(ids_in(&broker).await, before);
        assert_eq!(broker.stats(Some(&queue())).await.unwrap(), stats_before);
        assert!(broker.ping().await.is_ok(), "the broker is not failed");

        // Space comes back: the held changes are written, and changes are accepted again.
        disk.set_capacity(None);
        let resumed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match broker.enqueue(&queue(), batch(3_000_000)).await {
                    Ok(enqueued) => return enqueued,
                    Err(BrokerError::StorageFull(_)) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
        })
        .await
        .expect("changes are accepted again within 10 s of space returning");
        broker.close().await;

        // After a clean close and reopen: every acknowledged task, every held one, the one
        // enqueued after space returned, and nothing else.
        let reopened = EmbeddedBroker::open_simulated(&disk, DIR, options(durability)).unwrap();
        let after = ids_in(&reopened).await;
        assert!(
            acknowledged.is_subset(&after),
            "{durability}: acknowledged tasks lost"
        );
        assert!(before.is_subset(&after), "{durability}: held tasks lost");
        assert_eq!(after.len(), before.len() + resumed.len(), "{durability}");
        let _ = held;
        reopened.close().await;
    }
}

/// With `fsync`, a power loss while the disk is full keeps every acknowledged enqueue: the
/// refused and held changes were never acknowledged, and recovery finds no half-written frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_while_the_disk_is_full_keeps_every_acknowledged_change() {
    for seed in 0..8 {
        let disk = SimulatedDisk::new();
        let broker =
            EmbeddedBroker::open_simulated(&disk, DIR, options(Durability::Fsync)).unwrap();
        disk.set_capacity(Some(disk.used_bytes() + 4 * 1024 + seed * 1000));
        let (acknowledged, _) = fill(&broker).await;
        let image = disk.after_power_loss(seed);
        broker.close().await;
        let recovered = EmbeddedBroker::open_simulated(&image, DIR, options(Durability::Fsync))
            .expect("a full disk leaves a directory that opens");
        let ids = ids_in(&recovered).await;
        assert!(
            acknowledged.is_subset(&ids),
            "seed {seed}: acknowledged tasks lost"
        );
        recovered.close().await;
    }
}
