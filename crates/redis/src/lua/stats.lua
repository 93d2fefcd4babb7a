-- stats: answers {'ok', now, earliest run-at of a ready task or -1, then the values of
-- FIELDS below in order} or {'absent'}.

if not open_shard() then return {'absent'} end
init_now()
local FIELDS = {
  'len', 'ovf', 'retry', 'idem', 'cret', 'dret', 'paused',
  'n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6',
  'enqueued', 'deduplicated', 'rejected_full', 'reserved', 'completed', 'retried', 'released',
  'leases_expired', 'd1', 'd2', 'd3', 'd4', 'dead_dropped', 'replayed', 'cancelled',
  'stale_refused',
}
local earliest = -1
local function consider(at)
  if earliest < 0 or at < earliest then earliest = at end
end
for band = 0, PRIORITY_MAX do
  local low = band * BAND
  local head = redis.call('ZRANGEBYSCORE', K_READY, low, '(' .. int(low + BAND), 'WITHSCORES', 'LIMIT', 0, 1)
  if head[2] then consider(tonumber(head[2]) - low) end
end
local held = redis.call('ZRANGE', K_HELD, 0, 0, 'WITHSCORES')
if held[2] then consider(tonumber(held[2])) end
local out = {'ok', NOW, earliest}
for _, field in ipairs(FIELDS) do out[#out + 1] = M[field] or '0' end
return out
