-- reserve: ARGV[4] most tasks, ARGV[5] lease ms, ARGV[6] worker ('' none, else '+' .. name),
-- ARGV[7] housekeeping bound, ARGV[8] the queue's shard count, ARGV[9] '1' when this call
-- may count itself throttled even if it leases nothing (the caller will not look again), '0'
-- when it may not (the caller waits and looks again), '-' never (another shard counted it).
--
-- Reaps expired leases and promotes due tasks of the shard first, then leases the best ready
-- tasks that the reservation limits let through: each gets attempt + 1, the next fence and
-- the lease, and its start latency (now - run-at) is counted, per call, in the metadata's
-- 'sl<bucket>' and 'sls' fields. Fences are scoped by the server's run id: after Redis restarted (and may have
-- lost acknowledged writes), the first reservation of a task jumps to the next epoch, so a
-- fence lost with those writes is never issued again.
--
-- The limits (a partitioned queue enforces its queue-wide ones per shard, divided as
-- per_shard says; a limit key's tasks all live in one shard unless their partition keys send
-- them elsewhere):
--
-- - the queue's concurrency_max: at most that many minus its active tasks;
-- - the queue's token bucket (rate_limit), in the metadata as 'bt' tokens and 'bu' the time
--   they were counted, absent when full: at most as many as it holds whole tokens, one each;
-- - per limit key, its active tasks (K_KACT) against key_concurrency_max and its own bucket
--   (K_KB) against key_rate_limit: a task whose key has no room is passed over and keeps its
--   place; at most LIMITED_SCAN_MAX are passed over per call.
--
-- Buckets refill continuously as floodway_backpressure::TokenBucket does, in the same double
-- arithmetic: tokens = min(burst, tokens + elapsed seconds * rate).
--
-- Answers {'ok', now, next, throttled, tid, record, ...} or {'absent'}: next is when something
-- may change when nothing was leased (a due task, a lease expiry, the next token the limits
-- wait for), or -1; throttled is 1 when this call counted the queue throttled.

if not open_shard() then return {'absent'} end
init_now()

local LIMITED_SCAN_MAX = 1024 -- floodway_core::limits::LIMITED_SCAN_MAX

local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local epoch = tonumber(M.epoch or 0)
if M.run_id ~= run_id then
  if M.run_id and M.run_id ~= '' then
    epoch = epoch + 1
    SET.epoch = epoch
  end
  SET.run_id = run_id
end

local bound = tonumber(ARGV[7])
reap(bound)
promote(bound)
retain()

-- Write what housekeeping changed, so the records read below are current.
flush()

local MAX = tonumber(ARGV[4])
local SHARDS = tonumber(ARGV[8])

-- Token buckets ----------------------------------------------------------------------------

-- Seconds in `ms` milliseconds as Rust's Duration::as_secs_f64 computes them.
local function seconds(ms)
  return math.floor(ms / 1000) + ((ms % 1000) * 1000000) / 1e9
end

-- A bucket of `rate` per second and `burst` holding `tokens` as of `updated`, brought up to now.
local function bucket(rate, burst, tokens, updated)
  local b = {rate = rate, burst = burst, tokens = burst}
  if tokens then
    b.tokens = tokens
    if NOW > updated then b.tokens = math.min(burst, tokens + seconds(NOW - updated) * rate) end
  end
  return b
end

-- When, in ms, the bucket holds a whole token again (now if it does).
local function token_due(b)
  if b.tokens >= 1 then return NOW end
  return NOW + math.ceil((1 - b.tokens) / b.rate * 1000)
end

local function exact(x) return string.format('%.17g', x) end

local out = {'ok', NOW, -1, 0}
local soonest = -1
local function consider(at)
  if at >= 0 and (soonest < 0 or at < soonest) then soonest = at end
end

