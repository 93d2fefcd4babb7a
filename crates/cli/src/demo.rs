//! `floodway demo`: the order-processing example, end to end, on a temporary data directory.
//!
//! A producer (an API gateway, say) places orders as `charge_card` tasks on the `payments`
//! queue. A worker (the floodway-worker runtime, with typed serde handlers) runs a pipeline:
//! a successful `charge_card` enqueues `reserve_stock` on `inventory`, which enqueues
//! `send_email` on `emails`. Successors carry idempotency keys (`order-{n}-reserve`,
//! `order-{n}-email`), so a step that runs again after a crash or a lost ack cannot enqueue
//! its successor twice.
//!
//! Each handler calls a simulated downstream that takes a few milliseconds, sometimes tens
//! (the handler sleeps: that is the simulated work), fails transiently now and then (the task
//! is retried with backoff) and sometimes permanently (a declined card, an item out of stock,
//! an unknown mailbox: the task goes to the dead letters). Every answer is a hash of the seed,
//! the step, the order and the attempt, so two runs with the same seed and `--tasks` make the
//! same decisions and end with the same counts whatever the scheduling.
//!
//! The payments queue holds at most [`PAYMENTS_LENGTH_MAX`] waiting tasks and rejects beyond
//! that: when the producer outruns the workers it is pushed back (`QueueFull`) and waits before
//! offering the batch again. That is backpressure, and the summary counts it.
//!
//! The summary's `lost` is checked, not assumed: every id an enqueue acknowledged is looked up
//! in the broker at the end, and any that is neither completed nor dead-lettered is lost.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use floodway_core::{
    Broker, BrokerError, DeadReason, NewTask, QueueConfig, QueueName, RetryPolicy, TaskId,
    TaskState, limits,
};
use floodway_embedded::EmbeddedBroker;
use floodway_worker::{Outcome, TaskContext, Worker, WorkerReport};
use serde::{Deserialize, Serialize};

use crate::data::{Access, Global};
use crate::exit::bad_input;
use crate::output;

/// Orders placed unless `--tasks` says otherwise: 5 to 10 seconds of work on a 2-core
/// machine with the default durability.
const ORDERS_DEFAULT: u64 = 10_000;

/// Most orders `--tasks` accepts. Every task of the run is kept for the final check, so the
/// queues' `completed_retain` must hold them all.
const ORDERS_MAX: u64 = 200_000;

/// Waiting tasks the payments queue holds before it pushes back on the producer.
const PAYMENTS_LENGTH_MAX: u64 = 1000;

/// Orders the producer offers per enqueue call.
const PRODUCER_BATCH: usize = 100;

/// Longest the producer waits after being pushed back before offering the batch again.
const PRODUCER_BACKOFF_MAX: Duration = Duration::from_millis(25);

/// The pipeline's three steps, each on its own queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    ChargeCard,
    ReserveStock,
    SendEmail,
}

impl Step {
    const ALL: [Step; 3] = [Step::ChargeCard, Step::ReserveStock, Step::SendEmail];

    fn kind(self) -> &'static str {
        match self {
            Step::ChargeCard => "charge_card",
            Step::ReserveStock => "reserve_stock",
            Step::SendEmail => "send_email",
        }
    }

    fn queue(self) -> QueueName {
        let name = match self {
            Step::ChargeCard => "payments",
            Step::ReserveStock => "inventory",
            Step::SendEmail => "emails",
        };
        QueueName::new(name).expect("demo queue names are valid")
    }

    fn of_kind(kind: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.kind() == kind)
    }

    /// How often the downstream of this step fails for good, and for now.
    fn failure_rates(self) -> (f64, f64) {
        match self {
            Step::ChargeCard => (0.02, 0.10),
            Step::ReserveStock => (0.01, 0.05),
            Step::SendEmail => (0.005, 0.08),
        }
    }

    /// The permanent and the transient error of this step's downstream.
    fn errors(self) -> (&'static str, &'static str) {
        match self {
            Step::ChargeCard => ("card declined", "payment gateway timed out"),
            Step::ReserveStock => ("item out of stock", "inventory service unavailable"),
            Step::SendEmail => ("mailbox does not exist", "mail server busy, try later"),
        }
    }

    /// The step after this one, and the idempotency key of its task for `order`.
    fn next(self, order: u64) -> Option<(Step, String)> {
        match self {
            Step::ChargeCard => Some((Step::ReserveStock, format!("order-{order}-reserve"))),
            Step::ReserveStock => Some((Step::SendEmail, format!("order-{order}-email"))),
            Step::SendEmail => None,
        }
    }
}

