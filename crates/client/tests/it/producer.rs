//! The producer against a real server: Retry-After honoured on a full or overloaded queue
//! (until it drains, or until the deadline), the circuit breaker opening on a dead server and
//! closing when it is back, and no blind retry of a request whose outcome is unknown; and the
//! same producer over an in-process broker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodway_client::{
    BreakerConfig, BreakerState, ClientConfig, ClientError, Producer, ProducerConfig, ProducerEvent,
};
use floodway_core::{
    Broker, BrokerError, NewTask, QueueConfig, QueueName, ReserveRequest, Watermarks,
};
use floodway_embedded::EmbeddedBroker;
use floodway_server::ServerConfig;
use floodway_server::wire::ErrorCode;
use tokio::sync::mpsc;

use crate::support::{TestServer, broker};

/// How many producer events a test keeps: far more than one call's retries before its
/// deadline, so none is dropped.
const EVENTS_MAX: usize = 1024;

fn producer(url: &str, config: ProducerConfig) -> (Producer, mpsc::Receiver<ProducerEvent>) {
    let (events, received) = mpsc::channel(EVENTS_MAX);
    let producer = Producer::new(ClientConfig::new(url), config)
        .unwrap()
        .with_observer(move |event| {
            let _ = events.try_send(event.clone());
        });
    (producer, received)
}

#[tokio::test]
async fn a_full_queue_is_retried_after_the_servers_hint_until_it_drains() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(broker(&dir), ServerConfig::default()).await;
    let queue = QueueName::new("narrow").unwrap();
    let config = QueueConfig {
        length_max: Some(1),
        ..QueueConfig::default()
    };
    server.broker.configure(&queue, config).await.unwrap();
    server
        .broker
        .enqueue(&queue, vec![NewTask::new("k", "1")])
        .await
        .unwrap();

    let (producer, mut events) = producer(&server.url, ProducerConfig::default());
    let sending = {
        let queue = queue.clone();
        tokio::spawn(async move { producer.enqueue_one(&queue, NewTask::new("k", "2")).await })
    };
    let ProducerEvent::Backoff { wait, error, .. } = events.recv().await.unwrap() else {
        panic!("expected a backoff");
    };
    assert_eq!(error.code(), Some(ErrorCode::QueueFull));
    assert!(
        wait >= Duration::from_secs(1),
        "the hint is honoured: {wait:?}"
    );

    // Make room: the waiting producer gets in on its next attempt.
    let taken = server
        .broker
        .reserve(ReserveRequest::new(
            queue.clone(),
            1,
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    server.broker.ack(&[taken[0].lease.as_ref()]).await.unwrap();
    let enqueued = sending
        .await
        .unwrap()
        .expect("enqueued once the queue drained");
    assert!(!enqueued.duplicate);
    let stats = &server.broker.stats(Some(&queue)).await.unwrap()[0];
    assert_eq!(stats.totals.enqueued, 2);
    assert!(stats.totals.rejected_full >= 1);
}

#[tokio::test]
async fn the_breaker_opens_on_a_dead_server_fails_fast_and_closes_when_it_is_back() {
    // A port with nothing listening: every connection is refused, so nothing is ever sent.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let open_for = Duration::from_millis(300);
    let config = ProducerConfig {
        breaker: BreakerConfig {
            failure_threshold: 3,
            open_for,
            half_open_probes: 1,
            close_after: 1,
        },
        retry_base: Duration::from_millis(1),
        retry_cap: Duration::from_millis(5),
        deadline: Duration::from_millis(100),
    };
    let (producer, mut events) = producer(&format!("http://{address}"), config);
    let registry = floodway_metrics::Registry::new();
    let producer = producer.metrics(&registry, "orders-api").unwrap();
    let breaker_gauges = async || {
        let text = registry.encode().await.unwrap();
        ["closed", "open", "half_open"].map(|state| {
            let series = format!(
                "floodway_producer_breaker_state{{producer=\"orders-api\",state=\"{state}\"}} "
            );
            let line = text
                .lines()
                .find(|l| l.starts_with(&series))
                .expect(&series);
            line[series.len()..].to_owned()
        })
    };
    assert_eq!(breaker_gauges().await, ["1", "0", "0"]);
    let queue = QueueName::new("q").unwrap();

    let error = producer
        .enqueue_one(&queue, NewTask::new("k", "1"))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::BreakerOpen(_)), "{error:?}");
    assert_eq!(producer.breaker_state(), BreakerState::Open);
    assert_eq!(
        breaker_gauges().await,
        ["0", "1", "0"],
        "the metric follows the breaker"
    );
    let mut failures = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            ProducerEvent::Backoff { error, .. }
                if !matches!(error, ClientError::BreakerOpen(_)) =>
            {
                assert!(error.changed_nothing(), "{error:?}");
                failures += 1;
            }
            _ => {}
        }
    }
    assert_eq!(failures, 3, "three refused connections open the breaker");

    // While open, calls fail at once without touching the network.
    let error = producer
        .enqueue_one(&queue, NewTask::new("k", "1"))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::BreakerOpen(_)), "{error:?}");

    // The server comes back; once the open period has passed, a probe closes the breaker.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(address, broker(&dir), ServerConfig::default()).await;
    tokio::time::sleep(open_for).await;
    producer
        .enqueue_one(&queue, NewTask::new("k", "1"))
        .await
        .expect("the probe goes through and succeeds");
    assert_eq!(producer.breaker_state(), BreakerState::Closed);
    assert_eq!(breaker_gauges().await, ["1", "0", "0"]);
    drop(producer);
    assert!(
        registry.is_empty(),
        "a dropped producer leaves the registry"
    );
    assert_eq!(
        server.broker.stats(Some(&queue)).await.unwrap()[0]
            .totals
            .enqueued,
        1
    );
}

