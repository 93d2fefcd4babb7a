//! One run: start the processes, let the producers and workers go while the nemesis injects
//! faults, heal everything, let every acknowledged task finish, and check.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodway_client::{ClientConfig, HttpBroker};
use floodway_core::{
    Broker, BrokerError, Jitter, NewTask, QueueConfig, QueueName, RetryPolicy, TaskId,
};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::checker::{self, FinalStates, Verdict};
use crate::config::{Config, Nemesis, Target};
use crate::history::{self, Downstream, Fault, Op, OpOutcome, now_ms};
use crate::limits;
use crate::process::{self, ProcessError, Redis, Server, Tmpfs, Workers};
use crate::proxy::{self, FaultProxy};
use crate::worker::{KIND, Payload, Poison, QUEUE};

/// Why a run could not be carried out (as opposed to what it found, which is a [`Verdict`]).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The configuration breaks a limit.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A task of the harness itself (a producer, the nemesis) panicked: a bug in the harness,
    /// and the run cannot be checked.
    #[error("the harness failed: {0}")]
    Harness(String),
    /// A process could not be started or signalled.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A file of the run could not be written or read.
    #[error("{what}: {error}")]
    Io {
        /// Which file.
        what: String,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// The server did not answer the harness's own calls (setup or the final check).
    #[error("the server did not answer the harness: {0}")]
    Broker(#[from] BrokerError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let what = what.into();
    move |error| ChaosError::Io { what, error }
}

/// What one run did and found.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The run's seed.
    pub seed: u64,
    /// The broker under test.
    pub target: String,
    /// The nemesis.
    pub nemesis: String,
    /// The checker's findings.
    pub verdict: Verdict,
    /// Server processes started (restarts + 1).
    pub server_starts: u32,
    /// Worker processes started.
    pub worker_starts: u32,
    /// The faults, with their times.
    pub faults: Vec<Fault>,
    /// How long the run took, in milliseconds.
    pub elapsed_ms: u64,
}

/// Everything the nemesis can act on.
struct Cluster {
    server: Server,
    disk: Option<Tmpfs>,
    redis: Option<Redis>,
    workers: Workers,
    clients_link: Option<FaultProxy>,
    redis_link: Option<FaultProxy>,
}

