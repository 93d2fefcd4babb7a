-- list: ARGV[4] list after this tid ('' from the start), ARGV[5] most tasks, ARGV[6] only this
-- state (-1 any), ARGV[7] only dead letters with this reason (0 any), ARGV[8] most unfinished
-- tasks to examine when filtering them by state.
--
-- Answers {'ok', cursor, tid, record, ...} in tid order. The cursor is '' when the answer is
-- complete (up to the limit); otherwise the examination budget ran out and the caller goes on
-- from the cursor. Also {'absent'}.

if not open_shard() then return {'absent'} end
local after, limit = ARGV[4], tonumber(ARGV[5])
local state, reason, budget = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local from = '-'
if after ~= '' then from = '(' .. after end

local function range(key, n)
  return redis.call('ZRANGE', key, from, '+', 'BYLEX', 'LIMIT', 0, n)
end

-- The lowest `limit` tids of several lex indexes together.
local function merged(keys)
  local all = {}
  for _, key in ipairs(keys) do
    for _, tid in ipairs(range(key, limit)) do all[#all + 1] = tid end
  end
  table.sort(all)
  local out = {}
  for i = 1, math.min(limit, #all) do out[i] = all[i] end
  return out
end

local tids, cursor = {}, ''
if reason > 0 then
  tids = range(K_DEAD(reason), limit)
elseif state == S_DONE then
  tids = range(K_DONE, limit)
elseif state == S_CANC then
  tids = range(K_CANC, limit)
elseif state == S_DEAD then
  tids = merged({K_DEAD(1), K_DEAD(2), K_DEAD(3), K_DEAD(4)})
elseif state < 0 then
  tids = merged({K_OPEN, K_DONE, K_CANC, K_DEAD(1), K_DEAD(2), K_DEAD(3), K_DEAD(4)})
else
  local examined = 0
  while #tids < limit do
    if examined >= budget then
      cursor = string.sub(from, 2)
      break
    end
    local chunk = range(K_OPEN, 200)
    if #chunk == 0 then break end
    preload(chunk)
    for _, tid in ipairs(chunk) do
      examined = examined + 1
      from = '(' .. tid
      if R[tid] and R[tid].st == state then
        tids[#tids + 1] = tid
        if #tids == limit then break end
      end
    end
  end
end
local out = {'ok', cursor}
if #tids > 0 then
  local got = redis.call('HMGET', K_REC, unpack(tids))
  for i, tid in ipairs(tids) do
    if got[i] then
      out[#out + 1] = tid
      out[#out + 1] = got[i]
    end
  end
end
return out
