//! `floodway worker --listen`: a worker process serves its metrics and its probes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

use floodway_core::{NewTask, QueueName};

use crate::Floodway;
use crate::serving::{Serving, producer, runtime, terminate};

/// `GET path` from `address` over plain HTTP/1.1: the status and the body.
fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("the worker's endpoint accepts");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

#[test]
fn a_worker_process_serves_its_metrics_and_probes() {
    let floodway = Floodway::new();
    let serving = Serving::start(&floodway, &[], &[]);
    let jobs = QueueName::new("jobs").unwrap();
    runtime().block_on(async {
        let tasks = (0..6)
            .map(|i| NewTask::json("echo", &serde_json::json!({ "n": i })).unwrap())
            .collect();
        producer(&serving.url, None)
            .enqueue(&jobs, tasks)
            .await
            .unwrap();
    });

    // One handler slot: when the sixth task is printed, the first five were acked, so their
    // handler durations are recorded.
    let mut worker = floodway
        .command(&[
            "worker",
            "--server",
            &serving.url,
            "--queue",
            "jobs=1",
            "--kind",
            "echo",
            "--name",
            "pod-1",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(worker.stderr.take().unwrap());
    let address = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the worker ended before it listened"
        );
        if let Some(rest) = line.trim().strip_prefix("metrics on http://") {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    // Keep draining the worker's logs so it never blocks on a full pipe.
    let logs = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let mut stdout = BufReader::new(worker.stdout.take().unwrap());
    for _ in 0..6 {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "a task is printed"
        );
    }

    let (status, text) = get(&address, "/metrics");
    assert_eq!(status, 200, "{text}");
    let labels = "worker=\"pod-1\",queue=\"jobs\"";
    for line in [
        format!("floodway_worker_concurrency{{{labels}}} 1\n"),
        format!("floodway_worker_prefetched{{{labels}}} 0\n"),
        "floodway_worker_timeouts_total{worker=\"pod-1\",kind=\"echo\"} 0\n".to_owned(),
        "floodway_worker_overloaded_total{worker=\"pod-1\",kind=\"echo\"} 0\n".to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    for series in ["floodway_worker_leases", "floodway_worker_running"] {
        assert!(
            text.contains(&format!("{series}{{{labels}}} ")),
            "{series}:\n{text}"
        );
    }
    let handled = format!(
        "floodway_worker_handler_duration_seconds_count{{{labels},kind=\"echo\",outcome=\"complete\"}} "
    );
    let count: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix(&handled))
        .unwrap_or_else(|| panic!("missing {handled} in\n{text}"))
        .parse()
        .unwrap();
    assert!((5..=6).contains(&count), "{count} handler runs recorded");
    assert_eq!(text.matches("# TYPE floodway_worker_running ").count(), 1);

    assert_eq!(
        get(&address, "/healthz"),
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    assert_eq!(
        get(&address, "/readyz"),
        (200, r#"{"status":"ready"}"#.to_owned())
    );
    // Without its server the worker is alive but not ready.
    assert!(serving.stop().success());
    assert_eq!(get(&address, "/healthz").0, 200);
    let (status, body) = get(&address, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"unavailable\""), "{body}");

    terminate(&worker);
    let status = worker.wait().unwrap();
    let logs = logs.join().unwrap();
    assert!(status.success(), "{status}: {logs}");
    assert!(
        TcpStream::connect(&address).is_err(),
        "the endpoint closes with the worker"
    );
}
