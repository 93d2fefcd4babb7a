//! `floodway pause|resume|configure`: steer a queue.
//!
//! `configure` changes only the fields given on the command line: it reads the queue's
//! configuration, applies the changes, checks the result against the limits, and writes it
//! back whole (the broker's `configure` replaces a configuration as a unit). With no field
//! given it shows the configuration and changes nothing.

use std::time::Duration;

use floodway_core::{Broker, BrokerError, OverflowPolicy, QueueConfig, QueueName, duration};

use crate::data::{Access, Global};
use crate::output;

/// `floodway pause` and `floodway resume`.
#[derive(Debug, clap::Args)]
pub(crate) struct PauseArgs {
    /// The queue; it must exist.
    queue: String,
}

/// Runs `floodway pause` (`paused` true) or `floodway resume`.
pub(crate) async fn pause(global: &Global, args: PauseArgs, paused: bool) -> anyhow::Result<()> {
    let queue = QueueName::new(&args.queue)?;
    let was_paused = global
        .with_broker(Access::Existing, async |broker| {
            let stats = broker.stats(Some(&queue)).await?;
            let was_paused = stats.first().is_some_and(|s| s.config.paused);
            if paused {
                broker.pause(&queue).await?;
            } else {
                broker.resume(&queue).await?;
            }
            Ok(was_paused)
        })
        .await?;
    if global.json {
        return output::print_json(&serde_json::json!({
            "queue": queue.as_str(),
            "paused": paused,
            "changed": was_paused != paused,
        }));
    }
    let verb = if paused { "paused" } else { "resumed" };
    if was_paused == paused {
        output::print(format!("queue {queue} was already {}", state_word(paused)))
    } else {
        output::print(format!("{verb} queue {queue}"))
    }
}

fn state_word(paused: bool) -> &'static str {
    if paused { "paused" } else { "running" }
}

/// What overflow does, as the command line spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Overflow {
    /// Refuse enqueues while the queue is full (backpressure).
    Reject,
    /// Accept them and dead-letter the oldest waiting tasks (reason overflow).
    DeadLetterOldest,
}

/// A length limit, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LengthMax {
    Limit(u64),
    Unlimited,
}

fn parse_length_max(text: &str) -> Result<LengthMax, String> {
    if text == "none" {
        return Ok(LengthMax::Unlimited);
    }
    text.parse()
        .map(LengthMax::Limit)
        .map_err(|_| format!("{text:?} is neither a number nor \"none\""))
}

/// `floodway configure`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigureArgs {
    /// The queue; created with these settings if it does not exist.
    queue: String,
    /// Most waiting tasks (scheduled, ready, retrying), or none for no limit.
    #[arg(long, value_name = "N|none", value_parser = parse_length_max)]
    length_max: Option<LengthMax>,
    /// What enqueue does when the queue is full.
    #[arg(long, value_enum)]
    overflow: Option<Overflow>,
    /// Attempts allowed per task (for tasks that do not bring their own policy).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// The first retry's backoff ceiling, e.g. 1s.
    #[arg(long, value_parser = duration::parse)]
    backoff_initial: Option<Duration>,
    /// The largest backoff ceiling, e.g. 10m.
    #[arg(long, value_parser = duration::parse)]
    backoff_max: Option<Duration>,
    /// How long an idempotency key deduplicates enqueues, e.g. 1h.
    #[arg(long, value_parser = duration::parse)]
    idempotency_window: Option<Duration>,
    /// Completed tasks kept for inspection.
    #[arg(long)]
    completed_retain: Option<u32>,
    /// Dead letters kept.
    #[arg(long)]
    dead_retain: Option<u64>,
}

impl ConfigureArgs {
    fn changes_anything(&self) -> bool {
        self.length_max.is_some()
            || self.overflow.is_some()
            || self.max_attempts.is_some()
            || self.backoff_initial.is_some()
            || self.backoff_max.is_some()
            || self.idempotency_window.is_some()
            || self.completed_retain.is_some()
            || self.dead_retain.is_some()
    }

