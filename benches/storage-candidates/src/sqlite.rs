//! SQLite (rusqlite, bundled), WAL, synchronous=FULL.
//! A: the tasks table plus an index on (queue, state, priority DESC, seq) is the queue.
//! B: the ready order lives in memory; SQLite stores rows and is touched by primary key only.

use crate::commit::{Res, TxEngine};
use crate::model::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

fn e(x: rusqlite::Error) -> String {
    format!("sqlite: {x}")
}

#[derive(Default)]
struct Mem {
    ready: ReadyIndex,
    meta: HashMap<Id, Meta>,
}

pub struct Sqlite {
    conn: Connection,
    mem: Option<Mem>,
    next_seq: u64,
}

impl Sqlite {
    /// Opens (or reopens) the database; for B an existing database is scanned to rebuild the
    /// in-memory order.
    pub fn open(dir: &Path, variant_b: bool) -> Res<Self> {
        let conn = Connection::open(dir.join("queue.sqlite")).map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        conn.pragma_update(None, "cache_size", -262_144i64)
            .map_err(e)?; // 256 MiB
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(e)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS tasks(
                id BLOB PRIMARY KEY, seq INTEGER NOT NULL, queue TEXT NOT NULL,
                kind TEXT NOT NULL, priority INTEGER NOT NULL, attempt INTEGER NOT NULL,
                max_attempts INTEGER NOT NULL, state INTEGER NOT NULL, fence INTEGER NOT NULL,
                expiry INTEGER NOT NULL, created_at INTEGER NOT NULL, payload BLOB NOT NULL
            ) WITHOUT ROWID;",
        )
        .map_err(e)?;
        if !variant_b {
            conn.execute_batch(
                "CREATE INDEX IF NOT EXISTS tasks_ready ON tasks(queue, state, priority DESC, seq);",
            )
            .map_err(e)?;
        }
        let max_seq: Option<i64> = conn
            .query_row("SELECT max(seq) FROM tasks", [], |r| r.get(0))
            .optional()
            .map_err(e)?
            .flatten();
        let next_seq = max_seq.map(|s| s as u64 + 1).unwrap_or(0);
        let mem = if variant_b {
            let mut m = Mem::default();
            let mut queues: HashMap<String, Arc<str>> = HashMap::new();
            let mut st = conn
                .prepare("SELECT id, queue, priority, seq, state, fence FROM tasks")
                .map_err(e)?;
            let mut rows = st.query([]).map_err(e)?;
            while let Some(r) = rows.next().map_err(e)? {
                let idb: Vec<u8> = r.get(0).map_err(e)?;
                let id = u128::from_be_bytes(idb.as_slice().try_into().map_err(|_| "bad id")?);
                let q: String = r.get(1).map_err(e)?;
                let q = queues.entry(q.clone()).or_insert_with(|| q.into()).clone();
                let prio: i64 = r.get(2).map_err(e)?;
                let seq: i64 = r.get(3).map_err(e)?;
                let state: i64 = r.get(4).map_err(e)?;
                let fence: i64 = r.get(5).map_err(e)?;
                if state as u8 == STATE_READY {
                    m.ready.push(&q, prio as u8, seq as u64, id);
                }
                m.meta.insert(
                    id,
                    Meta {
                        state: state as u8,
                        fence: fence as u64,
                    },
                );
            }
            drop(rows);
            drop(st);
            Some(m)
        } else {
            None
        };
        Ok(Sqlite {
            conn,
            mem,
            next_seq,
        })
    }

    pub fn explain_reserve(&self) -> String {
        let mut st = self
            .conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT id, fence, priority FROM tasks
                 WHERE queue=?1 AND state=0 ORDER BY priority DESC, seq LIMIT ?2",
            )
            .unwrap();
        let rows: Vec<String> = st
            .query_map(params!["orders", 100], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        rows.join("; ")
    }
}

