//! The completer: one loop that sends every ack, fail and release to the broker, in batches.
//!
//! Supervisors and fetch loops send [`Settlement`]s into a bounded channel. The loop waits for
//! one, takes everything else already waiting (up to [`limits::BATCH_SIZE_MAX`]) and sends it
//! as at most three batch calls (ack, fail, release), made together. While those calls are
//! out, new settlements queue up and form the next batch, so batches grow with load and many
//! completions share one durable write, with no timer.
//!
//! A settlement carries its task's lease permit ([`crate::capacity::LeasePermit`]). The permit
//! is freed only after the broker has answered, so a queue never has more leased tasks than
//! its concurrency plus its prefetch, counting those whose ack is still on its way. The
//! channel's capacity is the worker's total lease budget: every settlement holds a permit, so
//! a send never waits for room.
//!
//! Refusals (stale fence, expired lease) are counted and never retried: another reservation
//! owns the task. A call that fails because the broker is unavailable is retried up to
//! [`crate::limits::SETTLE_ATTEMPTS_MAX`] times with backoff, then abandoned: the lease
//! expires and the task runs again (at-least-once).
//!
//! Each call runs in a span named for it (`ack`, `fail`, `release`; level debug) with the
//! number of `leases` it settles; a refusal is logged inside it.

use std::future::Future;
use std::sync::Arc;

use floodway_core::limits;
use floodway_core::{
    Broker, BrokerError, FailOutcome, Failure, LeaseRef, Refusal, RetryDecision, TaskState,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::capacity::LeasePermit;
use crate::inflight::Inflight;
use crate::report::{Count, Counters};

/// What to tell the broker about one lease.
#[derive(Debug)]
pub(crate) struct Settlement {
    /// The lease to settle.
    pub(crate) lease: LeaseRef,
    /// Ack, fail or release.
    pub(crate) action: Action,
    /// The task's share of its queue's lease budget, freed once the broker has answered.
    /// `None` only for a reservation the broker returned beyond what was asked (a broker bug),
    /// which has no permit.
    pub(crate) permit: Option<LeasePermit>,
}

/// The call a settlement makes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// The task is done.
    Ack,
    /// The attempt failed.
    Fail {
        /// What went wrong.
        error: String,
        /// Whether and when to retry.
        retry: RetryDecision,
    },
    /// Give the task back unrun, without spending an attempt (shutdown).
    Release,
}

/// Runs until every sender is dropped and the channel is drained.
pub(crate) async fn run<B: Broker>(
    broker: Arc<B>,
    mut settlements: mpsc::Receiver<Settlement>,
    inflight: Arc<Inflight>,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::new();
    while settlements
        .recv_many(&mut batch, limits::BATCH_SIZE_MAX)
        .await
        > 0
    {
        settle(&*broker, &batch, &counters).await;
        for settlement in batch.drain(..) {
            inflight.remove(&settlement.lease);
            // Frees the lease permit: the fetch loop may now reserve another task.
            drop(settlement.permit);
        }
        counters.announce();
    }
}

/// Sends one batch and counts the answers.
async fn settle<B: Broker>(broker: &B, batch: &[Settlement], counters: &Counters) {
    let mut acks = Vec::new();
    let mut fails = Vec::new();
    let mut releases = Vec::new();
    for settlement in batch {
        match &settlement.action {
            Action::Ack => acks.push(settlement.lease),
            Action::Fail { error, retry } => fails.push(Failure {
                lease: settlement.lease,
                error: error.clone(),
                retry: *retry,
            }),
            Action::Release => releases.push(settlement.lease),
        }
    }
    let failed = fails.len();
    // One span per call (level debug), named for the call, with the batch's size.
    tokio::join!(
        ack(broker, &acks, counters).instrument(tracing::debug_span!("ack", leases = acks.len())),
        fail(broker, fails, counters).instrument(tracing::debug_span!("fail", leases = failed)),
        release(broker, &releases, counters)
            .instrument(tracing::debug_span!("release", leases = releases.len())),
    );
}

