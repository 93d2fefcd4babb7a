//! fjall (LSM). Each request is one atomic WriteBatch committed to the journal without a sync;
//! the flusher thread makes everything committed so far durable with one
//! `Database::persist(PersistMode::SyncAll)` (fsync) and wakes the waiters.
//! A: a `ready` keyspace keyed by (queue, priority desc, seq) -> id (prefix scan to reserve,
//!    reserved keys are deleted, i.e. tombstoned) plus `tasks` id -> record.
//!    With `cursor`, A keeps per (queue, priority) the lowest seq that may still be ready and
//!    range-scans from there, so the scan seeks past the tombstones of consumed tasks instead of
//!    walking them (the cursor is rebuilt by one full scan after a restart).
//! B: the ready order lives in memory; fjall stores id -> record only.

use crate::commit::{Flusher, PipeEngine, Res};
use crate::model::*;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

fn e<E: std::fmt::Display>(x: E) -> String {
    format!("fjall: {x}")
}

#[derive(Default)]
struct Mem {
    ready: ReadyIndex,
    meta: HashMap<Id, Meta>,
}

pub struct Fjall {
    db: Database,
    tasks: Keyspace,
    ready: Keyspace,
    meta: Keyspace,
    mem: Option<Mem>,
    /// A with cursor: per queue, per priority band (index = priority) the lowest seq that may
    /// still be ready.
    cursor: Option<HashMap<Arc<str>, [u64; 10]>>,
    next_seq: u64,
}

pub struct FjallSync(Database);

impl Flusher for FjallSync {
    fn flush(&mut self, _pending: Vec<u8>) -> Res<()> {
        self.0.persist(PersistMode::SyncAll).map_err(e)
    }
}

impl Fjall {
    pub fn open(dir: &Path, variant_b: bool, cursor: bool) -> Res<(Self, FjallSync)> {
        let db = Database::builder(dir.join("fjall"))
            .cache_size(256 << 20)
            .open()
            .map_err(e)?;
        let tasks = db
            .keyspace("tasks", KeyspaceCreateOptions::default)
            .map_err(e)?;
        let ready = db
            .keyspace("ready", KeyspaceCreateOptions::default)
            .map_err(e)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(e)?;
        let next_seq = meta
            .get("next_seq")
            .map_err(e)?
            .map(|v| u64::from_le_bytes(v.as_ref().try_into().unwrap()))
            .unwrap_or(0);
        let mem = if variant_b {
            let mut m = Mem::default();
            let mut queues: HashMap<String, Arc<str>> = HashMap::new();
            for g in tasks.iter() {
                let (_k, v) = g.into_inner().map_err(e)?;
                let t = decode(&v).ok_or("bad record")?;
                let q = queues
                    .entry(t.queue.to_string())
                    .or_insert_with(|| t.queue.clone())
                    .clone();
                if t.state == STATE_READY {
                    m.ready.push(&q, t.priority, t.seq, t.id);
                }
                m.meta.insert(
                    t.id,
                    Meta {
                        state: t.state,
                        fence: t.fence,
                    },
                );
            }
            Some(m)
        } else {
            None
        };
        let sync = FjallSync(db.clone());
        let cursor = (cursor && !variant_b).then(HashMap::new);
        Ok((
            Fjall {
                db,
                tasks,
                ready,
                meta,
                mem,
                cursor,
                next_seq,
            },
            sync,
        ))
    }
}

