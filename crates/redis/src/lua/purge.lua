-- purge: ARGV[4..] tids of dead letters to delete for ever; other tids are skipped. Answers
-- {'ok', how many}.

open_shard()
init_now()
local tids = {}
for i = 4, #ARGV do tids[#tids + 1] = ARGV[i] end
preload(tids)
local deleted = 0
for _, tid in ipairs(tids) do
  local t = R[tid]
  if t and t.st == S_DEAD then
    redis.call('ZREM', K_DEAD(t.dr), tid)
    forget_dead(tid, t)
    bump('n5', -1)
    deleted = deleted + 1
  end
end
flush()
return {'ok', deleted}
