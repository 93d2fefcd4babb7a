//! `floodway tasks list|show`: browse tasks page by page, or look at one in full.
//!
//! Lists come in id order, which is creation order; `--after` with the last id of a page gives
//! the next page. The `dead` subcommand reuses the list table for dead letters.

use floodway_core::{Broker, DeadReason, QueueName, Task, TaskFilter, TaskId, TaskState, limits};

use crate::data::{Access, Global};
use crate::output;
use crate::view::{Payload, TaskView};

/// `floodway tasks`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// List tasks in id (creation) order.
    List(ListArgs),
    /// Show one task: every field, the payload pretty-printed when it is JSON.
    Show(ShowArgs),
}

/// `floodway tasks list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only this queue's tasks.
    #[arg(long)]
    queue: Option<String>,
    /// Only tasks in this state: scheduled, ready, active, retrying, completed, dead,
    /// cancelled.
    #[arg(long)]
    state: Option<TaskState>,
    /// Most tasks to show, 1 to 1000.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Only tasks after this id: pass the last id of the previous page.
    #[arg(long, value_name = "ID")]
    after: Option<TaskId>,
}

/// `floodway tasks show`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The task's id.
    id: TaskId,
}

/// Runs `floodway tasks`.
pub(crate) async fn run(global: &Global, command: Command) -> anyhow::Result<()> {
    match command {
        Command::List(args) => {
            let filter = TaskFilter {
                queue: args.queue.as_deref().map(QueueName::new).transpose()?,
                state: args.state,
                dead_reason: None,
                after: args.after,
                limit: args.limit,
            };
            list(global, filter, Columns::Tasks).await
        }
        Command::Show(args) => {
            let task = global
                .with_broker(Access::Existing, async |broker| {
                    Ok(broker.get(args.id).await?)
                })
                .await?;
            if global.json {
                output::print_json(&TaskView::of(&task))
            } else {
                output::print(show_table(&task))
            }
        }
    }
}

/// Which columns a list shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Columns {
    /// Every kind of task.
    Tasks,
    /// Dead letters: the reason instead of the state.
    Dead,
}

/// Lists the tasks `filter` selects, as a table or JSON, with a hint for the next page.
pub(crate) async fn list(
    global: &Global,
    filter: TaskFilter,
    columns: Columns,
) -> anyhow::Result<()> {
    filter.validate()?;
    let limit = filter.limit;
    let tasks = global
        .with_broker(Access::Existing, async |broker| {
            Ok(broker.list(filter).await?)
        })
        .await?;
    if global.json {
        let views: Vec<TaskView> = tasks.iter().map(TaskView::of).collect();
        return output::print_json(&views);
    }
    if tasks.is_empty() {
        return output::print("no tasks");
    }
    output::print(list_table(&tasks, columns))?;
    if tasks.len() == limit.min(limits::LIST_LIMIT_MAX)
        && let Some(last) = tasks.last()
    {
        eprintln!("more may follow: add --after {}", last.id);
    }
    Ok(())
}

/// One row per task.
fn list_table(tasks: &[Task], columns: Columns) -> comfy_table::Table {
    let (state_header, time_header) = match columns {
        Columns::Tasks => ("state", "created"),
        Columns::Dead => ("reason", "died"),
    };
    let mut table = output::table([
        "id",
        "queue",
        "kind",
        state_header,
        "attempt",
        "priority",
        time_header,
        "last error",
    ]);
    for task in tasks {
        let (state, time) = match columns {
            Columns::Tasks => (task.state.to_string(), task.created_at),
            Columns::Dead => (
                task.dead_reason
                    .map_or_else(|| "-".to_owned(), |r: DeadReason| r.to_string()),
                task.finished_at.unwrap_or(task.created_at),
            ),
        };
        table.add_row([
            task.id.to_string(),
            task.queue.to_string(),
            task.kind.clone(),
            state,
            format!("{}/{}", task.attempt, task.retry.max_attempts),
            task.priority.to_string(),
            time.to_string(),
            task.last_error
                .as_deref()
                .map_or_else(|| "-".to_owned(), |e| shorten(e, 60)),
        ]);
    }
    table
}

/// Every field of one task, one per row.
fn show_table(task: &Task) -> comfy_table::Table {
    let view = TaskView::of(task);
    let none = || "-".to_owned();
    let or_none = |value: Option<String>| value.unwrap_or_else(none);
    let mut table = output::table(["field", "value"]);
    let rows: Vec<(&str, String)> = vec![
        ("id", view.id),
        ("queue", view.queue),
        ("kind", view.kind),
        ("state", view.state.to_owned()),
        ("dead reason", or_none(view.dead_reason.map(str::to_owned))),
        (
            "attempt",
            format!("{} of {}", view.attempt, view.max_attempts),
        ),
        ("priority", view.priority.to_string()),
        ("created at", view.created_at),
        ("run at", view.run_at),
        ("expires at", or_none(view.expires_at)),
        ("lease expires at", or_none(view.lease_expires_at)),
        ("worker", or_none(view.worker)),
        ("fence", view.fence.to_string()),
        ("finished at", or_none(view.finished_at)),
        ("timeout", or_none(view.timeout)),
        ("idempotency key", or_none(view.idempotency_key)),
        ("partition key", or_none(view.partition_key)),
        ("limit key", or_none(view.limit_key)),
        (
            "retry",
            format!(
                "{} attempts, backoff {} to {} (x{}, jitter {})",
                view.retry.max_attempts,
                view.retry.backoff_initial,
                view.retry.backoff_max,
                view.retry.backoff_multiplier,
                view.retry.jitter
            ),
        ),
        (
            "headers",
            if view.headers.is_empty() {
                none()
            } else {
                view.headers
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        ),
        (
            "effects",
            if view.effects.is_empty() {
                none()
            } else {
                view.effects
                    .iter()
                    .map(|(key, result)| format!("{key} = {result}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        ),
        ("last error", or_none(view.last_error)),
        (
            "payload",
            format!(
                "{} bytes, {}\n{}",
                view.payload_bytes,
                match view.payload {
                    Payload::Json(_) => "JSON",
                    Payload::Text(_) => "not JSON (shown as text)",
                },
                view.payload.pretty()
            ),
        ),
    ];
    for (field, value) in rows {
        table.add_row([field.to_owned(), value]);
    }
    table
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    let first_line = text.lines().next().unwrap_or_default();
    if first_line.chars().count() <= max && first_line.len() == text.len() {
        return text.to_owned();
    }
    let cut: String = first_line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_shortened_to_one_line() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("abcdefghijkl", 5), "abcd…");
        assert_eq!(shorten("one\ntwo", 10), "one…");
    }
}
