//! Metrics end to end: a real server and a real worker (over HTTP) move tasks (a retry and a
//! dead letter among them); then `/metrics` of the server, and the library exporter serving
//! the worker's and a producer's registry, must hold every metric docs/metrics.md names, with
//! values that match what happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use floodway_client::{ClientConfig, HttpBroker, Producer, ProducerConfig};
use floodway_core::{Jitter, NewTask, QueueName, RetryPolicy};
use floodway_metrics::Registry;
use floodway_worker::{AimdConfig, Outcome, TaskContext, Worker};
use serde_json::Value;

use crate::support::{Api, config_with_tokens, http_client, secret};

/// A safety net so that a broken test fails instead of hanging; never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(60);

/// Every metric docs/metrics.md lists, with its type and source.
fn documented() -> Vec<(String, String, String)> {
    include_str!("../../../../docs/metrics.md")
        .lines()
        .filter(|line| line.starts_with("| `floodway_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_owned(),
                cells[2].to_owned(),
                cells[4].to_owned(),
            )
        })
        .collect()
}

/// An exposition as series (name and labels, as written) to values; checks that each
/// metric's HELP and TYPE come once, before its series.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed: Vec<&str> = Vec::new();
    let mut series = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(!typed.contains(&name), "a second TYPE for {name}");
            typed.push(name);
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, value) = line.rsplit_once(' ').expect("a series and a value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("a number: {line}")),
            };
            assert!(
                series.insert(name.to_owned(), value).is_none(),
                "series {name} appears twice"
            );
        }
    }
    series
}

/// The value of `series`, which must be present.
fn value(series: &HashMap<String, f64>, name: &str) -> f64 {
    *series
        .get(name)
        .unwrap_or_else(|| panic!("no series {name}; have {:?}", sorted(series)))
}

fn sorted(series: &HashMap<String, f64>) -> Vec<&String> {
    let mut names: Vec<&String> = series.keys().collect();
    names.sort();
    names
}

/// True when some series of `metric` is present (for a histogram, its `_count`).
fn has_metric(series: &HashMap<String, f64>, metric: &str, kind: &str) -> bool {
    let name = if kind == "histogram" {
        format!("{metric}_count")
    } else {
        metric.to_owned()
    };
    series
        .keys()
        .any(|s| s == &name || s.starts_with(&format!("{name}{{")))
}

