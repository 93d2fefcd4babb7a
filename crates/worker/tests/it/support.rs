//! What every worker test needs: a real embedded broker in a temporary directory, a way to
//! run a worker in the background and stop it, and waits on the signals handlers send.
//!
//! The broker's clock is a `ManualClock`, so task states (retrying until a backoff passes,
//! leases until they expire) stay put until a test moves time. The worker's own timers (poll
//! wait, timeouts, grace period, heartbeat schedule) run on real time; tests never sleep to
//! synchronise, they wait for events: a handler's message, or a worker count.

use std::sync::Arc;
use std::time::Duration;

use floodway_core::{
    Broker, ManualClock, NewTask, QueueName, QueueStats, RetryPolicy, Task, TaskId, Timestamp,
};
use floodway_embedded::{EmbeddedBroker, Options};
use floodway_worker::{Worker, WorkerBuilder, WorkerHandle, WorkerReport, WorkerStats};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The broker's time when a test starts.
pub(crate) const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// The queue tests use.
pub(crate) const QUEUE: &str = "orders";

/// A safety net so that a broken test fails instead of hanging; never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(60);

/// A broker in a temporary directory, on a clock the test moves by hand.
pub(crate) struct Harness {
    pub(crate) broker: Arc<EmbeddedBroker>,
    pub(crate) clock: ManualClock,
    pub(crate) queue: QueueName,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let clock = ManualClock::new(T0);
        let broker = EmbeddedBroker::open(
            dir.path(),
            Options {
                clock: Arc::new(clock.clone()),
                maintenance_interval: None,
                ..Options::default()
            },
        )
        .expect("open the embedded broker");
        Harness {
            broker: Arc::new(broker),
            clock,
            queue: QueueName::new(QUEUE).unwrap(),
            _dir: dir,
        }
    }

    /// A worker builder with a short poll wait (so shutdown does not wait long for an idle
    /// poll) and a fixed name; tests add queues and handlers.
    pub(crate) fn builder(&self) -> WorkerBuilder<EmbeddedBroker> {
        Worker::builder(self.broker.clone())
            .poll_wait(Duration::from_millis(100))
            .name("test-worker")
    }

    pub(crate) async fn enqueue(&self, tasks: Vec<NewTask>) -> Vec<TaskId> {
        self.broker
            .enqueue(&self.queue, tasks)
            .await
            .expect("enqueue")
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    pub(crate) async fn enqueue_one(&self, task: NewTask) -> TaskId {
        self.enqueue(vec![task]).await[0]
    }

    pub(crate) async fn get(&self, id: TaskId) -> Task {
        self.broker.get(id).await.expect("get task")
    }

    pub(crate) async fn stats(&self) -> QueueStats {
        self.broker
            .stats(Some(&self.queue))
            .await
            .expect("stats")
            .remove(0)
    }
}

/// A retry policy with a fixed, jitter-free backoff, so a test knows when the retry is due.
pub(crate) fn fixed_backoff(max_attempts: u32, backoff: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff_initial: backoff,
        backoff_max: backoff,
        backoff_multiplier: 1.0,
        jitter: floodway_core::Jitter::None,
    }
}

/// A worker running in the background.
pub(crate) struct Running {
    pub(crate) handle: WorkerHandle,
    join: JoinHandle<WorkerReport>,
}

/// Starts `worker` on the runtime; stop it with [`Running::stop`].
pub(crate) fn start(worker: Worker<EmbeddedBroker>) -> Running {
    let handle = worker.handle();
    let join = tokio::spawn(worker.run(std::future::pending()));
    Running { handle, join }
}

impl Running {
    /// Shuts the worker down gracefully and returns its report.
    pub(crate) async fn stop(self) -> WorkerReport {
        self.handle.shutdown();
        self.finish().await
    }

    /// Waits for the worker's run to return (after a shutdown started elsewhere).
    pub(crate) async fn finish(self) -> WorkerReport {
        tokio::time::timeout(PATIENCE, self.join)
            .await
            .expect("the worker stops")
            .expect("the worker's run does not panic")
    }

    /// Waits until the worker's counts satisfy `condition`.
    pub(crate) async fn wait_for(
        &self,
        condition: impl FnMut(&WorkerReport) -> bool,
    ) -> WorkerReport {
        tokio::time::timeout(PATIENCE, self.handle.wait_for(condition))
            .await
            .expect("the condition is met in time")
            .expect("the worker is running")
    }

    /// Waits until the worker's stats satisfy `condition` (checked after every announced
    /// change) and returns the stats that did.
    pub(crate) async fn wait_for_stats(
        &self,
        mut condition: impl FnMut(&WorkerStats) -> bool,
    ) -> WorkerStats {
        let mut seen = None;
        self.wait_for(|_| {
            let stats = self.handle.stats();
            let met = condition(&stats);
            seen = Some(stats);
            met
        })
        .await;
        seen.expect("the condition was checked")
    }
}

/// The next message from a handler.
pub(crate) async fn recv<T>(rx: &mut mpsc::Receiver<T>) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a handler signals in time")
        .expect("the channel is open")
}

/// A channel for handlers to signal on.
pub(crate) fn signals<T>() -> (mpsc::Sender<T>, mpsc::Receiver<T>) {
    mpsc::channel(1024)
}
