//! `floodway serve`, `floodway worker` and `floodway token` as real processes: a Rust remote
//! worker works tasks from a real server; configuration comes from file, environment and
//! flags in that order; unsafe or unknown setups are refused with exit code 2.

use std::collections::HashSet;
use std::process::Stdio;

use floodway_core::{Broker, NewTask, QueueName};
use serde_json::Value;

use crate::Floodway;
use crate::serving::{Serving, config_file, producer, remote, runtime};

const PRODUCER: &str = "fw_test_producer_token";
const WORKER: &str = "fw_test_worker_token";
const ADMIN: &str = "fw_test_admin_token";

fn tokens() -> [(&'static str, &'static str, &'static str); 3] {
    [
        ("producer", PRODUCER, "\"produce\""),
        ("worker", WORKER, "\"consume\""),
        ("admin", ADMIN, "\"admin\", \"produce\", \"consume\""),
    ]
}

#[test]
fn a_rust_remote_worker_process_works_tasks_from_floodway_serve() {
    let floodway = Floodway::new();
    let config = config_file(&floodway, "", &tokens());
    let serving = Serving::start(&floodway, &["--config", config.to_str().unwrap()], &[]);
    let rt = runtime();
    let jobs = QueueName::new("jobs").unwrap();
    let ids: HashSet<String> = rt.block_on(async {
        let tasks = (0..20)
            .map(|i| NewTask::json("echo", &serde_json::json!({ "n": i })).unwrap())
            .collect();
        producer(&serving.url, Some(PRODUCER))
            .enqueue(&jobs, tasks)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id.to_string())
            .collect()
    });

    // --run print: every task once, as a JSON line, then the worker stops by itself.
    let output = floodway
        .command(&[
            "worker",
            "--server",
            &serving.url,
            "--queue",
            "jobs=4",
            "--kind",
            "echo",
            "--max-tasks",
            "20",
        ])
        .env("FLOODWAY_TOKEN", WORKER)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(printed.len(), 20);
    let seen: HashSet<String> = printed
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ids, "every task, once");
    assert!(
        printed
            .iter()
            .all(|t| t["payload"]["n"].is_u64() && t["kind"] == "echo")
    );

    // --run exec: a shell command per task; exit 0 completes, 65 dead-letters.
    let shell = QueueName::new("shell").unwrap();
    let out = floodway.scratch("exec-out.txt");
    rt.block_on(async {
        let tasks = vec![
            NewTask::new("append", r#"{"line":"one"}"#),
            NewTask::new("append", r#"{"line":"two"}"#),
            NewTask::new("append", r#"{"line":"refuse"}"#),
        ];
        producer(&serving.url, Some(PRODUCER))
            .enqueue(&shell, tasks)
            .await
            .unwrap();
    });
    let script = format!(
        "payload=$(cat); case \"$payload\" in *refuse*) echo 'cannot do this' >&2; exit 65;; esac; \
         echo \"$FLOODWAY_TASK_KIND $payload\" >> {}",
        out.display()
    );
    let output = floodway
        .command(&[
            "worker",
            "--server",
            &serving.url,
            "--token",
            WORKER,
            "--queue",
            "shell=1",
            "--kind",
            "append",
            "--run",
            "exec",
            "--exec",
            &script,
            "--max-tasks",
            "3",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [r#"append {"line":"one"}"#, r#"append {"line":"two"}"#]
    );
    rt.block_on(async {
        let admin = remote(&serving.url, Some(ADMIN)).await;
        let jobs = &admin.stats(Some(&jobs)).await.unwrap()[0];
        assert_eq!(jobs.totals.completed, 20);
        let shell = &admin.stats(Some(&shell)).await.unwrap()[0];
        assert_eq!(shell.totals.completed, 2);
        assert_eq!(shell.totals.dead.permanent_failure, 1);
        let dead = admin
            .list(floodway_core::TaskFilter {
                queue: Some(QueueName::new("shell").unwrap()),
                state: Some(floodway_core::TaskState::Dead),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            dead[0]
                .last_error
                .as_deref()
                .unwrap()
                .contains("cannot do this")
        );
    });
    assert!(serving.stop().success(), "serve stops cleanly on SIGTERM");
}

#[test]
fn configuration_comes_from_the_file_then_the_environment_then_flags() {
    let floodway = Floodway::new();
    // The file asks for a public address without tokens, which is refused; the --listen flag
    // (given by Serving::start) wins and makes it loopback. The environment lowers the batch
    // limit the file set.
    let config = config_file(
        &floodway,
        "listen = \"0.0.0.0:0\"\n[limits]\nbatch_size_max = 5\n",
        &[],
    );
    let serving = Serving::start(
        &floodway,
        &["--config", config.to_str().unwrap()],
        &[("FLOODWAY_SERVE_LIMITS__BATCH_SIZE_MAX", "2")],
    );
    let rt = runtime();
    let error = rt.block_on(async {
        let tasks = (0..3).map(|_| NewTask::new("k", "null")).collect();
        producer(&serving.url, None)
            .enqueue(&QueueName::new("q").unwrap(), tasks)
            .await
            .unwrap_err()
    });
    let text = error.to_string();
    assert!(
        text.contains("limit of 2"),
        "the environment's limit applies: {text}"
    );
    assert!(serving.stop().success());

    let output = floodway
        .command(&["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure"), "{stderr}");
}

/// The status line and headers of `GET path`, over a plain socket.
fn head_of(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let address = url.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split("\r\n\r\n").next().unwrap().to_lowercase()
}

#[test]
fn serve_offers_the_dashboard_at_the_root_unless_told_not_to() {
    let floodway = Floodway::new();
    let serving = Serving::start(&floodway, &[], &[]);
    let page = head_of(&serving.url, "/");
    assert!(page.starts_with("http/1.1 200"), "{page}");
    assert!(page.contains("content-type: text/html"), "{page}");
    assert!(serving.stop().success());

    let serving = Serving::start(&floodway, &["--no-dashboard"], &[]);
    let page = head_of(&serving.url, "/");
    assert!(page.starts_with("http/1.1 404"), "{page}");
    assert!(head_of(&serving.url, "/healthz").starts_with("http/1.1 200"));
    assert!(serving.stop().success());
}

#[test]
fn unsafe_or_unknown_setups_are_refused_with_exit_code_2() {
    let floodway = Floodway::new();
    let line = floodway.fails(&["serve", "--listen", "0.0.0.0:0"], 2);
    assert!(
        line.contains("no tokens configured") && line.contains("--insecure"),
        "{line}"
    );
    let line = floodway.fails(&["serve", "--broker", "ftp://x"], 2);
    assert!(line.contains("unknown broker"), "{line}");
    let line = floodway.fails(&["serve", "--config", "/no/such/file.toml"], 2);
    assert!(line.contains("no configuration file"), "{line}");
    let bad = config_file(&floodway, "[limits]\nrequest_timeout = \"1s\"\n", &[]);
    let line = floodway.fails(&["serve", "--config", bad.to_str().unwrap()], 2);
    assert!(line.contains("limits.request_timeout"), "{line}");

    // With --insecure, a public address without tokens is served.
    let serving = Serving::start(&floodway, &["--listen", "0.0.0.0:0", "--insecure"], &[]);
    assert!(
        serving.url.starts_with("http://0.0.0.0:"),
        "{}",
        serving.url
    );
    assert!(serving.stop().success());
}

#[test]
fn a_token_made_by_floodway_token_is_accepted_with_its_scopes() {
    let floodway = Floodway::new();
    let made = floodway.json(&[
        "token",
        "--name",
        "orders-api",
        "--scope",
        "produce",
        "--queue",
        "orders*",
    ]);
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fw_"));
    let config = floodway.scratch("from-token.toml");
    std::fs::write(&config, made["config"].as_str().unwrap()).unwrap();
    let serving = Serving::start(&floodway, &["--config", config.to_str().unwrap()], &[]);
    let rt = runtime();
    rt.block_on(async {
        let producer = producer(&serving.url, Some(&token));
        producer
            .enqueue_one(
                &QueueName::new("orders.eu").unwrap(),
                NewTask::new("k", "1"),
            )
            .await
            .expect("produce on orders* is allowed");
        let refused = producer
            .enqueue_one(&QueueName::new("payments").unwrap(), NewTask::new("k", "1"))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Some(floodway_server::wire::ErrorCode::Forbidden)
        );
    });
    assert!(
        !serving.logs().contains(&token),
        "the token never reaches the server's logs"
    );
    assert!(serving.stop().success());
}
