-- dead: ARGV[4] reason (0 any), ARGV[5] most tids. Answers {'ok', tid, ...}: the lowest tids
-- of the shard's dead letters with that reason, for a replay or purge "matching" selector.

if not open_shard() then return {'absent'} end
local reason, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local all = {}
for r = 1, 4 do
  if reason == 0 or reason == r then
    for _, tid in ipairs(redis.call('ZRANGE', K_DEAD(r), 0, limit - 1)) do all[#all + 1] = tid end
  end
end
table.sort(all)
local out = {'ok'}
for i = 1, math.min(limit, #all) do out[#out + 1] = all[i] end
return out
