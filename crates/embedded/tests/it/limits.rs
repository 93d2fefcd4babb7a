//! Reservation limits under real concurrency and the real clock: callers that race for one
//! queue never get more than its rate limit allows, however the race goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodway_core::{Broker, NewTask, QueueConfig, QueueName, RateLimit, ReserveRequest};
use floodway_embedded::{Durability, EmbeddedBroker, Options};

/// Two "workers" long-poll one rate-limited queue at once. Whatever the interleaving, in every
/// window the reservations are at most the burst plus what the rate earns in the window: the
/// limit is the broker's, not each caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_callers_together_never_exceed_the_queue_rate_limit() {
    const RATE: f64 = 40.0;
    const BURST: u32 = 4;
    const TASKS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(
        EmbeddedBroker::open(
            dir.path(),
            Options {
                durability: Durability::Off,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let q = QueueName::new("rated").unwrap();
    broker
        .configure(
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
    broker
        .enqueue(&q, (0..TASKS).map(|_| NewTask::new("t", "{}")).collect())
        .await
        .unwrap();

    let start = Instant::now();
    let worker = |broker: Arc<EmbeddedBroker>, q: QueueName| async move {
        let mut times = Vec::new();
        // Bounded: each call waits at most a second, and the queue holds TASKS tasks.
        for _ in 0..TASKS * 4 {
            let request = ReserveRequest::new(q.clone(), 10, Duration::from_secs(60))
                .wait(Duration::from_secs(1));
            let before = start.elapsed();
            let got = broker.reserve(request).await.unwrap();
            let after = start.elapsed();
            for reservation in &got {
                times.push((before, after));
                broker.ack(&[reservation.lease.as_ref()]).await.unwrap();
            }
            if got.is_empty() {
                break;
            }
        }
        times
    };
    let (a, b) = tokio::join!(
        tokio::spawn(worker(broker.clone(), q.clone())),
        tokio::spawn(worker(broker.clone(), q.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(!a.is_empty() && !b.is_empty(), "both callers got tasks");
    // Each reservation was granted somewhere between its call's start and return.
    let mut times: Vec<(Duration, Duration)> = a.into_iter().chain(b).collect();
    times.sort();
    assert_eq!(times.len(), TASKS, "every task was reserved once");

    // Reservations certainly granted within a window [x, y] (their call started at or after
    // x and returned by y) number at most the burst plus the tokens the window earns; one token
    // of slack covers the broker's millisecond clock. Scheduling delays only widen windows, so
    // they can never make the check blame the broker.
    for (x, _) in &times {
        for (_, y) in &times {
            if y < x {
                continue;
            }
            let granted = times.iter().filter(|(s, r)| s >= x && r <= y).count();
            let earned = (*y - *x).as_secs_f64() * RATE;
            assert!(
                granted as f64 <= f64::from(BURST) + earned + 1.0,
                "{granted} reservations within {:?}: more than burst {BURST} + rate {RATE}/s allows",
                *y - *x,
            );
        }
    }
    let stats = broker.stats(Some(&q)).await.unwrap().remove(0);
    assert!(
        stats.totals.throttled_rate > 0,
        "the callers were held back"
    );
    assert_eq!(stats.totals.completed, TASKS as u64);
}
