//! The connection to Redis in its three forms (one server, a Cluster, a Sentinel-managed
//! primary) behind one small interface: run a script on the node holding a key, run a
//! command, ask every primary, and open a separate connection for blocking reads.
//!
//! Commands are multiplexed: concurrent calls share one connection per node and are
//! pipelined on it, so a batch call costs one round trip however many callers there are.
//! Nothing here retries a command that may have run: a script that timed out or lost its
//! connection may have taken effect, and only the caller knows whether repeating it is safe.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{AsyncConnectionConfig, Cmd, RedisError, RedisResult, Script, Value};

use crate::options::{Endpoint, Options};

/// A live connection: commands go through it.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server, reconnected automatically.
    Single(ConnectionManager),
    /// A Cluster: commands are routed to the node holding their key's slot.
    Cluster(ClusterConnection),
    /// The primary Sentinel names; found again when it stops answering as a primary.
    Sentinel(Arc<SentinelLink>),
    /// A plain connection without reconnection or response timeout, for blocking reads.
    Plain(MultiplexedConnection),
}

/// How to make more connections to the same Redis (for blocking reads).
#[derive(Clone)]
pub(crate) enum Source {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
    Sentinel(Arc<SentinelLink>),
}

/// A Sentinel-managed primary and the sentinels that name it.
pub(crate) struct SentinelLink {
    sentinel: tokio::sync::Mutex<Sentinel>,
    service: String,
    node: SentinelNodeConnectionInfo,
    manager_config: ConnectionManagerConfig,
    /// The current primary: its client (to open blocking connections) and manager.
    current: RwLock<(redis::Client, ConnectionManager)>,
}

impl SentinelLink {
    fn current(&self) -> (redis::Client, ConnectionManager) {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Asks the sentinels for the primary again and switches to it if it moved.
    async fn resolve(&self) -> RedisResult<()> {
        let client = self
            .sentinel
            .lock()
            .await
            .async_master_for(&self.service, Some(&self.node))
            .await?;
        let (current, _) = self.current();
        if client.get_connection_info().addr() != current.get_connection_info().addr() {
            tracing::warn!(
                service = %self.service,
                primary = %client.get_connection_info().addr(),
                "Redis Sentinel names a new primary; switching to it"
            );
            let manager =
                ConnectionManager::new_with_config(client.clone(), self.manager_config.clone())
                    .await?;
            *self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = (client, manager);
        }
        Ok(())
    }
}

/// True for errors after which the node should be looked up again: the connection broke, or
/// the node is no longer a primary.
fn node_moved(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.code() == Some("READONLY")
}

fn manager_config(options: &Options) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(options.command_timeout))
        .set_connection_timeout(Some(options.connect_timeout))
        // Reconnection happens in the background; a call never waits for more than one try.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1))
}

/// Connects to `endpoint`.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    options: &Options,
) -> RedisResult<(Connection, Source)> {
    match endpoint {
        Endpoint::Single(url) => {
            let client = redis::Client::open(url.as_str())?;
            let manager =
                ConnectionManager::new_with_config(client.clone(), manager_config(options)).await?;
            Ok((Connection::Single(manager), Source::Single(client)))
        }
        Endpoint::Cluster(nodes) => {
            let client = ClusterClient::builder(nodes.clone())
                .response_timeout(options.command_timeout)
                .connection_timeout(options.connect_timeout)
                .retries(2)
                .build()?;
            let connection = client.get_async_connection().await?;
            let blocking = ClusterClient::builder(nodes.clone())
                .response_timeout(crate::limits::WATCH_BLOCK * 10)
                .connection_timeout(options.connect_timeout)
                .build()?;
            Ok((
                Connection::Cluster(connection),
                Source::Cluster(Box::new(blocking)),
            ))
        }
        Endpoint::Sentinel {
            sentinels,
            service,
            db,
            username,
            password,
        } => {
            let mut sentinel = Sentinel::build(sentinels.clone())?;
            let mut info = redis::RedisConnectionInfo::default().set_db(*db);
            if let Some(username) = username {
                info = info.set_username(username);
            }
            if let Some(password) = password {
                info = info.set_password(password);
            }
            let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
            let client = sentinel.async_master_for(service, Some(&node)).await?;
            let config = manager_config(options);
            let manager =
                ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
            let link = Arc::new(SentinelLink {
                sentinel: tokio::sync::Mutex::new(sentinel),
                service: service.clone(),
                node,
                manager_config: config,
                current: RwLock::new((client, manager)),
            });
            Ok((Connection::Sentinel(link.clone()), Source::Sentinel(link)))
        }
    }
}

