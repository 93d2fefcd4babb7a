//! `/metrics`: the queues' statistics and the server's request counts in the Prometheus text
//! format. Every metric name is declared once, here.
//!
//! The queue figures are read from the broker (`stats`) when scraped, so they are exactly what
//! the broker reports, per queue the caller may administer. The exporter is written by hand
//! (it is a few lines of text); the full set of metrics, with a metrics library, comes with
//! the observability work.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use floodway_core::{DeadReason, QueueStats, TaskState};

/// Requests answered, by route template, method and status.
pub(crate) const HTTP_REQUESTS_TOTAL: &str = "floodway_http_requests_total";
/// Tasks in a queue now, by state.
pub(crate) const QUEUE_DEPTH: &str = "floodway_queue_depth";
/// Age of the ready task that has waited longest, in seconds (0 when none is ready).
pub(crate) const QUEUE_OLDEST_READY_AGE_SECONDS: &str = "floodway_queue_oldest_ready_age_seconds";
/// 1 while a queue is paused.
pub(crate) const QUEUE_PAUSED: &str = "floodway_queue_paused";
/// Tasks accepted by enqueue.
pub(crate) const TASKS_ENQUEUED_TOTAL: &str = "floodway_tasks_enqueued_total";
/// Tasks completed.
pub(crate) const TASKS_COMPLETED_TOTAL: &str = "floodway_tasks_completed_total";
/// Failed attempts scheduled for retry.
pub(crate) const TASKS_RETRIED_TOTAL: &str = "floodway_tasks_retried_total";
/// Tasks moved to the dead letters, by reason.
pub(crate) const TASKS_DEAD_LETTERED_TOTAL: &str = "floodway_tasks_dead_lettered_total";
/// Enqueue calls refused because the queue was full.
pub(crate) const ENQUEUES_REJECTED_FULL_TOTAL: &str = "floodway_enqueues_rejected_full_total";
/// Enqueue calls refused because the queue was above its high watermark.
pub(crate) const ENQUEUES_REJECTED_OVERLOADED_TOTAL: &str =
    "floodway_enqueues_rejected_overloaded_total";
/// 1 while a queue refuses enqueues between its watermarks (`QueueStats::refusing`).
pub(crate) const QUEUE_REFUSING: &str = "floodway_queue_refusing";
/// Reserve calls that returned fewer tasks than asked for while a limit held an eligible task
/// back, by limit (`rate` or `concurrency`).
pub(crate) const RESERVES_THROTTLED_TOTAL: &str = "floodway_reserves_throttled_total";
/// Side-effect results recorded by tasks' handlers.
pub(crate) const EFFECTS_RECORDED_TOTAL: &str = "floodway_effects_recorded_total";
/// Leases that expired before their holder finished.
pub(crate) const LEASES_EXPIRED_TOTAL: &str = "floodway_leases_expired_total";
/// Lease operations refused for a stale or expired lease.
pub(crate) const STALE_REFUSED_TOTAL: &str = "floodway_stale_refused_total";

/// The server's own counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Requests by route template, then (method, status). Route templates and methods come
    /// from the router, so the number of entries is bounded by routes × methods × statuses.
    /// Keyed by route first so that counting looks up a `&str` and allocates nothing.
    requests: Mutex<BTreeMap<String, ByStatus>>,
}

/// Requests of one route, by (method, status).
type ByStatus = BTreeMap<(String, u16), u64>;

impl Metrics {
    /// Counts one answered request.
    pub(crate) fn count_request(&self, route: &str, method: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let by_status = match requests.get_mut(route) {
            Some(by_status) => by_status,
            None => requests.entry(route.to_owned()).or_default(),
        };
        let count = by_status
            .iter_mut()
            .find(|((m, s), _)| m == method && *s == status)
            .map(|(_, count)| count);
        match count {
            Some(count) => *count += 1,
            None => {
                by_status.insert((method.to_owned(), status), 1);
            }
        }
    }

