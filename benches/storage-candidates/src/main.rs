//! floodway storage-candidate benchmark (decision 0001).
//!
//! Runs workload W2 (2 producer threads + 2 worker threads concurrently, N tasks, enqueue
//! batches of 100, reserve up to 100, ack the reserved batch) against each candidate engine,
//! then W1 drain at depth 0 and with 1,000,000 tasks waiting in another queue (W4 idea).
//! Every batch operation is acknowledged only after it is durable; concurrent operations share
//! one sync (group commit). See README.md.

mod commit;
mod fjall_store;
mod log;
mod model;
mod redb_store;
mod sqlite;

use commit::{GroupStore, PipeStore, Res, Store};
use model::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---- fsync counting ---------------------------------------------------------------------------
// The binary defines fsync/fdatasync itself, so every call — from std (redb, fjall, the log) and
// from the statically linked SQLite — lands here, is counted, and goes to the kernel directly.

static FSYNC_CALLS: AtomicU64 = AtomicU64::new(0);
static FDATASYNC_CALLS: AtomicU64 = AtomicU64::new(0);
/// Wall time spent inside fsync/fdatasync, summed over all threads, ns.
static SYNC_NS: AtomicU64 = AtomicU64::new(0);

fn timed_sync(nr: libc::c_long, fd: libc::c_int) -> libc::c_int {
    let t = Instant::now();
    // SAFETY: plain system call with an integer argument.
    let r = unsafe { libc::syscall(nr, fd as libc::c_long) as libc::c_int };
    SYNC_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// Counted fsync(2).
#[unsafe(no_mangle)]
pub extern "C" fn fsync(fd: libc::c_int) -> libc::c_int {
    FSYNC_CALLS.fetch_add(1, Ordering::Relaxed);
    timed_sync(libc::SYS_fsync, fd)
}

/// Counted fdatasync(2).
#[unsafe(no_mangle)]
pub extern "C" fn fdatasync(fd: libc::c_int) -> libc::c_int {
    FDATASYNC_CALLS.fetch_add(1, Ordering::Relaxed);
    timed_sync(libc::SYS_fdatasync, fd)
}

// ---- candidates -----------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cand {
    SqliteA,
    SqliteB,
    RedbA,
    RedbB,
    FjallA,
    FjallAc,
    FjallB,
    Log,
}

const ALL: [Cand; 8] = [
    Cand::SqliteA,
    Cand::SqliteB,
    Cand::RedbA,
    Cand::RedbB,
    Cand::FjallA,
    Cand::FjallAc,
    Cand::FjallB,
    Cand::Log,
];
/// fjall-a (tombstone walk) is left out of the depth test by default: at depth 0 it already
/// drains ~1,000-3,000 tasks/s, so six W1 runs take ~10 minutes. Add it with --depth-candidates.
const DEPTH_DEFAULT: [Cand; 7] = [
    Cand::SqliteA,
    Cand::SqliteB,
    Cand::RedbA,
    Cand::RedbB,
    Cand::FjallAc,
    Cand::FjallB,
    Cand::Log,
];

impl Cand {
    fn name(self) -> &'static str {
        match self {
            Cand::SqliteA => "sqlite-a",
            Cand::SqliteB => "sqlite-b",
            Cand::RedbA => "redb-a",
            Cand::RedbB => "redb-b",
            Cand::FjallA => "fjall-a",
            Cand::FjallAc => "fjall-a-cursor",
            Cand::FjallB => "fjall-b",
            Cand::Log => "log",
        }
    }
    fn parse(s: &str) -> Option<Cand> {
        ALL.iter().copied().find(|c| c.name() == s)
    }
    fn describe(self) -> &'static str {
        match self {
            Cand::SqliteA => {
                "SQLite, engine is the queue (index queue,state,priority desc,seq); WAL, synchronous=FULL; writer thread, 1 txn per group"
            }
            Cand::SqliteB => {
                "SQLite, write-through (ready order in memory, rows by PK); WAL, synchronous=FULL; writer thread, 1 txn per group"
            }
            Cand::RedbA => {
                "redb, engine is the queue (ready table + tasks table); Durability::Immediate; writer thread, 1 txn per group"
            }
            Cand::RedbB => {
                "redb, write-through (ready order in memory, id->record); Durability::Immediate; writer thread, 1 txn per group"
            }
            Cand::FjallA => {
                "fjall, engine is the queue (ready keyspace, prefix scan, tombstones); batch per op + flusher persist(SyncAll)"
            }
            Cand::FjallAc => {
                "fjall, engine is the queue as fjall-a, but range scans start at an in-memory per-priority cursor (seeks past tombstones)"
            }
            Cand::FjallB => {
                "fjall, write-through (ready order in memory, id->record); batch per op + flusher persist(SyncAll)"
            }
            Cand::Log => {
                "append-only log + in-memory state; crc32 length-prefixed deltas; flusher write()+fdatasync()"
            }
        }
    }
}