#[tokio::test]
async fn an_unknown_outcome_is_retried_only_with_idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(broker(&dir), ServerConfig::default()).await;
    // A broker that cannot serve: every call is a 503 whose outcome the producer cannot know.
    server.broker.close().await;
    let config = ProducerConfig {
        breaker: BreakerConfig {
            failure_threshold: 100,
            ..BreakerConfig::default()
        },
        retry_base: Duration::from_millis(1),
        retry_cap: Duration::from_millis(2),
        deadline: Duration::from_millis(200),
    };
    let (producer, mut events) = producer(&server.url, config);
    let queue = QueueName::new("q").unwrap();

    let error = producer
        .enqueue_one(&queue, NewTask::new("k", "1"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Unavailable));
    assert!(
        events.try_recv().is_err(),
        "no retry without an idempotency key"
    );

    let keyed = NewTask::new("k", "1").idempotency_key("order-7");
    let error = producer.enqueue_one(&queue, keyed).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Unavailable));
    let retries = Arc::new(Mutex::new(0));
    while let Ok(event) = events.try_recv() {
        if matches!(event, ProducerEvent::Backoff { .. }) {
            *retries.lock().unwrap() += 1;
        }
    }
    assert!(*retries.lock().unwrap() >= 1, "a keyed enqueue is retried");
}

/// A queue with watermarks high 2, low 1 holding two tasks: the next enqueue would take it
/// above its high watermark, so it refuses until workers bring it down to one.
async fn overloaded_queue(broker: &EmbeddedBroker) -> QueueName {
    let queue = QueueName::new("hot").unwrap();
    let config = QueueConfig {
        watermarks: Some(Watermarks { high: 2, low: 1 }),
        ..QueueConfig::default()
    };
    broker.configure(&queue, config).await.unwrap();
    broker
        .enqueue(&queue, vec![NewTask::new("k", "1"), NewTask::new("k", "2")])
        .await
        .unwrap();
    queue
}

