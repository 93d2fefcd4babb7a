//! Several floodway processes on one queue (issue 3, item 4): two producer processes and two
//! worker processes share a queue in a real Redis; every acknowledged task is completed, and
//! none runs twice unless a lease expired.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use floodway_core::{Broker, QueueName};

use crate::children::{self, ChildProcess, Role, fields};
use crate::server;

const PER_PRODUCER: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_and_two_workers_complete_every_task_once() {
    let url = server::shared().url();
    let prefix = server::fresh_prefix();
    let queue = "shared-work";
    let deadline = Instant::now() + Duration::from_secs(120);

    let mut workers: Vec<ChildProcess> = (0..2)
        .map(|i| {
            ChildProcess::spawn(
                &format!("worker-{i}"),
                &Role::Worker {
                    url: url.clone(),
                    prefix: prefix.clone(),
                    queue: queue.to_owned(),
                    name: format!("worker-{i}"),
                    concurrency: 16,
                    lease_ms: 5_000,
                    hang_on: Vec::new(),
                },
            )
        })
        .collect();
    for worker in &mut workers {
        worker.until(deadline, |e| e == "ready");
    }
    let producers: Vec<ChildProcess> = (0..2)
        .map(|i| {
            ChildProcess::spawn(
                &format!("producer-{i}"),
                &Role::Producer {
                    url: url.clone(),
                    prefix: prefix.clone(),
                    queue: queue.to_owned(),
                    first: i * PER_PRODUCER,
                    count: PER_PRODUCER,
                    batch: 50,
                    retry_for_ms: 0,
                    command_timeout_ms: 5_000,
                },
            )
        })
        .collect();

    // Every task a producer says it enqueued, with its id.
    let mut acknowledged: HashMap<u64, String> = HashMap::new();
    for producer in producers {
        let name = producer.name.clone();
        let (events, code) = producer.finish(deadline);
        assert_eq!(code, Some(0), "{name} failed: {events:?}");
        for event in events.iter().filter(|e| e.starts_with("enqueued ")) {
            let f = fields(event);
            acknowledged.insert(f[0].parse().unwrap(), f[1].to_owned());
        }
    }
    assert_eq!(acknowledged.len() as u64, 2 * PER_PRODUCER);

    let broker = children::broker(&url, &prefix).await;
    let q = QueueName::new(queue).unwrap();
    children::drained(&broker, &q, 2 * PER_PRODUCER, Duration::from_secs(60)).await;

    // Every run each worker reported.
    let mut runs: HashMap<u64, Vec<String>> = HashMap::new();
    let mut per_worker = Vec::new();
    for worker in workers {
        let name = worker.name.clone();
        let (events, code) = worker.finish(deadline);
        assert_eq!(code, Some(0), "{name} failed: {events:?}");
        let ran: Vec<&String> = events.iter().filter(|e| e.starts_with("ran ")).collect();
        per_worker.push((name.clone(), ran.len()));
        for event in ran {
            let f = fields(event);
            assert_eq!(
                acknowledged.get(&f[0].parse().unwrap()),
                Some(&f[1].to_owned())
            );
            runs.entry(f[0].parse().unwrap())
                .or_default()
                .push(format!("{name} attempt {} fence {}", f[2], f[3]));
        }
    }
    let stats = &broker.stats(Some(&q)).await.unwrap()[0];
    let missing: Vec<u64> = acknowledged
        .keys()
        .filter(|n| !runs.contains_key(n))
        .copied()
        .collect();
    let twice: Vec<(&u64, &Vec<String>)> = runs.iter().filter(|(_, r)| r.len() > 1).collect();
    eprintln!(
        "acknowledged {}, ran {} distinct, runs per worker {per_worker:?}, ran twice {}, leases expired {}",
        acknowledged.len(),
        runs.len(),
        twice.len(),
        stats.totals.leases_expired
    );
    assert!(missing.is_empty(), "never ran: {missing:?}");
    assert_eq!(stats.totals.completed, 2 * PER_PRODUCER);
    assert_eq!(stats.totals.enqueued, 2 * PER_PRODUCER);
    assert!(
        twice.is_empty() || stats.totals.leases_expired > 0,
        "ran twice without a lease expiry: {twice:?}"
    );
    assert!(
        twice.len() as u64 <= stats.totals.leases_expired,
        "more tasks ran twice than leases expired: {twice:?}"
    );
    assert!(
        per_worker.iter().all(|(_, ran)| *ran > 0),
        "both workers took tasks: {per_worker:?}"
    );
}
