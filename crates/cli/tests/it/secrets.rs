//! Secrets never reach the logs: a server and a worker run at trace level with canary tokens
//! (one valid, one wrong), and neither process's logs contain either canary.

use std::process::Stdio;

use floodway_core::{NewTask, QueueName};

use crate::Floodway;
use crate::serving::{Serving, config_file, producer, runtime};

const CANARY_VALID: &str = "fw_CANARY_valid_5b9d1e";
const CANARY_WRONG: &str = "fw_CANARY_wrong_7c2a4f";

#[test]
fn canary_tokens_never_reach_the_logs_at_trace_level() {
    let floodway = Floodway::new();
    let config = config_file(
        &floodway,
        "",
        &[(
            "canary",
            CANARY_VALID,
            "\"produce\", \"consume\", \"admin\"",
        )],
    );
    let trace = [("RUST_LOG", "trace")];
    let serving = Serving::start(
        &floodway,
        &["--config", config.to_str().unwrap(), "-vvv"],
        &trace,
    );
    let rt = runtime();
    rt.block_on(async {
        let queue = QueueName::new("secret").unwrap();
        let tasks = (0..5)
            .map(|i| NewTask::new("echo", i.to_string()))
            .collect();
        producer(&serving.url, Some(CANARY_VALID))
            .enqueue(&queue, tasks)
            .await
            .unwrap();
        let refused = producer(&serving.url, Some(CANARY_WRONG))
            .enqueue(&queue, vec![NewTask::new("echo", "0")])
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Some(floodway_server::wire::ErrorCode::Unauthenticated)
        );
    });
    let worker = floodway
        .command(&[
            "worker",
            "--server",
            &serving.url,
            "--token",
            CANARY_VALID,
            "--queue",
            "secret",
            "--kind",
            "echo",
            "--max-tasks",
            "5",
            "-vvv",
        ])
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        worker.status.success(),
        "{}",
        String::from_utf8_lossy(&worker.stderr)
    );
    // A wrong token on the worker's command line, which the server refuses at connect.
    let refused = floodway
        .command(&[
            "worker",
            "--server",
            &serving.url,
            "--queue",
            "secret",
            "--kind",
            "echo",
            "-vvv",
        ])
        .env("FLOODWAY_TOKEN", CANARY_WRONG)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let server_log_file = serving.stderr.clone();
    assert!(serving.stop().success());

    let server_logs = std::fs::read_to_string(&server_log_file).unwrap();
    let logs = [
        ("server", server_logs.clone()),
        (
            "worker",
            String::from_utf8_lossy(&worker.stderr).into_owned(),
        ),
        (
            "refused worker",
            String::from_utf8_lossy(&refused.stderr).into_owned(),
        ),
    ];
    // The logs are there, at the most detailed level each process has (the server's request
    // spans name the token that authenticated; the worker's HTTP client logs at trace), so
    // finding no canary means something.
    assert!(
        server_logs.contains("request answered") && server_logs.contains("token=\"canary\""),
        "no request logs: {server_logs}"
    );
    assert!(
        logs[1].1.contains("TRACE"),
        "the worker is not at trace level"
    );
    for (who, text) in &logs {
        for canary in [
            CANARY_VALID,
            CANARY_WRONG,
            &CANARY_VALID[3..],
            &CANARY_WRONG[3..],
        ] {
            assert!(
                !text.contains(canary),
                "the {who}'s logs hold a canary token"
            );
        }
    }
}