/// `floodway demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Orders the producer places; each starts a pipeline of up to three tasks.
    #[arg(long, default_value_t = ORDERS_DEFAULT)]
    tasks: u64,
    /// Seed of the simulated downstream's delays and failures; the same seed gives the same
    /// decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Handler slots per queue.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Give up if the tasks have not all finished after this long.
    #[arg(long, default_value = "5m", value_parser = floodway_core::duration::parse)]
    timeout: Duration,
}

/// An order, the payload of every step.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    email: String,
    amount_cents: u64,
    items: Vec<Item>,
}

/// One line of an order.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
}

impl Order {
    /// Order number `id`, made up from the seed.
    fn new(id: u64, seed: u64) -> Order {
        let h = mix(seed, 0x0bde5, id, 0);
        let items = (0..1 + h % 3)
            .map(|i| Item {
                sku: format!("SKU-{:05}", mix(seed, 0x5c0, id, i as u32) % 20_000),
                quantity: 1 + (h >> (8 + i * 4)) as u32 % 4,
            })
            .collect();
        Order {
            id,
            customer: format!("customer-{}", h % 5000),
            email: format!("customer-{}@example.com", h % 5000),
            amount_cents: 500 + (h >> 20) % 50_000,
            items,
        }
    }
}

/// SplitMix64's finaliser over the inputs: a well-spread 64-bit hash, so each decision is a
/// pure function of what it depends on.
fn mix(seed: u64, salt: u64, order: u64, attempt: u32) -> u64 {
    let mut z = seed
        ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ order.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ u64::from(attempt).wrapping_mul(0x94d0_49bb_1331_11eb);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in `[0, 1)` from a hash.
fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// What the simulated downstream answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    /// Try again later.
    Transient(&'static str),
    /// Trying again cannot help.
    Permanent(&'static str),
}

/// The payment provider, the inventory service and the mail server, simulated.
#[derive(Clone, Copy, Debug)]
struct Downstream {
    seed: u64,
}

impl Downstream {
    /// How long attempt `attempt` of `step` for `order` takes, and how it ends. A permanent
    /// failure does not depend on the attempt (a declined card stays declined); a transient one
    /// does.
    fn call(self, step: Step, order: u64, attempt: u32) -> (Duration, Answer) {
        let salt = step as u64 + 1;
        let latency = unit(mix(self.seed, salt << 8, order, attempt));
        let millis = if latency < 0.80 {
            1.0 + latency / 0.80 * 4.0
        } else if latency < 0.97 {
            5.0 + (latency - 0.80) / 0.17 * 15.0
        } else {
            20.0 + (latency - 0.97) / 0.03 * 40.0
        };
        let (permanent_rate, transient_rate) = step.failure_rates();
        let (permanent, transient) = step.errors();
        let answer = if unit(mix(self.seed, salt << 16, order, 0)) < permanent_rate {
            Answer::Permanent(permanent)
        } else if unit(mix(self.seed, salt << 24, order, attempt)) < transient_rate {
            Answer::Transient(transient)
        } else {
            Answer::Ok
        };
        (Duration::from_secs_f64(millis / 1000.0), answer)
    }
}

/// What the producer and the handlers share.
struct Shop {
    broker: Arc<EmbeddedBroker>,
    downstream: Downstream,
    /// Every task id an enqueue acknowledged (duplicates answer an id already here).
    acknowledged: Mutex<HashSet<TaskId>>,
    /// Times the payments queue pushed back on the producer.
    pushed_back: AtomicU64,
}

impl Shop {
    fn acknowledge(&self, ids: impl IntoIterator<Item = TaskId>) {
        self.acknowledged
            .lock()
            .expect("no code panics holding this lock")
            .extend(ids);
    }

    fn acknowledged_count(&self) -> u64 {
        self.acknowledged
            .lock()
            .expect("no code panics holding this lock")
            .len() as u64
    }

    /// Runs one attempt of `step` for `order`: the downstream call, then the successor.
    async fn handle(&self, step: Step, ctx: TaskContext, order: Order) -> Outcome {
        let (latency, answer) = self.downstream.call(step, order.id, ctx.attempt());
        tokio::time::sleep(latency).await;
        match answer {
            Answer::Transient(error) => return Outcome::retry(error),
            Answer::Permanent(error) => return Outcome::fail(error),
            Answer::Ok => {}
        }
        let Some((next, key)) = step.next(order.id) else {
            return Outcome::Complete;
        };
        let task = match NewTask::json(next.kind(), &order) {
            Ok(task) => task.idempotency_key(key),
            Err(error) => return Outcome::fail(error),
        };
        // The successor is enqueued before this task is acked: if the ack is lost, the step
        // runs again and its idempotency key answers the first successor's id.
        match self.broker.enqueue(&next.queue(), vec![task]).await {
            Ok(enqueued) => {
                self.acknowledge(enqueued.iter().map(|e| e.id));
                Outcome::Complete
            }
            Err(error) => Outcome::retry(error),
        }
    }

    /// Places `orders` orders, in batches, waiting whenever the payments queue pushes back.
    async fn produce(&self, orders: u64) -> anyhow::Result<()> {
        let queue = Step::ChargeCard.queue();
        let mut next = 0;
        while next < orders {
            let end = (next + PRODUCER_BATCH as u64).min(orders);
            let batch: Vec<NewTask> = (next..end)
                .map(|id| {
                    NewTask::json(
                        Step::ChargeCard.kind(),
                        &Order::new(id, self.downstream.seed),
                    )
                    .map(|task| task.idempotency_key(format!("order-{id}-charge")))
                })
                .collect::<Result<_, _>>()?;
            loop {
                match self.broker.enqueue(&queue, batch.clone()).await {
                    Ok(enqueued) => {
                        self.acknowledge(enqueued.iter().map(|e| e.id));
                        break;
                    }
                    Err(BrokerError::QueueFull { retry_after, .. }) => {
                        // Backpressure: the workers are behind. Wait, then offer it again.
                        self.pushed_back.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(retry_after.min(PRODUCER_BACKOFF_MAX)).await;
                    }
                    Err(error) => return Err(error).context("placing orders"),
                }
            }
            next = end;
        }
        Ok(())
    }
}

/// The demo's result, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Summary {
    /// Tasks whose enqueue was acknowledged: orders plus the successors the pipeline added.
    enqueued: u64,
    completed: u64,
    /// Failed attempts that were scheduled for another try.
    retried: u64,
    dead_lettered: u64,
    /// Acknowledged tasks that ended neither completed nor dead-lettered. Must be 0.
    lost: u64,
    /// Finished tasks (completed or dead-lettered) per second of the run.
    tasks_per_s: f64,
    orders: u64,
    elapsed_s: f64,
    seed: u64,
    durability: String,
    /// Times the payments queue refused a batch because it was full.
    producer_pushed_back: u64,
    dead_by_reason: BTreeMap<&'static str, u64>,
    kinds: BTreeMap<&'static str, KindSummary>,
    worker: WorkerReport,
}

/// What happened to the tasks of one kind.
#[derive(Debug, Default, Serialize)]
struct KindSummary {
    enqueued: u64,
    completed: u64,
    dead_lettered: u64,
}

/// Runs `floodway demo`.
pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    if !(1..=ORDERS_MAX).contains(&args.tasks) {
        return Err(bad_input(format!(
            "--tasks must be between 1 and {ORDERS_MAX}"
        )));
    }
    if !(1..=limits::BATCH_SIZE_MAX).contains(&args.concurrency) {
        return Err(bad_input(format!(
            "--concurrency must be between 1 and {}",
            limits::BATCH_SIZE_MAX
        )));
    }
    let dir = tempfile::Builder::new()
        .prefix("floodway-demo-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let demo_global = Global {
        data: dir.path().to_owned(),
        durability: global.durability,
        json: global.json,
    };
    if !global.json {
        eprintln!(
            "floodway demo: {} orders, data in {} (temporary, durability {})",
            args.tasks,
            dir.path().display(),
            global.durability
        );
    }
    let broker = Arc::new(demo_global.open(Access::Create, Some(Duration::from_millis(100)))?);
    let result = run_on(&broker, &args, global).await;
    broker.close().await;
    let summary = result?;
    if global.json {
        output::print_json(&summary)
    } else {
        print_summary(&summary)
    }
}