/// Carries out one run as `config` says, in `config.dir`.
pub async fn run(config: &Config) -> Result<RunReport, ChaosError> {
    config.validate().map_err(ChaosError::Config)?;
    let began = Instant::now();
    let dir = &config.dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(io(dir.display().to_string()))?
            .next()
            .is_some()
    {
        return Err(ChaosError::Config(format!(
            "{} is not empty; every run needs a fresh directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir.join("redis")).map_err(io("the run directory"))?;
    let downstream_dir = dir.join("downstream");
    Downstream::new(&downstream_dir).map_err(io("the downstream directory"))?;

    let mut redis = None;
    let mut redis_link = None;
    let mut broker_url = None;
    if let Target::Redis(sync) = config.target {
        let started = Redis::start(
            &config.redis_server,
            &dir.join("redis"),
            sync.as_str(),
            &dir.join("redis.log"),
        )
        .await?;
        let mut addr = started.addr();
        if matches!(
            config.nemesis,
            Nemesis::PartitionRedis | Nemesis::ResetRedis | Nemesis::SlowRedis
        ) {
            let link = FaultProxy::start(addr)
                .await
                .map_err(io("the Redis link's proxy"))?;
            addr = link.addr();
            redis_link = Some(link);
        }
        broker_url = Some(format!("redis://{addr}"));
        redis = Some(started);
    }
    // The disk-full nemesis puts the data directory on a tmpfs of its own.
    let disk = match config.nemesis {
        Nemesis::DiskFull => Some(Tmpfs::mount(&dir.join("data"), limits::DISK_MIB)?),
        _ => None,
    };
    let server = Server::start(
        &config.floodway,
        &dir.join("data"),
        broker_url,
        &dir.join("server.log"),
    )
    .await?;
    let direct_url = format!("http://{}", server.addr());
    let mut clients_link = None;
    let mut client_url = direct_url.clone();
    if matches!(
        config.nemesis,
        Nemesis::PartitionClients
            | Nemesis::ResetClients
            | Nemesis::SlowClients
            | Nemesis::SlowCloseClients
    ) {
        let link = FaultProxy::start(server.addr())
            .await
            .map_err(io("the clients' link proxy"))?;
        client_url = format!("http://{}", link.addr());
        clients_link = Some(link);
    }

    // The harness's own client goes straight to the server, never through a fault.
    let admin = Arc::new(connect(&direct_url).await?);
    let queue = QueueName::new(QUEUE).expect("a valid queue name");
    admin.configure(&queue, QueueConfig::default()).await?;

    let faketime = match config.nemesis {
        Nemesis::ClockJumpWorkers => Some(process::libfaketime().ok_or_else(|| {
            ChaosError::Config(
                "clock-jump-workers needs libfaketime (apt-get install faketime)".into(),
            )
        })?),
        _ => None,
    };
    let workers = Workers::start(
        &config.floodway,
        client_url.clone(),
        dir,
        config.workers,
        config.concurrency,
        config.lease.as_millis() as u64,
        faketime,
    )
    .await?;
    let cluster = Arc::new(Mutex::new(Cluster {
        server,
        disk,
        redis,
        workers,
        clients_link,
        redis_link,
    }));

    // Producers and the nemesis run together; the nemesis stops when the producers are done.
    let deadline = began + config.time_limit;
    let producers = produce(config, &client_url, deadline);
    let (stop_nemesis, nemesis_stopped) = tokio::sync::watch::channel(false);
    let nemesis = tokio::spawn(nemesis(config.clone(), cluster.clone(), nemesis_stopped));
    let ops = producers.await?;
    let _ = stop_nemesis.send(true);
    let faults = nemesis
        .await
        .map_err(|e| ChaosError::Harness(format!("the nemesis failed: {e}")))??;

    // Every fault is healed; let every acknowledged task finish.
    drain(config, &admin, &queue, &cluster).await?;
    let events = history::read_histories(dir).map_err(io("the workers' histories"))?;
    let mut ids: Vec<TaskId> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            OpOutcome::Ok { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    for (_, event) in &events {
        if let history::Event::Start { id, .. } = event {
            ids.push(*id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let states = final_states(&admin, ids).await?;
    {
        let mut cluster = cluster.lock().await;
        cluster.workers.stop().await;
        cluster.server.stop().await;
        if let Some(redis) = &mut cluster.redis {
            redis.kill().await;
        }
        cluster.disk = None;
    }
    let applied = Downstream::new(&downstream_dir)
        .and_then(|d| d.applied())
        .map_err(io("the downstream's effects"))?;
    let verdict = checker::check(&ops, &events, &applied, &states, &faults);
    let cluster = cluster.lock().await;
    Ok(RunReport {
        seed: config.seed,
        target: config.target.to_string(),
        nemesis: config.nemesis.to_string(),
        verdict,
        server_starts: cluster.server.starts,
        worker_starts: cluster.workers.starts,
        faults,
        elapsed_ms: began.elapsed().as_millis() as u64,
    })
}

async fn connect(url: &str) -> Result<HttpBroker, ChaosError> {
    let mut config = ClientConfig::new(url);
    config.timeout = limits::REQUEST_TIMEOUT;
    HttpBroker::connect(config)
        .await
        .map_err(|e| ChaosError::Broker(e.into()))
}

/// The producers: `config.producers` loops sharing one sequence of operations, paced at
/// `config.rate` in all, until every operation is sent or the deadline passes.
async fn produce(config: &Config, url: &str, deadline: Instant) -> Result<Vec<Op>, ChaosError> {
    let began = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut loops = tokio::task::JoinSet::new();
    for p in 0..config.producers {
        let broker = connect(url).await?;
        let next = next.clone();
        let config = config.clone();
        let mut rng = fastrand::Rng::with_seed(config.seed ^ (p as u64 + 1) << 32);
        loops.spawn(async move {
            let mut ops = Vec::new();
            let queue = QueueName::new(QUEUE).expect("a valid queue name");
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= config.tasks || Instant::now() >= deadline {
                    break;
                }
                // Paced: operation n is due n / rate after the start, so the workload spans
                // the faults instead of racing ahead of them.
                let due = began + Duration::from_secs_f64(n as f64 / config.rate as f64);
                tokio::time::sleep_until(due.min(deadline)).await;
                ops.push(enqueue_one(&broker, &queue, &config, n, &mut rng).await);
            }
            ops
        });
    }
    let mut ops = Vec::new();
    while let Some(done) = loops.join_next().await {
        // A producer that panicked took its history with it: the run cannot be checked.
        let done = done.map_err(|e| ChaosError::Harness(format!("a producer failed: {e}")))?;
        ops.extend(done);
    }
    ops.sort_by_key(|op| op.op);
    Ok(ops)
}

/// One operation: enqueue task `n`, retrying with the same idempotency key while the outcome
/// is unknown.
async fn enqueue_one(
    broker: &HttpBroker,
    queue: &QueueName,
    config: &Config,
    n: u64,
    rng: &mut fastrand::Rng,
) -> Op {
    // Every poison_every-th task is poison, panicking and aborting in turn.
    let poison = match config.poison_every {
        0 => None,
        every if n % every != every - 1 => None,
        every if (n / every).is_multiple_of(2) => Some(Poison::Panic),
        _ => Some(Poison::Abort),
    };
    let payload = Payload {
        op: n,
        work_ms: rng.u64(0..=config.work_max.as_millis() as u64),
        poison,
    };
    let key = format!("chaos-{}-{n}", config.seed);
    let mut task = NewTask::new(
        KIND,
        serde_json::to_vec(&payload).expect("a payload encodes"),
    );
    task.idempotency_key = Some(key.clone());
    task.retry = Some(RetryPolicy {
        max_attempts: config.max_attempts,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        backoff_multiplier: 2.0,
        jitter: Jitter::Full,
    });
    let invoked_ms = now_ms();
    let give_up = Instant::now() + limits::ENQUEUE_RETRY_LIMIT;
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        match broker.enqueue(queue, vec![task.clone()]).await {
            Ok(enqueued) => {
                break OpOutcome::Ok {
                    id: enqueued[0].id,
                    at_ms: now_ms(),
                };
            }
            Err(error) if error.is_retryable() && Instant::now() < give_up => {
                let wait = error
                    .retry_after()
                    .unwrap_or(Duration::from_millis(20 + rng.u64(0..80)));
                tokio::time::sleep(wait).await;
            }
            Err(error) if error.is_retryable() => {
                break OpOutcome::Indeterminate {
                    error: error.to_string(),
                };
            }
            Err(error) => {
                break OpOutcome::Failed {
                    error: error.to_string(),
                };
            }
        }
    };
    Op {
        op: n,
        key,
        poison: poison.is_some(),
        invoked_ms,
        tries,
        outcome,
    }
}

/// Injects faults until told to stop, healing each before the next; also replaces workers a
/// poison task killed. Returns the faults injected.
async fn nemesis(
    config: Config,
    cluster: Arc<Mutex<Cluster>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<Fault>, ChaosError> {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut faults = Vec::new();
    let between = |rng: &mut fastrand::Rng, max: Duration| {
        let max = max.as_millis() as u64;
        Duration::from_millis(rng.u64(max / 2..=max.max(1)))
    };
    loop {
        let wait = between(&mut rng, config.fault_interval);
        let stopped = wait_or_stop(&mut stop, wait, &cluster).await?;
        if stopped || config.nemesis == Nemesis::None || faults.len() as u32 >= config.faults_max {
            if stopped {
                return Ok(faults);
            }
            continue;
        }
        let hold = between(&mut rng, config.fault_duration);
        let fault = inject(&config, &cluster, &mut rng, hold, &mut stop).await?;
        faults.push(fault);
    }
}

/// Waits `wait` (or until stopped), replacing any worker that died meanwhile.
async fn wait_or_stop(
    stop: &mut tokio::sync::watch::Receiver<bool>,
    wait: Duration,
    cluster: &Mutex<Cluster>,
) -> Result<bool, ChaosError> {
    let until = Instant::now() + wait;
    loop {
        if *stop.borrow() {
            return Ok(true);
        }
        cluster.lock().await.workers.revive()?;
        let tick = until.min(Instant::now() + Duration::from_millis(50));
        if tokio::time::timeout_at(tick, stop.changed()).await.is_ok() {
            continue;
        }
        if Instant::now() >= until {
            return Ok(false);
        }
    }
}

/// One fault: inject, hold for `hold`, heal.
async fn inject(
    config: &Config,
    cluster: &Mutex<Cluster>,
    rng: &mut fastrand::Rng,
    hold: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Fault, ChaosError> {
    let start_ms = now_ms();
    let what;
    {
        let mut c = cluster.lock().await;
        match config.nemesis {
            Nemesis::None => unreachable!("no fault is injected without a nemesis"),
            Nemesis::KillServer => {
                what = "kill-server".to_owned();
                c.server.kill().await;
            }
            Nemesis::KillWorker => {
                let i = rng.usize(0..c.workers.len());
                what = format!("kill-worker {i}");
                c.workers.kill_and_replace(i).await?;
            }
            Nemesis::PauseWorker => {
                let i = rng.usize(0..c.workers.len());
                what = format!("pause-worker {i}");
                if let Some(pid) = c.workers.pid(i) {
                    process::signal(pid, "STOP").await?;
                }
            }
            Nemesis::KillRedis => {
                what = "kill-redis".to_owned();
                if let Some(redis) = &mut c.redis {
                    redis.kill().await;
                }
            }
            Nemesis::PauseRedis => {
                what = "pause-redis".to_owned();
                if let Some(pid) = c.redis.as_ref().and_then(Redis::pid) {
                    process::signal(pid, "STOP").await?;
                }
            }
            Nemesis::PartitionClients => {
                what = "partition-clients".to_owned();
                set_link(&c.clients_link, proxy::Fault::Blackhole);
            }
            Nemesis::PartitionRedis => {
                what = "partition-redis".to_owned();
                set_link(&c.redis_link, proxy::Fault::Blackhole);
            }
            Nemesis::ResetRedis => {
                what = "reset-redis".to_owned();
                set_link(&c.redis_link, proxy::Fault::Reset);
            }
            Nemesis::SlowRedis => {
                what = "slow-redis".to_owned();
                set_link(
                    &c.redis_link,
                    proxy::Fault::Latency(Duration::from_millis(rng.u64(20..=200))),
                );
            }
            Nemesis::ResetClients => {
                what = "reset-clients".to_owned();
                set_link(&c.clients_link, proxy::Fault::Reset);
            }
            Nemesis::ClockJumpWorkers => {
                let offset = if rng.bool() { "+1d" } else { "-1d" };
                what = format!("clock-jump-workers {offset}");
                c.workers.set_clock(offset)?;
            }
            Nemesis::DiskFull => {
                what = "disk-full".to_owned();
                if let Some(disk) = &c.disk {
                    disk.fill()?;
                }
            }
            Nemesis::SlowCloseClients => {
                what = "slow-close-clients".to_owned();
                set_link(
                    &c.clients_link,
                    proxy::Fault::SlowClose(Duration::from_millis(rng.u64(200..=2_000))),
                );
                c.server.kill().await;
            }
            Nemesis::SlowClients => {
                what = "slow-clients".to_owned();
                set_link(
                    &c.clients_link,
                    proxy::Fault::Latency(Duration::from_millis(rng.u64(20..=200))),
                );
            }
        }
    }
    // Killing a worker heals at once (a new process replaces it); other faults are held.
    if config.nemesis != Nemesis::KillWorker {
        let _ = tokio::time::timeout(hold, stop.wait_for(|stopped| *stopped)).await;
    }
    let mut c = cluster.lock().await;
    match config.nemesis {
        Nemesis::KillServer => c.server.restart().await?,
        Nemesis::SlowCloseClients => {
            c.server.restart().await?;
            set_link(&c.clients_link, proxy::Fault::None);
        }
        Nemesis::PauseWorker => {
            for i in 0..c.workers.len() {
                if let Some(pid) = c.workers.pid(i) {
                    // CONT to every worker: harmless to the ones not stopped.
                    let _ = process::signal(pid, "CONT").await;
                }
            }
        }
        Nemesis::KillRedis => {
            if let Some(redis) = &mut c.redis {
                redis.restart().await?;
            }
        }
        Nemesis::PauseRedis => {
            if let Some(pid) = c.redis.as_ref().and_then(Redis::pid) {
                process::signal(pid, "CONT").await?;
            }
        }
        Nemesis::PartitionClients | Nemesis::ResetClients | Nemesis::SlowClients => {
            set_link(&c.clients_link, proxy::Fault::None);
        }
        Nemesis::PartitionRedis | Nemesis::ResetRedis | Nemesis::SlowRedis => {
            set_link(&c.redis_link, proxy::Fault::None)
        }
        Nemesis::DiskFull => {
            if let Some(disk) = &c.disk {
                disk.free()?;
            }
        }
        Nemesis::ClockJumpWorkers => c.workers.set_clock("+0")?,
        Nemesis::None | Nemesis::KillWorker => {}
    }
    Ok(Fault {
        what,
        start_ms,
        healed_ms: now_ms(),
        outage: config.nemesis != Nemesis::ClockJumpWorkers,
    })
}

fn set_link(link: &Option<FaultProxy>, fault: proxy::Fault) {
    if let Some(link) = link {
        link.set(fault);
    }
}

/// Waits until the queue holds no task that can still run (every one completed or dead),
/// replacing dead workers meanwhile, or until the drain limit.
async fn drain(
    config: &Config,
    admin: &HttpBroker,
    queue: &QueueName,
    cluster: &Mutex<Cluster>,
) -> Result<(), ChaosError> {
    let until = Instant::now() + config.drain_limit;
    while Instant::now() < until {
        cluster.lock().await.workers.revive()?;
        if let Ok(stats) = admin.stats(Some(queue)).await
            && let Some(stats) = stats.first()
        {
            let c = stats.counts;
            if c.scheduled + c.ready + c.active + c.retrying == 0 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The broker's state of each task in `ids` (absent: the broker does not know it), read a
/// few at a time.
async fn final_states(
    admin: &Arc<HttpBroker>,
    ids: Vec<TaskId>,
) -> Result<FinalStates, ChaosError> {
    let mut states: FinalStates = HashMap::new();
    for chunk in ids.chunks(limits::CHECK_CONCURRENCY) {
        let mut reads = tokio::task::JoinSet::new();
        for id in chunk.iter().copied() {
            let admin = admin.clone();
            reads.spawn(async move { (id, admin.get(id).await) });
        }
        while let Some(read) = reads.join_next().await {
            let (id, read) =
                read.map_err(|e| ChaosError::Harness(format!("reading a task failed: {e}")))?;
            match read {
                Ok(task) => {
                    states.insert(id, task.state);
                }
                Err(BrokerError::UnknownTask(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(states)
}

/// The directory of the run with seed `seed` under `root`.
pub fn run_dir(root: &Path, seed: u64) -> std::path::PathBuf {
    root.join(format!("run-{seed:05}"))
}
