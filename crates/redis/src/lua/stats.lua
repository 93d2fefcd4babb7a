-- stats: ARGV[4] the queue's shard count. Answers {'ok', now, earliest run-at of a ready
-- task or -1, refusing (1 while the watermark gate refuses), then the configuration (CONFIG in
-- common.lua; '' for a field the shard has no value for), then the values of COUNTERS below
-- in order, then the start latency counts per bucket ('sl1' ..) and their sum in ms ('sls')}
-- or {'absent'}.

if not open_shard() then return {'absent'} end
init_now()
local COUNTERS = {
  'n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6',
  'enqueued', 'deduplicated', 'rejected_full', 'reserved', 'completed', 'retried', 'released',
  'leases_expired', 'd1', 'd2', 'd3', 'd4', 'dead_dropped', 'replayed', 'cancelled',
  'stale_refused', 'rejected_overloaded', 'throttled_rate', 'throttled_concurrency',
  'effects_recorded',
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
-- The gate's side as enqueue would find it: a refusing gate whose queue is back at or below
-- the low watermark accepts again (enqueue writes that down; stats only reports it).
local refusing = 0
local high, low = config_pair('wm')
if high and M.refusing == '1'
  and count('n0') + count('n1') + count('n3') > per_shard(low, tonumber(ARGV[4])) then
  refusing = 1
end
local out = {'ok', NOW, earliest, refusing}
for _, field in ipairs(CONFIG) do out[#out + 1] = M[field] or '' end
for _, field in ipairs(COUNTERS) do out[#out + 1] = M[field] or '0' end
for b = 1, #START_LATENCY_BOUNDS_MS + 1 do out[#out + 1] = M['sl' .. b] or '0' end
out[#out + 1] = M.sls or '0'
return out
