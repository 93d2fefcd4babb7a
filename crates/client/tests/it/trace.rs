//! One trace from the producer to the worker, in the default build (no OpenTelemetry): the
//! spans' `trace_id`, `span_id` and `parent_span_id` fields, as a subscriber layer written
//! here records them, link the producer's `enqueue` span to the worker's `handle` span, on an
//! embedded broker in process and over HTTP through a real server.
//!
//! Each test runs on a current-thread runtime with its subscriber as the thread's default, so
//! the producer, the server and the worker (all on that thread) report to it, while the other
//! tests of the binary run on their own threads with theirs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodway_client::{ClientConfig, HttpBroker, Producer, ProducerConfig};
use floodway_core::trace::{TRACEPARENT_HEADER, TRACESTATE_HEADER};
use floodway_core::{Broker, NewTask, QueueName, TaskId, TraceContext};
use floodway_server::ServerConfig;
use floodway_worker::{Outcome, TaskContext, Worker};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::Registry;

use crate::support::{TestServer, broker};

/// One span as the layer saw it: name, target and every field recorded, as text.
#[derive(Clone, Debug)]
struct SeenSpan {
    name: &'static str,
    target: String,
    fields: BTreeMap<String, String>,
}

impl SeenSpan {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// A field the test needs, by name.
    fn get(&self, name: &str) -> &str {
        self.field(name)
            .unwrap_or_else(|| panic!("span {} has no field {name}: {self:?}", self.name))
    }
}

/// A layer that keeps every span's fields.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<BTreeMap<u64, SeenSpan>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let span = SeenSpan {
            name: attrs.metadata().name(),
            target: attrs.metadata().target().to_owned(),
            fields,
        };
        self.0.lock().unwrap().insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }
}

impl Spans {
    /// The spans named `name` whose target starts with `crate_name`.
    fn named(&self, crate_name: &str, name: &str) -> Vec<SeenSpan> {
        self.0
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.name == name && s.target.starts_with(crate_name))
            .cloned()
            .collect()
    }

    /// The worker's `handle` span of `task`.
    fn handle_of(&self, task: TaskId) -> SeenSpan {
        let id = task.to_string();
        let spans = self.named("floodway_worker", "handle");
        spans
            .iter()
            .find(|s| s.field("task_id") == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no handle span for {id} among {spans:?}"))
            .clone()
    }
}

/// What a handler saw of its trace.
struct Handled {
    task: TaskId,
    trace: TraceContext,
}

/// Recomputes every span callsite's interest now that this thread's subscriber exists.
///
/// tracing caches, per callsite, whether any subscriber wants it. Another test of this binary
/// (with no subscriber) may be registering the same callsite (the server's `enqueue`, say) on
/// its own thread just as this test installs its subscriber; tracing-core can then keep the
/// interest computed without it, and this thread's spans go unseen (seen once in `.ci/run`).
/// Rebuilding once the subscriber is installed and the setup is done, just before the spans
/// that matter, leaves that race no window.
fn settle_interest() {
    tracing::callsite::rebuild_interest_cache();
}

/// A handler's body for these tests: reports the task and the trace context it ran in.
async fn report(handled: mpsc::Sender<Handled>, ctx: TaskContext) -> Outcome {
    let trace = ctx.trace_context().clone();
    handled
        .send(Handled {
            task: ctx.id(),
            trace,
        })
        .await
        .unwrap();
    Outcome::Complete
}

