//! `floodway stats [QUEUE]`: tasks per state, the age of the oldest ready task, and running
//! totals, for one queue or all of them.

use floodway_core::{Broker, QueueName, QueueStats};

use crate::data::{Access, Global};
use crate::output;
use crate::view::StatsView;

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
    output::print(table(&stats))
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
