//! The suite must catch a broker that breaks the rules. Each mutant here is the model broker
//! with one deliberate bug; the proptest and the case aimed at that rule must fail on it.
//!
//! The same wrapper without a bug but declaring no optional capability runs the whole suite in
//! module `limited`: the cases that need a capability skip, and the proptest adapts.

use std::sync::Arc;
use std::time::Duration;

use floodway_conformance::model::{MODEL_CLOCK_START, ModelBroker};
use floodway_conformance::{Harness, cases, model};
use floodway_core::{
    Broker, BrokerError, Capabilities, DeadSelector, EffectRecord, Enqueued, FailOutcome, Failure,
    Lease, LeaseRef, LeaseResults, ManualClock, NewTask, QueueConfig, QueueName, QueueStats,
    Refusal, Reservation, ReserveRequest, Task, TaskFilter, TaskId,
};

/// The one bug a [`Mutant`] has.
#[derive(Clone, Copy, PartialEq)]
enum Bug {
    /// Ack answers every refused lease with success (and changes nothing).
    AckAcceptsAnyLease,
    /// Restart reopens an empty broker: nothing was durable.
    RestartLosesEverything,
    /// Promote reports one task more than it moved.
    PromoteMiscounts,
    /// Configure keeps everything but the rate limits, concurrency limits and watermarks.
    ConfigureDropsBackpressure,
}

struct Mutant {
    inner: ModelBroker,
    bug: Option<Bug>,
    capabilities: Capabilities,
}

impl Broker for Mutant {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
    async fn enqueue(
        &self,
        queue: &QueueName,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Enqueued>, BrokerError> {
        self.inner.enqueue(queue, tasks).await
    }
    async fn reserve(&self, request: ReserveRequest) -> Result<Vec<Reservation>, BrokerError> {
        self.inner.reserve(request).await
    }
    async fn ack(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        let results = self.inner.ack(leases).await?;
        if self.bug == Some(Bug::AckAcceptsAnyLease) {
            return Ok(results.into_iter().map(|_| Ok(())).collect());
        }
        Ok(results)
    }
    async fn fail(
        &self,
        failures: Vec<Failure>,
    ) -> Result<Vec<Result<FailOutcome, Refusal>>, BrokerError> {
        self.inner.fail(failures).await
    }
    async fn record_effects(
        &self,
        effects: Vec<EffectRecord>,
    ) -> Result<LeaseResults, BrokerError> {
        self.inner.record_effects(effects).await
    }
    async fn extend(
        &self,
        leases: &[LeaseRef],
        duration: Duration,
    ) -> Result<Vec<Result<Lease, Refusal>>, BrokerError> {
        self.inner.extend(leases, duration).await
    }
    async fn release(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        self.inner.release(leases).await
    }
    async fn cancel(&self, ids: &[TaskId]) -> Result<LeaseResults, BrokerError> {
        self.inner.cancel(ids).await
    }
    async fn promote(&self) -> Result<u64, BrokerError> {
        let moved = self.inner.promote().await?;
        if self.bug == Some(Bug::PromoteMiscounts) {
            return Ok(moved + 1);
        }
        Ok(moved)
    }
    async fn reap(&self) -> Result<u64, BrokerError> {
        self.inner.reap().await
    }
    async fn stats(&self, queue: Option<&QueueName>) -> Result<Vec<QueueStats>, BrokerError> {
        self.inner.stats(queue).await
    }
    async fn configure(&self, queue: &QueueName, config: QueueConfig) -> Result<(), BrokerError> {
        if self.bug == Some(Bug::ConfigureDropsBackpressure) {
            let config = QueueConfig {
                rate_limit: None,
                key_rate_limit: None,
                concurrency_max: None,
                key_concurrency_max: None,
                watermarks: None,
                ..config
            };
            return self.inner.configure(queue, config).await;
        }
        self.inner.configure(queue, config).await
    }
    async fn pause(&self, queue: &QueueName) -> Result<(), BrokerError> {
        self.inner.pause(queue).await
    }
    async fn resume(&self, queue: &QueueName) -> Result<(), BrokerError> {
        self.inner.resume(queue).await
    }
    async fn get(&self, id: TaskId) -> Result<Task, BrokerError> {
        self.inner.get(id).await
    }
    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, BrokerError> {
        self.inner.list(filter).await
    }
    async fn replay(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        self.inner.replay(selector).await
    }
    async fn purge(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        self.inner.purge(selector).await
    }
}

struct MutantHarness {
    broker: Mutant,
    clock: ManualClock,
    can_restart: bool,
}

impl MutantHarness {
    fn new(bug: Bug) -> Self {
        MutantHarness::build(Some(bug), Capabilities::ALL, true)
    }

