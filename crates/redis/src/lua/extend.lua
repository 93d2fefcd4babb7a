-- extend: ARGV[4] the new lease length in ms, ARGV[5..] tid, fence pairs. Answers
-- {'ok', code, value, ...}: code 0 with the new expiry, or check()'s refusal.

open_shard()
init_now()
local expires = NOW + tonumber(ARGV[4])
local tids = {}
for i = 5, #ARGV, 2 do tids[#tids + 1] = ARGV[i] end
preload(tids)
local out = {'ok'}
for i = 5, #ARGV, 2 do
  local tid = ARGV[i]
  local t = R[tid]
  local code, value = check(t, tonumber(ARGV[i + 1]))
  if code == 0 then
    t.le = expires
    redis.call('ZADD', K_LEASE, expires, tid)
    put(tid, t)
    value = expires
  end
  out[#out + 1] = code
  out[#out + 1] = value
end
flush()
return out
