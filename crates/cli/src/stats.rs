//! `floodway stats [QUEUE]`: tasks per state, the age of the oldest ready task, and running
//! totals, for one queue or all of them; and each queue's backpressure: whether it refuses
//! enqueues, its limits next to what they limit, and how often each limit bit.
//!
//! `--watch` redraws the tables every `--interval` (module `watch`), `--json` then printing
//! one JSON line per refresh; `--server URL` reads them from a running `floodway serve`
//! instead of the data directory (module `source`).

use floodway_core::{QueueName, QueueStats, Timestamp};
use serde::Serialize;

use crate::data::Global;
use crate::output;
use crate::queue::{format_rate_limit, format_watermarks, setting_text};
use crate::source::{ServerArgs, Source};
use crate::view::{BackpressureView, StatsView};
use crate::watch::{self, Frame, RefreshArgs};

/// `floodway stats`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only this queue (an unknown queue is an error); all queues when omitted.
    queue: Option<String>,
    /// Redraw the tables every --interval until Ctrl-C (or --count times); with --json, one
    /// JSON line per refresh.
    #[arg(short, long)]
    watch: bool,
    #[command(flatten)]
    refresh: RefreshArgs,
    #[command(flatten)]
    server: ServerArgs,
}

/// One refresh of `stats --watch --json`.
#[derive(Debug, Serialize)]
struct WatchLine {
    /// When the statistics were read (RFC 3339, UTC).
    at: String,
    queues: Vec<StatsView>,
}

/// Runs `floodway stats`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let queue = args.queue.as_deref().map(QueueName::new).transpose()?;
    let source = Source::open(global, args.server).await?;
    let result = if args.watch || args.refresh.given() {
        watch_stats(global, &source, queue.as_ref(), &args.refresh).await
    } else {
        once(global, &source, queue.as_ref()).await
    };
    source.close().await;
    result
}

/// Prints the statistics once.
async fn once(global: &Global, source: &Source, queue: Option<&QueueName>) -> anyhow::Result<()> {
    let stats = source.stats(queue).await?;
    if global.json {
        let views: Vec<StatsView> = stats.iter().map(StatsView::of).collect();
        return output::print_json(&views);
    }
    if stats.is_empty() {
        return output::print(format!("no queues in {}", source.describe(global)));
    }
    output::print(table(&stats))?;
    output::print(backpressure_table(&stats))
}

/// Redraws the statistics every interval.
async fn watch_stats(
    global: &Global,
    source: &Source,
    queue: Option<&QueueName>,
    refresh: &RefreshArgs,
) -> anyhow::Result<()> {
    let from = source.describe(global);
    watch::run(refresh, global.json, async || {
        let stats = source.stats(queue).await?;
        let mut text = watch::header("floodway stats", &from, refresh.interval());
        if source.is_embedded() {
            text.push_str(watch::HELD_NOTE);
        }
        if stats.is_empty() {
            text.push_str("\nno queues");
        } else {
            text.push_str(&format!(
                "\n{}\n{}",
                table(&stats),
                backpressure_table(&stats)
            ));
        }
        Ok(Frame {
            text,
            json: WatchLine {
                at: Timestamp::now_system().to_string(),
                queues: stats.iter().map(StatsView::of).collect(),
            },
        })
    })
    .await
}

/// The human table: one row per queue.
fn table(stats: &[QueueStats]) -> comfy_table::Table {
    let mut table = output::table([
        "queue",
        "paused",
        "scheduled",
        "ready",
        "active",
        "retrying",
        "completed",
        "dead",
        "oldest ready",
        "Σ enqueued",
        "Σ completed",
        "Σ retried",
        "Σ dead",
    ]);
    for s in stats {
        table.add_row([
            s.queue.to_string(),
            if s.config.paused { "yes" } else { "no" }.to_owned(),
            s.counts.scheduled.to_string(),
            s.counts.ready.to_string(),
            s.counts.active.to_string(),
            s.counts.retrying.to_string(),
            s.counts.completed.to_string(),
            s.counts.dead.to_string(),
            s.oldest_ready_age
                .map_or_else(|| "-".to_owned(), output::human_duration),
            s.totals.enqueued.to_string(),
            s.totals.completed.to_string(),
            s.totals.retried.to_string(),
            s.totals.dead.total().to_string(),
        ]);
    }
    table
}

/// The backpressure table: one row per queue, each limit next to the figure it bounds.
fn backpressure_table(stats: &[QueueStats]) -> comfy_table::Table {
    let mut table = output::table([
        "queue",
        "enqueue",
        "waiting / watermarks",
        "active / concurrency max",
        "rate limit",
        "per limit key",
        "Σ rejected overloaded",
        "Σ rejected full",
        "Σ throttled rate",
        "Σ throttled concurrency",
    ]);
    for s in stats {
        let view = BackpressureView::of(s);
        let bounded = |now: u64, bound: Option<String>| match bound {
            Some(bound) => format!("{now} / {bound}"),
            None => now.to_string(),
        };
        let per_key = [
            view.key_concurrency_max.map(|n| format!("{n} active")),
            view.key_rate_limit.as_ref().map(format_rate_limit),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        table.add_row([
            s.queue.to_string(),
            if view.refusing {
                "refusing"
            } else {
                "accepting"
            }
            .to_owned(),
            bounded(view.length, view.watermarks.as_ref().map(format_watermarks)),
            bounded(view.active, view.concurrency_max.map(|n| n.to_string())),
            setting_text(view.rate_limit.as_ref().map(format_rate_limit)),
            setting_text((!per_key.is_empty()).then(|| per_key.join(", "))),
            view.rejected_overloaded.to_string(),
            view.rejected_full.to_string(),
            view.throttled_rate.to_string(),
            view.throttled_concurrency.to_string(),
        ]);
    }
    table
}
