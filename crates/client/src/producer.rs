//! [`Producer`]: enqueue with backpressure handled for the caller, over HTTP or over any
//! [`Broker`] in the same process.
//!
//! - **Retry-After.** A 429 (the queue is full, above its high watermark, or the token's rate
//!   limit is exhausted) is the broker saying "not now"; nothing was written. The producer
//!   waits the broker's hint plus up to half of it again (jitter, so producers pushed back
//!   together do not return together) and tries again, until the caller's deadline. An
//!   in-process broker's [`BrokerError::QueueFull`] and [`BrokerError::Overloaded`] are
//!   handled the same way, with [`BrokerError::retry_after`] as the hint.
//! - **Circuit breaker.** Failures that say the broker is unwell (no answer or a 5xx over
//!   HTTP, [`BrokerError::Unavailable`] in process) are counted; after `failure_threshold` in
//!   a row the breaker opens and every call fails at once with [`ClientError::BreakerOpen`]
//!   for `open_for`, then probes let through decide whether it closes again. A producer
//!   facing a dead broker fails fast instead of piling up timeouts.
//! - **No duplicates by retrying.** A request whose outcome is unknown (a timeout after it was
//!   sent, a 503, an unavailable broker) is retried only when every task carries an
//!   idempotency key, which makes the retry harmless; otherwise the error goes back to the
//!   caller, who knows whether a duplicate would hurt.
//!
//! Where the tasks go is the producer's type parameter, a [`Destination`]: [`Producer::new`]
//! makes a `Producer` (that is, `Producer<HttpDestination>`) that talks to a server and reads
//! its answers in full (status, error code, `Retry-After`); [`Producer::from_broker`] makes a
//! `Producer<B>` over any broker, such as `floodway_embedded::EmbeddedBroker`:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use floodway_client::{Producer, ProducerConfig};
//! use floodway_core::{NewTask, QueueName};
//! use floodway_embedded::{EmbeddedBroker, Options};
//!
//! let broker = Arc::new(EmbeddedBroker::open("./floodway-data", Options::default())?);
//! let producer = Producer::from_broker(broker, ProducerConfig::default())?;
//! let emails = QueueName::new("emails")?;
//! producer
//!     .enqueue_one(&emails, NewTask::json("send_email", &"ada@example.com")?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The breaker and the retry delay are `floodway-backpressure`'s, fed with tokio's clock.
//!
//! **Trace context.** Each `enqueue` runs in an `enqueue` span (level info: queue, batch size,
//! attempts, outcome) that continues the caller's trace (OpenTelemetry's current span with
//! the `opentelemetry` feature, or the handler this runs in), or starts a new one, and every
//! task that lacks a `traceparent` header gets the span's (`floodway_core::TraceContext::inject`),
//! so the worker's `handle` span continues it. Over HTTP the request carries it too.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodway_backpressure::{BreakerConfig, BreakerState, CircuitBreaker, retry_delay};
#[cfg(doc)]
use floodway_core::BrokerError;
use floodway_core::{Broker, Enqueued, NewTask, QueueName, TraceContext};
use floodway_server::wire;
use floodway_trace::Parent;
use reqwest::Method;
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::{Instrument, Level, Span};

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::transport::Transport;

/// How a [`Producer`] retries and when its breaker opens.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// The circuit breaker's settings.
    pub breaker: BreakerConfig,
    /// The first wait when the broker gave no Retry-After hint; it doubles per attempt.
    pub retry_base: Duration,
    /// The longest single wait.
    pub retry_cap: Duration,
    /// How long one `enqueue` may keep retrying in all; zero never retries. A call still
    /// refused when the next wait would end past it returns the last error.
    pub deadline: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            breaker: BreakerConfig::default(),
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
        }
    }
}

