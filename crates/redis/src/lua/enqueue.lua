-- enqueue: ARGV[4 .. 3 + #CONFIG] the configuration to create the shard with, then (from
-- A = 4 + #CONFIG) ARGV[A] the length ceiling for queues without length_max, ARGV[A + 1] the
-- queue's shard count (a partitioned queue holds length_max / shards per shard, and as much
-- of the watermarks), ARGV[A + 2] the number of tasks, then two values per task: its body,
-- and its options ('' for a default task; see src/codec.rs, encode_options: priority and a
-- presence mask as bytes, then each present option).
--
-- Answers {'ok', duplicates, first, tid, ...}: duplicates has one byte per task, '0' for a new
-- task, '1' for a duplicate; first is the tid of the first new task ('' if none), the others
-- following it one by one (next_tid within one script only counts up); then the tid each
-- duplicate points at, in order. Or, with nothing written but the refusal's count (and the
-- watermark gate's side): {'overloaded', length, high, low, completed total, now} above the
-- watermarks, {'full', length, limit}; or {'invalid', new, limit}, {'absent'}.

local exists = open_shard()
if not exists then
  if MODE ~= 'c' then return {'absent'} end
  create_shard(4)
end
init_now()

local A = 4 + #CONFIG
local SHARDS = tonumber(ARGV[A + 1])
local O_DELAY, O_AT, O_TTL, O_KEY, O_PK, O_RETRY, O_ATTEMPTS, O_LK = 1, 2, 4, 8, 16, 32, 64, 128

local function ostr(s, pos)
  local n
  n, pos = struct.unpack('>H', s, pos)
  return string.sub(s, pos, pos + n - 1), pos + n
end

-- A task's options as a table, or false for a default task.
local function options(raw)
  if raw == '' then return false end
  local o = {}
  local mask, pos
  o.pr, mask, pos = struct.unpack('>BB', raw)
  if bit.band(mask, O_DELAY) ~= 0 then o.delay, pos = struct.unpack('>d', raw, pos) end
  if bit.band(mask, O_AT) ~= 0 then o.at, pos = struct.unpack('>d', raw, pos) end
  if bit.band(mask, O_TTL) ~= 0 then o.ttl, pos = struct.unpack('>d', raw, pos) end
  if bit.band(mask, O_KEY) ~= 0 then o.key, pos = ostr(raw, pos) end
  if bit.band(mask, O_PK) ~= 0 then o.pk, pos = ostr(raw, pos) end
  if bit.band(mask, O_RETRY) ~= 0 then o.rt, pos = ostr(raw, pos) end
  if bit.band(mask, O_ATTEMPTS) ~= 0 then o.attempts, pos = struct.unpack('>d', raw, pos) end
  if bit.band(mask, O_LK) ~= 0 then o.lk, pos = ostr(raw, pos) end
  return o
end

local n = tonumber(ARGV[A + 2])
local window_ns = tonumber(M.idem)
local opts, slots, batch_keys, new = {}, {}, {}, 0
for i = 1, n do
  local o = options(ARGV[A + 2 + 2 * i])
  opts[i] = o
  local key = o and o.key
  if not key then
    slots[i] = true
    new = new + 1
  else
    local first = redis.call('HGET', K_IDEM, key)
    local live = false
    if first then
      local tid, at = string.match(first, '^(%x+):(%d+)$')
      if (NOW - tonumber(at)) * 1e6 < window_ns then
        slots[i] = tid
        live = true
      end
    end
    if not live then
      if batch_keys[key] then
        slots[i] = batch_keys[key]
      else
        batch_keys[key] = i
        slots[i] = true
        new = new + 1
      end
    end
  end
end

local length = count('n0') + count('n1') + count('n3')

-- The watermark gate (hysteresis): once a batch would take the length above high, every batch
-- with new tasks is refused until the length is back at or below low. Its side is kept in the
-- metadata, so every process sees the same. A batch of duplicates only adds nothing and
-- passes.
local high, low = config_pair('wm')
if high and new > 0 then
  high, low = per_shard(high, SHARDS), per_shard(low, SHARDS)
  local refusing = M.refusing == '1'
  if refusing and length <= low then
    refusing = false
    SET.refusing = '0'
  end
  if refusing or length + new > high then
    if not refusing then SET.refusing = '1' end
    bump('rejected_overloaded')
    local completed = count('completed')
    flush()
    return {'overloaded', length, high, low, completed, NOW}
  end
end

local limit = tonumber(M.len)
if limit < 0 then
  limit = tonumber(ARGV[A])
elseif SHARDS > 1 then
  limit = math.ceil(limit / SHARDS)
end
if new > limit then return {'invalid', new, limit} end
local excess = length + new - limit
if excess > 0 and M.ovf == '0' then
  bump('rejected_full')
  flush()
  return {'full', length, limit}
