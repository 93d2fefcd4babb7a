//! The OpenTelemetry integration (feature `otel-tests`, which `.ci/run` enables for this
//! module alone): a real `tracing-opentelemetry` layer with the SDK's in-memory exporter sees
//! the producer's `enqueue` span and the worker's `handle` span exported in one trace, with
//! the handle span a child of the producer's, in process and over HTTP through a real server.
//!
//! Everything runs on one current-thread runtime with the layer as the thread's default
//! subscriber, so the producers, the server and the worker all report to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodway_client::{ClientConfig, Producer, ProducerConfig};
use floodway_core::{NewTask, QueueName, TaskId, TraceParent};
use floodway_embedded::EmbeddedBroker;
use floodway_server::{Server, ServerConfig};
use floodway_worker::{Outcome, TaskContext, Worker};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// The exported span named `name` that `matches`.
fn find<'a>(
    spans: &'a [SpanData],
    name: &str,
    matches: impl Fn(&SpanData) -> bool,
) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name && matches(s))
        .unwrap_or_else(|| panic!("no exported {name} span that matches among {spans:#?}"))
}

/// A span attribute's value, as text.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// True when `child`'s parent is `parent`, in the same trace.
fn child_of(child: &SpanData, parent: &SpanData) -> bool {
    child.span_context.trace_id() == parent.span_context.trace_id()
        && child.parent_span_id == parent.span_context.span_id()
}

#[tokio::test(flavor = "current_thread")]
async fn producer_and_worker_spans_are_exported_as_one_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(EmbeddedBroker::open(dir.path(), Default::default()).unwrap());
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = Server::new(broker.clone(), config)
        .unwrap()
        .bind()
        .await
        .unwrap();
    let url = server.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));

    // Two producers, each inside a span of the caller's: in process, and over HTTP.
    let queue = QueueName::new("traced").unwrap();
    let in_process = Producer::from_broker(broker.clone(), ProducerConfig::default())
        .unwrap()
        .enqueue_one(&queue, NewTask::new("work", "null"))
        .instrument(tracing::info_span!("in_process"))
        .await
        .unwrap()
        .id;
    let over_http = Producer::new(ClientConfig::new(&url), ProducerConfig::default())
        .unwrap()
        .enqueue_one(&queue, NewTask::new("work", "null"))
        .instrument(tracing::info_span!("over_http"))
        .await
        .unwrap()
        .id;

    let seen: Arc<Mutex<BTreeMap<TaskId, TraceParent>>> = Arc::default();
    let record = seen.clone();
    let worker = Worker::builder(broker.clone())
        .queue("traced", 2)
        .poll_wait(Duration::from_millis(100))
        .handler("work", move |ctx: TaskContext, _: serde_json::Value| {
            record.lock().unwrap().insert(ctx.id(), ctx.traceparent());
            async { Outcome::Complete }
        })
        .build()
        .unwrap();
    let handle = worker.handle();
    let running = tokio::spawn(worker.run(std::future::pending()));
    handle.wait_for(|r| r.completed >= 2).await.unwrap();
    handle.shutdown();
    running.await.unwrap();
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let seen = seen.lock().unwrap().clone();

    // In process: caller → producer's enqueue → worker's handle.
    let caller = find(&spans, "in_process", |_| true);
    let produce = find(&spans, "enqueue", |s| child_of(s, caller));
    let work = find(&spans, "handle", |s| {
        attribute(s, "task_id") == Some(in_process.to_string())
    });
    assert!(
        child_of(work, produce),
        "{work:#?} is not a child of {produce:#?}"
    );
    // The handler's traceparent names its exported handle span, and the span fields written
    // for the logs name the same ids.
    let traceparent = seen[&in_process];
    assert_eq!(
        traceparent.trace_id.to_bytes(),
        work.span_context.trace_id().to_bytes()
    );
    assert_eq!(
        traceparent.parent_id.to_bytes(),
        work.span_context.span_id().to_bytes()
    );
    assert_eq!(
        attribute(work, "trace_id"),
        Some(work.span_context.trace_id().to_string())
    );
    assert_eq!(
        attribute(work, "parent_span_id"),
        Some(produce.span_context.span_id().to_string())
    );
    assert_eq!(attribute(work, "outcome").as_deref(), Some("completed"));

    // Over HTTP: caller → client's enqueue → the server's enqueue (from the request's
    // traceparent), and the worker's handle under the client's span (the task's header).
    let caller = find(&spans, "over_http", |_| true);
    let produce = find(&spans, "enqueue", |s| child_of(s, caller));
    let served = find(&spans, "enqueue", |s| child_of(s, produce));
    assert!(
        served.parent_span_is_remote,
        "continued from the request's header"
    );
    let work = find(&spans, "handle", |s| {
        attribute(s, "task_id") == Some(over_http.to_string())
    });
    assert!(
        child_of(work, produce),
        "{work:#?} is not a child of {produce:#?}"
    );
    assert!(
        work.parent_span_is_remote,
        "continued from the task's header"
    );
}

/// A stand-in OTLP/HTTP collector on a loopback port: it answers every request with 200 and
/// sends each request's path and body to the test.
fn collector() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (received, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let received = received.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    writer
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                    if received.send((path, body)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, requests)
}

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn floodway_serve_exports_its_spans_over_otlp_and_flushes_them_on_exit() {
    let (endpoint, requests) = collector();
    let floodway = crate::Floodway::new();
    let serving = crate::serving::Serving::start(
        &floodway,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "floodway-under-test"),
        ],
    );
    let caller = floodway_core::TraceContext::parse(
        "00-6e0c63257de34c92bf9efcd03927272e-7d3e9ba9de6f1c4a-01",
        None,
    )
    .unwrap();
    let rt = crate::serving::runtime();
    rt.block_on(floodway_trace::scope(caller.clone(), async {
        crate::serving::producer(&serving.url, None)
            .enqueue_one(
                &QueueName::new("exported").unwrap(),
                NewTask::new("work", "null"),
            )
            .await
            .unwrap();
    }));
    // The batch processor holds the span until its delay (5 s) or the shutdown: SIGTERM now,
    // and the exit must send it.
    assert!(serving.stop().success());
    let (path, body) = requests
        .recv_timeout(Duration::from_secs(30))
        .expect("floodway serve sent its spans before exiting");
    assert_eq!(path, "/v1/traces");
    // Protobuf writes ids and strings as raw bytes: the caller's trace id, the span's name and
    // the service's name are in the request.
    assert!(
        contains(&body, &caller.parent.trace_id.to_bytes()),
        "the caller's trace"
    );
    assert!(contains(&body, b"enqueue"));
    assert!(contains(&body, b"floodway-under-test"));
}
