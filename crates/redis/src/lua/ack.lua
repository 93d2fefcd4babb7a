-- ack: ARGV[4..] tid, fence pairs. Answers {'ok', code, value, ...} with one (code, value)
-- per lease as check() judges it (code 0 completed the task), or just {'ok'} when every lease
-- completed its task.
--
-- The common batch (distinct tasks without partition or limit keys) takes a hot path that
-- replaces each record's header and worker in place and updates the indexes with one command
-- each; any other batch goes through the record cache, item by item.

open_shard()
init_now()
local tids = {}
for i = 4, #ARGV, 2 do tids[#tids + 1] = ARGV[i] end
local got = redis.call('HMGET', K_REC, unpack(tids))

local hot = true
local seen = {}
for i, tid in ipairs(tids) do
  if seen[tid] or (got[i] and bit.band(struct.unpack('>B', got[i], 5), F_PK + F_LK) ~= 0) then
    hot = false
    break
  end
  seen[tid] = true
end

local out = {'ok'}
if hot then
  local records, done, acked = {}, {}, {}
  for i, tid in ipairs(tids) do
    local raw = got[i]
    local code, value = 1, 0
    if raw then
      local _, st, pr, dr, flags, at, fe, ra, ex, le, _, cr = struct.unpack(HDR, raw)
      if st == S_ACTIVE and fe == tonumber(ARGV[3 + 2 * i]) and le > NOW then
        code = 0
      else
        code, value = check({st = st, fe = fe, le = le}, tonumber(ARGV[3 + 2 * i]))
      end
      if code == 0 then
        records[#records + 1] = tid
        records[#records + 1] = struct.pack(HDR, 1, S_DONE, pr, dr, flags, at, fe, ra, ex, -1, NOW, cr)
          .. '\0\0' .. string.sub(raw, after_worker(raw))
        done[#done + 1] = 0
        done[#done + 1] = tid
        acked[#acked + 1] = tid
      end
    end
    out[#out + 1] = code
    out[#out + 1] = value
  end
  if #acked > 0 then
    redis.call('HSET', K_REC, unpack(records))
    redis.call('ZREM', K_LEASE, unpack(acked))
    redis.call('ZREM', K_OPEN, unpack(acked))
    redis.call('ZADD', K_DONE, unpack(done))
    bump('n2', -#acked)
    bump('n4', #acked)
    bump('completed', #acked)
    if limits_concurrency() then WOKE = true end
  end
else
  for i, tid in ipairs(tids) do
    if got[i] then R[tid] = decode(got[i]) else R[tid] = false end
  end
  for i, tid in ipairs(tids) do
    local t = R[tid]
    local code, value = check(t, tonumber(ARGV[3 + 2 * i]))
    if code == 0 then
      t.st = S_DONE
      t.le = -1
      t.wk = false
      t.fi = NOW
      redis.call('ZREM', K_LEASE, tid)
      redis.call('ZREM', K_OPEN, tid)
      redis.call('ZADD', K_DONE, 0, tid)
      leave_partition(tid, t)
      leave_active(t)
      bump('n2', -1)
      bump('n4')
      bump('completed')
      put(tid, t)
    end
    out[#out + 1] = code
    out[#out + 1] = value
  end
end
retain()
flush()
local all_ok = true
for i = 2, #out, 2 do
  if out[i] ~= 0 then
    all_ok = false
    break
  end
end
if all_ok then return {'ok'} end
return out
