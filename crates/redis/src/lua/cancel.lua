-- cancel: ARGV[4..] tids. Answers {'ok', code, value, ...}: 0 cancelled, 1 unknown, 4 wrong
-- state (the state).

open_shard()
init_now()
local tids = {}
for i = 4, #ARGV do tids[#tids + 1] = ARGV[i] end
preload(tids)
local out = {'ok'}
for i = 4, #ARGV do
  local tid = ARGV[i]
  local t = R[tid]
  local code, value = 0, 0
  if not t then
    code = 1
  elseif t.st == S_SCHED or t.st == S_READY or t.st == S_RETRY then
    unindex_waiting(tid, t)
    bump('n' .. t.st, -1)
    t.st = S_CANC
    t.fi = NOW
    redis.call('ZREM', K_OPEN, tid)
    redis.call('ZADD', K_CANC, 0, tid)
    leave_partition(tid, t)
    bump('n6')
    bump('cancelled')
    put(tid, t)
  else
    code, value = 4, t.st
  end
  out[#out + 1] = code
  out[#out + 1] = value
end
retain()
flush()
return out
