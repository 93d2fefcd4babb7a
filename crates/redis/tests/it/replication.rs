//! Waiting for replicas and for the AOF (`Options::wait_replicas`, `Options::wait_aof`): the
//! broker answers a change only once enough replicas have it, fails clearly when they do not,
//! and refuses `wait_aof` on a server that cannot do it.

use std::time::{Duration, Instant};

use floodway_core::{Broker, BrokerError, NewTask, QueueName};
use floodway_redis::{ConnectError, Options, RedisBroker};

use crate::server::{self, RedisServer};

fn options(prefix: &str) -> Options {
    Options {
        prefix: prefix.to_owned(),
        maintenance_interval: None,
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(300),
        ..Options::default()
    }
}

#[tokio::test]
async fn changes_wait_for_a_replica_and_fail_clearly_without_one() {
    let primary = RedisServer::start(&[]);
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    // The replica's first sync: Redis announces no event for it, so ask (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while primary.cli(&["wait", "1", "1000"]).trim() != "1" {
        assert!(Instant::now() < deadline, "the replica never synced");
    }
    let prefix = server::fresh_prefix();
    let broker = RedisBroker::connect(&primary.url(), options(&prefix))
        .await
        .unwrap();
    let q = QueueName::new("replicated").unwrap();
    let first = broker
        .enqueue(&q, vec![NewTask::new("k", "{}")])
        .await
        .unwrap();
    // Acknowledged means on the replica too.
    let key = format!("{prefix}:{{replicated#0}}:t");
    assert_eq!(replica.cli(&["hlen", &key]).trim(), "1");

    replica.signal("-STOP");
    let started = Instant::now();
    let refused = broker
        .enqueue(&q, vec![NewTask::new("k", "{}").idempotency_key("second")])
        .await;
    let waited = started.elapsed();
    replica.signal("-CONT");
    match &refused {
        Err(BrokerError::Unavailable(reason)) => {
            assert!(reason.contains("0 of 1 replicas"), "{reason}");
            assert!(reason.contains("idempotency"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
    // The change is on the primary; a retry with the same key finds it, now replicated.
    let retried = broker
        .enqueue(&q, vec![NewTask::new("k", "{}").idempotency_key("second")])
        .await
        .unwrap();
    assert!(retried[0].duplicate);
    let stats = &broker.stats(Some(&q)).await.unwrap()[0];
    assert_eq!(stats.totals.enqueued, 2);
    assert!(broker.get(first[0].id).await.is_ok());
}

#[tokio::test]
async fn wait_aof_is_refused_where_the_server_cannot_do_it() {
    let server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let prefix = server::fresh_prefix();
    let probe = RedisBroker::connect(&server.url(), options(&prefix))
        .await
        .unwrap();
    let has_waitaof = probe.health().await.nodes[0].has_waitaof;
    let connected = RedisBroker::connect(
        &server.url(),
        Options {
            wait_aof: true,
            wait_replicas: 0,
            ..options(&prefix)
        },
    )
    .await;
    if has_waitaof {
        // Redis 7.2 or later: every change waits for the fsync and succeeds.
        let broker = connected.expect("WAITAOF is available");
        let q = QueueName::new("fsynced").unwrap();
        broker
            .enqueue(&q, vec![NewTask::new("k", "{}")])
            .await
            .unwrap();
    } else {
        match connected {
            Err(err @ ConnectError::Unsupported { .. }) => {
                assert!(err.to_string().contains("7.2"), "{err}");
                assert!(err.to_string().contains("appendfsync always"), "{err}");
            }
            other => panic!("expected Unsupported, got {:?}", other.err()),
        }
    }
}
