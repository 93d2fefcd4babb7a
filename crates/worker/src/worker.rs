//! [`Worker`]: starts the loops, waits for shutdown, and winds them down in order.
//!
//! A running worker is a handful of tokio tasks:
//! - fetch loops ([`crate::fetch`]), a few per queue, which reserve only as many tasks as the
//!   queue has room for (free handler slots plus free prefetch, see [`crate::capacity`]) and
//!   spawn a supervisor for each;
//! - one supervisor per task held ([`crate::supervise`]), which waits for the task's kind slot
//!   and handler slot, runs the handler with its timeout, catches panics, and hands the
//!   outcome to the completer;
//! - the completer ([`crate::complete`]), which sends acks, fails and releases in batches;
//! - the heartbeat loop ([`crate::heartbeat`]), which extends the leases still held.
//!
//! Shutdown goes in the order that loses nothing: stop reserving, release the tasks that have
//! not started, let handlers finish within the grace period, cancel the rest and release their
//! tasks, flush the completer, and only
//! then stop the heartbeats (a lease must stay alive until its settlement has landed).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use floodway_backpressure::AimdLimiter;
use floodway_core::Broker;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builder::{Settings, WorkerBuilder};
use crate::capacity::{Kinds, QueueCapacity};
use crate::complete::{self, Settlement};
use crate::effect::{BrokerCalls, ContextBroker};
use crate::error::WorkerError;
use crate::handler::Handler;
use crate::heartbeat::{Heartbeat, HeartbeatRequest};
use crate::inflight::Inflight;
use crate::limits;
use crate::metrics::{HandlerDurations, WorkerMetrics};
use crate::report::{Counters, WorkerReport};
use crate::stats::WorkerStats;

/// A worker: serves its queues with its handlers until told to shut down.
///
/// Build one with [`Worker::builder`], keep a [`WorkerHandle`] if something else must watch or
/// stop it, then call [`Worker::run`].
pub struct Worker<B> {
    broker: Arc<B>,
    settings: Arc<Settings>,
    handlers: Arc<HashMap<String, Handler>>,
    shared: Arc<Shared>,
    /// Taken by the heartbeat loop when the worker runs.
    heartbeat_requests: mpsc::Receiver<HeartbeatRequest>,
    /// Tells handles the worker has stopped when it is dropped: at the end of `run`, or
    /// without running at all.
    stopped: StopGuard,
}

/// Marks the counters stopped when dropped, so waiting handles wake up and give up.
struct StopGuard(Arc<Counters>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What a worker and its handles share.
#[derive(Debug)]
struct Shared {
    /// Fired to start a graceful shutdown, by the shutdown future or by a handle.
    shutdown: CancellationToken,
    counters: Arc<Counters>,
    heartbeat: mpsc::Sender<HeartbeatRequest>,
    /// Each queue's limits and live counts, in the order configured.
    queues: Vec<Arc<QueueCapacity>>,
    /// Each kind's adaptive limit and live counts.
    kinds: Arc<Kinds>,
    /// The worker as a metrics source; a registry holds it weakly, so it is exported while
    /// the worker or a handle lives.
    metrics: Arc<WorkerMetrics>,
}

/// A handle on a worker, to watch its counts, trigger heartbeats, or shut it down from
/// elsewhere. Cheap to clone; it stays usable after the worker stops (and then reports so).
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
}

impl WorkerHandle {
    /// Starts a graceful shutdown, as the shutdown future given to [`Worker::run`] would.
    /// Reservation stops at once: no reserve call begins after this returns.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// The counts so far.
    pub fn report(&self) -> WorkerReport {
        self.shared.counters.snapshot()
    }

    /// What the worker holds and runs now, per queue (leases, running, prefetched, held back)
    /// and per kind (running, waiting, adaptive limit, overloads, timeouts). Cheap: no broker
    /// call, no lock held longer than a copy. Every change to these levels is announced like
    /// a change of the counts, so [`WorkerHandle::wait_for`] can wait on them too (check them
    /// in its condition).
    pub fn stats(&self) -> WorkerStats {
        WorkerStats {
            queues: self.shared.queues.iter().map(|q| q.snapshot()).collect(),
            kinds: self.shared.kinds.snapshot(),
        }
    }

