//! Every metric floodway exports, declared once: name, type, help, labels and the process
//! that exports it.
//!
//! Names follow Prometheus's conventions: a `floodway_` prefix, base units in the name
//! (`_seconds`), `_total` on counters. Label values are bounded sets (queue and kind names,
//! states, reasons, outcomes, route templates), never ids. docs/metrics.md lists the same
//! metrics with their meaning; a test in this crate checks that the two agree, and the
//! server's and the CLI's tests find each of them in a real scrape.

use floodway_core::LatencyHistogram;

/// A metric's Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// A value that only grows (and restarts from zero with its process).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations counted into buckets with these upper bounds (seconds, ascending), plus
    /// their sum and count.
    Histogram(&'static [f64]),
}

impl Kind {
    /// The type as the text format's `# TYPE` line writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        }
    }
}

/// Which process exports a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exporter {
    /// Per queue, read from the broker when scraped: `floodway serve` at `/metrics`, or any
    /// process that registers a [`crate::BrokerSource`].
    Queue,
    /// The HTTP server process (`floodway serve`), about its requests.
    Server,
    /// A worker process, per worker (label `worker`): `floodway worker --listen`, or a
    /// library user's exporter.
    Worker,
    /// A producer (label `producer`), in the process that runs it.
    Producer,
}

impl Exporter {
    /// The exporter as docs/metrics.md names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Exporter::Queue => "queue",
            Exporter::Server => "server",
            Exporter::Worker => "worker",
            Exporter::Producer => "producer",
        }
    }
}

/// One metric: everything the exposition says about it but its samples.
#[derive(Debug, PartialEq)]
pub struct Metric {
    /// The metric's name, `floodway_...`.
    pub name: &'static str,
    /// Its type (and a histogram's buckets).
    pub kind: Kind,
    /// The `# HELP` text: one line, what the value means.
    pub help: &'static str,
    /// Its label names, in the order samples give their values.
    pub labels: &'static [&'static str],
    /// Which process exports it.
    pub exporter: Exporter,
}

/// Bucket bounds, in seconds, of the duration histograms (handlers, HTTP requests): from a
/// millisecond to five minutes (the default handler timeout).
pub const DURATION_BOUNDS_SECONDS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Bucket bounds, in seconds, of the start latency histogram: the brokers' own
/// ([`LatencyHistogram::BOUNDS`]), so broker histograms export as they are.
pub const START_LATENCY_BOUNDS_SECONDS: [f64; LatencyHistogram::BOUNDS.len()] = {
    let mut bounds = [0.0; LatencyHistogram::BOUNDS.len()];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = LatencyHistogram::BOUNDS[i].as_secs_f64();
        i += 1;
    }
    bounds
};

