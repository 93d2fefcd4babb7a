//! The conformance suite (crate `floodway-conformance`) against the embedded broker: one test
//! per case, each on a fresh data directory and a manual clock.

use std::sync::Arc;

use floodway_conformance::Harness;
use floodway_core::{ManualClock, Timestamp};
use floodway_embedded::{Durability, EmbeddedBroker, Options};
use tempfile::TempDir;

/// An embedded broker in a temporary directory, reopened on the same directory by restart.
struct Embedded {
    broker: EmbeddedBroker,
    clock: ManualClock,
    durability: Durability,
    /// Declared after the broker so the broker closes before the directory is removed.
    dir: TempDir,
}

impl Embedded {
    fn open(dir: TempDir, clock: ManualClock, durability: Durability) -> Self {
        let broker = EmbeddedBroker::open(dir.path(), options(&clock, durability))
            .expect("opening the embedded broker");
        Embedded {
            broker,
            clock,
            durability,
            dir,
        }
    }
}

/// The suite moves time by hand, so the maintenance thread is off: only the suite's own calls
/// (reserve, promote, reap) move tasks.
fn options(clock: &ManualClock, durability: Durability) -> Options {
    Options {
        durability,
        clock: Arc::new(clock.clone()),
        maintenance_interval: None,
        ..Options::default()
    }
}

impl Harness for Embedded {
    type Broker = EmbeddedBroker;

    fn broker(&self) -> &EmbeddedBroker {
        &self.broker
    }

    fn clock(&self) -> &ManualClock {
        &self.clock
    }

    fn can_restart(&self) -> bool {
        true
    }

    async fn restart(&mut self) {
        self.broker.close().await;
        self.broker = EmbeddedBroker::open(self.dir.path(), options(&self.clock, self.durability))
            .expect("reopening the embedded broker on its directory");
    }
}

fn fresh(durability: Durability) -> Embedded {
    let dir = tempfile::tempdir().expect("a temporary directory");
    Embedded::open(
        dir,
        ManualClock::new(Timestamp::from_millis(1_800_000_000_000)),
        durability,
    )
}

/// The default durability, as users run it.
async fn harness() -> Embedded {
    fresh(Durability::Fsync)
}

/// The proptest opens hundreds of brokers; syncing changes the answers of none of them.
async fn harness_without_fsync() -> Embedded {
    fresh(Durability::Off)
}

floodway_conformance::suite!(harness, model = harness_without_fsync);
