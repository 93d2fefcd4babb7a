//! How floodway's values are written in Redis: task ids, task records, task bodies, retry
//! policies and queue configurations.
//!
//! The scripts (`src/lua/`) read and write the same formats, so a change here is a change
//! there: the task record's header is `struct.pack('>BBBBddddddd', ...)` in `common.lua`, and
//! retry policies and configurations travel as the short strings built below. Every decoder
//! is total: malformed input is an error, never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use floodway_core::{
    DeadReason, Effects, Fence, Jitter, OverflowPolicy, QueueConfig, QueueName, RateLimit,
    RetryPolicy, Task, TaskId, TaskState, Timestamp, Watermarks,
};

/// Why stored bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} in Redis: {reason}")]
pub struct Malformed {
    /// What was being read.
    pub what: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn malformed(what: &'static str, reason: impl Into<String>) -> Malformed {
    Malformed {
        what,
        reason: reason.into(),
    }
}

// Task ids ---------------------------------------------------------------------------------------

/// Where a task lives: the queue number from the registry, the shard, and the dataset's salt.
///
/// A task id is a UUIDv7 whose 74 bits after the millisecond hold, from high to low, the
/// queue number (16 bits), the shard (10), the salt (32, from the dataset marker) and a
/// sequence number (16). Within a shard the number, shard and salt are constant, so ids are
/// ordered by (millisecond, sequence), which is the order of the shard's `tid` strings; and
/// an id alone tells the broker which queue and shard hold the task, which ack, get and
/// cancel need (they are given ids, not queues). A different salt means another dataset (a
/// Redis that was emptied and re-initialised): such ids are unknown, never confused with new
/// tasks that happen to reuse a millisecond and sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Home {
    /// The queue's number in the registry, 1 ..= 65535.
    pub number: u16,
    /// The shard, 0 ..= 1023.
    pub shard: u16,
}

/// The highest shard number an id can hold.
pub(crate) const SHARD_MAX: u16 = 1023;

const VERSION_BITS: u128 = 0x7 << 76;
const VARIANT_BITS: u128 = 0b10 << 62;

/// The id of the task `tid` (12 hex digits of milliseconds, 4 of sequence) in `home`.
pub(crate) fn task_id(home: Home, salt: u32, tid: &[u8]) -> Result<TaskId, Malformed> {
    let (ms, seq) = parse_tid(tid)?;
    debug_assert!(home.shard <= SHARD_MAX);
    let number = u128::from(home.number);
    let rand_a = number >> 4;
    let rand_b = (number & 0xF) << 58
        | u128::from(home.shard) << 48
        | u128::from(salt) << 16
        | u128::from(seq);
    Ok(TaskId::from_u128(
        u128::from(ms) << 80 | VERSION_BITS | rand_a << 64 | VARIANT_BITS | rand_b,
    ))
}

/// The home, salt and tid of `id`, or `None` if no floodway Redis broker made it.
pub(crate) fn split_id(id: TaskId) -> Option<(Home, u32, String)> {
    let value = id.as_u128();
    if value & (0xF << 76) != VERSION_BITS || value & (0b11 << 62) != VARIANT_BITS {
        return None;
    }
    let ms = (value >> 80) as u64;
    let rand_a = (value >> 64) & 0xFFF;
    let rand_b = value & ((1 << 62) - 1);
    let number = (rand_a << 4 | rand_b >> 58) as u16;
    let shard = ((rand_b >> 48) & 0x3FF) as u16;
    let salt = ((rand_b >> 16) & 0xFFFF_FFFF) as u32;
    let seq = (rand_b & 0xFFFF) as u16;
    if number == 0 {
        return None;
    }
    Some((Home { number, shard }, salt, tid(ms, seq)))
}

/// The tids a script makes one after another from `first` (empty: none): the sequence counts
/// up and a full millisecond borrows the next, as `next_tid` in `common.lua` does within one
/// script.
pub(crate) fn tids_from(first: &[u8]) -> Result<impl Iterator<Item = String>, Malformed> {
    let start = if first.is_empty() {
        None
    } else {
        Some(parse_tid(first)?)
    };
    Ok(std::iter::successors(start, |(ms, seq)| {
        Some(match seq.checked_add(1) {
            Some(seq) => (*ms, seq),
            None => (ms + 1, 0),
        })
    })
    .map(|(ms, seq)| tid(ms, seq)))
}

/// The tid string of (millisecond, sequence).
pub(crate) fn tid(ms: u64, seq: u16) -> String {
    format!("{ms:012x}{seq:04x}")
}

