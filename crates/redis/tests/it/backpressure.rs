//! Broker-side backpressure (issue 4) where Redis makes it differ from one process: the
//! limits' state lives in Redis, so every floodway process sharing a queue shares its token
//! buckets, its active counts and its watermark gate. Each test connects two brokers (two
//! connections, as two processes would) to one queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodway_core::{
    Broker, BrokerError, Clock, EffectRecord, ManualClock, NewTask, QueueConfig, QueueName,
    RateLimit, ReserveRequest, TaskState, Timestamp, Watermarks,
};
use floodway_redis::{Options, RedisBroker, TimeSource};

use crate::server;

const LEASE: Duration = Duration::from_secs(30);

/// Two brokers on one fresh prefix of the shared server, reading time from `clock` (or the
/// server's when `None`), without background maintenance.
async fn two_brokers(clock: Option<&ManualClock>, shards: u16) -> (RedisBroker, RedisBroker) {
    let prefix = server::fresh_prefix();
    let options = || {
        Options {
            prefix: prefix.clone(),
            time: match clock {
                Some(clock) => TimeSource::Injected(Arc::new(clock.clone())),
                None => TimeSource::Server,
            },
            maintenance_interval: None,
            ..Options::default()
        }
        .shards(QueueName::new("shared").unwrap(), shards)
    };
    let url = server::shared().url();
    let a = RedisBroker::connect(&url, options()).await.unwrap();
    let b = RedisBroker::connect(&url, options()).await.unwrap();
    (a, b)
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_millis(1_800_000_000_000))
}

fn tasks(n: usize) -> Vec<NewTask> {
    (0..n).map(|_| NewTask::new("call", "{}")).collect()
}

