//! [`WorkerBuilder`]: how a worker is configured, and the checks its settings pass.
//!
//! Every setting has a default from [`crate::limits`]; [`WorkerBuilder::build`] checks them
//! all and names the first one that is wrong, so a misconfigured worker fails before it
//! reserves anything.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use floodway_backpressure::{AimdConfig, AimdLimiter};
use floodway_core::broker::validate_lease_duration;
use floodway_core::name::check_kind;
use floodway_core::{Broker, QueueName, limits as core_limits};
use serde::de::DeserializeOwned;

use crate::context::TaskContext;
use crate::error::WorkerError;
use crate::handler::Handler;
use crate::limits;
use crate::outcome::Outcome;
use crate::worker::Worker;

/// The validated settings a running worker reads. Set once by [`WorkerBuilder::build`].
#[derive(Debug)]
pub(crate) struct Settings {
    /// Each queue served, in the order given.
    pub(crate) queues: Vec<ServedQueue>,
    /// The lease asked for on reserve and on every extension.
    pub(crate) lease: Duration,
    /// How long one reserve call waits for tasks.
    pub(crate) poll_wait: Duration,
    /// Most tasks one reserve call asks for.
    pub(crate) reserve_batch_max: usize,
    /// The worker's name, recorded on its leases.
    pub(crate) name: Arc<str>,
    /// How long shutdown waits for in-flight handlers.
    pub(crate) grace_period: Duration,
}

impl Settings {
    /// The most leases the worker holds at once: concurrency plus prefetch, over all queues.
    pub(crate) fn leases_max(&self) -> usize {
        self.queues.iter().map(ServedQueue::leases_max).sum()
    }
}

/// A queue a worker serves, and how many of its tasks it runs and holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServedQueue {
    pub(crate) queue: QueueName,
    /// Handler slots: at most this many of the queue's tasks run at once.
    pub(crate) concurrency: usize,
    /// Tasks reserved beyond the handler slots, waiting in memory for one.
    pub(crate) prefetch: usize,
}

impl ServedQueue {
    fn leases_max(&self) -> usize {
        self.concurrency.saturating_add(self.prefetch)
    }
}

/// Configures a [`Worker`]: the queues it serves, the handlers it runs, and its timings.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use floodway_worker::{Outcome, TaskContext, Worker};
/// # #[derive(serde::Deserialize)] struct Order { id: u64 }
/// # async fn example<B: floodway_core::Broker>(broker: Arc<B>) -> Result<(), Box<dyn std::error::Error>> {
/// let worker = Worker::builder(broker)
///     .queue("orders", 8)
///     .handler("charge_card", |ctx: TaskContext, order: Order| async move {
///         if ctx.is_last_attempt() {
///             return Outcome::fail(format!("order {} could not be charged", order.id));
///         }
///         Outcome::Complete
///     })
///     .build()?;
/// let report = worker.run(floodway_worker::shutdown_signal()).await;
/// println!("completed {}", report.completed);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct WorkerBuilder<B> {
    broker: Arc<B>,
    queues: Vec<(String, usize)>,
    prefetches: Vec<(String, usize)>,
    handlers: HashMap<String, Handler>,
    kind_timeouts: Vec<(String, Duration)>,
    adaptive: Vec<(String, AimdConfig)>,
    timeout: Duration,
    lease: Duration,
    poll_wait: Duration,
    reserve_batch_max: usize,
    name: Option<String>,
    grace_period: Duration,
    /// Where the worker's metrics are exported, if anywhere.
    registry: Option<Arc<floodway_metrics::Registry>>,
    /// The first registration error (a kind registered twice), reported by `build`.
    error: Option<WorkerError>,
}

impl<B: Broker> WorkerBuilder<B> {
    /// A builder for a worker of `broker`, with the defaults from [`crate::limits`].
    pub fn new(broker: Arc<B>) -> Self {
        WorkerBuilder {
            broker,
            queues: Vec::new(),
            prefetches: Vec::new(),
            handlers: HashMap::new(),
            kind_timeouts: Vec::new(),
            adaptive: Vec::new(),
            timeout: limits::TIMEOUT_DEFAULT,
            lease: limits::LEASE_DURATION_DEFAULT,
            poll_wait: limits::POLL_WAIT_DEFAULT,
            reserve_batch_max: limits::RESERVE_BATCH_MAX_DEFAULT,
            name: None,
            grace_period: limits::GRACE_PERIOD_DEFAULT,
            registry: None,
            error: None,
        }
    }