    /// Waits until the counts satisfy `condition` (checked now and after every change) and
    /// returns them. Fails with [`WorkerError::Stopped`] if the worker stops first.
    pub async fn wait_for(
        &self,
        mut condition: impl FnMut(&WorkerReport) -> bool,
    ) -> Result<WorkerReport, WorkerError> {
        let counters = &self.shared.counters;
        let mut changes = counters.subscribe();
        loop {
            changes.borrow_and_update();
            let stopped = counters.is_stopped();
            let report = counters.snapshot();
            if condition(&report) {
                return Ok(report);
            }
            if stopped || changes.changed().await.is_err() {
                return Err(WorkerError::Stopped);
            }
        }
    }

    /// Extends every lease the worker holds now, instead of when each falls due, and returns
    /// when the broker has answered. Leases the broker refuses are lost, as in any heartbeat:
    /// their handlers are stopped. Useful before a known pause, and in tests that drive the
    /// broker's clock by hand. Waits for the worker to start if it has not yet.
    pub async fn heartbeat_now(&self) -> Result<(), WorkerError> {
        if self.shared.counters.is_stopped() {
            return Err(WorkerError::Stopped);
        }
        let (reply, done) = oneshot::channel();
        self.shared
            .heartbeat
            .send(reply)
            .await
            .map_err(|_| WorkerError::Stopped)?;
        done.await.map_err(|_| WorkerError::Stopped)
    }
}

/// What the fetch loops and supervisors of one run share.
pub(crate) struct Runtime<B> {
    pub(crate) broker: Arc<B>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) handlers: Arc<HashMap<String, Handler>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) inflight: Arc<Inflight>,
    /// Fired when shutdown starts: fetch loops stop reserving and release whatever a reserve
    /// call still in flight returns.
    pub(crate) stop: CancellationToken,
    /// Fired when the grace period ends: every attempt's context is a child of it, so the
    /// remaining handlers are cancelled and their tasks released.
    pub(crate) grace_over: CancellationToken,
    /// Into the completer. Its receiver ends when every `Runtime` is dropped.
    pub(crate) settle: mpsc::Sender<Settlement>,
    /// The supervisors, so shutdown can wait for them.
    pub(crate) supervisors: TaskTracker,
    /// Each kind's gate; supervisors take kind slots from it, fetch loops ask it for room.
    pub(crate) kinds: Arc<Kinds>,
    /// What handlers' contexts use to confirm leases and record effects.
    pub(crate) context_broker: Arc<dyn ContextBroker>,
    /// When the run started, on tokio's clock: the adaptive limits' time is measured from it.
    pub(crate) started: Instant,
}

impl<B> Runtime<B> {
    /// Time since the run started, for the adaptive limits.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl<B: Broker> Worker<B> {
    /// A builder for a worker of `broker`.
    pub fn builder(broker: Arc<B>) -> WorkerBuilder<B> {
        WorkerBuilder::new(broker)
    }

    pub(crate) fn new(
        broker: Arc<B>,
        settings: Settings,
        handlers: HashMap<String, Handler>,
        limiters: HashMap<String, AimdLimiter>,
    ) -> Self {
        let (heartbeat, heartbeat_requests) = mpsc::channel(limits::HEARTBEAT_REQUESTS_MAX);
        let counters = Arc::new(Counters::default());
        let queues: Vec<Arc<QueueCapacity>> = settings
            .queues
            .iter()
            .map(|served| {
                Arc::new(QueueCapacity::new(
                    served.queue.clone(),
                    served.concurrency,
                    served.prefetch,
                    HandlerDurations::new(handlers.keys()),
                ))
            })
            .collect();
        let kinds = Arc::new(Kinds::new(handlers.keys().cloned(), limiters));
        let metrics = Arc::new(WorkerMetrics {
            name: settings.name.clone(),
            queues: queues.clone(),
            kinds: kinds.clone(),
        });
        Worker {
            broker,
            settings: Arc::new(settings),
            handlers: Arc::new(handlers),
            shared: Arc::new(Shared {
                shutdown: CancellationToken::new(),
                counters: counters.clone(),
                heartbeat,
                queues,
                kinds,
                metrics,
            }),
            heartbeat_requests,
            stopped: StopGuard(counters),
        }
    }