/// The demo on an open broker.
async fn run_on(
    broker: &Arc<EmbeddedBroker>,
    args: &Args,
    global: &Global,
) -> anyhow::Result<Summary> {
    let config = QueueConfig {
        retry: RetryPolicy {
            max_attempts: 5,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            ..RetryPolicy::default()
        },
        // Keep every finished task, so the final check can find each one.
        completed_retain: limits::COMPLETED_RETAIN_MAX,
        dead_retain: limits::DEAD_RETAIN_MAX,
        ..QueueConfig::default()
    };
    for step in Step::ALL {
        let length_max = (step == Step::ChargeCard).then_some(PAYMENTS_LENGTH_MAX);
        let config = QueueConfig {
            length_max,
            ..config.clone()
        };
        broker.configure(&step.queue(), config).await?;
    }

    let shop = Arc::new(Shop {
        broker: broker.clone(),
        downstream: Downstream { seed: args.seed },
        acknowledged: Mutex::new(HashSet::new()),
        pushed_back: AtomicU64::new(0),
    });
    let mut builder = Worker::builder(broker.clone())
        .name("demo-worker")
        .poll_wait(Duration::from_millis(100))
        .grace_period(Duration::from_secs(5))
        // Far above the slowest simulated call (60 ms), so only a stuck handler times out and
        // a run's decisions stay a function of the seed.
        .timeout(Duration::from_secs(10));
    for step in Step::ALL {
        let shop = shop.clone();
        builder = builder
            .queue(step.queue().as_str(), args.concurrency)
            .handler(step.kind(), move |ctx: TaskContext, order: Order| {
                let shop = shop.clone();
                async move { shop.handle(step, ctx, order).await }
            });
    }
    let worker = builder.build()?;
    let handle = worker.handle();

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.timeout;
    let running = tokio::spawn(worker.run(std::future::pending()));
    let producer = {
        let shop = shop.clone();
        let orders = args.tasks;
        tokio::spawn(async move { shop.produce(orders).await })
    };
    tokio::pin!(producer);
    let progress = output::progress(output::Progress::GrowingBar, 0, "tasks finished");
    let mut producer_done = false;
    let interrupted = floodway_worker::shutdown_signal();
    tokio::pin!(interrupted);
    // Whatever ends the wait (all done, an error, the timeout, Ctrl-C), the worker is shut
    // down below before the broker closes.
    let waited: anyhow::Result<()> = async {
        loop {
            // Read the counts before the broker, so a change after the look wakes the wait.
            let seen = handle.report();
            progress.set_length(shop.acknowledged_count());
            progress.set_position(seen.completed + seen.dead_lettered);
            if producer_done && all_finished(broker).await? {
                return Ok(());
            }
            tokio::select! {
                joined = &mut producer, if !producer_done => {
                    joined.context("the producer panicked")??;
                    producer_done = true;
                }
                changed = handle.wait_for(|report| *report != seen) => {
                    changed.context("the worker stopped early")?;
                }
                () = tokio::time::sleep_until(deadline) => anyhow::bail!(
                    "the tasks did not all finish within {} (--timeout)",
                    floodway_core::duration::format(args.timeout)
                ),
                () = &mut interrupted => anyhow::bail!("interrupted"),
            }
        }
    }
    .await;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    producer.abort();
    handle.shutdown();
    let report = running.await.context("the worker panicked")?;
    waited?;

    let acknowledged: Vec<TaskId> = shop
        .acknowledged
        .lock()
        .expect("no code panics holding this lock")
        .iter()
        .copied()
        .collect();
    let mut kinds: BTreeMap<&'static str, KindSummary> = Step::ALL
        .into_iter()
        .map(|step| (step.kind(), KindSummary::default()))
        .collect();
    let mut lost = 0;
    for id in &acknowledged {
        let task = match broker.get(*id).await {
            Ok(task) => task,
            Err(BrokerError::UnknownTask(_)) => {
                lost += 1;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let kind = Step::of_kind(&task.kind)
            .map(Step::kind)
            .context("the broker holds a task of a kind the demo never enqueued")?;
        let counts = kinds.get_mut(kind).expect("every kind has an entry");
        counts.enqueued += 1;
        match task.state {
            TaskState::Completed => counts.completed += 1,
            TaskState::Dead => counts.dead_lettered += 1,
            _ => lost += 1,
        }
    }

    let stats = broker.stats(None).await?;
    let mut dead_by_reason = BTreeMap::new();
    for reason in DeadReason::ALL {
        let count: u64 = stats.iter().map(|s| s.totals.dead.get(reason)).sum();
        if count > 0 {
            dead_by_reason.insert(reason.as_str(), count);
        }
    }
    let completed: u64 = stats.iter().map(|s| s.totals.completed).sum();
    let dead_lettered: u64 = stats.iter().map(|s| s.totals.dead.total()).sum();
    let elapsed_s = elapsed.as_secs_f64();
    Ok(Summary {
        enqueued: acknowledged.len() as u64,
        completed,
        retried: stats.iter().map(|s| s.totals.retried).sum(),
        dead_lettered,
        lost,
        tasks_per_s: ((completed + dead_lettered) as f64 / elapsed_s.max(1e-3)).round(),
        orders: args.tasks,
        elapsed_s: (elapsed_s * 1000.0).round() / 1000.0,
        seed: args.seed,
        durability: global.durability.to_string(),
        producer_pushed_back: shop.pushed_back.load(Ordering::Relaxed),
        dead_by_reason,
        kinds,
        worker: report,
    })
}

/// True when no queue has a task waiting or running.
async fn all_finished(broker: &EmbeddedBroker) -> anyhow::Result<bool> {
    Ok(broker
        .stats(None)
        .await?
        .iter()
        .all(|s| s.counts.waiting() == 0 && s.counts.active == 0))
}

/// The human summary: the totals, then one row per kind.
fn print_summary(summary: &Summary) -> anyhow::Result<()> {
    let mut totals = output::table(["summary", ""]);
    let rows = [
        ("orders", summary.orders.to_string()),
        ("enqueued", summary.enqueued.to_string()),
        ("completed", summary.completed.to_string()),
        ("retried", summary.retried.to_string()),
        ("dead-lettered", summary.dead_lettered.to_string()),
        ("lost", summary.lost.to_string()),
        ("tasks/s", format!("{:.0}", summary.tasks_per_s)),
        (
            "elapsed",
            output::human_duration(Duration::from_secs_f64(summary.elapsed_s)),
        ),
        (
            "producer pushed back",
            format!("{} times", summary.producer_pushed_back),
        ),
    ];
    for (name, value) in rows {
        totals.add_row([name.to_owned(), value]);
    }
    output::print(totals)?;
    let mut kinds = output::table(["kind", "enqueued", "completed", "dead-lettered"]);
    for (kind, counts) in &summary.kinds {
        kinds.add_row([
            (*kind).to_owned(),
            counts.enqueued.to_string(),
            counts.completed.to_string(),
            counts.dead_lettered.to_string(),
        ]);
    }
    output::print(kinds)?;
    let reasons: Vec<String> = summary
        .dead_by_reason
        .iter()
        .map(|(reason, count)| format!("{reason} {count}"))
        .collect();
    if !reasons.is_empty() {
        output::print(format!("dead letters by reason: {}", reasons.join(", ")))?;
    }
    if summary.lost == 0 {
        output::print(
            "every acknowledged task was checked: each one completed or was dead-lettered",
        )?;
    } else {
        output::print(format!(
            "LOST {} acknowledged tasks: they neither completed nor were dead-lettered",
            summary.lost
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downstream_is_a_function_of_its_inputs() {
        let downstream = Downstream { seed: 7 };
        for order in 0..100 {
            assert_eq!(
                downstream.call(Step::ChargeCard, order, 1),
                downstream.call(Step::ChargeCard, order, 1)
            );
        }
    }

    #[test]
    fn failure_rates_are_roughly_as_configured() {
        let downstream = Downstream { seed: 1 };
        let n = 20_000;
        let (mut permanent, mut transient, mut slow) = (0, 0, 0);
        for order in 0..n {
            let (latency, answer) = downstream.call(Step::ChargeCard, order, 1);
            assert!(latency >= Duration::from_millis(1) && latency <= Duration::from_millis(60));
            if latency > Duration::from_millis(20) {
                slow += 1;
            }
            match answer {
                Answer::Permanent(_) => permanent += 1,
                Answer::Transient(_) => transient += 1,
                Answer::Ok => {}
            }
        }
        let share = |count: u64| count as f64 / n as f64;
        assert!((0.015..0.025).contains(&share(permanent)), "{permanent}");
        assert!((0.08..0.12).contains(&share(transient)), "{transient}");
        assert!((0.02..0.04).contains(&share(slow)), "{slow}");
    }

    #[test]
    fn a_declined_card_stays_declined() {
        let downstream = Downstream { seed: 3 };
        let declined = (0..1000)
            .find(|&order| {
                matches!(
                    downstream.call(Step::ChargeCard, order, 1).1,
                    Answer::Permanent(_)
                )
            })
            .expect("about 2% of cards are declined");
        for attempt in 2..=5 {
            assert!(matches!(
                downstream.call(Step::ChargeCard, declined, attempt).1,
                Answer::Permanent(_)
            ));
        }
    }
}