fn parse_tid(tid: &[u8]) -> Result<(u64, u16), Malformed> {
    let text = std::str::from_utf8(tid).map_err(|_| malformed("task id", "not text"))?;
    // Checked byte by byte before slicing: a 16-byte string with a multi-byte character in
    // it must be refused, not split inside the character (found by the `redis_codec` fuzz
    // target), and `from_str_radix` alone would accept a sign.
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(
            "task id",
            format!("{text:?} is not 16 hex digits"),
        ));
    }
    let ms = u64::from_str_radix(&text[..12], 16)
        .map_err(|_| malformed("task id", format!("{text:?} is not hex")))?;
    let seq = u16::from_str_radix(&text[12..], 16)
        .map_err(|_| malformed("task id", format!("{text:?} is not hex")))?;
    Ok((ms, seq))
}

/// The tid below which (exclusive) a shard's tasks come after `after` in id order: a shard
/// holds only ids of its own home and salt, so the bound depends on how those compare with
/// `after`'s. `None` means every task of the shard comes after it.
pub(crate) fn tid_after(home: Home, salt: u32, after: TaskId) -> Option<String> {
    let value = after.as_u128();
    let ms = (value >> 80) as u64;
    // This shard's ids at `after`'s millisecond differ from each other only in their low 16
    // bits (the sequence); above those, they compare with `after` all the same way.
    let probe = task_id(home, salt, tid(ms, 0).as_bytes())
        .expect("a tid made here parses")
        .as_u128();
    match (probe >> 16).cmp(&(value >> 16)) {
        // Same queue, shard and salt: the tasks after `after` itself.
        std::cmp::Ordering::Equal => Some(tid(ms, value as u16)),
        // All of this millisecond's tasks come after `after`.
        std::cmp::Ordering::Greater => ms.checked_sub(1).map(|earlier| tid(earlier, u16::MAX)),
        // None of this millisecond's do; all later ones do.
        std::cmp::Ordering::Less => Some(tid(ms, u16::MAX)),
    }
}

// Task records -----------------------------------------------------------------------------------

/// A task record as `common.lua` packs it: what the broker knows of a task beyond the id.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    pub state: TaskState,
    pub priority: u8,
    pub dead_reason: Option<DeadReason>,
    pub attempt: u32,
    pub fence: Fence,
    pub run_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub lease_expires_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub worker: Option<String>,
    pub last_error: Option<String>,
    pub retry: String,
    pub idempotency_key: Option<String>,
    pub partition_key: Option<String>,
    /// Present when the header's flags have [`FLAG_LIMIT_KEY`].
    pub limit_key: Option<String>,
    /// Present (non-empty) when the header's flags have [`FLAG_EFFECTS`].
    pub effects: Effects,
    /// The body as the client wrote it (see [`encode_body`]).
    pub body: Vec<u8>,
}

const RECORD_VERSION: u8 = 1;
const HEADER_LEN: usize = 5 + 7 * 8;

/// Header flag: the task has a partition key (`F_PK` in `common.lua`; informational, the
/// partition key string is always there, empty or not).
#[cfg(test)]
const FLAG_PARTITION_KEY: u8 = 1;
/// Header flag: a limit key string follows the dead-letter entry (`F_LK`).
const FLAG_LIMIT_KEY: u8 = 2;
/// Header flag: an effects block follows the limit key, if any (`F_EFF`): a u32 byte length,
/// then a u16 count and that many (key, result) string pairs.
///
/// Records of tasks without a limit key or effects have neither flag and are laid out
/// exactly as before these fields existed, so records written by an older build read the
/// same and cost nothing more.
const FLAG_EFFECTS: u8 = 4;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader {
            bytes,
            pos: 0,
            what,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| malformed(self.what, "cut short"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn f64(&mut self) -> Result<f64, Malformed> {
        let bytes: [u8; 8] = self.take(8)?.try_into().expect("took 8 bytes");
        Ok(f64::from_be_bytes(bytes))
    }

    /// A whole number written as a double; `None` for the script's -1.
    fn number(&mut self) -> Result<Option<u64>, Malformed> {
        let value = self.f64()?;
        if value == -1.0 {
            return Ok(None);
        }
        if !(0.0..=9_007_199_254_740_992.0).contains(&value) || value.fract() != 0.0 {
            return Err(malformed(
                self.what,
                format!("{value} is not a whole number"),
            ));
        }
        Ok(Some(value as u64))
    }

    fn required(&mut self, field: &str) -> Result<u64, Malformed> {
        self.number()?
            .ok_or_else(|| malformed(self.what, format!("{field} is missing")))
    }

    /// A string written by `wstr`: a u16 of length + 1, 0 for none.
    fn text(&mut self) -> Result<Option<String>, Malformed> {
        let bytes: [u8; 2] = self.take(2)?.try_into().expect("took 2 bytes");
        let len = u16::from_be_bytes(bytes);
        if len == 0 {
            return Ok(None);
        }
        let raw = self.take(usize::from(len) - 1)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| malformed(self.what, "a string is not UTF-8"))
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed(self.what, "a number is too long"))
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        out
    }
}

