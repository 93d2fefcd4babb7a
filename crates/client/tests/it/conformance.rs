//! The conformance suite against the HTTP broker: every case goes client → HTTP → server →
//! embedded broker and back, so a passing suite shows the API loses nothing of the `Broker`
//! contract: values, per-item refusals and error variants all arrive as a local broker
//! returns them.

use std::sync::Arc;

use floodway_client::{ClientConfig, HttpBroker};
use floodway_conformance::Harness;
use floodway_core::{ManualClock, Timestamp};
use floodway_embedded::{Durability, EmbeddedBroker, Options};
use floodway_server::ServerConfig;
use tempfile::TempDir;

use crate::support::TestServer;

/// An embedded broker on a manual clock, served over HTTP, reached through [`HttpBroker`].
struct Remote {
    client: HttpBroker,
    server: TestServer,
    clock: ManualClock,
    durability: Durability,
    /// Declared last so the broker closes before the directory is removed.
    dir: TempDir,
}

/// Time moves only by the suite's hand, so the broker's maintenance thread is off.
fn options(clock: &ManualClock, durability: Durability) -> Options {
    Options {
        durability,
        clock: Arc::new(clock.clone()),
        maintenance_interval: None,
        ..Options::default()
    }
}

async fn serve(
    dir: &TempDir,
    clock: &ManualClock,
    durability: Durability,
) -> (TestServer, HttpBroker) {
    let broker = EmbeddedBroker::open(dir.path(), options(clock, durability))
        .expect("opening the embedded broker");
    let server = TestServer::start(Arc::new(broker), ServerConfig::default()).await;
    let client = HttpBroker::connect(ClientConfig::new(&server.url))
        .await
        .expect("connecting to the test server");
    (server, client)
}

impl Harness for Remote {
    type Broker = HttpBroker;

    fn broker(&self) -> &HttpBroker {
        &self.client
    }

    fn clock(&self) -> &ManualClock {
        &self.clock
    }

    fn can_restart(&self) -> bool {
        true
    }

    /// Stops the server, closes the broker, and serves the reopened directory on a new port.
    async fn restart(&mut self) {
        self.server.stop().await;
        self.server.broker.close().await;
        let (server, client) = serve(&self.dir, &self.clock, self.durability).await;
        self.server = server;
        self.client = client;
    }
}

async fn fresh(durability: Durability) -> Remote {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
    let (server, client) = serve(&dir, &clock, durability).await;
    Remote {
        client,
        server,
        clock,
        durability,
        dir,
    }
}

async fn harness() -> Remote {
    fresh(Durability::Fsync).await
}

/// The proptest starts hundreds of servers; syncing changes none of their answers.
async fn harness_without_fsync() -> Remote {
    fresh(Durability::Off).await
}

floodway_conformance::suite!(harness, model = harness_without_fsync);
