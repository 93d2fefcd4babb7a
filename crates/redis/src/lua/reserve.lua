-- reserve: ARGV[4] most tasks, ARGV[5] lease ms, ARGV[6] worker ('' none, else '+' .. name),
-- ARGV[7] housekeeping bound.
--
-- Reaps expired leases and promotes due tasks of the shard first, then leases the best ready
-- tasks: each gets attempt + 1, the next fence and the lease. Fences are scoped by the
-- server's run id: after Redis restarted (and may have lost acknowledged writes), the first
-- reservation of a task jumps to the next epoch, so a fence lost with those writes is never
-- issued again.
--
-- Answers {'ok', now, next time something may become ready or -1, tid, record, ...} or
-- {'absent'}.

if not open_shard() then return {'absent'} end
init_now()

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

local out = {'ok', NOW, -1}
if M.paused ~= '1' then
  local tids = redis.call('ZRANGE', K_READY, 0, tonumber(ARGV[4]) - 1)
  if #tids > 0 then
    redis.call('ZREMRANGEBYRANK', K_READY, 0, #tids - 1)
    local got = redis.call('HMGET', K_REC, unpack(tids))
    local lease_at = NOW + tonumber(ARGV[5])
    local worker = false
    if ARGV[6] ~= '' then worker = string.sub(ARGV[6], 2) end
    local worker_w = wstr(worker)
    local floor = epoch * EPOCH_UNIT
    local records, leases, ttl = {}, {}, {}
    for i, tid in ipairs(tids) do
      local raw = got[i]
      local _, _, pr, dr, flags, at, fe, ra, ex, _, fi, cr = struct.unpack(HDR, raw)
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
  end
end
if #out == 3 then
  local soonest = -1
  for _, key in ipairs({K_SCHED, K_LEASE}) do
    local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if head[2] then
      local at = tonumber(head[2])
      if soonest < 0 or at < soonest then soonest = at end
    end
  end
  out[3] = soonest
end
flush()
return out
