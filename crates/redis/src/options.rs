//! [`Options`] for connecting the Redis broker, and the [`Endpoint`] forms it connects to.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use floodway_core::{Clock, QueueName};

use crate::limits;

/// Where the broker's Redis is, parsed from a URL:
///
/// - `redis://[user:password@]host:port[/db]`: one server (a primary, with or without
///   replicas);
/// - `redis+cluster://[user:password@]host:port[,host:port...]`: a Redis Cluster, given one or
///   more of its nodes;
/// - `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`: the primary that
///   Redis Sentinel names for `service`, found through any of the given sentinels and found
///   again after a failover. The credentials are the data nodes'; the sentinels are asked
///   without.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One server.
    Single(String),
    /// A Redis Cluster, through these nodes (as `redis://` URLs).
    Cluster(Vec<String>),
    /// The primary of `service` as the sentinels report it.
    Sentinel {
        /// The sentinels, as `redis://host:port` URLs.
        sentinels: Vec<String>,
        /// The monitored service (the primary's name in Sentinel's configuration).
        service: String,
        /// The database number on the data nodes.
        db: i64,
        /// The data nodes' user name, if any.
        username: Option<String>,
        /// The data nodes' password, if any.
        password: Option<String>,
    },
}

/// Why a string is not an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis URL: {0}")]
pub struct InvalidEndpoint(String);

fn split_credentials(rest: &str) -> (Option<&str>, &str) {
    match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, rest),
    }
}

fn hosts(list: &str, credentials: Option<&str>) -> Result<Vec<String>, InvalidEndpoint> {
    let hosts: Vec<String> = list
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| match credentials {
            Some(credentials) => format!("redis://{credentials}@{host}"),
            None => format!("redis://{host}"),
        })
        .collect();
    if hosts.is_empty() {
        return Err(InvalidEndpoint("no host given".into()));
    }
    Ok(hosts)
}

impl FromStr for Endpoint {
    type Err = InvalidEndpoint;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (credentials, list) = split_credentials(rest.trim_end_matches('/'));
            return Ok(Endpoint::Cluster(hosts(list, credentials)?));
        }
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (credentials, rest) = split_credentials(rest);
            let mut parts = rest.split('/');
            let list = parts.next().unwrap_or_default();
            let service = parts
                .next()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    InvalidEndpoint(format!(
                        "{url:?} names no service: redis+sentinel://host:port/<service>"
                    ))
                })?
                .to_owned();
            let db = match parts.next() {
                None | Some("") => 0,
                Some(db) => db
                    .parse()
                    .map_err(|_| InvalidEndpoint(format!("database {db:?} is not a number")))?,
            };
            let (username, password) = match credentials {
                None => (None, None),
                Some(credentials) => match credentials.split_once(':') {
                    Some((user, password)) => (
                        Some(user).filter(|u| !u.is_empty()).map(str::to_owned),
                        Some(password.to_owned()),
                    ),
                    None => (Some(credentials.to_owned()), None),
                },
            };
            return Ok(Endpoint::Sentinel {
                sentinels: hosts(list, None)?,
                service,
                db,
                username,
                password,
            });
        }
        if url.starts_with("redis://") {
            return Ok(Endpoint::Single(url.to_owned()));
        }
        if url.starts_with("rediss://") {
            return Err(InvalidEndpoint(
                "rediss:// (TLS) is not built into this floodway; use redis:// over a trusted \
                 network or a TLS tunnel"
                    .into(),
            ));
        }
        Err(InvalidEndpoint(format!(
            "{url:?}: expected redis://, redis+cluster:// or redis+sentinel://"
        )))
    }
}

/// Redacts passwords, so an endpoint can be logged.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Single(url) => f.write_str(&redact(url)),
            Endpoint::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| redact(n)).collect();
                write!(f, "cluster {}", nodes.join(","))
            }
            Endpoint::Sentinel {
                sentinels, service, ..
            } => write!(f, "sentinel {} service {service}", sentinels.join(",")),
        }
    }
}

/// Where the broker reads the time that leases, schedules and time-to-live are judged by.
#[derive(Clone, Default)]
pub enum TimeSource {
    /// The Redis server's clock (`TIME`, read inside every script), made monotonic per queue
    /// shard: every floodway process judges a task by the same clock, whatever its own says.
    /// The default, and the only sound choice with more than one process.
    #[default]
    Server,
    /// This clock, passed into every script. For tests (a
    /// [`floodway_core::ManualClock`]) and for a single process that owns its queues.
    Injected(Arc<dyn Clock>),
}

