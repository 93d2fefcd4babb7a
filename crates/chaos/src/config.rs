//! What a run does: the broker under test, the workload, and the fault (nemesis) injected.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::limits;

/// The broker behind the `floodway serve` process under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The embedded broker in the server's data directory, with `--durability fsync`.
    Embedded,
    /// A `redis-server` the harness starts, with AOF and this `appendfsync` setting.
    Redis(Appendfsync),
}

/// Redis's `appendfsync` setting (with `appendonly yes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Appendfsync {
    /// fsync before every reply.
    Always,
    /// fsync once a second.
    Everysec,
    /// left to the operating system.
    No,
}

impl Appendfsync {
    /// The value Redis's configuration spells.
    pub fn as_str(self) -> &'static str {
        match self {
            Appendfsync::Always => "always",
            Appendfsync::Everysec => "everysec",
            Appendfsync::No => "no",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Embedded => f.write_str("embedded"),
            Target::Redis(sync) => write!(f, "redis-{}", sync.as_str()),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "embedded" => Target::Embedded,
            "redis" | "redis-always" => Target::Redis(Appendfsync::Always),
            "redis-everysec" => Target::Redis(Appendfsync::Everysec),
            "redis-no" => Target::Redis(Appendfsync::No),
            _ => {
                return Err(format!(
                    "unknown target {text:?}: expected embedded, redis-always, redis-everysec or redis-no"
                ));
            }
        })
    }
}

/// A fault the harness injects, repeatedly, while the workload runs. Each fault is injected,
/// held for a while, then healed; the checker measures how long the system took to recover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// No fault: the baseline, and a check of the checker.
    None,
    /// SIGKILL the `floodway serve` process, then start it again on the same data directory
    /// (or the same Redis) and port.
    KillServer,
    /// SIGKILL a worker process while it runs tasks, then start a new one.
    KillWorker,
    /// SIGSTOP a worker past its lease (a zombie), then SIGCONT it: its late completion must
    /// be refused and its effect not performed twice.
    PauseWorker,
    /// SIGKILL `redis-server`, then restart it on the same data (Redis targets only).
    KillRedis,
    /// SIGSTOP `redis-server` past the server's Redis timeout, then SIGCONT it (Redis
    /// targets only).
    PauseRedis,
    /// Blackhole the link between the clients (producers and workers) and the server: bytes
    /// stop flowing both ways, connections stay open, then the link heals.
    PartitionClients,
    /// Blackhole the link between the server and Redis (Redis targets only).
    PartitionRedis,
    /// Reset every connection between the server and Redis (TCP RST), and new ones for the
    /// duration of the fault (Redis targets only).
    ResetRedis,
    /// Add latency to every chunk between the server and Redis (Redis targets only).
    SlowRedis,
    /// Reset every connection between the clients and the server (TCP RST), and new ones for
    /// the duration of the fault.
    ResetClients,
    /// Add latency to every chunk between the clients and the server.
    SlowClients,
    /// Kill the server while the link from the clients closes slowly: the clients' side of
    /// every connection stays open (half-open) a while after the server died.
    SlowCloseClients,
    /// Fill the embedded broker's file system (a small tmpfs, so it needs root), then free
    /// the space (embedded target only).
    DiskFull,
    /// Step the workers' wall clock a day forward or back (libfaketime, preloaded into the
    /// worker processes; their monotonic clock is left alone, as NTP would), then back to
    /// true time. Leases are judged on the broker's clock, so nothing may change.
    ClockJumpWorkers,
}

