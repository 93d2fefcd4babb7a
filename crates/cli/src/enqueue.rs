//! `floodway enqueue`: one task from the command line, or a stream of them as JSON lines.
//!
//! One task: `enqueue QUEUE KIND [PAYLOAD]` checks everything (JSON, size, names, limits)
//! before it opens the data directory, so bad input changes nothing, then prints the task's id
//! once the enqueue is durable.
//!
//! A stream: `enqueue QUEUE --from FILE|-` reads JSON lines on a thread of their own and sends
//! them through a bounded channel; the enqueuer takes whatever lines are waiting (up to the
//! batch limit), enqueues them as one batch, and prints each id as soon as the batch is
//! durable, flushing stdout every batch. So a reader of stdout holds only acknowledged ids,
//! whenever the process dies: the crash test relies on exactly that. A bad line stops the
//! stream with exit code 2 after the lines before it were enqueued.
//!
//! A full or overloaded queue (`QueueFull`, `Overloaded`: backpressure) ends the command with
//! exit code 1 instead of waiting: this process holds the data directory, so no worker can
//! drain the queue while it waits.
//!
//! Each call to the broker runs in an `enqueue` span that starts a trace (or continues
//! `TRACEPARENT` from the environment), and each task without a `traceparent` header gets the
//! span's, as `floodway_client::Producer` does, so workers continue it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use floodway_core::{
    Broker, BrokerError, Enqueued, NewTask, QueueConfig, QueueName, duration, limits,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::data::{Access, Global};
use crate::exit::bad_input;
use crate::output;

/// The longest line `--from` accepts: a payload at its limit plus generous room for the other
/// fields and JSON escaping of short strings. Longer lines are refused with their number.
const LINE_BYTES_MAX: usize = limits::PAYLOAD_BYTES_MAX + 256 * 1024;

/// Lines read ahead of the enqueuer at most: one full batch waiting while another is written.
const LINES_AHEAD_MAX: usize = limits::BATCH_SIZE_MAX;

/// `floodway enqueue`.
#[derive(Debug, clap::Args)]
#[command(after_help = "With --from, each line is a JSON object:\n  \
  {\"kind\": \"send_email\", \"payload\": {...}, \"priority\": 5, \"delay\": \"30s\", \"ttl\": \"1h\",\n   \
  \"max_attempts\": 3, \"idempotency_key\": \"...\", \"partition_key\": \"...\", \"limit_key\": \"...\",\n   \
  \"headers\": {\"name\": \"value\"}}\n\
only kind is required; the flags above give defaults for the other fields. Each acknowledged\n\
id is printed on its own line as soon as it is durable (with --json, one JSON object per line:\n\
{\"line\", \"id\", \"duplicate\"}); a summary goes to stderr.")]
pub(crate) struct Args {
    /// The queue, created with the default configuration on first use.
    queue: String,
    /// The task's kind: the name its handler is registered under.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    kind: Option<String>,
    /// The payload: JSON text, @FILE to read it from a file, or - to read it from stdin
    /// [default: {}].
    #[arg(conflicts_with = "from")]
    payload: Option<String>,
    /// Enqueue JSON lines from FILE, or from stdin with -, instead of one task.
    #[arg(long, value_name = "FILE|-")]
    from: Option<PathBuf>,
    /// Priority, 0 (lowest) to 9 (highest) [default: 5].
    #[arg(long)]
    priority: Option<u8>,
    /// Run no earlier than this long from now, e.g. 30s, 5m.
    #[arg(long, value_parser = duration::parse)]
    delay: Option<Duration>,
    /// Dead-letter the task (reason expired) if no worker starts it within this long.
    #[arg(long, value_parser = duration::parse)]
    ttl: Option<Duration>,
    /// Attempts allowed in all, with the queue's backoff [default: the queue's].
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Deduplicate: an enqueue with a key used in the queue's idempotency window creates
    /// nothing and answers the first task's id.
    #[arg(long, conflicts_with = "from")]
    idempotency_key: Option<String>,
    /// Tasks sharing a partition key run one at a time, in enqueue order.
    #[arg(long)]
    partition_key: Option<String>,
    /// The key the queue's per-key limits (configure --key-rate-limit,
    /// --key-concurrency-max) count the task under: a tenant, a downstream host.
    #[arg(long)]
    limit_key: Option<String>,
    /// A header, as name=value; repeat for more.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
}