if M.paused ~= '1' then
  -- What the queue-wide limits allow.
  local allowed = MAX
  local conc_left = false
  local cmax = config_count('cmax')
  if cmax then
    conc_left = math.max(0, per_shard(cmax, SHARDS) - count('n2'))
    allowed = math.min(allowed, conc_left)
  end
  local qb = false
  local rate, burst = config_pair('rl')
  if rate then
    qb = bucket(rate / SHARDS, per_shard(burst, SHARDS), tonumber(M.bt), tonumber(M.bu))
    allowed = math.min(allowed, math.floor(qb.tokens))
  end
  local key_rate, key_burst = config_pair('krl')
  local kcmax = config_count('kcmax')

  -- Which limits held back a task that could otherwise have been leased.
  local held_rate, held_conc = false, false
  local tids, raws = {}, {}
  if not (key_rate or kcmax) then
    -- No per-key limits: the best `allowed` ready tasks.
    if allowed > 0 then
      tids = redis.call('ZRANGE', K_READY, 0, allowed - 1)
      if #tids > 0 then
        redis.call('ZREMRANGEBYRANK', K_READY, 0, #tids - 1)
        raws = redis.call('HMGET', K_REC, unpack(tids))
      end
    end
    if #tids == allowed and allowed < MAX and redis.call('ZCARD', K_READY) > 0 then
      if qb and math.floor(qb.tokens) == allowed then held_rate = true else held_conc = true end
    end
  else
    -- Per-key limits: look down the ready tasks in order, passing over those whose key has
    -- no room, until `allowed` are taken, the tasks run out, or too many were passed over.
    local active, buckets, taken_per_key = {}, {}, {}
    local function key_active(lk)
      if active[lk] == nil then active[lk] = tonumber(redis.call('HGET', K_KACT, lk) or 0) end
      return active[lk]
    end
    local function key_bucket(lk)
      if buckets[lk] == nil then
        local stored = redis.call('HGET', K_KB, lk)
        local tokens, updated = nil, nil
        if stored then
          local a, b = string.match(stored, '^([^|]+)|([^|]+)$')
          tokens, updated = tonumber(a), tonumber(b)
        end
        buckets[lk] = bucket(key_rate, key_burst, tokens, updated)
      end
      return buckets[lk]
    end
    local passed, start, more = 0, 0, false
    local chunk_size = math.max(allowed, 32)
    while allowed > 0 and passed < LIMITED_SCAN_MAX do
      local chunk = redis.call('ZRANGE', K_READY, start, start + chunk_size - 1)
      if #chunk == 0 then break end
      start = start + #chunk
      local got = redis.call('HMGET', K_REC, unpack(chunk))
      for i, tid in ipairs(chunk) do
        local raw = got[i]
        local lk = limit_key_of(raw)
        local room = true
        if lk then
          if key_rate and key_bucket(lk).tokens < 1 then
            room = false
            held_rate = true
            consider(token_due(key_bucket(lk)))
          elseif kcmax and key_active(lk) >= kcmax then
            room = false
            held_conc = true
          end
        end
        if room then
          tids[#tids + 1] = tid
          raws[#raws + 1] = raw
          if lk then
            active[lk] = key_active(lk) + 1
            taken_per_key[lk] = (taken_per_key[lk] or 0) + 1
            if key_rate then
              local b = key_bucket(lk)
              b.tokens = b.tokens - 1
            end
          end
          if #tids == allowed then break end
        else
          passed = passed + 1
          if passed >= LIMITED_SCAN_MAX then break end
        end
      end
      if #tids == allowed or #chunk < chunk_size then break end
    end
    -- Stopped by the queue-wide limits with ready tasks left over: those held them back.
    if #tids == allowed and allowed < MAX then
      more = redis.call('ZCARD', K_READY) > #tids + passed
    end
    if more then
      if qb and math.floor(qb.tokens) == allowed then held_rate = true else held_conc = true end
    end
    if #tids > 0 then redis.call('ZREM', K_READY, unpack(tids)) end
    for lk, n in pairs(taken_per_key) do
      redis.call('HINCRBY', K_KACT, lk, n)
      if key_rate then
        local b = buckets[lk]
        redis.call('HSET', K_KB, lk, exact(b.tokens) .. '|' .. int(NOW))
        redis.call('ZADD', K_KBX, NOW + math.ceil((b.burst - b.tokens) / b.rate * 1000) + 1, lk)
      end
    end
  end

  if qb then
    if #tids > 0 then
      qb.tokens = qb.tokens - #tids
      SET.bt = exact(qb.tokens)
      SET.bu = NOW
    end
    if held_rate and qb.tokens < 1 then consider(token_due(qb)) end
  end

  if #tids > 0 then
    local lease_at = NOW + tonumber(ARGV[5])
    local worker = false
    if ARGV[6] ~= '' then worker = string.sub(ARGV[6], 2) end
    local worker_w = wstr(worker)
    local floor = epoch * EPOCH_UNIT
    local records, leases, ttl = {}, {}, {}
    -- Start latencies, gathered per call: one metadata field per bucket touched.
    local waits, wait_sum = {}, 0
    for i, tid in ipairs(tids) do
      local raw = raws[i]
      local _, _, pr, dr, flags, at, fe, ra, ex, _, fi, cr = struct.unpack(HDR, raw)
      -- A ready task's run-at is when it became due.
      local wait = math.max(0, NOW - ra)
      local b = 1
      while b <= #START_LATENCY_BOUNDS_MS and wait > START_LATENCY_BOUNDS_MS[b] do b = b + 1 end
      waits[b] = (waits[b] or 0) + 1
      wait_sum = wait_sum + wait
      if fe < floor then fe = floor end
      local record = struct.pack(HDR, 1, S_ACTIVE, pr, dr, flags, at + 1, fe + 1, ra, ex, lease_at, fi, cr)
        .. worker_w .. string.sub(raw, after_worker(raw))
      if ex >= 0 then ttl[#ttl + 1] = tid end
      records[#records + 1] = tid
      records[#records + 1] = record
      leases[#leases + 1] = lease_at
      leases[#leases + 1] = tid
      out[#out + 1] = tid
      out[#out + 1] = record
    end
    redis.call('HSET', K_REC, unpack(records))
    redis.call('ZADD', K_LEASE, unpack(leases))
    if #ttl > 0 then redis.call('ZREM', K_TTL, unpack(ttl)) end
    bump('n1', -#tids)
    bump('n2', #tids)
    bump('reserved', #tids)
    for b, n in pairs(waits) do bump('sl' .. b, n) end
    bump('sls', wait_sum)
    if not (key_rate or kcmax) then
      -- Limit keys' active counts are kept whether or not a per-key limit is configured now,
      -- so that one configured later starts from the truth.
      for _, raw in ipairs(raws) do
        local lk = limit_key_of(raw)
        if lk then redis.call('HINCRBY', K_KACT, lk, 1) end
      end
    end
  end

  -- A call that leases fewer than asked while a limit held a task back counts once, as rate
  -- throttled if a rate limit did (rate first), else as concurrency throttled.
  if (held_rate or held_conc) and #tids < MAX and (#tids > 0 and ARGV[9] ~= '-' or ARGV[9] == '1') then
    if held_rate then bump('throttled_rate') else bump('throttled_concurrency') end
    out[4] = 1
  end
end
if #out == 4 then
  for _, key in ipairs({K_SCHED, K_LEASE}) do
    local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if head[2] then consider(tonumber(head[2])) end
  end
  out[3] = soonest
end
flush()
return out
