//! Power loss with unsynced writes dropped, under the real broker (feature `fault-injection`).
//!
//! A seeded random workload (enqueue batches with delays and idempotency keys, reserve, ack,
//! fail, extend, release, record effects, cancel, replay, purge, reconfigure, time passing,
//! compaction) runs one call at a time against an [`EmbeddedBroker`] on a [`SimulatedDisk`].
//! After every step the test records the broker's whole state (every task, every queue's
//! configuration, counts and totals) and which disk operations the step spanned. Meanwhile the
//! disk records what a machine would find after a power loss at many planned points (unsynced
//! data dropped, or kept in part with a garbage end, unsynced directory changes partly kept).
//! Each such image is then opened by a fresh broker, and its recovered state must equal the
//! state after some step `j` with `lo ≤ j ≤ hi`:
//!
//! - `hi` is the step that was running at the power loss: nothing later can be there, and
//!   nothing can be half there (a call is all or nothing);
//! - `lo` is what the durability setting promised: with `fsync`, the last step that had
//!   returned; with `interval` and `off`, the last step that had returned before the last
//!   completed sync of the log (acknowledged changes since the last sync may be lost, but only
//!   from the end: what is recovered is always a prefix of what happened).
//!
//! Equality of whole states checks at once that no acknowledged enqueue, ack, failure or other
//! change is lost, that nothing unacknowledged is invented, and that recovery rebuilds exactly
//! what the running broker held.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use floodway_core::{
    Broker, DeadSelector, EffectRecord, Failure, Jitter, Lease, ManualClock, NewTask, QueueConfig,
    QueueName, QueueStats, ReserveRequest, RetryDecision, RetryPolicy, Task, TaskFilter, TaskState,
    Timestamp,
};
use floodway_embedded::fault::{PowerLossImage, SimulatedDisk};
use floodway_embedded::{Durability, EmbeddedBroker, Options};

const DIR: &str = "/sim/data";

/// The state a step left: every task and every queue's statistics that survive a restart.
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    tasks: Vec<Task>,
    queues: Vec<(String, QueueConfig, String, String)>,
}

async fn observe(broker: &EmbeddedBroker) -> Observed {
    let mut tasks = Vec::new();
    let mut after = None;
    loop {
        let page = broker
            .list(TaskFilter {
                after,
                limit: 1000,
                ..TaskFilter::default()
            })
            .await
            .expect("list");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        tasks.extend(page);
    }
    let queues = broker
        .stats(None)
        .await
        .expect("stats")
        .into_iter()
        .map(|s: QueueStats| {
            (
                s.queue.to_string(),
                s.config,
                format!("{:?}", s.counts),
                format!("{:?}", s.totals),
            )
        })
        .collect();
    Observed { tasks, queues }
}

/// One completed step of the workload: one broker call.
struct Step {
    what: String,
    /// Whether the call returned only once its changes were durable (all but `reserve`).
    durable_on_return: bool,
    /// Disk operations before the step started and after it returned.
    ops_before: u64,
    ops_after: u64,
    /// Completed log syncs when it returned.
    log_syncs_after: u64,
    state: Observed,
}

fn options(clock: &ManualClock, durability: Durability) -> Options {
    Options {
        durability,
        clock: Arc::new(clock.clone()),
        maintenance_interval: None,
        // Small, so that the workload rotates logs and writes snapshots many times.
        compaction_bytes_min: 6 * 1024,
    }
}

fn queue(n: usize) -> QueueName {
    QueueName::new(["mail", "image"][n % 2]).unwrap()
}

