//! `floodway stats [QUEUE]`: tasks per state, the age of the oldest ready task, and running
//! totals, for one queue or all of them; and each queue's backpressure: whether it refuses
//! enqueues, its limits next to what they limit, and how often each limit bit.

use floodway_core::{Broker, QueueName, QueueStats};

use crate::data::{Access, Global};
use crate::output;
use crate::queue::{format_rate_limit, format_watermarks, setting_text};
use crate::view::{BackpressureView, StatsView};

/// `floodway stats`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only this queue (an unknown queue is an error); all queues when omitted.
    queue: Option<String>,
}

/// Runs `floodway stats`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let queue = args.queue.as_deref().map(QueueName::new).transpose()?;
    let stats = global
        .with_broker(Access::Existing, async |broker| {
            Ok(broker.stats(queue.as_ref()).await?)
        })
        .await?;
    if global.json {
        let views: Vec<StatsView> = stats.iter().map(StatsView::of).collect();
        return output::print_json(&views);
    }
    if stats.is_empty() {
        return output::print(format!("no queues in {}", global.data.display()));
    }
    output::print(table(&stats))?;
    output::print(backpressure_table(&stats))
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