/// Runs `floodway enqueue`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let queue = QueueName::new(&args.queue)?;
    let defaults = Defaults {
        priority: args.priority,
        delay: args.delay,
        ttl: args.ttl,
        max_attempts: args.max_attempts,
        partition_key: args.partition_key.clone(),
        limit_key: args.limit_key.clone(),
        headers: args.headers.iter().cloned().collect(),
    };
    match (&args.from, args.kind) {
        (Some(from), _) => stream(global, queue, from.clone(), defaults).await,
        (None, Some(kind)) => {
            let payload = read_payload(args.payload.as_deref())?;
            let mut task = defaults.apply(NewTask::new(kind, payload));
            if let Some(priority) = args.priority {
                task.priority = priority;
            }
            task.idempotency_key = args.idempotency_key;
            task.validate()?;
            let key = task.idempotency_key.clone();
            let enqueued = global
                .with_broker(Access::Create, async |broker| {
                    Ok(enqueue_traced(broker, &queue, vec![task]).await?)
                })
                .await?;
            let Enqueued { id, duplicate } = enqueued[0];
            if global.json {
                output::print_json(&serde_json::json!({
                    "queue": queue.as_str(),
                    "id": id.to_string(),
                    "duplicate": duplicate,
                }))
            } else {
                if duplicate {
                    eprintln!(
                        "duplicate of {id}: idempotency key {:?} was used in queue {queue} \
                         within its window; nothing new was enqueued",
                        key.unwrap_or_default()
                    );
                }
                output::print(id)
            }
        }
        (None, None) => unreachable!("clap requires KIND unless --from is given"),
    }
}

/// Options given on the command line, applied to every task that does not set its own.
#[derive(Debug, Clone, Default)]
struct Defaults {
    priority: Option<u8>,
    delay: Option<Duration>,
    ttl: Option<Duration>,
    max_attempts: Option<u32>,
    partition_key: Option<String>,
    limit_key: Option<String>,
    headers: BTreeMap<String, String>,
}

impl Defaults {
    /// `task` with every option it lacks taken from the defaults (all but the priority, which
    /// a task always has).
    fn apply(&self, mut task: NewTask) -> NewTask {
        task.delay = task.delay.or(self.delay);
        task.ttl = task.ttl.or(self.ttl);
        task.partition_key = task.partition_key.or_else(|| self.partition_key.clone());
        task.limit_key = task.limit_key.or_else(|| self.limit_key.clone());
        for (name, value) in &self.headers {
            task.headers
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        task.max_attempts = task.max_attempts.or(self.max_attempts);
        task
    }
}

/// The configuration of `queue`, or the default for a queue enqueue will create.
async fn queue_config(broker: &impl Broker, queue: &QueueName) -> Result<QueueConfig, BrokerError> {
    match broker.stats(Some(queue)).await {
        Ok(stats) => Ok(stats
            .into_iter()
            .next()
            .map(|s| s.config)
            .unwrap_or_default()),
        Err(BrokerError::UnknownQueue(_)) => Ok(QueueConfig::default()),
        Err(error) => Err(error),
    }
}

/// Parses `name=value`.
fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("header {text:?} is not of the form name=value")),
    }
}

