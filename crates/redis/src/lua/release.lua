-- release: ARGV[4..] tid, fence pairs. The task is ready again at once, its attempt given
-- back. Answers {'ok', code, value, ...} as check() judges each lease.

open_shard()
init_now()
local tids = {}
for i = 4, #ARGV, 2 do tids[#tids + 1] = ARGV[i] end
preload(tids)
local out = {'ok'}
for i = 4, #ARGV, 2 do
  local tid = ARGV[i]
  local t = R[tid]
  local code, value = check(t, tonumber(ARGV[i + 1]))
  if code == 0 then
    redis.call('ZREM', K_LEASE, tid)
    t.st = S_READY
    if t.at > 0 then t.at = t.at - 1 end
    t.ra = NOW
    t.le = -1
    t.wk = false
    place_ready(tid, t)
    if t.ex >= 0 then redis.call('ZADD', K_TTL, t.ex, tid) end
    bump('n2', -1)
    bump('n1')
    bump('released')
    leave_active(t)
    put(tid, t)
  end
  out[#out + 1] = code
  out[#out + 1] = value
end
flush()
return out
