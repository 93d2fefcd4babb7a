//! Real floodway processes for the multi-process and fault tests.
//!
//! This test binary, run again with `FLOODWAY_REDIS_CHILD` set to a JSON [`Role`], becomes a
//! producer or a worker process: its test `child_role` runs the role and exits the process;
//! in a normal test run it sees no role and passes at once. A child reports what it does as
//! `@@ ...` lines on stdout (libtest's own lines are ignored), which the parent reads as
//! events: waiting on them, never on time.
//!
//! - A producer enqueues tasks `n` in `first .. first + count` (kind `job`, payload `{"n":n}`,
//!   idempotency key `job-<n>`, so that retrying a batch whose outcome is unknown cannot
//!   duplicate it) in batches, retrying a failed batch until it succeeds or the role's
//!   deadline passes, and prints `@@ enqueued <n> <id>` for every acknowledged task,
//!   `@@ error <message>` for every failed call and `@@ done` at the end.
//! - A worker runs the floodway worker runtime with a handler for `job` that prints
//!   `@@ started <n> <id> <attempt> <fence>`, then (unless `n` is one it must hang on) `@@ ran
//!   <n> <id> <attempt> <fence>` and completes. It prints `@@ ready` once it is serving and
//!   shuts down gracefully when its stdin closes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use floodway_core::{Broker, NewTask, QueueName};
use floodway_redis::{Options, RedisBroker};
use floodway_worker::{Outcome, TaskContext, Worker};
use serde::{Deserialize, Serialize};

const ROLE_ENV: &str = "FLOODWAY_REDIS_CHILD";

/// What a child process does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Role {
    Producer {
        url: String,
        prefix: String,
        queue: String,
        first: u64,
        count: u64,
        batch: usize,
        /// How long the producer keeps retrying a failing batch before it gives up.
        retry_for_ms: u64,
        command_timeout_ms: u64,
    },
    Worker {
        url: String,
        prefix: String,
        queue: String,
        name: String,
        concurrency: usize,
        lease_ms: u64,
        /// Tasks whose handler never returns (the process is killed while running them).
        hang_on: Vec<u64>,
    },
}

#[derive(Deserialize)]
struct Job {
    n: u64,
}

fn options(prefix: &str) -> Options {
    Options {
        prefix: prefix.to_owned(),
        maintenance_interval: Some(Duration::from_millis(200)),
        ..Options::default()
    }
}

/// Runs the role given in the environment, if any, and exits the process.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let role: Role = serde_json::from_str(&role).expect("a valid role");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let code = runtime.block_on(async move {
        match role {
            Role::Producer { .. } => produce(role).await,
            Role::Worker { .. } => work(role).await,
        }
    });
    std::process::exit(code);
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@ {line}");
    let _ = out.flush();
}

