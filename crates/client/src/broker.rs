//! [`HttpBroker`]: the [`Broker`] trait over HTTP, so the worker runtime (and anything else
//! written against the trait) runs unchanged against a remote `floodway serve`.
//!
//! Each trait call is one HTTP request with the batch forms of API v1, and each answer is
//! turned back into exactly what a local broker returns: the same values, the same per-item
//! refusals, the same [`BrokerError`] variants. The conformance suite runs against this broker
//! (through a real server over an embedded broker) to prove it.
//!
//! `enqueue` is a producer's call: it runs in an `enqueue` span (level info, with the queue and
//! the batch size), puts the span's trace context into every task that lacks one, and sends it
//! as the request's `traceparent` too, so the server's span and the worker's `handle` span
//! continue the caller's trace. The other calls run in their caller's spans (the worker
//! runtime's `reserve`, `ack`, `fail`, `extend`, `release`).

use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, Capabilities, DeadSelector, EffectRecord, Enqueued, FailOutcome, Failure,
    Lease, LeaseRef, LeaseResults, NewTask, QueueConfig, QueueName, QueueStats, Refusal,
    Reservation, ReserveRequest, Task, TaskFilter, TaskId,
};
use floodway_server::wire;
use floodway_trace::Parent;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, Level};

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::transport::Transport;

/// A broker reached over HTTP. Cheap to clone; clones share one connection pool.
#[derive(Clone, Debug)]
pub struct HttpBroker {
    transport: Transport,
    capabilities: Capabilities,
}

/// No body, for requests that take none.
const NO_BODY: Option<&()> = None;

impl HttpBroker {
    /// Connects to the server in `config` and asks which capabilities its broker has. Fails if
    /// the server cannot be reached or refuses the token.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let transport = Transport::new(&config)?;
        let info: wire::BrokerInfo = transport
            .call(Method::GET, "/v1/broker", NO_BODY, Duration::ZERO)
            .await?;
        Ok(HttpBroker {
            transport,
            capabilities: info.capabilities.into_core(),
        })
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        wait: Duration,
    ) -> Result<R, BrokerError> {
        self.transport
            .call(method, path, body, wait)
            .await
            .map_err(BrokerError::from)
    }

    async fn post<R: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<R, BrokerError> {
        self.call(Method::POST, path, Some(body), Duration::ZERO)
            .await
    }
}

/// A server that answers a different number of results than items sent has a bug; refuse
/// to guess which result belongs to which item.
fn check_count<T>(results: Vec<T>, sent: usize) -> Result<Vec<T>, BrokerError> {
    if results.len() == sent {
        Ok(results)
    } else {
        Err(BrokerError::Unavailable(format!(
            "the server answered {} results for {sent} items",
            results.len()
        )))
    }
}

fn wire_error(error: wire::WireError) -> BrokerError {
    BrokerError::Unavailable(format!("unreadable answer from the server: {error}"))
}

fn lease_tokens(leases: &[LeaseRef]) -> Vec<wire::LeaseToken> {
    leases.iter().copied().map(wire::LeaseToken).collect()
}

fn lease_results(results: wire::LeaseResults, sent: usize) -> Result<LeaseResults, BrokerError> {
    check_count(results.results, sent)?
        .into_iter()
        .map(|r| r.into_core().map_err(wire_error))
        .collect()
}