    /// A handle to watch or stop this worker.
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle {
            shared: self.shared.clone(),
        }
    }

    /// The worker's name, as recorded on its leases.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Exports the worker's metrics through `registry` for as long as the worker or a handle
    /// of it lives.
    pub(crate) fn register_metrics(
        &self,
        registry: &floodway_metrics::Registry,
    ) -> Result<(), floodway_metrics::MetricsError> {
        registry.register_weak(&self.shared.metrics)
    }

    /// Serves the queues until `shutdown` completes (or a handle calls
    /// [`WorkerHandle::shutdown`]), then shuts down gracefully and returns what the worker
    /// did.
    ///
    /// Shutdown stops reserving at once (a reserve call already waiting is let finish, and
    /// whatever it returns is released unrun), releases the tasks that have not started
    /// (prefetched, or held back by an adaptive limit), lets running handlers finish within
    /// the grace period, then cancels the rest and releases their tasks without spending an attempt,
    /// sends every pending ack, fail and release, and stops the heartbeats. Broker errors
    /// along the way are logged and retried; they never end the run early.
    ///
    /// Pass [`crate::shutdown_signal()`] to stop on SIGINT or SIGTERM. Dropping the returned
    /// future instead cancels everything at once: handlers are stopped and their tasks
    /// released in the background.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> WorkerReport {
        let Worker {
            broker,
            settings,
            handlers,
            shared,
            heartbeat_requests,
            stopped,
        } = self;
        let counters = shared.counters.clone();
        let inflight = Arc::new(Inflight::default());
        let grace_over = CancellationToken::new();
        let heartbeat_stop = CancellationToken::new();
        // If this future is dropped, everything stops at once.
        let _drop_guards = (
            shared.shutdown.clone().drop_guard(),
            grace_over.clone().drop_guard(),
            heartbeat_stop.clone().drop_guard(),
        );

        // Every settlement carries a lease permit, so the channel never fills.
        let (settle, settlements) = mpsc::channel(settings.leases_max());
        let completer = tokio::spawn(complete::run(
            broker.clone(),
            settlements,
            inflight.clone(),
            counters.clone(),
        ));
        let heartbeat = tokio::spawn(
            Heartbeat {
                broker: broker.clone(),
                inflight: inflight.clone(),
                counters: counters.clone(),
                lease: settings.lease,
            }
            .run(heartbeat_requests, heartbeat_stop.clone()),
        );
        let supervisors = TaskTracker::new();
        let context_broker: Arc<dyn ContextBroker> = Arc::new(BrokerCalls {
            broker: broker.clone(),
            lease: settings.lease,
        });
        let runtime = Arc::new(Runtime {
            broker,
            settings: settings.clone(),
            handlers,
            counters: counters.clone(),
            inflight: inflight.clone(),
            stop: shared.shutdown.clone(),
            grace_over: grace_over.clone(),
            settle,
            supervisors: supervisors.clone(),
            kinds: shared.kinds.clone(),
            context_broker,
            started: Instant::now(),
        });
        let fetchers: Vec<_> = shared
            .queues
            .iter()
            .flat_map(|queue| {
                let lanes = limits::FETCH_LANES_PER_QUEUE.min(queue.concurrency + queue.prefetch);
                (0..lanes)
                    .map(|_| tokio::spawn(crate::fetch::run(runtime.clone(), queue.clone())))
                    .collect::<Vec<_>>()
            })
            .collect();
        // The completer must end once the fetch loops and supervisors are done.
        drop(runtime);
        tracing::info!(
            worker = %settings.name,
            queues = ?settings.queues,
            "worker started"
        );

        tokio::select! {
            () = shutdown => shared.shutdown.cancel(),
            () = shared.shutdown.cancelled() => {}
        }
        tracing::info!(
            in_flight = inflight.len(),
            grace_period = ?settings.grace_period,
            "shutting down: reserving stopped, releasing tasks not started, letting running ones finish"
        );
        for fetcher in fetchers {
            if let Err(error) = fetcher.await {
                tracing::error!(%error, "a fetch loop ended abnormally");
            }
        }
        supervisors.close();
        if tokio::time::timeout(settings.grace_period, supervisors.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = supervisors.len(),
                "grace period over: cancelling the remaining tasks and releasing them"
            );
            grace_over.cancel();
            supervisors.wait().await;
        }
        if let Err(error) = completer.await {
            tracing::error!(%error, "the completer ended abnormally");
        }
        heartbeat_stop.cancel();
        if let Err(error) = heartbeat.await {
            tracing::error!(%error, "the heartbeat loop ended abnormally");
        }
        debug_assert_eq!(inflight.len(), 0, "every lease is settled or lost");
        let report = counters.snapshot();
        drop(stopped);
        tracing::info!(?report, "worker stopped");
        report
    }
}
