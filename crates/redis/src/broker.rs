//! [`RedisBroker`]: the [`Broker`] on Redis.
//!
//! ```text
//!   caller ──► validate (all or nothing, before Redis sees anything)
//!          ──► registry: queue name ⇄ number, shard count   (cached; one slot of its own)
//!          ──► one Lua script per shard touched             (atomic; the shard's hash tag)
//!          ◄── per-item results, decoded task records
//! ```
//!
//! Every call is one script per shard it touches, so a call on an unpartitioned queue is one
//! round trip and atomic. Calls that name tasks by id (ack, fail, extend, release, cancel,
//! get, replay and purge by ids) find the queue and shard in the id itself ([`crate::codec`]),
//! group the items per shard and run one script per group; items are independent, so this
//! keeps the contract's per-item results.
//!
//! A Redis error becomes `BrokerError::Unavailable` (the call may or may not have taken effect
//! if it was sent). A script that finds floodway's data gone (`FLOODWAY_LOST`: the dataset
//! marker or a shard's metadata missing or different) marks the broker *lost*: from then on
//! every call, `ping` included, fails with `Unavailable` naming the loss, so a Redis that
//! restarted empty is never served as an empty queue.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use floodway_backpressure::DrainMeter;
use floodway_core::broker::{validate_batch, validate_lease_duration};
use floodway_core::task::truncate_error;
use floodway_core::{
    Broker, BrokerError, Capabilities, DeadCounts, DeadSelector, EffectRecord, Enqueued,
    FailOutcome, Failure, Fence, LATENCY_BUCKETS, LatencyHistogram, Lease, LeaseRef, LeaseResults,
    NewTask, QueueConfig, QueueName, QueueStats, QueueTotals, Refusal, Reservation, ReserveRequest,
    RetryDecision, StateCounts, Task, TaskFilter, TaskId, TaskState, Timestamp,
    limits as core_limits,
};
use redis::{RedisError, Script, Value};

use crate::codec::{self, Home, Marker, Record};
use crate::connection::{self, Connection, Source};
use crate::error::ConnectError;
use crate::health::{self, Health, NodeReport};
use crate::limits;
use crate::options::{Endpoint, Options, TimeSource};
use crate::registry::{QueueEntry, Registry};
use crate::scripts::SCRIPTS;
use crate::wake::{self, Wakers};

/// The `retry_after` hint of [`BrokerError::QueueFull`].
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The floodway broker on Redis (one server, Sentinel or Cluster). Cheap to clone; clones
/// share one connection. Dropping the last clone stops its background task.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use floodway_core::{Broker, NewTask, QueueName};
/// use floodway_redis::{Options, RedisBroker};
///
/// let broker = RedisBroker::connect("redis://127.0.0.1:6379", Options::default()).await?;
/// let queue = QueueName::new("emails")?;
/// let ids = broker
///     .enqueue(&queue, vec![NewTask::new("send_email", r#"{"to":"a@example.com"}"#)])
///     .await?;
/// println!("enqueued {}", ids[0].id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    conn: Connection,
    source: Source,
    endpoint: Endpoint,
    options: Options,
    /// The dataset marker found or made at connect; every script checks it.
    marker: Marker,
    /// `<prefix>:{registry}`.
    registry_key: String,
    registry: Registry,
    /// Set when Redis lost floodway's data; every later call fails with it.
    lost: Mutex<Option<String>>,
    wakers: Wakers,
    /// Spreads tasks without a key over a partitioned queue's shards, and the shard a
    /// partitioned reserve starts from.
    spread: AtomicUsize,
    /// Every primary's settings, as last inspected.
    nodes: Mutex<Vec<NodeReport>>,
    /// How fast each queue shard completes tasks, fed with the shard's completed total
    /// whenever an enqueue is refused as overloaded or stats are read; read for the
    /// `retry_after` of [`BrokerError::Overloaded`]. Holds at most
    /// [`limits::DRAIN_METERS_MAX`] shards; others get the meter's "unknown" hint.
    meters: Mutex<HashMap<(QueueName, u16), DrainMeter>>,
    maintenance: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .maintenance
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// What a shard script does when the shard's metadata is missing. (The scripts also know
/// 'a', answering `absent`; the broker asks only about queues the registry says exist.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Missing {
    /// Create it (creating a queue).
    Create,
    /// Fail: the registry says it exists, so Redis lost it.
    Lost,
}

impl Missing {
    fn arg(self) -> &'static [u8] {
        match self {
            Missing::Create => b"c",
            Missing::Lost => b"n",
        }
    }
}

/// One shard of a queue: where its keys are and what its task ids carry.
#[derive(Clone, Debug)]
struct Shard {
    queue: QueueName,
    home: Home,
    /// `<prefix>:{<queue>#<shard>}`: every key of the shard starts with it.
    key: String,
}

/// Script arguments.
#[derive(Default)]
struct Args(Vec<Vec<u8>>);

impl Args {
    fn push(&mut self, arg: impl AsRef<[u8]>) -> &mut Self {
        self.0.push(arg.as_ref().to_vec());
        self
    }

    fn num(&mut self, n: impl std::fmt::Display) -> &mut Self {
        self.0.push(n.to_string().into_bytes());
        self
    }
}

/// An array reply's items.
fn items(value: Value) -> Result<Vec<Value>, BrokerError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(value: &Value) -> BrokerError {
    BrokerError::Unavailable(format!("unexpected reply from Redis: {value:?}"))
}

fn as_int(value: &Value) -> Result<i64, BrokerError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| unexpected(value)),
        other => Err(unexpected(other)),
    }
}

fn as_bytes(value: &Value) -> Result<&[u8], BrokerError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        other => Err(unexpected(other)),
    }
}

fn as_text(value: &Value) -> Result<String, BrokerError> {
    connection::text(value).ok_or_else(|| unexpected(value))
}

fn status(items: &[Value]) -> Result<String, BrokerError> {
    items
        .first()
        .map(as_text)
        .unwrap_or_else(|| Err(BrokerError::Unavailable("empty reply from Redis".into())))
}