impl PipeEngine for Fjall {
    fn apply(&mut self, req: Req) -> Res<(Resp, bool)> {
        match req {
            Req::Enqueue(ts) => {
                let mut b = self.db.batch();
                for mut t in ts {
                    t.seq = self.next_seq;
                    self.next_seq += 1;
                    b.insert(&self.tasks, t.id.to_be_bytes(), encode_vec(&t));
                    match self.mem.as_mut() {
                        None => b.insert(
                            &self.ready,
                            ready_key(&t.queue, t.priority, t.seq),
                            t.id.to_be_bytes(),
                        ),
                        Some(m) => {
                            m.ready.push(&t.queue, t.priority, t.seq, t.id);
                            m.meta.insert(
                                t.id,
                                Meta {
                                    state: STATE_READY,
                                    fence: 0,
                                },
                            );
                        }
                    }
                }
                b.insert(&self.meta, "next_seq", self.next_seq.to_le_bytes());
                b.commit().map_err(e)?;
                Ok((Resp::Done, true))
            }
            Req::Reserve {
                queue,
                n,
                lease_until,
            } => {
                let mut picked: Vec<(Id, u8)> = Vec::with_capacity(n);
                let mut b = self.db.batch();
                match self.mem.as_mut() {
                    None if self.cursor.is_some() => {
                        let cur = self
                            .cursor
                            .as_mut()
                            .unwrap()
                            .entry(queue.clone())
                            .or_insert([0; 10]);
                        for prio in (0..=9u8).rev() {
                            if picked.len() >= n {
                                break;
                            }
                            let from = ready_key(&queue, prio, cur[prio as usize]);
                            let to = prefix_end(&from[..from.len() - 8]);
                            for g in self.ready.range(from..to).take(n - picked.len()) {
                                let (k, v) = g.into_inner().map_err(e)?;
                                let id = u128::from_be_bytes(
                                    v.as_ref().try_into().map_err(|_| "bad id")?,
                                );
                                let seq = u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
                                cur[prio as usize] = seq + 1;
                                picked.push((id, prio));
                                b.remove(&self.ready, k);
                            }
                        }
                    }
                    None => {
                        let p = ready_prefix(&queue);
                        for g in self.ready.prefix(&p).take(n) {
                            let (k, v) = g.into_inner().map_err(e)?;
                            let id =
                                u128::from_be_bytes(v.as_ref().try_into().map_err(|_| "bad id")?);
                            picked.push((id, 9 - k[p.len()]));
                            b.remove(&self.ready, k);
                        }
                    }
                    Some(m) => m.ready.pop(&queue, n, &mut picked),
                }
                let mut got = Vec::with_capacity(picked.len());
                for (id, prio) in picked {
                    let key = id.to_be_bytes();
                    let mut rec = self
                        .tasks
                        .get(key)
                        .map_err(e)?
                        .ok_or("ready id without record")?
                        .to_vec();
                    let fence = patch_reserve(&mut rec, lease_until);
                    b.insert(&self.tasks, key, rec);
                    if let Some(m) = self.mem.as_mut() {
                        let x = m.meta.get_mut(&id).ok_or("ready id without meta")?;
                        x.state = STATE_ACTIVE;
                        x.fence = fence;
                    }
                    got.push(Leased {
                        id,
                        fence,
                        priority: prio,
                    });
                }
                let wrote = !got.is_empty();
                if wrote {
                    b.commit().map_err(e)?;
                }
                Ok((Resp::Reserved(got), wrote))
            }
            Req::Ack(acks) => {
                let mut r = AckResult::default();
                let mut b = self.db.batch();
                for (id, fence) in acks {
                    let key = id.to_be_bytes();
                    let ok = match self.mem.as_mut() {
                        None => {
                            let cur = self.tasks.get(key).map_err(e)?.map(|v| peek_lease(&v));
                            matches!(cur, Some((s, f)) if s == STATE_ACTIVE && f == fence)
                        }
                        Some(m) => {
                            let ok = matches!(m.meta.get(&id), Some(x) if x.state == STATE_ACTIVE && x.fence == fence);
                            if ok {
                                m.meta.remove(&id);
                            }
                            ok
                        }
                    };
                    if ok {
                        b.remove(&self.tasks, key);
                        r.acked += 1;
                    } else {
                        r.stale += 1;
                    }
                }
                let wrote = r.acked > 0;
                if wrote {
                    b.commit().map_err(e)?;
                }
                Ok((Resp::Acked(r), wrote))
            }
            Req::Count => {
                let c = self.tasks.len().map_err(e)? as u64;
                if let Some(m) = self.mem.as_ref()
                    && m.meta.len() as u64 != c
                {
                    return Err(format!("memory has {} tasks, fjall {c}", m.meta.len()));
                }
                Ok((Resp::Count(c), false))
            }
        }
    }

    fn take_pending(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Diagnostics for the tombstone discussion.
    fn describe(&self) -> String {
        format!(
            "fjall: ready keyspace {} tables (L0 {}), tasks keyspace {} tables, {} compactions done",
            self.ready.table_count(),
            self.ready.l0_table_count(),
            self.tasks.table_count(),
            self.db.compactions_completed(),
        )
    }
}
