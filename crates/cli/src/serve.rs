//! `floodway serve`: the HTTP API (floodway-server) over a broker, until SIGINT or SIGTERM.
//!
//! Settings come from a TOML file (`--config`), then `FLOODWAY_SERVE_*` environment
//! variables, then the flags below (see `floodway_server::config`). The broker is chosen on
//! the command line: the embedded broker in `--data DIR` (the default), or a broker URL with
//! `--broker`. The server is generic over the broker; [`run`] picks one and hands it to
//! [`serve`], so another broker is one arm of the match in [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use floodway_core::Broker;
use floodway_server::{ConfigError, Overrides, Server, ServerConfig, TlsConfig};

use crate::data::{Access, Global};
use crate::exit::bad_input;

/// `floodway serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A TOML configuration file; FLOODWAY_SERVE_* variables and the flags below override
    /// its settings.
    #[arg(long, env = "FLOODWAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to listen [default: 127.0.0.1:7700]. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The broker to serve: omit it for the embedded broker in --data, or give a Redis URL:
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]` (`rediss://` for TLS),
    /// `redis+sentinel://S1:26379,S2:26379/MASTER` or `redis+cluster://N1:7000,N2:7001`.
    /// Several servers may serve one Redis.
    #[arg(long, env = "FLOODWAY_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// With a Redis --broker: refuse to start unless floodway's dataset is already there,
    /// instead of creating it. Set it in production once the dataset exists, so a server
    /// started after Redis lost its data reports the loss rather than begin an empty queue.
    #[arg(long, env = "FLOODWAY_REQUIRE_DATASET", requires = "broker")]
    require_dataset: bool,
    /// Allow a non-loopback --listen address with no tokens configured (anyone who can reach
    /// the port can do anything).
    #[arg(long)]
    insecure: bool,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Do not serve the web dashboard at `/` (the API is unchanged). The dashboard's files
    /// need no token, but the page can only do what the user's token allows.
    #[arg(long)]
    no_dashboard: bool,
}

/// The broker `--broker` names.
#[derive(Debug, PartialEq, Eq)]
enum BrokerChoice {
    /// The embedded broker in `--data`.
    Embedded,
    /// A Redis broker at this URL.
    Redis(String),
}

fn choose(broker: Option<&str>) -> anyhow::Result<BrokerChoice> {
    match broker {
        None => Ok(BrokerChoice::Embedded),
        Some(url)
            if [
                "redis://",
                "rediss://",
                "redis+sentinel://",
                "redis+cluster://",
            ]
            .iter()
            .any(|scheme| url.starts_with(scheme)) =>
        {
            Ok(BrokerChoice::Redis(url.to_owned()))
        }
        Some(other) => Err(bad_input(format!(
            "unknown broker {other:?}: give a redis://, redis+sentinel:// or redis+cluster:// \
             URL, or no --broker for the embedded broker in --data"
        ))),
    }
}

/// Runs `floodway serve`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        insecure: args.insecure,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| TlsConfig { cert, key }),
        dashboard: args.no_dashboard.then_some(false),
    };
    let config = ServerConfig::load(args.config.as_deref(), &overrides).map_err(config_error)?;
    match choose(args.broker.as_deref())? {
        BrokerChoice::Embedded => {
            // The maintenance thread promotes due tasks and reaps expired leases even when no
            // worker is polling.
            let maintenance = floodway_embedded::Options::default().maintenance_interval;
            let broker = Arc::new(global.open(Access::Create, maintenance)?);
            let served = serve(broker.clone(), config).await;
            broker.close().await;
            served
        }
        BrokerChoice::Redis(url) => {
            // Connecting checks the server (eviction policy, persistence, the dataset marker)
            // and fails with a message that says what is wrong.
            let options = floodway_redis::Options {
                create_if_missing: !args.require_dataset,
                ..floodway_redis::Options::default()
            };
            let broker = floodway_redis::RedisBroker::connect(&url, options)
                .await
                .with_context(|| format!("connecting to Redis at {}", redact(&url)))?;
            serve(Arc::new(broker), config).await
        }
    }
}

/// Serves `broker` until SIGINT or SIGTERM, then lets requests in flight finish.
async fn serve<B: Broker>(broker: Arc<B>, config: ServerConfig) -> anyhow::Result<()> {
    let auth = if config.auth_enabled() {
        format!("{} bearer tokens", config.tokens.len())
    } else {
        "no authentication".to_owned()
    };
    let dashboard = config.dashboard;
    let server = Server::new(broker, config)
        .map_err(config_error)?
        .bind()
        .await
        .context("binding the listen address")?;
    // Before the line below: a SIGTERM sent as soon as it appears stops the server gracefully.
    let shutdown = crate::signal::shutdown_signal().await;
    // One line on stdout, so scripts and tests can read the address (with port 0, the port
    // the system picked).
    crate::output::print(format!("listening on {}", server.url()))?;
    tracing::info!(url = %server.url(), %auth, dashboard, "floodway serve started");
    server.serve(shutdown).await.context("serving")?;
    tracing::info!("floodway serve stopped");
    Ok(())
}

/// `url` without its password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _password)) => {
                    format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A configuration problem is the caller's: exit code 2, naming the setting.
fn config_error(error: ConfigError) -> anyhow::Error {
    bad_input(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(
            redact("redis://app:s3cret@10.0.0.7:6379/2"),
            "redis://app:***@10.0.0.7:6379/2"
        );
        assert_eq!(redact("redis://10.0.0.7:6379"), "redis://10.0.0.7:6379");
        assert_eq!(redact("redis://:s3cret@h:1"), "redis://:***@h:1");
    }

    #[test]
    fn broker_urls_choose_a_broker() {
        assert_eq!(choose(None).unwrap(), BrokerChoice::Embedded);
        assert_eq!(
            choose(Some("redis://127.0.0.1:6379")).unwrap(),
            BrokerChoice::Redis("redis://127.0.0.1:6379".into())
        );
        assert!(choose(Some("postgres://x")).is_err());
    }
}