    /// Serves `queue`, running at most `concurrency` of its tasks at once. The worker never
    /// holds more than `concurrency` leases of the queue (plus its
    /// [`prefetch`](WorkerBuilder::prefetch), 0 unless set), so tasks it cannot start yet
    /// stay in the broker for other workers.
    pub fn queue(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        self.queues.push((queue.into(), concurrency));
        self
    }

    /// Lets the worker hold up to `prefetch` tasks of `queue` beyond its concurrency: they
    /// are reserved ahead, wait in memory for a handler slot (their leases kept alive by the
    /// heartbeat), and are released unrun, without spending an attempt, if shutdown starts
    /// first. `queue` must be served ([`WorkerBuilder::queue`]).
    ///
    /// The default, 0, reserves a task only for a free handler slot, which is right for long
    /// tasks: a prefetched task would wait here while another worker could run it now. Prefetch
    /// helps when tasks are short and the broker is far (a remote server, Redis across a
    /// network): a handler slot that frees up starts the next task at once instead of waiting
    /// a reserve round trip. A good size is about the tasks the queue completes during one
    /// round trip to the broker.
    pub fn prefetch(mut self, queue: impl Into<String>, prefetch: usize) -> Self {
        self.prefetches.push((queue.into(), prefetch));
        self
    }

