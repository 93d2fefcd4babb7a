//! The task record every candidate stores, its byte encoding, and the request/response
//! vocabulary shared by all stores.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// 16-byte time-ordered id: high 64 bits = unix millis at creation, low 64 bits = the bench's
/// task index (so the harness can check "acked exactly once" with a plain array).
pub type Id = u128;

pub const STATE_READY: u8 = 0;
pub const STATE_ACTIVE: u8 = 1;

#[derive(Clone, Debug)]
pub struct Task {
    pub id: Id,
    /// FIFO position inside a priority; assigned by the store at enqueue (arrival order).
    pub seq: u64,
    pub queue: Arc<str>,
    pub kind: Arc<str>,
    pub priority: u8,
    pub attempt: u32,
    pub max_attempts: u32,
    pub state: u8,
    pub fence: u64,
    pub lease_expiry: u64,
    pub created_at: u64,
    pub payload: Vec<u8>,
}

/// What a reserve hands to a worker.
#[derive(Clone, Copy, Debug)]
pub struct Leased {
    pub id: Id,
    pub fence: u64,
    pub priority: u8,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct AckResult {
    pub acked: usize,
    pub stale: usize,
}

pub enum Req {
    Enqueue(Vec<Task>),
    Reserve {
        queue: Arc<str>,
        n: usize,
        lease_until: u64,
    },
    Ack(Vec<(Id, u64)>),
    /// Live (not yet acked) tasks in the store, all queues.
    Count,
}

pub enum Resp {
    Done,
    Reserved(Vec<Leased>),
    Acked(AckResult),
    Count(u64),
}

// ---- encoding -------------------------------------------------------------------------------
// Fixed header so that state/fence/expiry can be patched in place by the KV candidates.
pub const OFF_STATE: usize = 16 + 8 + 1; // after id, seq, priority
pub const OFF_FENCE: usize = OFF_STATE + 1 + 4 + 4; // after state, attempt, max_attempts
pub const OFF_EXPIRY: usize = OFF_FENCE + 8;

pub fn encode(t: &Task, out: &mut Vec<u8>) {
    out.extend_from_slice(&t.id.to_be_bytes());
    out.extend_from_slice(&t.seq.to_le_bytes());
    out.push(t.priority);
    out.push(t.state);
    out.extend_from_slice(&t.attempt.to_le_bytes());
    out.extend_from_slice(&t.max_attempts.to_le_bytes());
    out.extend_from_slice(&t.fence.to_le_bytes());
    out.extend_from_slice(&t.lease_expiry.to_le_bytes());
    out.extend_from_slice(&t.created_at.to_le_bytes());
    out.push(t.queue.len() as u8);
    out.extend_from_slice(t.queue.as_bytes());
    out.push(t.kind.len() as u8);
    out.extend_from_slice(t.kind.as_bytes());
    out.extend_from_slice(&(t.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&t.payload);
}

pub fn encode_vec(t: &Task) -> Vec<u8> {
    let mut v = Vec::with_capacity(200);
    encode(t, &mut v);
    v
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

pub fn decode(b: &[u8]) -> Option<Task> {
    if b.len() < OFF_EXPIRY + 8 + 8 + 1 {
        return None;
    }
    let id = u128::from_be_bytes(b[0..16].try_into().unwrap());
    let seq = u64_at(b, 16);
    let priority = b[24];
    let state = b[25];
    let attempt = u32_at(b, 26);
    let max_attempts = u32_at(b, 30);
    let fence = u64_at(b, OFF_FENCE);
    let lease_expiry = u64_at(b, OFF_EXPIRY);
    let created_at = u64_at(b, OFF_EXPIRY + 8);
    let mut o = OFF_EXPIRY + 16;
    let ql = *b.get(o)? as usize;
    o += 1;
    let queue: Arc<str> = std::str::from_utf8(b.get(o..o + ql)?).ok()?.into();
    o += ql;
    let kl = *b.get(o)? as usize;
    o += 1;
    let kind: Arc<str> = std::str::from_utf8(b.get(o..o + kl)?).ok()?.into();
    o += kl;
    let pl = u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?) as usize;
    o += 4;
    let payload = b.get(o..o + pl)?.to_vec();
    Some(Task {
        id,
        seq,
        queue,
        kind,
        priority,
        attempt,
        max_attempts,
        state,
        fence,
        lease_expiry,
        created_at,
        payload,
    })
}

/// Reads (state, fence) from an encoded record.
pub fn peek_lease(b: &[u8]) -> (u8, u64) {
    (b[OFF_STATE], u64_at(b, OFF_FENCE))
}

/// Patches an encoded record to "active, fence, expiry" and returns the new fence.
pub fn patch_reserve(b: &mut [u8], lease_until: u64) -> u64 {
    let fence = u64_at(b, OFF_FENCE) + 1;
    b[OFF_STATE] = STATE_ACTIVE;
    b[OFF_FENCE..OFF_FENCE + 8].copy_from_slice(&fence.to_le_bytes());
    b[OFF_EXPIRY..OFF_EXPIRY + 8].copy_from_slice(&lease_until.to_le_bytes());
    fence
}

/// Key of the ready index for the "engine is the queue" variants:
/// [queue len][queue][9 - priority][seq BE]  -> sorts priority desc, then FIFO.
pub fn ready_key(queue: &str, priority: u8, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(queue.len() + 10);
    k.extend_from_slice(&ready_prefix(queue));
    k.push(9 - priority.min(9));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn ready_prefix(queue: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(queue.len() + 1);
    k.push(queue.len() as u8);
    k.extend_from_slice(queue.as_bytes());
    k
}

/// One past the last key with the given prefix (prefixes here never end in 0xff runs).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut e = prefix.to_vec();
    while let Some(last) = e.pop() {
        if last != 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0xff; prefix.len() + 1]
}

// ---- in-memory ready order (variant B and the log) ------------------------------------------

/// Priority-then-FIFO ready order per queue.
#[derive(Default)]
pub struct ReadyIndex {
    queues: HashMap<Arc<str>, BTreeMap<(u8, u64), Id>>,
    len: usize,
}

impl ReadyIndex {
    pub fn push(&mut self, queue: &Arc<str>, priority: u8, seq: u64, id: Id) {
        let q = match self.queues.get_mut(queue) {
            Some(q) => q,
            None => self.queues.entry(queue.clone()).or_default(),
        };
        if q.insert((9 - priority.min(9), seq), id).is_none() {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, queue: &str, priority: u8, seq: u64) -> bool {
        let removed = self
            .queues
            .get_mut(queue)
            .and_then(|q| q.remove(&(9 - priority.min(9), seq)))
            .is_some();
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Takes up to n ids in order; returns (id, priority).
    pub fn pop(&mut self, queue: &str, n: usize, out: &mut Vec<(Id, u8)>) {
        if let Some(q) = self.queues.get_mut(queue) {
            while out.len() < n {
                match q.pop_first() {
                    Some(((p, _seq), id)) => {
                        out.push((id, 9 - p));
                        self.len -= 1;
                    }
                    None => break,
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

/// Small per-task lease state kept in memory by the write-through (B) variants.
#[derive(Clone, Copy)]
pub struct Meta {
    pub state: u8,
    pub fence: u64,
}