end

-- Dead-letter the oldest waiting tasks to make room.
if excess > 0 then
  local dropped, cursor = 0, '-'
  while dropped < excess do
    local chunk = redis.call('ZRANGE', K_OPEN, cursor, '+', 'BYLEX', 'LIMIT', 0, 100)
    if #chunk == 0 then break end
    preload(chunk)
    for _, tid in ipairs(chunk) do
      if dropped == excess then break end
      local t = R[tid]
      if t.st ~= S_ACTIVE then
        unindex_waiting(tid, t)
        bump('n' .. t.st, -1)
        bury(tid, t, R_OVERFLOW, NOW)
        dropped = dropped + 1
      end
    end
    cursor = '(' .. chunk[#chunk]
  end
end

-- New tasks are written straight from their arguments, without the record cache: they are
-- new, so nothing earlier in this script touched them.
local answers, duplicates = {}, {}
local out, o_n = {'ok', '', ''}, 3
local records, r_n, open, x_n, sched, s_n, ready, y_n = {}, 0, {}, 0, {}, 0, {}, 0
local queue_retry = wstr(M.retry)
local scheduled, made_ready = 0, 0
-- The queue's default time to live, in ms: its nanoseconds without the last six digits.
local default_ttl = false
if config_count('ttl') then
  default_ttl = tonumber(string.sub(M.ttl, 1, -7)) or 0
end
for i = 1, n do
  local slot = slots[i]
  if slot == true then
    local o = opts[i]
    local tid = next_tid()
    local priority, run_at, expires, flags = 5, NOW, -1, 0
    local retry, key, pk, lk = queue_retry, false, false, ''
    local ttl = default_ttl
    if o then
      priority = o.pr
      if o.delay then run_at = NOW + o.delay elseif o.at and o.at > NOW then run_at = o.at end
      if o.ttl then ttl = o.ttl end
      if o.rt or o.attempts then
        local rt = o.rt or M.retry
        if o.attempts then rt = int(o.attempts) .. string.match(rt, '^%d+(|.*)$') end
        retry = wstr(rt)
      end
      if o.key then
        key = o.key
        redis.call('HSET', K_IDEM, key, tid .. ':' .. int(NOW))
        redis.call('ZADD', K_IDEMX, NOW, key)
      end
      if o.pk then
        pk = o.pk
        flags = F_PK
        join_partition(tid, {pk = pk})
      end
      if o.lk then
        lk = wstr(o.lk)
        flags = flags + F_LK
      end
    end
    if ttl then
      expires = NOW + ttl
      redis.call('ZADD', K_TTL, expires, tid)
    end
    local state = S_READY
    if run_at > NOW then state = S_SCHED end
    records[r_n + 1] = tid
    records[r_n + 2] = struct.pack(HDR, 1, state, priority, 0, flags, 0, 0, run_at, expires, -1, -1, NOW)
      .. '\0\0\0\0' .. retry .. wstr(key) .. wstr(pk) .. '\0\0' .. lk .. ARGV[A + 1 + 2 * i]
    r_n = r_n + 2
    open[x_n + 1] = 0
    open[x_n + 2] = tid
    x_n = x_n + 2
    if state == S_SCHED then
      sched[s_n + 1] = run_at
      sched[s_n + 2] = tid
      s_n = s_n + 2
      scheduled = scheduled + 1
    else
      if pk then
        place_ready(tid, {pk = pk, ra = run_at, pr = priority})
      else
        ready[y_n + 1] = (PRIORITY_MAX - priority) * BAND + run_at
        ready[y_n + 2] = tid
        y_n = y_n + 2
      end
      made_ready = made_ready + 1
    end
    answers[i] = tid
    duplicates[i] = '0'
    if out[3] == '' then out[3] = tid end
  else
    local tid = slot
    if type(slot) == 'number' then tid = answers[slot] end
    bump('deduplicated')
    answers[i] = tid
    duplicates[i] = '1'
    out[o_n + 1] = tid
    o_n = o_n + 1
  end
end
out[2] = table.concat(duplicates)
for _, batch in ipairs({{'HSET', K_REC, records, r_n}, {'ZADD', K_OPEN, open, x_n}, {'ZADD', K_SCHED, sched, s_n}, {'ZADD', K_READY, ready, y_n}}) do
  local args, count_args = batch[3], batch[4]
  for i = 1, count_args, 1000 do
    redis.call(batch[1], batch[2], unpack(args, i, math.min(i + 999, count_args)))
  end
end
if y_n > 0 then WOKE = true end
bump('n0', scheduled)
bump('n1', made_ready)
bump('enqueued', new)
retain()
flush()
return out