fn malformed(err: codec::Malformed) -> BrokerError {
    BrokerError::Unavailable(err.to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A per-item refusal from a script's (code, value) pair.
fn refusal(code: i64, value: i64, presented: Fence) -> Result<Refusal, BrokerError> {
    Ok(match code {
        1 => Refusal::UnknownTask,
        2 => Refusal::StaleFence {
            presented,
            current: Fence(value as u64),
        },
        3 => Refusal::LeaseExpired {
            expired_at: Timestamp::from_millis(value as u64),
        },
        4 => Refusal::WrongState {
            state: *TaskState::ALL
                .get(value as usize)
                .ok_or_else(|| BrokerError::Unavailable(format!("unknown state {value}")))?,
        },
        other => {
            return Err(BrokerError::Unavailable(format!(
                "unknown refusal code {other} from Redis"
            )));
        }
    })
}

impl RedisBroker {
    /// Connects to the Redis at `url` (see [`Endpoint`] for the forms), checks that it is fit
    /// to hold tasks (version 7 or later, `maxmemory-policy noeviction` unless
    /// [`Options::allow_eviction`]), logs what its persistence settings risk, finds or makes
    /// floodway's dataset marker, and starts the maintenance task if configured.
    ///
    /// Must be called within a tokio runtime; the broker's background tasks run on it.
    pub async fn connect(url: &str, options: Options) -> Result<RedisBroker, ConnectError> {
        let endpoint: Endpoint = url.parse()?;
        RedisBroker::connect_to(endpoint, options).await
    }

    /// Like [`RedisBroker::connect`], with the endpoint already parsed.
    pub async fn connect_to(
        endpoint: Endpoint,
        options: Options,
    ) -> Result<RedisBroker, ConnectError> {
        for (queue, shards) in &options.shards {
            if *shards == 0 || *shards > limits::SHARDS_MAX {
                return Err(ConnectError::Options(format!(
                    "shards of {queue}: {shards} is not between 1 and {}",
                    limits::SHARDS_MAX
                )));
            }
        }
        if options.prefix.is_empty() || options.prefix.contains(['{', '}']) {
            return Err(ConnectError::Options(format!(
                "prefix {:?} must be non-empty and free of braces",
                options.prefix
            )));
        }
        let redis_error = |source| ConnectError::Redis {
            endpoint: endpoint.to_string(),
            source,
        };
        let (conn, source) = tokio::time::timeout(
            options.connect_timeout,
            connection::connect(&endpoint, &options),
        )
        .await
        .map_err(|_| {
            redis_error(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting timed out",
            )))
        })?
        .map_err(redis_error)?;

        let nodes = health::inspect(&conn).await.map_err(redis_error)?;
        for node in &nodes {
            if !health::version_supported(&node.version) {
                return Err(ConnectError::Version {
                    node: node.node.clone(),
                    version: node.version.clone(),
                });
            }
            if let Some(policy) = &node.maxmemory_policy
                && policy != "noeviction"
                && !options.allow_eviction
            {
                return Err(ConnectError::Eviction {
                    node: node.node.clone(),
                    policy: policy.clone(),
                });
            }
        }
        for warning in health::warnings(&nodes) {
            tracing::warn!(endpoint = %endpoint, "{warning}");
        }
        for node in &nodes {
            if options.wait_aof && !node.has_waitaof {
                return Err(ConnectError::Unsupported {
                    node: node.node.clone(),
                    reason: format!(
                        "wait_aof needs WAITAOF (Redis 7.2 or later), this server is {}; use \
                         appendfsync always instead",
                        node.version
                    ),
                });
            }
            if options.wait_aof && node.appendonly == Some(false) {
                return Err(ConnectError::Unsupported {
                    node: node.node.clone(),
                    reason: "wait_aof needs appendonly yes".to_owned(),
                });
            }
            if options.wait_replicas > 0 && node.replicas.unwrap_or(0) < options.wait_replicas {
                tracing::warn!(
                    node = %node.node,
                    replicas = node.replicas,
                    wanted = options.wait_replicas,
                    "fewer replicas connected than wait_replicas asks for: changes will fail \
                     until they connect"
                );
            }
        }

        let registry_key = format!("{}:{{registry}}", options.prefix);
        let mut args = Args::default();
        args.push("open")
            .push(if options.create_if_missing { "1" } else { "0" })
            .push(Marker::random().id);
        let reply = conn
            .script(&SCRIPTS.registry, &registry_key, args.0)
            .await
            .map_err(redis_error)?;
        let Value::Array(reply) = reply else {
            return Err(ConnectError::Malformed(codec::Malformed {
                what: "registry reply",
                reason: format!("{reply:?}"),
            }));
        };
        let marker = match (
            reply.first().and_then(connection::text).as_deref(),
            reply.get(1),
        ) {
            (Some("ok"), Some(id)) => Marker::parse(&connection::text(id).unwrap_or_default())?,
            _ => {
                return Err(ConnectError::MissingDataset {
                    prefix: options.prefix.clone(),
                });
            }
        };
        tracing::info!(
            endpoint = %endpoint,
            dataset = %marker,
            nodes = nodes.len(),
            time = ?options.time,
            "Redis broker connected"
        );

        let inner = Arc::new(Inner {
            conn,
            source,
            endpoint,
            marker,
            registry_key,
            registry: Registry::default(),
            lost: Mutex::new(None),
            wakers: Wakers::default(),
            spread: AtomicUsize::new(0),
            nodes: Mutex::new(nodes),
            meters: Mutex::new(HashMap::new()),
            maintenance: Mutex::new(None),
            options,
        });
        if let Some(interval) = inner.options.maintenance_interval {
            let task = tokio::spawn(maintain(Arc::downgrade(&inner), interval));
            *inner.maintenance.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(task.abort_handle());
        }
        Ok(RedisBroker { inner })
    }

    /// Checks the broker now: Redis answers, floodway's dataset marker is the one found at
    /// connect, and (warnings) every primary's eviction and persistence settings.
    pub async fn health(&self) -> Health {
        let mut problems = Vec::new();
        if let Err(err) = self.ping().await {
            problems.push(err.to_string());
        }
        let nodes = match health::inspect(&self.inner.conn).await {
            Ok(nodes) => {
                *self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner()) = nodes.clone();
                nodes
            }
            Err(err) => {
                problems.push(format!("cannot inspect Redis: {err}"));
                self.inner
                    .nodes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            }
        };
        let healthy = problems.is_empty();
        problems.extend(health::warnings(&nodes));
        Health {
            healthy,
            problems,
            nodes,
        }
    }

    /// Deletes every key under this broker's prefix: every queue, task and dead letter, the
    /// registry and the dataset marker. Irreversible; meant for tests and benchmarks that made
    /// a prefix of their own. Answers how many keys it deleted. The broker is unusable after.
    pub async fn delete_dataset(self) -> Result<u64, BrokerError> {
        let inner = &self.inner;
        let keys = inner
            .conn
            .scan(&format!("{}:{{*", inner.options.prefix))
            .await
            .map_err(|err| inner.error(err))?;
        for key in &keys {
            let mut cmd = redis::cmd("UNLINK");
            cmd.arg(key);
            inner.conn.cmd(&cmd).await.map_err(|err| inner.error(err))?;
        }
        *inner.lost.lock().unwrap_or_else(|p| p.into_inner()) =
            Some("this broker deleted its dataset".to_owned());
        Ok(keys.len() as u64)
    }

    /// Where the broker is connected (passwords redacted).
    pub fn endpoint(&self) -> String {
        self.inner.endpoint.to_string()
    }
}

