//! `floodway serve --broker redis://…`: the server in front of a real `redis-server` this test
//! starts on a free loopback port, used by a producer and a remote worker over HTTP.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floodway_core::{Broker, NewTask, QueueName, ReserveRequest, TaskState};

use crate::Floodway;
use crate::serving::{Serving, remote, runtime};

/// A `redis-server` without persistence, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one, or returns `None` (outside CI only) when `redis-server` is not installed.
    fn start() -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            assert!(
                std::env::var("CI").is_err(),
                "CI must run the Redis tests: install redis-server"
            );
            eprintln!("skipping serve --broker redis: redis-server is not on PATH");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--logfile", ""])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        // Redis says when it is ready; wait for that line, not for a timer.
        let stdout = child.stdout.take().unwrap();
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("Ready to accept connections"));
        assert!(ready, "redis-server on port {port} did not become ready");
        Some(RedisServer {
            child,
            port,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_runs_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let floodway = Floodway::new();
    let serving = Serving::start(&floodway, &["--broker", &redis.url()], &[]);
    let ready = http_status(&serving.url, "/readyz");
    assert_eq!(ready, 200, "a reachable Redis is ready");

    runtime().block_on(async {
        let broker = remote(&serving.url, None).await;
        let queue = QueueName::new("over-redis").unwrap();
        let ids = broker
            .enqueue(&queue, vec![NewTask::new("k", r#"{"n":1}"#)])
            .await
            .unwrap();
        let held = broker
            .reserve(ReserveRequest::new(
                queue.clone(),
                1,
                Duration::from_secs(30),
            ))
            .await
            .unwrap();
        assert_eq!(held[0].lease.task_id, ids[0].id);
        assert_eq!(
            broker.ack(&[held[0].lease.as_ref()]).await.unwrap(),
            vec![Ok(())]
        );
        assert_eq!(
            broker.get(ids[0].id).await.unwrap().state,
            TaskState::Completed
        );
    });

    // The tasks live in Redis, not in the server: a second server sees them.
    let second = Serving::start(&floodway, &["--broker", &redis.url()], &[]);
    runtime().block_on(async {
        let broker = remote(&second.url, None).await;
        let stats = broker
            .stats(Some(&QueueName::new("over-redis").unwrap()))
            .await
            .unwrap();
        assert_eq!(stats[0].totals.completed, 1);
    });
    assert!(second.stop().success());
    assert!(serving.stop().success());
}

#[test]
fn serve_refuses_an_unreachable_redis_with_a_clear_error() {
    let floodway = Floodway::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let output = floodway.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        &format!("redis://app:canary-secret@127.0.0.1:{port}"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to Redis"), "{stderr}");
    assert!(
        !stderr.contains("canary-secret"),
        "the password leaked: {stderr}"
    );
}

/// The status of `GET url+path`, over a plain TCP connection (no client library needed).
fn http_status(url: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}
