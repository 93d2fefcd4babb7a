//! Compares redis-rs and fred on what floodway's Redis broker does: concurrent EVALSHA calls on
//! one multiplexed connection, each carrying a batch of arguments and returning a batch of
//! bulk strings. Prints calls/s, items/s and client CPU per item for each client and shape.
//!
//! Usage: redis-clients <redis-url> [seconds per case]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;

/// Returns its arguments: the shape of a batch call (args in, one bulk string per item out).
const ECHO: &str = "return ARGV";

fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

struct Case {
    callers: usize,
    batch: usize,
}

async fn run_case<F, Fut>(case: &Case, seconds: u64, call: F) -> (f64, f64)
where
    F: Fn(Vec<Vec<u8>>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = usize> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let args: Vec<Vec<u8>> = (0..case.batch).map(|i| format!("{{\"enqueued_us\":1795338930123456,\"sequence\":{i:>10},\"order\":\"ord_4f1c2e9a\",\"amount_cents\":1999}}").into_bytes()).collect();
    let started = Instant::now();
    let cpu = cpu_seconds();
    let mut tasks = Vec::new();
    for _ in 0..case.callers {
        let (call, stop, calls, args) = (call.clone(), stop.clone(), calls.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = call(args.clone()).await;
                assert_eq!(n, args.len());
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let calls = calls.load(Ordering::Relaxed) as f64;
    let items = calls * case.batch as f64;
    (calls / elapsed, cpu / items * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let url = std::env::args().nth(1).unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let seconds: u64 = std::env::args().nth(2).map_or(5, |s| s.parse().unwrap());
    let cases = [
        Case { callers: 1, batch: 1 },
        Case { callers: 64, batch: 1 },
        Case { callers: 4, batch: 100 },
        Case { callers: 8, batch: 500 },
    ];

    let rs = redis::Client::open(url.as_str()).unwrap();
    let rs_con = rs
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let script = Arc::new(redis::Script::new(ECHO));

    let fred_client = Builder::from_config(Config::from_url(&url).unwrap()).build().unwrap();
    fred_client.init().await.unwrap();
    let sha: String = fred_client.script_load(ECHO).await.unwrap();

    println!("client,callers,batch,calls_per_s,items_per_s,client_cpu_us_per_item");
    for round in 0..2 {
        for case in &cases {
            let (con, script) = (rs_con.clone(), script.clone());
            let (rate, cpu) = run_case(case, seconds, move |args: Vec<Vec<u8>>| {
                let (mut con, script) = (con.clone(), script.clone());
                async move {
                    let mut inv = script.prepare_invoke();
                    inv.key("k");
                    for a in &args {
                        inv.arg(a.as_slice());
                    }
                    let out: Vec<Vec<u8>> = inv.invoke_async(&mut con).await.unwrap();
                    out.len()
                }
            })
            .await;
            println!("redis-rs,{},{},{rate:.0},{:.0},{cpu:.2}  # round {round}", case.callers, case.batch, rate * case.batch as f64);

            let (client, sha) = (fred_client.clone(), sha.clone());
            let (rate, cpu) = run_case(case, seconds, move |args: Vec<Vec<u8>>| {
                let (client, sha) = (client.clone(), sha.clone());
                async move {
                    let args: Vec<Value> = args.into_iter().map(|a| Value::Bytes(a.into())).collect();
                    let out: Vec<Value> = client.evalsha(sha, vec!["k"], args).await.unwrap();
                    out.len()
                }
            })
            .await;
            println!("fred,{},{},{rate:.0},{:.0},{cpu:.2}  # round {round}", case.callers, case.batch, rate * case.batch as f64);
        }
    }
}
