-- The registry: the dataset marker and the queue directory, in one slot of their own
-- (KEYS[1], e.g. "floodway:{registry}"). ARGV[1] is the operation.
--
-- open ARGV[2] '1' to create a missing marker with id ARGV[3]: answers {'ok', id} or
--   {'missing'}.
-- register ARGV[2] marker id, ARGV[3] queue name, ARGV[4] shards wanted, ARGV[5] most queues:
--   answers {'ok', number, shards, created (0/1)}, {'limit'} or an error when the marker
--   changed.
-- created ARGV[2] marker id, ARGV[3] queue name: the queue's shards exist now.
-- list: answers {'ok', name, entry, ...}; an entry is "number|shards|created".

local K_MARKER, K_QUEUES, K_NUMBERS = KEYS[1] .. ':marker', KEYS[1] .. ':queues', KEYS[1] .. ':numbers'
local op = ARGV[1]

local function check_marker(id)
  local current = redis.call('HGET', K_MARKER, 'id')
  if current ~= id then
    error({err = 'FLOODWAY_LOST the dataset marker is ' .. tostring(current) .. ', not ' .. id ..
      ': Redis lost data or was re-initialised'})
  end
end

if op == 'open' then
  local id = redis.call('HGET', K_MARKER, 'id')
  if id then return {'ok', id} end
  if ARGV[2] ~= '1' then return {'missing'} end
  local t = redis.call('TIME')
  redis.call('HSET', K_MARKER, 'id', ARGV[3], 'created', t[1], 'format', '1')
  return {'ok', ARGV[3]}
elseif op == 'register' then
  check_marker(ARGV[2])
  local entry = redis.call('HGET', K_QUEUES, ARGV[3])
  if not entry then
    local count = redis.call('HLEN', K_NUMBERS)
    if count >= tonumber(ARGV[5]) then return {'limit'} end
    entry = string.format('%d|%s|0', count + 1, ARGV[4])
    redis.call('HSET', K_QUEUES, ARGV[3], entry)
    redis.call('HSET', K_NUMBERS, count + 1, ARGV[3])
  end
  local number, shards, created = string.match(entry, '^(%d+)|(%d+)|(%d)$')
  return {'ok', tonumber(number), tonumber(shards), tonumber(created)}
elseif op == 'created' then
  check_marker(ARGV[2])
  local entry = redis.call('HGET', K_QUEUES, ARGV[3])
  if entry then
    redis.call('HSET', K_QUEUES, ARGV[3], (string.gsub(entry, '|0$', '|1')))
  end
  return {'ok'}
elseif op == 'list' then
  local out = {'ok'}
  for _, v in ipairs(redis.call('HGETALL', K_QUEUES)) do out[#out + 1] = v end
  return out
end
error({err = 'unknown registry operation ' .. tostring(op)})
