//! [`Worker`]: starts the loops, waits for shutdown, and winds them down in order.
//!
//! A running worker is a handful of tokio tasks:
//! - fetch loops ([`crate::fetch`]), a few per queue, which reserve only as many tasks as the
//!   queue has free handler slots and spawn a supervisor for each;
//! - one supervisor per task in flight ([`crate::supervise`]), which runs the handler with its
//!   timeout, catches panics, and hands the outcome to the completer;
//! - the completer ([`crate::complete`]), which sends acks, fails and releases in batches;
//! - the heartbeat loop ([`crate::heartbeat`]), which extends the leases still held.
//!
//! Shutdown goes in the order that loses nothing: stop reserving, let handlers finish within
//! the grace period, cancel the rest and release their tasks, flush the completer, and only
//! then stop the heartbeats (a lease must stay alive until its settlement has landed).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use floodway_core::Broker;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builder::{Settings, WorkerBuilder};
use crate::complete::{self, Settlement};
use crate::error::WorkerError;
use crate::handler::Handler;
use crate::heartbeat::{Heartbeat, HeartbeatRequest};
use crate::inflight::Inflight;
use crate::limits;
use crate::report::{Counters, WorkerReport};

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
    ) -> Self {
        let (heartbeat, heartbeat_requests) = mpsc::channel(limits::HEARTBEAT_REQUESTS_MAX);
        let counters = Arc::new(Counters::default());
        Worker {
            broker,
            settings: Arc::new(settings),
            handlers: Arc::new(handlers),
            shared: Arc::new(Shared {
                shutdown: CancellationToken::new(),
                counters: counters.clone(),
                heartbeat,
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

    /// Serves the queues until `shutdown` completes (or a handle calls
    /// [`WorkerHandle::shutdown`]), then shuts down gracefully and returns what the worker
    /// did.
    ///
    /// Shutdown stops reserving at once (a reserve call already waiting is let finish, and
    /// whatever it returns is released unrun), lets in-flight handlers finish within the grace
    /// period, then cancels the rest and releases their tasks without spending an attempt,
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

        let (settle, settlements) = mpsc::channel(settings.inflight_max());
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
        });
        let fetchers: Vec<_> = settings
            .queues
            .iter()
            .flat_map(|(queue, concurrency)| {
                let slots = Arc::new(Semaphore::new(*concurrency));
                let lanes = limits::FETCH_LANES_PER_QUEUE.min(*concurrency);
                (0..lanes)
                    .map(|_| {
                        tokio::spawn(crate::fetch::run(
                            runtime.clone(),
                            queue.clone(),
                            slots.clone(),
                        ))
                    })
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
            "shutting down: reserving stopped, letting in-flight tasks finish"
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
