-- configure: ARGV[4 .. 3 + #CONFIG] the configuration. Creates the shard if it is missing,
-- then applies the new retention at once. The token buckets start full again (the queue's
-- and every limit key's: a missing bucket is a full one), and the watermark gate accepting.
-- Answers {'ok'}.

local exists = open_shard()
if not exists then create_shard(4) end
init_now()
local was_paused = M.paused == '1'
set_config(4)
if was_paused and M.paused ~= '1' then WOKE = true end
redis.call('HDEL', K_META, 'bt', 'bu')
M.bt, M.bu = nil, nil
redis.call('DEL', K_KB, K_KBX)
SET.refusing = '0'
-- New limits may let waiting reserves take more.
WOKE = true
retain()
flush()
return {'ok'}
