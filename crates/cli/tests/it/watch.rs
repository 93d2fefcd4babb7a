//! The views that refresh and the progress bars, as real processes: `stats --watch` prints the
//! number of refreshes asked for and follows a running server's figures as they change, and
//! Ctrl-C ends it cleanly; `top` ranks queues by what is happening to them, not by size;
//! progress bars reach a terminal on stderr only, never stdout, and never with `--json`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;

use floodway_core::{NewTask, QueueName};
use serde_json::Value;

use crate::serving::{Serving, producer, runtime};
use crate::{BIN, Floodway};

/// A child process killed when the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Enqueues `n` tasks of `kind` into `queue` through the server at `url`.
fn enqueue(url: &str, queue: &str, kind: &str, n: usize) {
    let queue = QueueName::new(queue).unwrap();
    runtime().block_on(async {
        let producer = producer(url, None);
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let tasks = chunk
                .iter()
                .map(|i| NewTask::json(kind, &serde_json::json!({ "n": i })).unwrap())
                .collect();
            producer.enqueue(&queue, tasks).await.unwrap();
        }
    });
}

fn ready(line: &Value, queue: &str) -> u64 {
    line["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queue)
        .map_or(0, |q| q["ready"].as_u64().unwrap())
}

#[test]
fn stats_watch_prints_count_refreshes_as_json_lines_or_tables() {
    let floodway = Floodway::new();
    floodway.enqueue("emails", "send_email");
    floodway.enqueue("emails", "send_email");
    let stdout = floodway.ok(&[
        "stats",
        "--watch",
        "--count",
        "3",
        "--interval",
        "50ms",
        "--json",
    ]);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in &lines {
        assert_eq!(ready(line, "emails"), 2);
        assert!(line["at"].as_str().unwrap().ends_with('Z'));
    }

    // Not a terminal: the frames follow one another, each with its header and tables.
    let stdout = floodway.ok(&["stats", "--count", "2", "--interval", "50ms"]);
    assert_eq!(stdout.matches("floodway stats · ").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("emails").count(), 4, "two tables per frame");
    assert!(!stdout.contains('\x1b'), "no terminal codes in a pipe");
}

#[test]
fn stats_watch_follows_a_server_as_figures_change_and_ctrl_c_ends_it_cleanly() {
    let floodway = Floodway::new();
    let serving = Serving::start(&floodway, &[], &[]);
    enqueue(&serving.url, "orders", "charge", 2);

    // --count bounds the run if the change never shows: the test fails instead of hanging.
    let mut watch = Running(
        floodway
            .command(&[
                "stats",
                "--watch",
                "--server",
                &serving.url,
                "--interval",
                "50ms",
                "--count",
                "600",
                "--json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    let mut next = || -> Value {
        let line = lines
            .next()
            .expect("stats --watch ended before the change showed")
            .unwrap();
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(ready(&next(), "orders"), 2);
    enqueue(&serving.url, "orders", "charge", 3);
    let mut refreshes = 1;
    while ready(&next(), "orders") != 5 {
        refreshes += 1;
    }
    assert!(refreshes < 600);

    // Ctrl-C: a clean stop, exit code 0, nothing on stderr but the signal's own note.
    let status = std::process::Command::new("kill")
        .args(["-INT", &watch.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = watch.0.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.success(),
        "stats --watch after Ctrl-C: {status}: {stderr}"
    );
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(serving.stop().success());
}

#[test]
fn top_ranks_queues_by_throughput_not_by_depth() {
    let floodway = Floodway::new();
    let serving = Serving::start(&floodway, &[], &[]);
    // `busy` is being worked through; `deep` holds more tasks but nothing happens to them.
    enqueue(&serving.url, "busy", "echo", 20_000);
    enqueue(&serving.url, "deep", "echo", 30_000);

    // A worker on `busy`, printing each task: its first line says work has begun, and 20,000
    // tasks outlast the measurement.
    let mut worker = Running(
        floodway
            .command(&[
                "worker",
                "--server",
                &serving.url,
                "--queue",
                "busy=4",
                "--kind",
                "echo",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (started, begun) = mpsc::channel();
    let output = worker.0.stdout.take().unwrap();
    // Drain the worker's stdout, so it never blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut lines = BufReader::new(output).lines();
        if lines.next().is_some() {
            let _ = started.send(());
        }
        lines.count()
    });
    begun.recv().expect("the worker completed a task");

    // Several frames: on a loaded machine an interval may pass with no completion (each ack
    // waits for an fsync), and then the tie is broken by depth. Whenever `busy` completes
    // tasks, it ranks first.
    let top: Vec<Value> = floodway
        .ok(&[
            "top",
            "--server",
            &serving.url,
            "--count",
            "8",
            "--interval",
            "500ms",
            "--json",
        ])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(top.len(), 8);
    let mut active_frames = 0;
    for frame in &top {
        let queues = frame["queues"].as_array().unwrap();
        let row = |name: &str| queues.iter().find(|q| q["queue"] == name).unwrap();
        let (busy, deep) = (row("busy"), row("deep"));
        assert_eq!(deep["completed_per_second"], 0.0);
        assert_eq!(deep["ready"], 30_000);
        // Nothing completes in `deep`: its backlog is its oldest task's age.
        assert_eq!(deep["backlog_seconds"], deep["oldest_ready_age_seconds"]);
        assert!(frame["interval_seconds"].as_f64().unwrap() >= 0.5);
        if busy["completed_per_second"].as_f64().unwrap() > 0.0 {
            active_frames += 1;
            assert_eq!(queues[0]["queue"], "busy", "{frame}");
        } else {
            assert_eq!(
                queues[0]["queue"], "deep",
                "a tie goes to the deeper queue: {frame}"
            );
        }
    }
    assert!(
        active_frames > 0,
        "the worker completed nothing in 4s: {top:?}"
    );

    // -n limits the rows; --once prints one table for people.
    let once = floodway.ok(&[
        "top",
        "--server",
        &serving.url,
        "--once",
        "--interval",
        "100ms",
        "-n",
        "1",
    ]);
    assert_eq!(once.matches("floodway top · ").count(), 1);
    let shown = ["busy", "deep"]
        .iter()
        .filter(|q| once.contains(*q))
        .count();
    assert_eq!(shown, 1, "{once}");

    crate::serving::terminate(&worker.0);
    assert!(worker.0.wait().unwrap().success());
    drain.join().unwrap();
    assert!(serving.stop().success());
}

/// Runs `floodway <args>` with stderr on a pseudo-terminal (util-linux `script`) and stdout
/// redirected to a file; returns (what the terminal showed, what stdout got).
fn on_a_terminal(floodway: &Floodway, args: &str) -> Option<(String, String)> {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").is_err(),
            "`script` (util-linux) is needed in CI"
        );
        eprintln!("skipped: `script` (util-linux) is not installed");
        return None;
    }
    let stdout = floodway.scratch(&format!("stdout-{}.txt", fastrand::u32(..)));
    let command = format!(
        "{BIN} --data {} {args} > {}",
        floodway.data().display(),
        stdout.display()
    );
    let output = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env_remove("FLOODWAY_DATA")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    Some((
        String::from_utf8_lossy(&output.stdout).into_owned(),
        std::fs::read_to_string(&stdout).unwrap(),
    ))
}

#[test]
fn progress_goes_to_the_terminal_on_stderr_only_and_never_with_json() {
    let floodway = Floodway::new();
    let lines = floodway.scratch("tasks.jsonl");
    let text: String = (0..20_000)
        .map(|i| format!("{{\"kind\": \"k\", \"payload\": {{\"n\": {i}}}}}\n"))
        .collect();
    std::fs::write(&lines, text).unwrap();
    let from = format!("enqueue q --from {}", lines.display());
    let Some((terminal, stdout)) = on_a_terminal(&floodway, &from) else {
        return;
    };
    // The bar's rate ("(1234/s)") was drawn on the terminal, and stdout got only the ids.
    assert!(terminal.contains("/s)"), "no progress drawn: {terminal:?}");
    assert_eq!(stdout.lines().count(), 20_000);
    assert!(!stdout.contains("/s)"));

    let (terminal, stdout) = on_a_terminal(&floodway, &format!("{from} --json")).unwrap();
    assert!(
        !terminal.contains("/s)"),
        "progress with --json: {terminal:?}"
    );
    assert_eq!(stdout.lines().count(), 20_000);
    assert!(stdout.lines().all(|l| l.starts_with('{')));
}