/// Opens (or reopens) a candidate in `dir`; the string says what the open found.
fn open_store(c: Cand, dir: &Path) -> Res<(Box<dyn Store>, String)> {
    Ok(match c {
        Cand::SqliteA | Cand::SqliteB => {
            let s = sqlite::Sqlite::open(dir, c == Cand::SqliteB)?;
            (Box::new(GroupStore::new(s)), String::new())
        }
        Cand::RedbA | Cand::RedbB => {
            let s = redb_store::Redb::open(dir, c == Cand::RedbB)?;
            (Box::new(GroupStore::new(s)), String::new())
        }
        Cand::FjallA | Cand::FjallAc | Cand::FjallB => {
            let (s, f) = fjall_store::Fjall::open(dir, c == Cand::FjallB, c == Cand::FjallAc)?;
            (Box::new(PipeStore::new(s, f)), String::new())
        }
        Cand::Log => {
            let (e, f, rp) = log::LogEngine::open(dir)?;
            let note = format!(
                "replayed {} records ({} bytes), {} live, {} ready, torn tail {} bytes",
                rp.records, rp.valid_bytes, rp.live, rp.ready, rp.torn_bytes
            );
            (Box::new(PipeStore::new(e, f)), note)
        }
    })
}

// ---- workload ---------------------------------------------------------------------------------

const BATCH: usize = 100;
const RESERVE_N: usize = 100;
const PRODUCERS: usize = 2;
const WORKERS: usize = 2;
const LEASE_MS: u64 = 30_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x
}

fn payload(idx: u64) -> Vec<u8> {
    // ~100-byte JSON carrying the producer's timestamp (µs), as WORKLOADS.md asks.
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    format!(
        r#"{{"ts":{ts},"order":"ord-{:010}","cust":"cust-{:06}","amount_cents":{:07},"ccy":"EUR"}}"#,
        idx,
        mix(idx) % 1_000_000,
        mix(idx ^ 7) % 10_000_000
    )
    .into_bytes()
}

fn make_task(idx: u64, queue: &Arc<str>, kind: &Arc<str>) -> Task {
    let created_at = now_ms();
    Task {
        id: ((created_at as u128) << 64) | idx as u128,
        seq: 0,
        queue: queue.clone(),
        kind: kind.clone(),
        priority: (mix(idx) % 10) as u8,
        attempt: 0,
        max_attempts: 25,
        state: STATE_READY,
        fence: 0,
        lease_expiry: 0,
        created_at,
        payload: payload(idx),
    }
}

struct Phase<'a> {
    store: &'a dyn Store,
    queue: Arc<str>,
    /// Task indexes produced: idx_base .. idx_base + produce.
    idx_base: u64,
    produce: usize,
    batch: usize,
    /// Tasks the workers must ack (0 = no workers). Acks are checked against `seen`.
    consume: usize,
    deadline: Instant,
    /// A deadline ends a producer-only phase early without failing it (bounded preload).
    deadline_ok: bool,
}

struct PhaseOut {
    elapsed: Duration,
    produced: usize,
    consumed: usize,
}