    /// `config` with the given fields changed.
    fn apply(&self, mut config: QueueConfig) -> QueueConfig {
        if let Some(length_max) = self.length_max {
            config.length_max = match length_max {
                LengthMax::Limit(n) => Some(n),
                LengthMax::Unlimited => None,
            };
        }
        if let Some(overflow) = self.overflow {
            config.overflow = match overflow {
                Overflow::Reject => OverflowPolicy::Reject,
                Overflow::DeadLetterOldest => OverflowPolicy::DeadLetterOldest,
            };
        }
        if let Some(n) = self.max_attempts {
            config.retry.max_attempts = n;
        }
        if let Some(d) = self.backoff_initial {
            config.retry.backoff_initial = d;
        }
        if let Some(d) = self.backoff_max {
            config.retry.backoff_max = d;
        }
        if let Some(d) = self.idempotency_window {
            config.idempotency_window = d;
        }
        if let Some(n) = self.completed_retain {
            config.completed_retain = n;
        }
        if let Some(n) = self.dead_retain {
            config.dead_retain = n;
        }
        config
    }
}

/// Runs `floodway configure`.
pub(crate) async fn configure(global: &Global, args: ConfigureArgs) -> anyhow::Result<()> {
    let queue = QueueName::new(&args.queue)?;
    let changes = args.changes_anything();
    // Check each given value on its own before touching the data directory. The base is as
    // permissive as the limits allow, so only values that no queue could take fail here; how
    // they combine with the queue's other settings is checked once those are read.
    let permissive = QueueConfig {
        retry: floodway_core::RetryPolicy {
            backoff_initial: Duration::ZERO,
            backoff_max: floodway_core::limits::SCHEDULE_HORIZON_MAX,
            ..floodway_core::RetryPolicy::default()
        },
        ..QueueConfig::default()
    };
    args.apply(permissive).validate()?;
    let access = if changes {
        Access::Create
    } else {
        Access::Existing
    };
    let config = global
        .with_broker(access, async |broker| {
            let current = match broker.stats(Some(&queue)).await {
                Ok(stats) => stats.into_iter().next().map(|s| s.config),
                Err(BrokerError::UnknownQueue(_)) if changes => None,
                Err(error) => return Err(error.into()),
            };
            if !changes {
                return Ok(current.unwrap_or_default());
            }
            let config = args.apply(current.unwrap_or_default());
            config.validate()?;
            broker.configure(&queue, config.clone()).await?;
            Ok(config)
        })
        .await?;
    if global.json {
        return output::print_json(&serde_json::json!({
            "queue": queue.as_str(),
            "config": config,
        }));
    }
    output::print(config_table(&config))
}

/// A queue's configuration, one setting per row.
fn config_table(config: &QueueConfig) -> comfy_table::Table {
    let mut table = output::table(["setting", "value"]);
    let rows = [
        ("paused", config.paused.to_string()),
        (
            "length max",
            config
                .length_max
                .map_or_else(|| "none".to_owned(), |n| n.to_string()),
        ),
        (
            "overflow",
            match config.overflow {
                OverflowPolicy::Reject => "reject",
                OverflowPolicy::DeadLetterOldest => "dead-letter-oldest",
            }
            .to_owned(),
        ),
        ("max attempts", config.retry.max_attempts.to_string()),
        (
            "backoff initial",
            duration::format(config.retry.backoff_initial),
        ),
        ("backoff max", duration::format(config.retry.backoff_max)),
        (
            "idempotency window",
            duration::format(config.idempotency_window),
        ),
        ("completed retain", config.completed_retain.to_string()),
        ("dead retain", config.dead_retain.to_string()),
    ];
    for (setting, value) in rows {
        table.add_row([setting.to_owned(), value]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: ConfigureArgs,
    }

    #[test]
    fn only_given_fields_change() {
        let args = Harness::parse_from(["t", "q", "--length-max", "1", "--backoff-max", "2m"]).args;
        let before = QueueConfig {
            dead_retain: 7,
            ..QueueConfig::default()
        };
        let after = args.apply(before.clone());
        assert_eq!(after.length_max, Some(1));
        assert_eq!(after.retry.backoff_max, Duration::from_secs(120));
        assert_eq!(after.dead_retain, 7);
        assert_eq!(after.overflow, before.overflow);
        let none = Harness::parse_from(["t", "q", "--length-max", "none"]).args;
        assert_eq!(none.apply(after).length_max, None);
        assert!(!Harness::parse_from(["t", "q"]).args.changes_anything());
    }
}