/// The payload bytes the PAYLOAD argument stands for, checked to be JSON within the size
/// limit.
fn read_payload(arg: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let (bytes, source) = match arg {
        None => (b"{}".to_vec(), "payload".to_owned()),
        Some("-") => (
            read_limited(std::io::stdin().lock())?,
            "payload on stdin".to_owned(),
        ),
        Some(arg) if arg.starts_with('@') => {
            let path = &arg[1..];
            let file = std::fs::File::open(path)
                .map_err(|error| bad_input(format!("cannot read payload file {path}: {error}")))?;
            (
                read_limited(file).with_context(|| format!("reading payload file {path}"))?,
                format!("payload in {path}"),
            )
        }
        Some(text) => (text.as_bytes().to_vec(), "payload".to_owned()),
    };
    if bytes.len() > limits::PAYLOAD_BYTES_MAX {
        return Err(BrokerError::PayloadTooLarge {
            size: bytes.len(),
            max: limits::PAYLOAD_BYTES_MAX,
        }
        .into());
    }
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return Err(bad_input(format!("{source} is not valid JSON: {error}")));
    }
    Ok(bytes)
}

/// Reads at most one byte more than the payload limit, enough to tell that a payload is too
/// large without holding all of it.
fn read_limited(reader: impl Read) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limits::PAYLOAD_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// One line of `--from` input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    kind: String,
    #[serde(default, deserialize_with = "raw_payload")]
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default, with = "floodway_core::duration::serde::option")]
    delay: Option<Duration>,
    #[serde(default, with = "floodway_core::duration::serde::option")]
    ttl: Option<Duration>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    partition_key: Option<String>,
    #[serde(default)]
    limit_key: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Reads a present payload as raw JSON, so `"payload": null` is the payload `null` rather than
/// no payload.
fn raw_payload<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

impl Line {
    fn into_task(self, defaults: &Defaults) -> NewTask {
        let payload = self
            .payload
            .map_or_else(|| b"{}".to_vec(), |raw| raw.get().as_bytes().to_vec());
        let mut task = NewTask::new(self.kind, payload);
        task.priority = self.priority.or(defaults.priority).unwrap_or(task.priority);
        task.delay = self.delay;
        task.ttl = self.ttl;
        task.max_attempts = self.max_attempts;
        task.idempotency_key = self.idempotency_key;
        task.partition_key = self.partition_key;
        task.limit_key = self.limit_key;
        task.headers = self.headers;
        defaults.apply(task)
    }
}

/// What the reader thread sends the enqueuer.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every item is a task; boxing it would cost an allocation per line"
)]
enum Item {
    /// A valid task from line `line`.
    Task { line: u64, task: NewTask },
    /// Line `line` is unusable; the stream stops before it.
    Bad { line: u64, error: String },
    /// The input could not be read.
    Failed(std::io::Error),
}

/// Reads `from` line by line into `items`, until the input ends, a line is bad, or the
/// enqueuer stops listening.
fn read_lines(input: impl Read, defaults: &Defaults, items: &mpsc::Sender<Item>) {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut buffer = Vec::new();
    let mut line = 0u64;
    loop {
        buffer.clear();
        line += 1;
        let read = (&mut reader)
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut buffer);
        let item = match read {
            Ok(0) => return,
            Ok(_) if buffer.len() > LINE_BYTES_MAX && !buffer.ends_with(b"\n") => Item::Bad {
                line,
                error: format!("longer than {LINE_BYTES_MAX} bytes"),
            },
            Ok(_) => {
                if buffer.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match parse_line(&buffer, defaults) {
                    Ok(task) => Item::Task { line, task },
                    Err(error) => Item::Bad { line, error },
                }
            }
            Err(error) => Item::Failed(error),
        };
        let stop = !matches!(item, Item::Task { .. });
        if items.blocking_send(item).is_err() || stop {
            return;
        }
    }
}

/// The task on one line, or what is wrong with it.
fn parse_line(bytes: &[u8], defaults: &Defaults) -> Result<NewTask, String> {
    let line: Line = serde_json::from_slice(bytes).map_err(|error| {
        // serde counts lines within this one line; the caller names the real line.
        let message = error.to_string();
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |at| &message[..at]);
        format!("{message} (column {})", error.column())
    })?;
    let task = line.into_task(defaults);
    task.validate().map_err(|error| error.to_string())?;
    Ok(task)
}