fn state_of(index: u8) -> Result<TaskState, Malformed> {
    TaskState::ALL
        .get(usize::from(index))
        .copied()
        .ok_or_else(|| malformed("task record", format!("unknown state {index}")))
}

/// The dead reason stored as `index + 1` (0 for none), as the scripts number them.
pub(crate) fn reason_of(code: u64) -> Result<Option<DeadReason>, Malformed> {
    match code {
        0 => Ok(None),
        n => DeadReason::ALL
            .get(n as usize - 1)
            .copied()
            .map(Some)
            .ok_or_else(|| malformed("dead reason", format!("unknown reason {n}"))),
    }
}

/// The scripts' number for `reason`.
pub(crate) fn reason_code(reason: DeadReason) -> u8 {
    reason.index() as u8 + 1
}

/// An effects block (see [`FLAG_EFFECTS`]): a u32 byte length, a u16 count, then the pairs.
fn read_effects(r: &mut Reader<'_>) -> Result<Effects, Malformed> {
    let len: [u8; 4] = r.take(4)?.try_into().expect("took 4 bytes");
    let block = r.take(u32::from_be_bytes(len) as usize)?;
    let mut b = Reader::new(block, "task effects");
    let count: [u8; 2] = b.take(2)?.try_into().expect("took 2 bytes");
    let count = u16::from_be_bytes(count);
    if usize::from(count) > floodway_core::limits::EFFECTS_MAX {
        return Err(malformed("task effects", format!("{count} effects")));
    }
    let mut effects = Effects::new();
    for _ in 0..count {
        let key = b
            .text()?
            .ok_or_else(|| malformed("task effects", "an effect without a key"))?;
        let result = b.text()?.unwrap_or_default();
        effects.insert(key, result);
    }
    if !b.rest().is_empty() {
        return Err(malformed("task effects", "bytes after the last effect"));
    }
    Ok(effects)
}

impl Record {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Record, Malformed> {
        if bytes.len() < HEADER_LEN {
            return Err(malformed("task record", "shorter than its header"));
        }
        let mut r = Reader::new(bytes, "task record");
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(malformed(
                "task record",
                format!("format {version}, this build reads {RECORD_VERSION}"),
            ));
        }
        let state = state_of(r.u8()?)?;
        let priority = r.u8()?;
        let dead_reason = reason_of(u64::from(r.u8()?))?;
        let flags = r.u8()?;
        let attempt = u32::try_from(r.required("attempt")?)
            .map_err(|_| malformed("task record", "attempt out of range"))?;
        let fence = Fence(r.required("fence")?);
        let run_at = Timestamp::from_millis(r.required("run_at")?);
        let expires_at = r.number()?.map(Timestamp::from_millis);
        let lease_expires_at = r.number()?.map(Timestamp::from_millis);
        let finished_at = r.number()?.map(Timestamp::from_millis);
        let created_at = Timestamp::from_millis(r.required("created_at")?);
        let worker = r.text()?;
        let last_error = r.text()?;
        let retry = r
            .text()?
            .ok_or_else(|| malformed("task record", "the retry policy is missing"))?;
        let idempotency_key = r.text()?;
        let partition_key = r.text()?;
        let _dead_letter_entry = r.text()?;
        let limit_key = if flags & FLAG_LIMIT_KEY != 0 {
            r.text()?
        } else {
            None
        };
        let effects = if flags & FLAG_EFFECTS != 0 {
            read_effects(&mut r)?
        } else {
            Effects::new()
        };
        let body = r.rest().to_vec();
        Ok(Record {
            state,
            priority,
            dead_reason,
            attempt,
            fence,
            run_at,
            expires_at,
            lease_expires_at,
            finished_at,
            created_at,
            worker,
            last_error,
            retry,
            idempotency_key,
            partition_key,
            limit_key,
            effects,
            body,
        })
    }

    /// The task this record describes.
    pub(crate) fn into_task(self, id: TaskId, queue: QueueName) -> Result<Task, Malformed> {
        let body = decode_body(&self.body)?;
        Ok(Task {
            id,
            queue,
            kind: body.kind,
            payload: body.payload,
            headers: body.headers,
            priority: self.priority,
            state: self.state,
            attempt: self.attempt,
            retry: decode_retry(&self.retry)?,
            timeout: body.timeout,
            run_at: self.run_at,
            expires_at: self.expires_at,
            idempotency_key: self.idempotency_key,
            partition_key: self.partition_key,
            limit_key: self.limit_key,
            effects: self.effects,
            created_at: self.created_at,
            fence: self.fence,
            lease_expires_at: self.lease_expires_at,
            worker: self.worker,
            finished_at: self.finished_at,
            last_error: self.last_error,
            dead_reason: self.dead_reason,
        })
    }
}

