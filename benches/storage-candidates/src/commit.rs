//! The two group-commit shapes used by the candidates.
//!
//! * [`GroupStore`]: one writer thread drains a bounded channel of pending requests, applies all of
//!   them in ONE engine transaction, commits durably once, then replies to every caller. Used for
//!   SQLite and redb, whose commit call *is* the fsync (nothing can be applied while it runs).
//! * [`PipeStore`]: callers apply their request under a mutex (memory + unsynced engine write),
//!   then wait; a flusher thread detaches everything applied so far, makes it durable with one
//!   sync, and wakes every waiter whose write was in that flush. New requests are applied while a
//!   sync is in flight. Used for the append-only log and for fjall, whose journal can be synced
//!   separately from the write (`Database::persist`).
//!
//! In both, a caller gets its reply only after its write is durable; requests that wrote nothing
//! (an empty reserve, a count) do not wait for, or cause, a sync.

use crate::model::{Req, Resp};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, String>;

/// Largest number of requests one group commit takes from the channel.
const MAX_GROUP: usize = 256;
/// Capacity of the bounded request channel (backpressure on callers beyond it).
const CHANNEL_CAP: usize = 1024;

#[derive(Default)]
pub struct CommitStats {
    /// Durable commits / flushes performed.
    pub commits: AtomicU64,
    /// Write requests covered by those commits.
    pub ops: AtomicU64,
}

/// What the harness talks to.
pub trait Store: Send + Sync {
    fn call(&self, req: Req) -> Res<Resp>;
    fn stats(&self) -> &CommitStats;
    /// Engine diagnostics worth printing after a run (empty if none).
    fn describe(&self) -> String {
        String::new()
    }
}

// ---- writer thread + channel ---------------------------------------------------------------

pub trait TxEngine: Send + 'static {
    /// Applies every request in one transaction; commits durably iff something was written.
    /// Returns the per-request responses and whether a durable commit happened.
    fn apply_group(&mut self, reqs: Vec<Req>) -> Res<(Vec<Resp>, bool)>;
}

type Pending = (Req, SyncSender<Res<Resp>>);

pub struct GroupStore {
    tx: Option<SyncSender<Pending>>,
    handle: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

impl GroupStore {
    pub fn new<E: TxEngine>(engine: E) -> Self {
        let (tx, rx) = sync_channel::<Pending>(CHANNEL_CAP);
        let stats = Arc::new(CommitStats::default());
        let st = stats.clone();
        let handle = std::thread::Builder::new()
            .name("group-writer".into())
            .spawn(move || writer_loop(engine, rx, st))
            .expect("spawn writer");
        GroupStore {
            tx: Some(tx),
            handle: Some(handle),
            stats,
        }
    }
}

fn writer_loop<E: TxEngine>(mut engine: E, rx: Receiver<Pending>, stats: Arc<CommitStats>) {
    // Ends when every sender is gone (the store was dropped).
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let (reqs, replies): (Vec<Req>, Vec<SyncSender<Res<Resp>>>) = group.into_iter().unzip();
        let writes = reqs.iter().filter(|r| !matches!(r, Req::Count)).count() as u64;
        match engine.apply_group(reqs) {
            Ok((resps, committed)) => {
                if committed {
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                    stats.ops.fetch_add(writes, Ordering::Relaxed);
                }
                for (r, tx) in resps.into_iter().zip(replies) {
                    let _ = tx.send(Ok(r));
                }
            }
            Err(e) => {
                for tx in replies {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Store for GroupStore {
    fn call(&self, req: Req) -> Res<Resp> {
        let (rtx, rrx) = sync_channel(1);
        self.tx
            .as_ref()
            .ok_or("store closed")?
            .send((req, rtx))
            .map_err(|_| "writer thread gone".to_string())?;
        rrx.recv()
            .map_err(|_| "writer thread dropped the reply".to_string())?
    }
    fn stats(&self) -> &CommitStats {
        &self.stats
    }
}

impl Drop for GroupStore {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---- apply under a mutex + flusher thread --------------------------------------------------

pub trait PipeEngine: Send + 'static {
    /// Applies one request (caller thread, under the store mutex); the bool says whether it
    /// wrote something that has to be made durable before the caller may be answered.
    fn apply(&mut self, req: Req) -> Res<(Resp, bool)>;
    /// Under the mutex: detaches what the next flush must make durable (e.g. swaps the buffer).
    fn take_pending(&mut self) -> Vec<u8>;
    fn describe(&self) -> String {
        String::new()
    }
}

pub trait Flusher: Send + 'static {
    /// Outside the mutex: makes the detached writes durable (one sync).
    fn flush(&mut self, pending: Vec<u8>) -> Res<()>;
}

struct Inner<E> {
    engine: E,
    /// Generation that the writes applied now belong to.
    cur_gen: u64,
    dirty: bool,
    ops_in_gen: u64,
}

struct Durable {
    generation: u64,
    err: Option<String>,
}

struct Shared<E> {
    inner: Mutex<Inner<E>>,
    work: Condvar,
    durable: Mutex<Durable>,
    durable_cv: Condvar,
    shutdown: AtomicBool,
    stats: CommitStats,
}

pub struct PipeStore<E: PipeEngine> {
    shared: Arc<Shared<E>>,
    handle: Option<JoinHandle<()>>,
}

impl<E: PipeEngine> PipeStore<E> {
    pub fn new<F: Flusher>(engine: E, flusher: F) -> Self {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                engine,
                cur_gen: 1,
                dirty: false,
                ops_in_gen: 0,
            }),
            work: Condvar::new(),
            durable: Mutex::new(Durable {
                generation: 0,
                err: None,
            }),
            durable_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            stats: CommitStats::default(),
        });
        let sh = shared.clone();
        let handle = std::thread::Builder::new()
            .name("flusher".into())
            .spawn(move || flusher_loop(sh, flusher))
            .expect("spawn flusher");
        PipeStore {
            shared,
            handle: Some(handle),
        }
    }