fn run_phase(ph: &Phase, seen: Option<&[AtomicU8]>) -> Res<PhaseOut> {
    let kind: Arc<str> = "charge_card.v1".into();
    let produced = AtomicUsize::new(0);
    let acked = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let err: Mutex<Option<String>> = Mutex::new(None);
    let end: Mutex<Option<Instant>> = Mutex::new(None);
    let n_prod = if ph.produce > 0 { PRODUCERS } else { 0 };
    let n_work = if ph.consume > 0 { WORKERS } else { 0 };
    let barrier = Barrier::new(n_prod + n_work + 1);
    let fail = |e: String| {
        stop.store(true, Ordering::SeqCst);
        err.lock().unwrap().get_or_insert(e);
    };
    let mut start = Instant::now();
    std::thread::scope(|s| {
        for p in 0..n_prod {
            let (fail, barrier, produced, stop, kind) = (&fail, &barrier, &produced, &stop, &kind);
            s.spawn(move || {
                barrier.wait();
                let per = ph.produce / n_prod;
                let lo = p * per;
                let hi = if p + 1 == n_prod {
                    ph.produce
                } else {
                    lo + per
                };
                let mut i = lo;
                while i < hi && !stop.load(Ordering::Relaxed) {
                    if Instant::now() > ph.deadline {
                        if !ph.deadline_ok {
                            fail(format!("producer {p}: deadline passed at {i}/{hi}"));
                        }
                        break;
                    }
                    let j = (i + ph.batch).min(hi);
                    let tasks: Vec<Task> = (i..j)
                        .map(|k| make_task(ph.idx_base + k as u64, &ph.queue, kind))
                        .collect();
                    match ph.store.call(Req::Enqueue(tasks)) {
                        Ok(_) => {
                            produced.fetch_add(j - i, Ordering::Relaxed);
                        }
                        Err(e) => {
                            fail(format!("enqueue: {e}"));
                            break;
                        }
                    }
                    i = j;
                }
            });
        }
        for w in 0..n_work {
            let (fail, barrier, acked, stop, end) = (&fail, &barrier, &acked, &stop, &end);
            s.spawn(move || {
                barrier.wait();
                while acked.load(Ordering::SeqCst) < ph.consume && !stop.load(Ordering::Relaxed) {
                    if Instant::now() > ph.deadline {
                        fail(format!(
                            "worker {w}: deadline passed with {}/{} acked",
                            acked.load(Ordering::SeqCst),
                            ph.consume
                        ));
                        break;
                    }
                    let req = Req::Reserve {
                        queue: ph.queue.clone(),
                        n: RESERVE_N,
                        lease_until: now_ms() + LEASE_MS,
                    };
                    let got = match ph.store.call(req) {
                        Ok(Resp::Reserved(v)) => v,
                        Ok(_) => return fail("reserve: wrong response".into()),
                        Err(e) => return fail(format!("reserve: {e}")),
                    };
                    if got.is_empty() {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    if got.windows(2).any(|w| w[0].priority < w[1].priority) {
                        return fail("reserve returned tasks out of priority order".into());
                    }
                    let n = got.len();
                    let acks: Vec<(Id, u64)> = got.iter().map(|l| (l.id, l.fence)).collect();
                    match ph.store.call(Req::Ack(acks)) {
                        Ok(Resp::Acked(r)) if r.acked == n && r.stale == 0 => {}
                        Ok(Resp::Acked(r)) => {
                            return fail(format!(
                                "ack: {} acked, {} stale of {n}",
                                r.acked, r.stale
                            ));
                        }
                        Ok(_) => return fail("ack: wrong response".into()),
                        Err(e) => return fail(format!("ack: {e}")),
                    }
                    if let Some(seen) = seen {
                        for l in &got {
                            let idx = (l.id as u64).wrapping_sub(ph.idx_base) as usize;
                            match seen.get(idx) {
                                Some(c) => {
                                    c.fetch_add(1, Ordering::Relaxed);
                                }
                                None => {
                                    return fail(format!(
                                        "acked a task from outside this phase: {idx}"
                                    ));
                                }
                            }
                        }
                    }
                    if acked.fetch_add(n, Ordering::SeqCst) + n >= ph.consume {
                        end.lock().unwrap().get_or_insert(Instant::now());
                    }
                }
            });
        }
        barrier.wait();
        start = Instant::now();
    });
    if let Some(e) = err.into_inner().unwrap() {
        return Err(e);
    }
    let finished = end.into_inner().unwrap().unwrap_or_else(Instant::now);
    Ok(PhaseOut {
        elapsed: finished - start,
        produced: produced.into_inner(),
        consumed: acked.into_inner(),
    })
}

fn check_seen(seen: &[AtomicU8]) -> Res<()> {
    let mut missing = 0usize;
    let mut dup = 0usize;
    for c in seen {
        match c.load(Ordering::Relaxed) {
            1 => {}
            0 => missing += 1,
            _ => dup += 1,
        }
    }
    if missing + dup > 0 {
        return Err(format!(
            "verification failed: {missing} never acked, {dup} acked more than once"
        ));
    }
    Ok(())
}

fn count(store: &dyn Store) -> Res<u64> {
    match store.call(Req::Count)? {
        Resp::Count(c) => Ok(c),
        _ => Err("count: wrong response".into()),
    }
}

// ---- measurement ----------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Snap {
    fsync: u64,
    fdatasync: u64,
    commits: u64,
    ops: u64,
    write_bytes: u64,
    wchar: u64,
    cpu_us: u64,
    sync_ns: u64,
}

/// Process CPU time (user + system, all threads incl. engine background threads), µs.
fn cpu_us() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn proc_io() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find_map(|l| {
                l.strip_prefix(k)
                    .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            })
            .unwrap_or(0)
    };
    (get("write_bytes:"), get("wchar:"))
}