/// Runs `steps` random steps from `seed`; returns the steps and the planned images.
async fn run_workload(
    seed: u64,
    durability: Durability,
    steps: usize,
    plan: impl Fn(u64) -> Vec<(u64, u64)>,
) -> (Vec<Step>, Observed, Vec<PowerLossImage>) {
    let disk = SimulatedDisk::new();
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
    // The queues exist, durably, before the workload starts (under `off`, only a close syncs).
    let setup = EmbeddedBroker::open_simulated(&disk, DIR, options(&clock, Durability::Fsync))
        .expect("open on a fresh disk");
    for n in 0..2 {
        setup
            .configure(&queue(n), QueueConfig::default())
            .await
            .expect("configure");
    }
    setup.close().await;
    let broker =
        EmbeddedBroker::open_simulated(&disk, DIR, options(&clock, durability)).expect("reopen");
    let initial = observe(&broker).await;
    disk.plan_power_losses(plan(disk.ops()));
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut held: Vec<Lease> = Vec::new();
    let mut payload = 0u64;
    let mut history = Vec::new();
    for _ in 0..steps {
        let ops_before = disk.ops();
        let (what, durable_on_return) =
            step(&broker, &clock, &mut rng, &mut held, &mut payload).await;
        history.push(Step {
            what,
            durable_on_return,
            ops_before,
            ops_after: disk.ops(),
            log_syncs_after: disk.log_syncs(),
            state: observe(&broker).await,
        });
        if !durable_on_return {
            // A reservation does not wait for its sync; the next call, a step of its own,
            // waits for everything before it.
            let ops_before = disk.ops();
            let promoted = broker.promote().await.expect("promote");
            history.push(Step {
                what: format!("promote {promoted}"),
                durable_on_return: true,
                ops_before,
                ops_after: disk.ops(),
                log_syncs_after: disk.log_syncs(),
                state: observe(&broker).await,
            });
        }
    }
    broker.close().await;
    (history, initial, disk.take_power_losses())
}

/// One random call (the clock may move first); returns what it did, for failure messages, and
/// whether the call waited for durability.
async fn step(
    broker: &EmbeddedBroker,
    clock: &ManualClock,
    rng: &mut fastrand::Rng,
    held: &mut Vec<Lease>,
    payload: &mut u64,
) -> (String, bool) {
    let q = queue(rng.usize(..2));
    let what = match rng.u8(0..100) {
        0..=29 => {
            let n = rng.usize(1..=5);
            let tasks = (0..n)
                .map(|_| {
                    *payload += 1;
                    let mut task = NewTask::new("k", format!("{{\"n\":{payload}}}"))
                        .max_attempts(3)
                        .retry(RetryPolicy {
                            jitter: Jitter::None,
                            ..RetryPolicy::default()
                        });
                    if rng.u8(0..4) == 0 {
                        task = task.delay(Duration::from_secs(rng.u64(1..60)));
                    }
                    if rng.u8(0..4) == 0 {
                        // Keys repeat, so some enqueues are duplicates.
                        task = task.idempotency_key(format!("key-{}", rng.u8(0..20)));
                    }
                    task.priority(rng.u8(0..3))
                })
                .collect();
            let result = broker.enqueue(&q, tasks).await.expect("enqueue");
            format!("enqueue {n} into {q}: {result:?}")
        }
        30..=49 => {
            let reserved = broker
                .reserve(ReserveRequest::new(
                    q.clone(),
                    rng.usize(1..=3),
                    Duration::from_secs(30),
                ))
                .await
                .expect("reserve");
            held.extend(reserved.iter().map(|r| r.lease));
            return (format!("reserve from {q}: {} tasks", reserved.len()), false);
        }
        50..=64 if !held.is_empty() => {
            let n = rng.usize(1..=held.len());
            let leases: Vec<_> = held.drain(..n).map(|l| l.as_ref()).collect();
            let result = broker.ack(&leases).await.expect("ack");
            format!("ack {n}: {result:?}")
        }
        65..=71 if !held.is_empty() => {
            let lease = held.remove(rng.usize(..held.len()));
            let retry = if rng.bool() {
                RetryDecision::Backoff
            } else {
                RetryDecision::Never
            };
            let result = broker
                .fail(vec![Failure {
                    lease: lease.as_ref(),
                    error: "boom".into(),
                    retry,
                }])
                .await
                .expect("fail");
            format!("fail {retry:?}: {result:?}")
        }
        72..=75 if !held.is_empty() => {
            let lease = held[rng.usize(..held.len())];
            let result = broker
                .extend(&[lease.as_ref()], Duration::from_secs(60))
                .await
                .expect("extend");
            format!("extend: {result:?}")
        }
        76..=78 if !held.is_empty() => {
            let lease = held.remove(rng.usize(..held.len()));
            let result = broker.release(&[lease.as_ref()]).await.expect("release");
            format!("release: {result:?}")
        }
        79..=81 if !held.is_empty() => {
            let lease = held[rng.usize(..held.len())];
            let result = broker
                .record_effects(vec![EffectRecord {
                    lease: lease.as_ref(),
                    key: format!("effect-{}", rng.u8(0..3)),
                    result: "done".into(),
                }])
                .await
                .expect("record effects");
            format!("record effect: {result:?}")
        }
        82..=87 => {
            let by = Duration::from_secs(rng.u64(1..45));
            clock.advance(by);
            if rng.bool() {
                let reaped = broker.reap().await.expect("reap");
                format!("advance {by:?}, reap {reaped}")
            } else {
                let promoted = broker.promote().await.expect("promote");
                format!("advance {by:?}, promote {promoted}")
            }
        }
        88..=90 => {
            let ready = broker
                .list(TaskFilter {
                    queue: Some(q.clone()),
                    state: Some(TaskState::Ready),
                    limit: 5,
                    ..TaskFilter::default()
                })
                .await
                .expect("list");
            let ids: Vec<_> = ready.iter().map(|t| t.id).collect();
            let result = broker.cancel(&ids).await.expect("cancel");
            format!("cancel {}: {result:?}", ids.len())
        }
        91..=93 => {
            let selector = DeadSelector::Matching {
                queue: Some(q.clone()),
                reason: None,
                limit: 3,
            };
            if rng.bool() {
                let n = broker.replay(selector).await.expect("replay");
                format!("replay {n}")
            } else {
                let n = broker.purge(selector).await.expect("purge");
                format!("purge {n}")
            }
        }
        94..=96 => {
            let config = QueueConfig {
                completed_retain: rng.u32(0..8),
                dead_retain: rng.u64(1..8),
                ..QueueConfig::default()
            };
            broker.configure(&q, config).await.expect("configure");
            format!("configure {q}")
        }
        _ => {
            if rng.bool() {
                broker.pause(&q).await.ok();
                format!("pause {q}")
            } else {
                broker.resume(&q).await.ok();
                format!("resume {q}")
            }
        }
    };
    (what, true)
}

