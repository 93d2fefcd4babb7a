//! `floodway top`: the busiest queues, refreshed. Throughput comes from successive statistics
//! (completions and enqueues per second over the last interval); each row adds the depth, the
//! backlog in seconds, the oldest ready task's age, and whether the queue refuses enqueues.
//! Rows are sorted by completions per second, then enqueues per second, then ready tasks.
//!
//! Backlog follows the definition autoscaling uses (`floodway_queue_backlog_seconds`): the
//! time the ready tasks would take at the measured completion rate; while nothing completes
//! and tasks wait, the oldest ready task's age.
//!
//! `--once` prints one table after one interval (two readings are needed for a rate), for
//! scripts; `--count N` stops after N refreshes; `--json` prints one JSON line per refresh.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use floodway_core::{QueueStats, Timestamp};
use serde::Serialize;

use crate::data::Global;
use crate::output;
use crate::source::{ServerArgs, Source};
use crate::watch::{self, Frame, RefreshArgs};

/// `floodway top`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Show at most this many queues (the busiest).
    #[arg(short = 'n', long = "rows", default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    rows: u64,
    /// Print one table, measured over one interval, and exit (for scripts).
    #[arg(long, conflicts_with = "count")]
    once: bool,
    #[command(flatten)]
    refresh: RefreshArgs,
    #[command(flatten)]
    server: ServerArgs,
}

/// One queue's activity over the last interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct Activity {
    queue: String,
    completed_per_second: f64,
    enqueued_per_second: f64,
    ready: u64,
    active: u64,
    /// Scheduled and retrying: waiting for their time.
    delayed: u64,
    dead: u64,
    oldest_ready_age_seconds: f64,
    backlog_seconds: f64,
    refusing: bool,
    paused: bool,
}

/// One refresh of `top --json`.
#[derive(Debug, Serialize)]
struct TopLine {
    /// When the statistics were read (RFC 3339, UTC).
    at: String,
    /// The time the rates were measured over.
    interval_seconds: f64,
    /// The busiest queues first, at most `--rows`.
    queues: Vec<Activity>,
}

/// One reading of every queue.
struct Reading {
    at: Instant,
    stats: Vec<QueueStats>,
}

/// Runs `floodway top`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let source = Source::open(global, args.server).await?;
    let mut refresh = args.refresh;
    if args.once {
        refresh.count = Some(1);
    }
    let result = top(global, &source, &refresh, args.rows as usize).await;
    source.close().await;
    result
}

async fn top(
    global: &Global,
    source: &Source,
    refresh: &RefreshArgs,
    rows: usize,
) -> anyhow::Result<()> {
    let from = source.describe(global);
    let interval = refresh.interval();
    let read = async || -> anyhow::Result<Reading> {
        Ok(Reading {
            at: Instant::now(),
            stats: source.stats(None).await?,
        })
    };
    let mut previous: Option<Reading> = None;
    watch::run(refresh, global.json, async || {
        let before = match previous.take() {
            Some(reading) => reading,
            None => {
                // A rate needs two readings: the first frame waits one interval.
                let first = read().await?;
                tokio::time::sleep(interval).await;
                first
            }
        };
        let now = read().await?;
        let mut activity = activities(&before, &now);
        activity.truncate(rows);
        let elapsed = now.at.duration_since(before.at);
        previous = Some(now);
        let text = format!(
            "{}{}\n{}",
            watch::header("floodway top", &from, interval),
            if source.is_embedded() {
                watch::HELD_NOTE
            } else {
                ""
            },
            if activity.is_empty() {
                "no queues".to_owned()
            } else {
                table(&activity).to_string()
            }
        );
        Ok(Frame {
            text,
            json: TopLine {
                at: Timestamp::now_system().to_string(),
                interval_seconds: elapsed.as_secs_f64(),
                queues: activity,
            },
        })
    })
    .await
}