/// `enqueue --from`: streams the lines of `from` into `queue`.
async fn stream(
    global: &Global,
    queue: QueueName,
    from: PathBuf,
    defaults: Defaults,
) -> anyhow::Result<()> {
    let input: Box<dyn Read + Send> = if from.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&from)
                .map_err(|error| bad_input(format!("cannot read {}: {error}", from.display())))?,
        )
    };
    let json = global.json;
    global
        .with_broker(Access::Create, async |broker| {
            let config = queue_config(broker, &queue).await?;
            let (sender, items) = mpsc::channel(LINES_AHEAD_MAX);
            // A plain thread: reading stdin blocks, and if the stream stops early this thread
            // may stay blocked in a read until the process exits, which is harmless.
            std::thread::Builder::new()
                .name("floodway-enqueue-reader".into())
                .spawn(move || read_lines(input, &defaults, &sender))
                .context("starting the reader thread")?;
            let summary = enqueue_stream(broker, &queue, items, &config, json).await?;
            let rate = if summary.elapsed >= Duration::from_millis(100) {
                let rate = summary.enqueued as f64 / summary.elapsed.as_secs_f64();
                format!(", {rate:.0} tasks/s")
            } else {
                String::new()
            };
            eprintln!(
                "enqueued {} tasks to {queue} ({} duplicates) in {}{rate}",
                summary.enqueued,
                summary.duplicates,
                output::human_duration(summary.elapsed),
            );
            Ok(())
        })
        .await
}

/// What a stream did.
struct Summary {
    /// Lines acknowledged, duplicates included.
    enqueued: u64,
    /// Of those, lines answered with an existing task's id.
    duplicates: u64,
    elapsed: Duration,
}