impl Inner {
    fn check_open(&self) -> Result<(), BrokerError> {
        match &*self.lost.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(reason) => Err(BrokerError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }

    fn mark_lost(&self, reason: &str) -> BrokerError {
        let message = format!(
            "floodway's data in Redis is gone or replaced ({reason}); refusing to serve until \
             an operator restores Redis or reconnects deliberately"
        );
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if lost.is_none() {
            tracing::error!(endpoint = %self.endpoint, "{message}");
            *lost = Some(message.clone());
        }
        BrokerError::Unavailable(lost.clone().unwrap_or(message))
    }

    fn error(&self, err: RedisError) -> BrokerError {
        if err.code() == Some("FLOODWAY_LOST") {
            return self.mark_lost(err.detail().unwrap_or("marker mismatch"));
        }
        if err.code() == Some("OOM") {
            return BrokerError::Unavailable(format!(
                "Redis is out of memory (maxmemory reached): {err}"
            ));
        }
        if err.is_timeout() {
            return BrokerError::Unavailable(format!(
                "Redis did not answer within {:?}; the call may or may not have taken effect",
                self.options.command_timeout
            ));
        }
        BrokerError::Unavailable(format!("Redis: {err}"))
    }

    fn now_arg(&self) -> Vec<u8> {
        match &self.options.time {
            TimeSource::Server => Vec::new(),
            TimeSource::Injected(clock) => clock.now().as_millis().to_string().into_bytes(),
        }
    }

    /// Runs a shard script with the common arguments in front; answers the reply's items.
    async fn run(
        &self,
        script: &Script,
        shard_key: &str,
        missing: Missing,
        args: Args,
    ) -> Result<Vec<Value>, BrokerError> {
        let mut all = Vec::with_capacity(args.0.len() + 3);
        all.push(self.marker.id.as_bytes().to_vec());
        all.push(missing.arg().to_vec());
        all.push(self.now_arg());
        all.extend(args.0);
        let reply = self
            .conn
            .script(script, shard_key, all)
            .await
            .map_err(|err| self.error(err))?;
        // Reservations are never waited for (the contract lets them be answered before they
        // are durable; epochs keep their fences safe), nor are reads.
        let reads = [
            &SCRIPTS.reserve,
            &SCRIPTS.stats,
            &SCRIPTS.list,
            &SCRIPTS.get,
            &SCRIPTS.dead,
        ];
        if !reads.iter().any(|read| std::ptr::eq(*read, script)) {
            self.settle(shard_key).await?;
        }
        items(reply)
    }

    /// Waits, as the options ask, until the writes made so far on `shard_key`'s connection are
    /// on enough replicas (`WAIT`) or in the primary's fsynced AOF (`WAITAOF`).
    async fn settle(&self, shard_key: &str) -> Result<(), BrokerError> {
        let (replicas, aof) = (self.options.wait_replicas, self.options.wait_aof);
        if replicas == 0 && !aof {
            return Ok(());
        }
        let timeout = millis(self.options.wait_timeout);
        let mut cmd = redis::cmd(if aof { "WAITAOF" } else { "WAIT" });
        if aof {
            cmd.arg(1);
        }
        cmd.arg(replicas).arg(timeout);
        let reply = self
            .conn
            .on_node_of(shard_key, cmd)
            .await
            .map_err(|err| self.error(err))?;
        let (local, copies) = match &reply {
            Value::Int(n) => (1, *n),
            Value::Array(pair) if pair.len() == 2 => (as_int(&pair[0])?, as_int(&pair[1])?),
            other => return Err(unexpected(other)),
        };
        if local < 1 || copies < i64::from(replicas) {
            return Err(BrokerError::Unavailable(format!(
                "the change is on the primary, but within {:?} {} (retrying with idempotency \
                 keys is safe)",
                self.options.wait_timeout,
                if local < 1 {
                    "its append-only file was not fsynced".to_owned()
                } else {
                    format!("only {copies} of {replicas} replicas confirmed it")
                }
            )));
        }
        Ok(())
    }

    async fn registry_op(&self, args: Args) -> Result<Vec<Value>, BrokerError> {
        let reply = self
            .conn
            .script(&SCRIPTS.registry, &self.registry_key, args.0)
            .await
            .map_err(|err| self.error(err))?;
        items(reply)
    }

    fn shard(&self, queue: &QueueName, entry: QueueEntry, shard: u16) -> Shard {
        Shard {
            queue: queue.clone(),
            home: Home {
                number: entry.number,
                shard,
            },
            key: format!("{}:{{{}#{}}}", self.options.prefix, queue, shard),
        }
    }

    fn shards(&self, queue: &QueueName, entry: QueueEntry) -> Vec<Shard> {
        (0..entry.shards)
            .map(|s| self.shard(queue, entry, s))
            .collect()
    }

    /// The registry's entry for `queue`, from the cache or Redis.
    async fn lookup(&self, queue: &QueueName) -> Result<Option<QueueEntry>, BrokerError> {
        if let Some(entry) = self.registry.entry(queue).filter(|e| e.created) {
            return Ok(Some(entry));
        }
        let mut cmd = redis::cmd("HGET");
        cmd.arg(format!("{}:queues", self.registry_key))
            .arg(queue.as_str());
        let reply = self.conn.cmd(&cmd).await.map_err(|err| self.error(err))?;
        let entry = match reply {
            Value::Nil => return Ok(None),
            other => QueueEntry::parse(&as_text(&other)?).ok_or_else(|| unexpected(&other))?,
        };
        self.registry.remember(queue, entry);
        Ok(Some(entry))
    }

    /// The name of queue `number`, from the cache or Redis.
    async fn queue_named(&self, number: u16) -> Result<Option<QueueName>, BrokerError> {
        if let Some(name) = self.registry.name(number) {
            return Ok(Some(name));
        }
        let mut cmd = redis::cmd("HGET");
        cmd.arg(format!("{}:numbers", self.registry_key))
            .arg(number);
        match self.conn.cmd(&cmd).await.map_err(|err| self.error(err))? {
            Value::Nil => Ok(None),
            other => {
                let name = QueueName::new(&as_text(&other)?)?;
                if self.lookup(&name).await?.is_none() {
                    return Ok(None);
                }
                Ok(Some(name))
            }
        }
    }

    /// Every created queue in the registry, by name.
    async fn all_queues(&self) -> Result<Vec<(QueueName, QueueEntry)>, BrokerError> {
        let mut args = Args::default();
        args.push("list");
        let reply = self.registry_op(args).await?;
        let mut out = Vec::new();
        for pair in reply[1..].chunks(2) {
            let [name, entry] = pair else {
                return Err(BrokerError::Unavailable("odd registry listing".into()));
            };
            let name = QueueName::new(&as_text(name)?)?;
            let entry = QueueEntry::parse(&as_text(entry)?).ok_or_else(|| unexpected(entry))?;
            self.registry.remember(&name, entry);
            if entry.created {
                out.push((name, entry));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The queue's entry, registering and creating the queue (with `config`) if needed.
    async fn ensure(
        &self,
        queue: &QueueName,
        config: &QueueConfig,
    ) -> Result<QueueEntry, BrokerError> {
        if let Some(entry) = self.lookup(queue).await?
            && entry.created
        {
            return Ok(entry);
        }
        let shards = self.options.shards.get(queue).copied().unwrap_or(1);
        let mut args = Args::default();
        args.push("register")
            .push(&self.marker.id)
            .push(queue.as_str())
            .num(shards)
            .num(core_limits::QUEUES_MAX);
        let reply = self.registry_op(args).await?;
        match status(&reply)?.as_str() {
            "ok" => {}
            "limit" => {
                return Err(BrokerError::LimitReached(format!(
                    "a broker holds at most {} queues",
                    core_limits::QUEUES_MAX
                )));
            }
            _ => return Err(unexpected(&Value::Array(reply))),
        }
        let entry = QueueEntry {
            number: u16::try_from(as_int(&reply[1])?).map_err(|_| unexpected(&reply[1]))?,
            shards: u16::try_from(as_int(&reply[2])?).map_err(|_| unexpected(&reply[2]))?,
            created: as_int(&reply[3])? == 1,
        };
        if entry.shards != shards {
            tracing::warn!(
                %queue,
                configured = shards,
                actual = entry.shards,
                "the queue was created with another shard count, which stays in force"
            );
        }
        if !entry.created {
            for shard in self.shards(queue, entry) {
                let mut args = Args::default();
                for field in codec::encode_config(config) {
                    args.push(field);
                }
                self.run(&SCRIPTS.create, &shard.key, Missing::Create, args)
                    .await?;
            }
            let mut args = Args::default();
            args.push("created")
                .push(&self.marker.id)
                .push(queue.as_str());
            self.registry_op(args).await?;
        }
        let entry = QueueEntry {
            created: true,
            ..entry
        };
        self.registry.remember(queue, entry);
        Ok(entry)
    }

    /// The shard holding `id`, with the id's tid; `None` for ids of no queue here.
    async fn locate(&self, id: TaskId) -> Result<Option<(Shard, String)>, BrokerError> {
        let Some((home, salt, tid)) = codec::split_id(id) else {
            return Ok(None);
        };
        if salt != self.marker.salt {
            return Ok(None);
        }
        let Some(queue) = self.queue_named(home.number).await? else {
            return Ok(None);
        };
        let Some(entry) = self.lookup(&queue).await?.filter(|e| e.created) else {
            return Ok(None);
        };
        if home.shard >= entry.shards {
            return Ok(None);
        }
        Ok(Some((self.shard(&queue, entry, home.shard), tid)))
    }

    /// Groups items by the shard holding their task; answers the groups (items as (index,
    /// tid)) and the indexes of items naming no task here.
    async fn group(
        &self,
        ids: impl Iterator<Item = TaskId>,
    ) -> Result<(Vec<(Shard, Vec<(usize, String)>)>, Vec<usize>), BrokerError> {
        let mut groups: Vec<(Shard, Vec<(usize, String)>)> = Vec::new();
        let mut index_of: HashMap<Home, usize> = HashMap::new();
        let mut unknown = Vec::new();
        for (index, id) in ids.enumerate() {
            match self.locate(id).await? {
                None => unknown.push(index),
                Some((shard, tid)) => {
                    let slot = *index_of.entry(shard.home).or_insert_with(|| {
                        groups.push((shard.clone(), Vec::new()));
                        groups.len() - 1
                    });
                    groups[slot].1.push((index, tid));
                }
            }
        }
        Ok((groups, unknown))
    }

    fn task(&self, shard: &Shard, tid: &[u8], record: &[u8]) -> Result<Task, BrokerError> {
        let id = codec::task_id(shard.home, self.marker.salt, tid).map_err(malformed)?;
        Record::decode(record)
            .and_then(|record| record.into_task(id, shard.queue.clone()))
            .map_err(malformed)
    }

    /// Decodes `tid, record, ...` pairs.
    fn tasks(&self, shard: &Shard, pairs: &[Value]) -> Result<Vec<Task>, BrokerError> {
        pairs
            .chunks(2)
            .map(|pair| match pair {
                [tid, record] => self.task(shard, as_bytes(tid)?, as_bytes(record)?),
                _ => Err(BrokerError::Unavailable("odd task listing".into())),
            })
            .collect()
    }

    /// Runs a lease operation: one script per shard with `per_item` arguments for each lease,
    /// then `decide` turns each (code, value) into the item's result.
    async fn lease_op<T>(
        &self,
        script: &Script,
        leases: &[LeaseRef],
        mut head: impl FnMut(&mut Args),
        mut per_item: impl FnMut(&mut Args, usize, &str),
        decide: impl Fn(usize, i64, i64) -> Result<Result<T, Refusal>, BrokerError>,
    ) -> Result<Vec<Result<T, Refusal>>, BrokerError> {
        let mut results: Vec<Option<Result<T, Refusal>>> =
            (0..leases.len()).map(|_| None).collect();
        let (groups, unknown) = self.group(leases.iter().map(|l| l.task_id)).await?;
        for index in unknown {
            results[index] = Some(Err(Refusal::UnknownTask));
        }
        for (shard, members) in groups {
            let mut args = Args::default();
            head(&mut args);
            for (index, tid) in &members {
                per_item(&mut args, *index, tid);
            }
            let reply = self.run(script, &shard.key, Missing::Lost, args).await?;
            let codes = &reply[1..];
            if codes.is_empty() {
                // Every item succeeded with value 0 (ack's short answer).
                for (index, _) in &members {
                    results[*index] = Some(decide(*index, 0, 0)?);
                }
            } else {
                if codes.len() != members.len() * 2 {
                    return Err(unexpected(&Value::Array(reply)));
                }
                for ((index, _), pair) in members.iter().zip(codes.chunks(2)) {
                    let (code, value) = (as_int(&pair[0])?, as_int(&pair[1])?);
                    results[*index] = Some(decide(*index, code, value)?);
                }
            }
            self.wakers.notify(&shard.queue);
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every item is answered"))
            .collect())
    }

    /// Reserves from the queue's shards once, without waiting. Answers the reservations and
    /// when (on the broker's clock, relative to its now) something may next become ready.
    ///
    /// `last` says whether the caller returns whatever this look finds (no wait, or the wait
    /// is over): only then may a look that finds nothing count the queue as throttled, so
    /// that a waiting reserve counts once, at its end, and not on every look.
    async fn reserve_once(
        &self,
        request: &ReserveRequest,
        entry: QueueEntry,
        last: bool,
    ) -> Result<(Vec<Reservation>, Option<Duration>), BrokerError> {
        let shards = self.shards(&request.queue, entry);
        let start = if shards.len() > 1 {
            self.spread.fetch_add(1, Ordering::Relaxed) % shards.len()
        } else {
            0
        };
        let mut reserved = Vec::new();
        let mut soonest: Option<Duration> = None;
        // Set once a shard counted the queue throttled: a call counts once.
        let mut counted = false;
        for offset in 0..shards.len() {
            let want = request.max - reserved.len();
            if want == 0 {
                break;
            }
            let shard = &shards[(start + offset) % shards.len()];
            let mut args = Args::default();
            args.num(want)
                .num(millis(request.lease))
                .push(match &request.worker {
                    None => Vec::new(),
                    Some(worker) => [b"+", worker.as_bytes()].concat(),
                })
                .num(self.options.housekeeping_batch)
                .num(entry.shards)
                .push(match (counted, last) {
                    (true, _) => "-",
                    (false, true) => "1",
                    (false, false) => "0",
                });
            let reply = self
                .run(&SCRIPTS.reserve, &shard.key, Missing::Lost, args)
                .await?;
            if status(&reply)? != "ok" {
                continue;
            }
            if reply.len() < 4 {
                return Err(unexpected(&Value::Array(reply)));
            }
            let now = as_int(&reply[1])?;
            let next = as_int(&reply[2])?;
            counted |= as_int(&reply[3])? == 1;
            if next >= 0 {
                let wait = Duration::from_millis(next.saturating_sub(now).max(0) as u64);
                soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
            }
            for task in self.tasks(shard, &reply[4..])? {
                let lease = Lease {
                    task_id: task.id,
                    fence: task.fence,
                    expires_at: task.lease_expires_at.ok_or_else(|| {
                        BrokerError::Unavailable("reserved without a lease".into())
                    })?,
                };
                reserved.push(Reservation { task, lease });
            }
        }
        Ok((reserved, soonest))
    }

    async fn housekeeping(&self, what: &str) -> Result<u64, BrokerError> {
        let mut moved = 0;
        for (queue, entry) in self.all_queues().await? {
            let mut queue_moved = 0;
            for shard in self.shards(&queue, entry) {
                for _ in 0..limits::HOUSEKEEPING_STEPS_MAX {
                    let mut args = Args::default();
                    args.push(what).num(self.options.housekeeping_batch);
                    let reply = self
                        .run(&SCRIPTS.housekeeping, &shard.key, Missing::Lost, args)
                        .await?;
                    if status(&reply)? != "ok" {
                        break;
                    }
                    queue_moved += as_int(&reply[1])? as u64;
                    if as_int(&reply[2])? == 0 {
                        break;
                    }
                }
            }
            if queue_moved > 0 {
                self.wakers.notify(&queue);
            }
            moved += queue_moved;
        }
        Ok(moved)
    }

    async fn stats_of(
        &self,
        queue: &QueueName,
        entry: QueueEntry,
    ) -> Result<Option<QueueStats>, BrokerError> {
        /// Values before the configuration in the stats script's answer: status, now,
        /// earliest ready run-at, refusing.
        const HEAD: usize = 4;
        /// Counters after the configuration: seven state counts, 20 totals, the start
        /// latency's buckets and its sum.
        const COUNTERS: usize = 7 + 20 + LATENCY_BUCKETS + 1;
        let mut total: Option<QueueStats> = None;
        for shard in self.shards(queue, entry) {
            let mut args = Args::default();
            args.num(entry.shards);
            let reply = self
                .run(&SCRIPTS.stats, &shard.key, Missing::Lost, args)
                .await?;
            if status(&reply)? != "ok" {
                return Ok(None);
            }
            if reply.len() != HEAD + codec::CONFIG_FIELDS + COUNTERS {
                return Err(unexpected(&Value::Array(reply)));
            }
            let now = as_int(&reply[1])?;
            let earliest = as_int(&reply[2])?;
            let refusing = as_int(&reply[3])? == 1;
            let fields: Vec<String> = reply[HEAD..]
                .iter()
                .map(as_text)
                .collect::<Result<_, _>>()?;
            let (config, counters) = fields.split_at(codec::CONFIG_FIELDS);
            let config: Vec<&str> = config.iter().map(String::as_str).collect();
            let config = codec::decode_config(&config).map_err(malformed)?;
            let mut counters = counters.iter().map(|text| {
                text.parse::<u64>()
                    .map_err(|_| BrokerError::Unavailable(format!("bad counter {text:?}")))
            });
            let mut n = || counters.next().expect("counted above");
            let counts = StateCounts {
                scheduled: n()?,
                ready: n()?,
                active: n()?,
                retrying: n()?,
                completed: n()?,
                dead: n()?,
                cancelled: n()?,
            };
            let totals = QueueTotals {
                enqueued: n()?,
                deduplicated: n()?,
                rejected_full: n()?,
                reserved: n()?,
                completed: n()?,
                retried: n()?,
                released: n()?,
                leases_expired: n()?,
                dead: DeadCounts {
                    max_attempts: n()?,
                    expired: n()?,
                    overflow: n()?,
                    permanent_failure: n()?,
                },
                dead_dropped: n()?,
                replayed: n()?,
                cancelled: n()?,
                stale_refused: n()?,
                rejected_overloaded: n()?,
                throttled_rate: n()?,
                throttled_concurrency: n()?,
                effects_recorded: n()?,
            };
            let mut start_latency = LatencyHistogram::default();
            for count in &mut start_latency.counts {
                *count = n()?;
            }
            start_latency.sum = Duration::from_millis(n()?);
            self.observe_drain(queue, shard.home.shard, now, totals.completed);
            let age = (earliest >= 0)
                .then(|| Duration::from_millis(now.saturating_sub(earliest).max(0) as u64));
            let stats = QueueStats {
                queue: queue.clone(),
                config,
                counts,
                totals,
                oldest_ready_age: age,
                refusing,
                start_latency,
            };
            total = Some(match total {
                None => stats,
                Some(sum) => add_stats(sum, stats),
            });
        }
        Ok(total)
    }

    /// Feeds a queue shard's drain meter with its completed total at `now` (the broker's
    /// clock, in ms); answers the meter's hint for working off `backlog` tasks.
    fn observe_drain(&self, queue: &QueueName, shard: u16, now: i64, completed: u64) -> DrainMeter {
        let mut meters = self.meters.lock().unwrap_or_else(|p| p.into_inner());
        let key = (queue.clone(), shard);
        if !meters.contains_key(&key) && meters.len() >= limits::DRAIN_METERS_MAX {
            return DrainMeter::new();
        }
        let meter = meters.entry(key).or_default();
        meter.observe(Duration::from_millis(now.max(0) as u64), completed);
        meter.clone()
    }

    /// The dead letters a selector picks, oldest first.
    async fn select_dead(&self, selector: &DeadSelector) -> Result<Vec<TaskId>, BrokerError> {
        selector.validate()?;
        match selector {
            DeadSelector::Ids(ids) => Ok(ids.clone()),
            DeadSelector::Matching {
                queue,
                reason,
                limit,
            } => {
                let queues = match queue {
                    Some(queue) => match self.lookup(queue).await?.filter(|e| e.created) {
                        Some(entry) => vec![(queue.clone(), entry)],
                        None => Vec::new(),
                    },
                    None => self.all_queues().await?,
                };
                let mut picked = Vec::new();
                for (queue, entry) in queues {
                    for shard in self.shards(&queue, entry) {
                        let mut args = Args::default();
                        args.num(reason.map_or(0, codec::reason_code)).num(limit);
                        let reply = self
                            .run(&SCRIPTS.dead, &shard.key, Missing::Lost, args)
                            .await?;
                        for tid in &reply[1..] {
                            picked.push(
                                codec::task_id(shard.home, self.marker.salt, as_bytes(tid)?)
                                    .map_err(malformed)?,
                            );
                        }
                    }
                }
                picked.sort_unstable();
                picked.truncate(*limit);
                Ok(picked)
            }
        }
    }

    /// Runs replay or purge on the dead letters `selector` picks; answers how many it moved.
    async fn on_dead(&self, script: &Script, selector: DeadSelector) -> Result<u64, BrokerError> {
        let ids = self.select_dead(&selector).await?;
        let (groups, _) = self.group(ids.into_iter()).await?;
        let mut moved = 0;
        for (shard, mut members) in groups {
            members.sort_by(|a, b| a.1.cmp(&b.1));
            members.dedup_by(|a, b| a.1 == b.1);
            let mut args = Args::default();
            for (_, tid) in &members {
                args.push(tid);
            }
            let reply = self.run(script, &shard.key, Missing::Lost, args).await?;
            moved += as_int(reply.get(1).ok_or_else(|| unexpected(&Value::Nil))?)? as u64;
            self.wakers.notify(&shard.queue);
        }
        Ok(moved)
    }
}

/// The statistics of two shards of one queue together.
fn add_stats(mut sum: QueueStats, other: QueueStats) -> QueueStats {
    for state in TaskState::ALL {
        *sum.counts.get_mut(state) += other.counts.get(state);
    }
    let (a, b) = (&mut sum.totals, other.totals);
    a.enqueued += b.enqueued;
    a.deduplicated += b.deduplicated;
    a.rejected_full += b.rejected_full;
    a.reserved += b.reserved;
    a.completed += b.completed;
    a.retried += b.retried;
    a.released += b.released;
    a.leases_expired += b.leases_expired;
    for reason in floodway_core::DeadReason::ALL {
        *a.dead.get_mut(reason) += b.dead.get(reason);
    }
    a.dead_dropped += b.dead_dropped;
    a.replayed += b.replayed;
    a.cancelled += b.cancelled;
    a.stale_refused += b.stale_refused;
    a.rejected_overloaded += b.rejected_overloaded;
    a.throttled_rate += b.throttled_rate;
    a.throttled_concurrency += b.throttled_concurrency;
    a.effects_recorded += b.effects_recorded;
    sum.refusing |= other.refusing;
    sum.start_latency.merge(&other.start_latency);
    sum.oldest_ready_age = match (sum.oldest_ready_age, other.oldest_ready_age) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    sum
}

/// The error of an effects script that refused the call as a whole: a task would hold more
/// than [`core_limits::EFFECTS_MAX`] effects.
fn too_many_effects(reply: &[Value]) -> Result<(), BrokerError> {
    match status(reply)?.as_str() {
        "ok" => Ok(()),
        "invalid" => Err(BrokerError::invalid(
            "effects",
            format!(
                "a task may hold at most {} effects; this call would give one {}",
                core_limits::EFFECTS_MAX,
                reply.get(2).map(as_int).transpose()?.unwrap_or_default()
            ),
        )),
        _ => Err(unexpected(&Value::Array(reply.to_vec()))),
    }
}

/// Stable FNV-1a, to choose a key's shard the same way in every process and version.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The arguments of one new task for `enqueue.lua`: its body and its options.
fn task_args(args: &mut Args, task: &NewTask) {
    args.push(codec::encode_body(
        &task.kind,
        &task.headers,
        task.timeout,
        &task.payload,
    ))
    .push(codec::encode_options(task));
}

impl Broker for RedisBroker {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn enqueue(
        &self,
        queue: &QueueName,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Enqueued>, BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        validate_batch(tasks.len())?;
        for task in &tasks {
            task.validate()?;
        }
        let entry = inner.ensure(queue, &QueueConfig::default()).await?;
        // Which shard takes each task: its partition key's, else its limit key's (so that a
        // key's rate and concurrency are counted in one place), else its idempotency key's (so
        // that a key always meets its earlier use), else the next in turn.
        let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); usize::from(entry.shards)];
        for (index, task) in tasks.iter().enumerate() {
            let shard = if entry.shards == 1 {
                0
            } else if let Some(key) = task
                .partition_key
                .as_ref()
                .or(task.limit_key.as_ref())
                .or(task.idempotency_key.as_ref())
            {
                (fnv1a(key.as_bytes()) % u64::from(entry.shards)) as usize
            } else {
                inner.spread.fetch_add(1, Ordering::Relaxed) % usize::from(entry.shards)
            };
            per_shard[shard].push(index);
        }
        let mut answers: Vec<Option<Enqueued>> = vec![None; tasks.len()];
        for (number, members) in per_shard.iter().enumerate() {
            if members.is_empty() && !(tasks.is_empty() && number == 0) {
                continue;
            }
            let shard = inner.shard(queue, entry, number as u16);
            let mut args = Args::default();
            for field in codec::encode_config(&QueueConfig::default()) {
                args.push(field);
            }
            args.num(core_limits::QUEUE_LENGTH_MAX)
                .num(entry.shards)
                .num(members.len());
            for index in members {
                task_args(&mut args, &tasks[*index]);
            }
            let reply = inner
                .run(&SCRIPTS.enqueue, &shard.key, Missing::Lost, args)
                .await?;
            match status(&reply)?.as_str() {
                "ok" => {}
                "overloaded" => {
                    let [_, length, high, low, completed, now] = &reply[..] else {
                        return Err(unexpected(&Value::Array(reply)));
                    };
                    let (length, low) = (as_int(length)? as u64, as_int(low)? as u64);
                    let meter = inner.observe_drain(
                        queue,
                        shard.home.shard,
                        as_int(now)?,
                        as_int(completed)? as u64,
                    );
                    return Err(BrokerError::Overloaded {
                        queue: queue.clone(),
                        length,
                        high: as_int(high)? as u64,
                        low,
                        retry_after: meter.time_to_drain(length.saturating_sub(low)),
                    });
                }
                "full" => {
                    return Err(BrokerError::QueueFull {
                        queue: queue.clone(),
                        length: as_int(&reply[1])? as u64,
                        max: as_int(&reply[2])? as u64,
                        retry_after: RETRY_AFTER,
                    });
                }
                "invalid" => {
                    return Err(BrokerError::invalid(
                        "tasks",
                        format!(
                            "{} new tasks can never fit in a queue whose length_max is {}",
                            as_int(&reply[1])?,
                            as_int(&reply[2])?
                        ),
                    ));
                }
                _ => return Err(unexpected(&Value::Array(reply))),
            }
            let (Some(duplicates), Some(first)) = (reply.get(1), reply.get(2)) else {
                return Err(unexpected(&Value::Array(reply)));
            };
            let duplicates = as_bytes(duplicates)?;
            let pointed = &reply[3..];
            if duplicates.len() != members.len()
                || pointed.len() != duplicates.iter().filter(|d| **d == b'1').count()
            {
                return Err(unexpected(&Value::Array(reply)));
            }
            // New tasks' tids count up from the first; duplicates name theirs.
            let mut new_tids = codec::tids_from(as_bytes(first)?).map_err(malformed)?;
            let mut pointed = pointed.iter();
            for (index, duplicate) in members.iter().zip(duplicates) {
                let (tid, duplicate) = match duplicate {
                    b'1' => (
                        as_bytes(pointed.next().expect("counted above"))?.to_vec(),
                        true,
                    ),
                    _ => (
                        new_tids
                            .next()
                            .ok_or_else(|| unexpected(&Value::Nil))?
                            .into_bytes(),
                        false,
                    ),
                };
                answers[*index] = Some(Enqueued {
                    id: codec::task_id(shard.home, inner.marker.salt, &tid).map_err(malformed)?,
                    duplicate,
                });
            }
        }
        inner.wakers.notify(queue);
        Ok(answers
            .into_iter()
            .map(|a| a.expect("every task is answered"))
            .collect())
    }

    async fn reserve(&self, request: ReserveRequest) -> Result<Vec<Reservation>, BrokerError> {
        let inner = &self.inner;
        request.validate()?;
        inner.check_open()?;
        let deadline = tokio::time::Instant::now() + request.wait;
        let waker = inner.wakers.get(&request.queue);
        let mut waiting = None;
        loop {
            // Listen before looking, so a wake-up between the look and the wait is not lost.
            let notified = waker.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let entry = inner.lookup(&request.queue).await?.filter(|e| e.created);
            // The look at or after the deadline is the last; one that finds nothing before it
            // is followed by another (at the deadline at the latest).
            let last = request.wait.is_zero() || tokio::time::Instant::now() >= deadline;
            let (reserved, soonest) = match entry {
                Some(entry) => inner.reserve_once(&request, entry, last).await?,
                None => (Vec::new(), None),
            };
            let now = tokio::time::Instant::now();
            if !reserved.is_empty() || last {
                return Ok(reserved);
            }
            if waiting.is_none() {
                let streams: Vec<String> = match entry {
                    Some(entry) => inner
                        .shards(&request.queue, entry)
                        .into_iter()
                        .map(|s| format!("{}:e", s.key))
                        .collect(),
                    None => Vec::new(),
                };
                let weak = Arc::downgrade(&self.inner);
                waiting = Some(inner.wakers.wait(&waker, &streams, |stream, waker, slot| {
                    tokio::spawn(wake::watch(weak.clone(), stream, waker, slot));
                }));
            }
            let mut until = deadline.min(now + limits::REPOLL_MAX);
            if let Some(soonest) = soonest {
                until = until.min(now + soonest.max(Duration::from_millis(1)));
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        self.inner.check_open()?;
        validate_batch(leases.len())?;
        self.inner
            .lease_op(
                &SCRIPTS.ack,
                leases,
                |_| {},
                |args, index, tid| {
                    args.push(tid).num(leases[index].fence.0);
                },
                |index, code, value| {
                    Ok(match code {
                        0 => Ok(()),
                        _ => Err(refusal(code, value, leases[index].fence)?),
                    })
                },
            )
            .await
    }

    async fn fail(
        &self,
        failures: Vec<Failure>,
    ) -> Result<Vec<Result<FailOutcome, Refusal>>, BrokerError> {
        self.inner.check_open()?;
        validate_batch(failures.len())?;
        let leases: Vec<LeaseRef> = failures.iter().map(|f| f.lease).collect();
        self.inner
            .lease_op(
                &SCRIPTS.fail,
                &leases,
                |_| {},
                |args, index, tid| {
                    let failure = &failures[index];
                    args.push(tid)
                        .num(failure.lease.fence.0)
                        .push(truncate_error(&failure.error))
                        .push(match failure.retry {
                            RetryDecision::Backoff => "b".to_owned(),
                            RetryDecision::After(wait) => {
                                format!("a{}", millis(wait.min(core_limits::SCHEDULE_HORIZON_MAX)))
                            }
                            RetryDecision::Never => "n".to_owned(),
                        })
                        .num(fastrand::f64());
                },
                |index, code, value| {
                    Ok(match code {
                        0 => Ok(FailOutcome::Retrying {
                            run_at: Timestamp::from_millis(value as u64),
                        }),
                        5 => Ok(FailOutcome::Dead {
                            reason: codec::reason_of(value as u64)
                                .map_err(malformed)?
                                .ok_or_else(|| {
                                    BrokerError::Unavailable("dead without reason".into())
                                })?,
                        }),
                        _ => Err(refusal(code, value, leases[index].fence)?),
                    })
                },
            )
            .await
    }

    async fn extend(
        &self,
        leases: &[LeaseRef],
        duration: Duration,
    ) -> Result<Vec<Result<Lease, Refusal>>, BrokerError> {
        self.inner.check_open()?;
        validate_batch(leases.len())?;
        validate_lease_duration(duration)?;
        self.inner
            .lease_op(
                &SCRIPTS.extend,
                leases,
                |args| {
                    args.num(millis(duration));
                },
                |args, index, tid| {
                    args.push(tid).num(leases[index].fence.0);
                },
                |index, code, value| {
                    let lease = leases[index];
                    Ok(match code {
                        0 => Ok(Lease {
                            task_id: lease.task_id,
                            fence: lease.fence,
                            expires_at: Timestamp::from_millis(value as u64),
                        }),
                        _ => Err(refusal(code, value, lease.fence)?),
                    })
                },
            )
            .await
    }

    async fn release(&self, leases: &[LeaseRef]) -> Result<LeaseResults, BrokerError> {
        self.inner.check_open()?;
        validate_batch(leases.len())?;
        self.inner
            .lease_op(
                &SCRIPTS.release,
                leases,
                |_| {},
                |args, index, tid| {
                    args.push(tid).num(leases[index].fence.0);
                },
                |index, code, value| {
                    Ok(match code {
                        0 => Ok(()),
                        _ => Err(refusal(code, value, leases[index].fence)?),
                    })
                },
            )
            .await
    }

    async fn record_effects(
        &self,
        effects: Vec<EffectRecord>,
    ) -> Result<LeaseResults, BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        validate_batch(effects.len())?;
        for effect in &effects {
            effect.validate()?;
        }
        let (groups, unknown) = inner.group(effects.iter().map(|e| e.lease.task_id)).await?;
        let mut results: Vec<Option<Result<(), Refusal>>> = vec![None; effects.len()];
        for index in unknown {
            results[index] = Some(Err(Refusal::UnknownTask));
        }
        let args_of = |mode: &str, members: &[(usize, String)]| {
            let mut args = Args::default();
            args.push(mode).num(core_limits::EFFECTS_MAX);
            for (index, tid) in members {
                let effect = &effects[*index];
                args.push(tid)
                    .num(effect.lease.fence.0)
                    .push(&effect.key)
                    .push(&effect.result);
            }
            args
        };
        // A call spanning shards is not one script: every shard checks its part first, so that
        // one refusing as a whole leaves the others unwritten too.
        if groups.len() > 1 {
            for (shard, members) in &groups {
                let reply = inner
                    .run(
                        &SCRIPTS.effects,
                        &shard.key,
                        Missing::Lost,
                        args_of("c", members),
                    )
                    .await?;
                too_many_effects(&reply)?;
            }
        }
        for (shard, members) in &groups {
            let reply = inner
                .run(
                    &SCRIPTS.effects,
                    &shard.key,
                    Missing::Lost,
                    args_of("w", members),
                )
                .await?;
            too_many_effects(&reply)?;
            let codes = &reply[1..];
            if codes.len() != members.len() * 2 {
                return Err(unexpected(&Value::Array(reply)));
            }
            for ((index, _), pair) in members.iter().zip(codes.chunks(2)) {
                let (code, value) = (as_int(&pair[0])?, as_int(&pair[1])?);
                results[*index] = Some(match code {
                    0 => Ok(()),
                    _ => Err(refusal(code, value, effects[*index].lease.fence)?),
                });
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every effect is answered"))
            .collect())
    }

    async fn cancel(&self, ids: &[TaskId]) -> Result<LeaseResults, BrokerError> {
        self.inner.check_open()?;
        validate_batch(ids.len())?;
        let leases: Vec<LeaseRef> = ids
            .iter()
            .map(|id| LeaseRef {
                task_id: *id,
                fence: Fence(0),
            })
            .collect();
        self.inner
            .lease_op(
                &SCRIPTS.cancel,
                &leases,
                |_| {},
                |args, _, tid| {
                    args.push(tid);
                },
                |_, code, value| {
                    Ok(match code {
                        0 => Ok(()),
                        _ => Err(refusal(code, value, Fence(0))?),
                    })
                },
            )
            .await
    }

    async fn promote(&self) -> Result<u64, BrokerError> {
        self.inner.check_open()?;
        self.inner.housekeeping("p").await
    }

    async fn reap(&self) -> Result<u64, BrokerError> {
        self.inner.check_open()?;
        self.inner.housekeeping("r").await
    }

    async fn stats(&self, queue: Option<&QueueName>) -> Result<Vec<QueueStats>, BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        match queue {
            Some(queue) => {
                let unknown = || BrokerError::UnknownQueue(queue.clone());
                let entry = inner
                    .lookup(queue)
                    .await?
                    .filter(|e| e.created)
                    .ok_or_else(unknown)?;
                let stats = inner.stats_of(queue, entry).await?.ok_or_else(unknown)?;
                Ok(vec![stats])
            }
            None => {
                let mut all = Vec::new();
                for (queue, entry) in inner.all_queues().await? {
                    if let Some(stats) = inner.stats_of(&queue, entry).await? {
                        all.push(stats);
                    }
                }
                Ok(all)
            }
        }
    }

    async fn configure(&self, queue: &QueueName, config: QueueConfig) -> Result<(), BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        config.validate()?;
        let entry = inner.ensure(queue, &config).await?;
        for shard in inner.shards(queue, entry) {
            let mut args = Args::default();
            for field in codec::encode_config(&config) {
                args.push(field);
            }
            inner
                .run(&SCRIPTS.configure, &shard.key, Missing::Lost, args)
                .await?;
        }
        inner.wakers.notify(queue);
        Ok(())
    }

    async fn pause(&self, queue: &QueueName) -> Result<(), BrokerError> {
        set_paused(&self.inner, queue, true).await
    }

    async fn resume(&self, queue: &QueueName) -> Result<(), BrokerError> {
        set_paused(&self.inner, queue, false).await
    }

    async fn get(&self, id: TaskId) -> Result<Task, BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        let Some((shard, tid)) = inner.locate(id).await? else {
            return Err(BrokerError::UnknownTask(id));
        };
        let mut args = Args::default();
        args.push(&tid);
        let reply = inner
            .run(&SCRIPTS.get, &shard.key, Missing::Lost, args)
            .await?;
        match reply.get(1) {
            Some(record) => inner.task(&shard, tid.as_bytes(), as_bytes(record)?),
            None => Err(BrokerError::UnknownTask(id)),
        }
    }

    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        filter.validate()?;
        let queues = match &filter.queue {
            Some(queue) => match inner.lookup(queue).await?.filter(|e| e.created) {
                Some(entry) => vec![(queue.clone(), entry)],
                None => Vec::new(),
            },
            None => inner.all_queues().await?,
        };
        let state = filter.state.map_or(-1, |s| s.index() as i64);
        let reason = filter.dead_reason.map_or(0, codec::reason_code);
        let mut found = Vec::new();
        for (queue, entry) in queues {
            for shard in inner.shards(&queue, entry) {
                let mut after = filter
                    .after
                    .map(|after| codec::tid_after(shard.home, inner.marker.salt, after));
                let mut got = 0;
                for _ in 0..limits::LIST_CALLS_MAX {
                    let mut args = Args::default();
                    args.push(after.clone().flatten().unwrap_or_default())
                        .num(filter.limit - got)
                        .num(state)
                        .num(reason)
                        .num(limits::LIST_EXAMINE_MAX);
                    let reply = inner
                        .run(&SCRIPTS.list, &shard.key, Missing::Lost, args)
                        .await?;
                    if status(&reply)? != "ok" {
                        break;
                    }
                    let cursor = as_text(&reply[1])?;
                    let tasks = inner.tasks(&shard, &reply[2..])?;
                    got += tasks.len();
                    found.extend(tasks);
                    if cursor.is_empty() || got >= filter.limit {
                        break;
                    }
                    after = Some(Some(cursor));
                }
            }
        }
        found.sort_by_key(|task| task.id);
        found.truncate(filter.limit);
        Ok(found)
    }