#[tokio::test(flavor = "current_thread")]
async fn a_producer_and_a_worker_share_one_trace_on_an_embedded_broker() {
    let spans = Spans::default();
    let _subscriber = tracing::subscriber::set_default(Registry::default().with(spans.clone()));
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(&dir);
    let producer = Producer::from_broker(broker.clone(), ProducerConfig::default()).unwrap();
    let queue = QueueName::new("traced").unwrap();
    settle_interest();

    let first = producer
        .enqueue_one(&queue, NewTask::new("first", "null"))
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();

    // The first task's handler enqueues a follow-up through the same producer, without
    // passing its context: the follow-up continues the trace by itself.
    let (handled, mut seen) = mpsc::channel::<Handled>(4);
    let follow_up = producer.clone();
    let on_first = handled.clone();
    let worker = Worker::builder(broker.clone())
        .queue("traced", 1)
        .poll_wait(Duration::from_millis(100))
        .handler("first", move |ctx: TaskContext, _: serde_json::Value| {
            let (producer, handled) = (follow_up.clone(), on_first.clone());
            async move {
                let queue = ctx.queue().clone();
                producer
                    .enqueue_one(&queue, NewTask::new("second", "null"))
                    .await
                    .unwrap();
                report(handled, ctx).await
            }
        })
        .handler("second", {
            let handled = handled.clone();
            move |ctx: TaskContext, _: serde_json::Value| report(handled.clone(), ctx)
        })
        .build()
        .unwrap();
    let handle = worker.handle();
    let running = tokio::spawn(worker.run(std::future::pending()));
    handle.wait_for(|r| r.completed >= 2).await.unwrap();
    handle.shutdown();
    running.await.unwrap();
    let first_seen = seen.recv().await.unwrap();
    let second_seen = seen.recv().await.unwrap();
    assert_eq!(first_seen.task, first.id);

    let enqueues = spans.named("floodway_client", "enqueue");
    assert_eq!(enqueues.len(), 2, "{enqueues:?}");
    let (produce, produce_again) = if enqueues[0].field("parent_span_id").is_none() {
        (&enqueues[0], &enqueues[1])
    } else {
        (&enqueues[1], &enqueues[0])
    };
    let handle_first = spans.handle_of(first.id);
    let handle_second = spans.handle_of(second_seen.task);

    // One trace id on every span of the task's life and its follow-up's.
    let trace_id = produce.get("trace_id");
    assert_eq!(trace_id.len(), 32);
    for span in [&handle_first, produce_again, &handle_second] {
        assert_eq!(span.get("trace_id"), trace_id, "{span:?}");
    }
    // The parent links: producer → handle → producer (in the handler) → handle.
    assert_eq!(handle_first.get("parent_span_id"), produce.get("span_id"));
    assert_eq!(
        produce_again.get("parent_span_id"),
        handle_first.get("span_id")
    );
    assert_eq!(
        handle_second.get("parent_span_id"),
        produce_again.get("span_id")
    );
    assert_eq!(handle_first.get("outcome"), "completed");
    assert_eq!(handle_first.get("queue"), "traced");
    assert_eq!(handle_first.get("kind"), "first");
    assert_eq!(handle_first.get("attempt"), "1");
    assert_eq!(produce.get("queue"), "traced");
    assert_eq!(produce.get("tasks"), "1");
    assert_eq!(produce.get("outcome"), "ok");

    // The handler's context is its handle span's, and the task's header the producer's span.
    assert_eq!(
        first_seen.trace.parent.to_string(),
        format!("00-{trace_id}-{}-01", handle_first.get("span_id"))
    );
    let stored = broker.get(first.id).await.unwrap();
    assert_eq!(
        stored.headers[TRACEPARENT_HEADER],
        format!("00-{trace_id}-{}-01", produce.get("span_id"))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_traceparent_sent_to_the_server_continues_into_a_worker_over_http() {
    let spans = Spans::default();
    let _subscriber = tracing::subscriber::set_default(Registry::default().with(spans.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(broker(&dir), ServerConfig::default()).await;
    let remote = Arc::new(
        HttpBroker::connect(ClientConfig::new(&server.url))
            .await
            .unwrap(),
    );
    let url = format!("{}/v1/queues/remote/tasks", server.url);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let enqueue = |traceparent: Option<&'static str>| {
        let mut request = http
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"kind": "work", "payload": null}"#);
        if let Some(traceparent) = traceparent {
            request = request
                .header(TRACEPARENT_HEADER, traceparent)
                .header(TRACESTATE_HEADER, "vendor=1");
        }
        async move {
            let body = request.send().await.unwrap().bytes().await.unwrap();
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            answer["tasks"][0]["id"]
                .as_str()
                .unwrap()
                .parse::<TaskId>()
                .unwrap()
        }
    };
    // A producer in another language with its own tracing sends its context; curl sends none;
    // a Rust producer over HTTP sends its own span's.
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    settle_interest();
    let from_caller = enqueue(Some(caller)).await;
    let from_curl = enqueue(None).await;
    let queue = QueueName::new("remote").unwrap();
    let from_rust = remote
        .enqueue(&queue, vec![NewTask::new("work", "null")])
        .await
        .unwrap()[0]
        .id;

    let (handled, mut seen) = mpsc::channel::<Handled>(4);
    let worker = Worker::builder(remote.clone())
        .queue("remote", 4)
        .poll_wait(Duration::from_millis(100))
        .handler("work", {
            let handled = handled.clone();
            move |ctx: TaskContext, _: serde_json::Value| report(handled.clone(), ctx)
        })
        .build()
        .unwrap();
    let handle = worker.handle();
    let running = tokio::spawn(worker.run(std::future::pending()));
    handle.wait_for(|r| r.completed >= 3).await.unwrap();
    handle.shutdown();
    running.await.unwrap();
    let mut contexts = BTreeMap::new();
    for _ in 0..3 {
        let handled = seen.recv().await.unwrap();
        contexts.insert(handled.task, handled.trace);
    }
    server.stop().await;

    let server_enqueues = spans.named("floodway_server", "enqueue");
    assert_eq!(server_enqueues.len(), 3, "{server_enqueues:?}");
    let client_enqueues = spans.named("floodway_client", "enqueue");
    assert_eq!(client_enqueues.len(), 1, "{client_enqueues:?}");
    let server_span_in = |trace_id: &str| {
        server_enqueues
            .iter()
            .find(|s| s.field("trace_id") == Some(trace_id))
            .unwrap_or_else(|| panic!("no server enqueue span in trace {trace_id}"))
            .clone()
    };

    // The caller's trace: the server's span and the worker's continue it, and the task's
    // parent is the caller's span (the server exports no spans of its own here).
    let (caller_trace, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let serve = server_span_in(caller_trace);
    assert_eq!(serve.get("parent_span_id"), caller_span);
    let work = spans.handle_of(from_caller);
    assert_eq!(work.get("trace_id"), caller_trace);
    assert_eq!(work.get("parent_span_id"), caller_span);
    assert_eq!(contexts[&from_caller].state.as_deref(), Some("vendor=1"));
    let stored = server.broker.get(from_caller).await.unwrap();
    assert_eq!(stored.headers[TRACEPARENT_HEADER], caller);
    assert_eq!(stored.headers[TRACESTATE_HEADER], "vendor=1");

    // No context: the server's span starts the trace and is the task's parent.
    let work = spans.handle_of(from_curl);
    let serve = server_span_in(work.get("trace_id"));
    assert_eq!(serve.field("parent_span_id"), None);
    assert_eq!(work.get("parent_span_id"), serve.get("span_id"));
    assert_eq!(
        contexts[&from_curl].parent.trace_id.to_string(),
        work.get("trace_id")
    );

    // A Rust producer over HTTP: its span is the parent of the server's and of the worker's.
    let produce = &client_enqueues[0];
    let work = spans.handle_of(from_rust);
    let serve = server_span_in(produce.get("trace_id"));
    assert_eq!(work.get("trace_id"), produce.get("trace_id"));
    assert_eq!(serve.get("parent_span_id"), produce.get("span_id"));
    assert_eq!(work.get("parent_span_id"), produce.get("span_id"));
}
