//! Faults with real processes (issue 3, item 6):
//!
//! - a worker killed with SIGKILL mid-task: another worker completes the task once the lease
//!   has expired, and the dead worker's fence is refused;
//! - Redis killed with SIGKILL and restarted under load, with `appendonly yes` and
//!   `appendfsync always`: no acknowledged task is lost;
//! - Redis paused with SIGSTOP for longer than the clients' timeout: producers get a clear
//!   error, never a false success, and everything resumes after SIGCONT.
//!
//! Every wait is on an event a child process prints (or, where Redis announces nothing, a
//! bounded poll); the figures each test measures are printed for docs/guarantees.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use floodway_core::{Broker, Fence, LeaseRef, NewTask, QueueName, Refusal, TaskId};

use crate::children::{self, ChildProcess, Role, fields};
use crate::server::{self, RedisServer};

fn worker(
    url: &str,
    prefix: &str,
    queue: &str,
    name: &str,
    lease_ms: u64,
    hang_on: Vec<u64>,
) -> Role {
    Role::Worker {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        queue: queue.to_owned(),
        name: name.to_owned(),
        concurrency: 32,
        lease_ms,
        hang_on,
    }
}

fn producer(
    url: &str,
    prefix: &str,
    queue: &str,
    first: u64,
    count: u64,
    batch: usize,
    timeout_ms: u64,
) -> Role {
    Role::Producer {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        queue: queue.to_owned(),
        first,
        count,
        batch,
        retry_for_ms: 60_000,
        command_timeout_ms: timeout_ms,
    }
}

/// The acknowledged tasks in producer events: n -> id.
fn acknowledged(events: &[String]) -> HashMap<u64, String> {
    events
        .iter()
        .filter(|e| e.starts_with("enqueued "))
        .map(|e| {
            let f = fields(e);
            (f[0].parse().unwrap(), f[1].to_owned())
        })
        .collect()
}