/// Reserves and acks every waiting task of `queue`: the workers catching up.
async fn drain(broker: &EmbeddedBroker, queue: &QueueName) {
    let taken = broker
        .reserve(ReserveRequest::new(
            queue.clone(),
            100,
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    let leases: Vec<_> = taken.iter().map(|r| r.lease.as_ref()).collect();
    broker.ack(&leases).await.unwrap();
}

#[tokio::test]
async fn an_overloaded_queue_is_retried_after_its_hint_until_it_drains() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(broker(&dir), ServerConfig::default()).await;
    let queue = overloaded_queue(&server.broker).await;

    let (producer, mut events) = producer(&server.url, ProducerConfig::default());
    let sending = {
        let queue = queue.clone();
        tokio::spawn(async move { producer.enqueue_one(&queue, NewTask::new("k", "3")).await })
    };
    let ProducerEvent::Backoff { wait, error, .. } = events.recv().await.unwrap() else {
        panic!("expected a backoff");
    };
    assert_eq!(error.code(), Some(ErrorCode::QueueOverloaded), "{error}");
    assert!(error.is_backpressure() && error.changed_nothing());
    assert!(
        wait >= error.retry_after().unwrap(),
        "the hint is honoured: {wait:?}"
    );
    let BrokerError::Overloaded { high, low, .. } = BrokerError::from(error) else {
        panic!("a 429 queue_overloaded is decoded as Overloaded");
    };
    assert_eq!((high, low), (2, 1));

    drain(&server.broker, &queue).await;
    let enqueued = sending
        .await
        .unwrap()
        .expect("enqueued once the queue drained");
    assert!(!enqueued.duplicate);
    let stats = &server.broker.stats(Some(&queue)).await.unwrap()[0];
    assert_eq!(stats.totals.enqueued, 3);
    assert!(stats.totals.rejected_overloaded >= 1);
    assert!(!stats.refusing);
}

#[tokio::test]
async fn a_queue_still_overloaded_at_the_deadline_fails_with_the_overload() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(broker(&dir), ServerConfig::default()).await;
    let queue = overloaded_queue(&server.broker).await;
    let deadline = Duration::from_millis(1200);
    let config = ProducerConfig {
        deadline,
        ..ProducerConfig::default()
    };
    let (producer, _events) = producer(&server.url, config);

    let started = std::time::Instant::now();
    let error = producer
        .enqueue_one(&queue, NewTask::new("k", "3"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < deadline + Duration::from_secs(1),
        "gave up at the deadline, not later: {:?}",
        started.elapsed()
    );
    assert_eq!(error.code(), Some(ErrorCode::QueueOverloaded), "{error}");
    assert!(
        error.to_string().contains("overloaded") && error.to_string().contains("HTTP 429"),
        "the error says what happened: {error}"
    );
    assert!(matches!(
        BrokerError::from(error),
        BrokerError::Overloaded {
            length: 2,
            high: 2,
            low: 1,
            ..
        }
    ));
    let stats = &server.broker.stats(Some(&queue)).await.unwrap()[0];
    assert_eq!(stats.totals.enqueued, 2, "nothing was written");
    assert!(stats.refusing);
}

#[tokio::test]
async fn a_producer_over_an_in_process_broker_handles_overload_and_unavailability() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = broker(&dir);
    let queue = overloaded_queue(&embedded).await;
    let (events, mut received) = mpsc::channel(EVENTS_MAX);
    let producer = Producer::from_broker(
        embedded.clone(),
        ProducerConfig {
            // Open for longer than the deadline: once open, the call gives up at once.
            breaker: BreakerConfig {
                failure_threshold: 2,
                open_for: Duration::from_secs(60),
                ..BreakerConfig::default()
            },
            retry_base: Duration::from_millis(1),
            retry_cap: Duration::from_secs(5),
            deadline: Duration::from_secs(10),
        },
    )
    .unwrap()
    .with_observer(move |event| {
        let _ = events.try_send(event.clone());
    });

    // Pushed back by the overloaded queue, exactly as over HTTP, until it drains.
    let sending = {
        let (producer, queue) = (producer.clone(), queue.clone());
        tokio::spawn(async move { producer.enqueue_one(&queue, NewTask::new("k", "3")).await })
    };
    let ProducerEvent::Backoff { error, .. } = received.recv().await.unwrap() else {
        panic!("expected a backoff");
    };
    assert!(
        matches!(error, ClientError::Broker(BrokerError::Overloaded { .. })),
        "{error:?}"
    );
    assert_eq!(error.code(), Some(ErrorCode::QueueOverloaded));
    drain(&embedded, &queue).await;
    sending
        .await
        .unwrap()
        .expect("enqueued once the queue drained");
    assert_eq!(producer.breaker_state(), BreakerState::Closed);

    // An unavailable broker counts for the breaker: keyed tasks are retried (the outcome is
    // unknown, the key makes a retry harmless) until the breaker opens.
    embedded.close().await;
    let error = producer
        .enqueue_one(&queue, NewTask::new("k", "4").idempotency_key("k-4"))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::BreakerOpen(_)), "{error:?}");
    assert_eq!(producer.breaker_state(), BreakerState::Open);
}