macro_rules! metrics {
    ($( $(#[$doc:meta])* $ident:ident: $name:literal, $kind:expr, [$($label:literal),*], $exporter:ident, $help:literal; )*) => {
        $(
            $(#[$doc])*
            pub const $ident: Metric = Metric {
                name: $name,
                kind: $kind,
                help: $help,
                labels: &[$($label),*],
                exporter: Exporter::$exporter,
            };
        )*

        /// Every metric, in the order the exposition writes them.
        pub const ALL: &[&Metric] = &[$(&$ident),*];
    };
}

metrics! {
    /// Tasks in a queue now, by state (all seven states, completed and dead as retained).
    QUEUE_DEPTH: "floodway_queue_depth", Kind::Gauge, ["queue", "state"], Queue,
        "Tasks in the queue now, by state (completed, dead and cancelled as retained).";
    /// How long the longest-waiting ready task has waited since it became due (0 when none is
    /// ready).
    QUEUE_OLDEST_READY_AGE_SECONDS: "floodway_queue_oldest_ready_age_seconds", Kind::Gauge, ["queue"], Queue,
        "Seconds the longest-waiting ready task has waited since it became due (0 when none is ready).";
    /// Seconds to work off the ready tasks at the recent completion rate; while nothing
    /// completes and tasks wait, the oldest ready task's age. What autoscaling follows.
    QUEUE_BACKLOG_SECONDS: "floodway_queue_backlog_seconds", Kind::Gauge, ["queue"], Queue,
        "Seconds to work off the ready tasks at the recent completion rate; while nothing completes, the oldest ready task's age. Scale workers on this.";
    /// The queue's completions per second, smoothed over recent scrapes.
    QUEUE_COMPLETIONS_PER_SECOND: "floodway_queue_completions_per_second", Kind::Gauge, ["queue"], Queue,
        "Tasks completed per second, smoothed over recent scrapes (0 until two scrapes measured it).";
    /// 1 while the queue is paused.
    QUEUE_PAUSED: "floodway_queue_paused", Kind::Gauge, ["queue"], Queue,
        "1 while the queue is paused.";
    /// 1 while the queue refuses enqueues between its watermarks.
    QUEUE_REFUSING: "floodway_queue_refusing", Kind::Gauge, ["queue"], Queue,
        "1 while the queue refuses enqueues: above its high watermark, or not yet back at its low one.";
    /// Tasks accepted by enqueue (duplicates excluded).
    TASKS_ENQUEUED_TOTAL: "floodway_tasks_enqueued_total", Kind::Counter, ["queue"], Queue,
        "Tasks accepted by enqueue (duplicates excluded).";
    /// Enqueued tasks answered with an existing task's id (idempotency key).
    TASKS_DEDUPLICATED_TOTAL: "floodway_tasks_deduplicated_total", Kind::Counter, ["queue"], Queue,
        "Enqueued tasks answered with an existing task's id because of their idempotency key.";
    /// Reservations handed out.
    TASKS_RESERVED_TOTAL: "floodway_tasks_reserved_total", Kind::Counter, ["queue"], Queue,
        "Reservations handed out (each one attempt).";
    /// Tasks completed.
    TASKS_COMPLETED_TOTAL: "floodway_tasks_completed_total", Kind::Counter, ["queue"], Queue,
        "Tasks completed.";
    /// Failed attempts scheduled for retry.
    TASKS_RETRIED_TOTAL: "floodway_tasks_retried_total", Kind::Counter, ["queue"], Queue,
        "Failed attempts scheduled for retry.";
    /// Tasks given back unrun by their worker.
    TASKS_RELEASED_TOTAL: "floodway_tasks_released_total", Kind::Counter, ["queue"], Queue,
        "Tasks given back unrun by their worker (shutdown, say), without spending an attempt.";
    /// Tasks moved to the dead letters, by reason.
    TASKS_DEAD_LETTERED_TOTAL: "floodway_tasks_dead_lettered_total", Kind::Counter, ["queue", "reason"], Queue,
        "Tasks moved to the dead letters, by reason.";
    /// Dead letters replayed.
    TASKS_REPLAYED_TOTAL: "floodway_tasks_replayed_total", Kind::Counter, ["queue"], Queue,
        "Dead letters replayed (moved back to ready).";
    /// Tasks cancelled.
    TASKS_CANCELLED_TOTAL: "floodway_tasks_cancelled_total", Kind::Counter, ["queue"], Queue,
        "Tasks cancelled while they waited.";
    /// Dead letters deleted because the queue held `dead_retain` already.
    DEAD_LETTERS_DROPPED_TOTAL: "floodway_dead_letters_dropped_total", Kind::Counter, ["queue"], Queue,
        "Dead letters deleted because the queue held dead_retain already.";
    /// Enqueue calls refused because the queue was full.
    ENQUEUES_REJECTED_FULL_TOTAL: "floodway_enqueues_rejected_full_total", Kind::Counter, ["queue"], Queue,
        "Enqueue calls refused because the queue was full (length_max).";
    /// Enqueue calls refused because the queue was above its high watermark.
    ENQUEUES_REJECTED_OVERLOADED_TOTAL: "floodway_enqueues_rejected_overloaded_total", Kind::Counter, ["queue"], Queue,
        "Enqueue calls refused because the queue was above its high watermark.";
    /// Reserve calls cut short by a rate or concurrency limit, by limit.
    RESERVES_THROTTLED_TOTAL: "floodway_reserves_throttled_total", Kind::Counter, ["queue", "limit"], Queue,
        "Reserve calls that returned fewer tasks than asked for while a rate or concurrency limit held an eligible task back, by limit.";
    /// Side-effect results recorded by handlers.
    EFFECTS_RECORDED_TOTAL: "floodway_effects_recorded_total", Kind::Counter, ["queue"], Queue,
        "Side-effect results recorded by tasks' handlers.";
    /// Leases that expired before their holder finished.
    LEASES_EXPIRED_TOTAL: "floodway_leases_expired_total", Kind::Counter, ["queue"], Queue,
        "Leases that expired before their holder finished (a worker crashed or stalled).";
    /// Lease operations refused for a stale or expired lease.
    STALE_REFUSED_TOTAL: "floodway_stale_refused_total", Kind::Counter, ["queue"], Queue,
        "Ack, fail, extend or release items refused for a stale or expired lease.";
    /// From when a task became due to its reservation, recorded by the broker.
    TASK_START_LATENCY_SECONDS: "floodway_task_start_latency_seconds", Kind::Histogram(&START_LATENCY_BOUNDS_SECONDS), ["queue"], Queue,
        "Seconds from when a task became due (enqueue, run-at, retry time) to its reservation, recorded by the broker.";
    /// HTTP requests answered, by route template, method and status.
    HTTP_REQUESTS_TOTAL: "floodway_http_requests_total", Kind::Counter, ["route", "method", "status"], Server,
        "HTTP requests answered, by route, method and status.";
    /// How long HTTP requests took, by route template and method.
    HTTP_REQUEST_DURATION_SECONDS: "floodway_http_request_duration_seconds", Kind::Histogram(&DURATION_BOUNDS_SECONDS), ["route", "method"], Server,
        "Seconds from a request's arrival to its answer (long polls included), by route and method.";
    /// Leases a worker holds on a queue's tasks.
    WORKER_LEASES: "floodway_worker_leases", Kind::Gauge, ["worker", "queue"], Worker,
        "Leases the worker holds on the queue's tasks: running, prefetched or being settled.";
    /// Handlers running.
    WORKER_RUNNING: "floodway_worker_running", Kind::Gauge, ["worker", "queue"], Worker,
        "Handlers of the queue's tasks running in the worker now (in flight).";
    /// Tasks reserved and waiting in the worker for a handler slot or their kind's limit.
    WORKER_PREFETCHED: "floodway_worker_prefetched", Kind::Gauge, ["worker", "queue"], Worker,
        "Tasks reserved whose handler has not started: waiting for a handler slot or their kind's adaptive limit.";
    /// Handler slots configured for a queue.
    WORKER_CONCURRENCY: "floodway_worker_concurrency", Kind::Gauge, ["worker", "queue"], Worker,
        "Handler slots the worker has for the queue (its configured concurrency).";
    /// A kind's current adaptive concurrency limit.
    WORKER_KIND_LIMIT: "floodway_worker_kind_limit", Kind::Gauge, ["worker", "kind"], Worker,
        "How many tasks of the kind may run at once now (adaptive kinds only; AIMD).";
    /// How long handlers ran, by queue, kind and outcome.
    WORKER_HANDLER_DURATION_SECONDS: "floodway_worker_handler_duration_seconds", Kind::Histogram(&DURATION_BOUNDS_SECONDS), ["worker", "queue", "kind", "outcome"], Worker,
        "Seconds a handler ran, by outcome: complete, retry, fail, overloaded, panic, timeout, cancelled.";
    /// Attempts whose handler reported its downstream overloaded.
    WORKER_OVERLOADED_TOTAL: "floodway_worker_overloaded_total", Kind::Counter, ["worker", "kind"], Worker,
        "Attempts whose handler reported its downstream overloaded (Outcome::Overloaded).";
    /// Attempts that ran past their timeout.
    WORKER_TIMEOUTS_TOTAL: "floodway_worker_timeouts_total", Kind::Counter, ["worker", "kind"], Worker,
        "Attempts stopped because they ran past their timeout.";
    /// 1 for a producer's circuit breaker's current state, 0 for the others.
    PRODUCER_BREAKER_STATE: "floodway_producer_breaker_state", Kind::Gauge, ["producer", "state"], Producer,
        "1 for the state the producer's circuit breaker is in (closed, open, half_open), 0 for the others.";
}

/// The metric called `name`, if floodway declares one.
pub fn find(name: &str) -> Option<&'static Metric> {
    ALL.iter().copied().find(|metric| metric.name == name)
}

/// The outcomes of `floodway_worker_handler_duration_seconds`, as its `outcome` label writes
/// them.
pub const HANDLER_OUTCOMES: [&str; 7] = [
    "complete",
    "retry",
    "fail",
    "overloaded",
    "panic",
    "timeout",
    "cancelled",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_suffixed_by_type() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name is declared twice");
        for metric in ALL {
            assert!(metric.name.starts_with("floodway_"), "{}", metric.name);
            assert_eq!(
                metric.name.ends_with("_total"),
                metric.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                metric.name
            );
            if let Kind::Histogram(bounds) = metric.kind {
                assert!(metric.name.ends_with("_seconds"), "{}", metric.name);
                assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{}", metric.name);
            }
            assert!(!metric.help.contains('\n'), "{}", metric.name);
            assert!(
                metric
                    .labels
                    .iter()
                    .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_') && *l != "le"),
                "{}",
                metric.name
            );
        }
    }

    /// One row of a metrics table in docs/metrics.md: name, type, labels, source.
    fn documented() -> Vec<(String, String, Vec<String>, String)> {
        let doc = include_str!("../../../docs/metrics.md");
        doc.lines()
            .filter(|line| line.starts_with("| `floodway_"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let unquote = |cell: &str| cell.trim_matches('`').to_owned();
                let labels = cells[3]
                    .split(',')
                    .map(|label| unquote(label.trim()))
                    .filter(|label| !label.is_empty())
                    .collect();
                (
                    unquote(cells[1]),
                    cells[2].to_owned(),
                    labels,
                    cells[4].to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn docs_metrics_md_lists_exactly_the_declared_metrics() {
        let documented = documented();
        let mut names: Vec<&str> = documented.iter().map(|d| d.0.as_str()).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(
            names.len(),
            count,
            "a metric is listed twice in docs/metrics.md"
        );
        for metric in ALL {
            let row = documented
                .iter()
                .find(|d| d.0 == metric.name)
                .unwrap_or_else(|| panic!("docs/metrics.md does not list {}", metric.name));
            assert_eq!(row.1, metric.kind.as_str(), "{}: type", metric.name);
            assert_eq!(row.2, metric.labels, "{}: labels", metric.name);
            assert_eq!(row.3, metric.exporter.as_str(), "{}: source", metric.name);
        }
        for row in &documented {
            assert!(
                find(&row.0).is_some(),
                "docs/metrics.md lists {}, which the catalog does not declare",
                row.0
            );
        }
        assert_eq!(documented.len(), ALL.len());
    }

    #[test]
    fn start_latency_buckets_are_the_brokers() {
        assert_eq!(START_LATENCY_BOUNDS_SECONDS[0], 0.001);
        assert_eq!(START_LATENCY_BOUNDS_SECONDS[16], 3600.0);
        assert_eq!(find("floodway_queue_depth"), Some(&QUEUE_DEPTH));
    }
}