/// Something a producer did, for an observer (logs, metrics, tests).
#[derive(Clone, Debug)]
pub enum ProducerEvent {
    /// A call failed and will be tried again after `wait`.
    Backoff {
        /// The attempt that failed, from 1.
        attempt: u32,
        /// How long the producer waits before the next attempt.
        wait: Duration,
        /// Why it failed.
        error: ClientError,
    },
    /// The circuit breaker changed state.
    Breaker(BreakerState),
}

type Observer = Arc<dyn Fn(&ProducerEvent) + Send + Sync>;

mod sealed {
    /// Keeps [`super::Destination`] implemented only by this crate.
    pub trait Sealed {}
}

/// Where a [`Producer`] sends its tasks: a server over HTTP ([`HttpDestination`]) or any
/// [`Broker`] in the same process. Implemented by this crate only; it decides how failures
/// are read, which the producer's retry and breaker depend on.
pub trait Destination: sealed::Sealed + Send + Sync + 'static {
    /// One attempt to enqueue `tasks` into `queue` as one batch, within the trace `trace`.
    #[doc(hidden)]
    fn send(
        &self,
        queue: &QueueName,
        tasks: &[NewTask],
        trace: &TraceContext,
    ) -> impl Future<Output = Result<Vec<Enqueued>, ClientError>> + Send;
}

/// A floodway server over HTTP, as a [`Producer`]'s destination. Made by [`Producer::new`].
///
/// Unlike going through [`crate::HttpBroker`]'s `Broker` implementation, it keeps what only
/// HTTP tells: whether a failed request was sent at all, the token's rate limit, an
/// authentication failure (not worth retrying), so the producer retries exactly what is safe.
#[derive(Clone, Debug)]
pub struct HttpDestination {
    transport: Transport,
}

impl sealed::Sealed for HttpDestination {}

impl Destination for HttpDestination {
    async fn send(
        &self,
        queue: &QueueName,
        tasks: &[NewTask],
        trace: &TraceContext,
    ) -> Result<Vec<Enqueued>, ClientError> {
        let body = wire::TaskBatch {
            tasks: tasks.iter().map(wire::TaskSpec::from_core).collect(),
        };
        let path = format!("/v1/queues/{queue}/tasks");
        let answer: wire::EnqueueResponse = self
            .transport
            .call_traced(Method::POST, &path, Some(&body), trace)
            .await?;
        Ok(answer
            .tasks
            .into_iter()
            .map(|t| Enqueued {
                id: t.id,
                duplicate: t.duplicate,
            })
            .collect())
    }
}

impl<B: Broker> sealed::Sealed for B {}

/// Any broker in process: its [`BrokerError`]s come back as [`ClientError::Broker`].
impl<B: Broker> Destination for B {
    async fn send(
        &self,
        queue: &QueueName,
        tasks: &[NewTask],
        _trace: &TraceContext,
    ) -> Result<Vec<Enqueued>, ClientError> {
        // The tasks carry the trace already. The broker takes the batch by value, and a retry
        // needs it again.
        self.enqueue(queue, tasks.to_vec())
            .await
            .map_err(ClientError::Broker)
    }
}

/// Enqueues tasks, honouring the broker's backpressure. Cheap to clone; clones share the
/// destination (for HTTP, the connection pool) and the circuit breaker.
///
/// `Producer` alone is the HTTP producer ([`Producer::new`]); `Producer<B>` enqueues into the
/// broker `B` in process ([`Producer::from_broker`]).
pub struct Producer<D: Destination = HttpDestination> {
    destination: Arc<D>,
    config: ProducerConfig,
    breaker: Arc<Mutex<CircuitBreaker>>,
    /// The zero of the breaker's time.
    origin: Instant,
    observer: Option<Observer>,
    /// The producer as a metrics source, once [`Producer::metrics`] registered it; clones
    /// share it, and a registry holds it weakly, so it is exported while a clone lives.
    metrics: Option<Arc<BreakerMetrics>>,
}