/// How many times each task ran, from worker events.
fn runs(events: &[String]) -> HashMap<u64, u32> {
    let mut runs = HashMap::new();
    for event in events.iter().filter(|e| e.starts_with("ran ")) {
        *runs.entry(fields(event)[0].parse().unwrap()).or_insert(0) += 1;
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_task_is_completed_by_another_after_its_lease() {
    let server = RedisServer::start(&[]);
    let (url, prefix, queue) = (server.url(), server::fresh_prefix(), "fragile");
    let deadline = Instant::now() + Duration::from_secs(60);
    let lease_ms = 1_000;

    let mut first = ChildProcess::spawn(
        "worker-a",
        &worker(&url, &prefix, queue, "a", lease_ms, vec![0]),
    );
    first.until(deadline, |e| e == "ready");
    let broker = children::broker(&url, &prefix).await;
    let q = QueueName::new(queue).unwrap();
    broker
        .enqueue(&q, vec![NewTask::new("job", r#"{"n":0}"#)])
        .await
        .unwrap();
    let started = first.until(deadline, |e| e.starts_with("started 0 "));
    let f = fields(started.last().unwrap());
    let (id, first_fence): (TaskId, u64) = (f[1].parse().unwrap(), f[3].parse().unwrap());
    let killed_at = Instant::now();
    first.kill();

    let mut second = ChildProcess::spawn(
        "worker-b",
        &worker(&url, &prefix, queue, "b", lease_ms, vec![]),
    );
    let ran = second.until(deadline, |e| e.starts_with("ran 0 "));
    let redelivered_after = killed_at.elapsed();
    let f = fields(ran.last().unwrap());
    let (attempt, fence): (u32, u64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
    assert_eq!(f[1], id.to_string());
    assert_eq!(attempt, 2, "the killed attempt stays spent");
    assert!(fence > first_fence);
    children::drained(&broker, &q, 1, Duration::from_secs(30)).await;
    let (events, code) = second.finish(deadline);
    assert_eq!(code, Some(0), "{events:?}");

    // The dead worker's lease can never complete the task.
    let stale = LeaseRef {
        task_id: id,
        fence: Fence(first_fence),
    };
    assert_eq!(
        broker.ack(&[stale]).await.unwrap(),
        vec![Err(Refusal::StaleFence {
            presented: Fence(first_fence),
            current: Fence(fence)
        })]
    );
    let stats = &broker.stats(Some(&q)).await.unwrap()[0];
    assert_eq!(
        (stats.totals.completed, stats.totals.leases_expired),
        (1, 1)
    );
    eprintln!(
        "killed worker's task redelivered and completed {redelivered_after:?} after the kill \
         (lease {lease_ms} ms, extended by heartbeats until the kill)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_redis_with_aof_always_under_load_loses_no_acknowledged_task() {
    restart_under_load("always").await;
}

/// With `everysec` Redis still writes the AOF before it replies (it syncs once a second), so
/// a crash of the Redis *process* loses nothing either; a crash of the machine could lose
/// about the last second, which this test cannot show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_redis_with_aof_everysec_under_load_loses_no_acknowledged_task() {
    restart_under_load("everysec").await;
}

async fn restart_under_load(fsync: &str) {
    let mut server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", fsync]);
    let (url, prefix, queue) = (server.url(), server::fresh_prefix(), "durable");
    let deadline = Instant::now() + Duration::from_secs(180);
    let per_producer = 10_000;

    let mut consumer =
        ChildProcess::spawn("worker", &worker(&url, &prefix, queue, "w", 5_000, vec![]));
    consumer.until(deadline, |e| e == "ready");
    let mut producers: Vec<ChildProcess> = (0..2)
        .map(|i| {
            ChildProcess::spawn(
                &format!("producer-{i}"),
                &producer(
                    &url,
                    &prefix,
                    queue,
                    i * per_producer,
                    per_producer,
                    100,
                    2_000,
                ),
            )
        })
        .collect();
    // Kill Redis once the first producer has had 2,000 tasks acknowledged: mid-stream.
    let seen = std::cell::Cell::new(0);
    let early = producers[0].until(deadline, |e| {
        if e.starts_with("enqueued ") {
            seen.set(seen.get() + 1);
        }
        seen.get() >= 2_000
    });
    server.kill();
    let down_at = Instant::now();
    server.restart();
    let restart_took = down_at.elapsed();

    let mut events = early;
    let mut errors = 0;
    for producer in producers.drain(..) {
        let name = producer.name.clone();
        let (more, code) = producer.finish(deadline);
        assert_eq!(
            code,
            Some(0),
            "{name} gave up: {:?}",
            &more[more.len().saturating_sub(5)..]
        );
        errors += more.iter().filter(|e| e.starts_with("error ")).count();
        events.extend(more);
    }
    let acknowledged = acknowledged(&events);
    assert_eq!(
        acknowledged.len() as u64,
        2 * per_producer,
        "every batch was acknowledged in the end"
    );

    let broker = children::broker(&url, &prefix).await;
    let q = QueueName::new(queue).unwrap();
    children::drained(&broker, &q, 2 * per_producer, Duration::from_secs(120)).await;
    let (worker_events, code) = consumer.finish(deadline);
    assert_eq!(code, Some(0));
    let runs = runs(&worker_events);
    let lost: Vec<&u64> = acknowledged
        .keys()
        .filter(|n| !runs.contains_key(n))
        .collect();
    let duplicated = runs.values().filter(|r| **r > 1).count();
    let stats = &broker.stats(Some(&q)).await.unwrap()[0];
    eprintln!(
        "AOF {fsync}, Redis SIGKILLed and restarted (down {restart_took:?}) under load: \
         attempted {}, acknowledged {}, lost {}, ran {}, duplicated {duplicated}, producer errors \
         {errors}, leases expired {}, completed {}",
        2 * per_producer,
        acknowledged.len(),
        lost.len(),
        runs.len(),
        stats.totals.leases_expired,
        stats.totals.completed
    );
    assert!(lost.is_empty(), "acknowledged but never ran: {lost:?}");
    assert_eq!(
        stats.totals.enqueued,
        2 * per_producer,
        "retried batches were deduplicated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_redis_gives_clear_errors_never_false_success_and_everything_resumes() {
    let server = RedisServer::start(&[]);
    let (url, prefix, queue) = (server.url(), server::fresh_prefix(), "paused");
    let deadline = Instant::now() + Duration::from_secs(120);
    let count = 4_000;
    let timeout_ms = 300;

    let mut consumer =
        ChildProcess::spawn("worker", &worker(&url, &prefix, queue, "w", 10_000, vec![]));
    consumer.until(deadline, |e| e == "ready");
    let mut producing = ChildProcess::spawn(
        "producer",
        &producer(&url, &prefix, queue, 0, count, 20, timeout_ms),
    );
    let seen = std::cell::Cell::new(0);
    let mut events = producing.until(deadline, |e| {
        if e.starts_with("enqueued ") {
            seen.set(seen.get() + 1);
        }
        seen.get() >= 500
    });
    server.signal("-STOP");
    let stopped_at = Instant::now();
    // The producer's next call times out: that error is the event to resume on.
    events.extend(producing.until(deadline, |e| e.starts_with("error ")));
    let first_error_after = stopped_at.elapsed();
    server.signal("-CONT");
    let error = events
        .iter()
        .find(|e| e.starts_with("error "))
        .unwrap()
        .clone();
    assert!(
        error.contains("did not answer within"),
        "a clear error: {error}"
    );

    let (more, code) = producing.finish(deadline);
    assert_eq!(code, Some(0), "the producer resumed and finished: {more:?}");
    events.extend(more);
    let acknowledged = acknowledged(&events);
    assert_eq!(acknowledged.len() as u64, count);

    // No false success: every acknowledged task is in Redis, under the id it was given.
    let broker = children::broker(&url, &prefix).await;
    let q = QueueName::new(queue).unwrap();
    children::drained(&broker, &q, count, Duration::from_secs(60)).await;
    let stats = &broker.stats(Some(&q)).await.unwrap()[0];
    assert_eq!(
        stats.totals.enqueued, count,
        "retries after a timeout were deduplicated"
    );
    let (worker_events, code) = consumer.finish(deadline);
    assert_eq!(code, Some(0));
    for event in worker_events.iter().filter(|e| e.starts_with("ran ")) {
        let f = fields(event);
        let n: u64 = f[0].parse().unwrap();
        assert_eq!(
            acknowledged.get(&n).map(String::as_str),
            Some(f[1]),
            "task {n} ran under the id it was acknowledged with"
        );
    }
    let runs = runs(&worker_events);
    let lost = acknowledged
        .keys()
        .filter(|n| !runs.contains_key(n))
        .count();
    let errors = events.iter().filter(|e| e.starts_with("error ")).count();
    eprintln!(
        "SIGSTOP of Redis with a {timeout_ms} ms client timeout: first error after \
         {first_error_after:?} ({error}); producer errors {errors}; acknowledged {}, lost {lost}, \
         false successes 0, completed {}",
        acknowledged.len(),
        stats.totals.completed
    );
    assert_eq!(lost, 0);
}
