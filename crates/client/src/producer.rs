//! [`Producer`]: enqueue over HTTP with backpressure handled for the caller.
//!
//! - **Retry-After.** A 429 (the queue is full, or the token's rate limit is exhausted) is the
//!   server saying "not now"; nothing was written. The producer waits the server's hint plus
//!   up to half of it again (jitter, so producers pushed back together do not return
//!   together) and tries again, until the caller's deadline.
//! - **Circuit breaker.** Failures that say the server is unwell (no answer, 5xx) are counted;
//!   after `failure_threshold` in a row the breaker opens and every call fails at once with
//!   [`ClientError::BreakerOpen`] for `open_for`, then probes let through decide whether it
//!   closes again. A producer facing a dead server fails fast instead of piling up timeouts.
//! - **No duplicates by retrying.** A request whose outcome is unknown (a timeout after it was
//!   sent, a 503) is retried only when every task carries an idempotency key, which makes the
//!   retry harmless; otherwise the error goes back to the caller, who knows whether a
//!   duplicate would hurt.
//!
//! The breaker and the retry delay are `floodway-backpressure`'s, fed with tokio's clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodway_backpressure::{BreakerConfig, BreakerState, CircuitBreaker, retry_delay};
use floodway_core::{Enqueued, NewTask, QueueName};
use floodway_server::wire;
use reqwest::Method;
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::transport::Transport;

/// How a [`Producer`] retries and when its breaker opens.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// The circuit breaker's settings.
    pub breaker: BreakerConfig,
    /// The first wait when the server gave no Retry-After hint; it doubles per attempt.
    pub retry_base: Duration,
    /// The longest single wait.
    pub retry_cap: Duration,
    /// How long one `enqueue` may keep retrying in all; zero never retries.
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

/// Enqueues tasks on a floodway server, honouring its backpressure. Cheap to clone; clones
/// share the connection pool and the circuit breaker.
#[derive(Clone)]
pub struct Producer {
    transport: Transport,
    config: ProducerConfig,
    breaker: Arc<Mutex<CircuitBreaker>>,
    /// The zero of the breaker's time.
    origin: Instant,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("transport", &self.transport)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer for the server in `client`.
    pub fn new(client: ClientConfig, config: ProducerConfig) -> Result<Self, ClientError> {
        let breaker = CircuitBreaker::new(config.breaker)
            .map_err(|error| ClientError::Config(format!("breaker: {error}")))?;
        if config.retry_base.is_zero() || config.retry_cap < config.retry_base {
            return Err(ClientError::Config(
                "retry_base must be positive and at most retry_cap".into(),
            ));
        }
        Ok(Producer {
            transport: Transport::new(&client)?,
            config,
            breaker: Arc::new(Mutex::new(breaker)),
            origin: Instant::now(),
            observer: None,
        })
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
    pub async fn enqueue(
        &self,
        queue: &QueueName,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Enqueued>, ClientError> {
        let body = wire::TaskBatch {
            tasks: tasks.iter().map(wire::TaskSpec::from_core).collect(),
        };
        let idempotent = tasks.iter().all(|t| t.idempotency_key.is_some());
        let path = format!("/v1/queues/{queue}/tasks");
        let deadline = Instant::now() + self.config.deadline;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.attempt(&path, &body).await;
            let error = match result {
                Ok(answer) => {
                    return Ok(answer
                        .tasks
                        .into_iter()
                        .map(|t| Enqueued {
                            id: t.id,
                            duplicate: t.duplicate,
                        })
                        .collect());
                }
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

    /// One request, through the breaker.
    async fn attempt(
        &self,
        path: &str,
        body: &wire::TaskBatch,
    ) -> Result<wire::EnqueueResponse, ClientError> {
        let before = {
            let mut breaker = self.lock_breaker();
            let now = self.now();
            let before = breaker.state(now);
            breaker.check(now)?;
            before
        };
        let result = self
            .transport
            .call(Method::POST, path, Some(body), Duration::ZERO)
            .await;
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
