//! The crash test (issue 2, item 8): no acknowledged enqueue is lost to `kill -9`, and a
//! worker afterwards runs each acknowledged task exactly once.
//!
//! Design:
//! 1. Start `floodway enqueue crashq --from -` as a child, feed it JSON lines from a thread,
//!    and read the ids it prints: it prints an id only once that enqueue is durable, so every
//!    id read is an acknowledged enqueue. Ids come out in line order, so the k-th id of a round
//!    belongs to line k, whose payload is known.
//! 2. After a random number of ids (seeded, bounded), SIGKILL the child mid-stream, then read
//!    what it printed before it died (also acknowledged). Repeat on the same data directory:
//!    each new child recovers the log its predecessor was killed while writing.
//! 3. Open the directory in this process: every acknowledged id is there, ready, with its
//!    payload. Tasks enqueued but not acknowledged before a kill may be there too.
//! 4. Run the floodway-worker runtime with a handler that counts runs per id until every task
//!    in the queue has completed (waiting on the worker's counts, not on time), and check that
//!    each task, acknowledged or not, ran exactly once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodway_core::{Broker, QueueName, TaskFilter, TaskId, TaskState};
use floodway_embedded::{EmbeddedBroker, Options};
use floodway_worker::{Outcome, TaskContext, Worker};

use crate::Floodway;

/// Child processes started and killed, one after another, on the same data directory.
const ROUNDS: u64 = 6;

/// Most acknowledged ids read from one child before it is killed.
const KILL_AFTER_MAX: usize = 400;

/// Lines offered to one child: far more than it can enqueue before it is killed, so it is
/// always killed mid-stream rather than finishing.
const LINES_PER_ROUND: u64 = 1_000_000;

/// The signal `Child::kill` sends on Unix (std documents it as SIGKILL).
const SIGKILL: i32 = 9;

/// Seed of the kill points, so a failure can be reproduced.
const SEED: u64 = 0x5eed_c0de;

/// The payload of line `seq` of round `round`.
fn payload(round: u64, seq: u64) -> String {
    format!(r#"{{"round":{round},"seq":{seq}}}"#)
}

#[test]
fn acknowledged_enqueues_survive_sigkill_and_run_exactly_once() {
    let floodway = Floodway::new();
    let mut rng = fastrand::Rng::with_seed(SEED);
    // Each acknowledged id with the payload of the line it acknowledges.
    let mut acknowledged: Vec<(TaskId, String)> = Vec::new();

    for round in 0..ROUNDS {
        let stderr_path = floodway.scratch(&format!("stderr-{round}"));
        let mut child = floodway
            .command(&["enqueue", "crashq", "--from", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // A file, not a pipe: a child that logs a lot can never block on it.
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("the floodway binary starts");
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            for seq in 0..LINES_PER_ROUND {
                let line = format!(r#"{{"kind":"crash","payload":{}}}"#, payload(round, seq));
                // After the kill the pipe is broken (Rust ignores SIGPIPE, so this is an
                // error, not a signal): stop feeding.
                if writeln!(stdin, "{line}").is_err() {
                    return;
                }
            }
        });

        let kill_after = rng.usize(1..=KILL_AFTER_MAX);
        let mut ids = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seq = 0;
        let mut read = |line: std::io::Result<String>, seq: &mut u64| {
            let line = line.expect("stdout is readable");
            let id: TaskId = line
                .parse()
                .unwrap_or_else(|error| panic!("round {round}: {line:?} is not an id: {error}"));
            acknowledged.push((id, payload(round, *seq)));
            *seq += 1;
        };
        while (seq as usize) < kill_after {
            match ids.next() {
                Some(line) => read(line, &mut seq),
                None => panic!(
                    "round {round}: the child stopped after {seq} ids: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                ),
            }
        }
        child.kill().expect("the child can be killed");
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "round {round}: the child was not killed by SIGKILL but ended with {status}"
        );
        // What it printed before it died was acknowledged too.
        for line in ids {
            read(line, &mut seq);
        }
        feeder.join().expect("the feeder thread does not panic");
        eprintln!("round {round}: killed after {kill_after} ids were read, {seq} in all");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(check_and_drain(&floodway, &acknowledged));
}

async fn check_and_drain(floodway: &Floodway, acknowledged: &[(TaskId, String)]) {
    let broker = Arc::new(
        EmbeddedBroker::open(floodway.data(), Options::default())
            .expect("the data directory recovers after the kills"),
    );
    let queue = QueueName::new("crashq").unwrap();

    // 1. Every acknowledged task is present, waiting, with the payload of its line.
    for (id, payload) in acknowledged {
        let task = broker
            .get(*id)
            .await
            .unwrap_or_else(|error| panic!("acknowledged task {id} is lost: {error}"));
        assert_eq!(task.state, TaskState::Ready, "task {id}");
        assert_eq!(task.kind, "crash");
        assert_eq!(
            std::str::from_utf8(&task.payload).unwrap(),
            payload,
            "task {id}"
        );
    }
    let stats = broker.stats(Some(&queue)).await.unwrap().remove(0);
    let total = stats.counts.ready;
    assert_eq!(stats.counts.waiting(), total, "{stats:?}");
    assert!(total >= acknowledged.len() as u64, "{stats:?}");
    let mut present: Vec<TaskId> = Vec::new();
    loop {
        let page = broker
            .list(TaskFilter {
                queue: Some(queue.clone()),
                after: present.last().copied(),
                limit: 1000,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        present.extend(page.iter().map(|t| t.id));
    }
    assert_eq!(present.len() as u64, total);

    // 2. A worker drains the queue, counting runs per task.
    let runs: Arc<Mutex<HashMap<TaskId, u32>>> = Arc::default();
    let counted = runs.clone();
    let worker = Worker::builder(broker.clone())
        .queue("crashq", 64)
        .poll_wait(Duration::from_millis(100))
        .raw_handler("crash", move |ctx: TaskContext, _payload: Vec<u8>| {
            *counted.lock().unwrap().entry(ctx.id()).or_default() += 1;
            std::future::ready(Outcome::Complete)
        })
        .build()
        .unwrap();
    let handle = worker.handle();
    let running = tokio::spawn(worker.run(std::future::pending()));
    let drained = tokio::time::timeout(
        Duration::from_secs(60),
        handle.wait_for(|report| report.completed >= total),
    )
    .await;
    handle.shutdown();
    let report = running.await.unwrap();
    drained
        .expect("the queue drained within 60s")
        .expect("the worker kept running until the queue drained");

    // 3. Each task ran exactly once, and the queue is empty.
    assert_eq!(report.completed, total, "{report:?}");
    assert_eq!(
        report.retried + report.dead_lettered + report.refused,
        0,
        "{report:?}"
    );
    {
        let runs = runs.lock().unwrap();
        assert_eq!(runs.len() as u64, total, "every task in the queue ran");
        for (id, _) in acknowledged {
            assert_eq!(runs.get(id), Some(&1), "acknowledged task {id}");
        }
        for id in &present {
            assert_eq!(runs.get(id), Some(&1), "task {id}");
        }
    }
    let stats = broker.stats(Some(&queue)).await.unwrap().remove(0);
    assert_eq!(stats.counts.waiting() + stats.counts.active, 0, "{stats:?}");
    assert_eq!(stats.totals.completed, total, "{stats:?}");
    broker.close().await;
    eprintln!(
        "{} acknowledged ids over {ROUNDS} kills, {total} tasks in the queue, each ran once",
        acknowledged.len()
    );
}