    async fn replay(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        self.inner.check_open()?;
        self.inner.on_dead(&SCRIPTS.replay, selector).await
    }

    async fn purge(&self, selector: DeadSelector) -> Result<u64, BrokerError> {
        self.inner.check_open()?;
        self.inner.on_dead(&SCRIPTS.purge, selector).await
    }

    /// Open (not lost), Redis answers, and floodway's dataset marker is the one found at
    /// connect: one round trip to the registry's node.
    async fn ping(&self) -> Result<(), BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        let mut cmd = redis::cmd("HGET");
        cmd.arg(format!("{}:marker", inner.registry_key)).arg("id");
        match inner.conn.cmd(&cmd).await.map_err(|err| inner.error(err))? {
            Value::Nil => Err(inner.mark_lost("the dataset marker is missing")),
            value if connection::text(&value).as_deref() == Some(inner.marker.id.as_str()) => {
                Ok(())
            }
            value => Err(inner.mark_lost(&format!(
                "the dataset marker is {:?}, not {}",
                connection::text(&value),
                inner.marker
            ))),
        }
    }
}

async fn set_paused(inner: &Inner, queue: &QueueName, paused: bool) -> Result<(), BrokerError> {
    inner.check_open()?;
    let unknown = || BrokerError::UnknownQueue(queue.clone());
    let entry = inner
        .lookup(queue)
        .await?
        .filter(|e| e.created)
        .ok_or_else(unknown)?;
    for shard in inner.shards(queue, entry) {
        let mut args = Args::default();
        args.push(if paused { "1" } else { "0" });
        let reply = inner
            .run(&SCRIPTS.pause, &shard.key, Missing::Lost, args)
            .await?;
        if status(&reply)? != "ok" {
            return Err(unknown());
        }
    }
    if !paused {
        inner.wakers.notify(queue);
    }
    Ok(())
}

impl wake::Blocking for Inner {
    fn connect(&self) -> impl Future<Output = redis::RedisResult<Connection>> + Send {
        self.source.blocking(&self.options)
    }
}

/// The background loop: every `interval`, reap, promote and forget old idempotency keys in
/// every queue, and check that floodway's data is still there. Stops when the broker is gone.
async fn maintain(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.check_open().is_err() {
            continue;
        }
        let broker = RedisBroker {
            inner: inner.clone(),
        };
        if let Err(err) = broker.ping().await {
            tracing::warn!(%err, "Redis broker maintenance: ping failed");
            continue;
        }
        if let Err(err) = inner.housekeeping("a").await {
            tracing::warn!(%err, "Redis broker maintenance failed; retrying next round");
        }
    }
}
