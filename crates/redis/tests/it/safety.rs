//! Operational safety (issue 3, item 3): what the broker refuses, detects and reports about
//! the Redis it runs on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodway_core::ReserveRequest;
use floodway_core::{
    Broker, BrokerError, Fence, ManualClock, NewTask, QueueName, Refusal, Timestamp,
};
use floodway_redis::{ConnectError, Options, Persistence, RedisBroker, TimeSource};

use crate::server::{self, RedisServer};

fn options(prefix: &str) -> Options {
    Options {
        prefix: prefix.to_owned(),
        maintenance_interval: None,
        ..Options::default()
    }
}

/// Calls `f` until it succeeds, for at most `within`: after Redis restarts, the first calls
/// on the old connection fail while it reconnects (Redis gives no event for that).
async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BrokerError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(value) => return value,
            Err(err) => {
                assert!(Instant::now() < deadline, "still failing: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_redis_that_restarted_empty_is_reported_unhealthy_not_served_as_empty() {
    let mut server = RedisServer::start(&[]);
    let prefix = server::fresh_prefix();
    let broker = RedisBroker::connect(&server.url(), options(&prefix))
        .await
        .unwrap();
    let q = QueueName::new("volatile").unwrap();
    let ids = broker
        .enqueue(&q, vec![NewTask::new("k", "{}"), NewTask::new("k", "{}")])
        .await
        .unwrap();
    assert!(broker.health().await.healthy);

    server.kill();
    server.restart();
    let restarted = Instant::now();

    // The first call after the restart may fail on the dropped connection; once Redis answers,
    // every call reports the loss instead of answering from an empty queue.
    let lost = eventually(Duration::from_secs(10), || async {
        match broker.ping().await {
            Err(BrokerError::Unavailable(reason)) if reason.contains("gone") => Ok(reason),
            other => Err(BrokerError::Unavailable(format!(
                "not detected yet: {other:?}"
            ))),
        }
    })
    .await;
    let detected_after = restarted.elapsed();
    for result in [
        broker.stats(Some(&q)).await.map(|_| ()),
        broker
            .enqueue(&q, vec![NewTask::new("k", "{}")])
            .await
            .map(|_| ()),
        broker.get(ids[0].id).await.map(|_| ()),
        broker
            .reserve(ReserveRequest::new(q.clone(), 10, Duration::from_secs(30)))
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(&result, Err(BrokerError::Unavailable(reason)) if reason.contains("gone")),
            "{result:?}"
        );
    }
    let health = broker.health().await;
    assert!(!health.healthy);
    assert!(
        health.problems.iter().any(|p| p.contains("gone")),
        "{health:?}"
    );
    assert_eq!(health.nodes[0].persistence(), Persistence::None);

    // A new process refuses to treat it as a new deployment when told not to create one.
    let refused = RedisBroker::connect(
        &server.url(),
        Options {
            create_if_missing: false,
            ..options(&prefix)
        },
    )
    .await;
    assert!(
        matches!(refused, Err(ConnectError::MissingDataset { .. })),
        "{:?}",
        refused.err()
    );
    eprintln!("Redis restarted empty: detected {detected_after:?} after the restart: {lost}");
}

#[tokio::test]
async fn the_loss_of_a_queue_behind_a_surviving_marker_is_detected() {
    // In a Cluster one node can restart empty while the registry's node keeps the marker;
    // on one server, deleting a shard's keys shows the same.
    let server = RedisServer::start(&[]);
    let prefix = server::fresh_prefix();
    let broker = RedisBroker::connect(&server.url(), options(&prefix))
        .await
        .unwrap();
    let q = QueueName::new("half-lost").unwrap();
    broker
        .enqueue(&q, vec![NewTask::new("k", "{}")])
        .await
        .unwrap();
    let keys = server.cli(&["--raw", "keys", &format!("{prefix}:{{half-lost#0}}*")]);
    for key in keys.lines().filter(|k| !k.is_empty()) {
        server.cli(&["del", key]);
    }
    let got = broker.stats(Some(&q)).await;
    assert!(
        matches!(&got, Err(BrokerError::Unavailable(reason)) if reason.contains("gone")),
        "{got:?}"
    );
    assert!(
        broker.ping().await.is_err(),
        "once lost, the broker stays unhealthy"
    );
}

