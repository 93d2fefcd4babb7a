//! Where `stats` and `top` read queue statistics: the embedded broker in `--data`, or a running
//! `floodway serve` (`--server URL`), which is how an operator watches a deployment on Redis,
//! or a data directory that a server holds (its lock keeps every other process out).

use std::path::PathBuf;

use anyhow::Context;
use floodway_client::{ClientConfig, HttpBroker, Token};
use floodway_core::{Broker, QueueName, QueueStats};
use floodway_embedded::EmbeddedBroker;

use crate::data::{Access, Global};

/// `--server`, `--token`, `--ca-cert`: read from a server instead of the data directory.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// Read the statistics from this floodway server (e.g. http://127.0.0.1:7700) instead of
    /// the data directory. Any token scope on a queue shows it.
    #[arg(long, env = "FLOODWAY_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The bearer token for --server.
    #[arg(
        long,
        env = "FLOODWAY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<Token>,
    /// A PEM file of extra root certificates to trust for --server.
    #[arg(long, env = "FLOODWAY_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

/// An open source of statistics. Close it with [`Source::close`].
pub(crate) enum Source {
    /// The embedded broker, opened (and locked) by this process.
    Embedded(EmbeddedBroker),
    /// A server, over HTTP.
    Server {
        /// The client.
        broker: Box<HttpBroker>,
        /// Its URL, for headers and messages.
        url: String,
    },
}

impl Source {
    /// Connects to `--server` when given, else opens the data directory (which must exist).
    pub(crate) async fn open(global: &Global, args: ServerArgs) -> anyhow::Result<Source> {
        match args.server {
            Some(url) => {
                let mut config = ClientConfig::new(&url);
                config.token = args.token;
                config.ca_cert = args.ca_cert;
                let broker = HttpBroker::connect(config)
                    .await
                    .with_context(|| format!("connecting to {url}"))?;
                Ok(Source::Server {
                    broker: Box::new(broker),
                    url,
                })
            }
            None => Ok(Source::Embedded(global.open(Access::Existing, None)?)),
        }
    }

    /// The statistics of `queue`, or of every queue.
    pub(crate) async fn stats(&self, queue: Option<&QueueName>) -> anyhow::Result<Vec<QueueStats>> {
        Ok(match self {
            Source::Embedded(broker) => broker.stats(queue).await?,
            Source::Server { broker, .. } => broker.stats(queue).await?,
        })
    }

    /// What the source is, for headers: the data directory or the server's URL.
    pub(crate) fn describe(&self, global: &Global) -> String {
        match self {
            Source::Embedded(_) => global.data.display().to_string(),
            Source::Server { url, .. } => url.clone(),
        }
    }

    /// True for the data directory, whose figures only this process could change while it
    /// holds the lock.
    pub(crate) fn is_embedded(&self) -> bool {
        matches!(self, Source::Embedded(_))
    }

    /// Closes the embedded broker (flushing, releasing the lock); nothing to do for a server.
    pub(crate) async fn close(self) {
        if let Source::Embedded(broker) = self {
            broker.close().await;
        }
    }
}
