-- floodway: the helpers every shard script starts with (src/scripts.rs prepends this file).
--
-- A shard is one queue, or one of the N shards of a partitioned queue. All its keys share
-- the hash tag in KEYS[1], so a script touches exactly one Cluster slot; the key names below
-- are derived from it (keys of one slot need not all be declared).
--
-- Every script takes ARGV[1] the dataset marker id the client knows, ARGV[2] what to do when
-- the shard's metadata is missing ('c' create it, 'a' answer {'absent'}, 'n' fail because
-- Redis lost it) and ARGV[3] "now" in milliseconds ('' reads the server's TIME). It loads
-- the metadata (M), records changes in SET (absolute values) and D (counter deltas), and
-- writes them back with flush() only after every check passed: a script either refuses
-- before writing anything or runs to the end, since Redis does not roll a script back.
--
-- The task record (K_REC, field = tid) is a struct-packed header followed by short strings
-- (worker, last error, retry policy, idempotency key, partition key, dead-letter log entry),
-- then, only when the header's flags say so, the limit key (F_LK) and the effects block
-- (F_EFF: a u32 byte length, a u16 count, then key and result strings), then the client's
-- body; src/codec.rs (Record) reads the same layout.

local B = KEYS[1]
local K_META = B .. ':m'   -- hash: configuration, counts per state, totals, id and fence state
local K_REC = B .. ':t'    -- hash: tid -> task record
local K_READY = B .. ':r'  -- zset: ready tasks that may be reserved, by (priority, run_at), tid
local K_HELD = B .. ':h'   -- zset: ready tasks held back by their partition key, by run_at
local K_SCHED = B .. ':s'  -- zset: scheduled and retrying tasks, by run_at
local K_TTL = B .. ':x'    -- zset: waiting tasks with a time to live, by expires_at
local K_LEASE = B .. ':l'  -- zset: active tasks, by lease expiry
local K_OPEN = B .. ':o'   -- zset (lex): unfinished tasks by tid
local K_DONE = B .. ':c'   -- zset (lex): completed tasks by tid
local K_CANC = B .. ':k'   -- zset (lex): cancelled tasks by tid
local K_DLOG = B .. ':dl'  -- stream: the dead-letter log (task, reason, error), one entry per dead letter
local K_IDEM = B .. ':i'   -- hash: idempotency key -> "tid:first use"
local K_IDEMX = B .. ':ix' -- zset: idempotency keys by first use, to forget them after the window
local K_EV = B .. ':e'     -- stream: wake-up events for reserves waiting in other processes
local K_PK = B .. ':p:'    -- prefix of zset (lex) per partition key: its unfinished tasks by tid
local K_KACT = B .. ':ka'  -- hash: limit key -> its active tasks (fields at zero are deleted)
local K_KB = B .. ':kb'    -- hash: limit key -> its token bucket, "tokens|updated ms" (absent: full)
local K_KBX = B .. ':kx'   -- zset: limit keys in K_KB by when their bucket is full again
local function K_DEAD(reason) return B .. ':d' .. reason end -- zset (lex) per dead reason

local S_SCHED, S_READY, S_ACTIVE, S_RETRY, S_DONE, S_DEAD, S_CANC = 0, 1, 2, 3, 4, 5, 6
local R_MAX, R_EXPIRED, R_OVERFLOW, R_PERMANENT = 1, 2, 3, 4
local REASONS = {'max_attempts', 'expired', 'overflow', 'permanent_failure'}
local BAND = 4398046511104    -- 2^42 ms (year 2109): one priority band of the ready score
local PRIORITY_MAX = 9
local EPOCH_UNIT = 4294967296 -- 2^32: fences of a new epoch start above epoch * 2^32
local HDR = '>BBBBBddddddd'   -- version state priority dead_reason flags attempt fence run_at expires lease finished created
local HDR_LEN = 61
local F_PK = 1                -- flags: the task has a partition key
local F_LK = 2                -- flags: a limit key follows the dead-letter entry
local F_EFF = 4               -- flags: an effects block follows (after the limit key, if any)
-- Start latency buckets: upper bounds in ms, as floodway_core::LatencyHistogram::BOUNDS (a
-- unit test in src/scripts.rs checks they agree). The metadata holds the count of bucket i in
-- 'sl<i>' (1-based; the last, above every bound, is #START_LATENCY_BOUNDS_MS + 1) and the sum
-- in ms in 'sls'.
local START_LATENCY_BOUNDS_MS = {1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
  30000, 60000, 300000, 900000, 3600000}

local MARKER, MODE = ARGV[1], ARGV[2]
local NOW = 0
local M, SET, D = {}, {}, {}
local R, DIRTY, GONE, ENC = {}, {}, {}, {}
local WOKE = false

local function fail(message) error({err = message}) end
local function int(n) return string.format('%d', n) end

-- Metadata -----------------------------------------------------------------------------------

local function count(field) return tonumber(M[field] or 0) + (D[field] or 0) end
local function bump(field, n) D[field] = (D[field] or 0) + (n or 1) end

-- Loads the metadata; false when it is missing and MODE allows that.
local function open_shard()
  local raw = redis.call('HGETALL', K_META)
  if #raw == 0 then
    if MODE == 'n' then
      fail('FLOODWAY_LOST ' .. B .. ' is registered but its metadata is gone: Redis lost data')
    end
    return false
  end
  for i = 1, #raw, 2 do M[raw[i]] = raw[i + 1] end
  if M.marker ~= MARKER then
    fail('FLOODWAY_LOST ' .. B .. ' belongs to dataset ' .. tostring(M.marker) ..
      ', not ' .. MARKER .. ': Redis lost data or was re-initialised')
  end
  return true
end

-- Sets "now": the caller's clock, or the server's, never earlier than the shard has seen.
local function init_now()
  local now
  if ARGV[3] == '' then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  else
    now = tonumber(ARGV[3])
  end
  local last = tonumber(M.clock or 0)
  if now > last then SET.clock = now else now = last end
  NOW = now
end

-- The configuration's metadata fields, in the order of src/codec.rs, encode_config.
local CONFIG = {'len', 'ovf', 'retry', 'idem', 'cret', 'dret', 'paused',
  'rl', 'krl', 'cmax', 'kcmax', 'wm', 'ttl'}

-- Writes the configuration fields given as ARGV[first ..] (src/codec.rs, encode_config).
local function set_config(first)
  for i, name in ipairs(CONFIG) do
    SET[name] = ARGV[first + i - 1]
    M[name] = ARGV[first + i - 1]
  end
end

-- A queue-wide number for one of `shards` shards: a partitioned queue enforces length_max,
-- the watermarks, the queue's concurrency and its burst as ceil(n / shards) per shard.
local function per_shard(n, shards)
  if shards > 1 then return math.ceil(n / shards) end
  return n
end

-- A configured count (concurrency_max and the like), or false for none (-1, or a shard made
-- before the field existed).
local function config_count(field)
  local v = M[field]
  if v == nil or v == '' or v == '-1' then return false end
  return tonumber(v)
end

-- A configured "a|b" pair of numbers (rate limits, watermarks), or false for none.
local function config_pair(field)
  local v = M[field]
  if v == nil or v == '' then return false end
  local a, b = string.match(v, '^([^|]+)|([^|]+)$')
  return tonumber(a), tonumber(b)
end

-- True when the queue limits concurrency: a task leaving Active may then let a waiting
-- reserve in another process take one, so the script wakes them.
local function limits_concurrency()
  return config_count('cmax') or config_count('kcmax')
end

local function create_shard(config_first)
  SET.marker = MARKER
  M.marker = MARKER
  set_config(config_first)
end

-- Task records -------------------------------------------------------------------------------

local function rstr(s, pos)
  local n
  n, pos = struct.unpack('>H', s, pos)
  if n == 0 then return false, pos end
  return string.sub(s, pos, pos + n - 2), pos + n - 1
end

local function wstr(v)
  if v then return struct.pack('>H', #v + 1) .. v end
  return '\0\0'
end

-- A decoded record. `lk` is the limit key or false; `ef` the effects block's content (count
-- and pairs, kept packed: only record_effects reads it) or false.
local function decode(s)
  local _, st, pr, dr, fl, at, fe, ra, ex, le, fi, cr, pos = struct.unpack(HDR, s)
  local t = {st = st, pr = pr, dr = dr, at = at, fe = fe, ra = ra, ex = ex, le = le, fi = fi, cr = cr}
  t.wk, pos = rstr(s, pos)
  t.er, pos = rstr(s, pos)
  t.rt, pos = rstr(s, pos)
  t.ik, pos = rstr(s, pos)
  t.pk, pos = rstr(s, pos)
  t.dl, pos = rstr(s, pos)
  t.lk, t.ef = false, false
  if bit.band(fl, F_LK) ~= 0 then t.lk, pos = rstr(s, pos) end
  if bit.band(fl, F_EFF) ~= 0 then
    local n
    n, pos = struct.unpack('>I4', s, pos)
    t.ef = string.sub(s, pos, pos + n - 1)
    pos = pos + n
  end
  t.body = string.sub(s, pos)
  return t
end

local function encode(t)
  local flags, tail = 0, ''
  if t.pk then flags = F_PK end
  if t.lk then
    flags = flags + F_LK
    tail = wstr(t.lk)
  end
  if t.ef then
    flags = flags + F_EFF
    tail = tail .. struct.pack('>I4', #t.ef) .. t.ef
  end
  return struct.pack(HDR, 1, t.st, t.pr, t.dr, flags, t.at, t.fe, t.ra, t.ex, t.le, t.fi, t.cr)
    .. wstr(t.wk) .. wstr(t.er) .. wstr(t.rt) .. wstr(t.ik) .. wstr(t.pk) .. wstr(t.dl) .. tail
    .. t.body
end

-- The limit key of an encoded record, or false, without decoding the rest: the hot paths
-- (reserve) splice records instead of decoding them.
local function limit_key_of(s)
  if bit.band(struct.unpack('>B', s, 5), F_LK) == 0 then return false end
  local pos = HDR_LEN + 1
  for _ = 1, 6 do
    local n = struct.unpack('>H', s, pos)
    pos = pos + 2
    if n > 0 then pos = pos + n - 1 end
  end
  return (rstr(s, pos))
end

-- Loads the records of tids not yet cached.
local function preload(tids)
  local want = {}
  for _, tid in ipairs(tids) do
    if R[tid] == nil and not GONE[tid] then want[#want + 1] = tid end
  end
  for i = 1, #want, 500 do
    local chunk = {unpack(want, i, math.min(i + 499, #want))}
    local got = redis.call('HMGET', K_REC, unpack(chunk))
    for j, tid in ipairs(chunk) do
      if got[j] then R[tid] = decode(got[j]) else R[tid] = false end
    end
  end
end

local function get(tid)
  if R[tid] == nil then preload({tid}) end
  return R[tid]
end

local function put(tid, t)
  R[tid] = t
  DIRTY[tid] = true
  ENC[tid] = nil
end

-- Like put, and returns the encoded record, which flush then writes without encoding again.
local function put_encoded(tid, t)
  put(tid, t)
  local s = encode(t)
  ENC[tid] = s
  return s
end

local function delete(tid)
  R[tid] = false
  DIRTY[tid] = nil
  GONE[tid] = true
end

-- Where the strings after the worker start in a record: the hot paths replace the header
-- and the worker and copy the rest.
local function after_worker(s)
  local n = struct.unpack('>H', s, HDR_LEN + 1)
  if n == 0 then return HDR_LEN + 3 end
  return HDR_LEN + 2 + n
end

-- Writes back changed records and metadata; the last step of every writing script (and a
-- step in the middle of reserve, which then works on records outside the cache).
local function flush()
  local args, gone = {}, {}
  for tid in pairs(DIRTY) do
    args[#args + 1] = tid
    args[#args + 1] = ENC[tid] or encode(R[tid])
  end
  for i = 1, #args, 1000 do
    redis.call('HSET', K_REC, unpack(args, i, math.min(i + 999, #args)))
  end
  for tid in pairs(GONE) do gone[#gone + 1] = tid end
  for i = 1, #gone, 1000 do
    redis.call('HDEL', K_REC, unpack(gone, i, math.min(i + 999, #gone)))
  end
  local meta = {}
  for field, value in pairs(SET) do
    meta[#meta + 1] = field
    meta[#meta + 1] = value
  end
  for field, delta in pairs(D) do
    if delta ~= 0 and SET[field] == nil then
      meta[#meta + 1] = field
      meta[#meta + 1] = int(tonumber(M[field] or 0) + delta)
    end
  end
  if #meta > 0 then redis.call('HSET', K_META, unpack(meta)) end
  if WOKE then redis.call('XADD', K_EV, 'MAXLEN', '~', 64, '*', 'w', '1') end
  for field, value in pairs(SET) do M[field] = value end
  for field, delta in pairs(D) do M[field] = int(tonumber(M[field] or 0) + delta) end
  R, DIRTY, GONE, ENC, SET, D, WOKE = {}, {}, {}, {}, {}, {}, false
end

-- Ids ----------------------------------------------------------------------------------------

-- The next tid: 12 hex digits of milliseconds and 4 of sequence, so that byte order is id
-- order. Ids only grow, within a millisecond too; a full millisecond borrows the next.
local function next_tid()
  local ms, seq = tonumber(M.last_ms or 0), tonumber(M.last_seq or 0)
  if NOW > ms then
    ms, seq = NOW, 0
  else
    seq = seq + 1
    if seq > 65535 then ms, seq = ms + 1, 0 end
  end
  M.last_ms, M.last_seq = ms, seq
  SET.last_ms, SET.last_seq = ms, seq
  return string.format('%012x%04x', ms, seq)
end

-- Retry policies: "max_attempts|initial ns|max ns|multiplier|f or n" ----------------------------

local function max_attempts(rt) return tonumber(string.match(rt, '^(%d+)')) end

-- The backoff after attempt `attempt` failed, in ms, as floodway_core::RetryPolicy::backoff
-- computes it (the duration rounded to the nanosecond, then cut to the millisecond).
local function backoff_ms(rt, attempt, random)
  local _, initial, cap, multiplier, jitter = string.match(rt, '^(%d+)|(%d+)|(%d+)|([^|]+)|(%a)$')
  local exponent = attempt - 1
  if exponent < 0 then exponent = 0 end
  if exponent > 64 then exponent = 64 end
  local ceiling = (tonumber(initial) / 1e9) * tonumber(multiplier) ^ exponent
  local cap_secs = tonumber(cap) / 1e9
  if ceiling > cap_secs then ceiling = cap_secs end
  local wait = ceiling
  if jitter == 'f' then
    if random < 0 then random = 0 end
    if random > 1 then random = 1 end
    wait = ceiling * random
  end
  return math.floor(math.floor(wait * 1e9 + 0.5) / 1e6)
end

-- Indexes ------------------------------------------------------------------------------------

local function ready_score(t) return (PRIORITY_MAX - t.pr) * BAND + t.ra end

local function pk_key(pk) return K_PK .. pk end

local function pk_head(pk)
  return redis.call('ZRANGE', pk_key(pk), 0, 0)[1]
end

-- Indexes a task that just became ready: reservable, or held back behind its partition's head.
local function place_ready(tid, t)
  if t.pk and pk_head(t.pk) ~= tid then
    redis.call('ZADD', K_HELD, t.ra, tid)
  else
    redis.call('ZADD', K_READY, ready_score(t), tid)
    WOKE = true
  end
end

-- Removes a waiting task (scheduled, ready, retrying) from the indexes of its state.
local function unindex_waiting(tid, t)
  if t.st == S_READY then
    redis.call('ZREM', K_READY, tid)
    redis.call('ZREM', K_HELD, tid)
  else
    redis.call('ZREM', K_SCHED, tid)
  end
  if t.ex >= 0 then redis.call('ZREM', K_TTL, tid) end
end

-- A task that finished leaves its partition; if it was the head, the next may run.
local function leave_partition(tid, t)
  if not t.pk then return end
  local head = pk_head(t.pk)
  redis.call('ZREM', pk_key(t.pk), tid)
  if head ~= tid then return end
  local next_tid = pk_head(t.pk)
  if not next_tid then return end
  local n = get(next_tid)
  if n and n.st == S_READY then
    redis.call('ZREM', K_HELD, next_tid)
    redis.call('ZADD', K_READY, ready_score(n), next_tid)
    WOKE = true
  end
end

-- A task that is unfinished again (new or replayed) joins its partition; if it goes before
-- the current head, that head is held back.
local function join_partition(tid, t)
  if not t.pk then return end
  local head = pk_head(t.pk)
  redis.call('ZADD', pk_key(t.pk), 0, tid)
  if head and tid < head then
    local h = get(head)
    if h and h.st == S_READY then
      redis.call('ZREM', K_READY, head)
      redis.call('ZADD', K_HELD, h.ra, head)
    end
  end
end

-- Counts a task that leaves Active (completed, failed, released, or taken back by reaping)
-- out of its limit key's active tasks, and wakes reserves that a concurrency limit may have
-- held back.
local function leave_active(t)
  if t.lk then
    if redis.call('HINCRBY', K_KACT, t.lk, -1) <= 0 then redis.call('HDEL', K_KACT, t.lk) end
  end
  if limits_concurrency() then WOKE = true end
end

-- Moves a task that left its previous indexes to the dead letters.
local function bury(tid, t, reason, at)
  t.st = S_DEAD
  t.dr = reason
  t.fi = at
  t.wk = false
  redis.call('ZREM', K_OPEN, tid)
  redis.call('ZADD', K_DEAD(reason), 0, tid)
  t.dl = redis.call('XADD', K_DLOG, '*', 'task', tid, 'reason', REASONS[reason], 'error', t.er or '')
  leave_partition(tid, t)
  bump('n5')
  bump('d' .. reason)
  put(tid, t)
end

-- Deletes a dead letter's record and log entry (its index entry is the caller's).
local function forget_dead(tid, t)
  if t.dl then redis.call('XDEL', K_DLOG, t.dl) end
  delete(tid)
end

-- Keeps the newest `cret` completed and cancelled tasks and `dret` dead letters.
local function retain()
  local keep = tonumber(M.cret)
  for _, index in ipairs({{K_DONE, 'n4'}, {K_CANC, 'n6'}}) do
    local excess = count(index[2]) - keep
    if excess > 0 then
      for _, tid in ipairs(redis.call('ZRANGE', index[1], 0, excess - 1)) do delete(tid) end
      redis.call('ZREMRANGEBYRANK', index[1], 0, excess - 1)
      bump(index[2], -excess)
    end
  end
  local excess = count('n5') - tonumber(M.dret)
  while excess > 0 do
    local lowest, lowest_reason = nil, nil
    for reason = 1, 4 do
      local head = redis.call('ZRANGE', K_DEAD(reason), 0, 0)[1]
      if head and (lowest == nil or head < lowest) then lowest, lowest_reason = head, reason end
    end
    if lowest == nil then break end
    redis.call('ZREM', K_DEAD(lowest_reason), lowest)
    local t = get(lowest)
    if t then forget_dead(lowest, t) else delete(lowest) end
    bump('n5', -1)
    bump('dead_dropped')
    excess = excess - 1
  end
end

-- Housekeeping -------------------------------------------------------------------------------

-- Takes back up to `bound` tasks whose lease expired at or before now: to ready, run-at the
-- expiry, keeping the lease's expiry; or to the dead letters if that was the last attempt.
local function reap(bound)
  local due = redis.call('ZRANGEBYSCORE', K_LEASE, '-inf', NOW, 'LIMIT', 0, bound)
  if #due == 0 then return 0 end
  preload(due)
  for _, tid in ipairs(due) do
    local t = R[tid]
    bump('n2', -1)
    bump('leases_expired')
    leave_active(t)
    if t.at >= max_attempts(t.rt) then
      bury(tid, t, R_MAX, t.le)
    else
      t.st = S_READY
      t.wk = false
      t.ra = t.le
      bump('n1')
      place_ready(tid, t)
      if t.ex >= 0 then redis.call('ZADD', K_TTL, t.ex, tid) end
      put(tid, t)
    end
  end
  redis.call('ZREM', K_LEASE, unpack(due))
  return #due
end

-- Dead-letters waiting tasks whose time to live passed, then makes due scheduled and retrying
-- tasks ready; up to `bound` of each. Returns how many moved.
local function promote(bound)
  local moved = 0
  local expired = redis.call('ZRANGEBYSCORE', K_TTL, '-inf', NOW, 'LIMIT', 0, bound)
  if #expired > 0 then
    preload(expired)
    for _, tid in ipairs(expired) do
      local t = R[tid]
      unindex_waiting(tid, t)
      bump('n' .. t.st, -1)
      bury(tid, t, R_EXPIRED, NOW)
    end
    moved = moved + #expired
  end
  local due = redis.call('ZRANGEBYSCORE', K_SCHED, '-inf', NOW, 'LIMIT', 0, bound)
  if #due > 0 then
    preload(due)
    for _, tid in ipairs(due) do
      local t = R[tid]
      bump('n' .. t.st, -1)
      bump('n1')
      t.st = S_READY
      place_ready(tid, t)
      put(tid, t)
    end
    redis.call('ZREM', K_SCHED, unpack(due))
    moved = moved + #due
  end
  return moved
end

-- Forgets up to `bound` idempotency keys whose window has passed.
local function forget_keys(bound)
  local window_ms = tonumber(M.idem) / 1e6
  local old = redis.call('ZRANGEBYSCORE', K_IDEMX, '-inf', NOW - window_ms, 'LIMIT', 0, bound)
  if #old == 0 then return 0 end
  redis.call('HDEL', K_IDEM, unpack(old))
  redis.call('ZREM', K_IDEMX, unpack(old))
  return #old
end

-- Forgets up to `bound` limit keys' token buckets that have filled up again: a missing
-- bucket is a full one, so this changes no decision and keeps K_KB from growing with every
-- limit key ever seen.
local function forget_full_buckets(bound)
  local full = redis.call('ZRANGEBYSCORE', K_KBX, '-inf', NOW, 'LIMIT', 0, bound)
  if #full == 0 then return 0 end
  redis.call('HDEL', K_KB, unpack(full))
  redis.call('ZREM', K_KBX, unpack(full))
  return #full
end

-- Lease checks -------------------------------------------------------------------------------

-- Judges a presented fence against a task: 0 ok, 1 unknown, 2 stale (current fence), 3 lease
-- expired (when), 4 wrong state (state). Stale and expired ones count in the totals.
local function check(t, fence)
  if not t then return 1, 0 end
  if fence ~= t.fe then
    bump('stale_refused')
    return 2, t.fe
  end
  if t.st == S_ACTIVE then
    if t.le <= NOW then
      bump('stale_refused')
      return 3, t.le
    end
    return 0, 0
  end
  if t.le >= 0 then
    bump('stale_refused')
    return 3, t.le
  end
  return 4, t.st
end

-- Script body --------------------------------------------------------------------------------