/// Opens every image and checks its state against the history; returns a description of each
/// violation.
async fn check_images(
    seed: u64,
    durability: Durability,
    history: &[Step],
    initial: &Observed,
    images: Vec<PowerLossImage>,
) -> Vec<String> {
    let mut violations = Vec::new();
    for image in images {
        let state_after = |j: usize| {
            if j == 0 {
                initial
            } else {
                &history[j - 1].state
            }
        };
        // Steps are numbered from 1; step 0 is the state before the first.
        let hi = history
            .iter()
            .take_while(|s| s.ops_before < image.op)
            .count();
        let promised = |s: &Step| match durability {
            Durability::Fsync => s.ops_after < image.op,
            Durability::Interval(_) | Durability::Off => {
                s.ops_after < image.op && s.log_syncs_after < image.log_syncs
            }
        };
        // The last step whose return promised durability; the log is sequential, so
        // everything before it is durable too.
        let lo = history
            .iter()
            .enumerate()
            .filter(|(_, s)| s.durable_on_return && promised(s))
            .map(|(i, _)| i + 1)
            .next_back()
            .unwrap_or(0);
        let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
        let recovered = match EmbeddedBroker::open_simulated(
            &image.disk,
            DIR,
            options(&clock, durability),
        ) {
            Ok(broker) => {
                // Observe at the time of the candidate states: the clock only matters for the
                // oldest-ready age, which is compared at the clock of the matching step.
                let state = observe(&broker).await;
                broker.close().await;
                state
            }
            Err(err) => {
                violations.push(format!(
                    "seed {seed} {durability}: power loss before op {}: the broker does not open: {err}",
                    image.op
                ));
                continue;
            }
        };
        let matches = |j: usize| same_durable_state(&recovered, state_after(j));
        if !(lo..=hi).any(matches) {
            let found = (0..=history.len()).find(|&j| matches(j));
            let nearest = (lo..=hi)
                .min_by_key(|&j| difference(&recovered, state_after(j)).len())
                .unwrap_or(lo);
            violations.push(format!(
                "seed {seed} {durability}: power loss before op {} (steps {lo}..={hi} allowed, step {hi} = {:.120}): recovered state {} ; nearest allowed step {nearest} differs in: {:.600}",
                image.op,
                history.get(hi.saturating_sub(1)).map_or("-", |s| &s.what),
                match found {
                    Some(j) => format!("equals step {j}, outside the allowed range"),
                    None => "matches no step".into(),
                },
                format!("{:?}", difference(&recovered, state_after(nearest))),
            ));
            if std::env::var_os("POWER_LOSS_DEBUG").is_some() {
                println!(
                    "against step {hi}: {:?}",
                    difference(&recovered, state_after(hi))
                );
            }
        }
    }
    violations
}

