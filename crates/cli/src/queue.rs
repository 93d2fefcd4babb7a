//! `floodway pause|resume|configure`: steer a queue.
//!
//! `configure` changes only the fields given on the command line: it reads the queue's
//! configuration, applies the changes, checks the result against the limits, and writes it
//! back whole (the broker's `configure` replaces a configuration as a unit). With no field
//! given it shows the configuration and changes nothing.

use std::time::Duration;

use floodway_core::{
    Broker, BrokerError, OverflowPolicy, QueueConfig, QueueName, RateLimit, Watermarks, duration,
};

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

/// A setting given on the command line: a value, or `none` to remove the setting (no limit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum OrNone<T> {
    /// Set the setting to this value.
    Value(T),
    /// Remove the setting.
    None,
}

impl<T> OrNone<T> {
    /// The configuration's `Option` for this setting.
    fn into_option(self) -> Option<T> {
        match self {
            OrNone::Value(value) => Some(value),
            OrNone::None => None,
        }
    }
}

/// A value parser that takes `none` as well as what `parse` takes.
fn or_none<T: 'static>(
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<OrNone<T>, String> + Clone + Send + Sync + 'static {
    move |text| {
        if text == "none" {
            Ok(OrNone::None)
        } else {
            parse(text).map(OrNone::Value)
        }
    }
}

fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is neither a number nor \"none\""))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|error| error.to_string())
}

/// Parses a rate limit, `RATE[:BURST]`: RATE is a number of reservations per second, or per
/// minute or hour with `/m` or `/h` (`500/s`, `30/m`, `0.5`), and BURST how many may go at
/// once after a quiet spell, by default one second's worth (at least 1).
fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let bad = |why: &str| {
        format!("{text:?} is not a rate limit RATE[:BURST] such as 500/s or 500/s:50: {why}")
    };
    let (rate, burst) = match text.split_once(':') {
        Some((rate, burst)) => (rate, Some(burst)),
        None => (text, None),
    };
    let (number, per) = match rate.split_once('/') {
        Some((number, "s")) => (number, 1.0),
        Some((number, "m")) => (number, 60.0),
        Some((number, "h")) => (number, 3600.0),
        Some(_) => return Err(bad("the unit is /s, /m or /h")),
        None => (rate, 1.0),
    };
    let number: f64 = number
        .parse()
        .map_err(|_| bad("the rate is not a number"))?;
    if !(number.is_finite() && number > 0.0) {
        return Err(bad("the rate must be positive"));
    }
    let rate = number / per;
    let burst = match burst {
        Some(burst) => burst
            .parse()
            .map_err(|_| bad("the burst is not a whole number"))?,
        // One second's worth; the cast saturates, and validation caps it.
        None => (rate.ceil() as u32).max(1),
    };
    Ok(RateLimit { rate, burst })
}

/// Parses watermarks, `HIGH:LOW`.
fn parse_watermarks(text: &str) -> Result<Watermarks, String> {
    let bad = || format!("{text:?} is not watermarks HIGH:LOW such as 10000:5000");
    let (high, low) = text.split_once(':').ok_or_else(bad)?;
    Ok(Watermarks {
        high: high.parse().map_err(|_| bad())?,
        low: low.parse().map_err(|_| bad())?,
    })
}

/// A rate limit for people: `500/s (burst 50)`.
pub(crate) fn format_rate_limit(limit: &RateLimit) -> String {
    format!("{}/s (burst {})", limit.rate, limit.burst)
}

/// Watermarks for people: `high 10000, low 5000`.
pub(crate) fn format_watermarks(marks: &Watermarks) -> String {
    format!("high {}, low {}", marks.high, marks.low)
}

/// `floodway configure`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Backpressure:\n  \
  --rate-limit 500/s:50     at most 500 reservations a second from the queue, 50 at once\n  \
  --key-rate-limit 10/s     the same per limit key (floodway enqueue --limit-key)\n  \
  --concurrency-max 64      at most 64 tasks of the queue leased at once\n  \
  --key-concurrency-max 4   at most 4 per limit key\n  \
  --watermarks 10000:5000   refuse enqueues above 10,000 waiting until back at 5,000\n  \
  --ttl 1h                  dead-letter tasks still waiting an hour after enqueue\n\
