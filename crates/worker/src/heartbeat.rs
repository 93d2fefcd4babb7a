//! The heartbeat loop: one per worker, it extends the leases of tasks still in flight.
//!
//! Each lease is due for extension once two thirds of it have passed on the worker's clock
//! (counted from when the reservation or the last extension was received, which errs early),
//! leaving a third for the extend call to land. The loop wakes
//! [`crate::limits::HEARTBEAT_TICKS_PER_LEASE`] times per lease duration and extends every due
//! lease in batches of up to [`limits::BATCH_SIZE_MAX`]; [`crate::WorkerHandle::heartbeat_now`]
//! makes it extend all of them at once.
//!
//! When the broker refuses an extension (stale fence, expired lease, unknown task), the lease
//! is lost: the loop marks the attempt's context and fires its cancellation, and the
//! supervisor stops the handler and discards its result. When the call fails as a whole, the
//! leases stay due and the next tick tries again.
//!
//! Decisions use the worker's clock only to schedule; whether a lease is still valid is the
//! broker's judgement on its own clock, so clock skew between worker and broker cannot make a
//! worker keep a lease it lost.

use std::sync::Arc;
use std::time::Duration;

use floodway_core::{Broker, LeaseRef, limits};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::context::TaskContext;
use crate::inflight::{Inflight, extend_at};
use crate::report::{Count, Counters};

/// A request to extend every held lease now; answered when the round is done.
pub(crate) type HeartbeatRequest = oneshot::Sender<()>;

/// What the heartbeat loop works with.
pub(crate) struct Heartbeat<B> {
    pub(crate) broker: Arc<B>,
    pub(crate) inflight: Arc<Inflight>,
    pub(crate) counters: Arc<Counters>,
    /// The lease duration asked for on every extension.
    pub(crate) lease: Duration,
}

impl<B: Broker> Heartbeat<B> {
    /// Runs until `stop` fires. Requests still waiting then are dropped, which tells their
    /// senders the worker has stopped.
    pub(crate) async fn run(
        self,
        mut requests: mpsc::Receiver<HeartbeatRequest>,
        stop: CancellationToken,
    ) {
        let period = self.lease / crate::limits::HEARTBEAT_TICKS_PER_LEASE;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(reply) = requests.recv() => {
                    self.round(true).await;
                    // The requester may have stopped waiting; that is fine.
                    let _ = reply.send(());
                }
                _ = tick.tick() => self.round(false).await,
            }
        }
    }

    /// Extends the due leases (all of them when `all`).
    async fn round(&self, all: bool) {
        let start = Instant::now();
        let due = self.inflight.due(start, all);
        if due.is_empty() {
            return;
        }
        for chunk in due.chunks(limits::BATCH_SIZE_MAX) {
            let leases: Vec<LeaseRef> = chunk.iter().map(TaskContext::lease).collect();
            // One `extend` span per call (level debug), with the batch's size.
            let span = tracing::debug_span!("extend", leases = leases.len());
            let extended = self
                .broker
                .extend(&leases, self.lease)
                .instrument(span.clone())
                .await;
            // Entered only for the logs below, which never wait.
            let _entered = span.enter();
            match extended {
                Ok(results) => {
                    for (ctx, result) in chunk.iter().zip(results) {
                        match result {
                            Ok(lease) => {
                                ctx.extended(lease.expires_at);
                                self.inflight
                                    .reschedule(&ctx.lease(), extend_at(start, self.lease));
                                self.counters.add(Count::Extended, 1);
                            }
                            Err(refusal) => {
                                // The supervisor logs and counts the loss if the handler was
                                // still running; if the attempt was being settled, the
                                // settlement meets the same refusal.
                                tracing::debug!(
                                    task = %ctx.id(),
                                    fence = %ctx.fence(),
                                    %refusal,
                                    "the broker refused to extend a lease"
                                );
                                ctx.lose_lease(refusal);
                            }
                        }
                    }
                }
                Err(error) => {
                    self.counters.add(Count::BrokerErrors, 1);
                    tracing::warn!(
                        %error,
                        leases = leases.len(),
                        "extending leases failed; trying again at the next tick"
                    );
                }
            }
        }
        self.counters.announce();
    }
}