async fn ack<B: Broker>(broker: &B, leases: &[LeaseRef], counters: &Counters) {
    if leases.is_empty() {
        return;
    }
    let Some((results, retried)) = call("ack", counters, || broker.ack(leases)).await else {
        counters.add(Count::Abandoned, leases.len() as u64);
        return;
    };
    count_results(leases, results, counters, |result| match result {
        Ok(()) => Ok(Count::Completed),
        // An earlier try that the broker reported as failed may have taken effect.
        Err(Refusal::WrongState {
            state: TaskState::Completed,
        }) if retried => Ok(Count::Completed),
        Err(refusal) => Err(refusal),
    });
}

async fn fail<B: Broker>(broker: &B, failures: Vec<Failure>, counters: &Counters) {
    if failures.is_empty() {
        return;
    }
    let leases: Vec<LeaseRef> = failures.iter().map(|f| f.lease).collect();
    let Some((results, retried)) = call("fail", counters, || broker.fail(failures.clone())).await
    else {
        counters.add(Count::Abandoned, leases.len() as u64);
        return;
    };
    count_results(&leases, results, counters, |result| match result {
        Ok(FailOutcome::Retrying { .. }) => Ok(Count::Retried),
        Ok(FailOutcome::Dead { .. }) => Ok(Count::DeadLettered),
        Err(Refusal::WrongState {
            state: TaskState::Retrying,
        }) if retried => Ok(Count::Retried),
        Err(Refusal::WrongState {
            state: TaskState::Dead,
        }) if retried => Ok(Count::DeadLettered),
        Err(refusal) => Err(refusal),
    });
}

async fn release<B: Broker>(broker: &B, leases: &[LeaseRef], counters: &Counters) {
    if leases.is_empty() {
        return;
    }
    let Some((results, retried)) = call("release", counters, || broker.release(leases)).await
    else {
        counters.add(Count::Abandoned, leases.len() as u64);
        return;
    };
    count_results(leases, results, counters, |result| match result {
        Ok(()) => Ok(Count::Released),
        Err(Refusal::WrongState {
            state: TaskState::Ready,
        }) if retried => Ok(Count::Released),
        Err(refusal) => Err(refusal),
    });
}

/// Counts each per-item result as `classify` says; refusals are counted and logged.
fn count_results<T>(
    leases: &[LeaseRef],
    results: Vec<Result<T, Refusal>>,
    counters: &Counters,
    classify: impl Fn(Result<T, Refusal>) -> Result<Count, Refusal>,
) {
    if results.len() != leases.len() {
        tracing::error!(
            sent = leases.len(),
            answered = results.len(),
            "the broker answered a batch with the wrong number of results"
        );
        let missing = leases.len().saturating_sub(results.len());
        counters.add(Count::Abandoned, missing as u64);
    }
    for (lease, result) in leases.iter().zip(results) {
        match classify(result) {
            Ok(count) => counters.add(count, 1),
            Err(refusal) => {
                counters.add(Count::Refused, 1);
                tracing::warn!(
                    task = %lease.task_id,
                    fence = %lease.fence,
                    %refusal,
                    "the broker refused a settlement; another reservation owns the task"
                );
            }
        }
    }
}

/// Makes one batch call, retrying with backoff while the broker is unavailable. Returns the
/// answer and whether it came from a retry (so an earlier try may have taken effect), or
/// `None` when the call was given up.
async fn call<T, F, Fut>(what: &'static str, counters: &Counters, mut call: F) -> Option<(T, bool)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BrokerError>>,
{
    let mut backoff = Backoff::default();
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(answer) => return Some((answer, attempt > 1)),
            Err(error) => {
                counters.add(Count::BrokerErrors, 1);
                if !error.is_retryable() || attempt >= crate::limits::SETTLE_ATTEMPTS_MAX {
                    tracing::error!(%error, attempt, "{what} failed; giving up, the leases will expire");
                    return None;
                }
                let wait = backoff.next_wait();
                tracing::warn!(%error, attempt, ?wait, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}
