//! The data directory: what every command needs to reach the embedded broker in it.
//!
//! A command opens the broker with [`Global::with_broker`], which also closes it (flushing and
//! releasing the directory's lock) however the command ends. Commands that only read, or that
//! act on queues that must already exist, open with [`Access::Existing`], so a mistyped
//! `--data` is reported instead of silently creating an empty directory.

use std::path::PathBuf;

use floodway_embedded::{Durability, EmbeddedBroker, Options};

use crate::exit::bad_input;

/// What the global options say; every command receives it.
#[derive(Debug)]
pub(crate) struct Global {
    /// The embedded broker's data directory (`--data`, `FLOODWAY_DATA`).
    pub(crate) data: PathBuf,
    /// How durable each change is before a command reports it done (`--durability`).
    pub(crate) durability: Durability,
    /// Machine-readable output (`--json`).
    pub(crate) json: bool,
}

/// Whether a command may create the data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Create the directory if it does not exist (enqueue, configure).
    Create,
    /// The directory must exist; a missing one is bad input.
    Existing,
}

impl Global {
    /// Opens the broker, runs `command` with it, and closes it, whatever `command` returned.
    ///
    /// The broker's maintenance thread is off: an administrative command must not move tasks
    /// on its own (promote due ones, reap leases) while it runs. Workers and the broker's own
    /// calls do that.
    pub(crate) async fn with_broker<T>(
        &self,
        access: Access,
        command: impl AsyncFnOnce(&EmbeddedBroker) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let broker = self.open(access, None)?;
        let result = command(&broker).await;
        broker.close().await;
        result
    }

    /// Opens the broker with maintenance every `maintenance_interval` (none when `None`).
    pub(crate) fn open(
        &self,
        access: Access,
        maintenance_interval: Option<std::time::Duration>,
    ) -> anyhow::Result<EmbeddedBroker> {
        if access == Access::Existing && !self.data.is_dir() {
            return Err(bad_input(format!(
                "no data directory at {}: check --data or FLOODWAY_DATA (nothing has been \
                 enqueued there yet)",
                self.data.display()
            )));
        }
        let options = Options {
            durability: self.durability,
            maintenance_interval,
            ..Options::default()
        };
        let broker = EmbeddedBroker::open(&self.data, options)?;
        let recovery = broker.recovery_report();
        if recovery.torn_tail_bytes > 0 {
            tracing::info!(
                bytes = recovery.torn_tail_bytes,
                "recovery dropped an unfinished write at the end of the log"
            );
        }
        Ok(broker)
    }
}