async fn reserve(broker: &RedisBroker, q: &QueueName, max: usize) -> usize {
    broker
        .reserve(ReserveRequest::new(q.clone(), max, LEASE))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn two_processes_draw_on_one_token_bucket() {
    let clock = clock();
    let (a, b) = two_brokers(Some(&clock), 1).await;
    let q = QueueName::new("shared").unwrap();
    let config = QueueConfig {
        rate_limit: Some(RateLimit {
            rate: 10.0,
            burst: 4,
        }),
        ..QueueConfig::default()
    };
    a.configure(&q, config).await.unwrap();
    a.enqueue(&q, tasks(100)).await.unwrap();

    assert_eq!(reserve(&a, &q, 3).await, 3);
    assert_eq!(
        reserve(&b, &q, 3).await,
        1,
        "b gets what a left in the bucket"
    );
    assert_eq!(reserve(&a, &q, 3).await, 0);
    clock.advance(Duration::from_millis(200));
    assert_eq!(
        reserve(&b, &q, 5).await,
        2,
        "two tokens in 200 ms, wherever asked"
    );
    assert_eq!(reserve(&a, &q, 5).await, 0);
    let totals = b.stats(Some(&q)).await.unwrap()[0].totals;
    assert_eq!((totals.reserved, totals.throttled_rate), (6, 4));
}

/// Two processes reserving as fast as they can, on the server's clock, never take more than
/// the burst plus the rate times the time that passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_processes_never_exceed_the_rate_limit() {
    const RATE: f64 = 50.0;
    const BURST: u32 = 5;
    let (a, b) = two_brokers(None, 1).await;
    let q = QueueName::new("shared").unwrap();
    a.configure(
        &q,
        QueueConfig {
            rate_limit: Some(RateLimit {
                rate: RATE,
                burst: BURST,
            }),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    a.enqueue(&q, tasks(1000)).await.unwrap();

    let started = Instant::now();
    let run = Duration::from_millis(1500);
    let race = |broker: RedisBroker| {
        let q = q.clone();
        tokio::spawn(async move {
            let mut got = 0;
            while started.elapsed() < run {
                got += broker
                    .reserve(
                        ReserveRequest::new(q.clone(), 10, LEASE).wait(Duration::from_millis(50)),
                    )
                    .await
                    .unwrap()
                    .len();
            }
            got
        })
    };
    let (from_a, from_b) = (race(a.clone()), race(b.clone()));
    let (from_a, from_b) = (from_a.await.unwrap(), from_b.await.unwrap());
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = f64::from(BURST) + RATE * elapsed;
    let total = (from_a + from_b) as f64;
    eprintln!("a took {from_a}, b took {from_b} in {elapsed:.2}s; the limit allows {allowed:.1}");
    assert!(
        total <= allowed + 1.0,
        "{total} tasks reserved, at most {allowed} allowed"
    );
    assert!(from_a > 0 && from_b > 0, "both processes got tasks");
    // A liveness check with a wide margin (a loaded machine slows the callers, not the
    // bucket): waiting reserves wake for the tokens as they come.
    assert!(
        total >= f64::from(BURST) + RATE * 0.5,
        "waiting reserves took the tokens as they came: {total}"
    );
}

#[tokio::test]
async fn the_watermark_gate_is_shared_by_every_process() {
    let clock = clock();
    let (a, b) = two_brokers(Some(&clock), 1).await;
    let q = QueueName::new("shared").unwrap();
    a.configure(
        &q,
        QueueConfig {
            watermarks: Some(Watermarks { high: 4, low: 1 }),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    a.enqueue(&q, tasks(4)).await.unwrap();
    assert!(matches!(
        a.enqueue(&q, tasks(1)).await,
        Err(BrokerError::Overloaded { length: 4, .. })
    ));
    assert!(
        b.stats(Some(&q)).await.unwrap()[0].refusing,
        "b sees a's gate"
    );

    // Down to 2, below high: a's refusal keeps b refusing (hysteresis held in Redis).
    for _ in 0..2 {
        let got = b
            .reserve(ReserveRequest::new(q.clone(), 1, LEASE))
            .await
            .unwrap();
        b.ack(&[got[0].lease.as_ref()]).await.unwrap();
    }
    let refused = b.enqueue(&q, tasks(1)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            BrokerError::Overloaded {
                length: 2,
                high: 4,
                low: 1,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(refused.retry_after().is_some_and(|d| !d.is_zero()));
    let got = a
        .reserve(ReserveRequest::new(q.clone(), 1, LEASE))
        .await
        .unwrap();
    a.ack(&[got[0].lease.as_ref()]).await.unwrap();
    assert!(!a.stats(Some(&q)).await.unwrap()[0].refusing);
    b.enqueue(&q, tasks(1)).await.unwrap();
    let totals = a.stats(Some(&q)).await.unwrap()[0].totals;
    assert_eq!(totals.rejected_overloaded, 2);
}

/// The Retry-After of an overloaded queue is the time to work it down to its low watermark
/// at the rate it completed tasks lately.
#[tokio::test]
async fn retry_after_follows_the_measured_completion_rate() {
    let clock = clock();
    let (a, _) = two_brokers(Some(&clock), 1).await;
    let q = QueueName::new("shared").unwrap();
    a.configure(
        &q,
        QueueConfig {
            watermarks: Some(Watermarks { high: 30, low: 10 }),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    a.enqueue(&q, tasks(30)).await.unwrap();
    a.stats(Some(&q)).await.unwrap();
    // Ten tasks a second for two seconds.
    for _ in 0..2 {
        clock.advance(Duration::from_secs(1));
        let got = a
            .reserve(ReserveRequest::new(q.clone(), 10, LEASE))
            .await
            .unwrap();
        let leases: Vec<_> = got.iter().map(|r| r.lease.as_ref()).collect();
        a.ack(&leases).await.unwrap();
        a.stats(Some(&q)).await.unwrap();
    }
    a.enqueue(&q, tasks(20)).await.unwrap();
    match a.enqueue(&q, tasks(1)).await {
        Err(BrokerError::Overloaded {
            length: 30,
            retry_after,
            ..
        }) => assert_eq!(retry_after, Duration::from_secs(2), "20 tasks at 10/s"),
        other => panic!("expected Overloaded, got {other:?}"),
    }
}

/// A concurrency slot freed by one process wakes a reserve waiting in another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_freed_in_one_process_wakes_a_reserve_waiting_in_another() {
    let (a, b) = two_brokers(None, 1).await;
    let q = QueueName::new("shared").unwrap();
    a.configure(
        &q,
        QueueConfig {
            concurrency_max: Some(1),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    a.enqueue(&q, tasks(2)).await.unwrap();
    let held = a
        .reserve(ReserveRequest::new(q.clone(), 1, LEASE))
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    let waiting = tokio::spawn({
        let (b, q) = (b.clone(), q.clone());
        async move {
            let started = Instant::now();
            let got = b
                .reserve(ReserveRequest::new(q, 1, LEASE).wait(Duration::from_secs(20)))
                .await
                .unwrap();
            (got.len(), started.elapsed())
        }
    });
    // Let b look once and start waiting; the wake-up must not depend on when it started.
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.ack(&[held[0].lease.as_ref()]).await.unwrap();
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got, 1);
    assert!(
        waited < Duration::from_secs(10),
        "woken by the ack, not by the end of the wait ({waited:?})"
    );
    let totals = a.stats(Some(&q)).await.unwrap()[0].totals;
    assert_eq!(
        totals.throttled_concurrency, 0,
        "the waiting call got what it asked for"
    );
}

/// A limit key's slots come back when its leases expire and are reaped, by any process.
#[tokio::test]
async fn a_limit_keys_slots_come_back_when_its_leases_are_reaped() {
    let clock = clock();
    let (a, b) = two_brokers(Some(&clock), 1).await;
    let q = QueueName::new("shared").unwrap();
    a.configure(
        &q,
        QueueConfig {
            key_concurrency_max: Some(2),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    let keyed = |n| -> Vec<NewTask> {
        (0..n)
            .map(|_| NewTask::new("call", "{}").limit_key("tenant"))
            .collect()
    };
    a.enqueue(&q, keyed(5)).await.unwrap();
    assert_eq!(reserve(&a, &q, 5).await, 2);
    assert_eq!(reserve(&b, &q, 5).await, 0);
    clock.advance(LEASE);
    assert_eq!(b.reap().await.unwrap(), 2);
    assert_eq!(
        reserve(&b, &q, 5).await,
        2,
        "the reaped leases gave their slots back"
    );
    let totals = a.stats(Some(&q)).await.unwrap()[0].totals;
    assert_eq!(totals.throttled_concurrency, 3);
}

/// A partitioned queue enforces its concurrency as ceil(max / shards) per shard, so the queue
/// as a whole never has more active than its limit when the division is exact.
#[tokio::test]
async fn a_partitioned_queue_keeps_its_concurrency_limit_over_its_shards() {
    let clock = clock();
    let (a, b) = two_brokers(Some(&clock), 3).await;
    let q = QueueName::new("shared").unwrap();
    a.configure(
        &q,
        QueueConfig {
            concurrency_max: Some(3),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    a.enqueue(&q, tasks(30)).await.unwrap();
    let mut got = 0;
    for _ in 0..4 {
        got += reserve(&a, &q, 10).await + reserve(&b, &q, 10).await;
    }
    assert_eq!(got, 3);
    assert_eq!(a.stats(Some(&q)).await.unwrap()[0].counts.active, 3);
}

/// Limit keys and effects are stored beside partition keys and survive every way through the
/// record: the slow paths that decode it and the hot ones that splice it.
#[tokio::test]
async fn limit_keys_and_effects_survive_every_transition() {
    let clock = clock();
    let (a, _) = two_brokers(Some(&clock), 1).await;
    let q = QueueName::new("shared").unwrap();
    let id = a
        .enqueue(
            &q,
            vec![
                NewTask::new("call", "{}")
                    .limit_key("tenant-7")
                    .partition_key("order-1")
                    .idempotency_key("once"),
            ],
        )
        .await
        .unwrap()[0]
        .id;
    let first = a
        .reserve(ReserveRequest::new(q.clone(), 1, LEASE))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(first.task.limit_key.as_deref(), Some("tenant-7"));
    let effect = |key: &str, result: &str| EffectRecord {
        lease: first.lease.as_ref(),
        key: key.to_owned(),
        result: result.to_owned(),
    };
    let results = a
        .record_effects(vec![effect("charge", "{\"id\":1}"), effect("empty", "")])
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    a.release(&[first.lease.as_ref()]).await.unwrap();
    let second = a
        .reserve(ReserveRequest::new(q.clone(), 1, LEASE))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.task.effects["charge"], "{\"id\":1}");
    assert_eq!(second.task.effects["empty"], "");
    a.ack(&[second.lease.as_ref()]).await.unwrap();
    let done = a.get(id).await.unwrap();
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!(
        (done.limit_key.as_deref(), done.partition_key.as_deref()),
        (Some("tenant-7"), Some("order-1"))
    );
    assert_eq!(done.effects.len(), 2);
    assert_eq!(
        a.stats(Some(&q)).await.unwrap()[0].totals.effects_recorded,
        2
    );
}

/// The queue's default time to live applies to tasks enqueued without one.
#[tokio::test]
async fn the_queue_ttl_applies_to_tasks_without_their_own() {
    let clock = clock();
    let (a, _) = two_brokers(Some(&clock), 1).await;
    let q = QueueName::new("shared").unwrap();
    a.configure(
        &q,
        QueueConfig {
            ttl: Some(Duration::from_millis(1500)),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    let ids = a
        .enqueue(
            &q,
            vec![
                NewTask::new("call", "{}"),
                NewTask::new("call", "{}").ttl(Duration::from_secs(10)),
            ],
        )
        .await
        .unwrap();
    let now = clock.now();
    assert_eq!(
        a.get(ids[0].id).await.unwrap().expires_at,
        Some(Timestamp::from_millis(now.as_millis() + 1500))
    );
    assert_eq!(
        a.get(ids[1].id).await.unwrap().expires_at,
        Some(Timestamp::from_millis(now.as_millis() + 10_000))
    );
}