// Task bodies ------------------------------------------------------------------------------------

/// What a task carries that the scripts never read: kind, headers, timeout and payload.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Body {
    pub kind: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub payload: Vec<u8>,
}

const BODY_VERSION: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The body of a task: a version byte, the kind, the headers, the timeout (0, or 1 and its
/// nanoseconds), then the payload to the end. Lengths and numbers are LEB128.
pub(crate) fn encode_body(
    kind: &str,
    headers: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + kind.len() + payload.len());
    out.push(BODY_VERSION);
    put_bytes(&mut out, kind.as_bytes());
    put_varint(&mut out, headers.len() as u64);
    for (name, value) in headers {
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    match timeout {
        None => out.push(0),
        Some(timeout) => {
            out.push(1);
            put_varint(
                &mut out,
                u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            );
        }
    }
    out.extend_from_slice(payload);
    out
}

fn read_string(r: &mut Reader<'_>) -> Result<String, Malformed> {
    let len = usize::try_from(r.varint()?).map_err(|_| malformed(r.what, "length too large"))?;
    let raw = r.take(len)?;
    String::from_utf8(raw.to_vec()).map_err(|_| malformed(r.what, "a string is not UTF-8"))
}

pub(crate) fn decode_body(bytes: &[u8]) -> Result<Body, Malformed> {
    let mut r = Reader::new(bytes, "task body");
    let version = r.u8()?;
    if version != BODY_VERSION {
        return Err(malformed(
            "task body",
            format!("format {version}, this build reads {BODY_VERSION}"),
        ));
    }
    let kind = read_string(&mut r)?;
    let count = r.varint()?;
    if count > floodway_core::limits::HEADERS_MAX as u64 {
        return Err(malformed("task body", format!("{count} headers")));
    }
    let mut headers = BTreeMap::new();
    for _ in 0..count {
        let name = read_string(&mut r)?;
        let value = read_string(&mut r)?;
        headers.insert(name, value);
    }
    let timeout = match r.u8()? {
        0 => None,
        1 => Some(Duration::from_nanos(r.varint()?)),
        other => return Err(malformed("task body", format!("timeout tag {other}"))),
    };
    Ok(Body {
        kind,
        headers,
        timeout,
        payload: r.rest().to_vec(),
    })
}

// Enqueue options ---------------------------------------------------------------------------------

/// The latest millisecond a script can hold exactly (a Lua number is a double); later run-at
/// times are stored as this one, some 285,000 years from now.
pub(crate) const MILLIS_MAX: u64 = (1 << 53) - 1;

/// A new task's options as `enqueue.lua` reads them: empty for a task with every default
/// (priority 5, no delay, time to live, keys or retry policy of its own), which is the common
/// case and costs the script nothing to parse; otherwise the priority (u8), a mask (u8) of the
/// options present, then each present option in mask order: delay (1), run-at (2) and time to
/// live (4) as big-endian doubles of milliseconds, idempotency key (8), partition key (16) and
/// retry policy (32) as a u16 length and the bytes, max_attempts (64) as a double, limit key
/// (128) as a u16 length and the bytes.
pub(crate) fn encode_options(task: &floodway_core::NewTask) -> Vec<u8> {
    let ms = |d: Duration| {
        u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .min(MILLIS_MAX) as f64
    };
    let mut mask = 0u8;
    let mut rest = Vec::new();
    if let Some(delay) = task.delay {
        mask |= 1;
        rest.extend_from_slice(&ms(delay).to_be_bytes());
    }
    if let Some(at) = task.run_at {
        mask |= 2;
        rest.extend_from_slice(&(at.as_millis().min(MILLIS_MAX) as f64).to_be_bytes());
    }
    if let Some(ttl) = task.ttl {
        mask |= 4;
        rest.extend_from_slice(&ms(ttl).to_be_bytes());
    }
    let retry = task.retry.as_ref().map(encode_retry);
    for (bit, text) in [
        (8, task.idempotency_key.as_deref()),
        (16, task.partition_key.as_deref()),
        (32, retry.as_deref()),
    ] {
        if let Some(text) = text {
            mask |= bit;
            let len = u16::try_from(text.len()).expect("keys and policies are validated short");
            rest.extend_from_slice(&len.to_be_bytes());
            rest.extend_from_slice(text.as_bytes());
        }
    }
    if let Some(attempts) = task.max_attempts {
        mask |= 64;
        rest.extend_from_slice(&f64::from(attempts).to_be_bytes());
    }
    if let Some(key) = &task.limit_key {
        mask |= 128;
        let len = u16::try_from(key.len()).expect("keys are validated short");
        rest.extend_from_slice(&len.to_be_bytes());
        rest.extend_from_slice(key.as_bytes());
    }
    if mask == 0 && task.priority == floodway_core::task::PRIORITY_DEFAULT {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(2 + rest.len());
    out.push(task.priority);
    out.push(mask);
    out.extend_from_slice(&rest);
    out
}

// Retry policies and configurations --------------------------------------------------------------

fn nanos(duration: Duration) -> u128 {
    duration.as_nanos()
}

/// `max_attempts|initial ns|max ns|multiplier|f or n`, as the scripts read it. The multiplier
/// is written in Rust's shortest round-trip form, so it reads back as the same `f64` in both
/// Rust and Lua.
pub(crate) fn encode_retry(policy: &RetryPolicy) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        policy.max_attempts,
        nanos(policy.backoff_initial),
        nanos(policy.backoff_max),
        policy.backoff_multiplier,
        match policy.jitter {
            Jitter::Full => 'f',
            Jitter::None => 'n',
        }
    )
}

