//! redb, every group committed with Durability::Immediate (redb's default: 1-phase commit).
//! A: a `ready` table keyed by (queue, priority desc, seq) -> id, plus `tasks` id -> record.
//! B: the ready order lives in memory; redb stores id -> record only.

use crate::commit::{Res, TxEngine};
use crate::model::*;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

const TASKS: TableDefinition<u128, &[u8]> = TableDefinition::new("tasks");
const READY: TableDefinition<&[u8], u128> = TableDefinition::new("ready");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn e<E: std::fmt::Display>(x: E) -> String {
    format!("redb: {x}")
}

#[derive(Default)]
struct Mem {
    ready: ReadyIndex,
    meta: HashMap<Id, Meta>,
}

pub struct Redb {
    db: Database,
    mem: Option<Mem>,
    next_seq: u64,
}

impl Redb {
    pub fn open(dir: &Path, variant_b: bool) -> Res<Self> {
        let db = Database::builder()
            .set_cache_size(256 << 20)
            .create(dir.join("queue.redb"))
            .map_err(e)?;
        // Create the tables so that read transactions find them.
        let w = db.begin_write().map_err(e)?;
        {
            w.open_table(TASKS).map_err(e)?;
            w.open_table(READY).map_err(e)?;
            w.open_table(META).map_err(e)?;
        }
        w.commit().map_err(e)?;
        let r = db.begin_read().map_err(e)?;
        let next_seq = r
            .open_table(META)
            .map_err(e)?
            .get("next_seq")
            .map_err(e)?
            .map(|v| v.value())
            .unwrap_or(0);
        let mem = if variant_b {
            let mut m = Mem::default();
            let mut queues: HashMap<String, Arc<str>> = HashMap::new();
            let t = r.open_table(TASKS).map_err(e)?;
            for row in t.iter().map_err(e)? {
                let (_k, v) = row.map_err(e)?;
                let task = decode(v.value()).ok_or("bad record")?;
                let q = queues
                    .entry(task.queue.to_string())
                    .or_insert_with(|| task.queue.clone())
                    .clone();
                if task.state == STATE_READY {
                    m.ready.push(&q, task.priority, task.seq, task.id);
                }
                m.meta.insert(
                    task.id,
                    Meta {
                        state: task.state,
                        fence: task.fence,
                    },
                );
            }
            Some(m)
        } else {
            None
        };
        drop(r);
        Ok(Redb { db, mem, next_seq })
    }
}

impl TxEngine for Redb {
    fn apply_group(&mut self, reqs: Vec<Req>) -> Res<(Vec<Resp>, bool)> {
        let Redb { db, mem, next_seq } = self;
        let mut txn = db.begin_write().map_err(e)?;
        txn.set_durability(Durability::Immediate).map_err(e)?;
        let mut wrote = false;
        let mut out = Vec::with_capacity(reqs.len());
        {
            let mut tasks = txn.open_table(TASKS).map_err(e)?;
            let mut ready = txn.open_table(READY).map_err(e)?;
            let mut enq_seen = false;
            let mut buf = Vec::with_capacity(256);
            for req in reqs {
                let resp = match req {
                    Req::Enqueue(ts) => {
                        for mut t in ts {
                            t.seq = *next_seq;
                            *next_seq += 1;
                            buf.clear();
                            encode(&t, &mut buf);
                            tasks.insert(t.id, buf.as_slice()).map_err(e)?;
                            match mem.as_mut() {
                                None => {
                                    let k = ready_key(&t.queue, t.priority, t.seq);
                                    ready.insert(k.as_slice(), t.id).map_err(e)?;
                                }
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
                            wrote = true;
                            enq_seen = true;
                        }
                        Resp::Done
                    }
                    Req::Reserve {
                        queue,
                        n,
                        lease_until,
                    } => {
                        let mut picked: Vec<(Id, u8)> = Vec::with_capacity(n);
                        match mem.as_mut() {
                            None => {
                                let p = ready_prefix(&queue);
                                let end = prefix_end(&p);
                                let mut keys: Vec<Vec<u8>> = Vec::with_capacity(n);
                                for row in ready
                                    .range(p.as_slice()..end.as_slice())
                                    .map_err(e)?
                                    .take(n)
                                {
                                    let (k, v) = row.map_err(e)?;
                                    let k = k.value();
                                    picked.push((v.value(), 9 - k[p.len()]));
                                    keys.push(k.to_vec());
                                }
                                for k in keys {
                                    ready.remove(k.as_slice()).map_err(e)?;
                                }
                            }
                            Some(m) => m.ready.pop(&queue, n, &mut picked),
                        }
                        let mut got = Vec::with_capacity(picked.len());
                        for (id, prio) in picked {
                            let mut rec = tasks
                                .get(id)
                                .map_err(e)?
                                .ok_or("ready id without record")?
                                .value()
                                .to_vec();
                            let fence = patch_reserve(&mut rec, lease_until);
                            tasks.insert(id, rec.as_slice()).map_err(e)?;
                            if let Some(m) = mem.as_mut() {
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
                        if !got.is_empty() {
                            wrote = true;
                        }
                        Resp::Reserved(got)
                    }
                    Req::Ack(acks) => {
                        let mut r = AckResult::default();
                        for (id, fence) in acks {
                            let ok = match mem.as_mut() {
                                None => {
                                    let cur =
                                        tasks.get(id).map_err(e)?.map(|v| peek_lease(v.value()));
                                    matches!(cur, Some((s, f)) if s == STATE_ACTIVE && f == fence)
                                }
                                Some(m) => {
                                    let ok = matches!(m.meta.get(&id),
                                        Some(x) if x.state == STATE_ACTIVE && x.fence == fence);
                                    if ok {
                                        m.meta.remove(&id);
                                    }
                                    ok
                                }
                            };
                            if ok {
                                tasks.remove(id).map_err(e)?;
                                r.acked += 1;
                            } else {
                                r.stale += 1;
                            }
                        }
                        if r.acked > 0 {
                            wrote = true;
                        }
                        Resp::Acked(r)
                    }
                    Req::Count => {
                        let c = tasks.len().map_err(e)?;
                        if let Some(m) = mem.as_ref()
                            && m.meta.len() as u64 != c
                        {
                            return Err(format!("memory has {} tasks, redb {c}", m.meta.len()));
                        }
                        Resp::Count(c)
                    }
                };
                out.push(resp);
            }
            if enq_seen {
                let mut meta = txn.open_table(META).map_err(e)?;
                meta.insert("next_seq", *next_seq).map_err(e)?;
            }
        }
        if wrote {
            txn.commit().map_err(e)?;
        } else {
            txn.abort().map_err(e)?;
        }
        Ok((out, wrote))
    }
}
