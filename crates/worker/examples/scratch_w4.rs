//! scratch
use floodway_core::*;
use floodway_embedded::*;
use floodway_worker::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let depth: u64 = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let snap: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(u64::MAX);
    let durability: Durability = args
        .get(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(Durability::Off);
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(
        EmbeddedBroker::open(
            dir.path(),
            Options {
                durability,
                snapshot_log_bytes_min: snap,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let fill = |q: QueueName, n: u64| {
        let b = broker.clone();
        async move {
            for i in 0..n / 1000 {
                let tasks = (0..1000).map(|j| NewTask::new("noop", format!("{{\"enqueued_us\":1795000000000000,\"sequence\":{:>10},\"order\":\"ord_4f1c2e9a\",\"amount_cents\":1999}}", i*1000+j))).collect();
                b.enqueue(&q, tasks).await.unwrap();
            }
        }
    };
    fill(QueueName::new("depth").unwrap(), depth).await;
    let t = Instant::now();
    fill(QueueName::new("w").unwrap(), 100_000).await;
    println!("enqueue {:?}", t.elapsed());
    let worker = Worker::builder(broker.clone())
        .queue("w", 1000)
        .reserve_batch_max(500)
        .poll_wait(Duration::from_millis(100))
        .raw_handler("noop", |_c: TaskContext, _p: Vec<u8>| async {
            Outcome::Complete
        })
        .build()
        .unwrap();
    let handle = worker.handle();
    let start = Instant::now();
    let running = tokio::spawn(worker.run(std::future::pending()));
    handle.wait_for(|r| r.completed >= 100_000).await.unwrap();
    let el = start.elapsed();
    println!(
        "depth {depth}: drain {:.0} tasks/s",
        100_000f64 / el.as_secs_f64()
    );
    handle.shutdown();
    running.await.unwrap();
    broker.close().await;
}
