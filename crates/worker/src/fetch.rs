//! The fetch loops: they reserve tasks of one queue only for the room it has.
//!
//! A queue's room is its lease budget ([`crate::capacity`]): one permit per handler slot plus
//! one per prefetch place. A fetch loop waits for one free permit, takes as many more as are
//! free at that moment (up to the reserve batch maximum), trims them to the room the adaptive
//! limits leave when every kind is adaptive ([`crate::capacity::Kinds::claim`]), asks the
//! broker for exactly that many tasks, and gives back the permits it got no task for. Each
//! task's permit travels with it, through its supervisor, to the completer, which frees it
//! after the broker has settled the task. So the worker never holds more leases of a queue
//! than its concurrency plus its prefetch: with the default prefetch of 0, no prefetching
//! that would hide tasks from other workers.
//!
//! A queue has [`crate::limits::FETCH_LANES_PER_QUEUE`] such loops sharing its budget, so
//! that one can reserve while another's call waits for the broker to make its leases durable
//! (a disk sync, or a round trip to a server). Room freed meanwhile is then put to work
//! without waiting for that call, and the bound holds because every loop draws on the same
//! permits.
//!
//! Each call to the broker runs in a `reserve` span (level debug) with the queue, the number
//! of tasks asked for (`max`) and received (`tasks`).

use std::sync::Arc;

use floodway_core::{Broker, Reservation, ReserveRequest};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::capacity::QueueCapacity;
use crate::complete::{Action, Settlement};
use crate::context::TaskContext;
use crate::inflight::extend_at;
use crate::report::Count;
use crate::worker::Runtime;

/// Serves `queue`, drawing on its lease budget, until shutdown starts.
pub(crate) async fn run<B: Broker>(runtime: Arc<Runtime<B>>, queue: Arc<QueueCapacity>) {
    let settings = &runtime.settings;
    let leases = &queue.leases;
    let mut backoff = Backoff::default();
    loop {
        let mut permits = tokio::select! {
            biased;
            () = runtime.stop.cancelled() => break,
            permit = leases.clone().acquire_owned() => {
                permit.expect("the lease semaphore is never closed")
            }
        };
        let extra = leases
            .available_permits()
            .min(settings.reserve_batch_max - 1);
        if extra > 0 {
            let more = u32::try_from(extra).expect("leases are bounded by INFLIGHT_MAX");
            // Another fetch loop of the queue may have taken some meanwhile; then this call asks
            // for fewer.
            if let Ok(more) = leases.clone().try_acquire_many_owned(more) {
                permits.merge(more);
            }
        }
        // Registered before the room is read, so that room freed in between wakes this loop.
        let room_changed = runtime.kinds.changed().notified();
        tokio::pin!(room_changed);
        room_changed.as_mut().enable();
        let claim = runtime.kinds.claim(queue.prefetch, permits.num_permits());
        if let Some(claim) = &claim {
            if claim.room() == 0 {
                // Every kind is at its adaptive limit: leave the tasks in the broker until
                // one has room.
                drop(permits);
                tokio::select! {
                    biased;
                    () = runtime.stop.cancelled() => break,
                    () = room_changed => continue,
                }
            }
            let surplus = permits.num_permits() - claim.room();
            if surplus > 0 {
                drop(permits.split(surplus));
            }
        }
        // Shutdown may have started while this loop waited for a slot.
        if runtime.stop.is_cancelled() {
            break;
        }
        let request =
            ReserveRequest::new(queue.queue.clone(), permits.num_permits(), settings.lease)
                .wait(settings.poll_wait)
                .worker(&*settings.name);
        // One `reserve` span per call (debug: a long poll per fetch loop is frequent).
        let span = tracing::debug_span!(
            "reserve",
            queue = %queue.queue,
            max = permits.num_permits(),
            tasks = tracing::field::Empty
        );
        let reserved = runtime
            .broker
            .reserve(request)
            .instrument(span.clone())
            .await;
        match reserved {
            Ok(reservations) => {
                span.record("tasks", reservations.len());
                backoff.reset();
                dispatch(&runtime, &queue, reservations, permits).await;
                // The tasks now count against their kinds; the claim's room is free again.
                drop(claim);
            }
            Err(error) => {
                drop((permits, claim));
                runtime.counters.bump(Count::BrokerErrors);
                let wait = backoff.next_wait();
                let queue = &queue.queue;
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
///
/// Each task is counted as prefetched, and against its kind, here rather than in its
/// supervisor, so that the room the fetch loop reads next already counts it.
async fn dispatch<B: Broker>(
    runtime: &Arc<Runtime<B>>,
    queue: &Arc<QueueCapacity>,
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
        let permit = permits.split(1).map(|permit| queue.lease_permit(permit));
        if permit.is_none() {
            tracing::error!(
                task = %reservation.task.id,
                "the broker returned more tasks than asked for; releasing the extra one"
            );
        }
        let payload = std::mem::take(&mut reservation.task.payload);
        let effects = std::mem::take(&mut reservation.task.effects);
        let ctx = TaskContext::new(
            &reservation,
            effects,
            runtime.settings.name.clone(),
            runtime.grace_over.child_token(),
            runtime.context_broker.clone(),
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
        let waiting = crate::supervise::Waiting {
            prefetched: queue.prefetched(),
            assignment: runtime.kinds.gate(ctx.kind()).map(|gate| gate.assign()),
            queue: queue.clone(),
        };
        let timeout = reservation.task.timeout;
        runtime.supervisors.spawn(crate::supervise::run(
            runtime.clone(),
            ctx,
            payload,
            timeout,
            waiting,
            permit,
        ));
    }
    runtime.counters.announce();
}