/// Every queue of `now` with its rates since `before`, busiest first.
fn activities(before: &Reading, now: &Reading) -> Vec<Activity> {
    let seconds = now
        .at
        .duration_since(before.at)
        .max(Duration::from_millis(1))
        .as_secs_f64();
    let earlier: BTreeMap<&str, &QueueStats> =
        before.stats.iter().map(|s| (s.queue.as_str(), s)).collect();
    let mut rows: Vec<Activity> = now
        .stats
        .iter()
        .map(|s| {
            // A queue new since the last reading started from nothing.
            let (completed, enqueued) = earlier
                .get(s.queue.as_str())
                .map_or((0, 0), |e| (e.totals.completed, e.totals.enqueued));
            let completed_per_second =
                s.totals.completed.saturating_sub(completed) as f64 / seconds;
            let oldest = s.oldest_ready_age.unwrap_or(Duration::ZERO).as_secs_f64();
            Activity {
                queue: s.queue.to_string(),
                completed_per_second,
                enqueued_per_second: s.totals.enqueued.saturating_sub(enqueued) as f64 / seconds,
                ready: s.counts.ready,
                active: s.counts.active,
                delayed: s.counts.scheduled + s.counts.retrying,
                dead: s.counts.dead,
                oldest_ready_age_seconds: oldest,
                backlog_seconds: floodway_metrics::backlog_seconds(
                    s.counts.ready,
                    Some(completed_per_second),
                    s.oldest_ready_age,
                ),
                refusing: s.refusing,
                paused: s.config.paused,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.completed_per_second
            .total_cmp(&a.completed_per_second)
            .then(b.enqueued_per_second.total_cmp(&a.enqueued_per_second))
            .then(b.ready.cmp(&a.ready))
            .then(a.queue.cmp(&b.queue))
    });
    rows
}

fn table(rows: &[Activity]) -> comfy_table::Table {
    let mut table = output::table([
        "queue",
        "completed/s",
        "enqueued/s",
        "ready",
        "active",
        "delayed",
        "dead",
        "backlog",
        "oldest ready",
        "enqueue",
    ]);
    let seconds = |s: f64| output::human_duration(Duration::from_secs_f64(s));
    for row in rows {
        table.add_row([
            row.queue.clone(),
            format!("{:.1}", row.completed_per_second),
            format!("{:.1}", row.enqueued_per_second),
            row.ready.to_string(),
            row.active.to_string(),
            row.delayed.to_string(),
            row.dead.to_string(),
            seconds(row.backlog_seconds),
            if row.ready == 0 {
                "-".to_owned()
            } else {
                seconds(row.oldest_ready_age_seconds)
            },
            match (row.paused, row.refusing) {
                (true, true) => "paused, refusing",
                (true, false) => "paused",
                (false, true) => "refusing",
                (false, false) => "accepting",
            }
            .to_owned(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodway_core::{QueueConfig, QueueName, QueueTotals, StateCounts};

    fn stats(queue: &str, completed: u64, enqueued: u64, ready: u64) -> QueueStats {
        QueueStats {
            queue: QueueName::new(queue).unwrap(),
            config: QueueConfig::default(),
            counts: StateCounts {
                ready,
                ..StateCounts::default()
            },
            totals: QueueTotals {
                completed,
                enqueued,
                ..QueueTotals::default()
            },
            oldest_ready_age: (ready > 0).then_some(Duration::from_secs(7)),
            refusing: false,
            start_latency: Default::default(),
        }
    }

    #[test]
    fn queues_are_ranked_by_completions_per_second() {
        let start = Instant::now();
        let before = Reading {
            at: start,
            stats: vec![
                stats("idle", 100, 100, 0),
                stats("busy", 0, 0, 0),
                stats("stuck", 0, 0, 5),
            ],
        };
        let now = Reading {
            at: start + Duration::from_secs(2),
            stats: vec![
                stats("idle", 100, 100, 0),
                stats("busy", 40, 50, 20),
                stats("stuck", 0, 10, 15),
                stats("new", 6, 6, 0),
            ],
        };
        let rows = activities(&before, &now);
        let order: Vec<&str> = rows.iter().map(|r| r.queue.as_str()).collect();
        assert_eq!(order, ["busy", "new", "stuck", "idle"]);
        assert_eq!(rows[0].completed_per_second, 20.0);
        assert_eq!(rows[0].enqueued_per_second, 25.0);
        assert_eq!(rows[0].backlog_seconds, 1.0, "20 ready at 20/s");
        assert_eq!(
            rows[2].backlog_seconds, 7.0,
            "nothing completes: the oldest age"
        );
        assert_eq!(rows[3].backlog_seconds, 0.0);
    }
}
