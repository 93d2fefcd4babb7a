-- replay: ARGV[4..] tids of dead letters, in id order. Each goes back to ready with a fresh
-- attempt count and run-at now; its reason, time to live and log entry are cleared. Other
-- tids are skipped. Answers {'ok', how many}.

open_shard()
init_now()
local tids = {}
for i = 4, #ARGV do tids[#tids + 1] = ARGV[i] end
preload(tids)
local moved = 0
for _, tid in ipairs(tids) do
  local t = R[tid]
  if t and t.st == S_DEAD then
    redis.call('ZREM', K_DEAD(t.dr), tid)
    if t.dl then redis.call('XDEL', K_DLOG, t.dl) end
    t.st = S_READY
    t.at = 0
    t.ra = NOW
    t.dr = 0
    t.ex = -1
    t.fi = -1
    t.dl = false
    redis.call('ZADD', K_OPEN, 0, tid)
    join_partition(tid, t)
    place_ready(tid, t)
    bump('n5', -1)
    bump('n1')
    bump('replayed')
    put(tid, t)
    moved = moved + 1
  end
end
flush()
return {'ok', moved}