    fn build(bug: Option<Bug>, capabilities: Capabilities, can_restart: bool) -> Self {
        let clock = ManualClock::new(MODEL_CLOCK_START);
        MutantHarness {
            broker: Mutant {
                inner: ModelBroker::new(Arc::new(clock.clone())),
                bug,
                capabilities,
            },
            clock,
            can_restart,
        }
    }
}

impl Harness for MutantHarness {
    type Broker = Mutant;
    fn broker(&self) -> &Mutant {
        &self.broker
    }
    fn clock(&self) -> &ManualClock {
        &self.clock
    }
    fn can_restart(&self) -> bool {
        self.can_restart
    }
    async fn restart(&mut self) {
        assert!(self.can_restart, "restart of a harness that cannot restart");
        let model = match self.broker.bug {
            Some(Bug::RestartLosesEverything) => floodway_conformance::model::Model::new(),
            _ => self.broker.inner.model(),
        };
        self.broker.inner = ModelBroker::with_model(Arc::new(self.clock.clone()), model);
    }
}

fn run_case<F: std::future::Future<Output = ()>>(case: impl FnOnce(MutantHarness) -> F, bug: Bug) {
    floodway_conformance::block_on(case(MutantHarness::new(bug)));
}

#[test]
#[should_panic(expected = "disagrees with the model")]
fn proptest_catches_an_ack_that_accepts_stale_leases() {
    model::model_agrees_with_broker(|| async { MutantHarness::new(Bug::AckAcceptsAnyLease) });
}

#[test]
#[should_panic]
fn stale_fence_case_catches_an_ack_that_accepts_stale_leases() {
    run_case(
        |mut h| async move {
            cases::leases::ack_with_stale_fence_is_refused_and_changes_nothing(&mut h).await
        },
        Bug::AckAcceptsAnyLease,
    );
}

#[test]
#[should_panic(expected = "disagrees with the model")]
fn proptest_catches_a_restart_that_loses_everything() {
    model::model_agrees_with_broker(|| async { MutantHarness::new(Bug::RestartLosesEverything) });
}

#[test]
#[should_panic]
fn restart_case_catches_a_restart_that_loses_everything() {
    run_case(
        |mut h| async move { cases::restart::restart_keeps_every_task_and_its_state(&mut h).await },
        Bug::RestartLosesEverything,
    );
}

#[test]
#[should_panic(expected = "disagrees with the model")]
fn proptest_catches_a_miscounting_promote() {
    model::model_agrees_with_broker(|| async { MutantHarness::new(Bug::PromoteMiscounts) });
}

#[test]
#[should_panic]
fn rate_case_catches_a_broker_without_rate_limits() {
    run_case(
        |mut h| async move {
            cases::throttling::queue_rate_limit_hands_out_a_burst_then_one_task_per_token(&mut h)
                .await
        },
        Bug::ConfigureDropsBackpressure,
    );
}

#[test]
#[should_panic]
fn concurrency_case_catches_a_broker_without_concurrency_limits() {
    run_case(
        |mut h| async move {
            cases::throttling::queue_concurrency_limit_counts_leases_and_every_way_out_frees_a_slot(
                &mut h,
            )
            .await
        },
        Bug::ConfigureDropsBackpressure,
    );
}

#[test]
#[should_panic]
fn watermark_case_catches_a_broker_without_watermarks() {
    run_case(
        |mut h| async move {
            cases::watermarks::enqueue_above_the_high_watermark_is_refused_until_down_to_the_low(
                &mut h,
            )
            .await
        },
        Bug::ConfigureDropsBackpressure,
    );
}

/// The whole suite against a broker without priorities, partition FIFO or restart.
mod limited {
    use super::*;

    async fn harness() -> MutantHarness {
        let none = Capabilities {
            priorities: false,
            partition_fifo: false,
        };
        MutantHarness::build(None, none, false)
    }

    floodway_conformance::suite!(harness);
}
