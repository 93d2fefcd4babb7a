//! `floodway dead list|replay|purge`: the dead letters, and what an operator does with them.
//!
//! Replay and purge act either on given ids, all checked before anything changes (an unknown
//! id, or one that is not a dead letter, is bad input), or on every dead letter of a queue
//! (`--queue`) or of all queues (`--all`), optionally of one reason. The latter loop in batches
//! of the broker's batch limit, with a progress bar, until none are left.

use anyhow::Context;
use clap::ArgGroup;
use floodway_core::{
    Broker, BrokerError, DeadReason, DeadSelector, QueueName, TaskFilter, TaskId, TaskState, limits,
};

use crate::data::{Access, Global};
use crate::exit::bad_input;
use crate::output;
use crate::tasks::{self, Columns};

/// `floodway dead`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// List dead letters, oldest first.
    List(ListArgs),
    /// Move dead letters back to ready, with fresh attempts.
    Replay(SelectArgs),
    /// Delete dead letters for ever.
    Purge(SelectArgs),
}

/// `floodway dead list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only this queue's dead letters.
    #[arg(long)]
    queue: Option<String>,
    /// Only dead letters with this reason: max_attempts, expired, overflow, permanent_failure.
    #[arg(long)]
    reason: Option<DeadReason>,
    /// Most to show, 1 to 1000.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Only dead letters after this id: pass the last id of the previous page.
    #[arg(long, value_name = "ID")]
    after: Option<TaskId>,
}

/// Which dead letters `replay` or `purge` act on.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("which").required(true).args(["ids", "queue", "all"])))]
pub(crate) struct SelectArgs {
    /// These dead letters.
    #[arg(value_name = "ID", conflicts_with_all = ["queue", "all", "reason"])]
    ids: Vec<TaskId>,
    /// Every dead letter of this queue.
    #[arg(long, conflicts_with = "all")]
    queue: Option<String>,
    /// Every dead letter of every queue.
    #[arg(long)]
    all: bool,
    /// Only dead letters with this reason: max_attempts, expired, overflow, permanent_failure.
    #[arg(long)]
    reason: Option<DeadReason>,
}

/// Replay or purge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Replay,
    Purge,
}

impl Action {
    fn past(self) -> &'static str {
        match self {
            Action::Replay => "replayed",
            Action::Purge => "purged",
        }
    }

    async fn apply(self, broker: &impl Broker, selector: DeadSelector) -> Result<u64, BrokerError> {
        match self {
            Action::Replay => broker.replay(selector).await,
            Action::Purge => broker.purge(selector).await,
        }
    }
}

/// Runs `floodway dead`.
pub(crate) async fn run(global: &Global, command: Command) -> anyhow::Result<()> {
    match command {
        Command::List(args) => {
            let filter = TaskFilter {
                queue: args.queue.as_deref().map(QueueName::new).transpose()?,
                state: Some(TaskState::Dead),
                dead_reason: args.reason,
                after: args.after,
                limit: args.limit,
            };
            tasks::list(global, filter, Columns::Dead).await
        }
        Command::Replay(args) => select_and_act(global, args, Action::Replay).await,
        Command::Purge(args) => select_and_act(global, args, Action::Purge).await,
    }
}

async fn select_and_act(global: &Global, args: SelectArgs, action: Action) -> anyhow::Result<()> {
    let queue = args.queue.as_deref().map(QueueName::new).transpose()?;
    let count = global
        .with_broker(Access::Existing, async |broker| {
            if args.ids.is_empty() {
                act_on_matching(broker, queue, args.reason, action).await
            } else {
                act_on_ids(broker, args.ids, action).await
            }
        })
        .await?;
    if global.json {
        output::print_json(&serde_json::json!({ action.past(): count }))
    } else {
        output::print(format!("{} {count} dead letters", action.past()))
    }
}

/// Checks that every id is a dead letter, then acts on them all.
async fn act_on_ids(broker: &impl Broker, ids: Vec<TaskId>, action: Action) -> anyhow::Result<u64> {
    for &id in &ids {
        let task = broker.get(id).await?;
        if task.state != TaskState::Dead {
            return Err(bad_input(format!(
                "task {id} is {}, not a dead letter; nothing was {}",
                task.state,
                action.past()
            )));
        }
    }
    let mut done = 0;
    for chunk in ids.chunks(limits::BATCH_SIZE_MAX) {
        done += action
            .apply(broker, DeadSelector::Ids(chunk.to_vec()))
            .await
            .with_context(|| format!("after {done} dead letters were {}", action.past()))?;
    }
    Ok(done)
}

/// Acts on every dead letter of `queue` (all queues when `None`) with `reason`, a batch at a
/// time.
async fn act_on_matching(
    broker: &impl Broker,
    queue: Option<QueueName>,
    reason: Option<DeadReason>,
    action: Action,
) -> anyhow::Result<u64> {
    // The dead letters there are now: the bar's length, and a bound on the loop. Nothing else
    // can add dead letters meanwhile, since this process holds the data directory.
    let dead_now: u64 = broker
        .stats(queue.as_ref())
        .await?
        .iter()
        .map(|s| s.counts.dead)
        .sum();
    let progress = output::progress(output::Progress::Bar, dead_now, action.past());
    let mut done = 0;
    while done < dead_now {
        let selector = DeadSelector::Matching {
            queue: queue.clone(),
            reason,
            limit: limits::BATCH_SIZE_MAX,
        };
        let n = action
            .apply(broker, selector)
            .await
            .with_context(|| format!("after {done} dead letters were {}", action.past()))?;
        done += n;
        progress.inc(n);
        if n < limits::BATCH_SIZE_MAX as u64 {
            break;
        }
    }
    progress.finish_and_clear();
    Ok(done)
}