async fn get(url: &str) -> (u16, String) {
    let response = http_client()
        .get(url)
        .timeout(PATIENCE)
        .send()
        .await
        .expect("the endpoint answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_in_a_real_scrape_with_what_happened() {
    let mut api = Api::start().await;
    let orders = QueueName::new("orders").unwrap();
    let registry = Arc::new(Registry::new());

    // A producer, and a worker over HTTP, both registered with the process's registry.
    let producer = Producer::new(ClientConfig::new(&api.url), ProducerConfig::default())
        .unwrap()
        .metrics(&registry, "checkout")
        .unwrap();
    let remote = Arc::new(
        HttpBroker::connect(ClientConfig::new(&api.url))
            .await
            .unwrap(),
    );
    let worker = Worker::builder(remote.clone())
        .name("worker-1")
        .queue("orders", 4)
        .poll_wait(Duration::from_millis(100))
        .metrics(registry.clone())
        .adaptive(
            "ok",
            AimdConfig {
                min: 1,
                max: 16,
                initial: 4,
                ..AimdConfig::default()
            },
        )
        .handler("ok", |_: TaskContext, _: Value| async { Outcome::Complete })
        .handler("flaky", |ctx: TaskContext, _: Value| async move {
            if ctx.attempt() == 1 {
                Outcome::retry("the first attempt fails")
            } else {
                Outcome::Complete
            }
        })
        .handler("bad", |_: TaskContext, _: Value| async {
            Outcome::fail("this task can never succeed")
        })
        .build()
        .unwrap();
    let handle = worker.handle();
    let running = tokio::spawn(worker.run(std::future::pending()));

    // The library exporter: the registry and the probes, on a port of their own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exporter_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_exporter, exporter_stopped) = tokio::sync::oneshot::channel::<()>();
    let exporter = tokio::spawn(floodway_server::metrics::serve(
        listener,
        floodway_server::metrics::router(registry.clone())
            .merge(floodway_server::metrics::probes(remote.clone())),
        async {
            let _ = exporter_stopped.await;
        },
    ));

    let second_attempt_later = RetryPolicy {
        max_attempts: 2,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
        backoff_multiplier: 1.0,
        jitter: Jitter::None,
    };
    let tasks = vec![
        NewTask::new("ok", "{}"),
        NewTask::new("ok", "{}"),
        NewTask::new("ok", "{}"),
        NewTask::new("flaky", "{}").retry(second_attempt_later),
        NewTask::new("bad", "{}"),
    ];
    producer.enqueue(&orders, tasks).await.unwrap();
    tokio::time::timeout(
        PATIENCE,
        handle.wait_for(|r| r.retried == 1 && r.completed == 3 && r.dead_lettered == 1),
    )
    .await
    .unwrap()
    .unwrap();
    // The retry is due a second later on the broker's clock.
    api.clock.advance(Duration::from_secs(1));
    tokio::time::timeout(PATIENCE, handle.wait_for(|r| r.completed == 4))
        .await
        .unwrap()
        .unwrap();

    // The server's /metrics: every queue and server metric of the doc.
    let (status, text) = get(&format!("{}/metrics", api.url)).await;
    assert_eq!(status, 200, "{text}");
    let server = parse(&text);
    let documented = documented();
    assert!(documented.len() >= 30, "the doc lists the metrics");
    for (metric, kind, source) in &documented {
        if source == "queue" || source == "server" {
            assert!(
                has_metric(&server, metric, kind),
                "/metrics lacks {metric}:\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {metric} ")),
                "{metric} has no HELP"
            );
        }
    }
    let q = |name: &str| value(&server, &format!("{name}{{queue=\"orders\"}}"));
    let depth = |state: &str| {
        value(
            &server,
            &format!("floodway_queue_depth{{queue=\"orders\",state=\"{state}\"}}"),
        )
    };
    let dead = |reason: &str| {
        value(
            &server,
            &format!("floodway_tasks_dead_lettered_total{{queue=\"orders\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(
        (
            depth("completed"),
            depth("dead"),
            depth("ready"),
            depth("active")
        ),
        (4.0, 1.0, 0.0, 0.0)
    );
    assert_eq!(q("floodway_tasks_enqueued_total"), 5.0);
    assert_eq!(
        q("floodway_tasks_reserved_total"),
        6.0,
        "five tasks, one twice"
    );
    assert_eq!(q("floodway_tasks_completed_total"), 4.0);
    assert_eq!(q("floodway_tasks_retried_total"), 1.0);
    assert_eq!(dead("permanent_failure"), 1.0);
    assert_eq!(dead("max_attempts"), 0.0);
    for zero in [
        "floodway_tasks_deduplicated_total",
        "floodway_tasks_released_total",
        "floodway_tasks_replayed_total",
        "floodway_tasks_cancelled_total",
        "floodway_dead_letters_dropped_total",
        "floodway_enqueues_rejected_full_total",
        "floodway_enqueues_rejected_overloaded_total",
        "floodway_effects_recorded_total",
        "floodway_leases_expired_total",
        "floodway_stale_refused_total",
        "floodway_queue_paused",
        "floodway_queue_refusing",
        "floodway_queue_oldest_ready_age_seconds",
        "floodway_queue_backlog_seconds",
    ] {
        assert_eq!(q(zero), 0.0, "{zero}");
    }
    assert!(q("floodway_queue_completions_per_second") >= 0.0);
    // Every reservation is in the start latency histogram; on the manual clock each task was
    // reserved the moment it was due.
    assert_eq!(q("floodway_task_start_latency_seconds_count"), 6.0);
    assert_eq!(
        value(
            &server,
            "floodway_task_start_latency_seconds_bucket{queue=\"orders\",le=\"0.001\"}"
        ),
        6.0
    );
    let reserve = "route=\"/v1/queues/{queue}/reserve\",method=\"POST\"";
    assert!(
        value(
            &server,
            &format!("floodway_http_requests_total{{{reserve},status=\"200\"}}")
        ) >= 2.0
    );
    assert!(
        value(
            &server,
            &format!("floodway_http_request_duration_seconds_count{{{reserve}}}")
        ) >= 2.0
    );
    let enqueue = "route=\"/v1/queues/{queue}/tasks\",method=\"POST\"";
    assert_eq!(
        value(
            &server,
            &format!("floodway_http_requests_total{{{enqueue},status=\"201\"}}")
        ),
        1.0
    );

    // The library exporter: every worker and producer metric of the doc.
    let (status, text) = get(&format!("{exporter_url}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    let exported = parse(&text);
    for (metric, kind, source) in &documented {
        if source == "worker" || source == "producer" {
            assert!(
                has_metric(&exported, metric, kind),
                "the exporter lacks {metric}:\n{text}"
            );
        }
    }
    let w = "worker=\"worker-1\",queue=\"orders\"";
    assert_eq!(
        value(&exported, &format!("floodway_worker_concurrency{{{w}}}")),
        4.0
    );
    for idle in ["leases", "running", "prefetched"] {
        assert_eq!(
            value(&exported, &format!("floodway_worker_{idle}{{{w}}}")),
            0.0
        );
    }
    assert!(
        value(
            &exported,
            "floodway_worker_kind_limit{worker=\"worker-1\",kind=\"ok\"}"
        ) >= 4.0
    );
    let ran = |kind: &str, outcome: &str| {
        value(
            &exported,
            &format!(
                "floodway_worker_handler_duration_seconds_count{{{w},kind=\"{kind}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(
        (
            ran("ok", "complete"),
            ran("flaky", "retry"),
            ran("flaky", "complete"),
            ran("bad", "fail")
        ),
        (3.0, 1.0, 1.0, 1.0)
    );
    assert_eq!(
        value(
            &exported,
            "floodway_worker_timeouts_total{worker=\"worker-1\",kind=\"flaky\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &exported,
            "floodway_worker_overloaded_total{worker=\"worker-1\",kind=\"ok\"}"
        ),
        0.0
    );
    let breaker = |state: &str| {
        value(
            &exported,
            &format!("floodway_producer_breaker_state{{producer=\"checkout\",state=\"{state}\"}}"),
        )
    };
    assert_eq!(
        (breaker("closed"), breaker("open"), breaker("half_open")),
        (1.0, 0.0, 0.0)
    );
    assert!(
        !text.contains("floodway_queue_depth"),
        "the worker's exporter has no broker source"
    );
    assert_eq!(get(&format!("{exporter_url}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{exporter_url}/readyz")).await.0, 200);

    handle.shutdown();
    tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap()
        .unwrap();
    let _ = stop_exporter.send(());
    exporter.await.unwrap().unwrap();
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_workers_are_exported_by_the_server_to_admins_of_their_queues() {
    let api = Api::start_with(config_with_tokens()).await;
    let worker = Worker::builder(api.broker.clone())
        .name("in-process")
        .queue("orders", 2)
        .poll_wait(Duration::from_millis(100))
        .metrics(api.registry.clone())
        .handler("ok", |_: TaskContext, _: Value| async { Outcome::Complete })
        .build()
        .unwrap();
    let handle = worker.handle();
    let running = tokio::spawn(worker.run(std::future::pending()));
    let orders = QueueName::new("orders").unwrap();
    floodway_core::Broker::enqueue(&*api.broker, &orders, vec![NewTask::new("ok", "{}")])
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, handle.wait_for(|r| r.completed == 1))
        .await
        .unwrap()
        .unwrap();

    let scrape = async |token: &str| {
        let reply = api
            .send(reqwest::Method::GET, "/metrics", Some(&secret(token)), None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.text
    };
    let admin = scrape("admin").await;
    for line in [
        "floodway_worker_concurrency{worker=\"in-process\",queue=\"orders\"} 2\n",
        "floodway_tasks_completed_total{queue=\"orders\"} 1\n",
    ] {
        assert!(admin.contains(line), "missing {line} in\n{admin}");
    }
    // An admin of other queues sees the server's requests, not this queue or its workers.
    let other = scrape("other").await;
    assert!(other.contains("floodway_http_requests_total{"), "{other}");
    assert!(!other.contains("queue=\"orders\""), "{other}");
    assert!(
        other.contains("floodway_worker_overloaded_total{worker=\"in-process\",kind=\"ok\"} 0"),
        "series without a queue label are the process's: {other}"
    );

    handle.shutdown();
    tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap()
        .unwrap();
}
