//! [`DynBroker`]: any [`Broker`] behind a trait object, so the router is built once and its
//! handlers are plain functions.
//!
//! `Broker`'s methods return `impl Future`, which makes the trait generic-only. The server is
//! generic over the broker at its entrance ([`crate::Server::new`]) and erases it here: one
//! boxed future per broker call costs a few nanoseconds against the microseconds of an HTTP
//! request, and in exchange the handlers, the OpenAPI paths collected from them and the
//! router are compiled once instead of once per broker type.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, Capabilities, DeadSelector, EffectRecord, Enqueued, FailOutcome, Failure,
    Lease, LeaseRef, LeaseResults, NewTask, QueueConfig, QueueName, QueueStats, Refusal,
    Reservation, ReserveRequest, Task, TaskFilter, TaskId,
};

/// A boxed future that can move between threads.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

type Answer<'a, T> = BoxFuture<'a, Result<T, BrokerError>>;

/// The [`Broker`] calls the server makes, object-safe. Implemented for every broker.
pub(crate) trait DynBroker: Send + Sync + 'static {
    fn capabilities(&self) -> Capabilities;
    fn enqueue<'a>(
        &'a self,
        queue: &'a QueueName,
        tasks: Vec<NewTask>,
    ) -> Answer<'a, Vec<Enqueued>>;
    fn reserve(&self, request: ReserveRequest) -> Answer<'_, Vec<Reservation>>;
    fn ack<'a>(&'a self, leases: &'a [LeaseRef]) -> Answer<'a, LeaseResults>;
    fn fail(&self, failures: Vec<Failure>) -> Answer<'_, Vec<Result<FailOutcome, Refusal>>>;
    fn extend<'a>(
        &'a self,
        leases: &'a [LeaseRef],
        duration: Duration,
    ) -> Answer<'a, Vec<Result<Lease, Refusal>>>;
    fn release<'a>(&'a self, leases: &'a [LeaseRef]) -> Answer<'a, LeaseResults>;
    fn record_effects(&self, effects: Vec<EffectRecord>) -> Answer<'_, LeaseResults>;
    fn cancel<'a>(&'a self, ids: &'a [TaskId]) -> Answer<'a, LeaseResults>;
    fn promote(&self) -> Answer<'_, u64>;
    fn reap(&self) -> Answer<'_, u64>;
    fn stats<'a>(&'a self, queue: Option<&'a QueueName>) -> Answer<'a, Vec<QueueStats>>;
    fn configure<'a>(&'a self, queue: &'a QueueName, config: QueueConfig) -> Answer<'a, ()>;
    fn pause<'a>(&'a self, queue: &'a QueueName) -> Answer<'a, ()>;
    fn resume<'a>(&'a self, queue: &'a QueueName) -> Answer<'a, ()>;
    fn get(&self, id: TaskId) -> Answer<'_, Task>;
    fn list(&self, filter: TaskFilter) -> Answer<'_, Vec<Task>>;
    fn replay(&self, selector: DeadSelector) -> Answer<'_, u64>;
    fn purge(&self, selector: DeadSelector) -> Answer<'_, u64>;
    fn ping(&self) -> Answer<'_, ()>;
}

impl<B: Broker> DynBroker for B {
    fn capabilities(&self) -> Capabilities {
        Broker::capabilities(self)
    }

    fn enqueue<'a>(
        &'a self,
        queue: &'a QueueName,
        tasks: Vec<NewTask>,
    ) -> Answer<'a, Vec<Enqueued>> {
        Box::pin(Broker::enqueue(self, queue, tasks))
    }

    fn reserve(&self, request: ReserveRequest) -> Answer<'_, Vec<Reservation>> {
        Box::pin(Broker::reserve(self, request))
    }

    fn ack<'a>(&'a self, leases: &'a [LeaseRef]) -> Answer<'a, LeaseResults> {
        Box::pin(Broker::ack(self, leases))
    }

    fn fail(&self, failures: Vec<Failure>) -> Answer<'_, Vec<Result<FailOutcome, Refusal>>> {
        Box::pin(Broker::fail(self, failures))
    }

    fn extend<'a>(
        &'a self,
        leases: &'a [LeaseRef],
        duration: Duration,
    ) -> Answer<'a, Vec<Result<Lease, Refusal>>> {
        Box::pin(Broker::extend(self, leases, duration))
    }

    fn release<'a>(&'a self, leases: &'a [LeaseRef]) -> Answer<'a, LeaseResults> {
        Box::pin(Broker::release(self, leases))
    }

    fn record_effects(&self, effects: Vec<EffectRecord>) -> Answer<'_, LeaseResults> {
        Box::pin(Broker::record_effects(self, effects))
    }

    fn cancel<'a>(&'a self, ids: &'a [TaskId]) -> Answer<'a, LeaseResults> {
        Box::pin(Broker::cancel(self, ids))
    }

    fn promote(&self) -> Answer<'_, u64> {
        Box::pin(Broker::promote(self))
    }

    fn reap(&self) -> Answer<'_, u64> {
        Box::pin(Broker::reap(self))
    }

    fn stats<'a>(&'a self, queue: Option<&'a QueueName>) -> Answer<'a, Vec<QueueStats>> {
        Box::pin(Broker::stats(self, queue))
    }

    fn configure<'a>(&'a self, queue: &'a QueueName, config: QueueConfig) -> Answer<'a, ()> {
        Box::pin(Broker::configure(self, queue, config))
    }

    fn pause<'a>(&'a self, queue: &'a QueueName) -> Answer<'a, ()> {
        Box::pin(Broker::pause(self, queue))
    }

    fn resume<'a>(&'a self, queue: &'a QueueName) -> Answer<'a, ()> {
        Box::pin(Broker::resume(self, queue))
    }

    fn get(&self, id: TaskId) -> Answer<'_, Task> {
        Box::pin(Broker::get(self, id))
    }

    fn list(&self, filter: TaskFilter) -> Answer<'_, Vec<Task>> {
        Box::pin(Broker::list(self, filter))
    }

    fn replay(&self, selector: DeadSelector) -> Answer<'_, u64> {
        Box::pin(Broker::replay(self, selector))
    }

    fn purge(&self, selector: DeadSelector) -> Answer<'_, u64> {
        Box::pin(Broker::purge(self, selector))
    }

    fn ping(&self) -> Answer<'_, ()> {
        Box::pin(Broker::ping(self))
    }
}