impl Nemesis {
    /// Every nemesis, in the order the documentation lists them.
    pub const ALL: [Nemesis; 15] = [
        Nemesis::None,
        Nemesis::KillServer,
        Nemesis::KillWorker,
        Nemesis::PauseWorker,
        Nemesis::KillRedis,
        Nemesis::PauseRedis,
        Nemesis::PartitionClients,
        Nemesis::PartitionRedis,
        Nemesis::ResetRedis,
        Nemesis::SlowRedis,
        Nemesis::ResetClients,
        Nemesis::SlowClients,
        Nemesis::SlowCloseClients,
        Nemesis::DiskFull,
        Nemesis::ClockJumpWorkers,
    ];

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Nemesis::None => "none",
            Nemesis::KillServer => "kill-server",
            Nemesis::KillWorker => "kill-worker",
            Nemesis::PauseWorker => "pause-worker",
            Nemesis::KillRedis => "kill-redis",
            Nemesis::PauseRedis => "pause-redis",
            Nemesis::PartitionClients => "partition-clients",
            Nemesis::PartitionRedis => "partition-redis",
            Nemesis::ResetRedis => "reset-redis",
            Nemesis::SlowRedis => "slow-redis",
            Nemesis::ResetClients => "reset-clients",
            Nemesis::SlowClients => "slow-clients",
            Nemesis::SlowCloseClients => "slow-close-clients",
            Nemesis::DiskFull => "disk-full",
            Nemesis::ClockJumpWorkers => "clock-jump-workers",
        }
    }

    /// True when the nemesis needs Redis.
    pub fn needs_redis(self) -> bool {
        matches!(
            self,
            Nemesis::KillRedis
                | Nemesis::PauseRedis
                | Nemesis::PartitionRedis
                | Nemesis::ResetRedis
                | Nemesis::SlowRedis
        )
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Nemesis {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Nemesis::ALL
            .into_iter()
            .find(|n| n.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Nemesis::ALL.iter().map(|n| n.as_str()).collect();
                format!(
                    "unknown nemesis {text:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One run of the harness.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// The `floodway` binary: the harness runs `floodway serve` and `floodway chaos worker`.
    pub floodway: PathBuf,
    /// The `redis-server` binary, for Redis targets.
    pub redis_server: PathBuf,
    /// Where the run keeps its files (data directory, logs, the downstream's effects); it
    /// must be empty or missing.
    pub dir: PathBuf,
    /// The broker under test.
    pub target: Target,
    /// The fault injected.
    pub nemesis: Nemesis,
    /// Seeds every random choice of the run (fault times, which worker, payload sizes).
    pub seed: u64,
    /// Concurrent producers, each enqueueing one task per operation.
    pub producers: usize,
    /// Worker processes.
    pub workers: usize,
    /// Handler slots per worker process.
    pub concurrency: usize,
    /// Tasks the producers enqueue in all (operations attempted).
    pub tasks: u64,
    /// Enqueues per second, all producers together: the pace that spreads the tasks over
    /// the faults.
    pub rate: u64,
    /// How long each handler works before its effect, at most (uniform from 0).
    pub work_max: Duration,
    /// The workers' lease.
    pub lease: Duration,
    /// One task in this many is poison: its handler panics or aborts the worker process, on
    /// every attempt, so it must end in the dead letters (0: none).
    pub poison_every: u64,
    /// Attempts per task before it becomes a dead letter.
    pub max_attempts: u32,
    /// Time between the end of one fault and the start of the next, at most (uniform from
    /// half of it).
    pub fault_interval: Duration,
    /// How long each fault is held, at most (uniform from half of it).
    pub fault_duration: Duration,
    /// Most faults in the run.
    pub faults_max: u32,
    /// The whole run's bound: producers stop at this point, whatever is left unsent.
    pub time_limit: Duration,
    /// After the producers stop and every fault is healed, how long every acknowledged task
    /// has to finish before the unfinished ones are counted as lost.
    pub drain_limit: Duration,
}

impl Config {
    /// A run with the fast tier's defaults: 2 producers enqueueing 400 tasks of up to 20 ms at
    /// 150 a second, 2 workers of 4 slots, a 1 s lease, faults every 0.3-0.6 s held 0.2-0.4 s,
    /// at most 3 faults.
    ///
    /// A pause or partition is held past the timeout it is meant to trip (a hold is drawn
    /// from half the fault duration to all of it), so that it causes errors rather than a
    /// stall: pause-worker up to twice the lease (a zombie), pause-redis and partition-redis
    /// 5.5-11 s (the Redis broker's command timeout is 5 s), partition-clients 2.5-5 s (the
    /// clients' request timeout is [`limits::REQUEST_TIMEOUT`], 2 s).
    pub fn new(floodway: PathBuf, dir: PathBuf, target: Target, nemesis: Nemesis) -> Config {
        let lease = Duration::from_secs(1);
        let fault_duration = match nemesis {
            Nemesis::PauseWorker => lease * 2,
            Nemesis::PauseRedis | Nemesis::PartitionRedis => Duration::from_secs(11),
            Nemesis::PartitionClients => Duration::from_secs(5),
            _ => Duration::from_millis(400),
        };
        Config {
            floodway,
            redis_server: PathBuf::from("redis-server"),
            dir,
            target,
            nemesis,
            seed: 1,
            producers: 2,
            workers: 2,
            concurrency: 4,
            tasks: 400,
            rate: 150,
            work_max: Duration::from_millis(20),
            lease,
            poison_every: 0,
            max_attempts: 3,
            fault_interval: Duration::from_millis(600),
            fault_duration,
            faults_max: 3,
            time_limit: Duration::from_secs(60),
            drain_limit: Duration::from_secs(30),
        }
    }

    /// Checks the configuration against the harness's limits; the message names the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.nemesis.needs_redis() && self.target == Target::Embedded {
            return Err(format!(
                "nemesis {} needs a Redis target (--target redis-always, redis-everysec or redis-no)",
                self.nemesis
            ));
        }
        let checks: [(&str, u64, u64, u64); 7] = [
            ("rate", self.rate, 1, limits::RATE_MAX),
            ("producers", self.producers as u64, 1, limits::PRODUCERS_MAX),
            ("workers", self.workers as u64, 1, limits::WORKERS_MAX),
            (
                "concurrency",
                self.concurrency as u64,
                1,
                limits::CONCURRENCY_MAX,
            ),
            ("tasks", self.tasks, 1, limits::TASKS_MAX),
            ("max attempts", self.max_attempts.into(), 1, 100),
            ("faults", self.faults_max.into(), 0, limits::FAULTS_MAX),
        ];
        for (name, value, min, max) in checks {
            if value < min || value > max {
                return Err(format!("{name} must be {min} to {max}, not {value}"));
            }
        }
        if self.lease < Duration::from_millis(200) || self.lease > Duration::from_secs(60) {
            return Err(format!(
                "the lease must be 200ms to 60s, not {:?}",
                self.lease
            ));
        }
        if self.time_limit > limits::TIME_LIMIT_MAX || self.drain_limit > limits::TIME_LIMIT_MAX {
            return Err(format!(
                "the time limit and the drain limit are at most {:?}",
                limits::TIME_LIMIT_MAX
            ));
        }
        if self.nemesis == Nemesis::DiskFull && self.target != Target::Embedded {
            return Err(
                "nemesis disk-full fills the embedded broker's disk: use --target embedded".into(),
            );
        }
        if self.nemesis == Nemesis::PauseWorker && self.fault_duration <= self.lease {
            return Err(format!(
                "pause-worker must hold the pause ({:?}) past the lease ({:?}) to make a zombie",
                self.fault_duration, self.lease
            ));
        }
        Ok(())
    }
}
