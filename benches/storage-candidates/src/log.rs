//! Purpose-built append-only log: all state in memory (HashMap id -> task, BTreeMap ready order
//! per queue) plus one log file of delta records:
//!
//!   [len u32 LE][crc32 u32 LE of type+body][type u8][body]
//!   enqueue = full encoded task; reserve = id, fence, expiry; ack = id.
//!
//! Group commit: callers append to a pending buffer under the state mutex; the flusher thread
//! swaps the buffer out, write()s it and fdatasync()s once, then wakes every waiter whose record
//! was in it. Replay stops at the first short or corrupt record (torn tail) and truncates there.
//! Not built here (floodway will need them): snapshots + log rotation for compaction.

use crate::commit::{Flusher, PipeEngine, Res};
use crate::model::*;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

const T_ENQ: u8 = 1;
const T_RES: u8 = 2;
const T_ACK: u8 = 3;

pub struct LogEngine {
    tasks: HashMap<Id, Task>,
    ready: ReadyIndex,
    next_seq: u64,
    buf: Vec<u8>,
}

pub struct LogFile(File);

impl Flusher for LogFile {
    fn flush(&mut self, pending: Vec<u8>) -> Res<()> {
        self.0
            .write_all(&pending)
            .map_err(|x| format!("log write: {x}"))?;
        self.0
            .sync_data()
            .map_err(|x| format!("log fdatasync: {x}"))
    }
}

fn put_record(buf: &mut Vec<u8>, ty: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 8]);
    buf.push(ty);
    body(buf);
    let len = (buf.len() - start - 8) as u32;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn intern(m: &mut HashMap<String, Arc<str>>, s: &Arc<str>) -> Arc<str> {
    match m.get(&**s) {
        Some(a) => a.clone(),
        None => {
            m.insert(s.to_string(), s.clone());
            s.clone()
        }
    }
}

/// What a replay found.
pub struct Replay {
    pub records: u64,
    pub live: u64,
    pub ready: u64,
    pub valid_bytes: u64,
    pub torn_bytes: u64,
}

impl LogEngine {
    /// Opens the log, replaying it if it exists (truncating a torn tail).
    pub fn open(dir: &Path) -> Res<(Self, LogFile, Replay)> {
        let path = dir.join("queue.log");
        let mut data = Vec::new();
        if path.exists() {
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(|x| format!("log read: {x}"))?;
        }
        let mut eng = LogEngine {
            tasks: HashMap::new(),
            ready: ReadyIndex::default(),
            next_seq: 0,
            buf: Vec::with_capacity(1 << 16),
        };
        let mut queues: HashMap<String, Arc<str>> = HashMap::new();
        let mut off = 0usize;
        let mut records = 0u64;
        while off + 9 <= data.len() {
            let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap());
            let Some(rec) = data.get(off + 8..off + 8 + len) else {
                break;
            };
            if len == 0 || crc32fast::hash(rec) != crc {
                break;
            }
            let body = &rec[1..];
            match rec[0] {
                T_ENQ => {
                    let mut t = decode(body).ok_or("log: bad enqueue record")?;
                    t.queue = intern(&mut queues, &t.queue);
                    t.kind = intern(&mut queues, &t.kind);
                    eng.next_seq = eng.next_seq.max(t.seq + 1);
                    eng.ready.push(&t.queue, t.priority, t.seq, t.id);
                    eng.tasks.insert(t.id, t);
                }
                T_RES => {
                    let id = u128::from_be_bytes(body[0..16].try_into().unwrap());
                    let fence = u64::from_le_bytes(body[16..24].try_into().unwrap());
                    let exp = u64::from_le_bytes(body[24..32].try_into().unwrap());
                    let t = eng
                        .tasks
                        .get_mut(&id)
                        .ok_or("log: reserve of unknown task")?;
                    if t.state == STATE_READY {
                        eng.ready.remove(&t.queue, t.priority, t.seq);
                    }
                    t.state = STATE_ACTIVE;
                    t.fence = fence;
                    t.lease_expiry = exp;
                }
                T_ACK => {
                    let id = u128::from_be_bytes(body[0..16].try_into().unwrap());
                    let t = eng.tasks.remove(&id).ok_or("log: ack of unknown task")?;
                    if t.state == STATE_READY {
                        eng.ready.remove(&t.queue, t.priority, t.seq);
                    }
                }
                other => return Err(format!("log: unknown record type {other}")),
            }
            off += 8 + len;
            records += 1;
        }
        let torn = (data.len() - off) as u64;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|x| format!("log open: {x}"))?;
        if torn > 0 {
            file.set_len(off as u64)
                .map_err(|x| format!("log truncate: {x}"))?;
            file.sync_all().map_err(|x| format!("log sync: {x}"))?;
        }
        let rp = Replay {
            records,
            live: eng.tasks.len() as u64,
            ready: eng.ready.len() as u64,
            valid_bytes: off as u64,
            torn_bytes: torn,
        };
        Ok((eng, LogFile(file), rp))
    }
}

impl PipeEngine for LogEngine {
    fn apply(&mut self, req: Req) -> Res<(Resp, bool)> {
        match req {
            Req::Enqueue(ts) => {
                for mut t in ts {
                    t.seq = self.next_seq;
                    self.next_seq += 1;
                    put_record(&mut self.buf, T_ENQ, |b| encode(&t, b));
                    self.ready.push(&t.queue, t.priority, t.seq, t.id);
                    self.tasks.insert(t.id, t);
                }
                Ok((Resp::Done, true))
            }
            Req::Reserve {
                queue,
                n,
                lease_until,
            } => {
                let mut picked = Vec::with_capacity(n);
                self.ready.pop(&queue, n, &mut picked);
                let mut got = Vec::with_capacity(picked.len());
                for (id, prio) in picked {
                    let t = self.tasks.get_mut(&id).ok_or("ready id without task")?;
                    t.state = STATE_ACTIVE;
                    t.fence += 1;
                    t.lease_expiry = lease_until;
                    let fence = t.fence;
                    put_record(&mut self.buf, T_RES, |b| {
                        b.extend_from_slice(&id.to_be_bytes());
                        b.extend_from_slice(&fence.to_le_bytes());
                        b.extend_from_slice(&lease_until.to_le_bytes());
                    });
                    got.push(Leased {
                        id,
                        fence,
                        priority: prio,
                    });
                }
                let wrote = !got.is_empty();
                Ok((Resp::Reserved(got), wrote))
            }
            Req::Ack(acks) => {
                let mut r = AckResult::default();
                for (id, fence) in acks {
                    match self.tasks.get(&id) {
                        Some(t) if t.state == STATE_ACTIVE && t.fence == fence => {
                            self.tasks.remove(&id);
                            put_record(&mut self.buf, T_ACK, |b| {
                                b.extend_from_slice(&id.to_be_bytes())
                            });
                            r.acked += 1;
                        }
                        _ => r.stale += 1,
                    }
                }
                let wrote = r.acked > 0;
                Ok((Resp::Acked(r), wrote))
            }
            Req::Count => Ok((Resp::Count(self.tasks.len() as u64), false)),
        }
    }

    fn take_pending(&mut self) -> Vec<u8> {
        // Hand the filled buffer to the flusher; start a new one sized like the last.
        let cap = self.buf.len().max(4096);
        std::mem::replace(&mut self.buf, Vec::with_capacity(cap))
    }
}