async fn produce(role: Role) -> i32 {
    let Role::Producer {
        url,
        prefix,
        queue,
        first,
        count,
        batch,
        retry_for_ms,
        command_timeout_ms,
    } = role
    else {
        unreachable!()
    };
    let options = Options {
        command_timeout: Duration::from_millis(command_timeout_ms),
        ..options(&prefix)
    };
    let retry_for = Duration::from_millis(retry_for_ms);
    let started = Instant::now();
    let broker = loop {
        match RedisBroker::connect(&url, options.clone()).await {
            Ok(broker) => break broker,
            Err(err) if started.elapsed() < retry_for => {
                say(&format!("error {err}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => {
                say(&format!("error {err}"));
                return 2;
            }
        }
    };
    let queue = QueueName::new(&queue).expect("a valid queue");
    let end = first + count;
    let mut next = first;
    while next < end {
        let last = (next + batch as u64).min(end);
        let tasks: Vec<NewTask> = (next..last)
            .map(|n| {
                NewTask::new("job", format!(r#"{{"n":{n}}}"#)).idempotency_key(format!("job-{n}"))
            })
            .collect();
        let failing_since = Instant::now();
        loop {
            match broker.enqueue(&queue, tasks.clone()).await {
                Ok(answers) => {
                    for (n, answer) in (next..last).zip(answers) {
                        say(&format!("enqueued {n} {}", answer.id));
                    }
                    break;
                }
                Err(err) => {
                    say(&format!("error {err}"));
                    if failing_since.elapsed() > retry_for {
                        return 3;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        next = last;
    }
    say("done");
    0
}

async fn work(role: Role) -> i32 {
    let Role::Worker {
        url,
        prefix,
        queue,
        name,
        concurrency,
        lease_ms,
        hang_on,
    } = role
    else {
        unreachable!()
    };
    let broker = match RedisBroker::connect(&url, options(&prefix)).await {
        Ok(broker) => Arc::new(broker),
        Err(err) => {
            say(&format!("error {err}"));
            return 2;
        }
    };
    let hang_on = Arc::new(hang_on);
    let worker = Worker::builder(broker)
        .name(name)
        .queue(queue, concurrency)
        .lease_duration(Duration::from_millis(lease_ms))
        .poll_wait(Duration::from_secs(1))
        .grace_period(Duration::from_secs(2))
        .handler("job", move |ctx: TaskContext, job: Job| {
            let hang_on = hang_on.clone();
            async move {
                let line = format!("{} {} {} {}", job.n, ctx.id(), ctx.attempt(), ctx.fence());
                say(&format!("started {line}"));
                if hang_on.contains(&job.n) {
                    std::future::pending::<()>().await;
                }
                say(&format!("ran {line}"));
                Outcome::Complete
            }
        })
        .build()
        .expect("a valid worker");
    say("ready");
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        })
        .await;
    };
    worker.run(stdin_closed).await;
    say("stopped");
    0
}

/// A child process and the events it printed.
pub(crate) struct ChildProcess {
    pub(crate) name: String,
    child: Child,
    events: Receiver<String>,
    /// The last events received, for failure messages.
    recent: std::collections::VecDeque<String>,
}

impl ChildProcess {
    pub(crate) fn spawn(name: &str, role: &Role) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "children::child_role",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                ROLE_ENV,
                serde_json::to_string(role).expect("a role serialises"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test binary runs again");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest prints "test children::child_role ... " without a newline before
                // the role's first line, so an event may start mid-line.
                if let Some((_, event)) = line.split_once("@@ ")
                    && tx.send(event.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        ChildProcess {
            name: name.to_owned(),
            child,
            events,
            recent: std::collections::VecDeque::new(),
        }
    }

    /// The next event, or `None` once the child exited and said everything.
    pub(crate) fn next(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(event) => {
                if self.recent.len() == 20 {
                    self.recent.pop_front();
                }
                self.recent.push_back(event.clone());
                Some(event)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no event before the deadline; the last ones were {:?}",
                self.name, self.recent
            ),
        }
    }

    /// Events until one satisfies `until` (included), by the deadline.
    pub(crate) fn until(&mut self, deadline: Instant, until: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.next(deadline) {
                Some(event) => {
                    let done = until(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                None => panic!(
                    "{} exited before the awaited event; it said {seen:?}",
                    self.name
                ),
            }
        }
    }

    /// Every event until the child exits, by the deadline; answers them and its exit code.
    pub(crate) fn finish(mut self, deadline: Instant) -> (Vec<String>, Option<i32>) {
        drop(self.child.stdin.take());
        let mut seen = Vec::new();
        while let Some(event) = self.next(deadline) {
            seen.push(event);
        }
        let status = self.child.wait().expect("waiting for the child");
        (seen, status.code())
    }

    /// Kills the child with SIGKILL and answers what it said before it died.
    pub(crate) fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("the child can be killed");
        self.child.wait().expect("waiting for the child");
        self.events.try_iter().collect()
    }
}

/// An event's words after its first (the event's name).
pub(crate) fn fields(event: &str) -> Vec<&str> {
    event.split_whitespace().skip(1).collect()
}

/// Connects to `url` with `prefix` from the test process itself (server time).
pub(crate) async fn broker(url: &str, prefix: &str) -> RedisBroker {
    RedisBroker::connect(
        url,
        Options {
            maintenance_interval: None,
            ..options(prefix)
        },
    )
    .await
    .expect("connecting to the test Redis")
}

/// Waits (polling, bounded: Redis announces no event for it) until `queue` holds no waiting
/// or active task and `completed` tasks completed.
pub(crate) async fn drained(
    broker: &RedisBroker,
    queue: &QueueName,
    completed: u64,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let stats = broker.stats(Some(queue)).await.expect("stats");
        let stats = &stats[0];
        if stats.totals.completed >= completed && stats.length() == 0 && stats.counts.active == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the queue did not drain: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