impl Broker for HttpBroker {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn enqueue(
        &self,
        queue: &QueueName,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Enqueued>, BrokerError> {
        let sent = tasks.len();
        let mut tasks = tasks;
        let span = floodway_trace::span!(Level::INFO, "enqueue", queue = %queue, tasks = sent);
        let trace = floodway_trace::start(&span, Parent::Current);
        trace.inject(&mut tasks);
        let body = wire::TaskBatch {
            tasks: tasks.iter().map(wire::TaskSpec::from_core).collect(),
        };
        let answer: wire::EnqueueResponse = self
            .transport
            .call_traced(
                Method::POST,
                &format!("/v1/queues/{queue}/tasks"),
                Some(&body),
                &trace,
            )
            .instrument(span)
            .await
            .map_err(BrokerError::from)?;
        Ok(check_count(answer.tasks, sent)?
            .into_iter()
            .map(|t| Enqueued {
                id: t.id,
                duplicate: t.duplicate,
            })
            .collect())
    }

    async fn reserve(&self, request: ReserveRequest) -> Result<Vec<Reservation>, BrokerError> {
        let body = wire::ReserveRequest::from_core(&request);
        let answer: wire::ReserveResponse = self
            .call(
                Method::POST,
                &format!("/v1/queues/{}/reserve", request.queue),
                Some(&body),
                request.wait,
            )
            .await?;
        answer
            .tasks
            .into_iter()
            .map(|t| t.into_core().map_err(wire_error))
            .collect()
    }

    async fn ack(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        let body = wire::LeaseBatch {
            leases: lease_tokens(leases),
        };
        lease_results(self.post("/v1/leases/ack", &body).await?, leases.len())
    }

    async fn fail(
        &self,
        failures: Vec<Failure>,
    ) -> Result<Vec<Result<FailOutcome, Refusal>>, BrokerError> {
        let sent = failures.len();
        let body = wire::FailBatch {
            failures: failures.iter().map(wire::Failure::from_core).collect(),
        };
        let answer: wire::FailResults = self.post("/v1/leases/fail", &body).await?;
        check_count(answer.results, sent)?
            .into_iter()
            .map(|r| r.into_core().map_err(wire_error))
            .collect()
    }

    async fn extend(
        &self,
        leases: &[LeaseRef],
        duration: Duration,
    ) -> Result<Vec<Result<Lease, Refusal>>, BrokerError> {
        let body = wire::ExtendBatch {
            leases: lease_tokens(leases),
            duration: Some(duration.into()),
        };
        let answer: wire::ExtendResults = self.post("/v1/leases/extend", &body).await?;
        check_count(answer.results, leases.len())?
            .into_iter()
            .map(|r| r.into_core().map_err(wire_error))
            .collect()
    }

    async fn release(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        let body = wire::LeaseBatch {
            leases: lease_tokens(leases),
        };
        lease_results(self.post("/v1/leases/release", &body).await?, leases.len())
    }

    async fn record_effects(
        &self,
        effects: Vec<EffectRecord>,
    ) -> Result<LeaseResults, BrokerError> {
        let sent = effects.len();
        let body = wire::EffectBatch {
            effects: effects.iter().map(wire::EffectRecord::from_core).collect(),
        };
        lease_results(self.post("/v1/leases/effects", &body).await?, sent)
    }

    async fn cancel(&self, ids: &[TaskId]) -> Result<LeaseResults, BrokerError> {
        let body = wire::CancelBatch { ids: ids.to_vec() };
        lease_results(self.post("/v1/tasks/cancel", &body).await?, ids.len())
    }

    async fn promote(&self) -> Result<u64, BrokerError> {
        let answer: wire::CountResponse = self
            .call(
                Method::POST,
                "/v1/maintenance/promote",
                NO_BODY,
                Duration::ZERO,
            )
            .await?;
        Ok(answer.count)
    }

    async fn reap(&self) -> Result<u64, BrokerError> {
        let answer: wire::CountResponse = self
            .call(
                Method::POST,
                "/v1/maintenance/reap",
                NO_BODY,
                Duration::ZERO,
            )
            .await?;
        Ok(answer.count)
    }

    async fn stats(&self, queue: Option<&QueueName>) -> Result<Vec<QueueStats>, BrokerError> {
        match queue {
            Some(queue) => {
                let stats: wire::QueueStats = self
                    .call(
                        Method::GET,
                        &format!("/v1/queues/{queue}"),
                        NO_BODY,
                        Duration::ZERO,
                    )
                    .await?;
                Ok(vec![stats.into_core().map_err(wire_error)?])
            }
            None => {
                let list: wire::QueueList = self
                    .call(Method::GET, "/v1/queues", NO_BODY, Duration::ZERO)
                    .await?;
                list.queues
                    .into_iter()
                    .map(|stats| stats.into_core().map_err(wire_error))
                    .collect()
            }
        }
    }

    async fn configure(&self, queue: &QueueName, config: QueueConfig) -> Result<(), BrokerError> {
        let body = wire::QueueConfig::from_core(&config);
        let _: wire::QueueStats = self
            .call(
                Method::PUT,
                &format!("/v1/queues/{queue}"),
                Some(&body),
                Duration::ZERO,
            )
            .await?;
        Ok(())
    }

    async fn pause(&self, queue: &QueueName) -> Result<(), BrokerError> {
        let _: wire::QueueStats = self
            .call(
                Method::POST,
                &format!("/v1/queues/{queue}/pause"),
                NO_BODY,
                Duration::ZERO,
            )
            .await?;
        Ok(())
    }

    async fn resume(&self, queue: &QueueName) -> Result<(), BrokerError> {
        let _: wire::QueueStats = self
            .call(
                Method::POST,
                &format!("/v1/queues/{queue}/resume"),
                NO_BODY,
                Duration::ZERO,
            )
            .await?;
        Ok(())
    }

    async fn get(&self, id: TaskId) -> Result<Task, BrokerError> {
        let task: wire::Task = self
            .call(
                Method::GET,
                &format!("/v1/tasks/{id}"),
                NO_BODY,
                Duration::ZERO,
            )
            .await?;
        task.into_core().map_err(wire_error)
    }

    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, BrokerError> {
        let mut query = vec![format!("limit={}", filter.limit)];
        if let Some(queue) = &filter.queue {
            query.push(format!("queue={queue}"));
        }
        if let Some(state) = filter.state {
            query.push(format!("state={state}"));
        }
        if let Some(reason) = filter.dead_reason {
            query.push(format!("dead_reason={reason}"));
        }
        if let Some(after) = filter.after {
            query.push(format!("after={after}"));
        }
        // Queue names, states, reasons, ids and numbers are all URL-safe as they are.
        let list: wire::TaskList = self
            .call(
                Method::GET,
                &format!("/v1/tasks?{}", query.join("&")),
                NO_BODY,
                Duration::ZERO,
            )
            .await?;
        list.tasks
            .into_iter()
            .map(|t| t.into_core().map_err(wire_error))
            .collect()
    }

    async fn replay(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        let body = wire::DeadSelector::from_core(&selector);
        let answer: wire::CountResponse = self.post("/v1/dead-letters/replay", &body).await?;
        Ok(answer.count)
    }

    async fn purge(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        let body = wire::DeadSelector::from_core(&selector);
        let answer: wire::CountResponse = self.post("/v1/dead-letters/purge", &body).await?;
        Ok(answer.count)
    }

    /// `/readyz`: the server answers and its broker can serve calls.
    async fn ping(&self) -> Result<(), BrokerError> {
        let _: floodway_server::Health = self
            .call(Method::GET, "/readyz", NO_BODY, Duration::ZERO)
            .await?;
        Ok(())
    }
}