impl TxEngine for Sqlite {
    fn apply_group(&mut self, reqs: Vec<Req>) -> Res<(Vec<Resp>, bool)> {
        let Sqlite {
            conn,
            mem,
            next_seq,
        } = self;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let mut wrote = false;
        let mut out = Vec::with_capacity(reqs.len());
        for req in reqs {
            let resp = match req {
                Req::Enqueue(tasks) => {
                    let mut ins = tx
                        .prepare_cached(
                            "INSERT INTO tasks(id, seq, queue, kind, priority, attempt,
                             max_attempts, state, fence, expiry, created_at, payload)
                             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
                        )
                        .map_err(e)?;
                    for mut t in tasks {
                        t.seq = *next_seq;
                        *next_seq += 1;
                        ins.execute(params![
                            &t.id.to_be_bytes()[..],
                            t.seq as i64,
                            &*t.queue,
                            &*t.kind,
                            t.priority as i64,
                            t.attempt as i64,
                            t.max_attempts as i64,
                            t.state as i64,
                            t.fence as i64,
                            t.lease_expiry as i64,
                            t.created_at as i64,
                            &t.payload[..],
                        ])
                        .map_err(e)?;
                        if let Some(m) = mem.as_mut() {
                            m.ready.push(&t.queue, t.priority, t.seq, t.id);
                            m.meta.insert(
                                t.id,
                                Meta {
                                    state: STATE_READY,
                                    fence: 0,
                                },
                            );
                        }
                        wrote = true;
                    }
                    Resp::Done
                }
                Req::Reserve {
                    queue,
                    n,
                    lease_until,
                } => {
                    let mut got = Vec::with_capacity(n);
                    match mem.as_mut() {
                        None => {
                            let mut sel = tx
                                .prepare_cached(
                                    "SELECT id, fence, priority FROM tasks
                                     WHERE queue=?1 AND state=0
                                     ORDER BY priority DESC, seq LIMIT ?2",
                                )
                                .map_err(e)?;
                            let picked: Vec<(Vec<u8>, i64, i64)> = sel
                                .query_map(params![&*queue, n as i64], |r| {
                                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                                })
                                .map_err(e)?
                                .collect::<Result<_, _>>()
                                .map_err(e)?;
                            let mut upd = tx
                                .prepare_cached(
                                    "UPDATE tasks SET state=1, fence=?2, expiry=?3 WHERE id=?1",
                                )
                                .map_err(e)?;
                            for (idb, fence, prio) in picked {
                                let fence = fence as u64 + 1;
                                upd.execute(params![&idb[..], fence as i64, lease_until as i64])
                                    .map_err(e)?;
                                let id = u128::from_be_bytes(idb.as_slice().try_into().unwrap());
                                got.push(Leased {
                                    id,
                                    fence,
                                    priority: prio as u8,
                                });
                            }
                        }
                        Some(m) => {
                            let mut ids = Vec::with_capacity(n);
                            m.ready.pop(&queue, n, &mut ids);
                            let mut upd = tx
                                .prepare_cached(
                                    "UPDATE tasks SET state=1, fence=?2, expiry=?3 WHERE id=?1",
                                )
                                .map_err(e)?;
                            for (id, prio) in ids {
                                let meta = m.meta.get_mut(&id).ok_or("ready id without meta")?;
                                meta.state = STATE_ACTIVE;
                                meta.fence += 1;
                                let c = upd
                                    .execute(params![
                                        &id.to_be_bytes()[..],
                                        meta.fence as i64,
                                        lease_until as i64
                                    ])
                                    .map_err(e)?;
                                if c != 1 {
                                    return Err("reserve: row missing".into());
                                }
                                got.push(Leased {
                                    id,
                                    fence: meta.fence,
                                    priority: prio,
                                });
                            }
                        }
                    }
                    if !got.is_empty() {
                        wrote = true;
                    }
                    Resp::Reserved(got)
                }
                Req::Ack(acks) => {
                    let mut r = AckResult::default();
                    match mem.as_mut() {
                        None => {
                            let mut del = tx
                                .prepare_cached(
                                    "DELETE FROM tasks WHERE id=?1 AND state=1 AND fence=?2",
                                )
                                .map_err(e)?;
                            for (id, fence) in acks {
                                let c = del
                                    .execute(params![&id.to_be_bytes()[..], fence as i64])
                                    .map_err(e)?;
                                if c == 1 { r.acked += 1 } else { r.stale += 1 }
                            }
                        }
                        Some(m) => {
                            let mut del = tx
                                .prepare_cached("DELETE FROM tasks WHERE id=?1")
                                .map_err(e)?;
                            for (id, fence) in acks {
                                match m.meta.get(&id) {
                                    Some(x) if x.state == STATE_ACTIVE && x.fence == fence => {
                                        m.meta.remove(&id);
                                        del.execute(params![&id.to_be_bytes()[..]]).map_err(e)?;
                                        r.acked += 1;
                                    }
                                    _ => r.stale += 1,
                                }
                            }
                        }
                    }
                    if r.acked > 0 {
                        wrote = true;
                    }
                    Resp::Acked(r)
                }
                Req::Count => {
                    let c: i64 = tx
                        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
                        .map_err(e)?;
                    if let Some(m) = mem.as_ref()
                        && m.meta.len() as i64 != c
                    {
                        return Err(format!("memory has {} tasks, sqlite {c}", m.meta.len()));
                    }
                    Resp::Count(c as u64)
                }
            };
            out.push(resp);
        }
        // A transaction that wrote nothing commits without touching the WAL (no fsync).
        tx.commit().map_err(e)?;
        Ok((out, wrote))
    }
}