    /// The exposition: the request counts and `stats` of the queues shown.
    pub(crate) fn render(&self, stats: &[QueueStats]) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            HTTP_REQUESTS_TOTAL,
            "counter",
            "HTTP requests answered, by route, method and status.",
        );
        for (route, by_status) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            for ((method, status), count) in by_status {
                let _ = writeln!(
                    out,
                    "{HTTP_REQUESTS_TOTAL}{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
                );
            }
        }
        header(
            &mut out,
            QUEUE_DEPTH,
            "gauge",
            "Tasks in a queue now, by state.",
        );
        for s in stats {
            for state in TaskState::ALL {
                let _ = writeln!(
                    out,
                    "{QUEUE_DEPTH}{{queue=\"{}\",state=\"{state}\"}} {}",
                    s.queue,
                    s.counts.get(state)
                );
            }
        }
        header(
            &mut out,
            QUEUE_OLDEST_READY_AGE_SECONDS,
            "gauge",
            "Seconds the longest-waiting ready task has waited (0 when none is ready).",
        );
        for s in stats {
            let age = s.oldest_ready_age.map_or(0.0, |age| age.as_secs_f64());
            let _ = writeln!(
                out,
                "{QUEUE_OLDEST_READY_AGE_SECONDS}{{queue=\"{}\"}} {age}",
                s.queue
            );
        }
        header(
            &mut out,
            QUEUE_PAUSED,
            "gauge",
            "1 while the queue is paused.",
        );
        for s in stats {
            let _ = writeln!(
                out,
                "{QUEUE_PAUSED}{{queue=\"{}\"}} {}",
                s.queue,
                u8::from(s.config.paused)
            );
        }
        header(
            &mut out,
            QUEUE_REFUSING,
            "gauge",
            "1 while the queue refuses enqueues: above its high watermark, or not yet back at its low one.",
        );
        for s in stats {
            let _ = writeln!(
                out,
                "{QUEUE_REFUSING}{{queue=\"{}\"}} {}",
                s.queue,
                u8::from(s.refusing)
            );
        }
        let totals: [(&str, &str, TotalOf); 8] = [
            (TASKS_ENQUEUED_TOTAL, "Tasks accepted by enqueue.", |s| {
                s.totals.enqueued
            }),
            (TASKS_COMPLETED_TOTAL, "Tasks completed.", |s| {
                s.totals.completed
            }),
            (
                TASKS_RETRIED_TOTAL,
                "Failed attempts scheduled for retry.",
                |s| s.totals.retried,
            ),
            (
                ENQUEUES_REJECTED_FULL_TOTAL,
                "Enqueue calls refused because the queue was full.",
                |s| s.totals.rejected_full,
            ),
            (
                ENQUEUES_REJECTED_OVERLOADED_TOTAL,
                "Enqueue calls refused because the queue was above its high watermark.",
                |s| s.totals.rejected_overloaded,
            ),
            (
                EFFECTS_RECORDED_TOTAL,
                "Side-effect results recorded by tasks' handlers.",
                |s| s.totals.effects_recorded,
            ),
            (
                LEASES_EXPIRED_TOTAL,
                "Leases that expired before their holder finished.",
                |s| s.totals.leases_expired,
            ),
            (
                STALE_REFUSED_TOTAL,
                "Lease operations refused for a stale or expired lease.",
                |s| s.totals.stale_refused,
            ),
        ];
        for (name, help, value) in totals {
            header(&mut out, name, "counter", help);
            for s in stats {
                let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", s.queue, value(s));
            }
        }
        header(
            &mut out,
            RESERVES_THROTTLED_TOTAL,
            "counter",
            "Reserve calls that returned fewer tasks than asked for while a rate or concurrency limit held an eligible task back, by limit.",
        );
        for s in stats {
            for (limit, count) in [
                ("rate", s.totals.throttled_rate),
                ("concurrency", s.totals.throttled_concurrency),
            ] {
                let _ = writeln!(
                    out,
                    "{RESERVES_THROTTLED_TOTAL}{{queue=\"{}\",limit=\"{limit}\"}} {count}",
                    s.queue
                );
            }
        }
        header(
            &mut out,
            TASKS_DEAD_LETTERED_TOTAL,
            "counter",
            "Tasks moved to the dead letters, by reason.",
        );
        for s in stats {
            for reason in DeadReason::ALL {
                let _ = writeln!(
                    out,
                    "{TASKS_DEAD_LETTERED_TOTAL}{{queue=\"{}\",reason=\"{reason}\"}} {}",
                    s.queue,
                    s.totals.dead.get(reason)
                );
            }
        }
        out
    }
}

/// Reads one running total of a queue.
type TotalOf = fn(&QueueStats) -> u64;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodway_core::{QueueConfig, QueueName, QueueTotals, StateCounts};

    #[test]
    fn every_queue_and_request_count_is_exposed() {
        let metrics = Metrics::default();
        metrics.count_request("/v1/queues/{queue}/tasks", "POST", 201);
        metrics.count_request("/v1/queues/{queue}/tasks", "POST", 201);
        let stats = QueueStats {
            queue: QueueName::new("orders").unwrap(),
            config: QueueConfig::default(),
            counts: StateCounts {
                ready: 3,
                ..StateCounts::default()
            },
            totals: QueueTotals {
                enqueued: 7,
                rejected_overloaded: 2,
                throttled_rate: 3,
                throttled_concurrency: 4,
                effects_recorded: 5,
                ..QueueTotals::default()
            },
            oldest_ready_age: Some(std::time::Duration::from_millis(1500)),
            refusing: true,
            start_latency: Default::default(),
        };
        let text = metrics.render(&[stats]);
        for line in [
            "floodway_http_requests_total{route=\"/v1/queues/{queue}/tasks\",method=\"POST\",status=\"201\"} 2",
            "floodway_queue_depth{queue=\"orders\",state=\"ready\"} 3",
            "floodway_queue_oldest_ready_age_seconds{queue=\"orders\"} 1.5",
            "floodway_tasks_enqueued_total{queue=\"orders\"} 7",
            "floodway_tasks_dead_lettered_total{queue=\"orders\",reason=\"expired\"} 0",
            "floodway_queue_refusing{queue=\"orders\"} 1",
            "floodway_enqueues_rejected_overloaded_total{queue=\"orders\"} 2",
            "floodway_reserves_throttled_total{queue=\"orders\",limit=\"rate\"} 3",
            "floodway_reserves_throttled_total{queue=\"orders\",limit=\"concurrency\"} 4",
            "floodway_effects_recorded_total{queue=\"orders\"} 5",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