    /// Runs tasks of `kind` with `handler`, which gets the task's context and its payload
    /// decoded from JSON into `T`. A payload that does not decode is a permanent failure (the
    /// task goes to the dead letters with the serde error). The handler returns anything that
    /// converts into an [`Outcome`]: the outcome itself, `()`, or a `Result` whose error is
    /// retried.
    pub fn handler<T, F, Fut, O>(self, kind: impl Into<String>, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(TaskContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: Into<Outcome> + 'static,
    {
        self.register(kind.into(), Handler::typed(handler))
    }

    /// Runs tasks of `kind` with `handler`, which gets the payload bytes as they are (for
    /// payloads that are not JSON).
    pub fn raw_handler<F, Fut, O>(self, kind: impl Into<String>, handler: F) -> Self
    where
        F: Fn(TaskContext, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: Into<Outcome> + 'static,
    {
        self.register(kind.into(), Handler::raw(handler))
    }

    fn register(mut self, kind: String, handler: Handler) -> Self {
        if self.handlers.contains_key(&kind) {
            self.error.get_or_insert_with(|| {
                WorkerError::invalid("handler", format!("kind {kind:?} is registered twice"))
            });
        }
        self.handlers.insert(kind, handler);
        self
    }

    /// How long one attempt of any kind may run (default 5 minutes), unless its kind
    /// ([`WorkerBuilder::kind_timeout`]) or the task itself sets a timeout. An attempt that
    /// runs longer is stopped and counts as failed; it is retried with the task's backoff.
    /// A timeout may exceed the lease: heartbeats keep the lease alive meanwhile.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long one attempt of `kind` may run, unless the task sets its own timeout.
    pub fn kind_timeout(mut self, kind: impl Into<String>, timeout: Duration) -> Self {
        self.kind_timeouts.push((kind.into(), timeout));
        self
    }

    /// Adapts how many tasks of `kind` run at once to what its downstream copes with, within
    /// `config`'s bounds (additive increase, multiplicative decrease, as TCP does). Off by
    /// default: a kind runs as many tasks as its queue's concurrency allows.
    ///
    /// The limit starts at `config.initial`. Every completed task raises it by `1 / limit`
    /// (about one per limit's worth of successes); a handler returning
    /// [`Outcome::Overloaded`] or an attempt that times out multiplies it by
    /// `config.decrease_factor`, at most once per `config.cooldown`, so one episode of
    /// overload cuts it once. It never leaves `config.min ..= config.max`. Other failures leave
    /// it alone: they say nothing about load.
    ///
    /// A task of the kind that finds the limit reached waits in memory for a running one to
    /// finish, its lease kept alive, without taking a handler slot that another kind could
    /// use; shutdown releases it unrun. When every kind the worker handles is adaptive, the
    /// worker also reserves no more tasks than the limits (plus the queue's prefetch) leave
    /// room for, so the rest stay in the broker. The current limit is in
    /// [`crate::WorkerHandle::stats`].
    pub fn adaptive(mut self, kind: impl Into<String>, config: AimdConfig) -> Self {
        self.adaptive.push((kind.into(), config));
        self
    }

    /// How long each lease lasts (default 30 seconds) before it must be extended. Heartbeats
    /// extend it while the handler runs; if the worker dies, its tasks are redelivered after
    /// at most this long.
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a reserve call waits for a task when the queue is empty (default 2 seconds).
    /// Shutdown waits for a call already waiting, so keep it short.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    /// Most tasks one reserve call asks for (default 100). A call never asks for more than
    /// the queue has room for (free handler slots plus free prefetch).
    pub fn reserve_batch_max(mut self, max: usize) -> Self {
        self.reserve_batch_max = max;
        self
    }

    /// The worker's name, recorded on its leases for operators and on its metrics (label
    /// `worker`) (default: host name and process id). Give each worker of a process its own.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long shutdown lets in-flight handlers finish (default 30 seconds) before it cancels
    /// them and releases their tasks.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// Exports the worker's metrics through `registry` (docs/metrics.md: `floodway_worker_*`,
    /// labelled with the worker's [`name`](WorkerBuilder::name)) for as long as the worker or
    /// a handle of it lives. Serve the registry with `floodway_server::metrics::router`, or
    /// with [`floodway_metrics::Registry::encode`] in any framework.
    pub fn metrics(mut self, registry: Arc<floodway_metrics::Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Checks every setting and builds the worker. The error names the first bad setting.
    pub fn build(self) -> Result<Worker<B>, WorkerError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let queues = check_queues(self.queues, self.prefetches)?;
        let mut handlers = self.handlers;
        if handlers.is_empty() {
            return Err(WorkerError::invalid(
                "handler",
                "register at least one handler",
            ));
        }
        for kind in handlers.keys() {
            check_kind(kind).map_err(|error| WorkerError::invalid("handler", error.to_string()))?;
        }
        check_timeout("timeout", self.timeout)?;
        for handler in handlers.values_mut() {
            handler.timeout = self.timeout;
        }
        for (kind, timeout) in self.kind_timeouts {
            check_timeout("kind_timeout", timeout)?;
            let handler = handlers.get_mut(&kind).ok_or_else(|| {
                WorkerError::invalid(
                    "kind_timeout",
                    format!("no handler is registered for kind {kind:?}"),
                )
            })?;
            handler.timeout = timeout;
        }
        let mut limiters = HashMap::new();
        for (kind, config) in self.adaptive {
            if !handlers.contains_key(&kind) {
                return Err(WorkerError::invalid(
                    "adaptive",
                    format!("no handler is registered for kind {kind:?}"),
                ));
            }
            let limiter = AimdLimiter::new(config).map_err(|error| {
                WorkerError::invalid("adaptive", format!("kind {kind:?}: {error}"))
            })?;
            limiters.insert(kind, limiter);
        }
        validate_lease_duration(self.lease)
            .map_err(|error| WorkerError::invalid("lease_duration", error.to_string()))?;
        if self.poll_wait.is_zero() || self.poll_wait > core_limits::RESERVE_WAIT_MAX {
            return Err(WorkerError::invalid(
                "poll_wait",
                format!(
                    "must be positive and at most {}",
                    floodway_core::duration::format(core_limits::RESERVE_WAIT_MAX)
                ),
            ));
        }
        if !(1..=core_limits::BATCH_SIZE_MAX).contains(&self.reserve_batch_max) {
            return Err(WorkerError::invalid(
                "reserve_batch_max",
                format!("must be between 1 and {}", core_limits::BATCH_SIZE_MAX),
            ));
        }
        if self.grace_period > limits::GRACE_PERIOD_MAX {
            return Err(WorkerError::invalid(
                "grace_period",
                format!(
                    "must be at most {}",
                    floodway_core::duration::format(limits::GRACE_PERIOD_MAX)
                ),
            ));
        }
        let name = self.name.unwrap_or_else(default_name);
        if name.is_empty() || name.len() > limits::WORKER_NAME_LEN_MAX {
            return Err(WorkerError::invalid(
                "name",
                format!("must be 1 to {} bytes", limits::WORKER_NAME_LEN_MAX),
            ));
        }
        let settings = Settings {
            queues,
            lease: self.lease,
            poll_wait: self.poll_wait,
            reserve_batch_max: self.reserve_batch_max,
            name: Arc::from(name),
            grace_period: self.grace_period,
        };
        let worker = Worker::new(self.broker, settings, handlers, limiters);
        if let Some(registry) = self.registry {
            worker
                .register_metrics(&registry)
                .map_err(|error| WorkerError::invalid("metrics", error.to_string()))?;
        }
        Ok(worker)
    }
}

fn check_queues(
    queues: Vec<(String, usize)>,
    prefetches: Vec<(String, usize)>,
) -> Result<Vec<ServedQueue>, WorkerError> {
    if queues.is_empty() {
        return Err(WorkerError::invalid("queue", "serve at least one queue"));
    }
    if queues.len() > limits::QUEUES_MAX {
        return Err(WorkerError::invalid(
            "queue",
            format!(
                "{} queues; the limit is {}",
                queues.len(),
                limits::QUEUES_MAX
            ),
        ));
    }
    let mut checked: Vec<ServedQueue> = Vec::with_capacity(queues.len());
    for (name, concurrency) in queues {
        let queue = QueueName::new(&name)
            .map_err(|error| WorkerError::invalid("queue", error.to_string()))?;
        if checked.iter().any(|served| served.queue == queue) {
            return Err(WorkerError::invalid(
                "queue",
                format!("queue {queue} is given twice"),
            ));
        }
        if concurrency == 0 {
            return Err(WorkerError::invalid(
                "queue",
                format!("the concurrency of queue {queue} must be at least 1"),
            ));
        }
        checked.push(ServedQueue {
            queue,
            concurrency,
            prefetch: 0,
        });
    }
    for (name, prefetch) in prefetches {
        let served = checked
            .iter_mut()
            .find(|served| served.queue.as_str() == name)
            .ok_or_else(|| {
                WorkerError::invalid(
                    "prefetch",
                    format!("queue {name:?} is not served; add it with `queue` first"),
                )
            })?;
        served.prefetch = prefetch;
    }
    let total = checked.iter().fold(0usize, |total, served| {
        total.saturating_add(served.leases_max())
    });
    if total > limits::INFLIGHT_MAX {
        return Err(WorkerError::invalid(
            "queue",
            format!(
                "concurrency and prefetch add up to {total}; one worker holds at most {} leases at once",
                limits::INFLIGHT_MAX
            ),
        ));
    }
    Ok(checked)
}

fn check_timeout(setting: &'static str, timeout: Duration) -> Result<(), WorkerError> {
    if timeout.is_zero() || timeout > limits::TIMEOUT_MAX {
        return Err(WorkerError::invalid(
            setting,
            format!(
                "must be positive and at most {}",
                floodway_core::duration::format(limits::TIMEOUT_MAX)
            ),
        ));
    }
    Ok(())
}

/// `host-pid`: what an operator needs to find the process holding a lease.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let mut name = format!("{host}-{}", std::process::id());
    if name.len() > limits::WORKER_NAME_LEN_MAX {
        let mut end = limits::WORKER_NAME_LEN_MAX;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_names_host_and_process() {
        let name = default_name();
        assert!(
            name.ends_with(&format!("-{}", std::process::id())),
            "{name}"
        );
        assert!(name.len() <= limits::WORKER_NAME_LEN_MAX);
    }

    #[test]
    fn queues_are_checked_by_name() {
        let check = |queues: Vec<(&str, usize)>| {
            check_queues(
                queues.into_iter().map(|(q, c)| (q.to_owned(), c)).collect(),
                vec![],
            )
        };
        let err = check(vec![("a b", 1)]).unwrap_err().to_string();
        assert!(err.contains("queue") && err.contains("' '"), "{err}");
        let err = check(vec![("q", 0)]).unwrap_err().to_string();
        assert!(err.contains("at least 1"), "{err}");
        let err = check(vec![("q", 1), ("q", 2)]).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
        let err = check(vec![("q", limits::INFLIGHT_MAX + 1)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most"), "{err}");
        assert!(check(vec![]).is_err());
        assert_eq!(check(vec![("q", 3)]).unwrap().len(), 1);
    }

    #[test]
    fn prefetch_applies_to_a_served_queue_and_counts_toward_the_lease_bound() {
        let queues = vec![("a".to_owned(), 2), ("b".to_owned(), 3)];
        let served = check_queues(queues.clone(), vec![("b".to_owned(), 4)]).unwrap();
        assert_eq!((served[0].prefetch, served[1].prefetch), (0, 4));
        assert_eq!(served[1].leases_max(), 7);
        let err = check_queues(queues.clone(), vec![("c".to_owned(), 1)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid worker setting prefetch") && err.contains("\"c\""),
            "{err}"
        );
        let err = check_queues(queues, vec![("a".to_owned(), limits::INFLIGHT_MAX)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("leases"), "{err}");
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(check_timeout("timeout", Duration::ZERO).is_err());
        assert!(check_timeout("timeout", limits::TIMEOUT_MAX + Duration::from_secs(1)).is_err());
        assert!(check_timeout("timeout", limits::TIMEOUT_DEFAULT).is_ok());
    }
}
