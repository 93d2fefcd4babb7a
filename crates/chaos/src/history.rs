//! What a run records: the producers' operations (in the harness's memory), the workers'
//! executions (one history file per worker slot, appended line by line), the downstream's
//! effects (one file per effect) and the faults injected.
//!
//! A worker writes each line with one `write` on a file opened for appending, before it acts
//! on what the line says, so a line a SIGKILL cut short is the only loss, and it is the last
//! one: the parser skips a line it cannot read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use floodway_core::TaskId;
use serde::Serialize;

/// Milliseconds since the Unix epoch on this machine's clock; the harness and the workers run
/// on one machine, so their times compare.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How one enqueue operation ended, as the producer saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum OpOutcome {
    /// The broker acknowledged it: the task exists under this id and must run.
    Ok {
        /// The task's id.
        id: TaskId,
        /// When the answer arrived.
        at_ms: u64,
    },
    /// The broker refused it for certain: nothing was enqueued.
    Failed {
        /// The refusal.
        error: String,
    },
    /// No answer within the retry limit: the task may or may not exist.
    Indeterminate {
        /// The last error.
        error: String,
    },
}

/// One producer operation: an enqueue of one task, retried with its idempotency key until it
/// is answered or the retry limit passes.
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    /// The operation's number in the run; also in the task's payload.
    pub op: u64,
    /// The enqueue's idempotency key, the same in every retry.
    pub key: String,
    /// True when the task is poison (its handler panics or aborts).
    pub poison: bool,
    /// When the first try was sent.
    pub invoked_ms: u64,
    /// Tries sent.
    pub tries: u32,
    /// How it ended.
    pub outcome: OpOutcome,
}

/// One line of a worker's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A handler started an attempt.
    Start {
        /// The task.
        id: TaskId,
        /// Its operation number (from the payload).
        op: u64,
        /// The attempt (1 for the first).
        attempt: u32,
        /// The lease's fence.
        fence: u64,
        /// When.
        at_ms: u64,
    },
    /// A handler finished an attempt and returned "complete"; the worker then acks it.
    Done {
        /// The task.
        id: TaskId,
        /// The attempt.
        attempt: u32,
        /// When.
        at_ms: u64,
    },
}

impl Event {
    /// The line for the history file, newline included.
    pub fn line(&self) -> String {
        match self {
            Event::Start {
                id,
                op,
                attempt,
                fence,
                at_ms,
            } => format!("start {id} {op} {attempt} {fence} {at_ms}\n"),
            Event::Done { id, attempt, at_ms } => format!("done {id} {attempt} {at_ms}\n"),
        }
    }

    /// Parses a line written by [`Event::line`]; `None` for a line cut short.
    pub fn parse(line: &str) -> Option<Event> {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["start", id, op, attempt, fence, at] => Some(Event::Start {
                id: id.parse().ok()?,
                op: op.parse().ok()?,
                attempt: attempt.parse().ok()?,
                fence: fence.parse().ok()?,
                at_ms: at.parse().ok()?,
            }),
            ["done", id, attempt, at] => Some(Event::Done {
                id: id.parse().ok()?,
                attempt: attempt.parse().ok()?,
                at_ms: at.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Appends `event` to the history file at `path` with one `write`.
pub fn append(path: &Path, event: &Event) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(event.line().as_bytes())
}

/// Every event of every `*.history` file in `dir`, with the worker slot's file name.
pub fn read_histories(dir: &Path) -> std::io::Result<Vec<(String, Event)>> {
    let mut events = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "history") {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path)?;
            events.extend(
                text.lines()
                    .filter_map(Event::parse)
                    .map(|e| (name.clone(), e)),
            );
        }
    }
    Ok(events)
}

/// The downstream system the handlers' effects go to: a directory in which an effect is a
/// file named by its idempotency key and holding its operation number. Like a payment API
/// with an `Idempotency-Key` header, it applies a key once and answers a repeat without
/// applying it again: the file is written under a temporary name and hard-linked into place,
/// which fails if the key exists (atomic across processes).
pub struct Downstream<'a> {
    dir: &'a Path,
}

impl<'a> Downstream<'a> {
    /// The downstream in `dir` (created if missing).
    pub fn new(dir: &'a Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Downstream { dir })
    }

    /// Applies the effect of operation `op` under `key`; false when `key` was applied before
    /// (the repeat changes nothing).
    pub fn apply(&self, key: &str, op: u64) -> std::io::Result<bool> {
        let name: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let temporary = self
            .dir
            .join(format!(".tmp-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::write(&temporary, op.to_string())?;
        let applied = match std::fs::hard_link(&temporary, self.dir.join(&name)) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(e);
            }
        };
        std::fs::remove_file(&temporary)?;
        Ok(applied)
    }

    /// Every applied effect: operation number → keys applied for it.
    pub fn applied(&self) -> std::io::Result<BTreeMap<u64, Vec<String>>> {
        let mut applied: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for entry in std::fs::read_dir(self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path())?;
            if let Ok(op) = text.trim().parse() {
                applied.entry(op).or_default().push(name);
            }
        }
        Ok(applied)
    }
}

/// One fault the nemesis injected.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    /// What was done (e.g. "kill-worker 1").
    pub what: String,
    /// When it began.
    pub start_ms: u64,
    /// When it was healed (the process restarted, the signal continued, the link healed).
    pub healed_ms: u64,
    /// False for a fault that stops nothing (a clock jump), so has no recovery to measure.
    pub outage: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_their_line_and_a_cut_line_is_skipped() {
        let id = TaskId::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
        let events = [
            Event::Start {
                id,
                op: 7,
                attempt: 2,
                fence: 9,
                at_ms: 1_700_000_000_000,
            },
            Event::Done {
                id,
                attempt: 2,
                at_ms: 1_700_000_000_100,
            },
        ];
        for event in &events {
            let line = event.line();
            assert_eq!(Event::parse(line.trim_end()).as_ref(), Some(event));
            let cut = &line[..line.len() / 2];
            assert_eq!(Event::parse(cut), None, "{cut:?}");
        }
    }

    #[test]
    fn the_downstream_applies_a_key_once() {
        let dir = std::env::temp_dir().join(format!("floodway-chaos-ds-{}", fastrand::u64(..)));
        let downstream = Downstream::new(&dir).unwrap();
        assert!(downstream.apply("t1:apply", 1).unwrap());
        assert!(!downstream.apply("t1:apply", 1).unwrap());
        assert!(downstream.apply("t2:apply", 1).unwrap());
        let applied = downstream.applied().unwrap();
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[&1].len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