impl fmt::Debug for TimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeSource::Server => f.write_str("Server"),
            TimeSource::Injected(_) => f.write_str("Injected"),
        }
    }
}

/// How to connect a [`crate::RedisBroker`].
#[derive(Clone, Debug)]
pub struct Options {
    /// The first part of every key the broker writes (`<prefix>:{<queue>#<shard>}:...`), so
    /// several deployments can share one Redis and an ACL can confine floodway to
    /// `~<prefix>:*`. Default `floodway`.
    pub prefix: String,
    /// Where time comes from; see [`TimeSource`].
    pub time: TimeSource,
    /// How often a background task promotes due tasks, expires TTLs, reaps expired leases and
    /// forgets old idempotency keys in every queue, besides what `reserve` does for its own
    /// queue. `None` turns it off (tests that move time by hand do). Default 1 s.
    pub maintenance_interval: Option<Duration>,
    /// How long a command may wait for Redis before the call fails with
    /// `BrokerError::Unavailable` (its outcome then unknown). Default 5 s.
    pub command_timeout: Duration,
    /// How long connecting may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Whether a Redis without floodway's dataset marker is initialised (marked) on connect.
    /// With `false` connecting fails instead, so a Redis that restarted empty can never be
    /// mistaken for a new, empty deployment by a process started after the loss. Default
    /// `true`.
    pub create_if_missing: bool,
    /// Connect even if Redis may evict keys (`maxmemory-policy` other than `noeviction`),
    /// which silently deletes tasks under memory pressure. Default `false`: connecting fails.
    pub allow_eviction: bool,
    /// Queues to partition over several shards (a partition key or idempotency key chooses
    /// one; other tasks are spread), so that Redis Cluster spreads one busy queue over
    /// nodes. Applies when the queue is created; a queue's shard count never changes after.
    /// Default: none (every queue has one shard).
    pub shards: HashMap<QueueName, u16>,
    /// Most tasks one housekeeping step (promote, reap) moves in one script call, which
    /// bounds how long Redis is blocked by it. Default 1,000.
    pub housekeeping_batch: usize,
    /// After every change but a reservation, wait until this many replicas have it (`WAIT`)
    /// before answering; fewer within `wait_timeout` fails the call with `Unavailable` (the
    /// change is on the primary; retrying with idempotency keys is safe). Narrows what a
    /// failover can lose; `WAIT` is best-effort, not a consensus. Default 0: do not wait.
    pub wait_replicas: u32,
    /// After every change but a reservation, wait until the primary has fsynced it to its
    /// append-only file (`WAITAOF`, Redis 7.2 and later), so that with `appendfsync everysec`
    /// an acknowledged change survives a crash of the machine too. Connecting fails on a server
    /// without `WAITAOF` or with `appendonly no`. Default `false`.
    pub wait_aof: bool,
    /// How long `wait_replicas` and `wait_aof` wait. Default 1 s.
    pub wait_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prefix: "floodway".to_owned(),
            time: TimeSource::Server,
            maintenance_interval: Some(Duration::from_secs(1)),
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            create_if_missing: true,
            allow_eviction: false,
            shards: HashMap::new(),
            housekeeping_batch: limits::HOUSEKEEPING_BATCH_DEFAULT,
            wait_replicas: 0,
            wait_aof: false,
            wait_timeout: Duration::from_secs(1),
        }
    }
}

impl Options {
    /// Partitions `queue` over `shards` shards when it is created.
    pub fn shards(mut self, queue: QueueName, shards: u16) -> Self {
        self.shards.insert(queue, shards);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "redis://127.0.0.1:6379/2".parse::<Endpoint>().unwrap(),
            Endpoint::Single("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            "redis+cluster://u:p@a:1,b:2".parse::<Endpoint>().unwrap(),
            Endpoint::Cluster(vec!["redis://u:p@a:1".into(), "redis://u:p@b:2".into()])
        );
        assert_eq!(
            "redis+sentinel://:secret@s1:26379,s2:26379/orders/3"
                .parse::<Endpoint>()
                .unwrap(),
            Endpoint::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                service: "orders".into(),
                db: 3,
                username: None,
                password: Some("secret".into()),
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_serve_and_says_why() {
        for (url, says) in [
            ("http://x", "expected redis://"),
            ("rediss://x:1", "TLS"),
            ("redis+sentinel://s:1", "names no service"),
            ("redis+cluster://", "no host"),
        ] {
            let err = url.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn display_hides_passwords() {
        let endpoint: Endpoint = "redis://user:hunter2@h:1".parse().unwrap();
        assert!(!endpoint.to_string().contains("hunter2"));
        assert!(!format!("{endpoint:?}").contains("hunter2"));
    }
}