fn snap(store: &dyn Store) -> Snap {
    let (write_bytes, wchar) = proc_io();
    let st = store.stats();
    Snap {
        fsync: FSYNC_CALLS.load(Ordering::Relaxed),
        fdatasync: FDATASYNC_CALLS.load(Ordering::Relaxed),
        commits: st.commits.load(Ordering::Relaxed),
        ops: st.ops.load(Ordering::Relaxed),
        write_bytes,
        wchar,
        cpu_us: cpu_us(),
        sync_ns: SYNC_NS.load(Ordering::Relaxed),
    }
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

struct W2Run {
    secs: f64,
    rate: f64,
    syncs: u64,
    commits: u64,
    ops: u64,
    write_bytes: u64,
    wchar: u64,
    cpu_us: u64,
    sync_ns: u64,
    /// fdatasync p50 of the quiet-disk probe just before this run, ms.
    probe_ms: f64,
    disk_bytes: u64,
}

struct Base {
    root: PathBuf,
    n: AtomicU64,
}

impl Base {
    fn fresh(&self, tag: &str) -> PathBuf {
        let d = self
            .root
            .join(format!("{tag}-{}", self.n.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir");
        d
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn w2_once(c: Cand, base: &Base, n: usize, timeout: Duration) -> Res<W2Run> {
    let dir = base.fresh(c.name());
    let result = (|| {
        let (store, _) = open_store(c, &dir)?;
        let seen: Vec<AtomicU8> = (0..n).map(|_| AtomicU8::new(0)).collect();
        let before = snap(&*store);
        let out = run_phase(
            &Phase {
                store: &*store,
                queue: "orders".into(),
                idx_base: 0,
                produce: n,
                batch: BATCH,
                consume: n,
                deadline: Instant::now() + timeout,
                deadline_ok: false,
            },
            Some(&seen),
        )?;
        let after = snap(&*store);
        check_seen(&seen)?;
        if out.produced != n || out.consumed != n {
            return Err(format!(
                "produced {} consumed {} of {n}",
                out.produced, out.consumed
            ));
        }
        let left = count(&*store)?;
        if left != 0 {
            return Err(format!(
                "{left} tasks left in the store after all were acked"
            ));
        }
        let desc = store.describe();
        if !desc.is_empty() {
            eprintln!("    {desc}");
        }
        let disk_bytes = dir_size(&dir);
        drop(store);
        let secs = out.elapsed.as_secs_f64();
        Ok(W2Run {
            secs,
            rate: n as f64 / secs,
            syncs: (after.fsync - before.fsync) + (after.fdatasync - before.fdatasync),
            commits: after.commits - before.commits,
            ops: after.ops - before.ops,
            write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
            wchar: after.wchar - before.wchar,
            cpu_us: after.cpu_us - before.cpu_us,
            sync_ns: after.sync_ns - before.sync_ns,
            probe_ms: 0.0,
            disk_bytes,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[derive(Default)]
struct DepthRes {
    enq0: Vec<f64>,
    drain0: Vec<f64>,
    preloaded: u64,
    preload_secs: f64,
    enq_d: Vec<f64>,
    drain_d: Vec<f64>,
    reopen_secs: f64,
    reopen_note: String,
    syncs_per_task_drain_d: f64,
    rss_growth: u64,
    disk_bytes: u64,
    cpu0: Vec<f64>,
    cpu_d: Vec<f64>,
    sync0: Vec<f64>,
    sync_d: Vec<f64>,
    error: Option<String>,
}

/// W1 once: returns (enqueue tasks/s, drain tasks/s, syncs during drain, drain CPU µs/task,
/// mean sync latency during the drain in ms).
fn w1(
    store: &dyn Store,
    n: usize,
    timeout: Duration,
    idx_base: u64,
) -> Res<(f64, f64, u64, f64, f64)> {
    let deadline = Instant::now() + timeout;
    let queue: Arc<str> = "orders".into();
    let e = run_phase(
        &Phase {
            store,
            queue: queue.clone(),
            idx_base,
            produce: n,
            batch: BATCH,
            consume: 0,
            deadline,
            deadline_ok: false,
        },
        None,
    )?;
    let seen: Vec<AtomicU8> = (0..n).map(|_| AtomicU8::new(0)).collect();
    let s0 = FSYNC_CALLS.load(Ordering::Relaxed) + FDATASYNC_CALLS.load(Ordering::Relaxed);
    let c0 = cpu_us();
    let ns0 = SYNC_NS.load(Ordering::Relaxed);
    let d = run_phase(
        &Phase {
            store,
            queue,
            idx_base,
            produce: 0,
            batch: BATCH,
            consume: n,
            deadline,
            deadline_ok: false,
        },
        Some(&seen),
    )?;
    let s1 = FSYNC_CALLS.load(Ordering::Relaxed) + FDATASYNC_CALLS.load(Ordering::Relaxed);
    let c1 = cpu_us();
    let ns1 = SYNC_NS.load(Ordering::Relaxed);
    check_seen(&seen)?;
    Ok((
        n as f64 / e.elapsed.as_secs_f64(),
        n as f64 / d.elapsed.as_secs_f64(),
        s1 - s0,
        (c1 - c0) as f64 / n as f64,
        (ns1 - ns0) as f64 / 1e6 / (s1 - s0).max(1) as f64,
    ))
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("VmRSS:")
                        .map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .flatten()
        })
        .unwrap_or(0)
        * 1024
}

/// W1 on two stores of the same candidate side by side — one empty, one with `depth` tasks
/// waiting in queue "backlog" — alternating run by run so that machine noise hits both alike.
fn depth_test(c: Cand, base: &Base, cfg: &Cfg) -> DepthRes {
    let dir0 = base.fresh(&format!("{}-depth0", c.name()));
    let dir_d = base.fresh(&format!("{}-depthN", c.name()));
    let mut r = DepthRes::default();
    let res = (|| -> Res<()> {
        let timeout = Duration::from_secs(cfg.timeout_secs);
        let (store_d, _) = open_store(c, &dir_d)?;
        let rss0 = rss_bytes();
        let t = Instant::now();
        let pre = run_phase(
            &Phase {
                store: &*store_d,
                queue: "backlog".into(),
                idx_base: 1 << 60,
                produce: cfg.depth,
                batch: 1000,
                consume: 0,
                deadline: Instant::now() + Duration::from_secs(cfg.preload_secs),
                deadline_ok: true,
            },
            None,
        )?;
        r.preload_secs = t.elapsed().as_secs_f64();
        r.preloaded = pre.produced as u64;
        r.rss_growth = rss_bytes().saturating_sub(rss0);
        eprintln!(
            "  {}: preloaded {} in {:.1}s ({:.0}/s), RSS +{:.0} MB",
            c.name(),
            r.preloaded,
            r.preload_secs,
            r.preloaded as f64 / r.preload_secs,
            r.rss_growth as f64 / 1e6
        );
        let (store0, _) = open_store(c, &dir0)?;
        let mut next_idx = 1u64 << 40;
        let mut syncs = 0;
        for run in 0..cfg.runs {
            wait_quiet(base, cfg);
            let (e0, d0, _, cpu0, sync0) = w1(&*store0, cfg.n, timeout, next_idx)?;
            next_idx += 1 << 32;
            wait_quiet(base, cfg);
            let (ed, dd, s, cpud, syncd) = w1(&*store_d, cfg.n, timeout, next_idx)?;
            r.sync0.push(sync0);
            r.sync_d.push(syncd);
            r.cpu0.push(cpu0);
            r.cpu_d.push(cpud);
            next_idx += 1 << 32;
            syncs += s;
            eprintln!(
                "  {} run {}: W1 @0 enqueue {e0:.0}/s drain {d0:.0}/s ({cpu0:.1} CPU µs/task, sync {sync0:.2} ms) | @{} enqueue {ed:.0}/s drain {dd:.0}/s ({cpud:.1} CPU µs/task, sync {syncd:.2} ms)",
                c.name(),
                run + 1,
                r.preloaded
            );
            r.enq0.push(e0);
            r.drain0.push(d0);
            r.enq_d.push(ed);
            r.drain_d.push(dd);
        }
        r.syncs_per_task_drain_d = syncs as f64 / (cfg.runs * cfg.n) as f64;
        drop(store0);
        let left = count(&*store_d)?;
        if left != r.preloaded {
            return Err(format!(
                "after the depth runs {left} tasks live, expected {}",
                r.preloaded
            ));
        }
        let desc = store_d.describe();
        if !desc.is_empty() {
            eprintln!("    {desc}");
        }
        r.disk_bytes = dir_size(&dir_d);
        drop(store_d);
        // Reopen: what a restart costs at this depth (B variants and the log rebuild memory).
        let t = Instant::now();
        let (store, note) = open_store(c, &dir_d)?;
        r.reopen_secs = t.elapsed().as_secs_f64();
        let live = count(&*store)?;
        if live != r.preloaded {
            return Err(format!(
                "after reopen {live} tasks live, expected {}",
                r.preloaded
            ));
        }
        r.reopen_note = note;
        drop(store);
        Ok(())
    })();
    if let Err(e) = res {
        eprintln!("  {}: depth test FAILED: {e}", c.name());
        r.error = Some(e);
    }
    let _ = std::fs::remove_dir_all(&dir0);
    let _ = std::fs::remove_dir_all(&dir_d);
    r
}

/// Torn-tail sanity check of the log's replay: appends half a record and reopens.
fn log_torn_tail_check(base: &Base) -> Res<String> {
    let dir = base.fresh("log-torn");
    let res = (|| {
        let (store, _) = open_store(Cand::Log, &dir)?;
        let q: Arc<str> = "orders".into();
        let k: Arc<str> = "charge_card.v1".into();
        store.call(Req::Enqueue(
            (0..10).map(|i| make_task(i, &q, &k)).collect(),
        ))?;
        drop(store);
        let path = dir.join("queue.log");
        let good = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
        let mut bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        let first_len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize + 8;
        bytes.extend_from_within(..first_len / 2); // a torn append
        std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
        let (store, note) = open_store(Cand::Log, &dir)?;
        let live = count(&*store)?;
        drop(store);
        let after = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
        if live != 10 || after != good {
            return Err(format!(
                "torn tail not handled: live {live}, size {after} vs {good}"
            ));
        }
        Ok(note)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

// ---- fsync probe ------------------------------------------------------------------------------

/// `iters` appends of 4 KiB each followed by fdatasync, and as many followed by fsync (ms, sorted).
fn fsync_probe(dir: &Path, iters: usize) -> (Vec<f64>, Vec<f64>) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("probe")).expect("probe file");
    let block = vec![0x5au8; 4096];
    let mut fdatasync_ms = Vec::with_capacity(iters);
    let mut fsync_ms = Vec::with_capacity(iters);
    for i in 0..iters * 2 {
        f.write_all(&block).unwrap();
        let t = Instant::now();
        if i % 2 == 0 {
            f.sync_data().unwrap()
        } else {
            f.sync_all().unwrap()
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if i % 2 == 0 {
            fdatasync_ms.push(ms)
        } else {
            fsync_ms.push(ms)
        }
    }
    let _ = std::fs::remove_file(dir.join("probe"));
    fdatasync_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    fsync_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (fdatasync_ms, fsync_ms)
}

/// Waits (bounded by --quiet-wait-secs) until a short fdatasync probe's p50 is at most
/// --quiet-ms, so that runs are not measured while another tenant saturates the disk.
/// Returns the last probe's p50 in ms.
fn wait_quiet(base: &Base, cfg: &Cfg) -> f64 {
    let give_up = Instant::now() + Duration::from_secs(cfg.quiet_wait_secs);
    loop {
        let (p, _) = fsync_probe(&base.root, 20);
        let p50 = pct(&p, 0.5);
        if p50 <= cfg.quiet_ms {
            return p50;
        }
        if Instant::now() > give_up {
            eprintln!(
                "  (disk still busy after {} s: fdatasync p50 {p50:.2} ms; running anyway)",
                cfg.quiet_wait_secs
            );
            return p50;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// (median, min, max)
fn median(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

// ---- CLI --------------------------------------------------------------------------------------

struct Cfg {
    runs: usize,
    n: usize,
    depth: usize,
    cands: Vec<Cand>,
    depth_cands: Vec<Cand>,
    json: bool,
    json_file: Option<PathBuf>,
    timeout_secs: u64,
    preload_secs: u64,
    quiet_ms: f64,
    quiet_wait_secs: u64,
    tmp: PathBuf,
}

const USAGE: &str = "storage-candidates [--runs 3] [--n 100000] [--depth 1000000 (0 = skip)]
  [--candidates sqlite-a,sqlite-b,redb-a,redb-b,fjall-a,fjall-a-cursor,fjall-b,log (default all)]
  [--depth-candidates <same names; default all but fjall-a>] [--json] [--json-file PATH]
  [--timeout-secs 300 (per run)] [--preload-secs 300 (per candidate)] [--tmp /tmp]
  [--quiet-ms 1.0 --quiet-wait-secs 60: before each run wait, at most that long, until a short
   fdatasync probe's p50 is at most that many ms (the machine is shared)]";

fn parse_list(s: &str) -> Result<Vec<Cand>, String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| Cand::parse(x).ok_or_else(|| format!("unknown candidate {x:?}")))
        .collect()
}

fn parse_args() -> Result<Cfg, String> {
    let mut cfg = Cfg {
        runs: 3,
        n: 100_000,
        depth: 1_000_000,
        cands: ALL.to_vec(),
        depth_cands: DEPTH_DEFAULT.to_vec(),
        json: false,
        json_file: None,
        timeout_secs: 300,
        preload_secs: 300,
        quiet_ms: 1.0,
        quiet_wait_secs: 60,
        tmp: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        let num = |v: String| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{a}: {e}"))
        };
        match a.as_str() {
            "--runs" => cfg.runs = num(val()?)?.clamp(1, 20) as usize,
            "--n" => cfg.n = num(val()?)?.clamp(1000, 10_000_000) as usize,
            "--depth" => cfg.depth = num(val()?)?.min(20_000_000) as usize,
            "--candidates" => cfg.cands = parse_list(&val()?)?,
            "--depth-candidates" => cfg.depth_cands = parse_list(&val()?)?,
            "--json" => cfg.json = true,
            "--json-file" => cfg.json_file = Some(val()?.into()),
            "--timeout-secs" => cfg.timeout_secs = num(val()?)?.clamp(1, 3600),
            "--preload-secs" => cfg.preload_secs = num(val()?)?.clamp(1, 3600),
            "--tmp" => cfg.tmp = val()?.into(),
            "--quiet-ms" => {
                cfg.quiet_ms = val()?.parse::<f64>().map_err(|e| format!("{a}: {e}"))?
            }
            "--quiet-wait-secs" => cfg.quiet_wait_secs = num(val()?)?.min(600),
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {a}\n{USAGE}")),
        }
    }
    Ok(cfg)
}

fn main() {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let base = Base {
        root: cfg
            .tmp
            .join(format!("floodway-storage-bench-{}", std::process::id())),
        n: AtomicU64::new(0),
    };
    // Remove what an earlier, killed run of this bench left behind (its pid is gone).
    if let Ok(rd) = std::fs::read_dir(&cfg.tmp) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name
                .strip_prefix("floodway-storage-bench-")
                .and_then(|p| p.parse::<u32>().ok())
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    std::fs::create_dir_all(&base.root).expect("create temp root");
    let ok = run(&cfg, &base);
    drop(base);
    std::process::exit(if ok { 0 } else { 1 });
}

fn run(cfg: &Cfg, base: &Base) -> bool {
    let mut all_ok = true;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let (fds, fs) = fsync_probe(&base.root, 500);
    let q: Arc<str> = "orders".into();
    let k: Arc<str> = "charge_card.v1".into();
    let sample = make_task(1, &q, &k);
    let rec_len = encode_vec(&sample).len();
    eprintln!(
        "machine: {cores} cores; 4 KiB append + fdatasync p50 {:.3} ms p99 {:.3} ms; + fsync p50 {:.3} ms p99 {:.3} ms",
        pct(&fds, 0.5),
        pct(&fds, 0.99),
        pct(&fs, 0.5),
        pct(&fs, 0.99)
    );
    eprintln!(
        "task: payload {} B JSON, encoded record {rec_len} B; W2 N={} , {PRODUCERS} producer + {WORKERS} worker OS threads, enqueue batch {BATCH}, reserve {RESERVE_N}, ack per reserved batch",
        sample.payload.len(),
        cfg.n
    );
    {
        let d = base.fresh("explain");
        if let Ok(s) = sqlite::Sqlite::open(&d, false) {
            eprintln!("sqlite-a reserve plan: {}", s.explain_reserve());
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    // W2: runs interleaved round-robin across candidates so machine noise hits all alike.
    let mut w2: Vec<(Cand, Vec<W2Run>, Option<String>)> =
        cfg.cands.iter().map(|&c| (c, Vec::new(), None)).collect();
    // Round r starts at candidate r (rotation), so no candidate always runs last.
    let len = w2.len();
    for run in 0..cfg.runs {
        for k in 0..len {
            let (c, runs, err) = &mut w2[(k + run) % len];
            if err.is_some() {
                continue;
            }
            let probe = wait_quiet(base, cfg);
            match w2_once(*c, base, cfg.n, Duration::from_secs(cfg.timeout_secs)) {
                Ok(mut r) => {
                    r.probe_ms = probe;
                    eprintln!(
                        "W2 run {} {:14}: {:8.0} tasks/s ({:.2}s), {:.1} CPU µs/task, {} syncs ({:.2} ms mean, probe before {:.2} ms), {} commits ({:.1} ops/commit), write_bytes {:.0} B/task",
                        run + 1,
                        c.name(),
                        r.rate,
                        r.secs,
                        r.cpu_us as f64 / cfg.n as f64,
                        r.syncs,
                        r.sync_ns as f64 / 1e6 / r.syncs.max(1) as f64,
                        probe,
                        r.commits,
                        r.ops as f64 / r.commits.max(1) as f64,
                        r.write_bytes as f64 / cfg.n as f64
                    );
                    runs.push(r);
                }
                Err(e) => {
                    eprintln!("W2 run {} {:14}: FAILED: {e}", run + 1, c.name());
                    *err = Some(e);
                    all_ok = false;
                }
            }
        }
    }

    let torn = log_torn_tail_check(base);
    match &torn {
        Ok(note) => eprintln!("log torn-tail check: ok ({note})"),
        Err(e) => {
            eprintln!("log torn-tail check FAILED: {e}");
            all_ok = false;
        }
    }

    let mut depth: Vec<(Cand, DepthRes)> = Vec::new();
    if cfg.depth > 0 {
        for &c in &cfg.depth_cands {
            eprintln!(
                "depth test {}: W1 N={} x{} on an empty store and on one with {} waiting in queue 'backlog', alternating",
                c.name(),
                cfg.n,
                cfg.runs,
                cfg.depth
            );
            let r = depth_test(c, base, cfg);
            if r.error.is_some() {
                all_ok = false;
            }
            depth.push((c, r));
        }
    }

    // ---- table ----
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nW2 concurrent, N={}, {} runs (median [min..max]); durable group commit; 2 producers + 2 workers (OS threads)",
        cfg.n, cfg.runs
    );
    let _ = writeln!(
        t,
        "| candidate | tasks/s median | min | max | CPU µs/task | mean sync ms | syncs/run | commits/run | ops/commit | write_bytes/task | wchar/task | disk after run |"
    );
    let _ = writeln!(
        t,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (c, runs, err) in &w2 {
        if let Some(e) = err {
            let _ = writeln!(t, "| {} | FAILED: {e} | | | | | | | | | | | | |", c.name());
            continue;
        }
        let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        let (m, lo, hi) = median(&rates);
        let mid = |f: &dyn Fn(&W2Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>()).0;
        let n = cfg.n as f64;
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} MB |",
            c.name(),
            m,
            lo,
            hi,
            mid(&|r| r.cpu_us as f64 / n),
            mid(&|r| r.sync_ns as f64 / 1e6 / r.syncs.max(1) as f64),
            mid(&|r| r.syncs as f64),
            mid(&|r| r.commits as f64),
            mid(&|r| r.ops as f64 / r.commits.max(1) as f64),
            mid(&|r| r.write_bytes as f64 / n),
            mid(&|r| r.wchar as f64 / n),
            mid(&|r| r.disk_bytes as f64 / 1e6),
        );
    }
    if !depth.is_empty() {
        let _ = writeln!(
            t,
            "\nW1 (enqueue N={}, then drain with 2 workers) on an empty store vs. one with {} tasks waiting in another queue; {} runs alternating between the two",
            cfg.n, cfg.depth, cfg.runs
        );
        let _ = writeln!(
            t,
            "| candidate | W1 enqueue/s @0 | W1 drain/s @0 [min..max] | drain CPU µs/task @0 | preload (tasks, s) | RSS growth | disk at depth | W1 enqueue/s @depth | W1 drain/s @depth [min..max] | drain CPU µs/task @depth | drain ratio depth/0 | CPU ratio depth/0 | syncs/task drain | reopen at depth |"
        );
        let _ = writeln!(
            t,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (c, r) in &depth {
            if let Some(e) = &r.error {
                let _ = writeln!(t, "| {} | FAILED: {e} | | | | | | | | | | | | |", c.name());
                continue;
            }
            let (e0, _, _) = median(&r.enq0);
            let (d0, d0lo, d0hi) = median(&r.drain0);
            let (ed, _, _) = median(&r.enq_d);
            let (dd, ddlo, ddhi) = median(&r.drain_d);
            let _ = writeln!(
                t,
                "| {} | {:.0} | {:.0} [{:.0}..{:.0}] | {:.1} | {} in {:.1}s | {:.0} MB | {:.0} MB | {:.0} | {:.0} [{:.0}..{:.0}] | {:.1} | {:.2} | {:.2} | {:.3} | {:.2}s |",
                c.name(),
                e0,
                d0,
                d0lo,
                d0hi,
                median(&r.cpu0).0,
                r.preloaded,
                r.preload_secs,
                r.rss_growth as f64 / 1e6,
                r.disk_bytes as f64 / 1e6,
                ed,
                dd,
                ddlo,
                ddhi,
                median(&r.cpu_d).0,
                dd / d0,
                median(&r.cpu_d).0 / median(&r.cpu0).0,
                r.syncs_per_task_drain_d,
                r.reopen_secs
            );
        }
    }
    let _ = writeln!(t, "\ncandidates:");
    for c in ALL
        .iter()
        .filter(|c| cfg.cands.contains(c) || cfg.depth_cands.contains(c))
    {
        let _ = writeln!(t, "  {:14} {}", c.name(), c.describe());
    }
    println!("{t}");

    // ---- JSON ----
    let mut j = String::new();
    let _ = write!(
        j,
        "{{\"machine\":{{\"cores\":{cores},\"fdatasync_4k_ms\":{{\"p50\":{:.4},\"p99\":{:.4}}},\"fsync_4k_ms\":{{\"p50\":{:.4},\"p99\":{:.4}}}}},\"n\":{},\"runs\":{},\"record_bytes\":{rec_len},\"payload_bytes\":{},\"producers\":{PRODUCERS},\"workers\":{WORKERS},\"enqueue_batch\":{BATCH},\"reserve_batch\":{RESERVE_N},\"w2\":[",
        pct(&fds, 0.5),
        pct(&fds, 0.99),
        pct(&fs, 0.5),
        pct(&fs, 0.99),
        cfg.n,
        cfg.runs,
        sample.payload.len()
    );
    for (i, (c, runs, err)) in w2.iter().enumerate() {
        if i > 0 {
            j.push(',');
        }
        let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        let (m, lo, hi) = median(&rates);
        let _ = write!(
            j,
            "{{\"candidate\":\"{}\",\"tasks_per_s\":{{\"median\":{m:.0},\"min\":{lo:.0},\"max\":{hi:.0}}},\"runs\":[",
            c.name()
        );
        for (k, r) in runs.iter().enumerate() {
            if k > 0 {
                j.push(',');
            }
            let _ = write!(
                j,
                "{{\"secs\":{:.4},\"tasks_per_s\":{:.0},\"cpu_us\":{},\"sync_ns\":{},\"probe_fdatasync_p50_ms\":{:.3},\"syncs\":{},\"commits\":{},\"ops\":{},\"write_bytes\":{},\"wchar\":{},\"disk_bytes\":{}}}",
                r.secs,
                r.rate,
                r.cpu_us,
                r.sync_ns,
                r.probe_ms,
                r.syncs,
                r.commits,
                r.ops,
                r.write_bytes,
                r.wchar,
                r.disk_bytes
            );
        }
        let _ = write!(j, "],\"error\":{}}}", json_str(err.as_deref()));
    }
    j.push_str("],\"depth\":[");
    for (i, (c, r)) in depth.iter().enumerate() {
        if i > 0 {
            j.push(',');
        }
        let arr = |v: &[f64]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let arr1 = |v: &[f64]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let _ = write!(
            j,
            "{{\"candidate\":\"{}\",\"depth_requested\":{},\"preloaded\":{},\"preload_secs\":{:.2},\"rss_growth_bytes\":{},\"disk_bytes_at_depth\":{},\"w1_enqueue_0\":{},\"w1_drain_0\":{},\"w1_enqueue_depth\":{},\"w1_drain_depth\":{},\"drain_cpu_us_per_task_0\":{},\"drain_cpu_us_per_task_depth\":{},\"drain_sync_ms_mean_0\":{},\"drain_sync_ms_mean_depth\":{},\"drain_ratio\":{:.3},\"syncs_per_task_drain_depth\":{:.4},\"reopen_secs\":{:.3},\"reopen_note\":{},\"error\":{}}}",
            c.name(),
            cfg.depth,
            r.preloaded,
            r.preload_secs,
            r.rss_growth,
            r.disk_bytes,
            arr(&r.enq0),
            arr(&r.drain0),
            arr(&r.enq_d),
            arr(&r.drain_d),
            arr1(&r.cpu0),
            arr1(&r.cpu_d),
            arr1(&r.sync0),
            arr1(&r.sync_d),
            median(&r.drain_d).0 / median(&r.drain0).0.max(1e-9),
            r.syncs_per_task_drain_d,
            r.reopen_secs,
            json_str(Some(&r.reopen_note)),
            json_str(r.error.as_deref())
        );
    }
    let _ = write!(
        j,
        "],\"log_torn_tail_check\":{},\"ok\":{all_ok}}}",
        json_str(Some(&match &torn {
            Ok(n) => format!("ok: {n}"),
            Err(e) => format!("FAILED: {e}"),
        }))
    );
    eprintln!(
        "process totals: {} fsync + {} fdatasync calls (counted in-process)",
        FSYNC_CALLS.load(Ordering::Relaxed),
        FDATASYNC_CALLS.load(Ordering::Relaxed)
    );
    if cfg.json {
        println!("{j}");
    }
    if let Some(p) = &cfg.json_file
        && let Err(e) = std::fs::write(p, &j)
    {
        eprintln!("writing {}: {e}", p.display());
        all_ok = false;
    }
    all_ok
}

fn json_str(s: Option<&str>) -> String {
    match s {
        None => "null".into(),
        Some(s) => {
            let mut o = String::from("\"");
            for ch in s.chars() {
                match ch {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        }
    }
}