impl<D: Destination> Clone for Producer<D> {
    fn clone(&self) -> Self {
        Producer {
            destination: self.destination.clone(),
            config: self.config.clone(),
            breaker: self.breaker.clone(),
            origin: self.origin,
            observer: self.observer.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<D: Destination> std::fmt::Debug for Producer<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("destination", &std::any::type_name::<D>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Producer<HttpDestination> {
    /// A producer for the server in `client`.
    pub fn new(client: ClientConfig, config: ProducerConfig) -> Result<Self, ClientError> {
        let destination = HttpDestination {
            transport: Transport::new(&client)?,
        };
        Producer::with_destination(Arc::new(destination), config)
    }
}

impl<B: Broker> Producer<B> {
    /// A producer that enqueues into `broker` in this process, with the same retries and
    /// circuit breaker as over HTTP: [`BrokerError::QueueFull`] and
    /// [`BrokerError::Overloaded`] are retried after their hint until the deadline, and
    /// [`BrokerError::Unavailable`] counts as a failure for the breaker.
    ///
    /// For a server, use [`Producer::new`] rather than a [`crate::HttpBroker`] here: it reads
    /// more of the server's answers than the `Broker` trait carries.
    pub fn from_broker(broker: Arc<B>, config: ProducerConfig) -> Result<Self, ClientError> {
        Producer::with_destination(broker, config)
    }
}

impl<D: Destination> Producer<D> {
    fn with_destination(destination: Arc<D>, config: ProducerConfig) -> Result<Self, ClientError> {
        let breaker = CircuitBreaker::new(config.breaker)
            .map_err(|error| ClientError::Config(format!("breaker: {error}")))?;
        if config.retry_base.is_zero() || config.retry_cap < config.retry_base {
            return Err(ClientError::Config(
                "retry_base must be positive and at most retry_cap".into(),
            ));
        }
        Ok(Producer {
            destination,
            config,
            breaker: Arc::new(Mutex::new(breaker)),
            origin: Instant::now(),
            observer: None,
            metrics: None,
        })
    }

    /// Exports the circuit breaker's state through `registry` as
    /// `floodway_producer_breaker_state{producer="<name>",state}` (docs/metrics.md), for as
    /// long as this producer or a clone made from it afterwards lives.
    pub fn metrics(
        mut self,
        registry: &floodway_metrics::Registry,
        name: impl Into<String>,
    ) -> Result<Self, ClientError> {
        let source = Arc::new(BreakerMetrics {
            name: name.into(),
            breaker: self.breaker.clone(),
            origin: self.origin,
        });
        registry
            .register_weak(&source)
            .map_err(|error| ClientError::Config(format!("metrics: {error}")))?;
        self.metrics = Some(source);
        Ok(self)
    }

    /// Calls `observer` with every [`ProducerEvent`].
    pub fn with_observer(
        mut self,
        observer: impl Fn(&ProducerEvent) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The circuit breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.lock_breaker().state(self.now())
    }

    /// Enqueues `tasks` into `queue` as one batch (all or nothing), retrying as the module
    /// docs say until the deadline. Returns one [`Enqueued`] per task, in order.
    ///
    /// The error is the last attempt's: for a queue that stayed overloaded past the deadline,
    /// one whose [`ClientError::code`] is `queue_overloaded` (and which converts to
    /// [`BrokerError::Overloaded`]).
    pub async fn enqueue(
        &self,
        queue: &QueueName,
        mut tasks: Vec<NewTask>,
    ) -> Result<Vec<Enqueued>, ClientError> {
        let span = floodway_trace::span!(
            Level::INFO,
            "enqueue",
            queue = %queue,
            tasks = tasks.len(),
            attempts = Empty,
            outcome = Empty
        );
        let trace = floodway_trace::start(&span, Parent::Current);
        trace.inject(&mut tasks);
        let result = self
            .enqueue_traced(queue, &tasks, &trace, &span)
            .instrument(span.clone())
            .await;
        span.record(
            "outcome",
            match &result {
                Ok(_) => "ok",
                Err(error) => error.code().map_or("error", |code| code.as_str()),
            },
        );
        span.in_scope(|| tracing::debug!("enqueue finished"));
        result
    }

    /// [`Producer::enqueue`] once the tasks carry their trace context.
    async fn enqueue_traced(
        &self,
        queue: &QueueName,
        tasks: &[NewTask],
        trace: &TraceContext,
        span: &Span,
    ) -> Result<Vec<Enqueued>, ClientError> {
        let idempotent = tasks.iter().all(|t| t.idempotency_key.is_some());
        let deadline = Instant::now() + self.config.deadline;
        let mut attempt = 0;
        loop {
            attempt += 1;
            span.record("attempts", attempt);
            let error = match self.attempt(queue, tasks, trace).await {
                Ok(enqueued) => return Ok(enqueued),
                Err(error) => error,
            };
            let may_retry = error.is_retryable() && (error.changed_nothing() || idempotent);
            if !may_retry {
                return Err(error);
            }
            let wait = match &error {
                // The breaker says when it lets a probe through; trying sooner is pointless.
                ClientError::BreakerOpen(open) => open.retry_in,
                _ => retry_delay(
                    attempt,
                    error.retry_after(),
                    self.config.retry_base,
                    self.config.retry_cap,
                    fastrand::f64(),
                ),
            };
            if Instant::now() + wait > deadline {
                return Err(error);
            }
            self.observe(&ProducerEvent::Backoff {
                attempt,
                wait,
                error,
            });
            tokio::time::sleep(wait).await;
        }
    }

    /// Enqueues one task.
    pub async fn enqueue_one(
        &self,
        queue: &QueueName,
        task: NewTask,
    ) -> Result<Enqueued, ClientError> {
        let mut answers = self.enqueue(queue, vec![task]).await?;
        answers
            .pop()
            .ok_or_else(|| ClientError::Protocol("an enqueue answered no task".into()))
    }

    /// One attempt, through the breaker.
    async fn attempt(
        &self,
        queue: &QueueName,
        tasks: &[NewTask],
        trace: &TraceContext,
    ) -> Result<Vec<Enqueued>, ClientError> {
        let before = {
            let mut breaker = self.lock_breaker();
            let now = self.now();
            let before = breaker.state(now);
            breaker.check(now)?;
            before
        };
        let result = self.destination.send(queue, tasks, trace).await;
        let after = {
            let mut breaker = self.lock_breaker();
            let now = self.now();
            match &result {
                Err(error) if error.is_server_failure() => breaker.record_failure(now),
                _ => breaker.record_success(now),
            }
            breaker.state(now)
        };
        if after != before {
            tracing::info!(state = ?after, "producer circuit breaker changed state");
            self.observe(&ProducerEvent::Breaker(after));
        }
        result
    }

    fn observe(&self, event: &ProducerEvent) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A producer's circuit breaker as a metrics source.
struct BreakerMetrics {
    /// The `producer` label.
    name: String,
    breaker: Arc<Mutex<CircuitBreaker>>,
    origin: Instant,
}

impl floodway_metrics::Source for BreakerMetrics {
    fn collect<'a>(
        &'a self,
        samples: &'a mut floodway_metrics::Samples,
    ) -> floodway_metrics::SourceFuture<'a> {
        let now = self.origin.elapsed();
        let state = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state(now);
        for (label, this) in [
            ("closed", BreakerState::Closed),
            ("open", BreakerState::Open),
            ("half_open", BreakerState::HalfOpen),
        ] {
            samples.gauge(
                &floodway_metrics::catalog::PRODUCER_BREAKER_STATE,
                &[&self.name, label],
                f64::from(u8::from(state == this)),
            );
        }
        Box::pin(std::future::ready(Ok(())))
    }
}