#[tokio::test]
async fn eviction_policies_other_than_noeviction_are_refused_unless_allowed() {
    let server = RedisServer::start(&["--maxmemory-policy", "allkeys-lru"]);
    let prefix = server::fresh_prefix();
    let refused = RedisBroker::connect(&server.url(), options(&prefix)).await;
    match refused {
        Err(err @ ConnectError::Eviction { .. }) => {
            assert!(err.to_string().contains("allkeys-lru"), "{err}");
            assert!(err.to_string().contains("noeviction"), "{err}");
        }
        other => panic!("expected an eviction refusal, got {:?}", other.err()),
    }
    let allowed = RedisBroker::connect(
        &server.url(),
        Options {
            allow_eviction: true,
            ..options(&prefix)
        },
    )
    .await
    .expect("allowed when asked");
    let health = allowed.health().await;
    assert!(health.healthy);
    assert!(
        health.problems.iter().any(|p| p.contains("allkeys-lru")),
        "the risk is still reported: {health:?}"
    );
}

#[tokio::test]
async fn persistence_settings_are_reported_per_node() {
    let always = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let everysec = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    for (server, expected) in [
        (&always, Persistence::AofAlways),
        (&everysec, Persistence::AofEverySec),
        (server::shared(), Persistence::None),
    ] {
        let broker = RedisBroker::connect(&server.url(), options(&server::fresh_prefix()))
            .await
            .unwrap();
        let health = broker.health().await;
        assert_eq!(health.nodes.len(), 1);
        assert_eq!(health.nodes[0].persistence(), expected, "{health:?}");
        assert_eq!(
            health.nodes[0].maxmemory_policy.as_deref(),
            Some("noeviction")
        );
        assert!(
            health.nodes[0].version.starts_with('7') || health.nodes[0].version.starts_with('8')
        );
    }
}

#[tokio::test]
async fn fences_jump_to_a_new_epoch_after_redis_restarts() {
    let mut server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let prefix = server::fresh_prefix();
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
    let broker = RedisBroker::connect(
        &server.url(),
        Options {
            time: TimeSource::Injected(Arc::new(clock.clone())),
            ..options(&prefix)
        },
    )
    .await
    .unwrap();
    let q = QueueName::new("epochs").unwrap();
    broker
        .enqueue(&q, vec![NewTask::new("k", "{}")])
        .await
        .unwrap();
    let request = ReserveRequest::new(q.clone(), 1, Duration::from_secs(1));
    let first = broker.reserve(request.clone()).await.unwrap().remove(0);
    assert_eq!(first.lease.fence, Fence(1));

    server.kill();
    server.restart();
    clock.advance(Duration::from_secs(1));
    // The lease expired; the next reservation is the first in the new server's epoch.
    let second = eventually(Duration::from_secs(10), || broker.reserve(request.clone()))
        .await
        .remove(0);
    assert_eq!(second.task.id, first.task.id);
    assert_eq!(second.task.attempt, 2);
    assert_eq!(
        second.lease.fence,
        Fence((1 << 32) + 1),
        "epoch 1's first fence"
    );
    assert_eq!(
        broker.ack(&[first.lease.as_ref()]).await.unwrap(),
        vec![Err(Refusal::StaleFence {
            presented: Fence(1),
            current: second.lease.fence
        })]
    );
    // Within the epoch, fences grow by one again.
    clock.advance(Duration::from_secs(1));
    let third = broker.reserve(request.clone()).await.unwrap().remove(0);
    assert_eq!(third.lease.fence, Fence((1 << 32) + 2));
}