impl Source {
    /// A connection for blocking reads: no response timeout on one server (the read itself
    /// says how long it blocks), a long one in a Cluster.
    pub(crate) async fn blocking(&self, options: &Options) -> RedisResult<Connection> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(options.connect_timeout));
        match self {
            Source::Single(client) => Ok(Connection::Plain(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )),
            Source::Cluster(client) => {
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
            Source::Sentinel(link) => {
                let (client, _) = link.current();
                Ok(Connection::Plain(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
        }
    }
}

impl Connection {
    /// Runs `script` with `key` as its only declared key (the shard's base key: every key the
    /// script touches shares its hash tag) and `args`.
    pub(crate) async fn script(
        &self,
        script: &Script,
        key: &str,
        args: Vec<Vec<u8>>,
    ) -> RedisResult<Value> {
        let mut invocation = script.prepare_invoke();
        invocation.key(key);
        for arg in args {
            invocation.arg(arg);
        }
        match self {
            Connection::Single(manager) => invocation.invoke_async(&mut manager.clone()).await,
            Connection::Cluster(cluster) => invocation.invoke_async(&mut cluster.clone()).await,
            Connection::Plain(plain) => invocation.invoke_async(&mut plain.clone()).await,
            Connection::Sentinel(link) => {
                let (_, mut manager) = link.current();
                let result = invocation.invoke_async(&mut manager).await;
                if let Err(err) = &result
                    && node_moved(err)
                    && let Err(resolve) = link.resolve().await
                {
                    tracing::warn!(%resolve, "asking Redis Sentinel for the primary failed");
                }
                result
            }
        }
    }

    /// Runs a command; in a Cluster it goes to the node of the command's key.
    pub(crate) async fn cmd(&self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Connection::Single(manager) => cmd.query_async(&mut manager.clone()).await,
            Connection::Cluster(cluster) => cmd.query_async(&mut cluster.clone()).await,
            Connection::Plain(plain) => cmd.query_async(&mut plain.clone()).await,
            Connection::Sentinel(link) => {
                let (_, mut manager) = link.current();
                let result = cmd.query_async(&mut manager).await;
                if let Err(err) = &result
                    && node_moved(err)
                    && let Err(resolve) = link.resolve().await
                {
                    tracing::warn!(%resolve, "asking Redis Sentinel for the primary failed");
                }
                result
            }
        }
    }

    /// Runs a keyless command (`WAIT`, `WAITAOF`) on the connection to the primary holding
    /// `key`, where the writes it waits for were made: one multiplexed connection per node
    /// keeps the order. (Should that connection have been re-established in between, the
    /// command waits for nothing: a window this cannot close.)
    pub(crate) async fn on_node_of(&self, key: &str, cmd: Cmd) -> RedisResult<Value> {
        match self {
            Connection::Cluster(cluster) => {
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                cluster.clone().route_command(cmd, routing).await
            }
            _ => self.cmd(&cmd).await,
        }
    }

    /// Every key matching `pattern` on every primary (`SCAN`, so Redis is never blocked long).
    pub(crate) async fn scan(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        let nodes: Vec<Option<(String, u16)>> = match self {
            Connection::Cluster(_) => {
                let mut ping = redis::cmd("PING");
                ping.arg("scan");
                self.on_primaries(ping)
                    .await?
                    .into_iter()
                    .filter_map(|(node, _)| {
                        let (host, port) = node.rsplit_once(':')?;
                        Some(Some((host.to_owned(), port.parse().ok()?)))
                    })
                    .collect()
            }
            _ => vec![None],
        };
        for node in nodes {
            let mut cursor = "0".to_owned();
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(&cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let reply = match (&node, self) {
                    (Some((host, port)), Connection::Cluster(cluster)) => {
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        cluster.clone().route_command(cmd, routing).await?
                    }
                    _ => self.cmd(&cmd).await?,
                };
                let Value::Array(parts) = reply else { break };
                let [next, found] = &parts[..] else { break };
                if let Value::Array(found) = found {
                    keys.extend(found.iter().filter_map(text));
                }
                cursor = text(next).unwrap_or_default();
                if cursor == "0" || cursor.is_empty() {
                    break;
                }
            }
        }
        Ok(keys)
    }

    /// Runs a keyless command on every primary; answers (node, reply) pairs.
    pub(crate) async fn on_primaries(&self, cmd: Cmd) -> RedisResult<Vec<(String, Value)>> {
        match self {
            Connection::Cluster(cluster) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match cluster.clone().route_command(cmd, routing).await? {
                    Value::Map(pairs) => Ok(pairs
                        .into_iter()
                        .map(|(node, reply)| (text(&node).unwrap_or_default(), reply))
                        .collect()),
                    other => Ok(vec![("cluster".to_owned(), other)]),
                }
            }
            Connection::Single(_) | Connection::Plain(_) => {
                Ok(vec![("server".to_owned(), self.cmd(&cmd).await?)])
            }
            Connection::Sentinel(link) => {
                let (client, _) = link.current();
                let node = client.get_connection_info().addr().to_string();
                Ok(vec![(node, self.cmd(&cmd).await?)])
            }
        }
    }
}

/// A reply as text, if it is a string.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}
