//! Clock jumps for a worker (issue 7, T14): two real `floodway worker` processes run under
//! libfaketime, whose wall clock the test steps a day forward and then a day back while they
//! work tasks that outlive their lease (so every task needs heartbeats). Leases are judged on
//! the server's clock, and the worker schedules heartbeats on the monotonic clock, so the jumps
//! must change nothing: every task completes exactly once, no lease expires, nothing is
//! refused as stale, nothing is retried.
//!
//! Only the wall clock jumps (`FAKETIME_DONT_FAKE_MONOTONIC=1`): that is what NTP or an
//! operator does; the monotonic clock never jumps. The workers' log timestamps (wall clock)
//! prove libfaketime reached the binary. Needs the `faketime` package: with `CI=true` its
//! absence fails the test, elsewhere it skips with a reason.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use floodway_core::{NewTask, QueueName};

use crate::Floodway;
use crate::serving::{Serving, producer, runtime, terminate};

/// Tasks of 4 s each on 3 s leases: every one needs a heartbeat (due after 2 s, a second of
/// slack for a loaded machine), and the jumps fall in the middle of the first ones.
const TASKS: usize = 16;

fn worker(floodway: &Floodway, url: &str, lib: &Path, clock_file: &Path, name: &str) -> Child {
    floodway
        .command(&[
            "worker", "--server", url, "--queue", "clockq=4", "--kind", "slow", "--run", "exec",
            "--exec", "sleep 4", "--lease", "3s", "--name", name,
        ])
        .env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", clock_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(floodway.scratch(&format!("{name}.log"))).unwrap())
        .spawn()
        .expect("floodway worker starts")
}

fn totals(url: &str) -> serde_json::Value {
    let rt = runtime();
    rt.block_on(async {
        let reply = reqwest_free_get(url, "/v1/queues/clockq").await;
        serde_json::from_str::<serde_json::Value>(&reply).unwrap()["totals"].clone()
    })
}

/// A GET over a plain TCP connection (the CLI's tests have no HTTP client of their own).
async fn reqwest_free_get(url: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    reply.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[test]
fn workers_whose_wall_clock_jumps_complete_every_task_exactly_once() {
    let Some(lib) = floodway_chaos::process::libfaketime() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI needs libfaketime (apt-get install faketime)");
        }
        println!("skipped: libfaketime is not installed (apt-get install faketime)");
        return;
    };
    let floodway = Floodway::new();
    let serving = Serving::start(&floodway, &[], &[]);
    let queue = QueueName::new("clockq").unwrap();
    runtime().block_on(async {
        let tasks = (0..TASKS)
            .map(|i| NewTask::json("slow", &serde_json::json!({ "i": i })).unwrap())
            .collect();
        producer(&serving.url, None)
            .enqueue(&queue, tasks)
            .await
            .unwrap();
    });

    let clock_file = floodway.scratch("faketime");
    std::fs::write(&clock_file, "+0\n").unwrap();
    let mut workers = [
        worker(&floodway, &serving.url, &lib, &clock_file, "w1"),
        worker(&floodway, &serving.url, &lib, &clock_file, "w2"),
    ];
    // The fault schedule: a day forward while the first tasks run, then a day back.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&clock_file, "+1d\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&clock_file, "-1d\n").unwrap();

    let started = Instant::now();
    let totals = loop {
        let totals = totals(&serving.url);
        if totals["completed"].as_u64() == Some(TASKS as u64) {
            break totals;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not done in 60 s: {totals}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for worker in &mut workers {
        terminate(worker);
        worker.wait().unwrap();
    }
    assert!(serving.stop().success());

    assert_eq!(totals["completed"], TASKS as u64, "{totals}");
    assert_eq!(
        totals["reserved"], TASKS as u64,
        "no task ran twice: {totals}"
    );
    assert_eq!(totals["leases_expired"], 0, "{totals}");
    assert_eq!(totals["stale_refused"], 0, "{totals}");
    assert_eq!(totals["retried"], 0, "{totals}");

    // The jumps reached the workers: their wall-clock log timestamps moved a day.
    let logs = std::fs::read_to_string(floodway.scratch("w1.log")).unwrap();
    let days: std::collections::BTreeSet<&str> = logs
        .lines()
        .filter_map(|line| line.get(..10))
        .filter(|date| date.starts_with("20"))
        .collect();
    assert!(
        days.len() >= 2,
        "the worker's clock never jumped: {days:?}\n{logs}"
    );
}