fn parse<T: std::str::FromStr>(what: &'static str, text: &str) -> Result<T, Malformed> {
    text.parse()
        .map_err(|_| malformed(what, format!("{text:?} is not a number")))
}

fn duration_of(what: &'static str, text: &str) -> Result<Duration, Malformed> {
    let nanos: u128 = parse(what, text)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| malformed(what, "too long"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

pub(crate) fn decode_retry(text: &str) -> Result<RetryPolicy, Malformed> {
    const WHAT: &str = "retry policy";
    let parts: Vec<&str> = text.split('|').collect();
    let [max_attempts, initial, max, multiplier, jitter] = parts[..] else {
        return Err(malformed(WHAT, format!("{text:?} has not five fields")));
    };
    let policy = RetryPolicy {
        max_attempts: parse(WHAT, max_attempts)?,
        backoff_initial: duration_of(WHAT, initial)?,
        backoff_max: duration_of(WHAT, max)?,
        backoff_multiplier: parse(WHAT, multiplier)?,
        jitter: match jitter {
            "f" => Jitter::Full,
            "n" => Jitter::None,
            other => return Err(malformed(WHAT, format!("jitter {other:?}"))),
        },
    };
    // Found by fuzzing: a multiplier of NaN or infinity parsed, and would have made every
    // backoff computed from it meaningless. Only policies the API accepts are read back.
    policy
        .validate()
        .map_err(|error| malformed(WHAT, error.to_string()))?;
    Ok(policy)
}

/// How many script arguments a queue configuration takes (see [`encode_config`]); `set_config`
/// in `common.lua` reads the same number, in the same order.
pub(crate) const CONFIG_FIELDS: usize = 13;

/// A queue configuration as the script arguments `set_config` reads, stored as they are in the
/// shard's metadata: length_max (-1 for none), overflow (0 reject, 1 dead-letter oldest), retry
/// policy, idempotency window in nanoseconds, completed_retain, dead_retain, paused (0/1);
/// then the backpressure settings: rate_limit and key_rate_limit (`rate|burst`, the rate in
/// Rust's shortest round-trip form, or empty for none), concurrency_max and
/// key_concurrency_max (-1 for none), watermarks (`high|low`, or empty) and the default time
/// to live in nanoseconds (-1 for none).
pub(crate) fn encode_config(config: &QueueConfig) -> [String; CONFIG_FIELDS] {
    let none = || "-1".to_owned();
    let rate = |limit: &Option<RateLimit>| {
        limit.map_or_else(String::new, |l| format!("{}|{}", l.rate, l.burst))
    };
    [
        config.length_max.map_or_else(none, |max| max.to_string()),
        match config.overflow {
            OverflowPolicy::Reject => "0",
            OverflowPolicy::DeadLetterOldest => "1",
        }
        .to_owned(),
        encode_retry(&config.retry),
        nanos(config.idempotency_window).to_string(),
        config.completed_retain.to_string(),
        config.dead_retain.to_string(),
        if config.paused { "1" } else { "0" }.to_owned(),
        rate(&config.rate_limit),
        rate(&config.key_rate_limit),
        config
            .concurrency_max
            .map_or_else(none, |max| max.to_string()),
        config
            .key_concurrency_max
            .map_or_else(none, |max| max.to_string()),
        config
            .watermarks
            .map_or_else(String::new, |w| format!("{}|{}", w.high, w.low)),
        config.ttl.map_or_else(none, |ttl| nanos(ttl).to_string()),
    ]
}

/// The configuration from the fields [`encode_config`] writes, in that order. A shard created
/// before the backpressure settings existed has none of them stored; the stats script answers
/// those as empty, which reads as "no limit".
pub(crate) fn decode_config(fields: &[&str]) -> Result<QueueConfig, Malformed> {
    const WHAT: &str = "queue configuration";
    let [
        len,
        overflow,
        retry,
        window,
        completed,
        dead,
        paused,
        rate_limit,
        key_rate_limit,
        concurrency_max,
        key_concurrency_max,
        watermarks,
        ttl,
    ] = fields[..]
    else {
        return Err(malformed(WHAT, "wrong number of fields"));
    };
    fn optional(text: &str) -> Option<&str> {
        match text {
            "" | "-1" => None,
            text => Some(text),
        }
    }
    fn pair(text: &str) -> Result<(&str, &str), Malformed> {
        text.split_once('|')
            .ok_or_else(|| malformed(WHAT, format!("{text:?} is not a pair")))
    }
    let rate = |text: &str| -> Result<Option<RateLimit>, Malformed> {
        optional(text)
            .map(|text| {
                let (rate, burst) = pair(text)?;
                Ok(RateLimit {
                    rate: parse(WHAT, rate)?,
                    burst: parse(WHAT, burst)?,
                })
            })
            .transpose()
    };
    let config = QueueConfig {
        length_max: match len {
            "-1" => None,
            n => Some(parse(WHAT, n)?),
        },
        overflow: match overflow {
            "0" => OverflowPolicy::Reject,
            "1" => OverflowPolicy::DeadLetterOldest,
            other => return Err(malformed(WHAT, format!("overflow {other:?}"))),
        },
        retry: decode_retry(retry)?,
        idempotency_window: duration_of(WHAT, window)?,
        completed_retain: parse(WHAT, completed)?,
        dead_retain: parse(WHAT, dead)?,
        paused: paused == "1",
        rate_limit: rate(rate_limit)?,
        key_rate_limit: rate(key_rate_limit)?,
        concurrency_max: optional(concurrency_max)
            .map(|n| parse(WHAT, n))
            .transpose()?,
        key_concurrency_max: optional(key_concurrency_max)
            .map(|n| parse(WHAT, n))
            .transpose()?,
        watermarks: optional(watermarks)
            .map(|text| {
                let (high, low) = pair(text)?;
                Ok(Watermarks {
                    high: parse(WHAT, high)?,
                    low: parse(WHAT, low)?,
                })
            })
            .transpose()?,
        ttl: optional(ttl).map(|n| duration_of(WHAT, n)).transpose()?,
    };
    // Found by fuzzing: a rate of NaN or infinity parsed. Only configurations the API accepts
    // are read back.
    config
        .validate()
        .map_err(|error| malformed(WHAT, error.to_string()))?;
    Ok(config)
}

/// A dataset marker id: 16 hex digits, the low 32 bits of which are the salt of task ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    pub id: String,
    pub salt: u32,
}

impl Marker {
    pub(crate) fn random() -> Marker {
        let id = format!("{:016x}", fastrand::u64(..));
        Marker::parse(&id).expect("a fresh marker parses")
    }

    pub(crate) fn parse(id: &str) -> Result<Marker, Malformed> {
        if id.len() != 16 {
            return Err(malformed("dataset marker", format!("{id:?}")));
        }
        let value = u64::from_str_radix(id, 16)
            .map_err(|_| malformed("dataset marker", format!("{id:?}")))?;
        Ok(Marker {
            id: id.to_owned(),
            salt: value as u32,
        })
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_round_trip_and_are_uuid_v7() {
        let home = Home {
            number: 0xABCD,
            shard: 1000,
        };
        let id = task_id(home, 0xDEAD_BEEF, tid(1_800_000_000_123, 42).as_bytes()).unwrap();
        assert_eq!(id.created_at(), Timestamp::from_millis(1_800_000_000_123));
        let text = id.to_string();
        assert_eq!(&text[14..15], "7", "version nibble in {text}");
        let (back, salt, t) = split_id(id).unwrap();
        assert_eq!(
            (back, salt, t),
            (home, 0xDEAD_BEEF, tid(1_800_000_000_123, 42))
        );
    }

    #[test]
    fn consecutive_tids_borrow_the_next_millisecond() {
        let tids: Vec<String> = tids_from(tid(7, u16::MAX - 1).as_bytes())
            .unwrap()
            .take(3)
            .collect();
        assert_eq!(tids, [tid(7, u16::MAX - 1), tid(7, u16::MAX), tid(8, 0)]);
        assert_eq!(tids_from(b"").unwrap().count(), 0);
    }

    #[test]
    fn foreign_ids_are_not_ours() {
        // The conformance suite's unknown id: queue number 0.
        let unknown = TaskId::from_u128(0x0000_0000_0001_7000_8000_0000_0000_0001);
        assert_eq!(split_id(unknown), None);
        assert_eq!(split_id(TaskId::from_u128(0)), None);
    }

    #[test]
    fn the_fuzz_entry_accepts_valid_encodings_and_survives_hostile_numbers() {
        use crate::fuzzing::decode_all;
        let body = encode_body("k", &BTreeMap::new(), None, b"{}");
        assert_eq!(decode_all(&body), 1);
        assert_eq!(
            decode_all(encode_retry(&RetryPolicy::default()).as_bytes()),
            1
        );
        let config = encode_config(&QueueConfig::default()).join("\n");
        assert_eq!(decode_all(config.as_bytes()), 1);
        let retry = encode_retry(&RetryPolicy::default());
        let limited = QueueConfig {
            rate_limit: Some(floodway_core::RateLimit {
                rate: 5.0,
                burst: 3,
            }),
            watermarks: Some(floodway_core::Watermarks { high: 10, low: 5 }),
            ..QueueConfig::default()
        };
        let config = encode_config(&limited).join("\n");
        for valid in [&retry, &config] {
            for hostile in [
                "NaN",
                "inf",
                "-inf",
                "1e309",
                "-0",
                "18446744073709551616",
                "",
            ] {
                for (i, _) in valid.match_indices(|c: char| c.is_ascii_digit()) {
                    let mut text = valid.clone();
                    text.replace_range(i..=i, hostile);
                    decode_all(text.as_bytes());
                }
            }
        }
    }

    /// Found by the `redis_codec` fuzz target (fuzz/artifacts, 2026-12-03): a 16-byte task-id
    /// suffix with a two-byte character across the 12th byte was sliced inside the character.
    #[test]
    fn a_task_id_suffix_with_a_multibyte_character_is_refused_not_sliced() {
        let crash = b"00000000|||\xd5\x83|||";
        assert_eq!(crash.len(), 16);
        assert!(tids_from(crash).is_err());
        assert_eq!(crate::fuzzing::decode_all(crash), 0);
        assert!(
            tids_from(b"+0000000000000a1").is_err(),
            "a sign is not a hex digit"
        );
        assert!(tids_from(b"00000000000a0001").is_ok());
    }

    proptest! {
        #[test]
        fn id_order_within_a_shard_is_tid_order(
            a in (0u64..1 << 48, any::<u16>()),
            b in (0u64..1 << 48, any::<u16>()),
            number in 1u16..,
            shard in 0u16..=SHARD_MAX,
            salt in any::<u32>(),
        ) {
            let home = Home { number, shard };
            let (ta, tb) = (tid(a.0, a.1), tid(b.0, b.1));
            let ia = task_id(home, salt, ta.as_bytes()).unwrap();
            let ib = task_id(home, salt, tb.as_bytes()).unwrap();
            prop_assert_eq!(ia.cmp(&ib), ta.cmp(&tb));
        }

        #[test]
        fn tid_after_selects_exactly_the_later_ids(
            after in any::<u128>(),
            probe in (0u64..1 << 48, any::<u16>()),
            number in 1u16..4,
            shard in 0u16..3,
            salt in 0u32..3,
        ) {
            let home = Home { number, shard };
            let t = tid(probe.0, probe.1);
            let id = task_id(home, salt, t.as_bytes()).unwrap();
            let after = TaskId::from_u128(after);
            let selected = tid_after(home, salt, after).is_none_or(|bound| t > bound);
            prop_assert_eq!(selected, id > after, "after {:?} bound {:?}", after, tid_after(home, salt, after));
        }

        #[test]
        fn bodies_round_trip(
            kind in "[a-z_]{1,20}",
            headers in prop::collection::btree_map("[a-z-]{1,8}", ".{0,20}", 0..4),
            timeout in prop::option::of(0u64..3_600_000_000_000),
            payload in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let timeout = timeout.map(Duration::from_nanos);
            let bytes = encode_body(&kind, &headers, timeout, &payload);
            let body = decode_body(&bytes).unwrap();
            prop_assert_eq!(body, Body { kind, headers, timeout, payload });
        }

        #[test]
        fn every_decoder_survives_random_and_mutated_input(
            seed in prop_oneof![
                Just(encode_body("kind", &BTreeMap::from([("h".to_owned(), "v".to_owned())]), Some(Duration::from_secs(5)), b"{\"a\":1}")),
                Just(encode_retry(&RetryPolicy::default()).into_bytes()),
                Just(encode_config(&QueueConfig::default()).join("\n").into_bytes()),
                prop::collection::vec(any::<u8>(), 0..64),
            ],
            flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = seed;
            for (at, bits) in flips {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] ^= bits;
                }
            }
            if cut % 3 == 0 && !bytes.is_empty() {
                bytes.truncate(cut % bytes.len());
            }
            crate::fuzzing::decode_all(&bytes);
        }

        #[test]
        fn body_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_body(&bytes);
            let _ = Record::decode(&bytes);
        }

        #[test]
        fn retry_policies_round_trip(
            max_attempts in 1u32..=1000,
            initial in 0u64..1_000_000_000_000,
            extra in 0u64..1_000_000_000_000,
            multiplier in 1.0f64..=100.0,
            full in any::<bool>(),
        ) {
            let policy = RetryPolicy {
                max_attempts,
                backoff_initial: Duration::from_nanos(initial),
                backoff_max: Duration::from_nanos(initial + extra),
                backoff_multiplier: multiplier,
                jitter: if full { Jitter::Full } else { Jitter::None },
            };
            prop_assert_eq!(decode_retry(&encode_retry(&policy)).unwrap(), policy);
        }
    }

    /// A record as `common.lua` packs it, with a partition key, a limit key and effects.
    fn flagged_record() -> Vec<u8> {
        fn wstr(out: &mut Vec<u8>, text: Option<&str>) {
            match text {
                None => out.extend_from_slice(&[0, 0]),
                Some(text) => {
                    out.extend_from_slice(&(text.len() as u16 + 1).to_be_bytes());
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        let mut out = vec![
            RECORD_VERSION,
            TaskState::Active.index() as u8,
            5,
            0,
            FLAG_PARTITION_KEY | FLAG_LIMIT_KEY | FLAG_EFFECTS,
        ];
        for number in [1.0, 1.0, 7.0, -1.0, 9.0, -1.0, 3.0] {
            out.extend_from_slice(&f64::to_be_bytes(number));
        }
        wstr(&mut out, Some("worker-1"));
        wstr(&mut out, None);
        wstr(&mut out, Some(&encode_retry(&RetryPolicy::default())));
        wstr(&mut out, None);
        wstr(&mut out, Some("order-1"));
        wstr(&mut out, None);
        wstr(&mut out, Some("tenant-7"));
        let mut effects = 2u16.to_be_bytes().to_vec();
        for text in ["charge", "{\"id\":1}", "empty", ""] {
            wstr(&mut effects, Some(text));
        }
        out.extend_from_slice(&(effects.len() as u32).to_be_bytes());
        out.extend_from_slice(&effects);
        out.extend_from_slice(&encode_body("call", &BTreeMap::new(), None, b"{}"));
        out
    }

    #[test]
    fn flagged_records_carry_limit_key_and_effects() {
        let record = Record::decode(&flagged_record()).unwrap();
        assert_eq!(record.partition_key.as_deref(), Some("order-1"));
        assert_eq!(record.limit_key.as_deref(), Some("tenant-7"));
        assert_eq!(
            record.effects,
            Effects::from([
                ("charge".to_owned(), "{\"id\":1}".to_owned()),
                ("empty".to_owned(), String::new()),
            ])
        );
        assert_eq!(decode_body(&record.body).unwrap().payload, b"{}");
        let mut cut = flagged_record();
        cut.truncate(cut.len() - 40);
        assert!(Record::decode(&cut).is_err(), "an effects block cut short");
    }

    #[test]
    fn configs_round_trip() {
        let config = QueueConfig {
            length_max: Some(7),
            overflow: OverflowPolicy::DeadLetterOldest,
            idempotency_window: Duration::from_nanos(1_500_000_001),
            completed_retain: 3,
            dead_retain: 9,
            paused: true,
            rate_limit: Some(RateLimit {
                rate: 0.1,
                burst: 3,
            }),
            key_rate_limit: Some(RateLimit {
                rate: 123.456_789,
                burst: 1,
            }),
            concurrency_max: Some(4),
            key_concurrency_max: Some(1),
            watermarks: Some(Watermarks { high: 10, low: 2 }),
            ttl: Some(Duration::from_nanos(86_400_000_000_001)),
            ..QueueConfig::default()
        };
        for config in [config, QueueConfig::default()] {
            let fields = encode_config(&config);
            let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
            assert_eq!(decode_config(&refs).unwrap(), config);
        }
    }
}