Each also takes none, which removes the setting.")]
pub(crate) struct ConfigureArgs {
    /// The queue; created with these settings if it does not exist.
    queue: String,
    /// Most waiting tasks (scheduled, ready, retrying), or none for no limit.
    #[arg(long, value_name = "N|none", value_parser = or_none(parse_number::<u64>))]
    length_max: Option<OrNone<u64>>,
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
    /// Reservations from the queue per second over all workers, with a burst: 500/s, 30/m,
    /// 500/s:50 (burst 50; by default one second's worth), or none.
    #[arg(long, value_name = "RATE[:BURST]|none", value_parser = or_none(parse_rate_limit))]
    rate_limit: Option<OrNone<RateLimit>>,
    /// The same per limit key (each task's --limit-key), each key with its own budget.
    #[arg(long, value_name = "RATE[:BURST]|none", value_parser = or_none(parse_rate_limit))]
    key_rate_limit: Option<OrNone<RateLimit>>,
    /// Most tasks of the queue leased at once over all workers, or none.
    #[arg(long, value_name = "N|none", value_parser = or_none(parse_number::<u32>))]
    concurrency_max: Option<OrNone<u32>>,
    /// Most tasks sharing one limit key leased at once, or none.
    #[arg(long, value_name = "N|none", value_parser = or_none(parse_number::<u32>))]
    key_concurrency_max: Option<OrNone<u32>>,
    /// Refuse enqueues once more than HIGH tasks wait, until no more than LOW do (LOW below
    /// HIGH), or none.
    #[arg(long, value_name = "HIGH:LOW|none", value_parser = or_none(parse_watermarks))]
    watermarks: Option<OrNone<Watermarks>>,
    /// Dead-letter tasks enqueued without a TTL of their own if they still wait this long,
    /// e.g. 1h, or none.
    #[arg(long, value_name = "DURATION|none", value_parser = or_none(parse_duration))]
    ttl: Option<OrNone<Duration>>,
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
            || self.rate_limit.is_some()
            || self.key_rate_limit.is_some()
            || self.concurrency_max.is_some()
            || self.key_concurrency_max.is_some()
            || self.watermarks.is_some()
            || self.ttl.is_some()
    }

    /// `config` with the given fields changed.
    fn apply(&self, mut config: QueueConfig) -> QueueConfig {
        if let Some(length_max) = self.length_max {
            config.length_max = length_max.into_option();
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
        if let Some(limit) = self.rate_limit {
            config.rate_limit = limit.into_option();
        }
        if let Some(limit) = self.key_rate_limit {
            config.key_rate_limit = limit.into_option();
        }
        if let Some(max) = self.concurrency_max {
            config.concurrency_max = max.into_option();
        }
        if let Some(max) = self.key_concurrency_max {
            config.key_concurrency_max = max.into_option();
        }
        if let Some(marks) = self.watermarks {
            config.watermarks = marks.into_option();
        }
        if let Some(ttl) = self.ttl {
            config.ttl = ttl.into_option();
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
        (
            "rate limit",
            setting_text(config.rate_limit.as_ref().map(format_rate_limit)),
        ),
        (
            "key rate limit",
            setting_text(config.key_rate_limit.as_ref().map(format_rate_limit)),
        ),
        (
            "concurrency max",
            setting_text(config.concurrency_max.map(|n| n.to_string())),
        ),
        (
            "key concurrency max",
            setting_text(config.key_concurrency_max.map(|n| n.to_string())),
        ),
        (
            "watermarks",
            setting_text(config.watermarks.as_ref().map(format_watermarks)),
        ),
        ("ttl", setting_text(config.ttl.map(duration::format))),
    ];
    for (setting, value) in rows {
        table.add_row([setting.to_owned(), value]);
    }
    table
}

/// A setting's value for people, or `none` when it is not set.
pub(crate) fn setting_text(value: Option<String>) -> String {
    value.unwrap_or_else(|| "none".to_owned())
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

    #[test]
    fn backpressure_settings_parse_and_none_removes_them() {
        let args = Harness::parse_from([
            "t",
            "q",
            "--rate-limit",
            "500/s:50",
            "--key-rate-limit",
            "30/m",
            "--concurrency-max",
            "64",
            "--key-concurrency-max",
            "4",
            "--watermarks",
            "10000:5000",
            "--ttl",
            "1h",
        ])
        .args;
        let config = args.apply(QueueConfig::default());
        config.validate().unwrap();
        assert_eq!(
            config.rate_limit,
            Some(RateLimit {
                rate: 500.0,
                burst: 50
            })
        );
        assert_eq!(
            config.key_rate_limit,
            Some(RateLimit {
                rate: 0.5,
                burst: 1
            })
        );
        assert_eq!(config.concurrency_max, Some(64));
        assert_eq!(config.key_concurrency_max, Some(4));
        assert_eq!(
            config.watermarks,
            Some(Watermarks {
                high: 10_000,
                low: 5_000
            })
        );
        assert_eq!(config.ttl, Some(Duration::from_secs(3600)));
        assert_eq!(parse_rate_limit("200").unwrap().burst, 200);
        assert_eq!(parse_rate_limit("2.5/s").unwrap().burst, 3);

        let none = Harness::parse_from([
            "t",
            "q",
            "--rate-limit",
            "none",
            "--watermarks",
            "none",
            "--ttl",
            "none",
        ])
        .args;
        let cleared = none.apply(config);
        assert_eq!(cleared.rate_limit, None);
        assert_eq!(cleared.watermarks, None);
        assert_eq!(cleared.ttl, None);
        assert_eq!(
            cleared.concurrency_max,
            Some(64),
            "only given fields change"
        );

        for bad in ["fast", "0/s", "-1/s", "5/d", "5/s:x", "nan"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
        for bad in ["10", "10:", "a:b", "10-5"] {
            assert!(parse_watermarks(bad).is_err(), "{bad}");
        }
    }
}