/// States compared as far as they survive a restart: tasks and queues, but not the clock-
/// dependent oldest-ready age (both are read at different times of one manual clock).
fn same_durable_state(a: &Observed, b: &Observed) -> bool {
    a == b
}

fn difference(a: &Observed, b: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    let by_id =
        |o: &Observed| -> BTreeMap<_, _> { o.tasks.iter().map(|t| (t.id, t.clone())).collect() };
    let (ta, tb) = (by_id(a), by_id(b));
    for (id, task) in &ta {
        match tb.get(id) {
            None => out.push(format!("recovered has extra task {id} ({:?})", task.state)),
            Some(other) if other != task => {
                out.push(if std::env::var_os("POWER_LOSS_DEBUG").is_some() {
                    format!("task {id}: recovered {task:?} vs {other:?}")
                } else {
                    format!(
                        "task {id}: recovered {:?} attempt {} vs {:?} attempt {}",
                        task.state, task.attempt, other.state, other.attempt
                    )
                })
            }
            Some(_) => {}
        }
    }
    for (id, task) in &tb {
        if !ta.contains_key(id) {
            out.push(format!("recovered lacks task {id} ({:?})", task.state));
        }
    }
    for (qa, qb) in a.queues.iter().zip(&b.queues) {
        if qa != qb {
            out.push(format!(
                "queue {}: recovered {:?} vs {:?}",
                qa.0,
                (&qa.2, &qa.3),
                (&qb.2, &qb.3)
            ));
        }
    }
    if a.queues.len() != b.queues.len() {
        out.push(format!(
            "{} queues recovered, {} expected",
            a.queues.len(),
            b.queues.len()
        ));
    }
    out.truncate(6);
    out
}