/// Enqueues the items as they arrive, in batches of whatever is waiting, printing each id once
/// its batch is durable.
async fn enqueue_stream(
    broker: &impl Broker,
    queue: &QueueName,
    mut items: mpsc::Receiver<Item>,
    config: &QueueConfig,
    json: bool,
) -> anyhow::Result<Summary> {
    // A batch with more new tasks than the queue's length_max is refused as a whole, however
    // few are waiting; batching is this command's choice, not the user's, so it stays below.
    let batch_max = config.length_max.map_or(limits::BATCH_SIZE_MAX, |max| {
        usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(limits::BATCH_SIZE_MAX)
    });
    let started = Instant::now();
    let progress = output::progress(output::Progress::Count, 0, "enqueued");
    let mut summary = Summary {
        enqueued: 0,
        duplicates: 0,
        elapsed: Duration::ZERO,
    };
    let mut lines: Vec<u64> = Vec::with_capacity(batch_max);
    let mut tasks: Vec<NewTask> = Vec::with_capacity(batch_max);
    loop {
        let Some(first) = items.recv().await else {
            break;
        };
        let mut next = Some(first);
        let mut stop = None;
        while let Some(item) = next.take() {
            match item {
                Item::Task { line, task } => {
                    lines.push(line);
                    tasks.push(task);
                }
                other => {
                    stop = Some(other);
                    break;
                }
            }
            if tasks.len() < batch_max {
                next = items.try_recv().ok();
            }
        }
        if !tasks.is_empty() {
            let batch = std::mem::take(&mut tasks);
            let enqueued = enqueue_traced(broker, queue, batch)
                .await
                .with_context(|| {
                    format!(
                        "enqueueing lines {}-{} failed; the {} lines before them were enqueued",
                        lines[0],
                        lines[lines.len() - 1],
                        summary.enqueued
                    )
                })?;
            write_ids(&lines, &enqueued, json).with_context(|| {
                format!(
                    "writing the ids of lines {}-{} to stdout failed (they were enqueued)",
                    lines[0],
                    lines[lines.len() - 1]
                )
            })?;
            summary.enqueued += enqueued.len() as u64;
            summary.duplicates += enqueued.iter().filter(|e| e.duplicate).count() as u64;
            progress.inc(enqueued.len() as u64);
            lines.clear();
        }
        match stop {
            None => {}
            Some(Item::Bad { line, error }) => {
                progress.finish_and_clear();
                return Err(bad_input(format!(
                    "line {line}: {error}; the {} tasks before it were enqueued, none after",
                    summary.enqueued
                )));
            }
            Some(Item::Failed(error)) => {
                progress.finish_and_clear();
                return Err(anyhow::Error::new(error).context(format!(
                    "reading the input failed after {} tasks were enqueued",
                    summary.enqueued
                )));
            }
            Some(Item::Task { .. }) => unreachable!("tasks never stop the stream"),
        }
    }
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Prints the ids of one durable batch and flushes, so a reader sees them at once.
fn write_ids(lines: &[u64], enqueued: &[Enqueued], json: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for (line, Enqueued { id, duplicate }) in lines.iter().zip(enqueued) {
        if json {
            writeln!(
                stdout,
                r#"{{"line":{line},"id":"{id}","duplicate":{duplicate}}}"#
            )?;
        } else {
            writeln!(stdout, "{id}")?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// Enqueues `tasks` in an `enqueue` span whose trace context each task lacking one gets: the
/// context in `TRACEPARENT` and `TRACESTATE` when the caller (a script in a traced job) set
/// them, else a new trace.
async fn enqueue_traced<B: Broker>(
    broker: &B,
    queue: &QueueName,
    mut tasks: Vec<NewTask>,
) -> Result<Vec<Enqueued>, BrokerError> {
    let span = floodway_trace::span!(
        tracing::Level::INFO,
        "enqueue",
        queue = %queue,
        tasks = tasks.len()
    );
    let caller = std::env::var("TRACEPARENT").ok().and_then(|traceparent| {
        let tracestate = std::env::var("TRACESTATE").ok();
        floodway_core::TraceContext::parse(&traceparent, tracestate.as_deref()).ok()
    });
    let parent = caller.as_ref().map_or(
        floodway_trace::Parent::Current,
        floodway_trace::Parent::Remote,
    );
    floodway_trace::start(&span, parent).inject(&mut tasks);
    broker.enqueue(queue, tasks).instrument(span).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_take_defaults_for_what_they_lack() {
        let defaults = Defaults {
            priority: Some(7),
            partition_key: Some("p".into()),
            limit_key: Some("tenant-1".into()),
            headers: [("a".to_owned(), "1".to_owned())].into(),
            ..Defaults::default()
        };
        let task = parse_line(
            br#"{"kind":"k","payload":[1, 2],"delay":"30s","headers":{"a":"2"}}"#,
            &defaults,
        )
        .unwrap();
        assert_eq!(task.payload, b"[1, 2]");
        assert_eq!(task.priority, 7);
        assert_eq!(task.delay, Some(Duration::from_secs(30)));
        assert_eq!(task.partition_key.as_deref(), Some("p"));
        assert_eq!(task.limit_key.as_deref(), Some("tenant-1"));
        assert_eq!(task.headers["a"], "2");
        let own = parse_line(br#"{"kind":"k","limit_key":"tenant-2"}"#, &defaults).unwrap();
        assert_eq!(own.limit_key.as_deref(), Some("tenant-2"));
        let task = parse_line(br#"{"kind":"k","payload":null}"#, &Defaults::default()).unwrap();
        assert_eq!(task.payload, b"null");
        let task = parse_line(br#"{"kind":"k"}"#, &Defaults::default()).unwrap();
        assert_eq!(task.payload, b"{}");
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let error = parse_line(br#"{"kind":"k","colour":1}"#, &Defaults::default()).unwrap_err();
        assert!(error.contains("colour"), "{error}");
        let error = parse_line(br#"{"kind":"k","priority":12}"#, &Defaults::default()).unwrap_err();
        assert!(error.contains("priority"), "{error}");
        let error = parse_line(b"{not json", &Defaults::default()).unwrap_err();
        assert!(error.contains("key must be a string"), "{error}");
    }

    #[test]
    fn headers_need_a_name_and_an_equals_sign() {
        assert_eq!(
            parse_header("a=b=c").unwrap(),
            ("a".to_owned(), "b=c".to_owned())
        );
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("=x").is_err());
    }
}
