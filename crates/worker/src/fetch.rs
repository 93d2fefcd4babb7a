//! The fetch loops: they reserve tasks of one queue only for its free handler slots.
//!
//! Each queue has a semaphore with one permit per handler slot (its concurrency). A fetch loop
//! waits for one free permit, takes as many more as are free at that moment (up to the reserve
//! batch maximum), asks the broker for exactly that many tasks, and gives back the permits it
//! got no task for. Each task's permit travels with it, through its supervisor, to the
//! completer, which frees it after the broker has settled the task. So the worker never holds
//! more leases of a queue than its concurrency: no prefetching that would hide tasks from
//! other workers.
//!
//! A queue has [`crate::limits::FETCH_LANES_PER_QUEUE`] such loops sharing its semaphore, so
//! that one can reserve while another's call waits for the broker to make its leases durable
//! (a disk sync, or a round trip to a server). Slots freed meanwhile are then put to work
//! without waiting for that call, and the bound holds because every loop draws on the same
//! permits.

use std::sync::Arc;

use floodway_core::{Broker, QueueName, Reservation, ReserveRequest};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::complete::{Action, Settlement};
use crate::context::TaskContext;
use crate::inflight::extend_at;
use crate::report::Count;
use crate::worker::Runtime;

/// Serves `queue`, drawing on its handler `slots`, until shutdown starts.
pub(crate) async fn run<B: Broker>(
    runtime: Arc<Runtime<B>>,
    queue: QueueName,
    slots: Arc<Semaphore>,
) {
    let settings = &runtime.settings;
    let mut backoff = Backoff::default();
    loop {
        let mut permits = tokio::select! {
            biased;
            () = runtime.stop.cancelled() => break,
            permit = slots.clone().acquire_owned() => {
                permit.expect("the slots semaphore is never closed")
            }
        };
        let extra = slots
            .available_permits()
            .min(settings.reserve_batch_max - 1);
        if extra > 0 {
            let more = u32::try_from(extra).expect("concurrency is bounded by INFLIGHT_MAX");
            // Another fetch loop of the queue may have taken some meanwhile; then this call asks
            // for fewer.
            if let Ok(more) = slots.clone().try_acquire_many_owned(more) {
                permits.merge(more);
            }
        }
        // Shutdown may have started while this loop waited for a slot.
        if runtime.stop.is_cancelled() {
            break;
        }
        let request = ReserveRequest::new(queue.clone(), permits.num_permits(), settings.lease)
            .wait(settings.poll_wait)
            .worker(&*settings.name);
        match runtime.broker.reserve(request).await {
            Ok(reservations) => {
                backoff.reset();
                dispatch(&runtime, reservations, permits).await;
            }
            Err(error) => {
                drop(permits);
                runtime.counters.bump(Count::BrokerErrors);
                let wait = backoff.next_wait();
                if error.is_retryable() {
                    tracing::warn!(%queue, %error, ?wait, "reserve failed; retrying");
                } else {
                    tracing::error!(%queue, %error, ?wait, "reserve was refused; retrying");
                }
                tokio::select! {
                    biased;
                    () = runtime.stop.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Starts a supervisor for each reservation, or releases it if shutdown has started. Permits
/// left over are dropped, which gives them back.
async fn dispatch<B: Broker>(
    runtime: &Arc<Runtime<B>>,
    reservations: Vec<Reservation>,
    mut permits: OwnedSemaphorePermit,
) {
    if reservations.is_empty() {
        return;
    }
    let received = Instant::now();
    runtime
        .counters
        .add(Count::Reserved, reservations.len() as u64);
    for mut reservation in reservations {
        let permit = permits.split(1);
        if permit.is_none() {
            tracing::error!(
                task = %reservation.task.id,
                "the broker returned more tasks than asked for; releasing the extra one"
            );
        }
        let payload = std::mem::take(&mut reservation.task.payload);
        let ctx = TaskContext::new(
            &reservation,
            runtime.settings.name.clone(),
            runtime.grace_over.child_token(),
        );
        runtime
            .inflight
            .insert(ctx.clone(), extend_at(received, runtime.settings.lease));
        if runtime.stop.is_cancelled() || permit.is_none() {
            let settlement = Settlement {
                lease: ctx.lease(),
                action: Action::Release,
                permit,
            };
            if runtime.settle.send(settlement).await.is_err() {
                tracing::error!("the completer has stopped; a lease will expire instead");
            }
            continue;
        }
        let timeout = reservation.task.timeout;
        runtime.supervisors.spawn(crate::supervise::run(
            runtime.clone(),
            ctx,
            payload,
            timeout,
            permit,
        ));
    }
    runtime.counters.announce();
}