/// Runs `seeds` workloads of `steps` steps under `durability`, with a power loss planned
/// before every `every`-th disk operation (each with its own seed for the image), and checks
/// every image.
///
/// `FLOODWAY_POWER_LOSS_SEEDS=n` runs `n` seeds instead (from the same first one), and
/// `FLOODWAY_POWER_LOSS_EVERY=k` plans a power loss before every `k`-th operation: the long
/// run whose figures docs/guarantees.md gives.
async fn power_losses(
    durability: Durability,
    seeds: std::ops::Range<u64>,
    steps: usize,
    every: u64,
) {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds = match env("FLOODWAY_POWER_LOSS_SEEDS") {
        Some(n) => seeds.start..seeds.start + n,
        None => seeds,
    };
    let every = env("FLOODWAY_POWER_LOSS_EVERY").unwrap_or(every).max(1);
    let runs = seeds.end - seeds.start;
    let mut images_checked = 0;
    let mut violations = Vec::new();
    for seed in seeds {
        let plan = |start: u64| -> Vec<(u64, u64)> {
            (start + 1..start + 20_000)
                .filter(|op| (op + seed) % every == 0)
                .map(|op| (op, seed * 1_000_003 + op))
                .collect()
        };
        let (history, initial, images) = run_workload(seed, durability, steps, plan).await;
        images_checked += images.len();
        violations.extend(check_images(seed, durability, &history, &initial, images).await);
    }
    println!(
        "{durability}: {runs} workloads of {steps} calls, {images_checked} power-loss images checked, {} violations",
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{} violations, first ones:\n{}",
        violations.len(),
        violations
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(images_checked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_with_fsync_loses_nothing_acknowledged() {
    power_losses(Durability::Fsync, 0..6, 120, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_with_interval_loses_only_changes_since_the_last_sync() {
    power_losses(
        Durability::Interval(Duration::from_millis(2)),
        100..104,
        120,
        3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_with_sync_off_loses_only_changes_since_the_last_sync() {
    power_losses(Durability::Off, 200..204, 120, 3).await;
}

#[allow(
    dead_code,
    reason = "kept for a quick look at a directory while debugging"
)]
fn describe(disk: &SimulatedDisk) -> String {
    disk.files()
        .iter()
        .map(|(p, len)| {
            format!(
                "{} {len}",
                p.strip_prefix(Path::new(DIR)).unwrap_or(p).display()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Eight producers enqueue concurrently (so group commit batches their calls) until the disk
/// loses power at a random operation; the broker must then refuse every call, and every
/// enqueue it acknowledged must be in what the next boot recovers, whole, with nothing that
/// no producer sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_acknowledged_before_a_power_loss_survive_it() {
    let mut acknowledged_total = 0;
    for seed in 0..12u64 {
        let disk = SimulatedDisk::new();
        let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
        let broker = EmbeddedBroker::open_simulated(&disk, DIR, options(&clock, Durability::Fsync))
            .expect("open");
        disk.crash_after(fastrand::Rng::with_seed(seed).u64(5..120));
        let producers: Vec<_> = (0..8u64)
            .map(|producer| {
                let broker = broker.clone();
                tokio::spawn(async move {
                    let mut acknowledged = Vec::new();
                    for call in 0..1_000u64 {
                        let batch: Vec<_> = (0..3)
                            .map(|i| NewTask::new("k", format!("{producer}/{call}/{i}")))
                            .collect();
                        match broker.enqueue(&queue(0), batch).await {
                            Ok(ids) => acknowledged.push((call, ids)),
                            Err(err) => {
                                assert!(
                                    matches!(err, floodway_core::BrokerError::Unavailable(_)),
                                    "{err}"
                                );
                                return (producer, acknowledged, call);
                            }
                        }
                    }
                    panic!("the disk never lost power");
                })
            })
            .collect();
        let mut results = Vec::new();
        for producer in producers {
            results.push(producer.await.expect("producer"));
        }
        assert!(disk.crashed());
        assert!(
            broker.stats(None).await.is_err(),
            "a broker whose disk died refuses calls"
        );
        broker.close().await;

        let rebooted = disk.after_power_loss(seed);
        let broker =
            EmbeddedBroker::open_simulated(&rebooted, DIR, options(&clock, Durability::Fsync))
                .expect("reopen after the power loss");
        let recovered: BTreeMap<String, floodway_core::TaskId> = observe(&broker)
            .await
            .tasks
            .into_iter()
            .map(|t| (String::from_utf8(t.payload.to_vec()).unwrap(), t.id))
            .collect();
        for (producer, acknowledged, failed_call) in &results {
            for (call, ids) in acknowledged {
                for (i, enqueued) in ids.iter().enumerate() {
                    assert_eq!(
                        recovered.get(&format!("{producer}/{call}/{i}")),
                        Some(&enqueued.id),
                        "seed {seed}: acknowledged task {producer}/{call}/{i} lost"
                    );
                }
            }
            // The call that failed may or may not be there, but whole.
            let present = (0..3)
                .filter(|i| recovered.contains_key(&format!("{producer}/{failed_call}/{i}")))
                .count();
            assert!(
                present == 0 || present == 3,
                "seed {seed}: half a batch recovered"
            );
            acknowledged_total += acknowledged.len();
        }
        let sent = |payload: &str| {
            let mut parts = payload.split('/').map(|p| p.parse::<u64>().unwrap());
            let (producer, call) = (parts.next().unwrap(), parts.next().unwrap());
            results
                .iter()
                .any(|(p, _, failed)| *p == producer && call <= *failed)
        };
        assert!(
            recovered.keys().all(|p| sent(p)),
            "seed {seed}: a task nobody sent"
        );
        broker.close().await;
    }
    assert!(acknowledged_total > 0);
}