    /// Runs `f` on the engine under the mutex (used after a run for checks).
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut E) -> R) -> R {
        f(&mut self.shared.inner.lock().unwrap().engine)
    }
}

fn flusher_loop<E: PipeEngine, F: Flusher>(sh: Arc<Shared<E>>, mut flusher: F) {
    loop {
        let mut g = sh.inner.lock().unwrap();
        while !g.dirty {
            if sh.shutdown.load(Ordering::Acquire) {
                return;
            }
            g = sh
                .work
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        let pending = g.engine.take_pending();
        let generation = g.cur_gen;
        g.cur_gen += 1;
        g.dirty = false;
        let ops = std::mem::take(&mut g.ops_in_gen);
        drop(g);
        let res = flusher.flush(pending);
        let mut d = sh.durable.lock().unwrap();
        match res {
            Ok(()) => {
                sh.stats.commits.fetch_add(1, Ordering::Relaxed);
                sh.stats.ops.fetch_add(ops, Ordering::Relaxed);
                d.generation = generation;
                sh.durable_cv.notify_all();
            }
            Err(e) => {
                d.err = Some(e);
                sh.durable_cv.notify_all();
                return;
            }
        }
    }
}

impl<E: PipeEngine> Store for PipeStore<E> {
    fn call(&self, req: Req) -> Res<Resp> {
        let sh = &self.shared;
        let my_gen = {
            let mut g = sh.inner.lock().unwrap();
            let (resp, wrote) = g.engine.apply(req)?;
            if !wrote {
                return Ok(resp);
            }
            g.dirty = true;
            g.ops_in_gen += 1;
            let my = g.cur_gen;
            drop(g);
            sh.work.notify_one();
            (my, resp)
        };
        let (my, resp) = my_gen;
        let mut d = sh.durable.lock().unwrap();
        // Bounded: a flush that has not completed within 60 s is reported as a failure.
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.generation < my {
            if let Some(e) = &d.err {
                return Err(format!("flush failed: {e}"));
            }
            if Instant::now() > deadline {
                return Err("flush did not complete within 60 s".into());
            }
            d = sh
                .durable_cv
                .wait_timeout(d, Duration::from_millis(100))
                .unwrap()
                .0;
        }
        Ok(resp)
    }
    fn stats(&self) -> &CommitStats {
        &self.shared.stats
    }
    fn describe(&self) -> String {
        self.with_engine(|e| e.describe())
    }
}

impl<E: PipeEngine> Drop for PipeStore<E> {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.work.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
