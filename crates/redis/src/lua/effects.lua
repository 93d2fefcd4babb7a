-- record_effects: ARGV[4] 'c' to check only, 'w' to check and write; ARGV[5] the most effects
-- a task may hold; ARGV[6..] four values per effect: tid, fence, key, result.
--
-- Each effect's lease is judged by check(), as extend judges it; an effect under a good lease
-- sets its key on the task's effects (replacing an earlier result of the key). If a task would
-- end up with more than the most effects, the call records nothing and answers
-- {'invalid', tid, how many}; otherwise {'ok', code, value, ...} with one (code, value) per
-- effect as check() judged it. 'c' answers the same without writing anything, so a call
-- spanning several shards can find out first whether every shard will take its part.

open_shard()
init_now()
local write, most = ARGV[4] == 'w', tonumber(ARGV[5])
local tids = {}
for i = 6, #ARGV, 4 do tids[#tids + 1] = ARGV[i] end
preload(tids)

-- An effects block's content as a table and its number of keys.
local function unpack_effects(raw)
  local e, n = {}, 0
  if not raw then return e, 0 end
  local count, pos = struct.unpack('>H', raw, 1)
  for _ = 1, count do
    local key, result
    key, pos = rstr(raw, pos)
    result, pos = rstr(raw, pos)
    e[key] = result or ''
    n = n + 1
  end
  return e, n
end

local function pack_effects(e, n)
  local keys = {}
  for key in pairs(e) do keys[#keys + 1] = key end
  table.sort(keys)
  local parts = {struct.pack('>H', n)}
  for _, key in ipairs(keys) do
    parts[#parts + 1] = wstr(key)
    parts[#parts + 1] = wstr(e[key])
  end
  return table.concat(parts)
end

local out = {'ok'}
local touched, order, recorded = {}, {}, 0
for i = 6, #ARGV, 4 do
  local tid = ARGV[i]
  local t = R[tid]
  local code, value = check(t, tonumber(ARGV[i + 1]))
  if code == 0 then
    local entry = touched[tid]
    if not entry then
      local e, n = unpack_effects(t.ef)
      entry = {e = e, n = n}
      touched[tid] = entry
      order[#order + 1] = tid
    end
    local key = ARGV[i + 2]
    if entry.e[key] == nil then entry.n = entry.n + 1 end
    entry.e[key] = ARGV[i + 3]
    if entry.n > most then return {'invalid', tid, entry.n} end
    recorded = recorded + 1
  end
  out[#out + 1] = code
  out[#out + 1] = value
end
if not write then return out end
for _, tid in ipairs(order) do
  local t, entry = R[tid], touched[tid]
  t.ef = pack_effects(entry.e, entry.n)
  put(tid, t)
end
bump('effects_recorded', recorded)
flush()
return out
